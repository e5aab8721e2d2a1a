"""carbon_own_job through the real CLI (`airflow dags test`): a user's script, planned, measured from
outside, reported; and a carbon budget that stops it at its checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from carbon_aware.planning.plan import make_plan
from tests.conftest import CARBON_DIR, REPO_ROOT, compression_for_wait

NESO = CARBON_DIR / "neso_carbon_intensity_api" / "neso_2023_national_intensity.csv"


def own_conf(**extra) -> dict:
    conf = {
        "providers": [{"name": "trace", "path": str(NESO), "replay_start": "2023-03-01T06:00:00Z"}],
        "job_duration_hours": 1,
        "deadline_hours": 12,
        "interruptible": False,
        "steps": 300,
    }
    conf.update(extra)
    return conf


def _dags_test(env, conf) -> tuple[subprocess.CompletedProcess, str]:
    airflow = str(Path(sys.executable).parent / "airflow")
    out = subprocess.run(
        [airflow, "dags", "test", "carbon_own_job", "-c", json.dumps(conf)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    log = out.stdout + out.stderr
    return out, log


def _job_dir(report: dict) -> Path:
    """The job's folder on the machine that ran it (here, this one)."""
    from carbon_aware.outputs import run_dir_for

    return run_dir_for(report["dag_run_id"], "carbon_own_job") / "own_training"


def _report(log: str) -> dict:
    from carbon_aware.records.reports import report_of

    run_id = log.split("DagRun Finished:")[1].split("run_id=")[1].split(",")[0]
    return report_of("carbon_own_job", run_id)


@pytest.mark.integration
def test_own_job_runs_offline_and_its_report_prices_the_measured_energy(airflow_db):
    from carbon_aware.records.jobs import RecordsEnergyLog, summary_of

    conf = own_conf()
    probe = {k: v for k, v in conf.items() if k != "steps"}
    conf["time_compression"] = compression_for_wait(make_plan(probe, "probe", trainer_configs=False), 10)
    out, log = _dags_test(airflow_db, conf)
    assert out.returncode == 0 and "state=success" in log, log[-4000:]
    report = _report(log)
    job_dir = _job_dir(report)
    measured = RecordsEnergyLog("carbon_own_job", report["dag_run_id"], "own_training").read()
    own = json.loads((job_dir / "summary.json").read_text())
    stored = summary_of("carbon_own_job", report["dag_run_id"], "own_training")  # in the records too
    assert stored["final_test_accuracy_pct"] == own["final_test_accuracy_pct"]
    assert report["job"]["command"][-1].endswith("/include/examples/own_training.py")  # no param in its argv
    assert json.loads((job_dir / "job_params.json").read_text()) == {"steps": 300}  # its params, as data
    assert own["steps"] == 300  # the script trained the steps the run asked for
    assert report["tasks"] == {"wait": "wait", "job": "train", "report": "report"}  # the Carbon page's links
    assert (
        report["baseline_kind"] == "off"
        and report["accuracy_impact"]["optimized_accuracy"] == own["final_test_accuracy_pct"]
    )
    for name in (
        "optimized",
        "optimized_at_run_now",
    ):  # the script's own energy, priced interval by interval
        block = report["intensities"][name]
        assert block["energy_kwh"] == pytest.approx(measured[-1]["kwh"], rel=1e-6)
        grams = sum(i["kwh"] * i["g_per_kwh"] for i in block["intervals"])
        assert grams == pytest.approx(block["emissions_g"], rel=0.01)
    assert report["carbon_savings"]["reduction_kg"] == pytest.approx(report["timing"]["saving_kg"])
    # Time-compressed x~100: priced from the sensor's release, not seconds of process start-up later.
    at = datetime.fromisoformat
    assert at(report["intensities"]["optimized"]["window_start"]) == at(report["schedule"]["actual_start"])
    assert "saving:" in log and "planned start" in log  # the wait, then the table in the task log


@pytest.mark.integration
def test_a_carbon_budget_stops_the_job_at_its_checkpoint_without_retry(airflow_db):
    conf = own_conf(
        steps=10_000_000,
        carbon_budget_g=1e-7,
        job_duration_hours=0.05,
        deadline_hours=0.05,
        time_compression=1,
    )  # no slack: it starts at once
    out, log = _dags_test(airflow_db, conf)
    assert "stopped by the carbon budget at" in log, log[-4000:]
    assert "SIGTERM: checkpoint written at step" in log  # the script checkpointed before it exited
    report = _report(log)
    job_dir = _job_dir(report)
    assert (job_dir / "checkpoints" / "checkpoint.pt").is_file() and not (job_dir / "summary.json").exists()
    assert report["stop"]["reason"] == "carbon_budget" and report["stop"]["spent_g"] > 1e-7
    assert report["job"]["status"] == "stopped_by_budget" and report["job"]["attempts"] == 1
    assert log.count("attempt 1: launching") == 1 and "attempt 2: launching" not in log  # not retried


class _JobTI:
    """The task instance a job operator sees: the sensor's release, its own XComs, its try."""

    try_number = 1
    dag_id, run_id = "carbon_own_job", "manual__slots"

    def __init__(self, wait):
        self.wait, self.pushed = wait, {}

    def xcom_pull(self, task_ids, key="return_value"):
        return self.wait if task_ids == "wait" else self.pushed.get((task_ids, key))

    def xcom_push(self, key, value):
        self.pushed[("train", key)] = json.loads(json.dumps(value))


def test_between_slots_the_job_defers_with_a_small_trigger_and_resumes_from_its_xcom(tmp_path):
    from datetime import timedelta, timezone

    from airflow.sdk.exceptions import TaskDeferred

    from carbon_aware.operators.job import CarbonJobOperator

    now = datetime.now(timezone.utc)
    conf = {k: v for k, v in own_conf(interruptible=True).items() if k != "steps"}
    plan = make_plan(conf, "slots", now=now)
    hour = timedelta(hours=1)
    plan["segments"] = [{"start": (now + k * hour).isoformat(),
                         "end": (now + k * hour + hour / 2).isoformat()} for k in (1, 3)]
    wait = {"plan": plan, "woke_at": now.isoformat(), "woke_at_grid": now.isoformat()}
    ti = _JobTI(wait)
    operator = CarbonJobOperator(task_id="train", wait_task_id="wait", command=[sys.executable, "-c", "0"])
    with pytest.raises(TaskDeferred) as deferred:
        operator.execute({"ti": ti, "params": {}})
    classpath, kwargs = deferred.value.trigger.serialize()
    assert kwargs == {"moment": plan["segments"][0]["start"], "payload": {}}
    assert deferred.value.method_name == "execute_complete"
    state = ti.pushed[("train", "job_state")]
    assert state["next"] == 0 and state["segments"] == [] and "wait" not in state
    resumed = {}
    operator._run = lambda context, state: resumed.update(state)  # what execute_complete resumes with
    operator.execute_complete({"ti": ti}, {"moment": kwargs["moment"]})
    assert resumed == {**state, "wait": wait}
