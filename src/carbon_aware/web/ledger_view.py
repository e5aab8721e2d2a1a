"""The Carbon page's Ledger view: every measured task try of the DAGs the user may read, by DAG and task
with a daily trend, the DAG runs measured as one unit, then the latest tries with their shadow plans
("would have", never a saving achieved).

The ledger comes from :func:`carbon_aware.ledger.book.ledger`, asked for the readable DAGs only; the view
drops any DAG ``may_read`` refuses once more before it shows or serves anything. This module turns the
ledger's figures into text with units; the HTML is templates/ledger.html's (autoescaped)."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Callable
from urllib.parse import quote

from carbon_aware.ledger.models import Ledger, LedgerDay, LedgerTask, RunLedger, Shadow, TaskLedger
from carbon_aware.web.formats import duration, energy, intensity, mass, moment, percent, shown

LATEST_TRIES = 200  # tries listed on the page, newest first (the JSON has all the ledger holds)
MAX_DAG_ID = 250  # Airflow's own limit on an id


def read(may_read: Callable[[str], bool], dag_id: str | None = None) -> Ledger:
    """The ledger of the DAGs ``may_read`` allows (of ``dag_id`` alone when given; any other id: empty)."""
    from carbon_aware.ledger import book  # late: tests stand in for it

    def wanted(dag: str) -> bool:
        return (dag_id is None or dag == dag_id) and bool(may_read(dag))

    return visible(book.ledger(wanted), wanted)


def visible(ledger: Ledger, may_read: Callable[[str], bool]) -> Ledger:
    """The ledger without any task total, run or try of a DAG ``may_read`` refuses. A book that left one
    in did not ask ``may_read``, so its count of tries is not trusted either: only the tries kept count."""
    tasks = [task for task in ledger.tasks if may_read(task.dag_id)]
    entries = [e for e in ledger.entries if may_read(e.dag_id)]
    runs = [run for run in ledger.runs if may_read(run.dag_id)]
    leaked = (len(tasks), len(entries), len(runs)) != (len(ledger.tasks), len(ledger.entries),
                                                        len(ledger.runs))
    return ledger.model_copy(update={"tasks": tasks, "entries": entries, "runs": runs,
                                     "tries_total": len(entries) if leaked else ledger.tries_total})


# --- one value: its text with its unit (see formats.shown) and its raw value for data-value --------------
def grams(g: float | None) -> str:
    """The ledger keeps grams; formats.mass picks kg, g or mg."""
    return mass(None if g is None else g / 1000.0)


def utc(at: datetime) -> datetime:
    return at.replace(tzinfo=timezone.utc) if at.tzinfo is None else at.astimezone(timezone.utc)


def raw(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return utc(value).isoformat()
    if isinstance(value, list):
        return "; ".join(str(item) for item in value)
    return str(value)


def saving_class(g: float | None) -> str:
    return "" if not g else "good" if g > 0 else "bad"


def cell(css: str, value: Any, text: dict[str, Any], numeric: bool = False,
         link: str | None = None) -> dict[str, Any]:
    """One table cell: ``css`` names it for a reader (``energy-kwh``), ``value`` goes to data-value."""
    return {"css": css, "raw": raw(value), "shown": text, "numeric": numeric, "link": link}


def at(value: datetime | None, empty: str = "n/a") -> dict[str, Any]:
    return moment(utc(value).isoformat()) if value else shown(empty)


def count(value: int) -> dict[str, Any]:
    return shown(str(value))


# --- the table by DAG and task, with a trend per task -------------------------------------------------
def sparkline(days: list[LedgerDay], width: int = 120, height: int = 30) -> dict[str, Any] | None:
    """Screen coordinates of a task's daily emissions and would-have-saved grams, on one scale with 0."""
    if not days:
        return None
    values = [0.0, *(d.emissions_g for d in days), *(d.would_have_saved_g for d in days)]
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    step = (width - 6) / max(len(days) - 1, 1)

    def y(v: float) -> float:
        return round(height - 3 - (v - low) / span * (height - 6), 1)

    xs = [round(3 + i * step, 1) for i in range(len(days))]
    return {"width": width, "height": height, "zero": y(0.0),
            "emitted": " ".join(f"{x},{y(d.emissions_g)}" for x, d in zip(xs, days)),
            "saved": " ".join(f"{x},{y(d.would_have_saved_g)}" for x, d in zip(xs, days)),
            "dots": [{"x": x, "y": y(d.emissions_g),
                      "title": f"{d.day.isoformat()}: {grams(d.emissions_g)} emitted, would have saved "
                               f"{grams(d.would_have_saved_g)}"} for x, d in zip(xs, days)]}


