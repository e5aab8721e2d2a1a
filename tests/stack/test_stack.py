"""The deployed path for real: PostgreSQL, scheduler, DAG processor, triggerer and API server, a run
triggered through the authenticated REST API."""
import json
from datetime import datetime

import pytest

from tests.stack.conftest import trace_conf
from tests.stack.services import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.stack, pytest.mark.timeout(900)]

TRAINING_TASKS = ("train_baseline", "train_optimized")


class Watcher:
    """Polls a run's task instances and the default pool, remembering what it saw while the sensor was
    deferred."""

    def __init__(self, stack, run_id: str):
        self.stack, self.run_id = stack, run_id
        self.states: dict[str, list[str]] = {}
        self.deferred_views: list[dict] = []

    def __call__(self) -> None:
        tis = self.stack.task_instances(self.run_id)
        for task_id, ti in tis.items():
            seen = self.states.setdefault(task_id, [])
            if not seen or seen[-1] != ti["state"]:
                seen.append(ti["state"])
        sensor = tis.get("wait_for_window")
        if sensor and sensor["state"] == "deferred":
            pool = self.stack.get("/api/v2/pools/default_pool")
            # Deferred before and after the pool was read (there is one deferral): deferred while it was
            # read.
            if self.stack.task_instances(self.run_id)["wait_for_window"]["state"] == "deferred":
                self.deferred_views.append({"sensor": sensor, "default_pool": pool,
                                            "others": {t: ti["state"] for t, ti in tis.items()
                                                       if t != "wait_for_window"}})


def test_triggered_run_defers_trains_in_the_gpu_pool_and_reports(stack):
    run_id = stack.trigger(trace_conf(wait_seconds=30))  # above the sensor's 20 s: it defers
    watcher = Watcher(stack, run_id)
    stack.wait_for_run(run_id, timeout=600, on_poll=watcher)

    # The sensor passed through `deferred`, handed to the triggerer with our trigger.
    assert "deferred" in watcher.states["wait_for_window"], watcher.states
    assert watcher.states["wait_for_window"][-1] == "success"
    assert watcher.deferred_views, "never saw the sensor deferred"
    trigger = next((v["sensor"].get("trigger") for v in watcher.deferred_views
                    if v["sensor"].get("trigger")), None)
    assert trigger and trigger["classpath"] == "carbon_aware.triggers.window.CarbonWindowTrigger", \
        watcher.deferred_views[0]["sensor"]
    sensor_log = stack.log(run_id, "wait_for_window", 1)
    assert "deferring until" in sensor_log and "carbon window trigger: waking at" in sensor_log, \
        sensor_log[-3000:]
    assert "woke at" in sensor_log

    # No worker slot held during the wait: while the sensor was deferred, nothing of the default pool ran
    # (plan_window was done, the report not started), and the pool counted the sensor as deferred only.
    quiet = [v for v in watcher.deferred_views if v["others"].get("report") in (None, "none", "scheduled")]
    assert quiet
    for view in quiet:
        assert view["default_pool"]["running_slots"] == 0, view
        assert view["default_pool"]["deferred_slots"] == 1, view

    # Both training tasks ran in the gpu pool, once each.
    tis = stack.task_instances(run_id)
    for task_id in TRAINING_TASKS:
        assert tis[task_id]["pool"] == "gpu" and tis[task_id]["state"] == "success", tis[task_id]

    # The report is in XCom, in the records database and (a copy, and its plot) in the object store, and
    # they agree.
    report = stack.xcom(run_id, "report")
    assert stack.stored_report(run_id) == report
    assert json.loads(stack.read_object(report["files"]["json"])) == report
    assert stack.read_object(report["files"]["plot"]).startswith(b"\x89PNG")
    assert report["dag_run_id"] == run_id
    assert report["sources"]["fallback_reasons"] == [] and report["sources"]["forecast"].startswith("trace:")
    assert report["runs"]["baseline"]["final_test_accuracy_pct"] > 80
    assert report["schedule"]["wait_seconds"] >= 25
    report_log = stack.log(run_id, "report", 1)
    assert "emissions (time-resolved)" in report_log and "saving:" in report_log, report_log[-3000:]


def _interval(ti: dict) -> tuple[datetime, datetime]:
    return datetime.fromisoformat(ti["start_date"]), datetime.fromisoformat(ti["end_date"])


def test_two_runs_back_to_back_stay_apart(stack):
    # Both runs train their baseline too (every_run), so four trainings compete for the gpu pool's slot.
    # Their ids, chosen by whoever triggers them, once mapped to one output directory ('nightly_1').
    first = stack.trigger(trace_conf(wait_seconds=3, baseline="every_run"), run_id="nightly:1")
    second = stack.trigger(trace_conf(wait_seconds=3, baseline="every_run"), run_id="nightly_1")
    assert (first, second) == ("nightly:1", "nightly_1")
    runs = [stack.wait_for_run(run_id, timeout=600) for run_id in (first, second)]

    # max_active_runs=1: the second run started only after the first ended.
    assert datetime.fromisoformat(runs[1]["start_date"]) >= datetime.fromisoformat(runs[0]["end_date"]), runs

    # The gpu pool's single slot: no two training attempts ever overlapped.
    attempts = sorted(_interval(ti) for run_id in (first, second) for task_id in TRAINING_TASKS
                      for ti in stack.tries(run_id, task_id) if ti["pool"] == "gpu")
    assert len(attempts) == 4
    for earlier, later in zip(attempts, attempts[1:]):
        assert later[0] >= earlier[1], attempts

    # Separate records, each report about its own run: in the records database, and its copies under
    # the run's own prefix in the object store.
    for run_id in (first, second):
        report = stack.xcom(run_id, "report")
        assert stack.stored_report(run_id) == report and report["dag_run_id"] == run_id
        assert sorted(stack.object_keys(run_id))[:2] == ["comparison.png", "comparison_report.json"]
        assert json.loads(stack.read_object(report["files"]["json"]))["dag_run_id"] == run_id
        summaries = dict(stack.records("SELECT job, summary FROM carbon_job_summaries WHERE run_id = :run",
                                       run=run_id))
        assert {json.loads(summaries[name])["status"] for name in ("baseline", "optimized")} == {"completed"}


def test_whatever_a_failed_test_leaves_is_cleared_before_the_next(stack):
    """What a failed test can leave behind: a run deferred for hours (here: not compressed, a 24 h
    deadline), another queued behind it, and a dead worker. The clean-up that runs before every stack
    test fails both runs, starts the worker again and leaves nothing active, and a run after it works."""
    from tests.stack.services import DEFAULT_WORKER, kill_tree

    stuck = stack.trigger(trace_conf(wait_seconds=3, time_compression=1, baseline="off"))
    behind = stack.trigger(trace_conf(wait_seconds=3, baseline="off"))
    wait_until(lambda: stack.task_instances(stuck).get("wait_for_window", {}).get("state") == "deferred",
               300, "the first run's sensor to defer")
    kill_tree(stack.processes[DEFAULT_WORKER].pid)

    done = stack.clear()
    assert f"started {DEFAULT_WORKER}" in done and any(stuck in line for line in done), done
    assert stack.run(stuck)["state"] == "failed" and stack.run(behind)["state"] == "failed"
    assert stack.processes[DEFAULT_WORKER].poll() is None
    assert stack.get("/api/v2/pools/gpu")["occupied_slots"] == 0
    stack.wait_for_run(stack.trigger(trace_conf(wait_seconds=3, baseline="off")), timeout=600)
