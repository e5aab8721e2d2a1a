"""Faults the deployed stack survives on the CeleryExecutor: the training worker killed mid-epoch, the
triggerer, Redis and the API server restarted, an unreachable provider."""
import json
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import requests
import torch

from tests.stack.conftest import trace_conf
from carbon_aware.outputs import run_dir_name
from tests.stack.services import TRAINING_WORKER, free_port, kill_tree, trainer_processes, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.stack, pytest.mark.timeout(900)]


def test_training_worker_killed_mid_epoch_retries_when_it_is_back_and_resumes(stack):
    run_id = stack.trigger(trace_conf(wait_seconds=3, baseline="off",
                                      training_overrides=["training.epochs=3"]))
    run_dir = stack.output_dir / run_dir_name("carbon_training") / run_dir_name(run_id)  # the worker's
    checkpoint = run_dir / "optimized" / "checkpoints" / "last.pt"

    # Once epoch 1's checkpoint is on disk the trainer is inside epoch 2: SIGKILL the Celery worker that
    # runs it, with everything under it (the task's supervisor and the trainer), as if its machine died.
    wait_until(checkpoint.exists, 300, "the first epoch's checkpoint", interval=0.1)
    assert trainer_processes(stack.output_dir, run_dir, "optimized"), "the trainer should be running"
    epoch_at_kill = torch.load(checkpoint, map_location="cpu", weights_only=False)["state"]["epoch"]
    killed = kill_tree(stack.processes[TRAINING_WORKER].pid)
    assert len(killed) >= 3 and not trainer_processes(stack.output_dir, run_dir), killed

    # With no heartbeat the scheduler fails the attempt and schedules a retry, which waits in the queue:
    # no worker consumes the training queue until the worker is back.
    def retry_waiting():
        ti = stack.task_instances(run_id)["train_optimized"]
        return ti["try_number"] == 2 and ti["state"] in ("up_for_retry", "scheduled", "queued") and ti
    wait_until(retry_waiting, 180, "the scheduler to fail the killed attempt and schedule a retry",
               interval=1)
    wait_until(lambda: stack.task_instances(run_id)["train_optimized"]["state"] == "queued", 60,
               "the retry queued")
    for _ in range(5):
        assert stack.task_instances(run_id)["train_optimized"]["state"] == "queued"
        time.sleep(1)
    stack.start_component(TRAINING_WORKER)

    stack.wait_for_run(run_id, timeout=600)
    tries = stack.tries(run_id, "train_optimized")
    assert [t["state"] for t in tries] == ["failed", "success"], tries
    assert tries[0]["hostname"] and tries[1]["queue"] == tries[0]["queue"] == "training", tries
    assert "resumed from" in stack.log(run_id, "train_optimized", 2)

    ((text,),) = stack.records("SELECT summary FROM carbon_job_summaries WHERE run_id = :run AND "
                               "job = 'optimized'", run=run_id)
    summary = json.loads(text)
    assert epoch_at_kill < 3
    assert [e["epoch"] for e in summary["epochs"]] == [1, 2, 3] and summary["attempts"] == 2
    # No energy lost: the energy readings in the records (written by the operator's meter around the
    # trainer, one row each) hold both attempts', and the report's energy is the killed attempt's last
    # reading plus everything the retry measured.
    priced = stack.xcom(run_id, "report")["intensities"]["optimized"]
    log = [row._asdict() for row in stack.records(
        "SELECT attempt, kwh, attempt_kwh FROM carbon_energy_readings WHERE run_id = :run AND "
        "job = 'optimized' ORDER BY id", run=run_id)]
    attempts = sorted({entry["attempt"] for entry in log})
    assert attempts == [1, 2], attempts
    last = {attempt: [e for e in log if e["attempt"] == attempt][-1] for attempt in attempts}
    assert last[1]["attempt_kwh"] > 0 and last[2]["attempt_kwh"] > 0
    both = last[1]["attempt_kwh"] + last[2]["attempt_kwh"]
    assert priced["energy_kwh"] == pytest.approx(both, rel=1e-6)
    assert priced["energy_kwh"] == pytest.approx(log[-1]["kwh"], rel=1e-9)
    assert [e["kwh"] for e in log] == sorted(e["kwh"] for e in log), "the energy timeline went backwards"
    final = torch.load(checkpoint, map_location="cpu", weights_only=False)  # loads: not corrupt
    assert final["state"]["epoch"] == 3
    assert not list(checkpoint.parent.glob("*.tmp*")), "a temporary checkpoint was left behind"
    assert "optimized/checkpoints/last.pt" in stack.object_keys(run_id)  # where a retry elsewhere finds it


def _wait_deferred_in_a_triggerer(stack, run_id: str) -> int:
    def running_in_a_triggerer():
        sensor = stack.task_instances(run_id).get("wait_for_window", {})
        return sensor.get("state") == "deferred" and (sensor.get("triggerer_job") or {}).get("id")
    return wait_until(running_in_a_triggerer, 300, "a triggerer to take the sensor's trigger", interval=0.5)


