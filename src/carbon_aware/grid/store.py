"""What the grid did: every actual, and every forecast with the time it was issued, that a real provider
returned, kept in the records database (:mod:`carbon_aware.records`, table ``carbon_grid_points``) that
every worker of a deployment reaches: a SQLite file on one machine, PostgreSQL across machines.

One row per slot: region, kind (actual | forecast), source, issue time (0 for an actual), start, length
and value. A write is an upsert on that slot: a slot already held with the same value is left alone, a
revised value replaces the old one, and the write returns how many rows were new or changed. The unique
slot key, not a lock of ours, keeps concurrent writers from losing or doubling rows.

Reads are bounded by time and served by the (region, kind, start) and (region, kind, issued) indexes:
a write and a read of the last weeks cost the same whether the store is a week or years old
(``python -m carbon_aware.grid.store_bench`` measures it).

Only real signals are kept. The mock curve and a replayed trace (another year's values stamped with
today's times) are never written: their provider says so (``Provider.real_signal``), and so do their
source names (``mock``, ``replay:<file>``) to a caller that hands the store only a name. A stored row
keeps the name of the source that measured or forecast it.
"""
from __future__ import annotations

import functools
import logging
import math
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np
from sqlalchemy import Engine, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from carbon_aware.grid.forecast import IntensityPoint
from carbon_aware.records.tables import grid_points

if TYPE_CHECKING:
    from carbon_aware.grid.clients.base import Provider

log = logging.getLogger(__name__)

ACTUAL, FORECAST = "actual", "forecast"
SLOT_KEY = ("region", "kind", "source", "issued", "start", "seconds")
# A read of [since, until) looks this far before ``since`` for slots that start earlier and reach into
# the window: the bound keeps the read on the index. No source serves slots longer than an hour or two.
MAX_SLOT_S = 24 * 3600
_COLUMNS = (grid_points.c.kind, grid_points.c.region, grid_points.c.source, grid_points.c.issued,
            grid_points.c.start, grid_points.c.seconds, grid_points.c.value)


class StoreError(OSError):
    """The records database could not be reached, read or written. An OSError, like the unreadable file
    it replaces: every caller already treats that as "no store" and plans on."""


def real_source(source: str) -> bool:
    """Whether a source name is the grid's own signal: not the mock curve, not a replayed trace."""
    return source != "mock" and not source.startswith(("mock:", "replay:"))


def _epoch(moment: datetime | float | int) -> int:
    return int(moment.timestamp()) if isinstance(moment, datetime) else int(moment)


def _reason(error: Exception) -> str:
    """The one-line reason (a locked file, a refused connection, a missing driver), without the
    statement or URL that SQLAlchemy's own text may carry."""
    if isinstance(error, SQLAlchemyError):
        text = str(getattr(error, "orig", None) or type(error).__name__)
    else:
        text = f"{type(error).__name__}: {error}"
    lines = text.strip().splitlines()
    return (lines[0] if lines else type(error).__name__)[:200]


