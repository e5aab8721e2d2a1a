"""A user's own training script, as `carbon_own_job` schedules it: nothing from this project imported.

It trains a small PyTorch classifier on a synthetic, seeded two-spirals problem (no download), and
behaves as any well-mannered long job should under a scheduler that pauses it:
- on SIGTERM it finishes the current step, writes a checkpoint (atomically) and exits with 143;
- started again, it resumes from that checkpoint (same model, optimizer, RNG, step);
- when done it writes ``summary.json`` (accuracy, loss, steps) and exits 0.
Files go to ``$CARBON_JOB_DIR`` (set by CarbonJobOperator), else ``--out``; the checkpoint goes to its
``checkpoints/`` folder, which the operator copies to the object store and restores before a retry on
any machine (``$CARBON_CHECKPOINT_URL`` says where, for a script that writes there itself). The DAG
run's own params (``steps``) come as data in the JSON file ``$CARBON_JOB_PARAMS``; a flag on the
command line wins.

    python include/examples/own_training.py --steps 1500 --out /tmp/own
"""

from __future__ import annotations

import signal

STOP = []  # SIGTERM first, before the slow imports: a stop that comes early still ends in a checkpoint
signal.signal(signal.SIGTERM, lambda _signum, _frame: STOP.append(True))

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from torch import nn  # noqa: E402

EXIT_INTERRUPTED = 143


def spirals(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    t = torch.rand(n, generator=generator) * 3 * math.pi
    label = torch.randint(0, 2, (n,), generator=generator)
    sign = 1 - 2 * label.float()
    x = torch.stack([sign * t * torch.cos(t), sign * t * torch.sin(t)], dim=1) / 10
    return x + 0.03 * torch.randn(n, 2, generator=generator), label


def save(path: Path, payload: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def run_params() -> dict:
    """The DAG run's params for this job (CarbonJobOperator(job_params=...)), or {} outside Airflow."""
    path = os.environ.get("CARBON_JOB_PARAMS")
    return json.loads(Path(path).read_text()) if path else {}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=int(run_params().get("steps") or 1500))
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--checkpoint-every", type=int, default=100, help="steps between checkpoints")
    parser.add_argument("--out", default=os.environ.get("CARBON_JOB_DIR", "output/own_training"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint_path = out / "checkpoints" / "checkpoint.pt"
    checkpoint_path.parent.mkdir(exist_ok=True)

    torch.manual_seed(0)
    data = torch.Generator().manual_seed(0)
    train_x, train_y = spirals(20_000, data)
    test_x, test_y = spirals(4_000, data)
    model = nn.Sequential(nn.Linear(2, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 2))
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    step, attempts, started = 0, 0, time.time()
    if checkpoint_path.exists():
        state = torch.load(checkpoint_path, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        step, attempts = state["step"], state["attempts"]
        print(f"resumed from {checkpoint_path} at step {step}", flush=True)
    attempts += 1

    def checkpoint() -> None:
        save(
            checkpoint_path,
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "rng": torch.get_rng_state(),
                "step": step,
                "attempts": attempts,
            },
        )

    loss = torch.zeros(())
    while step < args.steps:
        if STOP:
            checkpoint()
            print(f"SIGTERM: checkpoint written at step {step}; exiting to resume later", flush=True)
            return EXIT_INTERRUPTED
        index = torch.randint(0, len(train_x), (args.batch_size,))
        loss = nn.functional.cross_entropy(model(train_x[index]), train_y[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        if step % args.checkpoint_every == 0:
            checkpoint()
            print(f"step {step}/{args.steps} loss {loss.item():.4f} (checkpoint)", flush=True)
    checkpoint()
    with torch.no_grad():
        accuracy = 100.0 * (model(test_x).argmax(1) == test_y).float().mean().item()
    summary = {
        "final_test_accuracy_pct": accuracy,
        "final_train_loss": loss.item(),
        "steps": step,
        "attempts": attempts,
        "seconds_this_attempt": time.time() - started,
    }
    tmp = out / "summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2))
    os.replace(tmp, out / "summary.json")
    print(f"done: {step} steps, test accuracy {accuracy:.2f} %", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
