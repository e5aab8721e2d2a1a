"""NESO Carbon Intensity API (GB): national or regional forecasts 48 h ahead; no key needed."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from carbon_aware.grid.forecast import Forecast, ForecastError, IntensityPoint, parse_time, validate_points
from carbon_aware.grid.clients.base import (ConnectionSettings, Provider, connection_settings, get_json,
                                            http_session, number, require)

BASE_URL = "https://api.carbonintensity.org.uk"
CONN_TYPE, CONN_ID = "neso", "neso_default"  # Airflow connection type, default id


def _fmt(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%MZ")


def _slot(moment: datetime) -> datetime:
    return moment.replace(minute=0 if moment.minute < 30 else 30, second=0, microsecond=0)


class UKProvider(Provider):
    name = "uk"
    conn_type, default_conn_id = CONN_TYPE, CONN_ID

    def __init__(self, region_id: int | None = None, postcode: str | None = None, conn_id: str | None = None,
                 settings: ConnectionSettings | None = None, session=None):
        """Endpoint from ``settings`` (what the neso hook reads from its connection), else from the
        connection ``conn_id`` (default ``neso_default``), else ``BASE_URL``."""
        self.region_id, self.postcode = region_id, postcode
        self.region = f"GB-region-{region_id}" if region_id else (f"GB-{postcode}" if postcode else "GB")
        settings = settings or connection_settings(self.conn_type, conn_id, self.default_conn_id)
        self._credentials = settings.credentials_of()
        self.base_url = (settings.base_url or BASE_URL).rstrip("/")
        self.session = session or http_session()

    def _rows(self, path: str) -> list:
        body = get_json(self.session, self.name, f"{self.base_url}{path}", credentials=self._credentials)
        data = require(body, "data", self.name)
        # regional: {"data": [{"regionid": .., "data": [...]}]} or a dict
        if self.region_id or self.postcode:
            block = data[0] if isinstance(data, list) and data else data
            data = require(block, "data", self.name, "regional block")
        if not isinstance(data, list):
            raise ForecastError(f"{self.name}: 'data' is not a list")
        return data

    def _points(self, rows: list, field: str) -> list[IntensityPoint]:
        points = []
        for row in rows:
            intensity = require(row, "intensity", self.name, "data row")
            start, end = (parse_time(require(row, "from", self.name, "data row")),
                          parse_time(require(row, "to", self.name, "data row")))
            value = intensity.get(field) if isinstance(intensity, dict) else None
            if value is None:
                if field == "actual":
                    continue  # future slots have no actual yet
                raise ForecastError(f"{self.name}: data row at {start.isoformat()} "
                                    f"is missing intensity.{field}")
            points.append(IntensityPoint(start, end - start, number(value, self.name, f"intensity.{field}")))
        return points

    def _forecast_path(self, start: datetime) -> str:
        if self.region_id:
            return f"/regional/intensity/{_fmt(start)}/fw48h/regionid/{self.region_id}"
        if self.postcode:
            return f"/regional/intensity/{_fmt(start)}/fw48h/postcode/{self.postcode}"
        return f"/intensity/{_fmt(start)}/fw48h"

    def forecast(self, now: datetime, horizon: timedelta) -> Forecast:
        """From the half hour containing ``now``: asked for ``from`` on a boundary, the API also returns
        the period ending there, first; it is dropped."""
        slot = _slot(now)
        points = self._points(self._rows(self._forecast_path(slot)), "forecast")
        points = validate_points([p for p in points if p.end > slot], self.name)
        return Forecast(points, source=self.name, region=self.region)

    def current(self, now: datetime) -> float | None:
        """The half hour containing ``now``: its actual, else its forecast (national). Asked for a
        minute past the slot's start: on the boundary itself the API gives the period ending there."""
        if self.region_id or self.postcode:
            return super().current(now)  # no actuals: the forecast of the slot containing now
        rows = self._rows(f"/intensity/{_fmt(_slot(now) + timedelta(minutes=1))}")
        for field in ("actual", "forecast"):
            value = next((p.value for p in self._points(rows, field) if p.start <= now < p.end), None)
            if value is not None:
                return value
        return None

    def probe(self) -> str:
        """One cheap request (``/intensity``: the national half hour now), for a connection test."""
        body = get_json(self.session, self.name, f"{self.base_url}/intensity", credentials=self._credentials)
        data = require(body, "data", self.name)
        if not isinstance(data, list) or not data:
            raise ForecastError(f"{self.name}: /intensity returned no half hour")
        point = self._points(data[:1], "forecast")[0]
        return f"GB now {point.value:g} gCO2/kWh (forecast for the half hour from {point.start:%H:%M} UTC)"

    def actuals(self, start: datetime, end: datetime) -> list[IntensityPoint]:
        if self.region_id or self.postcode:
            return []  # the regional API publishes forecasts only
        rows = self._rows(f"/intensity/{_fmt(start)}/{_fmt(end)}")
        return validate_points(self._points(rows, "actual"), self.name) if rows else []
