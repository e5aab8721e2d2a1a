"""Electricity Maps API v3: carbon-intensity forecast, latest and history; token in ``auth-token``.

The signal is explicit: ``emissionFactorType=direct`` (operational, as the traces, the forecaster and the
reports use) unless the provider is built with ``signal="lifecycle"``; the API's own default is lifecycle."""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal

from carbon_aware.grid.forecast import Forecast, ForecastError, IntensityPoint, parse_time, validate_points
from carbon_aware.grid.clients.base import (Provider, get_json, http_session, number, provider_connection,
                                         require)

BASE_URL = "https://api.electricitymap.org"
CONN_TYPE, CONN_ID = "electricitymaps", "electricitymaps_default"  # Airflow connection type, default id
TOKEN_ENV = "ELECTRICITYMAPS_API_TOKEN"
SIGNALS = {"direct": "direct (operational) intensity", "lifecycle": "lifecycle (LCA) intensity"}
# temporalGranularity -> slot length; the API answers hourly unless asked otherwise
STEPS = {"5_minutes": timedelta(minutes=5), "15_minutes": timedelta(minutes=15),
         "hourly": timedelta(hours=1)}


class ElectricityMapsProvider(Provider):
    name = "electricitymaps"
    conn_type, default_conn_id = CONN_TYPE, CONN_ID

    def __init__(self, zone: str, token: str | None = None, conn_id: str | None = CONN_ID,
                 base_url: str | None = None, session=None,
                 signal: Literal["direct", "lifecycle"] = "direct"):
        """Endpoint and token from the connection (type electricitymaps), else ``BASE_URL`` and
        ``$ELECTRICITYMAPS_API_TOKEN``; ``token``/``base_url`` are for code callers, never for specs."""
        if signal not in SIGNALS:
            raise ValueError(f"provider.signal: expected 'direct' or 'lifecycle', got {signal!r}")
        self.region, self.signal = zone, signal
        settings = provider_connection(conn_id, self.conn_type, self.default_conn_id, password_env=TOKEN_ENV)
        self._token = token or settings.password
        if not self._token:
            raise ForecastError(f"{self.name}: no API token "
                                f"(Airflow connection {conn_id!r} or ${TOKEN_ENV})")
        self._credentials = "the token argument" if token else settings.credentials_of(TOKEN_ENV)
        self.base_url = (base_url or settings.base_url or BASE_URL).rstrip("/")
        self.session = session or http_session()

    @property
    def actuals_source(self) -> str:
        """Direct actuals under the provider's name; lifecycle ones apart, never mixed with them."""
        return self.name if self.signal == "direct" else f"{self.name}:{self.signal}"

    def _get(self, path: str) -> dict:
        body = get_json(self.session, self.name, f"{self.base_url}/v3/carbon-intensity/{path}",
                        params={"zone": self.region, "emissionFactorType": self.signal},
                        headers={"auth-token": self._token}, credentials=self._credentials)
        if not isinstance(body, dict):
            raise ForecastError(f"{self.name}: {path} did not return an object")
        self._check_signal(body)
        return body

    def _check_signal(self, entry: dict) -> None:
        answered = entry.get("emissionFactorType")
        if answered is not None and answered != self.signal:
            raise ForecastError(f"{self.name}: asked for {self.signal} intensity, "
                                f"the API answered {answered}")

    def _series(self, body: dict, field: str) -> list[IntensityPoint]:
        """One slot of the series' step per entry: a missing or null entry stays a gap."""
        rows = require(body, field, self.name)
        if not isinstance(rows, list):
            raise ForecastError(f"{self.name}: {field!r} is not a list")
        step = self._step(body, rows)
        points = []
        for row in rows:
            start = parse_time(require(row, "datetime", self.name, f"{field} entry"))
            if row.get("carbonIntensity") is None:
                continue  # no value for that slot: a gap, not a reason to drop the series
            self._check_signal(row)
            points.append(IntensityPoint(start, step, number(row["carbonIntensity"], self.name,
                                                             "carbonIntensity")))
        return validate_points(points, self.name)

    def _step(self, body: dict, rows: list[Any]) -> timedelta:
        first = rows[0] if rows and isinstance(rows[0], dict) else {}
        granularity = body.get("temporalGranularity") or first.get("temporalGranularity") or "hourly"
        if granularity not in STEPS:
            raise ForecastError(f"{self.name}: temporalGranularity {granularity!r} is not one of "
                                f"{', '.join(STEPS)}")
        return STEPS[granularity]

    def forecast(self, now: datetime, horizon: timedelta) -> Forecast:
        points = self._series(self._get("forecast"), "forecast")
        return Forecast(points, source=self.actuals_source, region=self.region, notes=[SIGNALS[self.signal]])

    def actuals(self, start: datetime, end: datetime) -> list[IntensityPoint]:
        points = self._series(self._get("history"), "history")
        return [p for p in points if p.start >= start and p.end <= end]

    def current(self, now: datetime) -> float | None:
        return number(require(self._get("latest"), "carbonIntensity", self.name), self.name,
                      "carbonIntensity")
