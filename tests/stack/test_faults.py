"""Faults the deployed stack survives: a killed trainer, a restarted triggerer, an unreachable provider."""
import json
import os
import signal
from datetime import datetime, timedelta
from pathlib import Path

import psutil
import pytest
import torch

from tests.stack.conftest import trace_conf
from tests.stack.services import free_port, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.stack, pytest.mark.timeout(900)]


def _trainer_processes(run_dir: Path, run_name: str) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if "training" in cmdline and f"output.dir={run_dir}" in cmdline and f"training.run_name={run_name}" in cmdline:
            found.append(process)
    return found


def test_trainer_killed_mid_epoch_resumes_on_retry(stack):
    run_id = stack.trigger(trace_conf(wait_seconds=3, baseline="off", training_overrides=["training.epochs=3"]))
    run_dir = stack.output_dir / run_id.replace(":", "_").replace("+", "_")
    checkpoint = run_dir / "optimized" / "checkpoints" / "last.pt"

    # Once epoch 1's checkpoint is on disk the trainer is inside epoch 2: SIGKILL it there.
    wait_until(checkpoint.exists, 300, "the first epoch's checkpoint", interval=0.1)
    victims = wait_until(lambda: _trainer_processes(run_dir, "optimized"), 30, "the trainer process", interval=0.1)
    epoch_at_kill = torch.load(checkpoint, map_location="cpu", weights_only=False)["state"]["epoch"]
    for victim in victims:
        os.kill(victim.pid, signal.SIGKILL)

    stack.wait_for_run(run_id, timeout=600)
    tries = stack.tries(run_id, "train_optimized")
    assert [t["state"] for t in tries] == ["failed", "success"], tries
    assert "trainer exited with -9" in stack.log(run_id, "train_optimized", 1)
    assert "resumed from" in stack.log(run_id, "train_optimized", 2)

    summary = json.loads((run_dir / "optimized" / "summary.json").read_text())
    assert epoch_at_kill < 3
    assert [e["epoch"] for e in summary["epochs"]] == [1, 2, 3] and summary["attempts"] == 2
    final = torch.load(checkpoint, map_location="cpu", weights_only=False)  # loads: not corrupt
    assert final["state"]["epoch"] == 3
    assert not list(checkpoint.parent.glob("*.tmp*")), "a temporary checkpoint was left behind"


def test_triggerer_restart_while_deferred_still_wakes_on_time(stack):
    from carbon_aware.report import Clock

    run_id = stack.trigger(trace_conf(wait_seconds=60, baseline="off"))

    def running_in_a_triggerer():
        sensor = stack.task_instances(run_id).get("wait_for_window", {})
        return sensor.get("state") == "deferred" and (sensor.get("triggerer_job") or {}).get("id")
    first_job = wait_until(running_in_a_triggerer, 300, "a triggerer to take the sensor's trigger", interval=0.5)
    trigger_logs = stack.home / "logs" / "dag_id=carbon_training" / f"run_id={run_id}" / "task_id=wait_for_window"
    wait_until(lambda: "waking at" in _read(trigger_logs / f"attempt=1.log.trigger.{first_job}.log"), 60,
               "the trigger to start in the first triggerer")
    old = stack.processes["triggerer"].pid
    stack.restart_component("triggerer")
    assert stack.processes["triggerer"].pid != old
    assert stack.task_instances(run_id)["wait_for_window"]["state"] == "deferred"

    stack.wait_for_run(run_id, timeout=600)
    woke = stack.xcom(run_id, "wait_for_window")
    woke_at = datetime.fromisoformat(woke["woke_at"])
    started = woke_at - timedelta(seconds=woke["waited_seconds"])
    planned_wake = Clock.from_plan(woke["plan"], started=started).real(datetime.fromisoformat(woke["plan"]["start"]))
    late = (woke_at - planned_wake).total_seconds()
    assert 0 <= late < 30, f"woke {late:.1f} s after the planned moment"
    assert woke["waited_seconds"] >= 55 and woke["replans"] == []
    # The trigger ran in the first triggerer, was picked up by the new one, and fired there.
    fired_in = [path.name for path in trigger_logs.glob("attempt=1.log.trigger.*.log") if "Trigger fired event" in _read(path)]
    assert len(fired_in) == 1 and fired_in[0] != f"attempt=1.log.trigger.{first_job}.log", fired_in
    assert "Trigger fired event" not in _read(trigger_logs / f"attempt=1.log.trigger.{first_job}.log")


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def test_provider_unreachable_runs_on_the_fallback_and_says_so(stack):
    closed = free_port()  # nothing listens there
    conf = {"providers": [{"name": "carbon_aware_sdk", "location": "westeurope", "base_url": f"http://127.0.0.1:{closed}"}],
            "job_duration_hours": 1, "deadline_hours": 24, "time_compression": 20000, "baseline": "off",
            "baseline_config": "include/configs/test.yaml", "optimized_config": "include/configs/test.yaml"}
    run_id = stack.trigger(conf)
    stack.wait_for_run(run_id, timeout=600)

    report = stack.xcom(run_id, "report")
    reasons = report["sources"]["fallback_reasons"]
    assert report["sources"]["forecast"].startswith("mock"), report["sources"]
    assert reasons and "carbon_aware_sdk" in reasons[0] and str(closed) in reasons[0], reasons
    assert "fallbacks: none" not in stack.log(run_id, "report", 1)
    assert "carbon_aware_sdk" in stack.log(run_id, "plan_window", 1)