def test_redis_restarted_while_the_sensor_is_deferred_the_run_still_finishes(stack):
    run_id = stack.trigger(trace_conf(wait_seconds=45, baseline="off"))
    _wait_deferred_in_a_triggerer(stack, run_id)
    old = stack.redis.process.pid
    stack.redis.restart()
    assert stack.redis.process.pid != old
    assert stack.task_instances(run_id)["wait_for_window"]["state"] == "deferred"

    stack.wait_for_run(run_id, timeout=600)  # resumed, trained and reported through the restarted broker
    tis = stack.task_instances(run_id)
    assert tis["train_optimized"]["queue"] == "training" and tis["report"]["queue"] == "default", tis
    assert stack.xcom(run_id, "report")["dag_run_id"] == run_id


def test_api_server_restarted_the_carbon_page_answers_again_with_the_same_data(stack):
    if not stack.records("SELECT id FROM carbon_reports"):
        stack.wait_for_run(stack.trigger(trace_conf(wait_seconds=3, baseline="off")), timeout=600)
    headers = {"Authorization": f"Bearer {stack.token()}"}
    before = requests.get(f"{stack.base_url}/carbon/api/runs", headers=headers, timeout=30)
    assert before.status_code == 200 and before.json()["runs"], before.text[:500]

    old = stack.processes["airflow-apiserver"].pid
    stack.restart_component("airflow-apiserver")
    assert stack.processes["airflow-apiserver"].pid != old
    stack.wait_healthy()
    after = requests.get(f"{stack.base_url}/carbon/api/runs", headers=headers, timeout=30)  # the same token
    assert after.status_code == 200 and after.json() == before.json()
    page = requests.get(f"{stack.base_url}/carbon/", headers=headers, timeout=30)
    assert page.status_code == 200 and all(row["run_id"] in page.text for row in after.json()["runs"])


def test_triggerer_restart_while_deferred_still_wakes_on_time(stack):
    from carbon_aware.clock import Clock

    run_id = stack.trigger(trace_conf(wait_seconds=60, baseline="off"))

    first_job = _wait_deferred_in_a_triggerer(stack, run_id)
    trigger_logs = (stack.home / "logs" / "dag_id=carbon_training" / f"run_id={run_id}"
                    / "task_id=wait_for_window")
    wait_until(lambda: "waking at" in _read(trigger_logs / f"attempt=1.log.trigger.{first_job}.log"), 60,
               "the trigger to start in the first triggerer")
    old = stack.processes["airflow-triggerer"].pid
    stack.restart_component("airflow-triggerer")
    assert stack.processes["airflow-triggerer"].pid != old
    assert stack.task_instances(run_id)["wait_for_window"]["state"] == "deferred"

    stack.wait_for_run(run_id, timeout=600)
    woke = stack.xcom(run_id, "wait_for_window")
    woke_at = datetime.fromisoformat(woke["woke_at"])
    started = woke_at - timedelta(seconds=woke["waited_seconds"])
    planned_wake = Clock.from_plan(woke["plan"], started=started).real(
        datetime.fromisoformat(woke["plan"]["start"]))
    late = (woke_at - planned_wake).total_seconds()
    assert 0 <= late < 30, f"woke {late:.1f} s after the planned moment"
    assert woke["waited_seconds"] >= 55 and woke["replans"] == []
    # The trigger ran in the first triggerer, was picked up by the new one, and fired there.
    fired_in = [path.name for path in trigger_logs.glob("attempt=1.log.trigger.*.log")
                if "Trigger fired event" in _read(path)]
    assert len(fired_in) == 1 and fired_in[0] != f"attempt=1.log.trigger.{first_job}.log", fired_in
    assert "Trigger fired event" not in _read(trigger_logs / f"attempt=1.log.trigger.{first_job}.log")


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def test_provider_unreachable_runs_on_the_fallback_and_says_so(stack):
    closed = free_port()  # nothing listens there
    stack.add_connection("sdk_unreachable", "carbon_aware_sdk", host=f"http://127.0.0.1:{closed}")
    conf = {"providers": [{"name": "carbon_aware_sdk", "location": "westeurope",
                           "conn_id": "sdk_unreachable"}],
            "job_duration_hours": 1, "deadline_hours": 24, "time_compression": 20000, "baseline": "off",
            "baseline_config": "test.yaml", "optimized_config": "test.yaml"}
    run_id = stack.trigger(conf)
    stack.wait_for_run(run_id, timeout=600)

    report = stack.xcom(run_id, "report")
    reasons = report["sources"]["fallback_reasons"]
    assert report["sources"]["forecast"].startswith("mock"), report["sources"]
    assert reasons and "carbon_aware_sdk" in reasons[0] and str(closed) in reasons[0], reasons
    assert "fallbacks: none" not in stack.log(run_id, "report", 1)
    assert "carbon_aware_sdk" in stack.log(run_id, "plan_window", 1)
