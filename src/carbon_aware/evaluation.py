"""Replay real traces: every day a job is triggered at the given hours (UTC) and must finish within
the horizon.

    python -m carbon_aware.evaluation --trace PATH --job-hours 1 4 [--horizon-hours 24]
    python -m carbon_aware.evaluation --all                      # every 2023 trace, one trigger at 00:00 UTC
    python -m carbon_aware.evaluation --all --trigger-hours all   # a trigger at every hour of the day
    python -m carbon_aware.evaluation --all --trigger-hours all --update-readme README.md
    python -m carbon_aware.evaluation --regions FILE             # where and when: a regions file, home first
    python -m carbon_aware.evaluation --all --regions             # the six 2023 zones, each in turn home
    python -m carbon_aware.evaluation --all --job-hours 4 12 24 --horizon-hours 48 --interruptible

For each policy: the mean *actual* intensity of the windows it chose, the saving against running
at once (%), and the share of the oracle's saving it captured, pooled over every trigger of the year
(the oracle plans on the actuals). For each forecast: MAPE and rank correlation by lead hour. Per
policy: the mean over the Electricity Maps zones and the worst zone. Every planner policy goes through
the same ``best_start`` the DAG uses.

With --interruptible, each planner policy and the oracle are also scored as an interruptible job
("<policy>, interruptible"): the same forecast chooses segments with ``best_segments`` (minimum segment
--min-segment-hours, default 1 h; each resume re-runs --resume-cost-minutes, default 5, of overhead), and
the actuals over the chosen segments, overhead included, score them, as emissions per hour of the job's
work (so comparable with a window's mean). Savings are against running the whole job contiguously at
once (the same counterfactual), and the oracle share is against the *contiguous* oracle, so it can exceed
1; the interruptible oracle plans segments on the actuals.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np

from carbon_aware import settings
from carbon_aware.grid.forecaster import (REGION_TIMEZONES, WINDOW_H, HistoryModel, fill_gaps, persistence,
                                     weekly_profile)
from carbon_aware.planning.planner import (Curve, PlanningError, best_start, cheapest_segments, segment_grid,
                                   segments_cost, unit_costs)
from carbon_aware.grid.clients.mock import MockProvider
from carbon_aware.grid.traces import Trace, load_trace

THRESHOLD_G_PER_KWH = 300.0
THRESHOLD_MAX_WAIT_H = 1.0
FIXED_START_HOUR = 2  # local time: "night is cleanest"
OWN = "planner + trace's own forecast"
OWN_CORRECTED = "planner + own forecast, level-corrected"
CORRECTION_HALF_LIFE_H = 6.0  # fixed a priori (no pre-2023 forecasts to tune it on)
README_BEGIN, README_END = "<!-- evaluation table: begin -->", "<!-- evaluation table: end -->"


@dataclass
class PolicyResult:
    policy: str
    mean_intensity: float
    saving_pct: float
    oracle_share: float | None


def _curve(start: float, step: float, values: np.ndarray) -> Curve:
    starts = start + step * np.arange(len(values))
    return Curve(starts, starts + step, values)


def parse_trigger_hours(text: list[str]) -> list[int]:
    if text == ["all"]:
        return list(range(24))
    try:
        hours = sorted({int(h) for h in text})
    except ValueError:
        raise ValueError(f"--trigger-hours: expected 'all' or hours 0-23, got {' '.join(text)}") from None
    if not hours or hours[0] < 0 or hours[-1] > 23:
        raise ValueError(f"--trigger-hours: expected 'all' or hours 0-23, got {' '.join(text)}")
    return hours


def level_corrected(forecast: np.ndarray, last_actual: np.ndarray, last_forecast: np.ndarray,
                    half_life: float = CORRECTION_HALF_LIFE_H) -> np.ndarray:
    """The provider's forecast shifted by its error on the latest measured hour, the shift fading with
    lead (half-life in slots): (origins, slots) -> (origins, slots)."""
    error = np.nan_to_num(last_actual - last_forecast)
    leads = np.arange(1, forecast.shape[1] + 1)
    return forecast + error[:, None] * 0.5 ** (leads[None, :] / half_life)


def forecast_skill(forecast: np.ndarray, actual: np.ndarray) -> dict[str, list[float | None]]:
    """MAPE (%) and Spearman rank correlation across triggers, per lead hour (1-based in the list order),
    and the mean within-horizon rank correlation (the ordering the planner acts on)."""
    mape, rank = [], []
    for lead in range(forecast.shape[1]):
        f, a = forecast[:, lead], actual[:, lead]
        ok = ~(np.isnan(f) | np.isnan(a)) & (a > 0)
        mape.append(round(float(100 * np.mean(np.abs(f[ok] - a[ok]) / a[ok])), 2) if ok.any() else None)
        rank.append(round(_spearman(f[ok], a[ok]), 3) if ok.sum() > 2 else None)
    ok = ~(np.isnan(forecast).any(axis=1) | np.isnan(actual).any(axis=1))
    within = [_spearman(f, a) for f, a in zip(forecast[ok], actual[ok])]
    return {"mape_pct_by_lead": mape, "rank_corr_by_lead": rank,
            "rank_corr_within_horizon": round(float(np.nanmean(within)), 3) if within else None}


def _spearman(f: np.ndarray, a: np.ndarray) -> float:
    rf, ra = np.argsort(np.argsort(f)), np.argsort(np.argsort(a))
    if rf.std() == 0 or ra.std() == 0:
        return float("nan")
    return float(np.corrcoef(rf, ra)[0, 1])


def evaluate_trace(trace: Trace, job_hours: float, horizon_hours: float = 24.0,
                   model: HistoryModel | None = None,
                   previous: Trace | None = None, trigger_hours: list[int] | None = None,
                   interruptible: Interruptible | None = None) -> dict:
    """Score every policy on ``trace``, triggered every day at each of ``trigger_hours`` (UTC; default
    00:00 only); ``previous`` (the year before, if given) only supplies history for the first weeks'
    forecasts, so every day of the trace can be scored. ``interruptible`` adds the segmented policies."""
    model = model or HistoryModel.load()
    trigger_hours = trigger_hours or [0]
    duration, horizon = job_hours * 3600.0, horizon_hours * 3600.0
    leads = int(np.ceil(horizon_hours))
    valid = ~np.isnan(trace.actual)
    actual = Curve(trace.times()[valid], trace.times()[valid] + trace.step, trace.actual[valid])
    hourly_start, hourly, first_day = _hourly_history(trace, previous)
    days = np.arange(first_day, trace.end, 86400.0)
    origins = np.sort((days[:, None] + 3600.0 * np.array(trigger_hours)[None, :]).ravel())
    origins = origins[origins <= trace.end - horizon]
    # latest hour fully observed at the origin
    hour_index = ((origins - hourly_start) / 3600).astype(int) - 1
    padded = np.concatenate([hourly, np.full(leads + 1, np.nan)])
    truth = padded[hour_index[:, None] + np.arange(1, leads + 1)[None, :]]
    filled = fill_gaps(hourly)  # the baselines get the same gap filling the history model does
    forecasts = {
        "planner + persistence": persistence(filled, hour_index, leads),
        "planner + 7-day mean": weekly_profile(filled, hour_index, leads),
        "planner + history": model.predict_many(hourly, hour_index, leads, hourly_start, trace.region),
    }
    curves = {name: (3600.0, values) for name, values in forecasts.items()}  # planned on, per origin
    if trace.forecast is not None:  # the operator's own forecast, planned on at its own resolution
        _add_own_forecast(trace, origins, hour_index, padded, leads, horizon, forecasts, curves)
    mock = MockProvider(timezone_name=REGION_TIMEZONES.get(trace.region, "UTC"))  # in the grid's local time
    policies, kept = _score_triggers(trace, actual, origins, curves, mock, duration, horizon)
    skill = {name: forecast_skill(values, truth) for name, values in forecasts.items()}
    record = {"trace": Path(trace.path).name, "region": trace.region, "job_hours": job_hours,
              "horizon_hours": horizon_hours, "trigger_hours_utc": list(trigger_hours),
              "days": len(np.unique(np.floor(origins / 86400))), "triggers": len(kept),
              "results": [r.__dict__ for r in _policy_results(policies)], "forecast_skill": skill}
    if interruptible is not None:
        planned = {"planner + mock curve": lambda i: Curve(*mock.forecast(
            datetime.fromtimestamp(origins[i], tz=timezone.utc), timedelta(seconds=horizon)).arrays())}
        for name, (step, values) in curves.items():
            planned[name] = lambda i, step=step, values=values: _curve(origins[i], step, values[i])
        planned["oracle"] = lambda i: actual
        rows, record["interruptible"] = score_interruptible(actual, origins[kept], list(planned.values()),
                                                            list(planned), kept, policies, duration, horizon,
                                                            interruptible)
        record["results"] += rows
    return record


def _hourly_history(trace: Trace, previous: Trace | None) -> tuple[float, np.ndarray, float]:
    """The trace's hourly means (start, values), preceded by ``previous``'s when it ends where the trace
    begins, and the first day that has a full history window before it."""
    hourly_start, hourly = trace.hourly()
    first_day = np.ceil((hourly_start + WINDOW_H * 3600) / 86400) * 86400
    if previous is not None:
        before_start, before = previous.hourly()
        if abs(before_start + 3600 * len(before) - hourly_start) < 1:
            first_day = np.ceil(hourly_start / 86400) * 86400
            hourly_start, hourly = before_start, np.concatenate([before, hourly])
    return hourly_start, hourly, first_day


def _add_own_forecast(trace: Trace, origins: np.ndarray, hour_index: np.ndarray, padded: np.ndarray,
                      leads: int, horizon: float, forecasts: dict, curves: dict) -> None:
    """The trace's own forecast (and its level-corrected version): hourly for the skill scores, at its own
    resolution for planning."""
    _, own = trace.hourly(trace.forecast)
    before_own = np.full(len(padded) - len(own) - leads - 1, np.nan)
    own = np.concatenate([before_own, own, np.full(leads + 1, np.nan)])
    forecasts[OWN] = own[hour_index[:, None] + np.arange(1, leads + 1)[None, :]]
    forecasts[OWN_CORRECTED] = level_corrected(forecasts[OWN], padded[hour_index], own[hour_index])
    slots = int(round(horizon / trace.step))
    first = np.array([trace.index(o) for o in origins])
    raw = np.concatenate([trace.forecast, np.full(slots, np.nan)])
    raw = raw[first[:, None] + np.arange(slots)[None, :]]
    before = np.clip(first - 1, 0, None)
    corrected = level_corrected(raw, trace.actual[before], trace.forecast[before],
                                CORRECTION_HALF_LIFE_H * 3600 / trace.step)
    curves[OWN], curves[OWN_CORRECTED] = (trace.step, raw), (trace.step, corrected)


def _score_triggers(trace: Trace, actual: Curve, origins: np.ndarray, curves: dict, mock: MockProvider,
                    duration: float, horizon: float) -> tuple[dict[str, list[float]], list[int]]:
    """Each policy's realised mean intensity at every trigger that can be scored fairly for all of them
    (no gap in the actuals or a forecast), and the indices of those triggers."""
    zone = mock.zone
    policies: dict[str, list[float]] = {}
    kept = []
    for i, origin in enumerate(origins):
        starts = _policy_starts(trace, actual, i, origin, curves, mock, zone, duration, horizon)
        if starts is None:
            continue
        realised = actual.window_means(np.array(list(starts.values())), duration)
        if np.isnan(realised).any():
            continue
        kept.append(i)
        for name, value in zip(starts, realised):
            policies.setdefault(name, []).append(float(value))
    return policies, kept


def _policy_starts(trace: Trace, actual: Curve, i: int, origin: float, curves: dict, mock: MockProvider,
                   zone: ZoneInfo, duration: float, horizon: float) -> dict[str, float] | None:
    """Where each policy starts the job triggered at ``origin``; None when a forecast has a gap there or
    no window of the actuals is fully measured (the oracle has nothing to choose)."""
    latest = origin + horizon - duration
    starts = {"run_now": origin,
              "fixed 02:00 local": _next_local_hour(origin, FIXED_START_HOUR, zone, latest)}
    starts["threshold 300 g/kWh, 1 h wait"] = _threshold_start(trace, origin)
    moment = datetime.fromtimestamp(origin, tz=timezone.utc)
    mock_points = mock.forecast(moment, timedelta(seconds=horizon)).arrays()
    starts["planner + mock curve"] = best_start(Curve(*mock_points), duration, origin, latest)[0]
    for name, (step, values) in curves.items():
        if np.isnan(values[i]).any():
            return None
        starts[name] = best_start(_curve(origin, step, values[i]), duration, origin, latest)[0]
    try:
        starts["oracle"] = best_start(actual, duration, origin, latest)[0]
    except PlanningError:
        return None
    return starts


def _policy_results(policies: dict[str, list[float]]) -> list[PolicyResult]:
    """Each policy's mean, saving against run-now and share of the oracle's saving."""
    run_now = np.mean(policies["run_now"])
    oracle = np.mean(policies["oracle"])
    rows = []
    for name, values in policies.items():
        mean = float(np.mean(values))
        share = (run_now - mean) / (run_now - oracle) if run_now - oracle > 1e-9 else None
        rows.append(PolicyResult(name, mean, 100.0 * (run_now - mean) / run_now, share))
    return rows


@dataclass(frozen=True)
class Interruptible:
    min_segment_hours: float = 1.0
    resume_cost_minutes: float = 5.0


def score_interruptible(actual: Curve, origins: np.ndarray, planners: list, names: list[str],
                        kept: list[int], contiguous: dict[str, list[float]], duration: float,
                        horizon: float, settings: Interruptible) -> tuple[list[dict], dict]:
    """The interruptible counterpart of each planner policy (see the module docstring): each planner
    maps a trigger's index to the curve it plans on. Triggers where some policy's segments hit a gap in
    the actuals are left out of every interruptible row (and of its run-now and oracle baselines).
    Returns the rows (``mean_segments`` added) and the settings with the number of triggers scored."""
    realised, segment_counts = {}, {}
    for name, planner in zip(names, planners):
        first = planner(kept[0])
        grid = segment_grid(np.concatenate([first.starts, first.ends]), duration, origins[0],
                            origins[0] + horizon, min_segment_s=settings.min_segment_hours * 3600,
                            resume_cost_s=settings.resume_cost_minutes * 60)
        costs = np.array([unit_costs(planner(i), grid.edges(origin)) for i, origin in zip(kept, origins)])
        _, found = cheapest_segments(costs, grid)
        values, counts = [], []
        for origin, units in zip(origins, found):
            edges = grid.edges(origin)
            segments = [(edges[a], edges[b]) for a, b in units]
            area, covered = segments_cost(actual, segments)
            running = sum(b - a for a, b in segments)
            values.append(area / duration if units and covered >= running - 1e-6 else np.nan)
            counts.append(len(units))
        realised[f"{name}, interruptible"], segment_counts[f"{name}, interruptible"] = values, counts
    ok = ~np.isnan(np.array(list(realised.values()))).any(axis=0)
    run_now = float(np.mean(np.array(contiguous["run_now"])[ok]))
    oracle = float(np.mean(np.array(contiguous["oracle"])[ok]))
    rows = []
    for name, values in realised.items():
        mean = float(np.mean(np.array(values)[ok]))
        share = (run_now - mean) / (run_now - oracle) if run_now - oracle > 1e-9 else None
        rows.append({"policy": name, "mean_intensity": mean,
                     "saving_pct": 100.0 * (run_now - mean) / run_now,
                     "oracle_share": share,
                     "mean_segments": float(np.mean(np.array(segment_counts[name])[ok]))})
    return rows, {"min_segment_hours": settings.min_segment_hours,
                  "resume_cost_minutes": settings.resume_cost_minutes, "triggers": int(ok.sum())}


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
        lines.append(f"\n{ev['trace']} ({ev['region']}), job {ev['job_hours']:g} h, "
                     f"horizon {ev['horizon_hours']:g} h, {ev['triggers']} triggers at "
                     f"{_hours_text(ev['trigger_hours_utc'])} UTC over {ev['days']} days")
        width = max([40] + [len(r["policy"]) + 2 for r in ev["results"]])
        lines.append(f"  {'policy':{width}}{'mean g/kWh':>12}{'saving %':>10}{'oracle share':>14}")
        for r in ev["results"]:
            share = f"{r['oracle_share']:.2f}" if r["oracle_share"] is not None else "n/a"
            lines.append(f"  {r['policy']:{width}}{r['mean_intensity']:>12.1f}{r['saving_pct']:>10.1f}"
                         f"{share:>14}")
        lines.append(f"  {'forecast':40}{'MAPE % at lead 1/6/12/24 h':>30}{'rank corr 1/6/12/24 h':>26}"
                     f"{'in-horizon':>12}")
        for name, skill in ev.get("forecast_skill", {}).items():
            mape = "/".join(_num(skill["mape_pct_by_lead"], h, ".1f") for h in (1, 6, 12, 24))
            rank = "/".join(_num(skill["rank_corr_by_lead"], h, ".2f") for h in (1, 6, 12, 24))
            within = _fmt(skill["rank_corr_within_horizon"])
            lines.append(f"  {_short(name):40}{mape:>30}{rank:>26}{within:>12}")
    return "\n".join(lines)


def _num(values: list, lead: int, spec: str) -> str:
    return format(values[lead - 1], spec) if len(values) >= lead and values[lead - 1] is not None else "-"


def _fmt(value: float | None) -> str:
    return f"{value:.2f}" if value is not None else "-"


def _hours_text(hours: list[int]) -> str:
    return "every hour" if len(hours) == 24 else ", ".join(f"{h:02d}:00" for h in hours)


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


# --- regions: where as well as when (``--regions FILE``, ``--all --regions``) -----------------------

REGION_RUN_NOW, TEMPORAL, SPATIAL = "run now (home)", "temporal only", "spatial only"
SPATIO_TEMPORAL, REGION_ORACLE = "spatial + temporal", "oracle (all regions and starts)"
REGION_POLICIES = [REGION_RUN_NOW, TEMPORAL, SPATIAL, SPATIO_TEMPORAL, REGION_ORACLE]


@dataclass
class RegionTrace:
    """A region replayed from a trace: what it plans on is what the DAG's trace provider would use."""
    name: str
    trace: Trace
    previous: Trace | None
    forecast: str = "auto"  # the trace provider's option: auto, file or history
    speed: float = 1.0
    power: float = 1.0


