"""What a provider spec from params or a regions file may hold: one model per provider, nothing else.

Specs are untrusted (the trigger form, the API's ``conf``): no endpoint, no token, no session. Endpoints
and credentials come from the provider's Airflow connection (of the provider's own type) or the
deployment's environment; a spec may only name which connection (``conn_id``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal
from zoneinfo import available_timezones

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, field_validator

CONN_ID = r"^[A-Za-z0-9_.-]{1,250}$"
ENDPOINT_KEYS = {"base_url", "url", "host", "port", "endpoint", "schema"}


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)  # no "13", no true for 1


class _HTTPSpec(_Spec):
    conn_id: str | None = Field(default=None, pattern=CONN_ID)
    history: StrictBool = False


class MockSpec(_Spec):
    name: Literal["mock"]
    region: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    timezone_name: str | None = None
    low: float | None = Field(default=None, ge=0, le=5000)
    high: float | None = Field(default=None, ge=0, le=5000)
    trough_hour: float | None = Field(default=None, ge=0, le=24)
    peak_hour: float | None = Field(default=None, ge=0, le=24)

    @field_validator("timezone_name")
    @classmethod
    def _known_zone(cls, name: str | None) -> str | None:
        if name is not None and name not in available_timezones():
            raise ValueError("expected an IANA time zone name such as UTC or Europe/London")
        return name


class TraceSpec(_Spec):
    name: Literal["trace"]
    path: str = Field(min_length=1, max_length=4096)
    replay_start: str | None = None
    forecast: Literal["auto", "file", "history", "oracle"] | None = None
    signal: Literal["direct", "lca"] | None = None
    history: StrictBool = False

    @field_validator("replay_start")
    @classmethod
    def _iso_time(cls, text: str | None) -> str | None:
        if text is not None:
            from carbon_aware.grid.forecast import parse_time

            parse_time(text)  # ISO 8601 with a timezone, else a ValueError saying so
        return text

    @field_validator("signal", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value


class UKSpec(_HTTPSpec):
    name: Literal["uk"]
    region_id: int | None = Field(default=None, ge=1, le=17)
    postcode: str | None = Field(default=None, pattern=r"^[A-Z]{1,2}[0-9][A-Z0-9]?$")

    @field_validator("postcode", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value


class ElectricityMapsSpec(_HTTPSpec):
    name: Literal["electricitymaps"]
    zone: str = Field(max_length=32, pattern=r"^[A-Z]{2}(-[A-Z0-9]+)*$")


class WattTimeSpec(_HTTPSpec):
    name: Literal["watttime"]
    region: str = Field(pattern=r"^[A-Za-z0-9_]{1,64}$")


class CarbonAwareSDKSpec(_HTTPSpec):
    name: Literal["carbon_aware_sdk"]
    location: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")


SPEC_MODELS: dict[str, type[_Spec]] = {
    "mock": MockSpec, "trace": TraceSpec, "uk": UKSpec, "electricitymaps": ElectricityMapsSpec,
    "watttime": WattTimeSpec, "carbon_aware_sdk": CarbonAwareSDKSpec,
}


def validate_provider_specs(providers: Any, where: str) -> list[dict[str, Any]]:
    """Each spec checked against its provider's model and normalized (plain dicts with ``name``, only
    the options given; a trace's path relative to the data folder, checked to be in it).
    ``where`` says whose specs (params, a regions file).
    Raises ValueError naming ``providers[i].<field>`` and what is allowed; never echoes a secret."""
    if not isinstance(providers, list):
        raise ValueError(f"providers: expected a list of provider specs, got {type(providers).__name__}")
    return [validate_spec(spec, f"providers[{i}]", where) for i, spec in enumerate(providers)]


def validate_spec(spec: Any, field: str = "provider", where: str = "a provider spec") -> dict[str, Any]:
    """One spec, normalized; errors name ``field`` (e.g. ``providers[0]``)."""
    from carbon_aware.redaction import looks_secret, redact

    if not isinstance(spec, dict):
        raise ValueError(f"{field}: expected an object with a name, got {type(spec).__name__}")
    secrets = sorted(str(key) for key in spec if looks_secret(key))
    if secrets:
        raise ValueError(f"{field}: secrets ({', '.join(secrets)}) do not belong in {where}; "
                         "use an Airflow connection")
    model = SPEC_MODELS.get(spec.get("name")) if isinstance(spec.get("name"), str) else None
    if model is None:
        raise ValueError(f"{field}.name: expected one of {', '.join(SPEC_MODELS)}, "
                         f"got {redact(spec.get('name'))!r}")
    try:
        checked = model.model_validate(spec)
    except ValidationError as error:
        raise ValueError(_describe(error, field, spec["name"], model)) from None
    normalized = {"name": spec["name"], **checked.model_dump(exclude_unset=True, exclude_none=True)}
    if isinstance(checked, TraceSpec):  # kept relative: each worker reads it from its own data folder
        from carbon_aware.settings import data_dir

        normalized["path"] = str(trace_path(checked.path, f"{field}.path").relative_to(data_dir()))
    return normalized


def trace_path(name: str, field: str) -> Path:
    """A trace named in a spec, as a real path inside the data folder (``settings.data_dir``): relative
    names are read from there; anything that leads out is refused (``settings.OutsideRoot``)."""
    from carbon_aware import settings

    return settings.resolve_in(settings.data_dir(), name, field)


def _describe(error: ValidationError, field: str, provider: str, model: type[_Spec]) -> str:
    """Every problem as ``providers[i].<field>: what is wrong and what is allowed``."""
    shared = [f for f in _HTTPSpec.model_fields if f in model.model_fields]
    allowed = ", ".join([f for f in model.model_fields if f not in shared and f != "name"] + shared)
    parts = []
    for item in error.errors():
        name = ".".join([field, *(str(part) for part in item["loc"])])
        if item["type"] == "extra_forbidden":
            message = f"unknown option for {provider} (allowed: {allowed})"
            if item["loc"][-1] in ENDPOINT_KEYS:
                message += "; the endpoint is the host of the provider's Airflow connection"
        elif item["type"] == "missing":
            message = "required"
        else:
            message = item["msg"].removeprefix("Value error, ")
        parts.append(f"{name}: {message}")
    return "; ".join(parts)


def check_connections(specs: list[dict[str, Any]], where: str = "params") -> None:
    """Each connection a spec names exists and has its provider's type (checked at plan time, before
    any waiting). Raises ValueError naming ``providers[i].conn_id`` and the expected type; the
    connection's secrets are never read or shown."""
    from carbon_aware.grid.clients import provider_class
    from carbon_aware.grid.clients.base import checked_connection

    for i, spec in enumerate(specs):
        conn_id = spec.get("conn_id") if isinstance(spec, dict) else None
        if not conn_id:
            continue
        try:
            provider = provider_class(spec.get("name"))
            if provider.conn_type is None:
                raise ValueError(f"{provider.name} reads no Airflow connection")
            checked_connection(conn_id, provider.conn_type, provider.default_conn_id)
        except ValueError as error:
            suffix = "" if where == "params" else f" ({where})"
            raise ValueError(f"providers[{i}].conn_id: {error}{suffix}") from None
