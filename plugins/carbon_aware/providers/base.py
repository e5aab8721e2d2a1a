"""The provider interface and the HTTP plumbing the real-API providers share."""
from __future__ import annotations

import json
import logging
import os
from abc import ABC, abstractmethod
from datetime import datetime, timedelta
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError, ReadTimeoutError
from urllib3.util.retry import Retry

from carbon_aware.forecast import Forecast, ForecastError, IntensityPoint

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 3.05
READ_TIMEOUT_S = 10.0


class Provider(ABC):
    """A source of carbon intensity. ``forecast`` returns validated UTC slots covering ``now``
    onwards; ``actuals`` returns measured values where the source has them (else [])."""

    name: str = "provider"
    region: str | None = None

    @abstractmethod
    def forecast(self, now: datetime, horizon: timedelta) -> Forecast: ...

    def actuals(self, start: datetime, end: datetime) -> list[IntensityPoint]:
        return []

    @property
    def actuals_source(self) -> str:
        """The name the grid store files this provider's actuals under."""
        return self.name

    def current(self, now: datetime) -> float | None:
        """The intensity now: the latest actual if the source has one, else the forecast's."""
        recent = self.actuals(now - timedelta(hours=2), now)
        if recent:
            return recent[-1].value
        forecast = self.forecast(now, timedelta(hours=1))
        return forecast.value_at(now) if forecast.points else None


def http_session(retries: int = 3, backoff_s: float = 0.5) -> requests.Session:
    """One session per provider: retries with exponential backoff on 429 and 5xx (honouring Retry-After)."""
    retry = Retry(total=retries, connect=retries, read=retries, status=retries, backoff_factor=backoff_s,
                  status_forcelist=(429, 500, 502, 503, 504), allowed_methods=frozenset({"GET"}),
                  respect_retry_after_header=True, raise_on_status=False)
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def get_json(session: requests.Session, source: str, url: str, timeout: tuple[float, float] | None = None,
             **kwargs) -> Any:
    """GET and decode JSON; every failure becomes a ForecastError whose text is safe to log
    (it names the URL path and status, never headers, where tokens travel)."""
    path = url.split("?", 1)[0]
    try:
        response = session.get(url, timeout=timeout or (CONNECT_TIMEOUT_S, READ_TIMEOUT_S), **kwargs)
    except requests.Timeout:
        raise ForecastError(f"{source}: timed out calling {path}") from None
    except requests.RequestException as error:
        if _timed_out(error):  # retries exhausted on read timeouts arrive wrapped in a ConnectionError
            raise ForecastError(f"{source}: timed out calling {path}") from None
        raise ForecastError(f"{source}: cannot reach {path} ({type(error).__name__})") from None
    if response.status_code == 401 or response.status_code == 403:
        raise AuthError(f"{source}: {path} answered {response.status_code} (check the token)")
    if response.status_code >= 400:
        raise ForecastError(f"{source}: {path} answered HTTP {response.status_code}")
    try:
        return response.json()
    except (ValueError, json.JSONDecodeError):
        raise ForecastError(f"{source}: {path} returned malformed JSON") from None


def _timed_out(error: Exception) -> bool:
    reason = getattr(error.args[0], "reason", None) if error.args else None
    # urllib3 makes NewConnectionError (refused, unreachable) a subclass of ConnectTimeoutError
    return (isinstance(reason, (ReadTimeoutError, ConnectTimeoutError))
            and not isinstance(reason, NewConnectionError))


class AuthError(ForecastError):
    pass


def require(mapping: Any, key: str, source: str, where: str = "response") -> Any:
    if not isinstance(mapping, dict) or key not in mapping or mapping[key] is None:
        raise ForecastError(f"{source}: {where} is missing field {key!r}")
    return mapping[key]


def number(value: Any, source: str, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise ForecastError(f"{source}: field {field!r} is not a number ({value!r})") from None
    return float(value)


def resolve_secret(conn_id: str | None, env_var: str | None, field: str = "password") -> str | None:
    """A token from an Airflow Connection (when Airflow is there and the id is set) or an environment
    variable. The value is registered with Airflow's log masker and never logged here."""
    secret = None
    if conn_id:
        try:
            from airflow.sdk import Connection  # only inside Airflow; the core never needs it

            connection = Connection.get(conn_id)
            secret = getattr(connection, field, None)
            if not secret and field == "password":
                secret = (connection.extra_dejson or {}).get("token")
        except ImportError:
            pass
        except Exception as error:  # a missing connection falls through to the environment
            log.info("connection %r not usable (%s); trying the environment", conn_id, type(error).__name__)
    if not secret and env_var:
        secret = os.environ.get(env_var) or None
    if secret:
        try:
            from airflow.sdk.log import mask_secret

            mask_secret(secret)
        except ImportError:
            pass
    return secret
