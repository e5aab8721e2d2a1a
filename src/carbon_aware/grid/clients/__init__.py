"""Every carbon-intensity source behind one interface, and the ordered chain:
providers, then the history forecaster on the grid store, then the mock curve."""
from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from importlib import import_module
from typing import TYPE_CHECKING, Any

from carbon_aware.grid.forecast import Forecast, ForecastError

if TYPE_CHECKING:  # the DAG file imports this package: numpy and requests load only when a chain runs
    from carbon_aware.grid.clients.base import Provider
    from carbon_aware.grid.store import GridStore

log = logging.getLogger(__name__)

_CLASSES = {"mock": "mock.MockProvider", "trace": "trace.TraceProvider", "uk": "neso.UKProvider",
            "electricitymaps": "electricitymaps.ElectricityMapsProvider",
            "watttime": "watttime.WattTimeProvider",
            "carbon_aware_sdk": "carbon_aware_sdk.CarbonAwareSDKProvider"}
PROVIDER_NAMES = tuple(_CLASSES)


def provider_class(name: Any) -> type[Provider]:
    """The class behind a provider name, imported on first use."""
    if name not in _CLASSES:
        raise ValueError(f"provider name: expected one of {', '.join(PROVIDER_NAMES)}, got {name!r}")
    module, _, cls = _CLASSES[name].partition(".")
    return getattr(import_module(f"carbon_aware.grid.clients.{module}"), cls)


def build_provider(spec: dict[str, Any], now: datetime | None = None) -> Provider:
    """``spec`` is ``{"name": ..., **options}``, validated again here (``specs.validate_spec``: no
    endpoint or credential ever comes from a spec). An API client gets its endpoint and credentials
    from its service's connection (the spec's ``conn_id``, else the type's default id), read through
    the connection type's hook (``base.connection_settings``). ``history: true`` wraps a source's
    actuals in the history forecaster (for sources without a forecast)."""
    from carbon_aware.grid.clients.specs import validate_spec

    options = validate_spec(spec)
    name = options.pop("name")
    use_history = options.pop("history", False)
    replay_start = options.pop("replay_start", None)
    provider_type = provider_class(name)
    if provider_type.conn_type is not None:
        from carbon_aware.grid.clients.base import connection_settings

        options["settings"] = connection_settings(provider_type.conn_type, options.pop("conn_id", None),
                                                  provider_type.default_conn_id)
    if name == "trace":
        from carbon_aware.grid.clients.specs import trace_path

        options["path"] = trace_path(options["path"], "path")
    if replay_start is not None:
        from carbon_aware.grid.forecast import parse_time

        provider = provider_type.replaying(real_now=now, trace_now=parse_time(replay_start), **options)
    else:
        provider = provider_type(**options)
    if use_history:
        from carbon_aware.grid.clients.history import HistoryProvider

        provider = HistoryProvider(provider)
    return provider


def spec_region(spec: dict[str, Any], provider: Provider | None = None) -> str | None:
    """The region a spec's data is filed under in the grid store (also when the provider cannot be built)."""
    if provider is not None:
        return provider.region
    name = spec.get("name")
    if name == "uk":
        return (f"GB-region-{spec['region_id']}" if spec.get("region_id")
                else f"GB-{spec['postcode']}" if spec.get("postcode") else "GB")
    field = {"electricitymaps": "zone", "watttime": "region", "carbon_aware_sdk": "location"}.get(name, "")
    return spec.get(field)


def record(provider: Provider, forecast: Forecast, now: datetime, store: GridStore) -> None:
    """Keep what a provider returned: its forecast (with the issue time) and its last day of actuals,
    under the provider's own source names. Only a real signal is grid data: the mock curve and a
    replayed trace (``provider.real_signal`` false) are never kept, and neither are our own forecasts
    (history, oracle). Never raises."""
    if not provider.real_signal:
        return
    region = provider.region or "unknown"
    try:
        ours = forecast.source.startswith("history") or forecast.source.endswith((":history", ":oracle"))
        if not ours:
            store.add_forecast(region, forecast.source, now, forecast.points, provider=provider)
        actuals = forecast.actuals or provider.actuals(now - timedelta(hours=24), now)
        store.add_actuals(region, provider.actuals_source, actuals, provider=provider)
    except (ForecastError, ValueError, OSError) as error:
        log.warning("grid store: not recorded from %s: %s", provider.name, error)


