"""The shadow plan of a whole DAG run, for the DAGs whose run is the unit (``ledger_run_units``): every
try of the run moved together, by one shift, to the window of the run's length with the lowest mean
forecast intensity before its first try's deadline, on the forecast kept when the run began; priced on
actuals where they are known. Like every shadow plan: what it would have emitted, never a saving."""
from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta

from carbon_aware.accounting.report import price_run, shifted
from carbon_aware.ledger.models import LedgerTask, RunLedger, Shadow
from carbon_aware.ledger.meter import utc

RUNNING = ("running", "ended unreported")


def try_timeline(task: LedgerTask) -> list[tuple[datetime, float]]:
    """A priced try's (time, cumulative kWh), rebuilt from its contiguous intervals."""
    timeline, total = [(task.intervals[0].start, 0.0)], 0.0
    for interval in task.intervals:
        total += interval.kwh
        timeline.append((interval.end, total))
    return timeline


def run_ledgers(entries: list[LedgerTask], url: str | None, now: datetime) -> list[RunLedger]:
    from carbon_aware.ledger.settings import settings

    units = settings().run_units
    by_run: dict[tuple[str, str], list[LedgerTask]] = defaultdict(list)
    for task in entries:
        if task.dag_id in units:
            by_run[(task.dag_id, task.run_id)].append(task)
    runs = [run_ledger(dag_id, run_id, tries, url, now) for (dag_id, run_id), tries in by_run.items()
            if all(t.state not in RUNNING for t in tries)]
    return sorted(runs, key=lambda r: r.started_at, reverse=True)


def run_ledger(dag_id: str, run_id: str, tries: list[LedgerTask], url: str | None,
               now: datetime) -> RunLedger:
    priced = [t for t in tries if t.emissions_g is not None and t.intervals]
    timelines = [try_timeline(t) for t in priced]
    began = min(t.started_at for t in tries)
    run = RunLedger(dag_id=dag_id, run_id=run_id, tries=len(tries),
                    started_at=min((tl[0][0] for tl in timelines), default=began),
                    ended_at=max((tl[-1][0] for tl in timelines), default=began),
                    energy_kwh=sum(t.energy_kwh for t in priced),
                    emissions_g=sum(t.emissions_g for t in priced))
    if len(priced) < len(tries):
        run.shadow_note = "a try of the run has no priced energy: the run as a whole is not planned"
        return run
    run.shadow, run.shadow_note = _run_shadow(run, priced[0], timelines, url, now)
    return run


def _run_shadow(run: RunLedger, first: LedgerTask, timelines, url, now) -> tuple[Shadow | None, str | None]:
    from carbon_aware.grid.forecast import points_to_arrays
    from carbon_aware.ledger.actuals import actual_points
    from carbon_aware.ledger.forecasts import forecast_at
    from carbon_aware.planning.planner import Curve, PlanningError, best_start

    forecast = forecast_at(url, first.region, run.started_at)
    if forecast is None or forecast.mock:
        return None, "no forecast but the mock curve was kept when the run began"
    seconds = (run.ended_at - run.started_at).total_seconds()
    deadline = min(first.deadline or run.ended_at, forecast.points[-1].end)
    if run.started_at + timedelta(seconds=seconds) > deadline:
        return None, "no window of the run's length fits between its start and the deadline"
    try:
        best, _mean = best_start(Curve(*points_to_arrays(forecast.points)), seconds,
                                 run.started_at.timestamp(), deadline.timestamp() - seconds)
    except PlanningError as error:
        return None, str(error)
    shift = utc(best) - run.started_at
    actual, _source = actual_points(url, first.region, forecast.anchor, run.started_at - timedelta(hours=1),
                                    min(now, deadline + timedelta(hours=1)))
    moved = [price_run(shifted(tl, tl[0][0] + shift), actual, forecast.points) for tl in timelines]
    if any(m is None or "error" in m for m in moved):
        return None, "its window could not be priced"
    grams = sum(m["emissions_g"] for m in moved)
    sources = sorted({s for m in moved for s in m["intensity_source"].split("+")})
    saved = run.emissions_g - grams
    return Shadow(deadline=deadline, start=utc(best), end=utc(best + seconds),
                  forecast_source=forecast.source, forecast_issued=forecast.hour, emissions_g=grams,
                  priced_on="+".join(sources), saved_g=saved,
                  saved_pct=100 * saved / run.emissions_g if run.emissions_g else None), None
