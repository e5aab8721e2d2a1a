"""The schema of what the Carbon page reads from a run's comparison_report.json, with limits.

A report is untrusted input (whoever can trigger a run influences it), so the page reads a report only
through ``read_report``: at most MAX_REPORT_BYTES of strict JSON (no NaN), validated against ``Report``
(pydantic, strict: no coercion). Only the validated fields come back; anything else in the file stays in
the file. A report that fails raises ``UnreadableReport``, whose reason names the field path and the
problem but never the file's content.

The run page shows each block of RUN_BLOCKS (web.py) whole, so a block's other keys must be "shown
values" too: a number, text, yes/no, null, a list of those, or (one level down) a table of those; a list
called ``intervals`` there is only counted.
"""
from __future__ import annotations

import json
import math
import os
import stat
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, ValidationError,
                      model_validator)
from pydantic_core import PydanticCustomError

MAX_REPORT_BYTES = 8 * 1024 * 1024
MAX_TEXT = 2000  # characters of one shown text
MAX_ID = 250  # characters of an id, a region or a provider
MAX_ISO = 64  # characters of an ISO date-time
MAX_ITEMS = 1000  # segments, re-plans, fallback reasons, items of any shown list
MAX_INTERVALS = 100_000  # priced intervals of one run (one per energy reading and slot): only counted
MAX_KEYS = 200  # keys of one block or table
MAX_NUMBER = 1e15  # in absolute value: sums over many runs stay finite
AIRFLOW_ID = r"^[\w.-]+$"  # Airflow's own rule for dag and task ids


class UnreadableReport(Exception):
    """``reason``: what is wrong, without the file's content; ``run_id``: the report's dag_run_id when
    that much is a valid id, else None."""

    def __init__(self, reason: str, run_id: str | None = None):
        super().__init__(reason)
        self.reason, self.run_id = reason, run_id


def _iso(value: str) -> str:
    """Parsed as the page parses it (datetime.fromisoformat), so the page can show it."""
    try:
        datetime.fromisoformat(value)
    except ValueError:
        raise PydanticCustomError("iso_datetime", "not an ISO date-time") from None
    return value


def _fail(kind: str) -> PydanticCustomError:
    return PydanticCustomError("shown_value", kind)


