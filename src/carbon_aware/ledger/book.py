"""The ledger as the page shows it: every measured try priced at the grid's intensity of its own time
(actuals where known, else the forecast kept when it started, else the nearest known slot; the source
named per interval), its shadow plan (the planner's best window before the deadline, on that forecast,
with the same energy profile priced there), and totals by DAG and task with a daily trend.

A try's figures are computed when asked for, and kept in its row once they can no longer change (it has
ended and every interval, its own and its shadow's, is priced on actuals)."""
from __future__ import annotations

import logging
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from sqlalchemy import func, select, update

from carbon_aware.accounting.report import price_run, shifted
from carbon_aware.grid.forecast import IntensityPoint
from carbon_aware.ledger.actuals import actual_points
from carbon_aware.ledger.forecasts import StoredForecast, forecast_at
from carbon_aware.ledger.meter import TryKey, utc
from carbon_aware.ledger.models import Ledger, LedgerDay, LedgerTask, PricedInterval, Shadow, TaskLedger
from carbon_aware.records import engine_for
from carbon_aware.records.tables import ledger_tasks as TASKS

log = logging.getLogger(__name__)
Timeline = list[tuple[datetime, float]]
UNREPORTED = "ended unreported"
SILENT_READINGS = 3  # a running try with no reading for this many intervals (and a minute) has died


def ledger(may_read: Callable[[str], bool] = lambda dag_id: True, limit: int = 2000,
           url: str | None = None, now: datetime | None = None) -> Ledger:
    """The newest ``limit`` tries of the DAGs ``may_read`` allows, and every such DAG's task totals."""
    now = now or datetime.now(timezone.utc)
    with engine_for(url).connect() as connection:
        rows = connection.execute(select(TASKS).order_by(TASKS.c.started_at.desc()).limit(limit)).all()
    entries = [entry(row, url, now) for row in rows if may_read(row.dag_id)]
    from carbon_aware.ledger.runs import run_ledgers

    with engine_for(url).connect() as connection:
        counts = connection.execute(select(TASKS.c.dag_id, func.count()).group_by(TASKS.c.dag_id)).all()
    return Ledger(tasks=task_totals(entries), entries=entries, runs=run_ledgers(entries, url, now),
                  tries_total=sum(n for dag_id, n in counts if may_read(dag_id)))


def entry(row: Any, url: str | None, now: datetime) -> LedgerTask:
    if row.priced:
        return LedgerTask.model_validate_json(row.priced)
    key = TryKey(row.dag_id, row.run_id, row.task_id, row.map_index, row.try_number)
    readings = _readings(key, url)
    timeline = _timeline(readings)
    task = LedgerTask(dag_id=row.dag_id, run_id=row.run_id, task_id=row.task_id, map_index=row.map_index,
                      try_number=row.try_number, worker=row.worker, region=row.region,
                      started_at=utc(row.started_at), ended_at=utc(row.ended_at) if row.ended_at else None,
                      deadline=utc(row.deadline),
                      state=_state(row, timeline, now), energy_note=_energy_note(row, readings),
                      energy_kwh=timeline[-1][1] if readings and not row.energy_error else None)
    if task.energy_kwh is not None:
        last = readings[-1]
        task.cpu_kwh, task.gpu_kwh, task.ram_kwh = last["cpu_kwh"], last["gpu_kwh"], last["ram_kwh"]
        task.measured_seconds = (timeline[-1][0] - timeline[0][0]).total_seconds()
    if task.energy_kwh and len(timeline) >= 2:
        _price(task, timeline, utc(row.deadline), url, now)
    if _final(task):
        _keep(key, task, url)
    return task


def _timeline(readings: list[dict[str, Any]]) -> Timeline:
    """(time, cumulative kWh) from the meter's start (its first reading's time less the seconds it had
    measured by then, at 0 kWh), so that every kWh read lies in an interval."""
    timeline = [(datetime.fromisoformat(r["time"]), float(r["kwh"])) for r in readings]
    if timeline and timeline[0][1] > 0:
        timeline.insert(0, (timeline[0][0] - timedelta(seconds=float(readings[0]["seconds"])), 0.0))
    return timeline


def _readings(key: TryKey, url: str | None) -> list[dict[str, Any]]:
    from carbon_aware.records.jobs import RecordsEnergyLog

    return RecordsEnergyLog(key.dag_id, key.run_id, key.job, url=url).read()


def _state(row: Any, timeline: Timeline, now: datetime) -> str:
    if row.state != "running":
        return row.state
    from carbon_aware.ledger.settings import settings

    last = timeline[-1][0] if timeline else utc(row.started_at)
    silent = timedelta(seconds=SILENT_READINGS * settings().reading_seconds + 60)
    return UNREPORTED if now - last > silent else "running"


def _energy_note(row: Any, readings: list[dict[str, Any]]) -> str | None:
    if row.energy_error:
        return f"energy unknown: {row.energy_error}"
    if not readings:
        return "energy unknown: no reading yet (its meter is starting)"
    late = _timeline(readings)[0][0].timestamp() - row.started_at  # when the meter began measuring
    if late > 1:
        return f"measured from {late:.1f} s after it started (the time its meter took to start)"
    return None


