"""The Green Software Foundation Carbon Aware SDK WebAPI: ``/emissions/forecasts/current``."""
from __future__ import annotations

from datetime import datetime, timedelta

from carbon_aware.forecast import Forecast, ForecastError, IntensityPoint, parse_time, validate_points
from carbon_aware.providers.base import Provider, get_json, http_session, number, require


class CarbonAwareSDKProvider(Provider):
    name = "carbon_aware_sdk"

    def __init__(self, location: str, base_url: str = "http://localhost:8080", session=None):
        self.region = location
        self.base_url = base_url.rstrip("/")
        self.session = session or http_session()

    def forecast(self, now: datetime, horizon: timedelta) -> Forecast:
        body = get_json(self.session, self.name, f"{self.base_url}/emissions/forecasts/current",
                        params={"location": self.region})
        if not isinstance(body, list) or not body:
            raise ForecastError(f"{self.name}: expected a non-empty list of forecasts")
        rows = require(body[0], "forecastData", self.name, "forecast")
        if not isinstance(rows, list):
            raise ForecastError(f"{self.name}: 'forecastData' is not a list")
        points = [IntensityPoint(parse_time(require(r, "timestamp", self.name, "forecastData entry")),
                                 timedelta(minutes=number(
                                     require(r, "duration", self.name, "forecastData entry"),
                                     self.name, "duration")),
                                 number(require(r, "value", self.name, "forecastData entry"),
                                        self.name, "value"))
                  for r in rows]
        return Forecast(validate_points(points, self.name), source=self.name, region=self.region)