def day_row(day: LedgerDay) -> dict[str, Any]:
    return {"day": day.day.isoformat(),
            "cells": [cell("day", day.day.isoformat(), shown(day.day.isoformat())),
                      cell("tries", day.tries, count(day.tries), True),
                      cell("energy-kwh", day.energy_kwh, shown(energy(day.energy_kwh)), True),
                      cell("emissions-g", day.emissions_g, shown(grams(day.emissions_g)), True),
                      cell("would-have-saved-g", day.would_have_saved_g,
                           shown(grams(day.would_have_saved_g), css=saving_class(day.would_have_saved_g)),
                           True)]}


TASK_HEADERS = ("DAG", "task", "runs", "tries", "energy", "emissions", "mean intensity",
                "would have saved", "would have saved (%)", "unmeasured tries")
DAY_HEADERS = ("day (UTC)", "tries", "energy", "emissions", "would have saved")


def task_row(task: TaskLedger, here: str) -> dict[str, Any]:
    days = sorted(task.trend, key=lambda d: d.day)
    return {"dag_id": task.dag_id, "task_id": task.task_id,
            "cells": [
                cell("dag-id", task.dag_id, shown(task.dag_id),
                     link=f"{here}/ledger?dag_id={quote(task.dag_id, safe='')}"),
                cell("task-id", task.task_id, shown(task.task_id)),
                cell("runs", task.runs, count(task.runs), True),
                cell("tries", task.tries, count(task.tries), True),
                cell("energy-kwh", task.energy_kwh, shown(energy(task.energy_kwh)), True),
                cell("emissions-g", task.emissions_g, shown(grams(task.emissions_g)), True),
                cell("mean-intensity", task.mean_intensity_g_per_kwh,
                     shown(intensity(task.mean_intensity_g_per_kwh)), True),
                cell("would-have-saved-g", task.would_have_saved_g,
                     shown(grams(task.would_have_saved_g), css=saving_class(task.would_have_saved_g)), True),
                cell("would-have-saved-pct", task.would_have_saved_pct,
                     shown(percent(task.would_have_saved_pct)), True),
                cell("unmeasured-tries", task.unmeasured_tries, count(task.unmeasured_tries), True)],
            "spark": sparkline(days), "days": [day_row(day) for day in days]}


# --- the latest tries -------------------------------------------------------------------------------------
TRY_HEADERS = ("DAG", "run", "task", "try", "worker", "region", "start", "end", "state", "energy",
               "emissions", "mean intensity", "intensity sources", "shadow window (would have run)",
               "would have saved (shadow plan)")
UNHAPPY = {"failed", "killed", "ended unreported", "up_for_retry"}


def _energy(entry: LedgerTask) -> dict[str, Any]:
    notes = [entry.energy_note] if entry.energy_note else []
    if entry.energy_kwh is None:
        return shown("unknown", css="bad", sub="; ".join(notes) or "not measured")
    if entry.measured_seconds is not None:
        notes.append(f"measured over {duration(entry.measured_seconds)}")
    return shown(energy(entry.energy_kwh), sub="; ".join(notes))


def _emissions(entry: LedgerTask) -> dict[str, Any]:
    if entry.emissions_g is not None:
        return shown(grams(entry.emissions_g))
    return shown("unknown" if entry.energy_kwh is None else "not priced")


def _window(plan: Shadow | None, note: str | None) -> dict[str, Any]:
    """The shadow plan's window (the try's, or a whole run's), or why there is none."""
    if plan is None:
        return shown(note or "no shadow plan")
    start, end = utc(plan.start), utc(plan.end)
    ends = f"{end:%H:%M}" if end.date() == start.date() else f"{end:%Y-%m-%d %H:%M}"
    issued, deadline = utc(plan.forecast_issued), utc(plan.deadline)
    return shown(f"{start:%Y-%m-%d %H:%M} – {ends} UTC",
                 sub=f"forecast {plan.forecast_source} issued {issued:%Y-%m-%d %H:%M} UTC; "
                     f"deadline {deadline:%Y-%m-%d %H:%M} UTC")


def _would_have_saved(plan: Shadow | None) -> dict[str, Any]:
    if plan is None:
        return shown("n/a")
    return shown(grams(plan.saved_g), css=saving_class(plan.saved_g),
                 sub=f"{percent(plan.saved_pct)} · would have emitted {grams(plan.emissions_g)} · "
                     f"priced on {plan.priced_on}")