def region_traces_from_file(path: str | Path) -> list[RegionTrace]:
    """The regions file's regions, each replayed from its first ``trace`` provider (relative paths from
    the data folder, ``settings.data_dir``)."""
    from carbon_aware.planning.regions import RegionsError, load_regions
    from carbon_aware.settings import data_dir

    out = []
    for i, region in enumerate(load_regions(path)):
        spec = next((s for s in region.providers if s.get("name") == "trace"), None)
        if spec is None or not spec.get("path"):
            raise RegionsError(f"{path}: regions[{i}].providers: the evaluation replays traces; "
                               f"region {region.name} has no trace provider with a path")
        forecast = spec.get("forecast", "auto")
        if forecast not in ("auto", "file", "history"):
            raise RegionsError(f"{path}: regions[{i}].providers: trace forecast {forecast!r}: "
                               "expected auto, file or history (the oracle is scored separately)")
        trace_path = data_dir() / spec["path"]  # checked to be in the data folder with the file
        out.append(RegionTrace(region.name, load_trace(trace_path, spec.get("signal", "direct")),
                               previous_year(trace_path), forecast, region.speed, region.power))
    return out


def all_region_traces(data_dir: Path) -> list[RegionTrace]:
    """The six Electricity Maps 2023 traces as six regions of equal speed and power."""
    paths = [p for p in all_2023_traces(data_dir) if "_hourly" in p.name]
    if not paths:
        raise SystemExit(f"no Electricity Maps 2023 traces (*2023_hourly.csv) under {data_dir}")
    traces = [load_trace(p) for p in paths]
    return [RegionTrace(t.region, t, previous_year(p)) for p, t in zip(paths, traces)]


