"""Benchmark: the baseline config vs the optimized config (and the original pipeline's loop), in one process.

    python -m training.bench [--epochs N] [--train-subset N] [--original] [--json PATH]

(a) the original loop: torchvision's MNIST through a DataLoader (PIL images, ToTensor + Normalize),
    micro-batch 16, 4 accumulation steps, fp16 autocast + GradScaler, ``loss.item()`` every step
    (run on a GPU, or with ``--original``);
(b) our trainer with ``include/configs/baseline.yaml`` (fp32, batch 64, 3 epochs: a plain run);
(c) our trainer with ``include/configs/optimized.yaml`` (auto micro-batch, bf16 where the device has it,
    data resident, one-cycle schedule, 2 epochs).
Full MNIST by default, each config's own epochs unless ``--epochs``. Energy comes from the GPU's own
NVML energy counter where there is a GPU, else from CodeCarbon. Prints wall time, test accuracy, peak
memory and energy for each, and the ratios optimized / baseline (and original / optimized).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from carbon_aware import settings
from carbon_aware.accounting.energy import EmissionsConfig
from training.config import load_config, resolve_path
from training.data import MNIST_MEAN, MNIST_STD, LocalMNIST
from carbon_aware.accounting.energy import EnergyMeter
from training.model import SimpleCNN
from training.trainer import train



class EnergyProbe:
    """Joules drawn while the block runs: NVML's energy counter on a GPU, CodeCarbon's estimate on CPU."""

    def __init__(self, device: torch.device, workdir: Path):
        self.device, self.workdir = device, workdir
        self.joules: float | None = None
        self.source = "nvml" if device.type == "cuda" else "codecarbon"

    @contextlib.contextmanager
    def measure(self):
        if self.device.type == "cuda":
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(self.device.index or 0)
            start = pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
            yield
            torch.cuda.synchronize()
            self.joules = (pynvml.nvmlDeviceGetTotalEnergyConsumption(handle) - start) / 1000.0
            return
        # a directory of its own: a meter continues the energy log it finds (that is how retries count)
        meter = EnergyMeter(
            EmissionsConfig(measure_power_secs=0.5), Path(tempfile.mkdtemp(dir=self.workdir)), "bench"
        )
        meter.start()
        yield
        energy = meter.stop()
        self.joules = energy["energy_kwh"] * 3.6e6 if energy else None


def original_loop(device: torch.device, epochs: int, train_subset: int | None, data_root: Path) -> dict:
    """The original pipeline's loop, kept as it was written (the thing to beat)."""
    from torch.utils.data import DataLoader, Subset
    from torchvision import transforms

    transform = transforms.Compose([transforms.ToTensor(),
                                    transforms.Normalize((MNIST_MEAN,), (MNIST_STD,))])
    train_set = LocalMNIST(data_root, train=True, transform=transform)
    test_set = LocalMNIST(data_root, train=False, transform=transform)
    if train_subset:
        train_set = Subset(train_set, range(train_subset))
    loader = DataLoader(train_set, batch_size=16, shuffle=True, num_workers=2,
                        pin_memory=device.type == "cuda")
    test_loader = DataLoader(test_set, batch_size=1000, num_workers=2, pin_memory=device.type == "cuda")

    torch.manual_seed(42)
    model = SimpleCNN().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.001)
    use_amp = device.type == "cuda"
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp)
    accumulation_steps = 4
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _epoch in range(epochs):
        model.train()
        optimizer.zero_grad()
        for i, (x, y) in enumerate(loader):
            x, y = x.to(device), y.to(device)
            with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                loss = F.cross_entropy(model(x), y) / accumulation_steps
            scaler.scale(loss).backward()
            if (i + 1) % accumulation_steps == 0:
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad()
            _running_loss = loss.item()
        model.eval()
        correct = 0
        with torch.no_grad():
            for x, y in test_loader:
                x, y = x.to(device), y.to(device)
                correct += (model(x).argmax(1) == y).sum().item()
    wall = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return {"wall_seconds": wall, "test_accuracy_pct": 100.0 * correct / len(test_set),
            "peak_memory_mb": peak}


