"""The provider interface and the HTTP plumbing the real-API providers share."""
from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any, Callable
from urllib.parse import parse_qsl, unquote, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError, ReadTimeoutError
from urllib3.util.retry import Retry

from carbon_aware.grid.forecast import Forecast, ForecastError, IntensityPoint

CONNECT_TIMEOUT_S = 3.05
READ_TIMEOUT_S = 10.0


class Provider(ABC):
    """A source of carbon intensity. ``forecast`` returns validated UTC slots covering ``now``
    onwards; ``actuals`` returns measured values where the source has them (else [])."""

    name: str = "provider"
    region: str | None = None
    conn_type: str | None = None  # the Airflow connection type an HTTP provider reads, and its default id
    default_conn_id: str | None = None
    # The grid's own signal at its own times, which the grid store keeps. Not the mock curve, not a
    # replayed trace (another year's values stamped with today's times): a later real run would plan on
    # them as if the grid had done that today.
    real_signal: bool = True

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
             credentials: str | None = None, **kwargs) -> Any:
    """GET and decode JSON; every failure becomes a ForecastError whose text is safe to log
    (it names the URL path and status, never headers, where tokens travel). ``credentials`` says
    where the credentials come from, for a 401."""
    path = url.split("?", 1)[0]
    try:
        response = session.get(url, timeout=timeout or (CONNECT_TIMEOUT_S, READ_TIMEOUT_S), **kwargs)
    except requests.Timeout:
        raise ForecastError(f"{source}: timed out calling {path}") from None
    except requests.RequestException as error:
        if _timed_out(error):  # retries exhausted on read timeouts arrive wrapped in a ConnectionError
            raise ForecastError(f"{source}: timed out calling {path}") from None
        raise ForecastError(f"{source}: cannot reach {path} ({type(error).__name__})") from None
    if response.status_code == 401:
        raise Unauthorized(f"{source}: {path} answered 401 unauthorized: check the credentials of "
                           f"{credentials or 'its connection'}")
    if response.status_code == 403:
        raise Forbidden(f"{source}: {path} answered 403 forbidden: {api_message(response, kwargs)}")
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
    """The API refused the request (401 or 403)."""


class Unauthorized(AuthError):
    """401: the credentials are missing, wrong or expired."""


class Forbidden(AuthError):
    """403: the credentials are fine but not for this (a region outside the plan, an endpoint not in it)."""


MESSAGE_CHARS = 160


def api_message(response: requests.Response, request_kwargs: dict) -> str:
    """The reason an error body gives, on one line, truncated, with every credential the request
    carried (its headers, its basic-auth password) blanked out."""
    text = _body_reason(response) or "(no message)"
    sent = response.request.headers if response.request is not None else {}
    secrets = [str(v) for v in (request_kwargs.get("headers") or {}).values()]
    secrets += [str(sent["Authorization"])] if "Authorization" in sent else []  # basic auth, computed
    auth = request_kwargs.get("auth")
    secrets += [str(v) for v in auth] if isinstance(auth, tuple) else []
    for secret in secrets:
        for part in [secret, *secret.split()]:
            if len(part) >= 4 and part not in ("Bearer", "Basic"):
                text = text.replace(part, "***")
    text = " ".join(text.split())
    return text if len(text) <= MESSAGE_CHARS else text[:MESSAGE_CHARS - 3] + "..."