def _shadow_cells(plan: Shadow | None, note: str | None) -> list[dict[str, Any]]:
    return [cell("shadow-window", f"{raw(plan.start)}/{raw(plan.end)}" if plan else "", _window(plan, note)),
            cell("would-have-saved-g", plan.saved_g if plan else None, _would_have_saved(plan), True)]


def try_row(entry: LedgerTask, here: str, run_link: Callable[[str, str], str]) -> dict[str, Any]:
    run = run_link(entry.dag_id, entry.run_id)
    task_link = f"{run}/tasks/{quote(entry.task_id, safe='')}"
    if entry.map_index >= 0:
        task_link += f"/mapped/{entry.map_index}"
    plan = entry.shadow
    ended = "still running" if entry.state == "running" else "not reported"
    return {"dag_id": entry.dag_id, "run_id": entry.run_id, "task_id": entry.task_id,
            "map_index": entry.map_index, "try_number": entry.try_number,
            "cells": [
                cell("dag-id", entry.dag_id, shown(entry.dag_id),
                     link=f"{here}/ledger?dag_id={quote(entry.dag_id, safe='')}"),
                cell("run-id", entry.run_id, shown(entry.run_id), link=run),
                cell("task-id", entry.task_id,
                     shown(entry.task_id,
                           sub=f"map index {entry.map_index}" if entry.map_index >= 0 else ""),
                     link=task_link),
                cell("try-number", entry.try_number, count(entry.try_number), True),
                cell("worker", entry.worker, shown(entry.worker)),
                cell("region", entry.region, shown(entry.region)),
                cell("started-at", entry.started_at, at(entry.started_at)),
                cell("ended-at", entry.ended_at, at(entry.ended_at, empty=ended)),
                cell("state", entry.state, shown(entry.state, css="bad" if entry.state in UNHAPPY else "")),
                cell("energy-kwh", entry.energy_kwh, _energy(entry), True),
                cell("emissions-g", entry.emissions_g, _emissions(entry), True),
                cell("mean-intensity", entry.mean_intensity_g_per_kwh,
                     shown(intensity(entry.mean_intensity_g_per_kwh)), True),
                cell("intensity-sources", entry.intensity_sources,
                     shown("; ".join(entry.intensity_sources) or "none")),
                *_shadow_cells(plan, entry.shadow_note)]}


# --- the DAG runs measured as one unit (ledger_run_units) ------------------------------------------------
RUN_HEADERS = ("DAG", "run", "start", "end", "tries", "energy", "emissions",
               "shadow window (would have run)", "would have saved (shadow plan)", "would have saved (%)")


def run_row(run: RunLedger, here: str, run_link: Callable[[str, str], str]) -> dict[str, Any]:
    plan = run.shadow
    return {"dag_id": run.dag_id, "run_id": run.run_id,
            "cells": [
                cell("dag-id", run.dag_id, shown(run.dag_id),
                     link=f"{here}/ledger?dag_id={quote(run.dag_id, safe='')}"),
                cell("run-id", run.run_id, shown(run.run_id), link=run_link(run.dag_id, run.run_id)),
                cell("started-at", run.started_at, at(run.started_at)),
                cell("ended-at", run.ended_at, at(run.ended_at)),
                cell("tries", run.tries, count(run.tries), True),
                cell("energy-kwh", run.energy_kwh, shown(energy(run.energy_kwh)), True),
                cell("emissions-g", run.emissions_g, shown(grams(run.emissions_g)), True),
                *_shadow_cells(plan, run.shadow_note),
                cell("would-have-saved-pct", plan.saved_pct if plan else None,
                     shown(percent(plan.saved_pct) if plan else "n/a"), True)]}


def page(ledger: Ledger, here: str, run_link: Callable[[str, str], str]) -> dict[str, Any]:
    """The template's context for a ledger already filtered by :func:`visible`."""
    entries = sorted(ledger.entries, key=lambda e: utc(e.started_at), reverse=True)
    tasks = sorted(ledger.tasks, key=lambda t: (t.dag_id, t.task_id))
    runs = sorted(ledger.runs, key=lambda r: utc(r.started_at), reverse=True)
    return {"note": ledger.note, "tasks": [task_row(task, here) for task in tasks],
            "runs": [run_row(run, here, run_link) for run in runs],
            "tries": [try_row(entry, here, run_link) for entry in entries[:LATEST_TRIES]],
            "all_tries": len(entries), "tries_total": max(ledger.tries_total, len(entries)),
            "task_headers": TASK_HEADERS, "day_headers": DAY_HEADERS, "run_headers": RUN_HEADERS,
            "try_headers": TRY_HEADERS}