def our_trainer(config_name: str, device: torch.device, epochs: int | None, train_subset: int | None,
                data_root: Path, output_dir: Path) -> dict:
    # energy is measured around the call
    overrides = [f"training.device={device.type}", f"data.root={data_root}", f"output.dir={output_dir}",
                 f"training.run_name={config_name}", "emissions.enabled=false"]
    if epochs:
        overrides.append(f"training.epochs={epochs}")
    if train_subset:
        overrides.append(f"data.train_subset={train_subset}")
    config = load_config(settings.config_dir() / f"{config_name}.yaml", overrides)
    summary = train(config)
    peak = summary["peak_memory_mb"] if summary["peak_memory_kind"] == "cuda_max_allocated" else None
    return {
        "wall_seconds": summary["wall_time_seconds"],
        "test_accuracy_pct": summary["final_test_accuracy_pct"],
        "peak_memory_mb": peak,
        "precision": summary["precision"],
        "epochs": summary["config"]["training"]["epochs"],
        "micro_batch_size": summary["micro_batch_size"],
        "effective_batch_size": summary["effective_batch_size"],
    }


def _warm_up(device: torch.device) -> None:
    """Pay CUDA context creation and cuDNN autotuning once, outside both timings."""
    if device.type != "cuda":
        return
    model = SimpleCNN().to(device)
    for batch in (16, 512, 1000):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            model(torch.randn(batch, 1, 28, 28, device=device)).sum().backward()
    torch.cuda.synchronize()


def _ratio(a, b):
    return a / b if a is not None and b else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, help="every run's epochs (default: each config's)")
    parser.add_argument("--train-subset", type=int, help="the first N training images (default: all)")
    parser.add_argument("--original", action="store_true", help="also the original loop (always on a GPU)")
    parser.add_argument("--data-root", default="mnist", help="MNIST (relative: in CARBON_DATA_DIR)")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stdout)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    subset, data_root = args.train_subset, resolve_path(args.data_root, settings.data_dir())
    _warm_up(device)
    runs = []
    if args.original or device.type == "cuda":
        runs.append(("original_loop",
                     lambda _workdir: original_loop(device, args.epochs or 3, subset, data_root)))
    for name in ("baseline", "optimized"):
        runs.append((f"{name}_config", lambda workdir, name=name: our_trainer(
            name, device, args.epochs, subset, data_root, workdir)))
    results = {}
    with tempfile.TemporaryDirectory() as workdir:
        for name, run in runs:
            probe = EnergyProbe(device, Path(workdir))
            with probe.measure():
                results[name] = run(Path(workdir))
            results[name].update(energy_joules=probe.joules, energy_source=probe.source)

    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"\nbenchmark on {device_name} ({torch.get_num_threads()} threads): "
          f"{'all' if subset is None else subset} training images")
    print(f"{'':18}{'epochs':>7}{'precision':>10}{'batch':>9}{'wall s':>9}{'test acc %':>12}{'peak MB':>9}"
          f"{'energy J':>10}")
    for name, r in results.items():
        peak = f"{r['peak_memory_mb']:.0f}" if r["peak_memory_mb"] is not None else "n/a"
        energy = f"{r['energy_joules']:.1f}" if r["energy_joules"] is not None else "n/a"
        micro = r.get("micro_batch_size", 16)
        batch = f"{micro}x{r.get('effective_batch_size', 64) // micro}"
        print(f"{name:18}{r.get('epochs', args.epochs or 3):>7}{r.get('precision', 'fp16/fp32'):>10}"
              f"{batch:>9}{r['wall_seconds']:>9.2f}{r['test_accuracy_pct']:>12.2f}{peak:>9}{energy:>10}")
    b, o = results["baseline_config"], results["optimized_config"]
    ratios = {"optimized_over_baseline_energy": _ratio(o["energy_joules"], b["energy_joules"]),
              "optimized_over_baseline_wall": _ratio(o["wall_seconds"], b["wall_seconds"])}
    if "original_loop" in results:
        a = results["original_loop"]
        ratios.update(original_over_optimized_wall=_ratio(a["wall_seconds"], o["wall_seconds"]),
                      original_over_optimized_energy=_ratio(a["energy_joules"], o["energy_joules"]))
    print("ratios: " + ", ".join(f"{k} {v:.3f}" if v is not None else f"{k} n/a" for k, v in ratios.items()))
    energy_ratio = ratios["optimized_over_baseline_energy"]
    verdict = (o["test_accuracy_pct"] >= b["test_accuracy_pct"]
               and energy_ratio is not None and energy_ratio <= 0.5)
    print(f"optimized reaches the baseline's accuracy ({o['test_accuracy_pct']:.2f} % vs "
          f"{b['test_accuracy_pct']:.2f} %) with <= 0.5x its energy: {'yes' if verdict else 'NO'}; "
          f"energy source: {o['energy_source']}")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": device_name, "train_subset": subset,
                                               "results": results, "ratios": ratios, "target_met": verdict},
                                              indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
