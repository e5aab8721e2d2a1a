"""The carbon ledger on the Celery stack: an ordinary DAG (no carbon parts in it, tagged
``carbon-ledger``) has every task try measured on its worker, priced at the replayed NESO trace's
intensity of its own time, and set beside the window the planner would have chosen on the trace's
forecast (shadow); a task killed mid-run keeps the energy read before the kill; an untagged DAG leaves
no ledger rows. The ledger is read as a user reads it: /carbon/api/ledger."""
from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import numpy as np
import psutil
import pytest

from tests.stack.conftest import LEDGER_DEADLINE_HOURS, NESO_TRACE, REPLAY_START
from tests.stack.services import kill_tree, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.stack, pytest.mark.timeout(900)]

TASKS = ("extract", "transform", "load")


def api_ledger(stack, dag_id: str) -> dict:
    return stack.get("/carbon/api/ledger", dag_id=dag_id)


def tries(ledger: dict, run_id: str) -> dict[str, dict]:
    return {entry["task_id"]: entry for entry in ledger["entries"] if entry["run_id"] == run_id}


def replayed_trace(anchor: datetime):
    """The trace as the workers replayed it: its ``replay_start`` at the real moment ``anchor``."""
    from carbon_aware.grid.clients.trace import TraceProvider
    from carbon_aware.grid.forecast import parse_time

    return TraceProvider.replaying(NESO_TRACE, real_now=anchor, trace_now=parse_time(REPLAY_START))


def slot_value(points, moment: datetime) -> float:
    return next(p.value for p in points if p.start <= moment < p.end)


def check_priced(entry: dict, trace, kept_forecast) -> None:
    """Every interval at the replayed trace's value of its time (an actual where the slot had ended when
    read, else the forecast the try's worker kept), and the emissions their sum."""
    intervals = entry["intervals"]
    assert intervals and math.isclose(sum(i["kwh"] for i in intervals), entry["energy_kwh"], rel_tol=1e-9)
    grams = sum(i["kwh"] * i["g_per_kwh"] for i in intervals)
    assert math.isclose(grams, entry["emissions_g"], rel_tol=1e-9)
    start, end = datetime.fromisoformat(intervals[0]["start"]), datetime.fromisoformat(intervals[-1]["end"])
    actuals = trace.actuals(start - timedelta(hours=1), end + timedelta(hours=1))
    for interval in intervals:
        moment = datetime.fromisoformat(interval["start"])
        kind, _, source = interval["source"].partition(":")
        expected = slot_value(actuals if kind == "actual" else kept_forecast, moment)
        assert interval["g_per_kwh"] == pytest.approx(expected), interval
        assert source in (f"replay:{NESO_TRACE.name}", f"trace:{NESO_TRACE.name}:file"), interval


