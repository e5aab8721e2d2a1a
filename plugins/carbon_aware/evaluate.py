"""Replay real traces: every day a job is triggered at 00:00 UTC and must finish within the horizon.

    python -m carbon_aware.evaluate --trace PATH --job-hours 1 4 [--horizon-hours 24]
    python -m carbon_aware.evaluate --all          # every 2023 trace under ../shared/data/carbon

For each policy: the mean *actual* intensity of the windows it chose, the saving against running
at once, and the share of the oracle's saving it captured (the oracle plans on the actuals).
Every planner policy goes through the same ``best_start`` the DAG uses.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo
from pathlib import Path

import numpy as np

from carbon_aware.history import WINDOW_H, HistoryModel, fill_gaps, persistence, weekly_profile
from carbon_aware.planner import Curve, PlanningError, best_start
from carbon_aware.providers.mock import MockProvider
from carbon_aware.trace import Trace, load_trace

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "carbon"
THRESHOLD_G_PER_KWH = 300.0
THRESHOLD_MAX_WAIT_H = 1.0
FIXED_START_HOUR = 2  # local time: "night is cleanest"
REGION_TIMEZONES = {"GB": "Europe/London", "DE": "Europe/Berlin", "US-CAL-CISO": "America/Los_Angeles", "CISO": "America/Los_Angeles",
                    "US-TEX-ERCO": "America/Chicago", "ERCO": "America/Chicago", "US-NY-NYIS": "America/New_York",
                    "NYIS": "America/New_York", "US-MIDA-PJM": "America/New_York", "PJM": "America/New_York",
                    "MISO": "America/Chicago", "BPAT": "America/Los_Angeles", "AZPS": "America/Phoenix", "SOCO": "America/New_York"}


@dataclass
class PolicyResult:
    policy: str
    mean_intensity: float
    saving_pct: float
    oracle_share: float | None


def _hourly_curve(start: float, values: np.ndarray) -> Curve:
    starts = start + 3600.0 * np.arange(len(values))
    return Curve(starts, starts + 3600.0, values)


def evaluate_trace(trace: Trace, job_hours: float, horizon_hours: float = 24.0, model: HistoryModel | None = None,
                   previous: Trace | None = None) -> dict:
    """Score every policy on ``trace``; ``previous`` (the year before, if given) only supplies history
    for the first weeks' forecasts, so every day of the trace can be scored."""
    model = model or HistoryModel.load()
    duration, horizon = job_hours * 3600.0, horizon_hours * 3600.0
    leads = int(np.ceil(horizon_hours))
    valid = ~np.isnan(trace.actual)
    actual = Curve(trace.times()[valid], trace.times()[valid] + trace.step, trace.actual[valid])
    hourly_start, hourly = trace.hourly()
    first_day = np.ceil((hourly_start + WINDOW_H * 3600) / 86400) * 86400
    if previous is not None:
        before_start, before = previous.hourly()
        if abs(before_start + 3600 * len(before) - hourly_start) < 1:
            first_day = np.ceil(hourly_start / 86400) * 86400
            hourly_start, hourly = before_start, np.concatenate([before, hourly])

    origins = np.arange(first_day, trace.end - horizon + 1, 86400.0)
    hour_index = ((origins - hourly_start) / 3600).astype(int) - 1  # latest hour fully observed at the origin
    filled = fill_gaps(hourly)  # the baselines get the same gap filling the history model does
    forecasts = {
        "planner + persistence": persistence(filled, hour_index, leads),
        "planner + 7-day mean": weekly_profile(filled, hour_index, leads),
        "planner + history": model.predict_many(hourly, hour_index, leads),
    }
    zone = ZoneInfo(REGION_TIMEZONES.get(trace.region, "UTC"))
    mock = MockProvider(timezone_name=zone.key)  # the original curve, in the grid's local time
    policies: dict[str, list[float]] = {}
    days = 0
    for i, origin in enumerate(origins):
        latest = origin + horizon - duration
        starts = {"run_now": origin, "fixed 02:00 local": _next_local_hour(origin, FIXED_START_HOUR, zone, latest)}
        starts["threshold 300 g/kWh, 1 h wait"] = _threshold_start(trace, origin)
        mock_points = mock.forecast(datetime.fromtimestamp(origin, tz=timezone.utc), timedelta(seconds=horizon)).arrays()
        starts["planner + mock curve"] = best_start(Curve(*mock_points), duration, origin, latest)[0]
        for name, values in forecasts.items():
            starts[name] = best_start(_hourly_curve(origin, values[i]), duration, origin, latest)[0]
        if trace.forecast is not None:
            lo, hi = trace.index(origin), trace.index(origin + horizon)
            own = trace.forecast[lo:hi]
            if not np.isnan(own).any():
                t0 = trace.start + lo * trace.step + trace.step * np.arange(len(own))
                starts["planner + trace's own forecast"] = best_start(Curve(t0, t0 + trace.step, own), duration, origin, latest)[0]
        try:
            starts["oracle"] = best_start(actual, duration, origin, latest)[0]
        except PlanningError:
            continue  # no fully measured window that day
        realised = actual.window_means(np.array(list(starts.values())), duration)
        if np.isnan(realised).any() or (trace.forecast is not None and "planner + trace's own forecast" not in starts):
            continue  # a gap in the actuals: this day cannot be scored fairly for every policy
        days += 1
        for name, value in zip(starts, realised):
            policies.setdefault(name, []).append(float(value))

    run_now = np.mean(policies["run_now"])
    oracle = np.mean(policies["oracle"])
    rows = []
    for name, values in policies.items():
        mean = float(np.mean(values))
        share = (run_now - mean) / (run_now - oracle) if run_now - oracle > 1e-9 else None
        rows.append(PolicyResult(name, mean, 100.0 * (run_now - mean) / run_now, share))
    return {"trace": Path(trace.path).name, "region": trace.region, "job_hours": job_hours,
            "horizon_hours": horizon_hours, "days": days, "results": [r.__dict__ for r in rows]}


