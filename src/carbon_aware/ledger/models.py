"""What the ledger holds and shows: each measured task try, priced at its own time, with what the
planner would have done ("shadow"), and the totals by DAG and task. Read by the Carbon page's Ledger view
and served as JSON at /carbon/api/ledger."""
from __future__ import annotations

from datetime import date, datetime

from pydantic import BaseModel, Field

SHARED_MACHINE_NOTE = (
    "CodeCarbon reads the whole machine (CPU package, RAM, every GPU), not one process: tasks that run "
    "at the same time on one worker are each charged the machine's energy while they overlap, so their "
    "sum counts that energy more than once. Run one task per worker slot (or per GPU) for per-task "
    "figures.")


class PricedInterval(BaseModel):
    """A piece of a task's energy, at the grid intensity of its time. ``source`` names where the intensity
    came from: ``actual:<source>``, ``forecast:<source>`` or ``nearest`` (the closest known slot)."""

    start: datetime
    end: datetime
    kwh: float
    g_per_kwh: float
    source: str


class Shadow(BaseModel):
    """What the planner would have chosen for this task with the forecast it had when the task started,
    and what the same energy profile would have emitted there. Never part of a measured saving."""

    deadline: datetime  # latest end the shadow plan allowed
    start: datetime
    end: datetime
    forecast_source: str
    forecast_issued: datetime
    emissions_g: float  # the same energy profile, priced at the shadow window's intensity
    priced_on: str  # "actual", "forecast" or "actual+forecast" (actuals once they are known)
    saved_g: float  # emissions_g of the task as run minus the shadow's (negative: it would have lost)
    saved_pct: float | None


class LedgerTask(BaseModel):
    """One try of one task instance, as measured on its worker."""

    dag_id: str
    run_id: str
    task_id: str
    map_index: int = -1
    try_number: int
    worker: str
    region: str
    started_at: datetime
    ended_at: datetime | None  # None: still running, or killed before it could say (see ``state``)
    deadline: datetime | None = None  # the shadow plan's latest end
    state: str  # running | success | failed | up_for_retry | skipped | ended unreported
    energy_kwh: float | None  # None: not measured (``energy_note`` says why)
    energy_note: str | None = None
    cpu_kwh: float | None = None
    gpu_kwh: float | None = None
    ram_kwh: float | None = None
    measured_seconds: float | None = None
    emissions_g: float | None = None
    mean_intensity_g_per_kwh: float | None = None
    intensity_sources: list[str] = Field(default_factory=list)
    intervals: list[PricedInterval] = Field(default_factory=list)
    shadow: Shadow | None = None
    shadow_note: str | None = None  # why there is no shadow plan


class LedgerDay(BaseModel):
    """One day of a task's trend (UTC)."""

    day: date
    tries: int
    energy_kwh: float
    emissions_g: float
    would_have_saved_g: float


class TaskLedger(BaseModel):
    """A task of a DAG over every measured try."""

    dag_id: str
    task_id: str
    runs: int  # DAG runs it ran in
    tries: int
    energy_kwh: float  # measured tries only
    emissions_g: float  # priced tries only
    mean_intensity_g_per_kwh: float | None
    would_have_saved_g: float  # tries with a shadow plan only
    would_have_saved_pct: float | None  # of the emissions of those same tries
    unmeasured_tries: int
    trend: list[LedgerDay]


class RunLedger(BaseModel):
    """A DAG run as one unit (the DAGs named in ``ledger_run_units``): every try of it together, and the
    window the planner would have moved the whole run to, its energy profile kept as measured."""

    dag_id: str
    run_id: str
    started_at: datetime  # its first measured try's meter start
    ended_at: datetime  # its last try's last reading
    tries: int
    energy_kwh: float
    emissions_g: float
    shadow: Shadow | None = None
    shadow_note: str | None = None


class Ledger(BaseModel):
    tasks: list[TaskLedger]
    entries: list[LedgerTask]  # newest first
    runs: list[RunLedger] = Field(default_factory=list)  # DAGs whose run is the unit, newest first
    tries_total: int = 0  # tries of the readable DAGs in the records (entries holds the newest ones)
    note: str = SHARED_MACHINE_NOTE
