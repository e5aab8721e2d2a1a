"""Each real-API provider against a real HTTP server on 127.0.0.1, in the provider's documented shape,
with faults."""
import json
import logging
from datetime import datetime, timedelta, timezone

import pytest

from carbon_aware.forecast import ForecastError, IntensityPoint, validate_points
from carbon_aware.providers import base, build_provider, fetch_forecast
from carbon_aware.providers.base import AuthError
from carbon_aware.providers.carbon_aware_sdk import CarbonAwareSDKProvider
from carbon_aware.providers.electricitymaps import ElectricityMapsProvider
from carbon_aware.providers.uk import UKProvider
from carbon_aware.providers.watttime import WattTimeProvider
from tests.fake_provider_server import FakeProviderServer, Reply

NOW = datetime(2026, 3, 1, 10, 10, tzinfo=timezone.utc)
SLOT = datetime(2026, 3, 1, 10, 0, tzinfo=timezone.utc)
UK_PATH = "/intensity/2026-03-01T10:00Z/fw48h"


def uk_rows(hours=48, start=SLOT, value=lambda i: 200 + (i % 12) * 10):
    rows = []
    for i in range(hours * 2):
        a, b = start + timedelta(minutes=30 * i), start + timedelta(minutes=30 * (i + 1))
        rows.append({"from": a.strftime("%Y-%m-%dT%H:%MZ"), "to": b.strftime("%Y-%m-%dT%H:%MZ"),
                     "intensity": {"forecast": value(i), "actual": None, "index": "moderate"}})
    return rows


def em_rows(hours=24, start=SLOT, value=lambda i: 300 - i):
    return [{"zone": "DE", "carbonIntensity": value(i),
             "datetime": (start + timedelta(hours=i)).isoformat().replace("+00:00", ".000Z"),
             "updatedAt": "2026-03-01T09:55:00.000Z", "isEstimated": True} for i in range(hours)]


@pytest.fixture
def server():
    with FakeProviderServer() as running:
        yield running


@pytest.fixture(autouse=True)
def fast_timeouts(monkeypatch):
    monkeypatch.setattr(base, "READ_TIMEOUT_S", 0.5)


def fast_session():
    return base.http_session(retries=3, backoff_s=0.01)


# --- NESO Carbon Intensity API -------------------------------------------------------------------

def test_uk_national_forecast(server):
    server.script(UK_PATH, Reply({"data": uk_rows()}))
    forecast = UKProvider(base_url=server.url, session=fast_session()).forecast(NOW, timedelta(hours=24))
    assert forecast.source == "uk" and len(forecast.points) == 96
    assert forecast.start == SLOT and forecast.points[0].duration == timedelta(minutes=30)
    assert forecast.points[1].value == 210


def test_uk_regional_by_id_and_postcode(server):
    regional = {"data": [{"regionid": 13, "dnoregion": "UKPN London", "shortname": "London",
                          "data": uk_rows()}]}
    server.script("/regional/intensity/2026-03-01T10:00Z/fw48h/regionid/13", Reply(regional))
    server.script("/regional/intensity/2026-03-01T10:00Z/fw48h/postcode/RG10",
                  Reply({"data": regional["data"][0]}))
    by_id = UKProvider(region_id=13, base_url=server.url,
                       session=fast_session()).forecast(NOW, timedelta(hours=24))
    by_postcode = UKProvider(postcode="RG10", base_url=server.url,
                             session=fast_session()).forecast(NOW, timedelta(hours=24))
    assert by_id.region == "GB-region-13" and len(by_id.points) == len(by_postcode.points) == 96


def test_timeout_is_retried_then_reported(server):
    server.script(UK_PATH, Reply({"data": uk_rows()}, delay=1.5))
    with pytest.raises(ForecastError, match="timed out"):
        UKProvider(base_url=server.url,
                   session=base.http_session(retries=1, backoff_s=0.01)).forecast(NOW, timedelta(hours=24))
    assert len(server.hits(UK_PATH)) == 2


def test_500_is_retried_with_backoff_then_reported(server):
    server.script(UK_PATH, Reply({"error": "boom"}, status=500))
    with pytest.raises(ForecastError, match="HTTP 500"):
        UKProvider(base_url=server.url, session=fast_session()).forecast(NOW, timedelta(hours=24))
    assert len(server.hits(UK_PATH)) == 4  # the first try and three retries


def test_429_then_200_succeeds(server):
    server.script(UK_PATH, Reply({"error": "slow down"}, status=429, headers={"Retry-After": "0"}),
                  Reply({"data": uk_rows()}))
    forecast = UKProvider(base_url=server.url, session=fast_session()).forecast(NOW, timedelta(hours=24))
    assert len(forecast.points) == 96 and len(server.hits(UK_PATH)) == 2