def _next_local_hour(origin: float, hour: int, zone: ZoneInfo, latest: float) -> float:
    """The first hh:00 local time at or after the trigger (or the latest start if that is sooner)."""
    local = datetime.fromtimestamp(origin, tz=zone)
    candidate = local.replace(hour=hour, minute=0, second=0, microsecond=0)
    if candidate < local:
        candidate = (local + timedelta(days=1)).replace(hour=hour, minute=0, second=0, microsecond=0)
    return min(candidate.timestamp(), latest)


def _threshold_start(trace: Trace, origin: float) -> float:
    """The original rule: start at the first slot whose actual intensity is below the threshold,
    checked from the trigger for at most the maximum wait; then start regardless."""
    deadline = origin + THRESHOLD_MAX_WAIT_H * 3600
    index = trace.index(origin)
    while trace.start + index * trace.step < deadline:
        value = trace.actual[index]
        if not np.isnan(value) and value < THRESHOLD_G_PER_KWH:
            return max(origin, trace.start + index * trace.step)
        index += 1
    return deadline


def format_table(evaluations: list[dict]) -> str:
    lines = []
    for ev in evaluations:
        lines.append(f"\n{ev['trace']} ({ev['region']}), job {ev['job_hours']:g} h, horizon {ev['horizon_hours']:g} h, {ev['days']} days")
        lines.append(f"  {'policy':34}{'mean g/kWh':>12}{'saving %':>10}{'oracle share':>14}")
        for r in ev["results"]:
            share = f"{r['oracle_share']:.2f}" if r["oracle_share"] is not None else "n/a"
            lines.append(f"  {r['policy']:34}{r['mean_intensity']:>12.1f}{r['saving_pct']:>10.1f}{share:>14}")
    return "\n".join(lines)