def fetch_forecast(specs: list[dict[str, Any]], now: datetime, horizon: timedelta, needed_until: datetime,
                   mock: dict[str, Any] | None = None, store: GridStore | None = None,
                   anchor: datetime | None = None) -> tuple[Forecast, list[str]]:
    """Try each provider in order; the first whose forecast validates and covers [now, needed_until]
    wins, and what it returned is recorded in the grid store. If all fail: the history forecaster on
    the store's actuals for the providers' regions; the mock curve only when the store holds less than
    a day for each of them. Returns the forecast and every reason a step was skipped or taken.
    ``anchor`` is the real moment a replayed trace maps to its ``replay_start`` (the run's first plan);
    a re-plan later in the run passes it so that the replay does not restart at ``now``."""
    from carbon_aware.grid.store import GridStore

    store = store or GridStore()
    reasons: list[str] = []
    tried: list[tuple[str, str | None]] = []
    for spec in specs:
        provider = None
        try:
            provider = build_provider(spec, anchor or now)
            forecast = provider.forecast(now, horizon)
            forecast.require_coverage(now, needed_until)
            record(provider, forecast, now, store)
            return forecast, reasons
        except (ForecastError, ValueError, TypeError, OSError) as error:
            reason = (f"{spec.get('name')}: {error}" if not str(error).startswith(str(spec.get("name")))
                      else str(error))
            log.warning("provider skipped: %s", reason)
            reasons.append(reason)
        region = spec_region(spec, provider)
        if region and spec.get("name") != "mock":
            tried.append((region, provider.actuals_source if provider is not None else None))
    for region, source in dict.fromkeys(tried):
        forecast = _stored_history_forecast(store, region, source, now, horizon, needed_until, reasons)
        if forecast is not None:
            return forecast, reasons
    from carbon_aware.grid.clients.mock import MockProvider

    forecast = MockProvider(**(mock or {})).forecast(now, horizon)
    if specs:
        forecast.notes.append("fallback: every configured provider failed")
        reasons.append("mock: the original curve (no provider answered and the grid store holds "
                       "less than a day of actuals for their regions)")
    return forecast, reasons


def _stored_history_forecast(store: GridStore, region: str, source: str | None, now: datetime,
                             horizon: timedelta, needed_until: datetime,
                             reasons: list[str]) -> Forecast | None:
    import numpy as np

    from carbon_aware.grid.forecaster import MIN_HISTORY_H, WINDOW_H, HistoryModel
    from carbon_aware.grid.clients.history import forecast_from_hourly

    hour = now.astimezone(timezone.utc).replace(minute=0, second=0, microsecond=0)
    try:
        hourly, used = store.hourly_actuals(region, hour, WINDOW_H, source)
    except OSError as error:
        reasons.append(f"history: {error}")  # the store names its database and why it failed
        return None
    held = int((~np.isnan(hourly)).sum())
    if held < MIN_HISTORY_H:
        reasons.append(f"history: the grid store holds {held} h of actuals for {region} in the last "
                       f"{WINDOW_H // 24} days; need {MIN_HISTORY_H}")
        return None
    try:
        forecast = forecast_from_hourly(hourly, hour, horizon + timedelta(hours=1), HistoryModel.load(),
                                        f"history(store:{used})", region)
        forecast.require_coverage(now, needed_until)
    except (ForecastError, ValueError) as error:
        reasons.append(f"history: {error}")
        return None
    latest = hour - timedelta(hours=int(len(hourly) - 1 - np.flatnonzero(~np.isnan(hourly))[-1]))
    reasons.append(f"history: planned on the history forecaster over {held} h of stored actuals "
                   f"for {region} from {used} (the latest ends {latest:%Y-%m-%d %H:%M} UTC)")
    return forecast