def _region_forecasts(region: RegionTrace, origins: np.ndarray, horizon_hours: float,
                      model: HistoryModel) -> tuple[float, np.ndarray]:
    """(slot length, (origins, slots)) forecasts made at each origin, as ``policy_for`` plans on them:
    the trace's own forecast where it has one (or ``forecast: file``), else the history model."""
    trace = region.trace
    if policy_for(trace, region.forecast) == OWN:
        slots = int(round(horizon_hours * 3600 / trace.step))
        first = np.array([trace.index(o) for o in origins])
        raw = np.concatenate([trace.forecast, np.full(slots, np.nan)])
        return trace.step, raw[first[:, None] + np.arange(slots)[None, :]]
    hourly_start, hourly = _with_previous(region)
    hour_index = ((origins - hourly_start) / 3600).astype(int) - 1
    return 3600.0, model.predict_many(hourly, hour_index, int(np.ceil(horizon_hours)), hourly_start,
                                      trace.region)


def _with_previous(region: RegionTrace) -> tuple[float, np.ndarray]:
    hourly_start, hourly = region.trace.hourly()
    if region.previous is not None:
        before_start, before = region.previous.hourly()
        if abs(before_start + 3600 * len(before) - hourly_start) < 1:
            return before_start, np.concatenate([before, hourly])
    return hourly_start, hourly