def _price(task: LedgerTask, timeline: Timeline, deadline: datetime, url: str | None, now: datetime) -> None:
    forecast = forecast_at(url, task.region, task.started_at)
    anchor = forecast.anchor if forecast is not None else task.started_at
    end = min(now, max(deadline, timeline[-1][0]) + timedelta(hours=1))
    actual, actual_source = actual_points(url, task.region, anchor, timeline[0][0] - timedelta(hours=1), end)
    predicted = forecast.points if forecast is not None and not forecast.mock else []
    names = {"actual": f"actual:{actual_source}",
             "forecast": f"forecast:{forecast.source}" if forecast is not None else "forecast"}
    priced = price_run(timeline, actual, predicted)
    if priced is None or "error" in priced:
        task.energy_note = task.energy_note or "not priced: no intensity known for its region"
        return
    task.intervals = [PricedInterval(**{**i, "source": names.get(i["source"], i["source"])})
                      for i in priced["intervals"]]
    task.emissions_g = sum(i.kwh * i.g_per_kwh for i in task.intervals)
    task.mean_intensity_g_per_kwh = task.emissions_g / task.energy_kwh
    task.intensity_sources = sorted({i.source for i in task.intervals})
    task.shadow, task.shadow_note = shadow_plan(timeline, forecast, deadline, actual, task.emissions_g)


def shadow_plan(timeline: Timeline, forecast: StoredForecast | None, deadline: datetime,
                actual: list[IntensityPoint], emissions_g: float) -> tuple[Shadow | None, str | None]:
    """Where the planner would have put the same energy profile, on the forecast the try had when it
    started, by ``deadline``; priced on actuals where they are known, else on that forecast."""
    from carbon_aware.grid.forecast import points_to_arrays
    from carbon_aware.planning.planner import Curve, PlanningError, best_start

    if forecast is None:
        return None, "no forecast was kept for its region when it started"
    if forecast.mock:
        return None, "only the mock curve was available when it started: not a basis for a saving"
    start, seconds = timeline[0][0], (timeline[-1][0] - timeline[0][0]).total_seconds()
    latest_end = min(deadline, forecast.points[-1].end)
    if start + timedelta(seconds=seconds) > latest_end:
        return None, "no window of its length fits between its start and the deadline"
    try:
        best, _mean = best_start(Curve(*points_to_arrays(forecast.points)), seconds, start.timestamp(),
                                 latest_end.timestamp() - seconds)
    except PlanningError as error:
        return None, str(error)
    moved = price_run(shifted(timeline, utc(best)), actual, forecast.points)
    if moved is None or "error" in moved:
        return None, "its window could not be priced"
    saved = emissions_g - moved["emissions_g"]
    return Shadow(deadline=deadline, start=utc(best), end=utc(best + seconds),
                  forecast_source=forecast.source,
                  forecast_issued=forecast.hour, emissions_g=moved["emissions_g"],
                  priced_on=moved["intensity_source"], saved_g=saved,
                  saved_pct=100 * saved / emissions_g if emissions_g else None), None


def _final(task: LedgerTask) -> bool:
    """Whether the try's figures can no longer change: it ended, and it and its shadow are priced on
    actuals (or it was not measured)."""
    if task.state in ("running", UNREPORTED):
        return False
    if task.energy_kwh is None:
        return True
    own = bool(task.intervals) and all(i.source.startswith("actual:") for i in task.intervals)
    return own and (task.shadow is None or task.shadow.priced_on == "actual")


def _keep(key: TryKey, task: LedgerTask, url: str | None) -> None:
    try:
        with engine_for(url).begin() as connection:
            connection.execute(update(TASKS).where(*key.where()).values(priced=task.model_dump_json()))
    except Exception as error:  # a read-only reader: computed again next time
        log.warning("ledger: not kept: %s", error)


def task_totals(entries: list[LedgerTask]) -> list[TaskLedger]:
    by_task: dict[tuple[str, str], list[LedgerTask]] = defaultdict(list)
    for e in entries:
        by_task[(e.dag_id, e.task_id)].append(e)
    return [_totals(dag_id, task_id, tries) for (dag_id, task_id), tries in sorted(by_task.items())]


def _totals(dag_id: str, task_id: str, tries: list[LedgerTask]) -> TaskLedger:
    priced = [t for t in tries if t.emissions_g is not None]
    shadowed = [t for t in priced if t.shadow is not None]
    emissions = sum(t.emissions_g for t in priced)
    energy_priced = sum(t.energy_kwh for t in priced)
    saved = sum(t.shadow.saved_g for t in shadowed)
    base = sum(t.emissions_g for t in shadowed)
    days: dict[Any, list[LedgerTask]] = defaultdict(list)
    for t in tries:
        days[t.started_at.date()].append(t)
    trend = [LedgerDay(day=day, tries=len(ts), energy_kwh=sum(t.energy_kwh or 0 for t in ts),
                       emissions_g=sum(t.emissions_g or 0 for t in ts),
                       would_have_saved_g=sum(t.shadow.saved_g for t in ts if t.shadow))
             for day, ts in sorted(days.items())]
    return TaskLedger(dag_id=dag_id, task_id=task_id, runs=len({t.run_id for t in tries}), tries=len(tries),
                      energy_kwh=sum(t.energy_kwh or 0 for t in tries), emissions_g=emissions,
                      mean_intensity_g_per_kwh=emissions / energy_priced if energy_priced else None,
                      would_have_saved_g=saved, would_have_saved_pct=100 * saved / base if base else None,
                      unmeasured_tries=sum(t.energy_kwh is None for t in tries), trend=trend)
