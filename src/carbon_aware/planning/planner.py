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

from carbon_aware.grid.forecast import Forecast, ForecastError, IntensityPoint, points_to_arrays

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
    """(start, mean) of the lowest-mean window starting in [earliest, latest_start]; ties go to the
    earliest."""
    boundaries = np.concatenate([curve.starts, curve.ends])
    candidates = np.concatenate([[earliest, latest_start], boundaries, boundaries - duration])
    candidates = np.unique(candidates[(candidates >= earliest) & (candidates <= latest_start)])
    means = curve.window_means(candidates, duration)
    if np.all(np.isnan(means)):
        raise PlanningError("no window of the job's length is fully covered by the forecast "
                            "before the deadline")
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
    interruptible: bool = False
    # [{"start": iso, "end": iso, "mean_intensity": g/kWh}]: one per stretch of running (a contiguous plan
    # has one, its window); an interruptible plan's later segments include their resume overhead.
    segments: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def start_time(self) -> datetime:
        return datetime.fromisoformat(self.start)

    def summary_line(self, trace_offset: timedelta | None = None) -> str:
        """One line; with ``trace_offset`` (a replayed trace: trace time - grid time) each grid time is
        followed by the trace's own time."""
        start, deadline = self.start_time, datetime.fromisoformat(self.deadline)

        def at(moment: datetime) -> str:
            return f"{moment:%Y-%m-%d %H:%M} UTC" + (
                f" (trace {moment + trace_offset:%Y-%m-%d %H:%M})" if trace_offset else "")

        if len(self.segments) > 1:
            return (f"Now {self.run_now_mean_intensity:.0f} g/kWh; best {_hours(self.duration_hours)} in "
                    f"{len(self.segments)} segments from {at(start)} to "
                    f"{at(datetime.fromisoformat(self.end))} at "
                    f"{self.mean_intensity:.0f} g/kWh "
                    f"({_signed_pct(-self.expected_saving_pct)}); deadline {at(deadline)}; "
                    f"source {self.source}")
        return (f"Now {self.run_now_mean_intensity:.0f} g/kWh; "
                f"best {_hours(self.duration_hours)} window starts "
                f"{at(start)} at {self.mean_intensity:.0f} g/kWh "
                f"({_signed_pct(-self.expected_saving_pct)}); "
                f"deadline {at(deadline)}; source {self.source}")


def _signed_pct(value: float) -> str:
    return "±0%" if round(value) == 0 else f"{value:+.0f}%".replace("-", "−")


def _hours(hours: float) -> str:
    return f"{hours:g} h" if hours >= 1 else f"{hours * 60:g} min"


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=timezone.utc).isoformat()


def _check_fits(forecast: Forecast, duration: timedelta, earliest_start: datetime,
                deadline: datetime) -> None:
    """The job fits between ``earliest_start`` and ``deadline`` and the forecast covers its first run."""
    if earliest_start.tzinfo is None or deadline.tzinfo is None:
        raise PlanningError("earliest_start and deadline must be timezone-aware")
    if earliest_start + duration > deadline:
        raise PlanningError(f"the job ({duration}) cannot finish by the deadline {deadline.isoformat()} "
                            f"when starting at {earliest_start.isoformat()}")
    forecast.require_coverage(earliest_start, earliest_start + duration)