def _first_origin_day(region: RegionTrace) -> float:
    """The first day every trigger of which has the history (or own forecast) the region plans on."""
    if policy_for(region.trace, region.forecast) == OWN:
        return float(np.ceil(region.trace.start / 86400) * 86400)
    hourly_start, _ = _with_previous(region)
    if hourly_start < region.trace.start:  # the year before supplies the first weeks' history
        return float(np.ceil(region.trace.start / 86400) * 86400)
    return float(np.ceil((hourly_start + WINDOW_H * 3600) / 86400) * 86400)


def _slice(curve: Curve, a: float, b: float) -> Curve:
    """The slots of ``curve`` overlapping [a, b]: best_start on a whole year at every trigger is slow."""
    lo = max(int(np.searchsorted(curve.ends, a, side="right")) - 1, 0)
    hi = int(np.searchsorted(curve.starts, b, side="left")) + 1
    return Curve(curve.starts[lo:hi], curve.ends[lo:hi], curve.values[lo:hi])


def _region_windows(region: RegionTrace, duration: float, origins: np.ndarray, horizon: float,
                    forecast: tuple[float, np.ndarray]) -> dict[str, np.ndarray]:
    """Per origin: the forecast's mean if started now, its best window's forecast and actual means,
    the actual mean if started now, and the oracle's (actuals) best mean. NaN where not scorable."""
    trace = region.trace
    valid = ~np.isnan(trace.actual)
    actual = Curve(trace.times()[valid], trace.times()[valid] + trace.step, trace.actual[valid])
    step, values = forecast
    out = {k: np.full(len(origins), np.nan) for k in ("fc_now", "fc_best", "at_fc_best", "now", "oracle")}
    for i, origin in enumerate(origins):
        latest = origin + horizon - duration
        here = _slice(actual, origin, origin + horizon)
        out["now"][i] = here.window_means(np.array([origin]), duration)[0]
        try:
            out["oracle"][i] = best_start(here, duration, origin, latest)[1]
        except PlanningError:
            pass
        if np.isnan(values[i]).any():
            continue
        planned = _curve(origin, step, values[i])
        out["fc_now"][i] = planned.window_means(np.array([origin]), duration)[0]
        start, out["fc_best"][i] = best_start(planned, duration, origin, latest)
        out["at_fc_best"][i] = here.window_means(np.array([start]), duration)[0]
    return out


