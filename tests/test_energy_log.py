"""Energy that survives kills: a trainer subprocess SIGKILLed mid-epoch, then retried, counts both
attempts' kWh (the fsynced log holds each attempt's readings) and resumes from a mid-epoch checkpoint."""
import json
import signal
import subprocess
import sys
import time
from datetime import datetime

import pytest

from tests.conftest import REPO_ROOT
from carbon_aware.accounting.energy import read_energy_log

SLOW_SYNTHETIC = [
    "data.dataset=synthetic",
    "data.synthetic_train_size=20000",
    "data.synthetic_test_size=256",
    "training.epochs=1",
    "training.batch_size=16",
    "training.gradient_accumulation_steps=1",
    "training.precision=fp32",
    "training.device=cpu",
    "emissions.measure_power_secs=0.2",
    "emissions.log_every_seconds=0.5",
    "training.checkpoint_every_minutes=0.02",
]


def _command(tmp_path):
    sets = [*SLOW_SYNTHETIC, f"output.dir={tmp_path}", "training.run_name=killed", "training.resume=true"]
    return [sys.executable, "-u", "-m", "training", "--config", "include/configs/baseline.yaml",
            *sum((["--set", s] for s in sets), [])]


@pytest.mark.integration
def test_a_sigkilled_attempt_keeps_its_energy_and_the_retry_continues_the_log(tmp_path):
    run_dir = tmp_path / "killed"
    log_path = run_dir / "energy_log.jsonl"
    first = subprocess.Popen(
        _command(tmp_path), cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:  # wait for periodic readings and a mid-epoch checkpoint, then kill
        readings = [e for e in read_energy_log(log_path) if e["label"] == "reading"]
        if len(readings) >= 3 and (run_dir / "checkpoints" / "last.pt").exists():
            break
        assert first.poll() is None, first.stdout.read()
        time.sleep(0.2)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    killed = read_energy_log(log_path)
    assert first.returncode == -signal.SIGKILL and not (run_dir / "summary.json").exists()
    assert {e["attempt"] for e in killed} == {1} and killed[-1]["kwh"] > 0
    assert not any(e["label"].startswith("epoch") for e in killed)  # killed mid-epoch

    second = subprocess.run(_command(tmp_path), cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "resumed from" in second.stdout + second.stderr and "step 0" not in second.stdout + second.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    entries = read_energy_log(log_path)
    attempt_1 = [e for e in entries if e["attempt"] == 1]
    attempt_2 = [e for e in entries if e["attempt"] == 2]
    assert attempt_1 == killed and attempt_2 and attempt_2[-1]["label"] == "end"
    # the total is the killed attempt's last reading plus what the retry measured itself
    own = attempt_2[-1]["attempt_kwh"]
    assert summary["energy"]["energy_kwh"] == pytest.approx(killed[-1]["kwh"] + own, rel=1e-9)
    assert summary["energy"]["energy_kwh"] == pytest.approx(entries[-1]["kwh"]) and own > 0
    timeline = summary["energy_timeline"]
    assert [p["attempt"] for p in timeline].count(1) == len(killed)
    times = [datetime.fromisoformat(p["time"]) for p in timeline]
    assert times == sorted(times) and [p["kwh"] for p in timeline] == sorted(p["kwh"] for p in timeline)
    assert summary["attempts"] == 2
