"""A forecast from recent actuals, for sources that have none (Electricity Maps' free tier, a trace)
and as the chain's fallback when every provider fails: the history forecaster on the grid store."""
from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import numpy as np

from carbon_aware.grid.forecast import Forecast, ForecastError, IntensityPoint, validate_points
from carbon_aware.grid.forecaster import MIN_HISTORY_H, WINDOW_H, HistoryModel
from carbon_aware.grid.clients.base import Provider
from carbon_aware.grid.store import GridStore, hourly_means


def forecast_from_hourly(hourly: np.ndarray, hour: datetime, horizon: timedelta, model: HistoryModel,
                         source: str, region: str | None) -> Forecast:
    """Forecast the hours from ``hour`` on, given the hourly actuals that end at ``hour`` (NaN allowed)."""
    observed = np.flatnonzero(~np.isnan(hourly))
    if len(observed) < MIN_HISTORY_H:
        raise ForecastError(f"{source}: only {len(observed)} h of actuals; need {MIN_HISTORY_H}")
    stale = len(hourly) - 1 - int(observed[-1])  # hours since the latest actual (a store last fed yesterday)
    leads = math.ceil(horizon.total_seconds() / 3600) + 1
    if stale + leads > model.leads:
        raise ForecastError(f"{source}: the latest actual is {stale} h old; the model reaches "
                            f"{model.leads} h ahead, {leads} h needed from now")
    history = hourly[observed[0]:observed[-1] + 1]
    values = model.predict(history, stale + leads, end=hour - timedelta(hours=stale), region=region)[stale:]
    points = [IntensityPoint(hour + timedelta(hours=h), timedelta(hours=1), float(max(v, 0.0)))
              for h, v in enumerate(values)]
    return Forecast(validate_points(points, source), source=source, region=region)


class HistoryProvider(Provider):
    """The source's recent actuals, recorded in the store, and the store's older ones: after a few
    daily runs the forecaster has weeks of history even where the source serves a day."""

    name = "history"

    def __init__(self, actuals_source: Provider, model: HistoryModel | None = None,
                 store: GridStore | None = None):
        self.source = actuals_source
        self.region = actuals_source.region
        self.model = model or HistoryModel.load()
        self.store = store or GridStore()

    @property
    def actuals_source(self) -> str:
        return self.source.actuals_source

    @property
    def real_signal(self) -> bool:
        return self.source.real_signal

    def forecast(self, now: datetime, horizon: timedelta) -> Forecast:
        hour = now.astimezone(timezone.utc).replace(minute=0, second=0, microsecond=0)
        recent = self.source.actuals(hour - timedelta(hours=WINDOW_H), hour)
        hourly = hourly_means(recent, hour, WINDOW_H)
        if self.real_signal:  # a replay neither feeds the store nor mixes the real grid into its past
            hourly = self._with_stored(recent, hourly, hour)
        name = f"history({self.source.name})"
        forecast = forecast_from_hourly(hourly, hour, horizon, self.model, name, self.region)
        forecast.actuals = recent
        return forecast

    def _with_stored(self, recent: list[IntensityPoint], hourly: np.ndarray, hour: datetime) -> np.ndarray:
        """The fresh actuals recorded, and the hours they lack filled from the store's older ones."""
        region = self.region or "unknown"
        try:
            self.store.add_actuals(region, self.actuals_source, recent, provider=self)
            stored, _ = self.store.hourly_actuals(region, hour, WINDOW_H, self.actuals_source)
            return np.where(np.isnan(hourly), stored, hourly)
        except OSError:
            return hourly  # an unreachable store never stops planning; the fresh actuals still serve

    def actuals(self, start: datetime, end: datetime) -> list[IntensityPoint]:
        return self.source.actuals(start, end)
