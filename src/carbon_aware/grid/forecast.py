"""The one shape every provider returns: timezone-aware UTC slots of gCO2/kWh, sorted and validated."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable

import numpy as np

MAX_PLAUSIBLE_G_PER_KWH = 2000.0


class ForecastError(ValueError):
    """A source's data was rejected; the message is the reason recorded in the plan."""


@dataclass(frozen=True)
class IntensityPoint:
    start: datetime
    duration: timedelta
    value: float  # gCO2eq/kWh

    @property
    def end(self) -> datetime:
        return self.start + self.duration

    def to_dict(self) -> dict[str, Any]:
        return {"start": self.start.isoformat(), "end": self.end.isoformat(), "g_per_kwh": self.value}


@dataclass
class Forecast:
    points: list[IntensityPoint]
    source: str
    region: str | None = None
    actuals: list[IntensityPoint] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # A replayed trace: its file's name and trace time - grid time (the points are in grid time).
    replay: tuple[str, timedelta] | None = None

    @property
    def start(self) -> datetime:
        return self.points[0].start

    @property
    def end(self) -> datetime:
        return self.points[-1].end

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(start seconds, end seconds, values) as float arrays, for the planner."""
        return points_to_arrays(self.points)

    def value_at(self, moment: datetime) -> float | None:
        for point in self.points:
            if point.start <= moment < point.end:
                return point.value
        return None

    def require_coverage(self, start: datetime, end: datetime) -> None:
        if not self.points or self.start > start or self.end < end:
            have = (f"{self.start:%Y-%m-%d %H:%M} to {self.end:%Y-%m-%d %H:%M} UTC" if self.points
                    else "nothing")
            raise ForecastError(
                f"{self.source}: forecast too short: covers {have}, "
                f"needed {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC")


def points_to_arrays(points: list[IntensityPoint]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    starts = np.array([p.start.timestamp() for p in points], dtype=float)
    ends = np.array([p.end.timestamp() for p in points], dtype=float)
    values = np.array([p.value for p in points], dtype=float)
    return starts, ends, values


def parse_time(text: str) -> datetime:
    """ISO 8601 with 'Z' or an offset; naive times are rejected, never guessed."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (TypeError, ValueError, AttributeError):
        raise ForecastError(f"timestamp {text!r} is not ISO 8601") from None
    if moment.tzinfo is None:
        raise ForecastError(f"timestamp {text!r} has no timezone")
    return moment.astimezone(timezone.utc)


def validate_points(points: Iterable[IntensityPoint], source: str) -> list[IntensityPoint]:
    """Reject what a provider must never hand the planner; returns the points as a list."""
    points = list(points)
    if not points:
        raise ForecastError(f"{source}: no data points")
    previous = None
    for point in points:
        if point.start.tzinfo is None:
            raise ForecastError(f"{source}: timestamp {point.start} has no timezone")
        value = point.value
        if value is None or not isinstance(value, (int, float)) or math.isnan(value) or math.isinf(value):
            raise ForecastError(f"{source}: value {value!r} at {point.start.isoformat()} is not a number")
        if value < 0:
            raise ForecastError(f"{source}: negative intensity {value} at {point.start.isoformat()}")
        if value > MAX_PLAUSIBLE_G_PER_KWH:
            raise ForecastError(f"{source}: implausible intensity {value} g/kWh "
                                f"(> {MAX_PLAUSIBLE_G_PER_KWH:.0f}) at {point.start.isoformat()}")
        if point.duration <= timedelta(0):
            raise ForecastError(f"{source}: non-positive slot duration at {point.start.isoformat()}")
        if previous is not None:
            if point.start == previous.start:
                raise ForecastError(f"{source}: duplicated timestamp {point.start.isoformat()}")
            if point.start < previous.start:
                raise ForecastError(f"{source}: timestamps not sorted "
                                    f"({point.start.isoformat()} after {previous.start.isoformat()})")
            if point.start < previous.end:
                raise ForecastError(f"{source}: slots overlap at {point.start.isoformat()}")
        previous = point
    return points


def slots_from_instants(times: list[datetime], values: list[float],
                        default: timedelta = timedelta(hours=1)) -> list[IntensityPoint]:
    """Points given as instants (one value per timestamp): each lasts until the next one.

    Each slot's length is the gap to the next timestamp; the last takes the most common gap."""
    if not times:
        return []
    gaps = [b - a for a, b in zip(times, times[1:]) if b > a]
    typical = max(set(gaps), key=gaps.count) if gaps else default
    points = []
    for i, (moment, value) in enumerate(zip(times, values)):
        duration = (times[i + 1] - moment if i + 1 < len(times) and times[i + 1] - moment <= 2 * typical
                    else typical)
        points.append(IntensityPoint(moment, duration if duration > timedelta(0) else typical, value))
    return points
