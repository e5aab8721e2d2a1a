"""WattTime v3: login with basic auth for a bearer token (refreshed on expiry), then ``/v3/forecast``.

WattTime's ``co2_moer`` is a *marginal* signal in lbs/MWh; it is converted to g/kWh (x 0.453592). Other
mass-per-energy units are converted too; anything else (an index, a percent, dollars) is refused."""
from __future__ import annotations

import time
from datetime import datetime, timedelta

from carbon_aware.grid.forecast import (Forecast, ForecastError, parse_time, slots_from_instants,
                                        validate_points)
from carbon_aware.grid.clients.base import (AuthError, ConnectionSettings, Forbidden, Provider, Unauthorized,
                                            connection_settings, get_json, http_session, mask, number,
                                            require)

BASE_URL = "https://api.watttime.org"
CONN_TYPE, CONN_ID = "watttime", "watttime_default"  # Airflow connection type, default id
LBS_PER_MWH_TO_G_PER_KWH = 0.453592
# meta.units -> factor to g/kWh; kg/MWh and g/kWh are the same quantity
UNIT_FACTORS = {"lbs_co2_per_mwh": LBS_PER_MWH_TO_G_PER_KWH, "kg_co2_per_mwh": 1.0, "g_co2_per_kwh": 1.0}
TOKEN_LIFETIME_S = 25 * 60  # WattTime tokens last 30 minutes; renew a little early


class WattTimeProvider(Provider):
    name = "watttime"
    conn_type, default_conn_id = CONN_TYPE, CONN_ID

    def __init__(self, region: str, conn_id: str | None = None, settings: ConnectionSettings | None = None,
                 session=None):
        """Endpoint, username (login) and password from ``settings`` (what the watttime hook reads
        from its connection), else from the connection ``conn_id`` (default ``watttime_default``)."""
        self.region = region
        settings = settings or connection_settings(self.conn_type, conn_id, self.default_conn_id)
        self._username, self._password = settings.login, settings.password
        if not (self._username and self._password):
            raise ForecastError(f"{self.name}: no credentials: set the login and password of Airflow "
                                f"connection {settings.conn_id or conn_id or self.default_conn_id!r} "
                                f"(type {self.conn_type})")
        self._credentials = settings.credentials_of()
        self.base_url = (settings.base_url or BASE_URL).rstrip("/")
        self.session = session or http_session()
        self._token: str | None = None
        self._token_expires = 0.0

    def _login(self) -> str:
        try:
            body = get_json(self.session, self.name, f"{self.base_url}/login",
                            auth=(self._username, self._password), credentials=self._credentials)
        except Forbidden as error:  # WattTime answers 403 to a wrong username or password
            raise AuthError(f"{error} (login refused: check the credentials of "
                            f"{self._credentials})") from None
        self._token = require(body, "token", self.name, "login response")
        self._token_expires = time.monotonic() + TOKEN_LIFETIME_S
        mask(self._token)
        return self._token

    def _get(self, path: str, params: dict) -> dict:
        if not self._token or time.monotonic() >= self._token_expires:
            self._login()
        try:
            return self._fetch(path, params)
        except Unauthorized:  # expired early or revoked: log in again once (a 403 is not about the token)
            self._login()
            return self._fetch(path, params)

    def _fetch(self, path: str, params: dict) -> dict:
        return get_json(self.session, self.name, f"{self.base_url}{path}", params=params,
                        headers={"Authorization": f"Bearer {self._token}"}, credentials=self._credentials)

    def forecast(self, now: datetime, horizon: timedelta) -> Forecast:
        body = self._get("/v3/forecast", {
            "region": self.region, "signal_type": "co2_moer",
            "horizon_hours": max(1, min(72, int(horizon.total_seconds() // 3600) + 1))})
        rows = require(body, "data", self.name)
        if not isinstance(rows, list):
            raise ForecastError(f"{self.name}: 'data' is not a list")
        factor = self._to_g_per_kwh((body.get("meta") or {}).get("units", "lbs_co2_per_mwh"))
        times = [parse_time(require(r, "point_time", self.name, "data entry")) for r in rows]
        values = [number(require(r, "value", self.name, "data entry"), self.name, "value") * factor
                  for r in rows]
        period = (body.get("meta") or {}).get("data_point_period_seconds")
        points = slots_from_instants(times, values,
                                     timedelta(seconds=period) if period else timedelta(minutes=5))
        return Forecast(validate_points(points, self.name), source=self.name, region=self.region,
                        notes=["marginal emissions (co2_moer), not average intensity"])

    def probe(self) -> str:
        """A login and one cheap authenticated request (``/v3/my-access``: the regions and signals the
        account may read), for a connection test."""
        body = self._get("/v3/my-access", {})
        groups = require(body, "signal_types", self.name, "my-access response")
        if not isinstance(groups, list):
            raise ForecastError(f"{self.name}: 'signal_types' is not a list")
        regions = {r.get("region") for g in groups if isinstance(g, dict)
                   for r in (g.get("regions") or []) if isinstance(r, dict)}
        signals = sorted(str(g.get("signal_type")) for g in groups if isinstance(g, dict))
        regions.discard(None)
        return f"logged in; access to {len(regions)} region(s), signals {', '.join(signals) or 'none'}"

    def _to_g_per_kwh(self, units: str) -> float:
        if not isinstance(units, str) or units not in UNIT_FACTORS:
            raise ForecastError(f"{self.name}: units {units!r} are not a mass of CO2 per energy this "
                                f"provider converts ({', '.join(UNIT_FACTORS)})")
        return UNIT_FACTORS[units]
