"""The original pipeline's mock curve: a deterministic diurnal shape, peak 18:00, trough 03:00.

The offline default only. Real solar-heavy grids (California) are cleanest around midday and
dirtiest at night, the opposite of this curve; planning on it there emits more, not less.
"""
from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from carbon_aware.grid.forecast import Forecast, IntensityPoint
from carbon_aware.grid.clients.base import Provider


class MockProvider(Provider):
    name = "mock"
    real_signal = False  # a made-up curve: never stored as a region's grid data

    def __init__(self, region: str = "mock", timezone_name: str = "UTC", low: float = 200.0,
                 high: float = 450.0, trough_hour: float = 3.0, peak_hour: float = 18.0,
                 resolution: timedelta = timedelta(minutes=30)):
        self.region, self.zone = region, ZoneInfo(timezone_name)
        self.low, self.high, self.trough, self.peak, self.resolution = (
            low, high, trough_hour, peak_hour, resolution)

    def intensity(self, moment: datetime) -> float:
        """Half-cosine rising from the trough to the peak, and falling back, in local time."""
        local = moment.astimezone(self.zone)
        hour = local.hour + local.minute / 60 + local.second / 3600
        rise = (self.peak - self.trough) % 24
        since_trough = (hour - self.trough) % 24
        phase = since_trough / rise if since_trough <= rise else 1 - (since_trough - rise) / (24 - rise)
        return self.low + (self.high - self.low) * (1 - math.cos(math.pi * phase)) / 2

    def forecast(self, now: datetime, horizon: timedelta) -> Forecast:
        step = self.resolution.total_seconds()
        first = datetime.fromtimestamp(math.floor(now.timestamp() / step) * step, tz=timezone.utc)
        count = math.ceil((now + horizon - first).total_seconds() / step)
        points = [IntensityPoint(first + i * self.resolution, self.resolution,
                                 round(self.intensity(first + (i + 0.5) * self.resolution), 1))
                  for i in range(count)]
        return Forecast(points, source=self.name, region=self.region)