def evaluate_regions(regions: list[RegionTrace], job_hours: float, horizon_hours: float = 24.0,
                     model: HistoryModel | None = None, trigger_hours: list[int] | None = None,
                     homes: list[int] | None = None) -> list[dict]:
    """Score the region policies with each of ``homes`` (indices; default: the first) as the home region.
    The job takes ``job_hours`` at home and job_hours x home speed / speed elsewhere; every figure is an
    emissions index, g/kWh x the job's energy there relative to home (power / speed), so run-now at home
    is its mean intensity. Savings are against the home region started at once (actuals); the oracle
    plans every region and start on the actuals. Ties go to the home region, then the listed order."""
    model = model or HistoryModel.load()
    trigger_hours = trigger_hours or [0]
    horizon = horizon_hours * 3600.0
    first = max(_first_origin_day(r) for r in regions)
    end = min(r.trace.end for r in regions)
    days = np.arange(first, end, 86400.0)
    origins = np.sort((days[:, None] + 3600.0 * np.array(trigger_hours)[None, :]).ravel())
    origins = origins[origins <= end - horizon]
    forecasts = [_region_forecasts(r, origins, horizon_hours, model) for r in regions]
    records, cache = [], {}
    for h in homes if homes is not None else [0]:
        home = regions[h]
        order = [h] + [i for i in range(len(regions)) if i != h]
        energy = np.array([(regions[i].power / regions[i].speed) / (home.power / home.speed) for i in order])
        for i in order:
            duration = job_hours * 3600.0 * home.speed / regions[i].speed
            if (i, duration) not in cache:
                cache[i, duration] = _region_windows(regions[i], duration, origins, horizon, forecasts[i])
        windows = [cache[i, job_hours * 3600.0 * home.speed / regions[i].speed] for i in order]
        # (regions, origins): emissions index, g/kWh x the job's energy there relative to home
        table = {k: energy[:, None] * np.array([w[k] for w in windows]) for k in windows[0]}
        ok = ~np.any([np.isnan(v).any(axis=0) for v in table.values()], axis=0)
        table = {k: v[:, ok] for k, v in table.items()}
        columns = np.arange(int(ok.sum()))
        spatial = np.argmin(table["fc_now"], axis=0)  # argmin: the first of equal values (home first)
        both = np.argmin(table["fc_best"], axis=0)
        realised = {REGION_RUN_NOW: table["now"][0], TEMPORAL: table["at_fc_best"][0],
                    SPATIAL: table["now"][spatial, columns],
                    SPATIO_TEMPORAL: table["at_fc_best"][both, columns],
                    REGION_ORACLE: table["oracle"].min(axis=0)}
        chosen = {SPATIAL: spatial, SPATIO_TEMPORAL: both}
        run_now, oracle = float(np.mean(realised[REGION_RUN_NOW])), float(np.mean(realised[REGION_ORACLE]))
        results = []
        for name, values in realised.items():
            mean = float(np.mean(values))
            share = (run_now - mean) / (run_now - oracle) if run_now - oracle > 1e-9 else None
            row = {"policy": name, "mean_intensity": mean, "saving_pct": 100.0 * (run_now - mean) / run_now,
                   "oracle_share": share}
            if name in chosen:
                row["chosen"] = {regions[order[k]].name: int(n) for k, n in
                                 enumerate(np.bincount(chosen[name], minlength=len(order))) if n}
            results.append(row)
        records.append({"kind": "regions", "home": home.name, "regions": [regions[i].name for i in order],
                        "traces": [Path(regions[i].trace.path).name for i in order],
                        "forecasts": {r.name: _short(policy_for(r.trace, r.forecast))
                                      for r in (regions[i] for i in order)},
                        "job_hours": job_hours, "horizon_hours": horizon_hours,
                        "trigger_hours_utc": list(trigger_hours),
                        "days": len(np.unique(np.floor(origins / 86400))), "triggers": int(ok.sum()),
                        "results": results})
    return records


