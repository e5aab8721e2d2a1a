"""Every carbon-intensity source behind one interface, and the ordered chain with a mock fallback."""
from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from carbon_aware.forecast import Forecast, ForecastError
from carbon_aware.providers.base import Provider

log = logging.getLogger(__name__)

PROVIDER_NAMES = ("mock", "trace", "uk", "electricitymaps", "watttime", "carbon_aware_sdk")


def build_provider(spec: dict[str, Any], now: datetime | None = None) -> Provider:
    """``spec`` is ``{"name": ..., **options}``. ``history: true`` wraps a source's actuals in the
    history forecaster (for sources without a forecast)."""
    options = dict(spec)
    name = options.pop("name", None)
    use_history = options.pop("history", False)
    if name == "mock":
        from carbon_aware.providers.mock import MockProvider

        provider: Provider = MockProvider(**options)
    elif name == "trace":
        from carbon_aware.providers.trace import TraceProvider

        replay_start = options.pop("replay_start", None)
        if replay_start is not None:
            from carbon_aware.forecast import parse_time

            provider = TraceProvider.replaying(real_now=now, trace_now=parse_time(str(replay_start)), **options)
        else:
            provider = TraceProvider(**options)
    elif name == "uk":
        from carbon_aware.providers.uk import UKProvider

        provider = UKProvider(**options)
    elif name == "electricitymaps":
        from carbon_aware.providers.electricitymaps import ElectricityMapsProvider

        provider = ElectricityMapsProvider(**options)
    elif name == "watttime":
        from carbon_aware.providers.watttime import WattTimeProvider

        provider = WattTimeProvider(**options)
    elif name == "carbon_aware_sdk":
        from carbon_aware.providers.carbon_aware_sdk import CarbonAwareSDKProvider

        provider = CarbonAwareSDKProvider(**options)
    else:
        raise ValueError(f"provider name: expected one of {', '.join(PROVIDER_NAMES)}, got {name!r}")
    if use_history:
        from carbon_aware.providers.history import HistoryProvider

        provider = HistoryProvider(provider)
    return provider


def fetch_forecast(
    specs: list[dict[str, Any]],
    now: datetime,
    horizon: timedelta,
    needed_until: datetime,
    mock: dict[str, Any] | None = None,
    anchor: datetime | None = None,
) -> tuple[Forecast, list[str]]:
    """Try each provider in order; the first whose forecast validates and covers [now, needed_until]
    wins. Otherwise the mock curve. Returns the forecast and every reason a provider was skipped.
    ``anchor`` is the real moment a replayed trace maps to its ``replay_start`` (the run's first plan);
    a re-plan later in the run passes it so that the replay does not restart at ``now``."""
    reasons: list[str] = []
    for spec in specs:
        try:
            provider = build_provider(spec, anchor or now)
            forecast = provider.forecast(now, horizon)
            forecast.require_coverage(now, needed_until)
            return forecast, reasons
        except (ForecastError, ValueError, TypeError, OSError) as error:
            reason = f"{spec.get('name')}: {error}" if not str(error).startswith(str(spec.get("name"))) else str(error)
            log.warning("provider skipped: %s", reason)
            reasons.append(reason)
    from carbon_aware.providers.mock import MockProvider

    forecast = MockProvider(**(mock or {})).forecast(now, horizon)
    if specs:
        forecast.notes.append("fallback: every configured provider failed")
    return forecast, reasons
