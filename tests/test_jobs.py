"""Any command, measured from outside: the example user script run, stopped at a slot's end with SIGTERM,
resumed, and stopped by a budget check; every attempt's energy in one append-only log."""

from __future__ import annotations

import json
import sys
from datetime import datetime, timedelta, timezone

import pytest

from carbon_aware.accounting.jobs import CARBON_BUDGET, SLOT_END, JobFailed, job_summary, run_attempt
from tests.conftest import REPO_ROOT
from carbon_aware.accounting.energy import ENERGY_LOG_NAME, read_energy_log

NOW = datetime(2026, 3, 1, 6, tzinfo=timezone.utc)
SCRIPT = [sys.executable, str(REPO_ROOT / "include" / "examples" / "own_training.py")]
FAST_METER = {"measure_power_secs": 0.5, "log_every_seconds": 1.0}


def test_a_command_is_stopped_at_its_slot_end_resumes_and_every_attempt_is_measured(tmp_path):
    job_dir, lines = tmp_path / "own", []
    first = run_attempt(
        [*SCRIPT, "--steps", "400000", "--checkpoint-every", "50"],
        job_dir,
        "own",
        emissions=FAST_METER,
        until=datetime.now(timezone.utc) + timedelta(seconds=8),
        grace_seconds=60,
        emit=lines.append,
    )
    assert first["stopped"] == SLOT_END and first["exit_code"] == 143, lines[-5:]
    assert any("SIGTERM: checkpoint written" in line for line in lines)  # the child's output was streamed
    stopped_at = int(
        next(line for line in lines if "SIGTERM" in line and "step" in line).split("step ")[1].split(";")[0]
    )

    second = run_attempt(
        [*SCRIPT, "--steps", str(stopped_at + 100), "--checkpoint-every", "50"],
        job_dir,
        "own",
        emissions=FAST_METER,
        emit=lines.append,
    )
    assert second["stopped"] is None and second["exit_code"] == 0
    assert f"resumed from {job_dir / 'checkpoints' / 'checkpoint.pt'} at step {stopped_at}" in lines
    log = read_energy_log(job_dir / ENERGY_LOG_NAME)
    assert sorted({e["attempt"] for e in log}) == [1, 2]
    assert [e["kwh"] for e in log] == sorted(e["kwh"] for e in log) and log[-1]["kwh"] > 0
    last = {a: [e for e in log if e["attempt"] == a][-1] for a in (1, 2)}
    assert log[-1]["kwh"] == pytest.approx(last[1]["attempt_kwh"] + last[2]["attempt_kwh"], rel=1e-9)

    segments = [
        {"index": k, "grid_start": None, "grid_hours": None, "attempts": [a]}
        for k, a in enumerate((first, second))
    ]
    summary = job_summary(job_dir, "own", SCRIPT, segments)
    own = json.loads((job_dir / "summary.json").read_text())
    assert summary["final_test_accuracy_pct"] == own["final_test_accuracy_pct"] and own["attempts"] == 2
    assert summary["energy"]["energy_kwh"] == log[-1]["kwh"] and summary["attempts"] == 2
    assert [p["attempt"] for p in summary["energy_timeline"]] == [e["attempt"] for e in log]


def test_a_budget_check_stops_the_command_at_its_checkpoint(tmp_path):
    job_dir, lines = tmp_path / "budget", []
    seen = []

    def over_budget(kwh: float) -> str | None:
        seen.append(kwh)
        return CARBON_BUDGET if len(seen) >= 4 else None

    record = run_attempt(
        [*SCRIPT, "--steps", "400000"],
        job_dir,
        "budget",
        emissions=FAST_METER,
        check=over_budget,
        grace_seconds=60,
        emit=lines.append,
    )
    assert record["stopped"] == CARBON_BUDGET and record["exit_code"] == 143
    assert (job_dir / "checkpoints" / "checkpoint.pt").is_file() and not (job_dir / "summary.json").exists()
    assert seen == sorted(seen) and seen[-1] > 0