def format_regions_table(records: list[dict]) -> str:
    """Per job length: each policy's mean over the homes, then saving % / oracle share per home."""
    lines = []
    policies = [p for p in REGION_POLICIES if p != REGION_RUN_NOW]
    for hours in sorted({r["job_hours"] for r in records}):
        group = [r for r in records if r["job_hours"] == hours]
        first = group[0]
        lines.append(f"\nregions {', '.join(first['regions'])}: job {hours:g} h (at home), horizon "
                     f"{first['horizon_hours']:g} h, {first['triggers']} triggers at "
                     f"{_hours_text(first['trigger_hours_utc'])} UTC over {first['days']} days; "
                     f"mean over {len(group)} home region(s)")
        lines.append(f"  {'policy':34}{'emissions g/kWh-eq':>20}{'saving %':>10}{'oracle share':>14}")
        for policy in REGION_POLICIES:
            rows = [next(x for x in r["results"] if x["policy"] == policy) for r in group]
            shares = [x["oracle_share"] for x in rows if x["oracle_share"] is not None]
            share = f"{np.mean(shares):.2f}" if shares else "n/a"
            lines.append(f"  {policy:34}{np.mean([x['mean_intensity'] for x in rows]):>20.1f}"
                         f"{np.mean([x['saving_pct'] for x in rows]):>10.1f}{share:>14}")
        lines.append(f"  {'home: saving % / share':22}"
                     + "".join(f"{_short_region(p):>20}" for p in policies))
        for r in group:
            cells = {x["policy"]: x for x in r["results"]}
            lines.append(f"  {r['home']:22}" + "".join(
                f"{cells[p]['saving_pct']:>12.1f} / {_fmt(cells[p]['oracle_share']):>5}" for p in policies))
    return "\n".join(lines)


def _short_region(policy: str) -> str:
    return "oracle" if policy == REGION_ORACLE else policy


