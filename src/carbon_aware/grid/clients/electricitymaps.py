"""Electricity Maps API v3: carbon-intensity forecast, latest and history; token in ``auth-token``.

The signal is explicit: ``emissionFactorType=direct`` (operational, as the traces, the forecaster and the
reports use) unless the provider is built with ``signal="lifecycle"`` or its connection's ``signal`` field
says lifecycle; the API's own default is lifecycle."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, Literal

from carbon_aware.grid.forecast import Forecast, ForecastError, IntensityPoint, parse_time, validate_points
from carbon_aware.grid.clients.base import (ConnectionSettings, Provider, connection_settings, get_json,
                                            http_session, number, require)

BASE_URL = "https://api.electricitymap.org"
CONN_TYPE, CONN_ID = "electricitymaps", "electricitymaps_default"  # Airflow connection type, default id
SIGNALS = {"direct": "direct (operational) intensity", "lifecycle": "lifecycle (LCA) intensity"}
# temporalGranularity -> slot length; the API answers hourly unless asked otherwise
STEPS = {"5_minutes": timedelta(minutes=5), "15_minutes": timedelta(minutes=15),
         "hourly": timedelta(hours=1)}


class ElectricityMapsProvider(Provider):
    name = "electricitymaps"
    conn_type, default_conn_id = CONN_TYPE, CONN_ID

    def __init__(self, zone: str, conn_id: str | None = None, settings: ConnectionSettings | None = None,
                 session=None, signal: Literal["direct", "lifecycle"] | None = None):
        """Endpoint and token from ``settings`` (what the electricitymaps hook reads from its
        connection), else from the connection ``conn_id`` (default ``electricitymaps_default``).
        The signal: ``signal``, else the connection's ``signal`` field, else direct."""
        settings = settings or connection_settings(self.conn_type, conn_id, self.default_conn_id)
        signal = signal or settings.option("signal", self.conn_type) or "direct"
        if signal not in SIGNALS:
            raise ValueError(f"provider.signal: expected 'direct' or 'lifecycle', got {signal!r}")
        self.region, self.signal = zone, signal
        self._token = settings.password
        if not self._token:
            raise ForecastError(f"{self.name}: no API token: set the password of Airflow connection "
                                f"{settings.conn_id or conn_id or self.default_conn_id!r} "
                                f"(type {self.conn_type})")
        self._credentials = settings.credentials_of()
        self.base_url = (settings.base_url or BASE_URL).rstrip("/")
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

    def probe(self) -> str:
        """One cheap authenticated request (the zone's latest intensity), for a connection test."""
        value = self.current(datetime.now(timezone.utc))
        return f"{self.region} now {value:g} gCO2eq/kWh ({self.signal})"
