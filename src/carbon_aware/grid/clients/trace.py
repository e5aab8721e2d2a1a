"""Replays a real trace as if now were a moment inside it (``offset`` maps real time to trace time)."""
from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from carbon_aware.grid.forecast import Forecast, ForecastError, IntensityPoint, validate_points
from carbon_aware.grid.forecaster import HistoryModel
from carbon_aware.grid.clients.base import Provider
from carbon_aware.grid.traces import load_trace


class TraceProvider(Provider):
    """``forecast``: 'file' (the operator's forecast, NESO files), 'history' (our forecaster on the
    actuals before now), 'auto' (file where there is one), or 'oracle' (the actuals: evaluation only)."""

    name = "trace"

    def __init__(self, path: str | Path, offset: timedelta = timedelta(0), forecast: str = "auto",
                 signal: str = "direct"):
        if forecast not in ("auto", "file", "history", "oracle"):
            raise ValueError(f"trace forecast: expected auto, file, history or oracle, got {forecast!r}")
        self.trace = load_trace(str(path), signal)
        self.region = self.trace.region
        self.offset = offset
        self.mode = (("file" if self.trace.forecast is not None else "history") if forecast == "auto"
                     else forecast)
        if self.mode == "file" and self.trace.forecast is None:
            raise ValueError(f"trace {path}: has no forecast column; use forecast: history")

    @classmethod
    def replaying(cls, path: str | Path, real_now: datetime, trace_now: datetime,
                  **kwargs) -> "TraceProvider":
        return cls(path, offset=trace_now - real_now, **kwargs)

    def _slots(self, values: np.ndarray, first: int, last: int) -> list[IntensityPoint]:
        step = timedelta(seconds=self.trace.step)
        points = []
        for index in range(max(first, 0), min(last, len(values))):
            if not math.isnan(values[index]):
                start = (datetime.fromtimestamp(self.trace.start + index * self.trace.step, tz=timezone.utc)
                         - self.offset)
                points.append(IntensityPoint(start, step, float(values[index])))
        return points

    def forecast(self, now: datetime, horizon: timedelta) -> Forecast:
        moment = (now + self.offset).timestamp()
        if not self.trace.start <= moment < self.trace.end:
            raise ForecastError(f"trace: {now + self.offset:%Y-%m-%d %H:%M} UTC "
                                f"is outside {Path(self.trace.path).name}")
        first, last = self.trace.index(moment), self.trace.index(moment + horizon.total_seconds() - 1) + 1
        source = f"trace:{Path(self.trace.path).name}:{self.mode}"
        if self.mode == "history":
            forecast = self._history_forecast(now, horizon, source)
        else:
            values = self.trace.forecast if self.mode == "file" else self.trace.actual
            forecast = Forecast(validate_points(self._slots(values, first, last), source), source=source,
                                region=self.region)
        if self.offset:
            forecast.replay = (Path(self.trace.path).name, self.offset)
        return forecast

    def _history_forecast(self, now: datetime, horizon: timedelta, source: str) -> Forecast:
        hourly_start, hourly = self.trace.hourly()
        latest = int((now + self.offset).timestamp() - hourly_start) // 3600 - 1  # last complete hour
        if latest < 24:
            raise ForecastError(f"{source}: fewer than 24 h of actuals before now")
        leads = math.ceil(horizon.total_seconds() / 3600) + 1
        trace_first = datetime.fromtimestamp(hourly_start + (latest + 1) * 3600, tz=timezone.utc)
        values = HistoryModel.load().predict(hourly[:latest + 1], leads, end=trace_first, region=self.region)
        first = trace_first - self.offset
        points = [IntensityPoint(first + timedelta(hours=h), timedelta(hours=1), float(max(v, 0.0)))
                  for h, v in enumerate(values)]
        return Forecast(validate_points(points, source), source=source, region=self.region)

    @property
    def real_signal(self) -> bool:
        """A trace at its own times is the grid's past signal; a replay (any offset) is not."""
        return not self.offset

    @property
    def actuals_source(self) -> str:
        """``trace:<file>``; ``replay:<file>`` for a replay, a name the grid store refuses even from a
        caller that hands it only the name."""
        return f"{'replay' if self.offset else 'trace'}:{Path(self.trace.path).name}"

    def actuals(self, start: datetime, end: datetime) -> list[IntensityPoint]:
        first = self.trace.index((start + self.offset).timestamp())
        last = self.trace.index((end + self.offset).timestamp() - 1) + 1
        return [p for p in self._slots(self.trace.actual, first, last) if p.end <= end]