class GridStore:
    """The grid store in the records database at ``url`` (default: ``records.records_url()``), or on
    ``engine``. The database is reached, and migrated, on first use, not when the store is made: a
    chain that never needs it never fails on it."""

    def __init__(self, url: str | None = None, engine: Engine | None = None):
        self._url, self._engine = url, engine

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            from carbon_aware.records import engine_for

            try:
                self._engine = engine_for(self._url)
            except (SQLAlchemyError, ValueError, ImportError) as error:  # down, misnamed, no driver
                raise StoreError(f"grid store {self.url}: unreachable ({_reason(error)})") from None
        return self._engine

    @property
    def url(self) -> str:
        """The database, for messages: its URL with the password hidden."""
        if self._engine is not None:
            return self._engine.url.render_as_string(hide_password=True)
        from carbon_aware.records import records_url

        try:
            return make_url(self._url or records_url()).render_as_string(hide_password=True)
        except (SQLAlchemyError, ValueError, ImportError):  # the URL itself is what is wrong
            return "(the records database)"

    # writing -----------------------------------------------------------------------------------
    def add_actuals(self, region: str, source: str, points: Iterable[IntensityPoint],
                    provider: Provider | None = None) -> int:
        """Record measured slots; returns how many rows were new or changed. Nothing is written for a
        signal that is not real (``provider.real_signal`` false, or a mock or replay source name)."""
        return self._upsert(ACTUAL, region, source, 0, points, provider)

    def add_forecast(self, region: str, source: str, issued: datetime, points: Iterable[IntensityPoint],
                     provider: Provider | None = None) -> int:
        """Record a forecast as issued at ``issued``; returns how many rows were new or changed."""
        return self._upsert(FORECAST, region, source, _epoch(issued), points, provider)

    def _upsert(self, kind: str, region: str, source: str, issued: int, points: Iterable[IntensityPoint],
                provider: Provider | None) -> int:
        if (provider is not None and not provider.real_signal) or not real_source(source):
            log.debug("grid store: %s %s from %s not kept (not a real signal)", region, kind, source)
            return 0
        rows = slot_rows(kind, region, source, issued, points)
        if not rows:
            return 0
        try:
            with self.engine.begin() as connection:  # all of one write, or none of it
                return upsert(connection, rows)
        except SQLAlchemyError as error:
            raise StoreError(f"grid store {self.url}: not written ({_reason(error)})") from None

    # reading -----------------------------------------------------------------------------------
    def records(self, kind: str | None = None, region: str | None = None, source: str | None = None,
                since: datetime | None = None, until: datetime | None = None) -> list[dict[str, Any]]:
        """The stored slots, oldest first, optionally of one kind, region and source, and only those
        that overlap [since, until). A forecast's row has its ``issued`` (epoch seconds); an actual's
        has none."""
        c = grid_points.c
        query = select(*_COLUMNS).where(*_overlapping(since, until)).order_by(c.start, c.issued)
        for column, wanted in ((c.kind, kind), (c.region, region), (c.source, source)):
            if wanted is not None:
                query = query.where(column == wanted)
        return [_record(row) for row in self._read(query)]

    def sources(self, region: str, since: datetime | None = None,
                until: datetime | None = None) -> dict[str, float]:
        """Hours of actuals per source for ``region`` (in [since, until) if given)."""
        c = grid_points.c
        query = (select(c.source, func.sum(c.seconds))
                 .where(c.region == region, c.kind == ACTUAL, *_overlapping(since, until))
                 .group_by(c.source))
        return {source: int(seconds) / 3600 for source, seconds in self._read(query)}

    def hourly_actuals(self, region: str, end: datetime, hours: int,
                       source: str | None = None) -> tuple[np.ndarray, str | None]:
        """Time-weighted hourly means of one source's actuals for the ``hours`` hours before ``end``
        (NaN where none), and that source's name. ``source`` is preferred when it has any; otherwise
        the source with the most hours in the span (sources are never mixed: their levels differ).
        Reads only that span."""
        inside = self.records(ACTUAL, region, since=end - timedelta(hours=hours), until=end)
        by_source: dict[str, list[dict[str, Any]]] = {}
        for r in inside:
            by_source.setdefault(r["source"], []).append(r)
        if not by_source:
            return np.full(hours, np.nan), None
        chosen = source if source in by_source else max(
            by_source, key=lambda s: sum(r["seconds"] for r in by_source[s]))
        points = [IntensityPoint(datetime.fromtimestamp(r["start"], tz=timezone.utc),
                                 timedelta(seconds=r["seconds"]), r["value"]) for r in by_source[chosen]]
        return hourly_means(points, end, hours), chosen

    def forecasts(self, region: str, source: str | None = None, since: datetime | None = None,
                  until: datetime | None = None) -> dict[int, list[dict[str, Any]]]:
        """Stored forecasts of ``region`` by issue time (epoch seconds, oldest first), each a list of
        slots sorted by start; only those issued in [since, until) when given."""
        c = grid_points.c
        query = select(*_COLUMNS).where(c.region == region, c.kind == FORECAST).order_by(c.issued, c.start)
        if source is not None:
            query = query.where(c.source == source)
        if since is not None:
            query = query.where(c.issued >= _epoch(since))
        if until is not None:
            query = query.where(c.issued < _epoch(until))
        issued: dict[int, list[dict[str, Any]]] = {}
        for row in self._read(query):
            issued.setdefault(int(row[3]), []).append(_record(row))
        return issued

    def summary(self) -> list[tuple[str, str, str, float, int, int]]:
        """(region, source, kind, hours, first start, last start) for every region, source and kind."""
        c = grid_points.c
        query = (select(c.region, c.source, c.kind, func.sum(c.seconds), func.min(c.start),
                        func.max(c.start))
                 .group_by(c.region, c.source, c.kind).order_by(c.region, c.source, c.kind))
        return [(region, source, kind, int(seconds) / 3600, int(first), int(last))
                for region, source, kind, seconds, first, last in self._read(query)]

    def _read(self, query) -> list:
        try:
            with self.engine.connect() as connection:
                return list(connection.execute(query))
        except SQLAlchemyError as error:
            raise StoreError(f"grid store {self.url}: not read ({_reason(error)})") from None