def policy_for(trace: Trace, forecast: str = "auto") -> str:
    """The evaluation policy that plans as the DAG's trace provider does with ``forecast``."""
    own = forecast == "file" or (forecast == "auto" and trace.forecast is not None)
    return "planner + trace's own forecast" if own else "planner + history"


def year_line(path: str | Path, job_hours: float, horizon_hours: float, forecast: str = "auto") -> str:
    """What the DAG's policy would have saved running daily over the whole trace, in one line."""
    path = Path(path)
    trace = load_trace(path)
    ev = evaluate_trace(trace, job_hours, horizon_hours, previous=previous_year(path))
    results = {r["policy"]: r for r in ev["results"]}
    policy, oracle = results[policy_for(trace, forecast)], results["oracle"]
    year = datetime.fromtimestamp((trace.start + trace.end) / 2, tz=timezone.utc).year
    return (
        f"run daily in {year} on this trace ({path.name}, {ev['days']} days, job {job_hours:g} h, deadline "
        f"{horizon_hours:g} h, {_short(policy['policy'])}): "
        f"{-policy['saving_pct']:+.1f} % vs starting at once; "
        f"the oracle {-oracle['saving_pct']:+.1f} %"
    )


def previous_year(path: Path) -> Trace | None:
    """The same zone's trace for the year before (Electricity Maps portal naming), if it is there."""
    parts = path.name.split("_")
    for i, part in enumerate(parts):
        if part.isdigit() and len(part) == 4:
            sibling = path.with_name("_".join(parts[:i] + [str(int(part) - 1)] + parts[i + 1:]))
            return load_trace(sibling) if sibling.is_file() else None
    return None


def all_2023_traces(data_dir: Path) -> list[Path]:
    return sorted(p for p in data_dir.rglob("*.csv") if "2023" in p.name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m carbon_aware.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trace", action="append", default=[], help="a trace CSV (repeatable)")
    parser.add_argument("--all", action="store_true", help="every 2023 trace under --data-dir")
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR))
    parser.add_argument("--job-hours", type=float, nargs="+", default=[1.0, 4.0])
    parser.add_argument("--horizon-hours", type=float, default=24.0)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    paths = [Path(p) for p in args.trace] + (all_2023_traces(Path(args.data_dir)) if args.all else [])
    if not paths:
        parser.error("give --trace PATH or --all")
    model = HistoryModel.load()
    evaluations = []
    for path in paths:
        began = time.perf_counter()
        trace = load_trace(path)
        previous = previous_year(path)
        for hours in args.job_hours:
            evaluations.append(evaluate_trace(trace, hours, args.horizon_hours, model, previous))
        evaluations[-1]["seconds"] = time.perf_counter() - began
        print(format_table(evaluations[-len(args.job_hours):]), f"\n  ({time.perf_counter() - began:.2f} s)")
    print(format_summary(evaluations))
    if args.json:
        Path(args.json).write_text(json.dumps(evaluations, indent=2))
    return 0


def _short(policy: str) -> str:
    return policy.replace("planner + ", "").replace("the trace's ", "").replace("trace's ", "")


def format_summary(evaluations: list[dict]) -> str:
    """One table: oracle share per trace and job length for the forecast-driven policies."""
    policies = ["planner + mock curve", "planner + persistence", "planner + 7-day mean", "planner + history", "planner + trace's own forecast"]
    lines = ["\noracle share captured (1.00 = all of the oracle's saving)",
             f"  {'trace':34}{'job h':>6}" + "".join(f"{_short(p):>22}" for p in policies)]
    for ev in evaluations:
        shares = {r["policy"]: r["oracle_share"] for r in ev["results"]}
        cells = "".join(f"{shares[p]:>22.2f}" if shares.get(p) is not None else f"{'-':>22}" for p in policies)
        lines.append(f"  {ev['trace']:34}{ev['job_hours']:>6g}{cells}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