@pytest.mark.parametrize("reply, reason", [
    (Reply(raw="{not json"), "malformed JSON"),
    (Reply({"data": []}), "no data points"),
    (Reply({"nodata": 1}), "missing field 'data'"),
    (Reply(raw='{"data": [{"from": "2026-03-01T10:00Z", "to": "2026-03-01T10:30Z", '
               '"intensity": {"forecast": NaN}}]}'), "not a number"),
    (Reply({"data": uk_rows(value=lambda i: -5)}), "negative intensity"),
    (Reply({"data": uk_rows(value=lambda i: 2500)}), "implausible intensity"),
    (Reply({"data": uk_rows()[:3] + uk_rows()[2:]}), "duplicated timestamp"),
    (Reply({"data": list(reversed(uk_rows()))}), "not sorted"),
    (Reply({"data": [{"from": "2026-03-01T10:00", "to": "2026-03-01T10:30Z",
                      "intensity": {"forecast": 5}}]}), "no timezone"),
])
def test_bad_responses_are_rejected_with_a_reason(server, reply, reason):
    server.script(UK_PATH, reply)
    with pytest.raises(ForecastError, match=reason):
        UKProvider(base_url=server.url, session=fast_session()).forecast(NOW, timedelta(hours=24))


def test_chain_falls_back_to_mock_on_a_short_forecast_and_records_why(server):
    server.script(UK_PATH, Reply({"data": uk_rows(hours=3)}))
    forecast, reasons = fetch_forecast([{"name": "uk", "base_url": server.url}], NOW, timedelta(hours=24),
                                       NOW + timedelta(hours=24))
    assert forecast.source == "mock"
    assert "forecast too short" in reasons[0] and reasons[1].startswith("history: the grid store holds 0 h")
    assert reasons[2].startswith("mock:") and len(reasons) == 3


def test_chain_uses_the_next_provider_in_order(server):
    server.script(UK_PATH, Reply({"error": "down"}, status=503))
    server.script("/emissions/forecasts/current", Reply(sdk_body(hours=25)))
    specs = [{"name": "uk", "base_url": server.url},
             {"name": "carbon_aware_sdk", "location": "westeurope", "base_url": server.url}]
    forecast, reasons = fetch_forecast(specs, NOW, timedelta(hours=24), NOW + timedelta(hours=24))
    assert forecast.source == "carbon_aware_sdk" and "HTTP 503" in reasons[0]


def test_unreachable_provider_falls_back(server):
    forecast, reasons = fetch_forecast([{"name": "uk", "base_url": "http://127.0.0.1:9"}], NOW,
                                       timedelta(hours=24), NOW + timedelta(hours=24))
    assert forecast.source == "mock" and "cannot reach" in reasons[0]


# --- Electricity Maps -------------------------------------------------------------------------------

def test_electricitymaps_forecast_history_latest_with_token_header(server, caplog):
    token = "em-secret-token-123"
    server.script("/v3/carbon-intensity/forecast",
                  Reply({"zone": "DE", "forecast": em_rows(), "updatedAt": "2026-03-01T09:55:00.000Z"}))
    server.script("/v3/carbon-intensity/history",
                  Reply({"zone": "DE", "history": em_rows(start=SLOT - timedelta(hours=24))}))
    server.script("/v3/carbon-intensity/latest",
                  Reply({"zone": "DE", "carbonIntensity": 312, "datetime": "2026-03-01T10:00:00.000Z"}))
    provider = ElectricityMapsProvider("DE", token=token, base_url=server.url, session=fast_session())
    forecast = provider.forecast(NOW, timedelta(hours=20))
    assert ([p.value for p in forecast.points[:2]] == [300, 299]
            and forecast.points[0].duration == timedelta(hours=1))
    assert len(provider.actuals(SLOT - timedelta(hours=24), SLOT)) == 24
    assert provider.current(NOW) == 312
    assert all(r["headers"].get("auth-token") == token for r in server.requests)
    assert all("zone=DE" in r["query"] for r in server.requests)


def test_electricitymaps_bad_token_is_reported_without_the_token(server, caplog):
    token = "em-wrong-token-456"
    server.script("/v3/carbon-intensity/forecast", Reply({"message": "unauthorized"}, status=401))
    with caplog.at_level(logging.DEBUG):
        forecast, reasons = fetch_forecast([{"name": "electricitymaps", "zone": "DE", "token": token,
                                             "base_url": server.url}],
                                           NOW, timedelta(hours=24), NOW + timedelta(hours=24))
    assert forecast.source == "mock" and "401" in reasons[0]
    assert token not in caplog.text and token not in " ".join(reasons)


def test_electricitymaps_token_from_environment(server, monkeypatch):
    monkeypatch.setenv("ELECTRICITYMAPS_API_TOKEN", "from-env")
    server.script("/v3/carbon-intensity/forecast", Reply({"zone": "DE", "forecast": em_rows()}))
    ElectricityMapsProvider("DE", conn_id=None, base_url=server.url,
                            session=fast_session()).forecast(NOW, timedelta(hours=20))
    assert server.requests[-1]["headers"]["auth-token"] == "from-env"