def _scalar(value: Any) -> bool:
    """Checked when it is a number or text; False when it is neither a scalar nor null."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value) or abs(value) > MAX_NUMBER:
            raise _fail("number out of range")
    elif isinstance(value, str):
        if len(value) > MAX_TEXT:
            raise _fail("text too long")
    elif value is not None and not isinstance(value, bool):
        return False
    return True


def _shown_list(items: list[Any]) -> None:
    if len(items) > MAX_ITEMS:
        raise _fail("too many items")
    if not all(_scalar(item) for item in items):
        raise _fail("a list of other than numbers and text")


def _table(table: dict[str, Any]) -> None:
    """One level down in a block: scalars, lists of them, and counted intervals."""
    if len(table) > MAX_KEYS or any(len(key) > MAX_ID for key in table):
        raise _fail("too many or too long keys")
    for key, value in table.items():
        if key == "intervals":
            if not isinstance(value, list):
                raise _fail("intervals not a list")
            if len(value) > MAX_INTERVALS:
                raise _fail("too many intervals")
        elif isinstance(value, list):
            _shown_list(value)
        elif isinstance(value, dict):
            raise _fail("too deeply nested")
        elif not _scalar(value):
            raise _fail("not a number, text or list")


def _shown(value: Any) -> Any:
    """A value of a block as the run page shows it (web._block_fields)."""
    if isinstance(value, list):
        _shown_list(value)
    elif isinstance(value, dict):
        _table(value)
    elif not _scalar(value):
        raise _fail("not a number, text or list")
    return value


Text = Annotated[str, StringConstraints(max_length=MAX_TEXT)]
Id = Annotated[str, StringConstraints(max_length=MAX_ID)]
AirflowId = Annotated[str, StringConstraints(max_length=MAX_ID, pattern=AIRFLOW_ID)]
IsoTime = Annotated[str, StringConstraints(max_length=MAX_ISO), AfterValidator(_iso)]
Number = Annotated[float, Field(allow_inf_nan=False, ge=-MAX_NUMBER, le=MAX_NUMBER)]
Count = Annotated[int, Field(ge=0, le=MAX_INTERVALS)]
Shown = Annotated[Any, AfterValidator(_shown)]


def _items(kind: Any, limit: int = MAX_ITEMS) -> Any:
    return Annotated[list[kind], Field(max_length=limit)]


class _Fields(BaseModel):
    """Only the fields named here are kept; others are ignored (and not shown)."""

    model_config = ConfigDict(strict=True, extra="ignore")


class _Block(BaseModel):
    """A block the run page shows whole: its other keys are kept, each a shown value."""

    model_config = ConfigDict(strict=True, extra="allow")
    __pydantic_extra__: dict[str, Shown]

    @model_validator(mode="before")
    @classmethod
    def _few_short_keys(cls, data: Any) -> Any:
        if isinstance(data, dict) and (len(data) > MAX_KEYS or any(len(key) > MAX_ID for key in data)):
            raise _fail("too many or too long keys")
        return data


class Segment(_Fields):
    index: Count | None = None
    planned_start: IsoTime | None = None
    start: IsoTime | None = None
    end: IsoTime | None = None
    energy_kwh: Number | None = None
    emissions_g: Number | None = None
    mean_intensity_g_per_kwh: Number | None = None
    attempts: _items(Count) | None = None
    stopped: _items(Text | None) | None = None


class Job(_Fields):
    status: Id | None = None
    attempts: Shown = None
    interruptible: Shown = None
    worker_region: Shown = None
    segments: _items(Segment) | None = None


class Tasks(_Fields):
    wait: AirflowId | None = None
    report: AirflowId | None = None


class Sources(_Block):
    forecast: Text | None = None
    region: Id | None = None
    fallback_reasons: _items(Text) | None = None


class Schedule(_Block):
    run_now_start: IsoTime | None = None
    planned_start: IsoTime | None = None
    actual_start: IsoTime | None = None
    wait_seconds: Number | None = None
    time_compression: Number | None = None


class Replay(_Block):
    """A replayed trace: the schedule's times in the trace's own time."""

    trace: Id | None = None
    run_now_start: IsoTime | None = None
    planned_start: IsoTime | None = None
    actual_start: IsoTime | None = None


class Timing(_Block):
    saving_kg: Number | None = None
    run_now_intensity_g_per_kwh: Number | None = None
    chosen_window_intensity_g_per_kwh: Number | None = None


class Efficiency(_Block):
    saving_kg: Number | None = None
    baseline_energy_kwh: Number | None = None
    optimized_energy_kwh: Number | None = None


class CarbonSavings(_Block):
    baseline_emissions_kg: Number | None = None
    optimized_emissions_kg: Number | None = None
    reduction_kg: Number | None = None
    reduction_percentage: Number | None = None


class Place(_Block):
    saving_kg: Number | None = None
    home_region: Id | None = None
    chosen_region: Id | None = None


class AccuracyImpact(_Block):
    baseline_accuracy: Number | None = None
    optimized_accuracy: Number | None = None


class Baseline(_Block):
    source_run: Id | None = None
    measurement_cost_kg: Number | None = None


class Report(_Fields):
    """What the page reads: the rows (runs_view.ROW_FIELDS) and the run page's blocks (web.RUN_BLOCKS)."""

    dag_run_id: Id
    dag_id: AirflowId | None = None
    generated_at: IsoTime | None = None
    baseline_kind: Text | None = None
    no_real_signal: Text | None = None  # the plan used the mock curve: no saving counted
    tasks: Tasks | None = None
    replans: _items(Any) | None = None  # only counted
    baseline: Baseline | None = None
    carbon_savings: CarbonSavings | None = None
    place: Place | None = None
    timing: Timing | None = None
    efficiency: Efficiency | None = None
    intensities: _Block | None = None
    job: Job | None = None
    route: _Block | None = None
    stop: _Block | None = None
    accuracy_impact: AccuracyImpact | None = None
    memory_savings: _Block | None = None
    schedule: Schedule | None = None
    replay: Replay | None = None
    sources: Sources | None = None
    codecarbon_static: _Block | None = None


