"""The one place a start time is chosen: the window of the job's length with the lowest
time-weighted mean intensity that starts no earlier than now and ends by the deadline.

Intensity is piecewise constant over the forecast's slots, so the window integral is piecewise
linear in the start time and its minimum lies where the window's start or end meets a slot
boundary: those are the only candidates, and partial slots are weighted by their overlap.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

import numpy as np

from carbon_aware.forecast import Forecast, ForecastError, IntensityPoint, points_to_arrays

Mode = Literal["window", "threshold"]
_TIE = 1e-9  # g/kWh: means closer than this count as equal, and the earlier start wins


class PlanningError(ValueError):
    pass


class Curve:
    """Cumulative integral and coverage of a piecewise-constant curve, evaluated at many times at once."""

    def __init__(self, starts: np.ndarray, ends: np.ndarray, values: np.ndarray):
        self.starts, self.ends, self.values = starts, ends, values
        lengths = ends - starts
        self._area = np.concatenate([[0.0], np.cumsum(values * lengths)])
        self._covered = np.concatenate([[0.0], np.cumsum(lengths)])

    def cumulative(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        k = np.searchsorted(self.starts, t, side="right") - 1
        inside = k >= 0
        kk = np.clip(k, 0, None)
        overlap = np.where(inside, np.clip(t - self.starts[kk], 0.0, self.ends[kk] - self.starts[kk]), 0.0)
        area = np.where(inside, self._area[kk] + self.values[kk] * overlap, 0.0)
        covered = np.where(inside, self._covered[kk] + overlap, 0.0)
        return area, covered

    def window_means(self, starts: np.ndarray, duration: float) -> np.ndarray:
        """Mean over [s, s + duration] for each s; NaN where the curve has a gap inside the window."""
        area0, cov0 = self.cumulative(starts)
        area1, cov1 = self.cumulative(starts + duration)
        means = (area1 - area0) / duration
        return np.where(cov1 - cov0 >= duration - 1e-6, means, np.nan)


def best_start(curve: Curve, duration: float, earliest: float, latest_start: float) -> tuple[float, float]:
    """(start, mean) of the lowest-mean window starting in [earliest, latest_start]; ties go to the earliest."""
    boundaries = np.concatenate([curve.starts, curve.ends])
    candidates = np.concatenate([[earliest, latest_start], boundaries, boundaries - duration])
    candidates = np.unique(candidates[(candidates >= earliest) & (candidates <= latest_start)])
    means = curve.window_means(candidates, duration)
    if np.all(np.isnan(means)):
        raise PlanningError("no window of the job's length is fully covered by the forecast before the deadline")
    best = np.nanmin(means)
    index = int(np.argmax(means <= best + _TIE))  # first (earliest) candidate within the tie tolerance
    return float(candidates[index]), float(means[index])


@dataclass
class Plan:
    mode: str
    source: str
    region: str | None
    planned_at: str
    earliest_start: str
    deadline: str
    duration_hours: float
    start: str
    end: str
    mean_intensity: float
    run_now_start: str
    run_now_mean_intensity: float
    expected_saving_pct: float
    reason: str
    threshold: float | None = None
    fallback_reasons: list[str] = field(default_factory=list)
    curve: list[dict[str, Any]] = field(default_factory=list)
    replans: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def start_time(self) -> datetime:
        return datetime.fromisoformat(self.start)

    def summary_line(self) -> str:
        start, deadline = self.start_time, datetime.fromisoformat(self.deadline)
        return (f"Now {self.run_now_mean_intensity:.0f} g/kWh; best {_hours(self.duration_hours)} window starts "
                f"{start:%Y-%m-%d %H:%M} UTC at {self.mean_intensity:.0f} g/kWh ({_signed_pct(-self.expected_saving_pct)}); "
                f"deadline {deadline:%Y-%m-%d %H:%M} UTC; source {self.source}")


def _signed_pct(value: float) -> str:
    return "±0%" if round(value) == 0 else f"{value:+.0f}%".replace("-", "−")


def _hours(hours: float) -> str:
    return f"{hours:g} h" if hours >= 1 else f"{hours * 60:g} min"


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=timezone.utc).isoformat()


def plan_window(forecast: Forecast, duration: timedelta, earliest_start: datetime, deadline: datetime, *,
                mode: Mode = "window", threshold: float | None = None, cost_points: list[IntensityPoint] | None = None,
                fallback_reasons: list[str] | None = None, planned_at: datetime | None = None) -> Plan:
    """Choose the start. ``deadline`` is the latest *finish*. ``cost_points`` (optional) replaces the
    intensity as the objective, e.g. :func:`composite_cost`; the reported intensities stay g/kWh."""
    if duration <= timedelta(0):
        raise PlanningError(f"duration must be positive, got {duration}")
    if earliest_start.tzinfo is None or deadline.tzinfo is None:
        raise PlanningError("earliest_start and deadline must be timezone-aware")
    if earliest_start + duration > deadline:
        raise PlanningError(f"the job ({duration}) cannot finish by the deadline {deadline.isoformat()} "
                            f"when starting at {earliest_start.isoformat()}")
    forecast.require_coverage(earliest_start, earliest_start + duration)
    if mode == "threshold" and threshold is None:
        raise PlanningError("threshold mode needs a threshold (g/kWh)")

    intensity = Curve(*forecast.arrays())
    objective = Curve(*points_to_arrays(cost_points)) if cost_points else intensity
    seconds = duration.total_seconds()
    earliest = earliest_start.timestamp()
    latest_start = min(deadline.timestamp(), float(intensity.ends[-1])) - seconds
    run_now_mean = float(intensity.window_means(np.array([earliest]), seconds)[0])
    if np.isnan(run_now_mean):
        raise ForecastError(f"{forecast.source}: forecast has a gap in the run-now window")

    start = None
    if mode == "threshold":
        start, reason = _first_below(intensity, threshold, earliest, latest_start)
    if start is None:
        start, _ = best_start(objective, seconds, earliest, latest_start)
        reason = ("lowest mean cost (carbon price x emissions + electricity price)" if cost_points
                  else "lowest mean intensity before the deadline")
        if mode == "threshold":
            reason = f"no slot below {threshold:g} g/kWh before the deadline; " + reason
    mean = float(intensity.window_means(np.array([start]), seconds)[0])

    curve_from, curve_to = earliest_start - timedelta(hours=1), max(deadline, datetime.fromtimestamp(start + seconds, tz=timezone.utc))
    return Plan(
        mode=mode, source=forecast.source, region=forecast.region,
        planned_at=(planned_at or datetime.now(timezone.utc)).isoformat(),
        earliest_start=earliest_start.isoformat(), deadline=deadline.isoformat(), duration_hours=seconds / 3600,
        start=_iso(start), end=_iso(start + seconds), mean_intensity=mean,
        run_now_start=earliest_start.isoformat(), run_now_mean_intensity=run_now_mean,
        expected_saving_pct=100.0 * (run_now_mean - mean) / run_now_mean if run_now_mean > 0 else 0.0,
        reason=reason, threshold=threshold, fallback_reasons=list(fallback_reasons or []),
        curve=[p.to_dict() for p in forecast.points if p.end > curve_from and p.start < curve_to],
    )


def _first_below(curve: Curve, threshold: float, earliest: float, latest_start: float) -> tuple[float | None, str]:
    """The original pipeline's rule: start in the first slot below the threshold (never past the deadline)."""
    for slot_start, slot_end, value in zip(curve.starts, curve.ends, curve.values):
        start = max(slot_start, earliest)
        if slot_end <= earliest or value >= threshold:
            continue
        if start > latest_start:
            break
        return float(start), f"first slot below {threshold:g} g/kWh ({value:.0f})"
    return None, ""


def composite_cost(intensity: list[IntensityPoint], price: list[IntensityPoint], carbon_price_per_tonne: float) -> list[IntensityPoint]:
    """Cost per kWh = electricity price + carbon price x intensity, on the intensity's slots.

    ``price`` is currency/kWh on its own slots (time-weighted onto ours); carbon price is currency/tCO2."""
    price_curve = Curve(*points_to_arrays(price))
    starts, ends, values = points_to_arrays(intensity)
    area0, cov0 = price_curve.cumulative(starts)
    area1, cov1 = price_curve.cumulative(ends)
    if np.any(cov1 - cov0 < (ends - starts) - 1e-6):
        raise PlanningError("the electricity price curve does not cover the intensity forecast")
    mean_price = (area1 - area0) / (ends - starts)
    per_gram = carbon_price_per_tonne / 1e6
    return [IntensityPoint(p.start, p.duration, float(mean_price[i] + per_gram * values[i])) for i, p in enumerate(intensity)]