def regions_main(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """``--regions FILE`` (its first region is home) or ``--all --regions`` (each trace in turn home)."""
    if args.all == bool(args.regions) or args.trace:
        parser.error("give --regions FILE, or --all --regions (the Electricity Maps 2023 traces), "
                     "and no --trace")
    try:
        trigger_hours = parse_trigger_hours(args.trigger_hours)
        regions = (all_region_traces(Path(args.data_dir)) if args.all
                   else region_traces_from_file(args.regions))
    except (ValueError, OSError) as error:  # RegionsError and ForecastError (trace files) are ValueErrors
        raise SystemExit(f"error: {error}") from None
    model = HistoryModel.load(args.model) if args.model else HistoryModel.load()
    homes = list(range(len(regions))) if args.all else [0]
    began = time.perf_counter()
    records = [record for hours in args.job_hours for record in
               evaluate_regions(regions, hours, args.horizon_hours, model, trigger_hours, homes)]
    print(format_regions_table(records), f"\n  ({time.perf_counter() - began:.2f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps(records, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m carbon_aware.evaluation", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trace", action="append", default=[], help="a trace CSV (repeatable)")
    parser.add_argument("--all", action="store_true", help="every 2023 trace under --data-dir")
    parser.add_argument("--data-dir", default=str(settings.data_dir() / "carbon"),
                        help="the folder of trace CSVs (default: carbon/ in CARBON_DATA_DIR)")
    parser.add_argument("--job-hours", type=float, nargs="+", default=[1.0, 4.0])
    parser.add_argument("--horizon-hours", type=float, default=24.0)
    parser.add_argument("--trigger-hours", nargs="+", default=["0"],
                        help="UTC hours the job is triggered each day, or 'all' (default: 0)")
    parser.add_argument("--model", help="a history model file (default: the shipped one)")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--update-readme", metavar="README", help="rewrite the table between the markers")
    parser.add_argument("--regions", nargs="?", const="", metavar="FILE",
                        help="score where as well as when: a regions file (its first region is home), or "
                             "with --all and no FILE the Electricity Maps 2023 traces, each in turn home")
    add_interruptible_arguments(parser)
    args = parser.parse_args(argv)
    if args.regions is not None:
        return regions_main(args, parser)
    paths = [Path(p) for p in args.trace] + (all_2023_traces(Path(args.data_dir)) if args.all else [])
    if not paths:
        parser.error("give --trace PATH or --all")
    try:
        trigger_hours = parse_trigger_hours(args.trigger_hours)
    except ValueError as error:
        parser.error(str(error))
    model = HistoryModel.load(args.model) if args.model else HistoryModel.load()
    segmented = interruptible_settings(parser, args)
    evaluations = []
    for path in paths:
        began = time.perf_counter()
        trace = load_trace(path)
        previous = previous_year(path)
        for hours in args.job_hours:
            evaluations.append(evaluate_trace(trace, hours, args.horizon_hours, model, previous,
                                              trigger_hours, interruptible=segmented))
        evaluations[-1]["seconds"] = time.perf_counter() - began
        print(format_table(evaluations[-len(args.job_hours):]), f"\n  ({time.perf_counter() - began:.2f} s)")
    print(format_summary(evaluations))
    if segmented is not None:
        print(format_interruptible_summary(evaluations))
    if args.json:
        Path(args.json).write_text(json.dumps(evaluations, indent=2))
    if args.update_readme:
        given = argv if argv is not None else sys.argv[1:]
        kept = [a for i, a in enumerate(given) if a != "--json" and (i == 0 or given[i - 1] != "--json")]
        command = "python -m carbon_aware.evaluation " + " ".join(kept)  # --json only names a side file
        update_readme(Path(args.update_readme), markdown_table(evaluations, command))
    return 0


def add_interruptible_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--interruptible", action="store_true",
                        help="also score each planner policy and the oracle as an interruptible job")
    parser.add_argument("--min-segment-hours", type=float, default=1.0,
                        help="interruptible: shortest segment of work (default 1)")
    parser.add_argument("--resume-cost-minutes", type=float, default=5.0,
                        help="interruptible: overhead re-run at each resume (default 5)")


def interruptible_settings(parser: argparse.ArgumentParser,
                           args: argparse.Namespace) -> Interruptible | None:
    if args.min_segment_hours <= 0:
        parser.error(f"--min-segment-hours: expected a positive number of hours, "
                     f"got {args.min_segment_hours:g}")
    if args.resume_cost_minutes < 0:
        parser.error(f"--resume-cost-minutes: expected 0 or more minutes, got {args.resume_cost_minutes:g}")
    return Interruptible(args.min_segment_hours, args.resume_cost_minutes) if args.interruptible else None


def format_interruptible_summary(evaluations: list[dict]) -> str:
    """Saving % of run-now, contiguous vs interruptible, and the gain in percentage points, per trace and
    job length, for the forecast-driven policies and the oracle; then the mean over the traces."""
    policies = [p for p in _present(SUMMARY_POLICIES + ["oracle"], evaluations)
                if _present([f"{p}, interruptible"], evaluations)]
    if not policies:
        return ""
    settings = next(ev["interruptible"] for ev in evaluations if "interruptible" in ev)
    lines = [f"\ninterruptible vs contiguous: saving % of running at once, contiguous -> interruptible "
             f"(gain in pp); segments of at least {settings['min_segment_hours']:g} h, "
             f"{settings['resume_cost_minutes']:g} min per resume",
             f"  {'trace':34}{'job h':>6}" + "".join(f"{_short(p):>30}" for p in policies)]
    gains: dict[tuple[float, str], list[float]] = {}
    for ev in evaluations:
        saving = {r["policy"]: r["saving_pct"] for r in ev["results"]}
        cells = ""
        for p in policies:
            if p in saving and f"{p}, interruptible" in saving:
                gain = saving[f"{p}, interruptible"] - saving[p]
                gains.setdefault((ev["job_hours"], p), []).append(gain)
                cell = f"{saving[p]:.1f} -> {saving[f'{p}, interruptible']:.1f} ({gain:+.1f})"
            else:
                cell = "-"
            cells += f"{cell:>30}"
        lines.append(f"  {ev['trace']:34}{ev['job_hours']:>6g}{cells}")
    for hours in sorted({ev["job_hours"] for ev in evaluations}):
        cells = "".join(f"{np.mean(gains[(hours, p)]):>+30.1f}" if (hours, p) in gains else f"{'-':>30}"
                        for p in policies)
        lines.append(f"  {'mean gain over traces (pp)':34}{hours:>6g}{cells}")
    return "\n".join(lines)


def _short(policy: str) -> str:
    return policy.replace("planner + ", "").replace("the trace's ", "").replace("trace's ", "")


SUMMARY_POLICIES = ["planner + mock curve", "planner + persistence", "planner + 7-day mean",
                    "planner + history",
                    OWN, OWN_CORRECTED]


def _present(policies: list[str], evaluations: list[dict]) -> list[str]:
    return [p for p in policies if any(r["policy"] == p for ev in evaluations for r in ev["results"])]


def zone_summary(evaluations: list[dict], policy: str, job_hours: float) -> dict | None:
    """Mean over the Electricity Maps zones (the same signal on six grids) and the worst zone."""
    rows = [(ev["region"], r) for ev in evaluations
            if ev["job_hours"] == job_hours and "_hourly" in ev["trace"]
            for r in ev["results"] if r["policy"] == policy and r["oracle_share"] is not None]
    if not rows:
        return None
    worst = min(rows, key=lambda row: row[1]["oracle_share"])
    return {"zones": len(rows), "mean_share": float(np.mean([r["oracle_share"] for _, r in rows])),
            "mean_saving_pct": float(np.mean([r["saving_pct"] for _, r in rows])),
            "worst_zone": worst[0], "worst_share": worst[1]["oracle_share"]}


def format_summary(evaluations: list[dict]) -> str:
    """Oracle share per trace and job length for the forecast-driven policies; mean and worst zone."""
    policies = _present(SUMMARY_POLICIES, evaluations)
    lines = ["\noracle share captured (1.00 = all of the oracle's saving), pooled over every trigger",
             f"  {'trace':34}{'job h':>6}" + "".join(f"{_short(p):>30}" for p in policies)]
    for ev in evaluations:
        shares = {r["policy"]: r["oracle_share"] for r in ev["results"]}
        cells = "".join(f"{shares[p]:>30.2f}" if shares.get(p) is not None else f"{'-':>30}"
                        for p in policies)
        lines.append(f"  {ev['trace']:34}{ev['job_hours']:>6g}{cells}")
    for hours in sorted({ev["job_hours"] for ev in evaluations}):
        summaries = [zone_summary(evaluations, p, hours) for p in policies]
        if not any(summaries):
            continue
        for label, cell in (("mean over zones: share", lambda z: f"{z['mean_share']:.2f}"),
                            ("mean over zones: saving %", lambda z: f"{z['mean_saving_pct']:.1f}"),
                            ("worst zone: share", lambda z: f"{z['worst_zone']} {z['worst_share']:.2f}")):
            lines.append(f"  {label:34}{hours:>6g}"
                         + "".join(f"{cell(z) if z else '-':>30}" for z in summaries))
    return "\n".join(lines)


def markdown_table(evaluations: list[dict], command: str) -> str:
    """The README's table: share per zone (1 h / 4 h job), the zones' mean and worst, the mean saving."""
    policies = _present(SUMMARY_POLICIES, evaluations)
    jobs = sorted({ev["job_hours"] for ev in evaluations})
    triggers = _hours_text(evaluations[0]["trigger_hours_utc"])
    lines = [f"Generated by `{command}` (triggers at {triggers} UTC; cells: "
             + " / ".join(f"{h:g} h" for h in jobs) + " job).", "",
             "| trace | " + " | ".join(_short(p) for p in policies) + " |",
             "|---|" + "---|" * len(policies)]
    by_trace: dict[str, dict[float, dict]] = {}
    for ev in evaluations:
        by_trace.setdefault(f"{ev['region']} ({ev['trace']})", {})[ev["job_hours"]] = ev
    for label, runs in by_trace.items():
        cells = []
        for p in policies:
            shares = [next((r["oracle_share"] for r in runs[h]["results"] if r["policy"] == p), None)
                      if h in runs else None for h in jobs]
            cells.append(" / ".join(_signed(v, ".2f") if v is not None else "–" for v in shares))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    for label, key in (("**mean over zones**", "mean_share"),
                       ("mean saving % of run-now", "mean_saving_pct"),
                       ("worst zone", "worst_share")):
        cells = []
        for p in policies:
            summaries = [zone_summary(evaluations, p, h) for h in jobs]
            if not all(summaries):
                cells.append("–")
            elif key == "worst_share":
                cells.append(" / ".join(f"{z['worst_zone']} {_signed(z[key], '.2f')}" for z in summaries))
            else:
                spec = ".1f" if "saving" in key else ".2f"
                cells.append(" / ".join(_signed(z[key], spec) for z in summaries))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _signed(value: float, spec: str) -> str:
    return format(value, spec).replace("-", "−")


def update_readme(path: Path, table: str) -> None:
    text = path.read_text()
    if README_BEGIN not in text or README_END not in text:
        raise SystemExit(f"{path}: markers {README_BEGIN} and {README_END} not found")
    head, rest = text.split(README_BEGIN, 1)
    _, tail = rest.split(README_END, 1)
    path.write_text(f"{head}{README_BEGIN}\n{table}\n{README_END}{tail}")


if __name__ == "__main__":
    sys.exit(main())
