"""The shadow plan's deadline: the user's hours for the DAG, else the DAG's next scheduled run after the
task started (a cron or fixed-interval schedule), else a day; never beyond the forecast's horizon."""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from carbon_aware.ledger.settings import MAX_SHADOW_HOURS

NO_SCHEDULE_HOURS = 24.0


def next_scheduled_run(dag: Any, after: datetime) -> datetime | None:
    """The first run the DAG's timetable schedules after ``after``: its cron expression's next time, or
    ``after`` plus its fixed interval; None for a DAG without either (manual, asset-triggered)."""
    timetable = getattr(dag, "timetable", None)
    expression = getattr(timetable, "expression", None) or getattr(timetable, "_expression", None)
    if isinstance(expression, str) and expression.strip():
        from croniter import croniter

        zone = getattr(timetable, "timezone", None) or getattr(timetable, "_timezone", None)
        local = after.astimezone(zone) if zone is not None and hasattr(zone, "utcoffset") else after
        return croniter(expression, local).get_next(datetime).astimezone(after.tzinfo)
    for name in ("delta", "_delta", "interval"):
        delta = getattr(timetable, name, None)
        if isinstance(delta, timedelta) and delta > timedelta(0):
            return after + delta
    return None


def shadow_deadline(dag: Any, started: datetime, hours: float | None = None) -> datetime:
    horizon = started + timedelta(hours=MAX_SHADOW_HOURS)
    if hours is not None:
        return min(started + timedelta(hours=hours), horizon)
    try:
        scheduled = next_scheduled_run(dag, started)
    except Exception:  # an unusual timetable: the default below
        scheduled = None
    if scheduled is None or scheduled <= started:
        return started + timedelta(hours=NO_SCHEDULE_HOURS)
    return min(scheduled, horizon)