# --- reading ---------------------------------------------------------------------------------------
PROBLEMS = {"float_type": "not a number", "int_type": "not a whole number", "finite_number": "not a number",
            "greater_than_equal": "out of range", "less_than_equal": "out of range",
            "string_type": "not a string", "string_too_long": "too long", "too_long": "too many items",
            "string_pattern_mismatch": "not an Airflow id", "list_type": "not a list",
            "model_type": "not an object", "dict_type": "not an object", "missing": "missing"}
MODELS = (Report, Tasks, Job, Segment, Sources, Schedule, Replay, Timing, Efficiency, CarbonSavings,
          Place, AccuracyImpact, Baseline)
KNOWN_KEYS = frozenset(name for model in MODELS for name in model.model_fields)


def _path(loc: tuple[int | str, ...]) -> str:
    """The field path; a key the schema does not know came from the file, so it shows as '?'."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += ("." if path else "") + (part if part in KNOWN_KEYS else "?")
    return path or "report"


def describe(error: ValidationError) -> str:
    """'schema: <path>: <problem>' for the first problem, from its location and kind only: the error's
    input (the file's content) is never part of it."""
    first = error.errors(include_url=False, include_context=False, include_input=False)[0]
    custom = first["type"] in ("iso_datetime", "shown_value")  # messages written here, without input
    problem = first["msg"] if custom else PROBLEMS.get(first["type"], "invalid")
    return f"schema: {_path(first['loc'])}: {problem}"


def _read(path: Path) -> bytes:
    """At most MAX_REPORT_BYTES from a regular file; never blocks on a pipe or reads a device whole."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except (OSError, ValueError):
        raise UnreadableReport("unreadable file") from None
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnreadableReport("not a regular file")
        if info.st_size > MAX_REPORT_BYTES:
            raise UnreadableReport(f"too big (over {MAX_REPORT_BYTES // 2**20} MiB)")
        try:
            data = file.read(MAX_REPORT_BYTES + 1)
        except OSError:
            raise UnreadableReport("unreadable file") from None
    if len(data) > MAX_REPORT_BYTES:  # it grew since fstat
        raise UnreadableReport(f"too big (over {MAX_REPORT_BYTES // 2**20} MiB)")
    return data


def _no_constant(name: str) -> Any:
    raise ValueError("NaN and Infinity are not JSON")


def _parse(data: bytes) -> Any:
    try:
        return json.loads(data.decode("utf-8"), parse_constant=_no_constant)
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise UnreadableReport("not JSON") from None


def _run_id(raw: Any) -> str | None:
    """The report's own dag_run_id, where it is at least a valid id."""
    run_id = raw.get("dag_run_id") if isinstance(raw, dict) else None
    return run_id if isinstance(run_id, str) and 0 < len(run_id) <= MAX_ID else None


def _in_file_order(raw: Any, checked: Any) -> Any:
    """``checked`` with its tables' keys in the file's order (the run page lists them so); only
    validated tables are walked, never lists, so the depth is the schema's."""
    if isinstance(raw, dict) and isinstance(checked, dict):
        return {key: _in_file_order(raw[key], checked[key]) for key in raw if key in checked}
    return checked


def read_report(path: Path) -> dict[str, Any]:
    """The validated fields of the report at ``path``, as plain data (fields it lacks stay absent, so
    a report without a ``baseline`` block is still told apart); raises UnreadableReport."""
    return check_report(_read(path))


def check_report(data: bytes) -> dict[str, Any]:
    """:func:`read_report` of a report's bytes (as stored in the records database)."""
    if len(data) > MAX_REPORT_BYTES:
        raise UnreadableReport(f"too big (over {MAX_REPORT_BYTES // 2**20} MiB)")
    raw = _parse(data)
    try:
        checked = Report.model_validate(raw).model_dump(exclude_unset=True)
    except ValidationError as error:
        raise UnreadableReport(describe(error), _run_id(raw)) from None
    return _in_file_order(raw, checked)