def slot_rows(kind: str, region: str, source: str, issued: int,
              points: Iterable[IntensityPoint]) -> list[dict[str, Any]]:
    """One row per slot, the last value given for a slot winning (one statement may not touch a row twice),
    sorted by slot so that concurrent writers on PostgreSQL lock rows in one order and never deadlock."""
    recorded_at = time.time()
    by_slot: dict[tuple[int, int], dict[str, Any]] = {}
    for p in points:
        start, seconds = int(p.start.timestamp()), int(p.duration.total_seconds())
        by_slot[(start, seconds)] = {"region": region, "kind": kind, "source": source, "issued": issued,
                                     "start": start, "seconds": seconds, "value": round(float(p.value), 3),
                                     "recorded_at": recorded_at}
    return [by_slot[slot] for slot in sorted(by_slot)]


def upsert(connection, rows: list[dict[str, Any]]) -> int:
    """Insert ``rows``, replacing a held slot's value only where it differs; returns how many rows were
    inserted or changed (the rows the statement returns: an unchanged slot is not updated, so not
    returned). One statement, compiled once and cached; SQLAlchemy sends the rows in multi-row pages
    ("insertmanyvalues"). The same Core statement on SQLite (3.35+) and PostgreSQL."""
    return len(connection.execute(_upsert_statement(connection.dialect.name), rows).all())


@functools.cache
def _upsert_statement(dialect: str):
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    elif dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        raise StoreError(f"grid store: {dialect} is not a records database (expected sqlite or postgresql)")
    statement = insert(grid_points)
    return statement.on_conflict_do_update(
        index_elements=list(SLOT_KEY),
        set_={"value": statement.excluded.value, "recorded_at": statement.excluded.recorded_at},
        where=grid_points.c.value != statement.excluded.value,
    ).returning(grid_points.c.id)


def _overlapping(since: datetime | None, until: datetime | None) -> list:
    """Conditions for slots that overlap [since, until): a range on ``start``, so the index serves it."""
    c = grid_points.c
    conditions = []
    if since is not None:
        origin = _epoch(since)
        conditions += [c.start > origin - MAX_SLOT_S, c.start + c.seconds > origin]
    if until is not None:
        conditions.append(c.start < _epoch(until))
    return conditions


def _record(row) -> dict[str, Any]:
    """A row of ``_COLUMNS`` as the dict callers read (unpacked: a Row's named access costs more than
    the query on a 28-day read)."""
    kind, region, source, issued, start, seconds, value = row
    record = {"kind": kind, "region": region, "source": source, "start": int(start),
              "seconds": int(seconds), "value": float(value)}
    if kind == FORECAST:
        record["issued"] = int(issued)
    return record


def hourly_means(points: list[IntensityPoint], end: datetime, hours: int) -> np.ndarray:
    """Time-weighted hourly means of ``points`` for the ``hours`` hours before ``end`` (NaN where none)."""
    total, weight = np.zeros(hours), np.zeros(hours)
    origin = end.timestamp() - hours * 3600
    for p in points:
        a, b = p.start.timestamp(), p.end.timestamp()
        for h in range(max(0, int((a - origin) // 3600)), min(hours, int(math.ceil((b - origin) / 3600)))):
            overlap = min(b, origin + (h + 1) * 3600) - max(a, origin + h * 3600)
            if overlap > 0:
                total[h] += p.value * overlap
                weight[h] += overlap
    with np.errstate(invalid="ignore"):
        return np.where(weight > 0, total / np.where(weight > 0, weight, 1), np.nan)


def import_trace(path: str | Path, store: GridStore | None = None, region: str | None = None,
                 source: str | None = None) -> tuple[int, str, str]:
    """Seed the store with a trace file's actuals at the trace's own times (NESO export, Electricity
    Maps portal, EIA-930): the real signal of its year, not a replay. Returns (new rows, region, source)."""
    from carbon_aware.grid.traces import load_trace

    trace = load_trace(str(path))
    region = region or trace.region
    source = source or f"trace:{Path(trace.path).name}"
    step = timedelta(seconds=trace.step)
    points = [IntensityPoint(datetime.fromtimestamp(trace.start + i * trace.step, tz=timezone.utc), step,
                             float(v)) for i, v in enumerate(trace.actual) if not math.isnan(v)]
    return (store or GridStore()).add_actuals(region, source, points), region, source
