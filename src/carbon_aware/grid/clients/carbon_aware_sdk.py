"""The Green Software Foundation Carbon Aware SDK WebAPI: ``/emissions/forecasts/current``."""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from carbon_aware.grid.forecast import Forecast, ForecastError, IntensityPoint, parse_time, validate_points
from carbon_aware.grid.clients.base import (ConnectionSettings, Provider, connection_settings, get_json,
                                            http_session, number, require)

BASE_URL = "http://localhost:8080"
CONN_TYPE, CONN_ID = "carbon_aware_sdk", "carbon_aware_sdk_default"  # Airflow connection type, default id


class CarbonAwareSDKProvider(Provider):
    name = "carbon_aware_sdk"
    conn_type, default_conn_id = CONN_TYPE, CONN_ID

    def __init__(self, location: str, conn_id: str | None = None, settings: ConnectionSettings | None = None,
                 session=None):
        """Endpoint from ``settings`` (what the carbon_aware_sdk hook reads from its connection), else
        from the connection ``conn_id`` (default ``carbon_aware_sdk_default``), else ``BASE_URL``."""
        self.region = location
        settings = settings or connection_settings(self.conn_type, conn_id, self.default_conn_id)
        self._credentials = settings.credentials_of()
        self.base_url = (settings.base_url or BASE_URL).rstrip("/")
        self.session = session or http_session()

    def probe(self) -> str:
        """One cheap request (``/locations``: the locations the WebAPI is configured with, no data
        source called), for a connection test; says whether this provider's location is among them."""
        body = get_json(self.session, self.name, f"{self.base_url}/locations", credentials=self._credentials)
        if not isinstance(body, dict):
            raise ForecastError(f"{self.name}: /locations did not return an object of locations")
        known = "" if not self.region else (f"; {self.region} is one" if self.region in body
                                            else f"; {self.region} is not one of them")
        return f"the WebAPI knows {len(body)} location(s){known}"

    def forecast(self, now: datetime, horizon: timedelta) -> Forecast:
        body = get_json(self.session, self.name, f"{self.base_url}/emissions/forecasts/current",
                        params={"location": self.region}, credentials=self._credentials)
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
        points, notes = self._unwindowed(points, body[0].get("windowSize"))
        return Forecast(validate_points(points, self.name), source=self.name, region=self.region,
                        notes=notes)

    def _unwindowed(self, points: list[IntensityPoint], window_size: Any) -> tuple[list[IntensityPoint],
                                                                                   list[str]]:
        """A response made with a ``windowSize`` holds rolling means: each entry lasts the window and
        the next starts one data point later, so they overlap. Each becomes a slot of that spacing.
        Anything else that overlaps (uneven spacing, mixed durations, a duration that is not the
        window) is left as it is, for validation to refuse."""
        if not any(b.start < a.end for a, b in zip(points, points[1:])):
            return points, []
        steps = {b.start - a.start for a, b in zip(points, points[1:])}
        durations = {p.duration for p in points}
        if window_size is not None:
            durations.add(timedelta(minutes=number(window_size, self.name, "windowSize")))
        if len(steps) != 1 or len(durations) != 1:
            return points, []
        step, window = steps.pop(), durations.pop()
        if not timedelta(0) < step < window:
            return points, []
        note = f"each value is the SDK's {window.total_seconds() / 60:g}-minute rolling mean from its start"
        return [IntensityPoint(p.start, step, p.value) for p in points], [note]