def plan_window(forecast: Forecast, duration: timedelta, earliest_start: datetime, deadline: datetime, *,
                mode: Mode = "window", threshold: float | None = None,
                cost_points: list[IntensityPoint] | None = None,
                fallback_reasons: list[str] | None = None, planned_at: datetime | None = None,
                interruptible: bool = False, min_segment: timedelta = timedelta(minutes=30),
                resume_cost: timedelta = timedelta(minutes=5)) -> Plan:
    """Choose the start. ``deadline`` is the latest *finish*. ``cost_points`` (optional) replaces the
    intensity as the objective, e.g. :func:`composite_cost`; the reported intensities stay g/kWh.
    ``interruptible=True`` hands over to :func:`plan_segments` (window mode only)."""
    if interruptible:
        if mode != "window":
            raise PlanningError(f"interruptible plans choose segments in window mode, got mode {mode!r}")
        return plan_segments(forecast, duration, earliest_start, deadline, min_segment=min_segment,
                             resume_cost=resume_cost, cost_points=cost_points,
                             fallback_reasons=fallback_reasons, planned_at=planned_at)
    if duration <= timedelta(0):
        raise PlanningError(f"duration must be positive, got {duration}")
    _check_fits(forecast, duration, earliest_start, deadline)
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

    curve_from, curve_to = (earliest_start - timedelta(hours=1),
                            max(deadline, datetime.fromtimestamp(start + seconds, tz=timezone.utc)))
    return Plan(
        mode=mode, source=forecast.source, region=forecast.region,
        planned_at=(planned_at or datetime.now(timezone.utc)).isoformat(),
        earliest_start=earliest_start.isoformat(), deadline=deadline.isoformat(),
        duration_hours=seconds / 3600, start=_iso(start), end=_iso(start + seconds), mean_intensity=mean,
        run_now_start=earliest_start.isoformat(), run_now_mean_intensity=run_now_mean,
        expected_saving_pct=100.0 * (run_now_mean - mean) / run_now_mean if run_now_mean > 0 else 0.0,
        reason=reason, threshold=threshold, fallback_reasons=list(fallback_reasons or []),
        curve=[p.to_dict() for p in forecast.points if p.end > curve_from and p.start < curve_to],
        segments=[{"start": _iso(start), "end": _iso(start + seconds), "mean_intensity": mean}],
    )


def _first_below(curve: Curve, threshold: float, earliest: float,
                 latest_start: float) -> tuple[float | None, str]:
    """The original pipeline's rule: start in the first slot below the threshold (never past the
    deadline)."""
    for slot_start, slot_end, value in zip(curve.starts, curve.ends, curve.values):
        start = max(slot_start, earliest)
        if slot_end <= earliest or value >= threshold:
            continue
        if start > latest_start:
            break
        return float(start), f"first slot below {threshold:g} g/kWh ({value:.0f})"
    return None, ""


def composite_cost(intensity: list[IntensityPoint], price: list[IntensityPoint],
                   carbon_price_per_tonne: float) -> list[IntensityPoint]:
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
    return [IntensityPoint(p.start, p.duration, float(mean_price[i] + per_gram * values[i]))
            for i, p in enumerate(intensity)]


# --- Interruptible jobs: the cheapest set of segments instead of one window ----------------------------
#
# Time is cut into units of ``step`` seconds from ``earliest`` (rounded up to a whole minute) to
# ``latest_end``; ``step`` is the largest whole number of minutes that divides the job, the minimum
# segment, the resume cost and every slot boundary's offset from ``earliest``, so a unit never straddles
# a slot boundary and the DP is exact for piecewise-constant curves (a partial slot at ``earliest`` is
# simply fewer units of that slot). A unit's cost is the curve's integral over it (g/kWh x s); a unit
# the curve does not cover costs infinity. A plan is a set of segments of whole units:
#   * the first segment runs >= ``min_units`` units of work (all of the job when it is shorter);
#   * every later segment first re-runs ``resume_units`` units of overhead (reload, warm-up), which do no
#     work but draw power, priced at the intensity where that segment restarts, then >= ``min_units``
#     units of work; so the segments' total time is the job plus one resume cost per resume;
#   * the work adds up to the job exactly, everything inside [earliest, latest_end].
# The objective is the sum of the units' costs (emissions up to the job's power). Ties go to the plan that
# finishes earliest, then to the one whose earlier segments end earliest (deterministic either way).


@dataclass(frozen=True)
class SegmentGrid:
    earliest: float  # seconds, the first unit's start
    step: float  # seconds per unit
    units: int  # units before latest_end
    work: int  # units of work (the job)
    min_units: int  # work units per segment at least
    resume_units: int  # overhead units per resume

    def edges(self, origin: float | None = None) -> np.ndarray:
        start = self.earliest if origin is None else origin
        return start + self.step * np.arange(self.units + 1)


