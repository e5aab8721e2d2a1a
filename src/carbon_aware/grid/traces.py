"""Real carbon-intensity traces from CSV, on a regular UTC grid with NaN for missing values.

Formats (detected from the header):
- NESO Carbon Intensity API export: ``from,to,forecast,actual,index`` (half-hourly, forecast + actual);
- Electricity Maps data-portal files: ``Datetime (UTC),...,Carbon Intensity gCO₂eq/kWh (direct),...``;
- EIA-930 derived (SustainDC): ``timestamp,WND,SUN,...,avg_CI``.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path

import numpy as np

from carbon_aware.grid.forecast import ForecastError

EM_DIRECT = "Carbon Intensity gCO₂eq/kWh (direct)"
EM_LCA = "Carbon Intensity gCO₂eq/kWh (LCA)"
EIA_FUELS = ("WND", "SUN", "WAT", "OIL", "NG", "COL", "NUC", "OTH")
# EIA rows whose total generation is below this share of the median are metering glitches.
EIA_GLITCH_SHARE = 0.05
MAX_TRACE_BYTES = 64 * 2**20  # a year of half-hours is about 1 MB


@dataclass(frozen=True)
class Trace:
    path: str
    format: str
    region: str
    start: float  # epoch seconds of the first slot
    step: float  # slot length, seconds
    actual: np.ndarray  # g/kWh per slot, NaN where missing
    forecast: np.ndarray | None  # the operator's own forecast, where the file has one

    @property
    def end(self) -> float:
        return self.start + self.step * len(self.actual)

    def index(self, moment: float) -> int:
        return int(math.floor((moment - self.start) / self.step))

    def times(self) -> np.ndarray:
        return self.start + self.step * np.arange(len(self.actual))

    def hourly(self, values: np.ndarray | None = None) -> tuple[float, np.ndarray]:
        """(start, hourly means) of ``values`` (default: actuals); hours with any gap stay NaN."""
        values = self.actual if values is None else values
        per_hour = int(round(3600 / self.step))
        if per_hour <= 1:
            return self.start, values
        offset = (-int(round((self.start % 3600) / self.step))) % per_hour
        usable = (len(values) - offset) // per_hour * per_hour
        return (self.start + offset * self.step,
                values[offset:offset + usable].reshape(-1, per_hour).mean(axis=1))


def _epoch(text: str) -> float:
    moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)  # these formats document UTC
    return moment.timestamp()


def _number(text: str) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return math.nan
    return value if math.isfinite(value) else math.nan


def _regular(times: list[float], columns: dict[str, list[float]],
             path: Path) -> tuple[float, float, dict[str, np.ndarray]]:
    if len(times) < 2:
        raise ForecastError(f"trace {path}: fewer than two rows")
    order = np.argsort(times, kind="stable")
    t = np.asarray(times)[order]
    step = float(np.median(np.diff(t)))
    if step <= 0:
        raise ForecastError(f"trace {path}: duplicated timestamps")
    slots = np.round((t - t[0]) / step).astype(int)
    size = int(slots[-1]) + 1
    grid = {}
    for name, values in columns.items():
        column = np.full(size, np.nan)
        column[slots] = np.asarray(values, dtype=float)[order]
        grid[name] = column
    return float(t[0]), step, grid


@lru_cache(maxsize=64)
def load_trace(path: str | Path, signal: str = "direct") -> Trace:
    """Load a trace; ``signal`` picks Electricity Maps' 'direct' or 'LCA' column. Any file that is not
    one of the formats raises a ForecastError that names the file, never its content."""
    path = Path(path)
    if not path.is_file():
        raise ForecastError(f"trace file not found: {path}")
    if path.stat().st_size > MAX_TRACE_BYTES:
        raise ForecastError(f"trace {path.name}: larger than {MAX_TRACE_BYTES // 2**20} MiB")
    try:
        return _parse(path, signal)
    except ForecastError:
        raise
    except (csv.Error, ValueError, KeyError, TypeError, IndexError, UnicodeDecodeError, OSError) as error:
        raise ForecastError(f"trace {path.name}: not a readable NESO, Electricity Maps or EIA-930 CSV "
                            f"({type(error).__name__} in a row or field)") from None


def _parse(path: Path, signal: str) -> Trace:
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        rows = list(reader)
    if {"from", "to", "forecast", "actual"} <= set(header):
        times = [_epoch(r["from"]) for r in rows]
        actual = [_number(r["actual"]) for r in rows]
        actual = [math.nan if v == 0 else v for v in actual]  # NESO publishes a few 0.0 placeholders
        start, step, grid = _regular(times, {"actual": actual,
                                             "forecast": [_number(r["forecast"]) for r in rows]}, path)
        return Trace(str(path), "neso", "GB", start, step, grid["actual"], grid["forecast"])
    if "Datetime (UTC)" in header and EM_DIRECT in header:
        column = EM_LCA if signal.lower() == "lca" else EM_DIRECT
        times = [_epoch(r["Datetime (UTC)"]) for r in rows]
        start, step, grid = _regular(times, {"actual": [_number(r[column]) for r in rows]}, path)
        region = rows[0].get("Zone Id") or path.stem.split("_")[0]
        return Trace(str(path), "electricitymaps", region, start, step, grid["actual"], None)
    if "timestamp" in header and "avg_CI" in header:
        times = [_epoch(r["timestamp"]) for r in rows]
        totals = np.array([sum(_number(r[f]) for f in EIA_FUELS if f in r) for r in rows])
        median = np.nanmedian(totals)
        actual = [v if t >= EIA_GLITCH_SHARE * median else math.nan
                  for v, t in zip((_number(r["avg_CI"]) for r in rows), totals)]
        start, step, grid = _regular(times, {"actual": actual}, path)
        return Trace(str(path), "eia930", path.stem.split("_")[0], start, step, grid["actual"], None)
    raise ForecastError(f"trace {path.name}: unknown format (its header has none of the expected columns); "
                        "expected a NESO, Electricity Maps portal or EIA-930 (avg_CI) CSV")
