"""The trainer under ``torchrun`` with DistributedDataParallel on CPU (gloo): real processes, real MNIST."""
import csv
import json
import signal
import subprocess
import sys
import time

import pytest
import torch

from training.config import load_config
from carbon_aware.accounting.energy import read_energy_log
from training.summary import validate_summary
from training.trainer import train
from tests.conftest import REPO_ROOT
from tests.test_trainer import assert_same_weights, final_weights, make_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def torchrun(nproc: int, config: str, overrides: list[str]) -> list[str]:
    sets = [arg for override in overrides for arg in ("--set", override)]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", "training", "--config", config, *sets]


def run(command: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("nproc", [2, 1])
def test_ddp_makes_the_single_process_update(tmp_path, nproc):
    """fp32 on a synthetic set whose last step of each epoch has one sample: with 2 processes rank 1's
    share of it is empty, rank 0's is one sample. The split over ranks, the loss scaling against DDP's
    averaging and no_sync on accumulation micro-steps must together give the single-process weights.
    The ranks serve their shards through the DataLoader path (device_resident: never). One process under
    torchrun takes the DDP path too (what a single-GPU comparison with the plain path measures)."""
    training = {"epochs": 2, "batch_size": 16, "gradient_accumulation_steps": 4, "optimizer": "adam",
                "learning_rate": 0.003}
    data = {"synthetic_train_size": 193}
    single = train(make_config(tmp_path, training={**training, "run_name": "single"}, data=data))
    config = make_config(tmp_path, training={**training, "run_name": "ddp"},
                         data={**data, "device_resident": "never", "num_workers": 0})
    config_file = tmp_path / "ddp.yaml"
    config_file.write_text(json.dumps(config.model_dump()))
    result = run(torchrun(nproc, str(config_file), []))
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    ddp = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert ddp["distributed"] == {"world_size": nproc, "backend": "gloo"}
    assert single["distributed"] == {"world_size": 1, "backend": None}
    assert ddp["effective_batch_size"] == single["effective_batch_size"] == 64
    assert_same_weights(final_weights(single), final_weights(ddp), atol=1e-5)
    assert ddp["final_train_loss"] == pytest.approx(single["final_train_loss"], rel=1e-4)
    assert ddp["epochs"][-1]["test_loss"] == pytest.approx(single["epochs"][-1]["test_loss"], rel=1e-4)


def test_sigterm_resume_and_accuracy_of_the_single_process_run(tmp_path, mnist_dir):
    overrides = [f"output.dir={tmp_path}", f"data.root={mnist_dir}", "training.device=cpu",
                 "training.epochs=2", "training.checkpoint_every_minutes=0.05", "training.resume=true"]
    run_dir = tmp_path / "test"
    checkpoint = run_dir / "checkpoints" / "last.pt"
    command = torchrun(2, "include/configs/test.yaml", overrides)

    started = time.monotonic()
    first = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
    try:
        while not checkpoint.exists():  # the first mid-epoch checkpoint, ~3 s into training
            assert first.poll() is None, ("torchrun ended before its first checkpoint:\n"
                                          f"{first.stdout.read()}")
            assert time.monotonic() - started < 240, "no checkpoint within 240 s"
            time.sleep(0.1)
        first.send_signal(signal.SIGTERM)
        output, _ = first.communicate(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
    # torchrun forwards SIGTERM to both ranks; they agree on a step, rank 0 checkpoints, both exit 143,
    # and torchrun itself ends with its own error (exit 1) for the signal.
    assert first.returncode != 0
    # Both ranks report the stop, mid-epoch ("written at epoch") or, when the signal lands on the
    # epoch's last step, after it ("written after epoch").
    assert output.count("SIGTERM: checkpoint written") == 2, output[-4000:]
    assert not (run_dir / "summary.json").exists()
    stopped = torch.load(checkpoint, weights_only=False)
    assert stopped["world_size"] == 2 and len(stopped["rank_rng"]) == 2
    epoch, step = stopped["state"]["epoch"], stopped["state"]["step"]
    assert epoch < 2 and stopped["state"]["attempts"] == 1  # stopped before the end

    other = run(torchrun(1, "include/configs/test.yaml", overrides))
    assert other.returncode != 0
    assert "was written by 2 process(es), this run has 1; resume it with torchrun --nproc_per_node=2" in (
        other.stdout + other.stderr)

    resumed = run(command)
    assert resumed.returncode == 0, resumed.stdout[-4000:] + resumed.stderr[-4000:]
    assert f"resumed from {checkpoint} at epoch {epoch + 1}, step {step}" in resumed.stdout
    ddp_seconds = time.monotonic() - started
    summary = json.loads((run_dir / "summary.json").read_text())
    validate_summary(summary)
    assert summary["attempts"] == 2  # the refused 1-process launch wrote no checkpoint
    assert [e["epoch"] for e in summary["epochs"]] == [1, 2]
    assert summary["distributed"] == {"world_size": 2, "backend": "gloo"}

    # Only rank 0 wrote: one CodeCarbon tracker per attempt (a start and an end line each, one CSV row),
    # one progress log, no stray files.
    entries = read_energy_log(run_dir / "energy_log.jsonl")
    for attempt in (1, 2):
        labels = [e["label"] for e in entries if e["attempt"] == attempt]
        assert labels.count("start") == 1 and labels.count("end") == 1, labels
    kwh = [e["kwh"] for e in entries]
    assert kwh == sorted(kwh) and kwh[-1] == pytest.approx(summary["energy"]["energy_kwh"])
    with open(run_dir / "emissions.csv") as handle:
        assert len(list(csv.DictReader(handle))) == 2
    assert resumed.stdout.count("epoch 2/2 | loss") == 1 and resumed.stdout.count("summary: ") == 1
    written = sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file())
    assert written == ["checkpoints/last.pt", "emissions.csv", "energy_log.jsonl", "model.pt",
                       "summary.json"]

    started = time.monotonic()
    single = train(load_config(REPO_ROOT / "include/configs/test.yaml", [
        *overrides[1:], f"output.dir={tmp_path / 'single'}", "training.resume=false",
        "emissions.enabled=false"]))  # energy tracking does not touch the numbers
    single_seconds = time.monotonic() - started
    print(f"\ntest accuracy: 1 process {single['final_test_accuracy_pct']:.2f} % "
          f"({single_seconds:.0f} s in-process), 2 processes with a SIGTERM and a resume "
          f"{summary['final_test_accuracy_pct']:.2f} % ({ddp_seconds:.0f} s, three launches)")
    assert abs(summary["final_test_accuracy_pct"] - single["final_test_accuracy_pct"]) <= 0.5
    assert summary["final_test_accuracy_pct"] > 90.0


def test_distributed_off_under_torchrun_is_refused_before_training(tmp_path):
    config = make_config(tmp_path, training={"distributed": "off"})
    config_file = tmp_path / "off.yaml"
    config_file.write_text(json.dumps(config.model_dump()))
    result = run(torchrun(2, str(config_file), []), timeout=180)
    assert result.returncode != 0
    assert "training.distributed: 'off', but torchrun started 2 processes" in result.stdout + result.stderr
    assert not (tmp_path / "t").exists()