def test_electricitymaps_token_from_an_airflow_connection(server, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_ELECTRICITYMAPS_DEFAULT",
                       json.dumps({"conn_type": "http", "password": "from-connection"}))
    monkeypatch.setenv("ELECTRICITYMAPS_API_TOKEN", "from-env")  # the connection wins
    server.script("/v3/carbon-intensity/forecast", Reply({"zone": "DE", "forecast": em_rows()}))
    ElectricityMapsProvider("DE", base_url=server.url,
                            session=fast_session()).forecast(NOW, timedelta(hours=20))
    assert server.requests[-1]["headers"]["auth-token"] == "from-connection"


def test_electricitymaps_without_a_token_says_where_to_put_one(monkeypatch):
    monkeypatch.delenv("ELECTRICITYMAPS_API_TOKEN", raising=False)
    with pytest.raises(ForecastError, match="ELECTRICITYMAPS_API_TOKEN"):
        ElectricityMapsProvider("DE", conn_id=None)


def test_history_forecaster_over_electricitymaps_actuals(server):
    """The free tier has no forecast: the history provider forecasts from /history."""
    server.script("/v3/carbon-intensity/history",
                  Reply({"zone": "DE", "history": em_rows(hours=72, start=SLOT - timedelta(hours=72),
                                                          value=lambda i: 300 + 100 * ((i % 24) > 12))}))
    provider = build_provider({"name": "electricitymaps", "zone": "DE", "token": "t",
                               "base_url": server.url, "history": True})
    forecast = provider.forecast(NOW, timedelta(hours=24))
    assert forecast.source == "history(electricitymaps)" and forecast.end >= NOW + timedelta(hours=24)
    assert len(forecast.actuals) == 72


# --- WattTime ---------------------------------------------------------------------------------------

def watttime_body(start=SLOT, hours=24):
    return {"data": [{"point_time": (start + timedelta(minutes=5 * i)).isoformat(), "value": 1000.0 - i}
                     for i in range(hours * 12)],
            "meta": {"data_point_period_seconds": 300, "region": "CAISO_NORTH", "signal_type": "co2_moer",
                     "units": "lbs_co2_per_mwh", "generated_at": SLOT.isoformat()}}


def test_watttime_login_forecast_units_and_token_refresh(server):
    server.script("/login", Reply({"token": "tok-1"}), Reply({"token": "tok-2"}))
    server.script("/v3/forecast", Reply(watttime_body()), Reply({"error": "expired"}, status=401),
                  Reply(watttime_body()))
    provider = WattTimeProvider("CAISO_NORTH", username="user", password="pw", conn_id=None,
                                base_url=server.url, session=fast_session())
    forecast = provider.forecast(NOW, timedelta(hours=20))
    assert forecast.points[0].value == pytest.approx(1000 * 0.453592)
    assert forecast.points[0].duration == timedelta(minutes=5)
    provider.forecast(NOW, timedelta(hours=20))  # 401: logs in again and retries once
    logins = server.hits("/login")
    assert len(logins) == 2 and logins[0]["headers"]["Authorization"].startswith("Basic ")
    assert server.hits("/v3/forecast")[-1]["headers"]["Authorization"] == "Bearer tok-2"
    assert "signal_type=co2_moer" in server.hits("/v3/forecast")[0]["query"]


def test_watttime_bad_credentials(server):
    server.script("/login", Reply({"error": "bad"}, status=403))
    with pytest.raises(AuthError, match="403"):
        WattTimeProvider("CAISO_NORTH", username="u", password="p", conn_id=None, base_url=server.url,
                         session=fast_session()).forecast(NOW, timedelta(hours=2))


# --- Carbon Aware SDK -------------------------------------------------------------------------------

def sdk_body(hours=24):
    data = [{"location": "westeurope", "timestamp": (SLOT + timedelta(minutes=30 * i)).isoformat(),
             "duration": 30, "value": 250 + i}
            for i in range(hours * 2)]
    return [{"generatedAt": SLOT.isoformat(), "location": "westeurope", "dataStartAt": SLOT.isoformat(),
             "dataEndAt": (SLOT + timedelta(hours=hours)).isoformat(), "windowSize": 30,
             "optimalDataPoints": data[:1], "forecastData": data}]


def test_carbon_aware_sdk_forecast(server):
    server.script("/emissions/forecasts/current", Reply(sdk_body()))
    forecast = CarbonAwareSDKProvider("westeurope", base_url=server.url,
                                      session=fast_session()).forecast(NOW, timedelta(hours=20))
    assert len(forecast.points) == 48 and forecast.points[0].duration == timedelta(minutes=30)
    assert "location=westeurope" in server.requests[0]["query"]


def test_validation_rejects_overlapping_slots():
    a = IntensityPoint(SLOT, timedelta(hours=1), 100)
    b = IntensityPoint(SLOT + timedelta(minutes=30), timedelta(hours=1), 100)
    with pytest.raises(ForecastError, match="overlap"):
        validate_points([a, b], "x")


def test_unknown_provider_name():
    with pytest.raises(ValueError, match="provider name"):
        build_provider({"name": "nope"})