def check_shadow(entry: dict, forecast_points, started: datetime) -> None:
    """The shadow window is the lowest-mean window of the try's measured length on the trace's forecast
    between its start and the deadline (found here by scanning every minute), and its emissions the
    same energy at that window's forecast intensity."""
    shadow = entry["shadow"]
    assert shadow is not None, entry["shadow_note"]
    deadline = datetime.fromisoformat(shadow["deadline"])
    assert deadline == pytest.approx(started + timedelta(hours=LEDGER_DEADLINE_HOURS),
                                     abs=timedelta(seconds=5))
    intervals = entry["intervals"]
    first = datetime.fromisoformat(intervals[0]["start"])
    length = (datetime.fromisoformat(intervals[-1]["end"]) - first).total_seconds()

    def mean_at(start: datetime) -> float:
        times = np.linspace(start.timestamp(), start.timestamp() + length, 50, endpoint=False)
        return float(np.mean([slot_value(forecast_points, datetime.fromtimestamp(t, tz=timezone.utc))
                              for t in times]))
    candidates = [first + timedelta(minutes=m) for m in range(int((deadline - first).total_seconds()
                                                                  - length) // 60)]
    best = min(mean_at(c) for c in candidates)
    chosen = datetime.fromisoformat(shadow["start"])
    assert mean_at(chosen) <= best + 1e-6, (  # nothing the scan found beats the planner's window
        shadow, first, length, [c for c in candidates if mean_at(c) <= best + 1e-6][:3],
        [(p.start.isoformat(), p.value) for p in forecast_points[:16]])
    assert shadow["forecast_source"] == f"trace:{NESO_TRACE.name}:file"
    moved = sum(i["kwh"] * slot_value(forecast_points, chosen + (datetime.fromisoformat(i["start"]) - first))
                for i in intervals)
    if shadow["priced_on"] == "forecast":  # its window is hours away: no actuals yet
        assert shadow["emissions_g"] == pytest.approx(moved, rel=1e-6)
    assert shadow["saved_g"] == pytest.approx(entry["emissions_g"] - shadow["emissions_g"], rel=1e-9)


def test_an_ordinary_tagged_dag_is_measured_priced_and_shadowed_and_an_untagged_one_is_not(stack):
    run_id = stack.trigger({"work_seconds": 12}, dag_id="ordinary_ledger")
    untagged = stack.trigger({"work_seconds": 2}, dag_id="ordinary_untagged")
    stack.wait_for_run(run_id, timeout=300, dag_id="ordinary_ledger")
    stack.wait_for_run(untagged, timeout=300, dag_id="ordinary_untagged")

    instances = stack.task_instances(run_id, dag_id="ordinary_ledger")
    ledger = api_ledger(stack, "ordinary_ledger")
    measured = tries(ledger, run_id)
    assert set(measured) == set(instances) == set(TASKS)
    forecast_rows = stack.records("SELECT anchor, points FROM carbon_ledger_forecasts ORDER BY hour")
    anchor = datetime.fromtimestamp(forecast_rows[0][0], tz=timezone.utc)
    trace = replayed_trace(anchor)
    kept = trace.forecast(datetime.fromisoformat(measured["extract"]["started_at"]), timedelta(hours=48))
    for task_id, entry in measured.items():
        ti = instances[task_id]
        assert entry["try_number"] == ti["try_number"] and entry["state"] == "success"
        assert entry["energy_kwh"] > 0 and entry["worker"], entry
        readings = stack.records("SELECT max(kwh) FROM carbon_energy_readings WHERE dag_id = :dag "
                                 "AND run_id = :run AND job = :job", dag="ordinary_ledger", run=run_id,
                                 job=f"ledger:{task_id}:try-1")
        assert readings[0][0] == pytest.approx(entry["energy_kwh"], rel=1e-12)
        started = datetime.fromisoformat(entry["started_at"])
        assert abs(started - datetime.fromisoformat(ti["start_date"])) < timedelta(seconds=5)
        check_priced(entry, trace, kept.points)
        check_shadow(entry, kept.points, started)
    totals = {t["task_id"]: t for t in ledger["tasks"] if t["dag_id"] == "ordinary_ledger"}
    assert set(totals) == set(TASKS)
    assert totals["load"]["emissions_g"] == pytest.approx(
        sum(e["emissions_g"] or 0 for e in ledger["entries"] if e["task_id"] == "load"), rel=1e-9)

    # The untagged DAG ran on the same worker and left nothing.
    assert stack.records("SELECT count(*) FROM carbon_ledger_tasks WHERE dag_id = 'ordinary_untagged'") \
        == [(0,)]
    assert api_ledger(stack, "ordinary_untagged")["entries"] == []
    assert "CodeCarbon reads the whole machine" in ledger["note"]


def task_process(ti_id: str) -> psutil.Process:
    """The task's own process: the Task SDK titles it ``airflow worker -- <task instance id>``."""
    for process in psutil.process_iter(["cmdline"]):
        if any(ti_id in part for part in process.info["cmdline"] or []):
            return process
    raise LookupError(ti_id)


def test_a_task_killed_mid_run_keeps_the_energy_read_before_the_kill(stack):
    run_id = stack.trigger({}, dag_id="ordinary_spin")
    job = "ledger:spin:try-1"

    def readings() -> list:
        return stack.records("SELECT kwh FROM carbon_energy_readings WHERE dag_id = 'ordinary_spin' "
                             "AND run_id = :run AND job = :job ORDER BY id", run=run_id, job=job)
    wait_until(lambda: len(readings()) >= 4, 180, "four readings of the spinning task", interval=0.5)
    ti = stack.task_instances(run_id, dag_id="ordinary_spin")["spin"]
    killed = kill_tree(task_process(ti["id"]).pid)
    assert killed
    at_kill = readings()
    wait_until(lambda: stack.run(run_id, dag_id="ordinary_spin")["state"] == "failed", 300,
               "the killed task's run to fail", interval=1)

    entry = tries(api_ledger(stack, "ordinary_spin"), run_id)["spin"]
    assert entry["energy_kwh"] == pytest.approx(at_kill[-1][0], rel=1e-12) and entry["energy_kwh"] > 0
    assert entry["ended_at"] is None and entry["state"] in ("running", "ended unreported")
    assert entry["emissions_g"] == pytest.approx(sum(i["kwh"] * i["g_per_kwh"] for i in entry["intervals"]),
                                                 rel=1e-9)
    assert readings() == at_kill  # nothing after the kill