def test_a_failing_command_raises_with_its_output_and_its_energy_is_kept(tmp_path):
    with pytest.raises(JobFailed, match="exited with 3") as error:
        run_attempt(
            [sys.executable, "-c", "import sys, time; time.sleep(2); print('boom'); sys.exit(3)"],
            tmp_path / "bad",
            "bad",
            emissions=FAST_METER,
            emit=lambda line: None,
        )
    assert "boom" in str(error.value)
    assert read_energy_log(tmp_path / "bad" / ENERGY_LOG_NAME)[-1]["label"] == "end"


def test_a_retry_of_an_interruptible_job_goes_on_from_the_first_slot_that_has_not_ended():
    from carbon_aware.operators.job import first_open_slot

    def wait(now_offset_h: float) -> dict:
        slots = [(0, 1), (3, 4), (6, 7)]
        anchor = NOW + timedelta(hours=now_offset_h)
        plan = {"start": NOW.isoformat(), "end": (NOW + timedelta(hours=7)).isoformat(),
                "clock": {"anchor": anchor.isoformat(), "compression": 2.0},  # grid time = anchor now
                "segments": [{"start": (NOW + timedelta(hours=a)).isoformat(),
                              "end": (NOW + timedelta(hours=b)).isoformat()} for a, b in slots]}
        real_now = datetime.now(timezone.utc)
        return {"plan": plan, "woke_at": real_now.isoformat(), "woke_at_grid": anchor.isoformat()}

    assert first_open_slot(wait(0.5)) == 0
    assert first_open_slot(wait(2)) == 1  # the first slot is over: a retry does not replay it
    assert first_open_slot(wait(6.5)) == 2
    assert first_open_slot(wait(9)) == 2  # all ended: the last slot runs on until the job is done


# One attempt as a worker runs it (records energy log, checkpoints mirrored), in a process of its own.
WORKER = """
import sys
from pathlib import Path
from carbon_aware import objects
from carbon_aware.accounting.jobs import run_attempt
from carbon_aware.records.jobs import RecordsEnergyLog

job_dir, command = Path(sys.argv[1]), sys.argv[2:]
remote = objects.run_path("dag", "run") / "own" / "checkpoints"
mirror = objects.FolderMirror(job_dir / "checkpoints", remote, every_seconds=0.5)
mirror.restore()
with mirror.watching(print):
    run_attempt(command, job_dir, "own", emissions={"measure_power_secs": 0.5, "log_every_seconds": 1.0},
                energy_log=RecordsEnergyLog("dag", "run", "own", worker=job_dir.parent.name))
"""