def _body_reason(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text or ""
    for key in ("message", "error", "detail", "msg"):
        value = body.get(key) if isinstance(body, dict) else None
        if isinstance(value, list) and value:  # FastAPI: {"detail": [{"msg": ...}]}
            value = value[0]
        if isinstance(value, dict):
            value = value.get("message") or value.get("msg")
        if value:
            return str(value)
    return json.dumps(body)


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


@dataclass(frozen=True)
class ConnectionSettings:
    """Where a provider calls and with what: its service's connection (base URL, login, secret and the
    extra fields of the connection's form), as a hook or ``connection_settings`` reads it."""

    base_url: str | None = None
    login: str | None = None
    password: str | None = None
    conn_id: str | None = None  # the connection read, if one was
    extra: dict[str, Any] = field(default_factory=dict)

    def credentials_of(self) -> str:
        """Where the credentials came from, for an error message (never the credentials)."""
        return f"connection {self.conn_id!r}" if self.conn_id else "the provider's settings"

    def option(self, name: str, conn_type: str) -> Any:
        """An extra field of the connection's form, stored plain or as ``extra__<type>__<name>``."""
        value = self.extra.get(name)
        return value if value not in (None, "") else self.extra.get(f"extra__{conn_type}__{name}") or None


class ProviderConnectionError(ValueError):
    """A connection named for a provider is missing or of another type (its secrets were not read)."""


def checked_connection(conn_id: str, conn_type: str, default_id: str | None = None,
                       read: Callable[[str], Any] | None = None) -> Any | None:
    """The connection ``conn_id`` if it has type ``conn_type``; None if it is not defined and is
    the provider's ``default_id``. Any other id must exist; a connection of another type is refused
    before anything in it is used. ``read`` fetches a connection (a hook's ``get_connection``); by
    default Airflow's, else (no Airflow) the ``AIRFLOW_CONN_<ID>`` environment variable."""
    connection = _read_connection(conn_id, read)
    if connection is None:
        if conn_id == default_id:
            return None
        raise ProviderConnectionError(f"Airflow connection {conn_id!r} does not exist "
                                      f"(expected a connection of type {conn_type!r})")
    if connection.conn_type != conn_type:
        raise ProviderConnectionError(f"Airflow connection {conn_id!r} has type {connection.conn_type!r}, "
                                      f"expected {conn_type!r}: not used")
    return connection


def _read_connection(conn_id: str, read: Callable[[str], Any] | None) -> Any | None:
    try:
        from carbon_aware.compat import AirflowNotFoundException  # only inside Airflow
        if read is None:
            from airflow.sdk import Connection

            read = Connection.get
    except ImportError:
        return _environment_connection(conn_id) if read is None else read(conn_id)
    try:
        return read(conn_id)
    except AirflowNotFoundException:
        return None
    except Exception as error:  # a secrets backend down, the API server unreachable
        raise ProviderConnectionError(f"Airflow connection {conn_id!r} could not be read "
                                      f"({type(error).__name__})") from None


def _environment_connection(conn_id: str) -> SimpleNamespace | None:
    """Outside Airflow (the ``python -m carbon_aware`` CLI): a connection defined as Airflow defines
    one in the environment, ``AIRFLOW_CONN_<ID>`` holding JSON or a URI."""
    text = (os.environ.get(f"AIRFLOW_CONN_{conn_id.upper()}") or "").strip()
    if not text:
        return None
    if text.startswith("{"):
        try:
            fields = json.loads(text)
        except ValueError:
            raise ProviderConnectionError(f"connection {conn_id!r}: AIRFLOW_CONN_{conn_id.upper()} is "
                                          "not valid JSON") from None
        extra = fields.get("extra") or {}
    else:
        uri = urlsplit(text)
        fields = {"conn_type": uri.scheme.replace("-", "_"), "host": unquote(uri.hostname or ""),
                  "login": unquote(uri.username or "") or None,
                  "password": unquote(uri.password or "") or None,
                  "schema": unquote(uri.path.lstrip("/")) or None, "port": uri.port}
        extra = dict(parse_qsl(uri.query))
        if "__extra__" in extra:
            extra = extra["__extra__"]
    if isinstance(extra, str):
        try:
            extra = json.loads(extra) if extra else {}
        except ValueError:
            extra = {}
    return SimpleNamespace(conn_type=fields.get("conn_type"), host=fields.get("host"),
                           login=fields.get("login"), password=fields.get("password"),
                           schema=fields.get("schema"), port=fields.get("port"),
                           extra_dejson=extra if isinstance(extra, dict) else {})


def provider_connection(conn_id: str, conn_type: str, default_id: str | None = None,
                        read: Callable[[str], Any] | None = None) -> ConnectionSettings:
    """A service's endpoint (the connection's host: a full URL, or host + schema + port), credentials
    (login; password or extra ``token``) and extra fields, from the connection ``conn_id`` of type
    ``conn_type``; nothing (the client's public URL, no credentials) if it is ``default_id`` and not
    defined. Secrets go to Airflow's log masker, never the log."""
    connection = checked_connection(conn_id, conn_type, default_id, read)
    if connection is None:
        return ConnectionSettings()
    extra = connection.extra_dejson or {}
    settings = ConnectionSettings(_connection_url(connection), connection.login or None,
                                  connection.password or extra.get("token") or None, conn_id,
                                  {k: v for k, v in extra.items() if k != "token"})
    if settings.password:
        mask(settings.password)
    return settings


def connection_settings(conn_type: str, conn_id: str | None = None,
                        default_id: str | None = None) -> ConnectionSettings:
    """A service's settings from its connection (``conn_id``, else ``default_id``): inside Airflow
    through the connection type's hook (``carbon_aware.hooks``), outside it from the environment."""
    conn_id = conn_id or default_id
    if not conn_id:
        return ConnectionSettings()
    try:
        from carbon_aware.hooks import hook_class

        hook = hook_class(conn_type)
    except ImportError:  # no Airflow
        return provider_connection(conn_id, conn_type, default_id)
    return hook(conn_id=conn_id).settings()


def mask(secret: str) -> None:
    """Hand a secret to Airflow's log masker (a no-op outside Airflow)."""
    try:
        from carbon_aware.compat import mask_secret
    except ImportError:
        return
    mask_secret(secret)


def _connection_url(connection: Any) -> str | None:
    host = (connection.host or "").strip().rstrip("/")
    if not host or "://" in host:
        return host or None
    port = f":{connection.port}" if connection.port else ""
    return f"{connection.schema or 'https'}://{host}{port}"
