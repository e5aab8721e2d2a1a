"""What the grid did: every actual, and every forecast with the time it was issued, that a provider
returned, kept in one append-only JSON-lines file that every worker of a deployment sees.

By default the file is ``grid_store.jsonl`` under the output directory (``$CARBON_OUTPUT_DIR``, the
shared volume); ``$CARBON_GRID_STORE`` names another file. Each line is one slot::

    {"kind": "actual", "region": "GB", "source": "uk", "start": 1700000000, "seconds": 1800, "value": 151.0}
    {"kind": "forecast", ..., "issued": 1699999200}

Writers take an exclusive ``flock`` on the file, skip lines already there (same kind, region,
source, start, length, issue time and value) and append the rest in one ``write``, so workers on
one volume can record at once without losing or doubling lines. A revised value for a slot is
appended; readers keep the last one. Readers skip a torn last line.
"""
from __future__ import annotations

import fcntl
import json
import logging
import math
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from carbon_aware.grid.forecast import IntensityPoint
from carbon_aware.outputs import output_root

log = logging.getLogger(__name__)

STORE_ENV = "CARBON_GRID_STORE"
STORE_NAME = "grid_store.jsonl"


def store_path() -> Path:
    return Path(os.environ.get(STORE_ENV) or output_root() / STORE_NAME)


def _key(record: dict) -> tuple:
    return (record["kind"], record["region"], record["source"], record["start"], record["seconds"],
            record.get("issued"))


def _records(points: Iterable[IntensityPoint], kind: str, region: str, source: str,
             issued: datetime | None = None) -> list[dict]:
    out = []
    for p in points:
        record = {"kind": kind, "region": region, "source": source, "start": int(p.start.timestamp()),
                  "seconds": int(p.duration.total_seconds()), "value": round(float(p.value), 3)}
        if issued is not None:
            record["issued"] = int(issued.timestamp())
        out.append(record)
    return out


class GridStore:
    """The store at ``path`` (default: :func:`store_path`)."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else store_path()

    # writing -----------------------------------------------------------------------------------
    def add_actuals(self, region: str, source: str, points: Iterable[IntensityPoint]) -> int:
        """Record measured slots; returns how many lines were new."""
        return self._append(_records(points, "actual", region, source))

    def add_forecast(self, region: str, source: str, issued: datetime,
                     points: Iterable[IntensityPoint]) -> int:
        """Record a forecast as issued at ``issued``; returns how many lines were new."""
        return self._append(_records(points, "forecast", region, source, issued))

    def _append(self, records: list[dict]) -> int:
        if not records:
            return 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                handle.seek(0)
                text = handle.read().decode("utf-8", errors="replace")
                latest = {_key(r): r["value"] for r in _parse(text.splitlines())}
                new = []
                for record in records:
                    key = _key(record)
                    if latest.get(key) != record["value"]:
                        latest[key] = record["value"]
                        new.append(record)
                if new:
                    torn = "\n" if text and not text.endswith("\n") else ""  # end a dead writer's line
                    lines = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in new)
                    handle.write((torn + lines).encode("utf-8"))
                    handle.flush()
                    os.fsync(handle.fileno())
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        return len(new)

    # reading -----------------------------------------------------------------------------------
    def records(self, kind: str | None = None, region: str | None = None) -> list[dict]:
        """Every record (the last value per slot), optionally of one kind and region."""
        if not self.path.is_file():
            return []
        with open(self.path, encoding="utf-8") as handle:
            fcntl.flock(handle, fcntl.LOCK_SH)
            try:
                latest = {_key(r): r for r in _parse(handle) if (kind is None or r["kind"] == kind)
                          and (region is None or r["region"] == region)}
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        return list(latest.values())

    def sources(self, region: str) -> dict[str, float]:
        """Hours of actuals per source for ``region``."""
        hours: dict[str, float] = {}
        for r in self.records("actual", region):
            hours[r["source"]] = hours.get(r["source"], 0.0) + r["seconds"] / 3600
        return hours

    def hourly_actuals(self, region: str, end: datetime, hours: int,
                       source: str | None = None) -> tuple[np.ndarray, str | None]:
        """Time-weighted hourly means of one source's actuals for the ``hours`` hours before ``end``
        (NaN where none), and that source's name. ``source`` is preferred when it has any; otherwise
        the source with the most hours in the span (sources are never mixed: their levels differ)."""
        records = self.records("actual", region)
        origin = end.timestamp() - hours * 3600
        inside = [r for r in records if r["start"] + r["seconds"] > origin and r["start"] < end.timestamp()]
        by_source: dict[str, list[dict]] = {}
        for r in inside:
            by_source.setdefault(r["source"], []).append(r)
        if not by_source:
            return np.full(hours, np.nan), None
        chosen = source if source in by_source else max(
            by_source, key=lambda s: sum(r["seconds"] for r in by_source[s]))
        points = [IntensityPoint(datetime.fromtimestamp(r["start"], tz=timezone.utc),
                                 timedelta(seconds=r["seconds"]), r["value"]) for r in by_source[chosen]]
        return hourly_means(points, end, hours), chosen

    def forecasts(self, region: str, source: str | None = None) -> dict[int, list[dict]]:
        """Stored forecasts of ``region`` by issue time (epoch seconds), each a sorted list of slots."""
        issued: dict[int, list[dict]] = {}
        for r in self.records("forecast", region):
            if source is None or r["source"] == source:
                issued.setdefault(r["issued"], []).append(r)
        return {t: sorted(rows, key=lambda r: r["start"]) for t, rows in sorted(issued.items())}


def _parse(lines: Iterable[str]) -> Iterator[dict]:
    for line in lines:
        try:
            record = json.loads(line)
            _key(record)
        except (ValueError, KeyError, TypeError):
            continue  # a torn line from a writer that died mid-write
        yield record


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
    """Seed the store with a trace file's actuals (NESO export, Electricity Maps portal, EIA-930).
    Returns (new lines, region, source)."""
    from carbon_aware.grid.traces import load_trace

    trace = load_trace(str(path))
    region = region or trace.region
    source = source or f"trace:{Path(trace.path).name}"
    step = timedelta(seconds=trace.step)
    points = [IntensityPoint(datetime.fromtimestamp(trace.start + i * trace.step, tz=timezone.utc), step,
                             float(v)) for i, v in enumerate(trace.actual) if not math.isnan(v)]
    return (store or GridStore()).add_actuals(region, source, points), region, source
