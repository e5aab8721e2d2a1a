"""How the grid store's costs grow with its age: they should not. Fills a store with a year of
6 regions x 4 plans a day and prints, at 1 week, 4 weeks, 6 months and 1 year of age, the median time
of one plan's write and of one 28-day read, and the ratio of the last to the first (flat: within 2x;
the command fails above ``--max-ratio``).

A plan writes what ``clients.record`` writes for a real provider: its forecast (48 h of half-hour
slots, issued at plan time) and the provider's last 24 h of actuals (of which the 6 h since the
previous plan are new). The reads are the ones planning makes: ``hourly_actuals`` over 28 days (the
history forecaster's window) and ``forecasts`` issued in the last 28 days.

A store a week old holds a week, so its 28-day reads return a quarter of what later ones do: their
raw times are compared from 4 weeks on (the first full window), and their time per hour or forecast
slot returned from 1 week on. A write is the same size at every age and is compared as it is.

The bulk of each span is inserted directly, many plans per transaction, so that a year fills in
seconds; the last day before each age goes through the real per-plan path (``GridStore.add_*``),
and those writes are the ones timed.

    python -m carbon_aware.grid.store_bench                  # a temporary SQLite file
    python -m carbon_aware.grid.store_bench --url postgresql+psycopg2://user:pw@host/db

With ``--url`` the benchmark writes regions named ``bench-*`` into that database's grid store and
deletes them before and after: never point it at a deployment's records.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
from sqlalchemy import delete, func, select

from carbon_aware.grid.forecast import IntensityPoint
from carbon_aware.grid.store import ACTUAL, FORECAST, GridStore
from carbon_aware.records.tables import grid_points

SLOT_S = 1800
FORECAST_SLOTS = 48 * 3600 // SLOT_S  # 48 h ahead
ACTUAL_SLOTS = 24 * 3600 // SLOT_S  # the last day, as record() asks a provider for
READ_DAYS = 28
SOURCE = "bench"
BORN = datetime(2025, 1, 1, tzinfo=timezone.utc)  # the store's first plan
BULK_ROWS = 50_000  # rows per bulk transaction


def intensity(region: int, start: np.ndarray, issued: int | None = None) -> np.ndarray:
    """A daily cycle per region; each issue of a forecast a little off it, as forecasts are."""
    day = np.sin(2 * np.pi * (start % 86400) / 86400 + region)
    noise = 0.0 if issued is None else (issued // 3600 % 7) - 3
    return np.round(250 + 100 * day + noise, 3)


class Bench:
    """One store being aged: ``fill`` brings it to a moment in bulk, ``plan`` writes one plan the
    real way, ``read`` makes the two reads a plan makes."""

    def __init__(self, store: GridStore, regions: int, plans_per_day: int):
        self.store, self.regions = store, [f"bench-{i}" for i in range(regions)]
        self.every_s = 86400 // plans_per_day
        self.filled_s = int(BORN.timestamp())  # plans before this moment are in the store

    def plan_times(self, until_s: int) -> range:
        return range(self.filled_s, until_s, self.every_s)

    def rows_of(self, index: int, plan_s: int) -> list[dict]:
        """The rows one plan adds: its forecast, and the actual slots since the previous plan."""
        region, now = self.regions[index], time.time()
        first = plan_s // SLOT_S * SLOT_S
        ahead = np.arange(first, first + FORECAST_SLOTS * SLOT_S, SLOT_S)
        since = np.arange(plan_s - self.every_s, plan_s, SLOT_S)
        rows = [(FORECAST, plan_s, int(s), float(v))
                for s, v in zip(ahead, intensity(index, ahead, plan_s))]
        rows += [(ACTUAL, 0, int(s), float(v)) for s, v in zip(since, intensity(index, since))]
        return [{"region": region, "kind": kind, "source": SOURCE, "issued": issued, "start": start,
                 "seconds": SLOT_S, "value": value, "recorded_at": now}
                for kind, issued, start, value in rows]

    def fill(self, until_s: int) -> None:
        """Every plan before ``until_s`` inserted directly, in large transactions."""
        batch: list[dict] = []
        for plan_s in self.plan_times(until_s):
            for index in range(len(self.regions)):
                batch += self.rows_of(index, plan_s)
            if len(batch) >= BULK_ROWS:
                self._insert(batch)
                batch = []
        self._insert(batch)
        self.filled_s = max(self.filled_s, until_s)

    def _insert(self, rows: list[dict]) -> None:
        if rows:
            with self.store.engine.begin() as connection:
                connection.execute(grid_points.insert(), rows)

    def plan(self, index: int, plan_s: int) -> float:
        """One plan through ``GridStore.add_forecast`` and ``add_actuals``, as ``record`` makes it;
        returns its seconds."""
        region, now = self.regions[index], datetime.fromtimestamp(plan_s, tz=timezone.utc)
        first = plan_s // SLOT_S * SLOT_S
        ahead = np.arange(first, first + FORECAST_SLOTS * SLOT_S, SLOT_S)
        back = np.arange(first - ACTUAL_SLOTS * SLOT_S, first, SLOT_S)
        forecast = _points(ahead, intensity(index, ahead, plan_s))
        actuals = _points(back, intensity(index, back))
        started = time.perf_counter()
        self.store.add_forecast(region, SOURCE, now, forecast)
        self.store.add_actuals(region, SOURCE, actuals)
        return time.perf_counter() - started

    def plans(self, until_s: int) -> list[float]:
        """Every plan up to ``until_s`` through the real path; the seconds of each."""
        seconds = [self.plan(index, plan_s) for plan_s in self.plan_times(until_s)
                   for index in range(len(self.regions))]
        self.filled_s = max(self.filled_s, until_s)
        return seconds

    def read(self, index: int, end: datetime) -> tuple[float, int, float, int]:
        """One 28-day ``hourly_actuals`` and one 28-day ``forecasts`` for a region: the seconds of
        each and how much each returned (hours with actuals, forecast slots)."""
        region = self.regions[index]
        started = time.perf_counter()
        hourly, _ = self.store.hourly_actuals(region, end, READ_DAYS * 24)
        middle = time.perf_counter()
        forecasts = self.store.forecasts(region, since=end - timedelta(days=READ_DAYS), until=end)
        finished = time.perf_counter()
        return (middle - started, int((~np.isnan(hourly)).sum()), finished - middle,
                sum(len(slots) for slots in forecasts.values()))

    def rows(self) -> int:
        with self.store.engine.connect() as connection:
            return connection.execute(select(func.count()).select_from(grid_points)).scalar()

    def clear(self) -> None:
        with self.store.engine.begin() as connection:
            connection.execute(delete(grid_points).where(grid_points.c.region.in_(self.regions)))


def _points(starts: np.ndarray, values: np.ndarray) -> list[IntensityPoint]:
    step = timedelta(seconds=SLOT_S)
    return [IntensityPoint(datetime.fromtimestamp(int(s), tz=timezone.utc), step, float(v))
            for s, v in zip(starts, values)]


def measure(bench: Bench, age_days: int, repeats: int) -> dict:
    """Age the store to ``age_days``: bulk up to the day before, the last day plan by plan (timed);
    then time the reads at that moment."""
    end = BORN + timedelta(days=age_days)
    end_s = int(end.timestamp())
    bench.fill(end_s - 86400)
    writes = bench.plans(end_s)
    reads = [bench.read(index, end) for _ in range(repeats) for index in range(len(bench.regions))]
    hourly, forecasts = statistics.median(r[0] for r in reads), statistics.median(r[2] for r in reads)
    return {"age": age_days, "rows": bench.rows(), "write": statistics.median(writes),
            "hourly": hourly, "hourly_per": hourly / max(1, reads[0][1]),
            "forecasts": forecasts, "forecasts_per": forecasts / max(1, reads[0][3])}


def age_name(days: int) -> str:
    return {7: "1 week", 28: "4 weeks", 182: "6 months", 365: "1 year"}.get(days, f"{days} days")


HEADER = (f"{'age':>10} {'rows':>9} {'plan write ms':>14} {'hourly_actuals 28 d: ms':>24} {'us/h':>6} "
          f"{'forecasts 28 d: ms':>19} {'us/slot':>8}")


def row(r: dict) -> str:
    return (f"{age_name(r['age']):>10} {r['rows']:>9} {r['write'] * 1e3:>14.2f} {r['hourly'] * 1e3:>24.2f} "
            f"{r['hourly_per'] * 1e6:>6.1f} {r['forecasts'] * 1e3:>19.2f} {r['forecasts_per'] * 1e6:>8.1f}")


def ratios(results: list[dict]) -> dict[str, float]:
    """Last over first. A 28-day read in a store younger than 28 days returns less than a later one,
    so its raw time is compared from the first age with a full window, and its time per hour or slot
    returned from the first age on."""
    first, last = results[0], results[-1]
    full = next((r for r in results if r["age"] >= READ_DAYS), last)
    out = {key: last[key] / first[key] for key in ("write", "hourly_per", "forecasts_per")}
    out.update({key: last[key] / full[key] for key in ("hourly", "forecasts")})
    return out


def ratio_row(results: list[dict]) -> str:
    q = ratios(results)
    return (f"{'last/first':>10} {'':>9} {q['write']:>14.2f} {q['hourly']:>24.2f} {q['hourly_per']:>6.2f} "
            f"{q['forecasts']:>19.2f} {q['forecasts_per']:>8.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m carbon_aware.grid.store_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a SQLAlchemy URL (default: a temporary SQLite file)")
    parser.add_argument("--regions", type=int, default=6)
    parser.add_argument("--plans-per-day", type=int, default=4)
    parser.add_argument("--ages", default="7,28,182,365", help="days of age to measure at")
    parser.add_argument("--repeats", type=int, default=5, help="reads per region at each age")
    parser.add_argument("--max-ratio", type=float, default=2.0, help="fail when last/first exceeds it")
    args = parser.parse_args(argv)
    ages = sorted(int(day) for day in args.ages.split(","))
    with tempfile.TemporaryDirectory(prefix="store-bench-") as folder:
        bench = Bench(GridStore(args.url or f"sqlite:///{Path(folder) / 'bench.db'}"), args.regions,
                      args.plans_per_day)
        results = run(bench, ages, args.repeats, clear=bool(args.url))
    print(ratio_row(results))
    print(f"(ms: medians; raw read times compared from the first age with {READ_DAYS} days to read, "
          "us per hour or slot returned from the first age)", flush=True)
    high = [key for key, value in ratios(results).items() if value > args.max_ratio]
    if high:
        print(f"not flat: last/first above {args.max_ratio} for {', '.join(high)}", file=sys.stderr)
        return 1
    return 0


def run(bench: Bench, ages: list[int], repeats: int, clear: bool) -> list[dict]:
    """Each age's measures, printed as they come. ``clear``: a database of someone else's, whose
    ``bench-*`` regions are removed before (a run that died) and after."""
    print(f"grid store benchmark on {bench.store.url}: {len(bench.regions)} regions x "
          f"{86400 // bench.every_s} plans a day ({FORECAST_SLOTS} forecast + {ACTUAL_SLOTS} actual "
          f"half-hours a plan)\n{HEADER}", flush=True)
    if clear:
        bench.clear()
    try:
        results = []
        for age in ages:
            results.append(measure(bench, age, repeats))
            print(row(results[-1]), flush=True)
        return results
    finally:
        if clear:
            bench.clear()
        bench.store.engine.dispose()


if __name__ == "__main__":
    sys.exit(main())