def test_a_worker_killed_mid_run_leaves_its_energy_and_checkpoint_for_a_retry_on_another_machine(
        tmp_path, monkeypatch):
    """Two machines: each its own folder; what they share is the records database and the object store.
    The first worker (its process group) is SIGKILLed mid-run; the retry on the second resumes from the
    checkpoint it finds in the store and continues the energy log: both attempts' energy counts."""
    import os
    import signal
    import subprocess
    import time

    from carbon_aware.records.jobs import RecordsEnergyLog

    monkeypatch.setenv("CARBON_OBJECTS_URL", f"file://{tmp_path / 'store'}")
    command = [*SCRIPT, "--steps", "1000000", "--checkpoint-every", "50"]
    first = subprocess.Popen([sys.executable, "-c", WORKER, str(tmp_path / "machine-a" / "own"),
                              *command], start_new_session=True, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    stored = tmp_path / "store" / "dag" / "run" / "own" / "checkpoints" / "checkpoint.pt"
    log = RecordsEnergyLog("dag", "run", "own")
    deadline = time.monotonic() + 120
    while not (stored.exists() and len(log.read()) >= 3) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert stored.exists() and len(log.read()) >= 3, "the first attempt's checkpoint and readings"
    os.killpg(first.pid, signal.SIGKILL)  # the machine dies: the worker and the job under it
    first.wait(timeout=30)
    killed = log.read()
    assert {e["attempt"] for e in killed} == {1} and killed[-1]["worker"] == "machine-a"

    lines: list[str] = []
    from carbon_aware import objects

    job_dir = tmp_path / "machine-b" / "own"
    remote = objects.run_path("dag", "run") / "own" / "checkpoints"
    mirror = objects.FolderMirror(job_dir / "checkpoints", remote)
    assert mirror.restore() == ["checkpoint.pt"]
    record = run_attempt([*SCRIPT, "--steps", "200", "--checkpoint-every", "50"], job_dir, "own",
                         emissions=FAST_METER, energy_log=RecordsEnergyLog("dag", "run", "own"),
                         emit=lines.append)
    assert record["attempt"] == 2 and record["exit_code"] == 0
    resumed = f"resumed from {job_dir / 'checkpoints' / 'checkpoint.pt'}"
    assert any(line.startswith(resumed) for line in lines), lines[-5:]
    entries = log.read()
    assert [e["kwh"] for e in entries] == sorted(e["kwh"] for e in entries), "the timeline went backwards"
    assert entries[-1]["kwh"] == pytest.approx(killed[-1]["kwh"] + entries[-1]["attempt_kwh"], rel=1e-9)
    summary = job_summary(job_dir, "own", SCRIPT, [{"index": 0, "attempts": [record]}],
                          energy_log=RecordsEnergyLog("dag", "run", "own"))
    assert summary["attempts"] == 2 and summary["energy"]["energy_kwh"] == entries[-1]["kwh"]


def test_a_long_jobs_summary_goes_to_xcom_with_a_thinned_timeline_that_prices_the_same():
    """14 hours at a reading every 10 s, over two attempts: XCom gets under 100 KB, every attempt's first
    and last and every labelled reading, and the report prices it within 0.5 % of the whole timeline."""
    import math

    from carbon_aware.accounting.jobs import XCOM_SUMMARY_BYTES, summary_for_xcom
    from carbon_aware.accounting.report import grid_timeline, price_run
    from carbon_aware.grid.forecast import IntensityPoint

    timeline, kwh = [], 0.0
    for k in range(5040):
        kwh += 0.0005 * (1.5 + math.sin(k / 97))  # the power varies within every grid slot
        label = "start" if k in (0, 2520) else "end" if k in (2519, 5039) else "reading"
        label = f"epoch {k // 400}" if k % 400 == 399 else label
        timeline.append({"time": (NOW + timedelta(seconds=10 * k)).isoformat(), "kwh": kwh, "label": label,
                         "attempt": 1 if k < 2520 else 2})
    summary = {"run_name": "own", "energy_timeline": timeline, "segments": [
        {"index": 0, "attempts": [{"attempt": 1}]}, {"index": 1, "attempts": [{"attempt": 2}]}]}
    handed = summary_for_xcom(summary)
    assert len(json.dumps(handed)) < XCOM_SUMMARY_BYTES < len(json.dumps(summary))
    assert handed["energy_timeline_points"] == 5040 and summary["energy_timeline"] is timeline
    kept = handed["energy_timeline"]
    assert all(point in kept for point in timeline if point["label"] != "reading")
    assert [p["attempt"] for p in kept].index(2) == kept.index(timeline[2520])  # attempt 2's first reading
    slots = [IntensityPoint(NOW + timedelta(minutes=30 * k), timedelta(minutes=30), 100 + 80 * (k % 3))
             for k in range(30)]
    whole = price_run(grid_timeline(summary, None, 14), slots, [])
    thinned = price_run(grid_timeline(handed, None, 14), slots, [])
    assert thinned["energy_kwh"] == pytest.approx(whole["energy_kwh"], rel=1e-9)
    assert thinned["emissions_g"] == pytest.approx(whole["emissions_g"], rel=0.005)
    small = {"run_name": "own", "energy_timeline": timeline[:100]}
    assert summary_for_xcom(small) is small
