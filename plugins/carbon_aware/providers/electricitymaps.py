"""Electricity Maps API v3: carbon-intensity forecast, latest and history; token in ``auth-token``."""
from __future__ import annotations

from datetime import datetime, timedelta

from carbon_aware.forecast import (Forecast, ForecastError, IntensityPoint, parse_time, slots_from_instants,
                                   validate_points)
from carbon_aware.providers.base import (Provider, get_json, http_session, number, provider_connection,
                                         require)

BASE_URL = "https://api.electricitymap.org"
CONN_TYPE, CONN_ID = "electricitymaps", "electricitymaps_default"  # Airflow connection type, default id
TOKEN_ENV = "ELECTRICITYMAPS_API_TOKEN"


class ElectricityMapsProvider(Provider):
    name = "electricitymaps"
    conn_type, default_conn_id = CONN_TYPE, CONN_ID

    def __init__(self, zone: str, token: str | None = None, conn_id: str | None = CONN_ID,
                 base_url: str | None = None, session=None):
        """Endpoint and token from the connection (type electricitymaps), else ``BASE_URL`` and
        ``$ELECTRICITYMAPS_API_TOKEN``; ``token``/``base_url`` are for code callers, never for specs."""
        self.region = zone
        settings = provider_connection(conn_id, self.conn_type, self.default_conn_id, password_env=TOKEN_ENV)
        self._token = token or settings.password
        if not self._token:
            raise ForecastError(f"{self.name}: no API token "
                                f"(Airflow connection {conn_id!r} or ${TOKEN_ENV})")
        self.base_url = (base_url or settings.base_url or BASE_URL).rstrip("/")
        self.session = session or http_session()

    def _get(self, path: str) -> dict:
        body = get_json(self.session, self.name, f"{self.base_url}/v3/carbon-intensity/{path}",
                        params={"zone": self.region}, headers={"auth-token": self._token})
        if not isinstance(body, dict):
            raise ForecastError(f"{self.name}: {path} did not return an object")
        return body

    def _series(self, rows, field: str) -> list[IntensityPoint]:
        if not isinstance(rows, list):
            raise ForecastError(f"{self.name}: {field!r} is not a list")
        times = [parse_time(require(r, "datetime", self.name, f"{field} entry")) for r in rows]
        values = [number(require(r, "carbonIntensity", self.name, f"{field} entry"), self.name,
                         "carbonIntensity") for r in rows]
        return validate_points(slots_from_instants(times, values), self.name)

    def forecast(self, now: datetime, horizon: timedelta) -> Forecast:
        points = self._series(require(self._get("forecast"), "forecast", self.name), "forecast")
        return Forecast(points, source=self.name, region=self.region)

    def actuals(self, start: datetime, end: datetime) -> list[IntensityPoint]:
        points = self._series(require(self._get("history"), "history", self.name), "history")
        return [p for p in points if p.start >= start and p.end <= end]

    def current(self, now: datetime) -> float | None:
        return number(require(self._get("latest"), "carbonIntensity", self.name), self.name,
                      "carbonIntensity")
