"""A forecast from recent actuals, for sources that have none (Electricity Maps' free tier, a trace)."""
from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import numpy as np

from carbon_aware.forecast import Forecast, ForecastError, IntensityPoint, validate_points
from carbon_aware.history import MIN_HISTORY_H, WINDOW_H, HistoryModel
from carbon_aware.providers.base import Provider


class HistoryProvider(Provider):
    name = "history"

    def __init__(self, actuals_source: Provider, model: HistoryModel | None = None):
        self.source = actuals_source
        self.region = actuals_source.region
        self.model = model or HistoryModel.load()

    def forecast(self, now: datetime, horizon: timedelta) -> Forecast:
        hour = now.astimezone(timezone.utc).replace(minute=0, second=0, microsecond=0)
        recent = self.source.actuals(hour - timedelta(hours=WINDOW_H), hour)
        hourly = hourly_means(recent, hour, WINDOW_H)
        observed = np.flatnonzero(~np.isnan(hourly))
        if len(observed) < MIN_HISTORY_H:
            raise ForecastError(f"history: only {len(observed)} h of actuals from {self.source.name}; need {MIN_HISTORY_H}")
        leads = math.ceil(horizon.total_seconds() / 3600) + 1
        values = self.model.predict(hourly[observed[0]:], leads)
        points = [IntensityPoint(hour + timedelta(hours=h), timedelta(hours=1), float(max(v, 0.0))) for h, v in enumerate(values)]
        return Forecast(validate_points(points, f"history({self.source.name})"), source=f"history({self.source.name})",
                        region=self.region, actuals=recent)

    def actuals(self, start: datetime, end: datetime) -> list[IntensityPoint]:
        return self.source.actuals(start, end)


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