def _minutes(seconds: float, what: str) -> int:
    minutes = int(np.ceil(seconds / 60.0 - 1e-9))
    if minutes < 0:
        raise PlanningError(f"{what} must not be negative, got {seconds} s")
    return minutes


def segment_grid(boundaries: np.ndarray, duration_s: float, earliest: float, latest_end: float, *,
                 min_segment_s: float, resume_cost_s: float) -> SegmentGrid:
    """The unit grid for :func:`cheapest_segments` (see the comment above); ``boundaries`` are the
    curve's slot edges (seconds). Raises :class:`PlanningError` when the job cannot fit."""
    if duration_s <= 0:
        raise PlanningError(f"duration must be positive, got {duration_s} s")
    if min_segment_s <= 0:
        raise PlanningError(f"min_segment must be positive, got {min_segment_s} s")
    job, minimum, resume = (_minutes(duration_s, "duration"), _minutes(min_segment_s, "min_segment"),
                            _minutes(resume_cost_s, "resume_cost"))
    first = int(np.ceil(earliest / 60.0 - 1e-9))
    span = int(np.floor(latest_end / 60.0 + 1e-9)) - first
    if span < job:
        raise PlanningError(f"the job ({job} min) does not fit between the earliest start and the deadline "
                            f"({max(span, 0)} min)")
    offsets = np.asarray(boundaries, dtype=float) / 60.0 - first
    offsets = offsets[(offsets > 0) & (offsets < span)]
    whole = np.round(offsets)
    step = np.gcd.reduce(np.array([job, minimum, resume, span] + [int(w) for w in whole[
        np.abs(offsets - whole) < 1e-6]], dtype=np.int64))
    return SegmentGrid(earliest=first * 60.0, step=60.0 * step, units=span // step, work=job // step,
                       min_units=min(-(-minimum // step), job // step), resume_units=resume // step)


def unit_costs(curve: Curve, edges: np.ndarray) -> np.ndarray:
    """The curve's integral over each unit between ``edges``; infinity where it does not cover the unit."""
    area, covered = curve.cumulative(np.asarray(edges, dtype=float))
    cost = np.diff(area)
    return np.where(np.diff(covered) >= np.diff(edges) - 1e-6, cost, np.inf)


def cheapest_segments(costs: np.ndarray, grid: SegmentGrid, *,
                      max_cells: int = 8_000_000) -> tuple[np.ndarray, list[list[tuple[int, int]]]]:
    """Exact DP over units for a batch of cost rows (B, units): the best total per row (inf where no plan
    fits) and each row's segments as [first unit, end unit) pairs, overhead included."""
    costs = np.atleast_2d(np.asarray(costs, dtype=float))
    batch = max(1, max_cells // ((grid.units + 1) * (grid.work + 1)))
    totals, segments = [], []
    for at in range(0, len(costs), batch):
        total, found = _segments_dp(costs[at:at + batch], grid)
        totals.append(total)
        segments.extend(found)
    return np.concatenate(totals), segments


def _segments_dp(costs: np.ndarray, grid: SegmentGrid) -> tuple[np.ndarray, list[list[tuple[int, int]]]]:
    rows, n = costs.shape
    work, m, r = grid.work, grid.min_units, grid.resume_units
    bad = ~np.isfinite(costs)
    prefix = np.concatenate([np.zeros((rows, 1)), np.cumsum(np.where(bad, 0.0, costs), axis=1)], axis=1)
    holes = np.concatenate([np.zeros((rows, 1)), np.cumsum(bad, axis=1)], axis=1)

    def block(a: int, b: int) -> np.ndarray:  # cost of units [a, b) per row
        return np.where(holes[:, b] - holes[:, a] > 0, np.inf, prefix[:, b] - prefix[:, a])

    idle = np.full((n + 1, rows, work + 1), np.inf)  # best cost, k units of work done, not running at t
    idle[:, :, 0] = 0.0
    run_from = np.full((n + 1, rows, work + 1), -1, dtype=np.int8)  # 0 extend, 1 first start, 2 resume
    idle_from_run = np.zeros((n + 1, rows, work + 1), dtype=bool)
    run = np.full((rows, work + 1), np.inf)  # best cost, running at t with the segment's minimum done
    done = np.full((n + 1, rows), np.inf)  # best cost of the whole job finishing at t
    for t in range(1, n + 1):
        options = np.full((3, rows, work + 1), np.inf)
        options[0, :, 1:] = run[:, :-1] + costs[:, t - 1:t]
        if t >= m:
            options[1, :, m] = block(t - m, t)
        if t >= m + r and work > m:
            options[2, :, m + 1:] = idle[t - m - r, :, 1:work - m + 1] + block(t - m - r, t)[:, None]
        choice = np.argmin(options, axis=0)  # ties: extend, then first start, then resume
        run = np.take_along_axis(options, choice[None], axis=0)[0]
        run_from[t] = np.where(np.isfinite(run), choice, -1)
        done[t] = run[:, work]
        better = run < idle[t - 1]  # ties keep the earlier-finished work
        idle[t] = np.where(better, run, idle[t - 1])
        idle_from_run[t] = better
        idle[t, :, 0] = 0.0
        idle_from_run[t, :, 0] = False
    totals = done.min(axis=0)
    found = []
    for row in range(rows):
        if not np.isfinite(totals[row]):
            found.append([])
            continue
        tolerance = 1e-9 * max(1.0, abs(totals[row]))
        end = int(np.argmax(done[:, row] <= totals[row] + tolerance))  # the earliest finish among the best
        found.append(_walk_back(run_from[:, row], idle_from_run[:, row], end, work, m, r))
    return totals, found


def _walk_back(run_from: np.ndarray, idle_from_run: np.ndarray, t: int, k: int, m: int,
               r: int) -> list[tuple[int, int]]:
    """The segments of the plan whose last segment ends at unit ``t`` with ``k`` units of work done."""
    segments: list[tuple[int, int]] = []
    segment_end = t
    while True:
        how = run_from[t, k]
        if how == 0:  # the unit before t was work in this segment
            t, k = t - 1, k - 1
            continue
        start = t - m if how == 1 else t - m - r
        segments.append((start, segment_end))
        if how == 1:
            break
        t, k = start, k - m
        while not idle_from_run[t, k]:  # back through the pause to where the previous segment ended
            t -= 1
        segment_end = t
    merged: list[tuple[int, int]] = []
    for start, end in reversed(segments):  # a zero-length pause (only when resuming is free) is no pause
        if merged and merged[-1][1] == start:
            merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def segments_cost(curve: Curve, segments: list[tuple[float, float]]) -> tuple[float, float]:
    """(integral, covered seconds) of ``curve`` over the segments (seconds)."""
    if not segments:
        return 0.0, 0.0
    edges = np.array(segments, dtype=float)
    area, covered = curve.cumulative(edges.ravel())
    return float(np.sum(area[1::2] - area[0::2])), float(np.sum(covered[1::2] - covered[0::2]))


def best_segments(curve: Curve, duration_s: float, earliest: float, latest_end: float, *,
                  min_segment_s: float, resume_cost_s: float) -> list[tuple[float, float]]:
    """The cheapest segments (start, end seconds, resume overhead included) for an interruptible job
    of ``duration_s`` inside [earliest, latest_end] (see the comment above :class:`SegmentGrid`).
    Never worse than the best contiguous window by the same objective: should the grid miss that window
    (slot boundaries off whole minutes), the window is returned."""
    latest_end = min(latest_end, float(curve.ends[-1]))
    grid = segment_grid(np.concatenate([curve.starts, curve.ends]), duration_s, earliest, latest_end,
                        min_segment_s=min_segment_s, resume_cost_s=resume_cost_s)
    edges = grid.edges()
    totals, found = cheapest_segments(unit_costs(curve, edges)[None, :], grid)
    job = grid.work * grid.step
    try:
        start, mean = best_start(curve, job, grid.earliest, edges[-1] - job)
    except PlanningError:
        start, mean = None, np.inf
    if not np.isfinite(totals[0]) and start is None:
        raise PlanningError("no set of segments adding up to the job is covered by the forecast before the "
                            "deadline")
    if start is not None and mean * job < totals[0] - 1e-9 * max(1.0, mean * job):
        return [(start, start + job)]
    return [(float(edges[a]), float(edges[b])) for a, b in found[0]]


def plan_segments(forecast: Forecast, duration: timedelta, earliest_start: datetime, deadline: datetime, *,
                  min_segment: timedelta = timedelta(minutes=30),
                  resume_cost: timedelta = timedelta(minutes=5),
                  cost_points: list[IntensityPoint] | None = None, fallback_reasons: list[str] | None = None,
                  planned_at: datetime | None = None) -> Plan:
    """Plan an interruptible job with :func:`best_segments`. ``start``/``end`` are the first segment's
    start and the last one's end; ``mean_intensity`` is the time-weighted mean over the segments (resume
    overhead included); ``expected_saving_pct`` compares the segments' emissions, overhead included, with
    running the whole job at once."""
    if duration <= timedelta(0):
        raise PlanningError(f"duration must be positive, got {duration}")
    if min_segment <= timedelta(0):
        raise PlanningError(f"min_segment must be positive, got {min_segment}")
    if resume_cost < timedelta(0):
        raise PlanningError(f"resume_cost must not be negative, got {resume_cost}")
    _check_fits(forecast, duration, earliest_start, deadline)
    intensity = Curve(*forecast.arrays())
    objective = Curve(*points_to_arrays(cost_points)) if cost_points else intensity
    seconds, earliest = duration.total_seconds(), earliest_start.timestamp()
    run_now_mean = float(intensity.window_means(np.array([earliest]), seconds)[0])
    if np.isnan(run_now_mean):
        raise ForecastError(f"{forecast.source}: forecast has a gap in the run-now window")
    chosen = best_segments(objective, seconds, earliest,
                           min(deadline.timestamp(), float(intensity.ends[-1])),
                           min_segment_s=min_segment.total_seconds(),
                           resume_cost_s=resume_cost.total_seconds())
    segments = []
    for a, b in chosen:
        area, _ = segments_cost(intensity, [(a, b)])
        segments.append({"start": _iso(a), "end": _iso(b), "mean_intensity": area / (b - a)})
    emissions, running = segments_cost(intensity, chosen)
    resumes = len(chosen) - 1
    reason = ("lowest mean cost (carbon price x emissions + electricity price)" if cost_points
              else "lowest emissions before the deadline")
    reason += (f"; interruptible: {len(chosen)} segment{'s' if resumes else ''}, {resumes} resume"
               f"{'' if resumes == 1 else 's'} at {resume_cost.total_seconds() / 60:g} min each, "
               f"segments of at least {min_segment.total_seconds() / 60:g} min")
    first, last = chosen[0][0], chosen[-1][1]
    curve_from = earliest_start - timedelta(hours=1)
    curve_to = max(deadline, datetime.fromtimestamp(last, tz=timezone.utc))
    baseline = run_now_mean * seconds
    return Plan(
        mode="window", source=forecast.source, region=forecast.region,
        planned_at=(planned_at or datetime.now(timezone.utc)).isoformat(),
        earliest_start=earliest_start.isoformat(), deadline=deadline.isoformat(),
        duration_hours=seconds / 3600, start=_iso(first), end=_iso(last), mean_intensity=emissions / running,
        run_now_start=earliest_start.isoformat(), run_now_mean_intensity=run_now_mean,
        expected_saving_pct=100.0 * (baseline - emissions) / baseline if baseline > 0 else 0.0,
        reason=reason, fallback_reasons=list(fallback_reasons or []),
        curve=[p.to_dict() for p in forecast.points if p.end > curve_from and p.start < curve_to],
        interruptible=True, segments=segments,
    )
