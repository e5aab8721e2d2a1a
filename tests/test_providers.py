"""Each real-API provider against a real HTTP server on 127.0.0.1, in the provider's documented shape,
with faults."""
import base64
import json
import logging
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
import requests

from carbon_aware.grid.forecast import ForecastError, IntensityPoint, points_to_arrays, validate_points
from carbon_aware.planning.params import ParamsError, validate_params
from carbon_aware.planning.planner import Curve
from carbon_aware.grid.clients import base, build_provider, fetch_forecast
from carbon_aware.grid.clients.base import AuthError, ConnectionSettings, ProviderConnectionError
from carbon_aware.grid.clients.carbon_aware_sdk import CarbonAwareSDKProvider
from carbon_aware.grid.clients.electricitymaps import ElectricityMapsProvider
from carbon_aware.grid.clients.specs import check_connections, validate_provider_specs
from carbon_aware.grid.clients.neso import UKProvider
from carbon_aware.grid.clients.watttime import WattTimeProvider
from tests.fake_provider_server import FakeProviderServer, Reply

NOW = datetime(2026, 3, 1, 10, 10, tzinfo=timezone.utc)
SLOT = datetime(2026, 3, 1, 10, 0, tzinfo=timezone.utc)
UK_PATH = "/intensity/2026-03-01T10:00Z/fw48h"
FIXTURES = Path(__file__).parent / "fixtures" / "providers"


def fixture(name: str):
    """The reply a fixture holds (its ``_source`` names the documentation it follows)."""
    return json.loads((FIXTURES / f"{name}.json").read_text())["reply"]


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


def connection(monkeypatch, conn_id: str, conn_type: str, **fields) -> str:
    """An Airflow connection as a deployment defines one in the environment: ``AIRFLOW_CONN_<ID>``."""
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": conn_type, **fields}))
    return conn_id


def local(server: FakeProviderServer, login: str | None = None, password: str | None = None):
    """What a hook reads from a connection to ``server``."""
    return ConnectionSettings(server.url, login, password)


def neso(server: FakeProviderServer) -> str:
    """For tests without ``monkeypatch``: the id of a NESO connection to ``server``, unique to the server's
    port (it stays defined; nothing else names it)."""
    conn_id = f"neso_{server.url.rsplit(':', 1)[1]}"
    os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps({"conn_type": "neso", "host": server.url})
    return conn_id


# --- NESO Carbon Intensity API -------------------------------------------------------------------

def test_uk_national_forecast(server):
    server.script(UK_PATH, Reply({"data": uk_rows()}))
    forecast = UKProvider(settings=local(server), session=fast_session()).forecast(NOW, timedelta(hours=24))
    assert forecast.source == "uk" and len(forecast.points) == 96
    assert forecast.start == SLOT and forecast.points[0].duration == timedelta(minutes=30)
    assert forecast.points[1].value == 210


def test_uk_regional_by_id_and_postcode(server):
    regional = {"data": [{"regionid": 13, "dnoregion": "UKPN London", "shortname": "London",
                          "data": uk_rows()}]}
    server.script("/regional/intensity/2026-03-01T10:00Z/fw48h/regionid/13", Reply(regional))
    server.script("/regional/intensity/2026-03-01T10:00Z/fw48h/postcode/RG10",
                  Reply({"data": regional["data"][0]}))
    by_id = UKProvider(region_id=13, settings=local(server),
                       session=fast_session()).forecast(NOW, timedelta(hours=24))
    by_postcode = UKProvider(postcode="RG10", settings=local(server),
                             session=fast_session()).forecast(NOW, timedelta(hours=24))
    assert by_id.region == "GB-region-13" and len(by_id.points) == len(by_postcode.points) == 96


def test_timeout_is_retried_then_reported(server):
    server.script(UK_PATH, Reply({"data": uk_rows()}, delay=1.5))
    with pytest.raises(ForecastError, match="timed out"):
        UKProvider(settings=local(server),
                   session=base.http_session(retries=1, backoff_s=0.01)).forecast(NOW, timedelta(hours=24))
    assert len(server.hits(UK_PATH)) == 2


def test_500_is_retried_with_backoff_then_reported(server):
    server.script(UK_PATH, Reply({"error": "boom"}, status=500))
    with pytest.raises(ForecastError, match="HTTP 500"):
        UKProvider(settings=local(server), session=fast_session()).forecast(NOW, timedelta(hours=24))
    assert len(server.hits(UK_PATH)) == 4  # the first try and three retries


def test_429_then_200_succeeds(server):
    server.script(UK_PATH, Reply({"error": "slow down"}, status=429, headers={"Retry-After": "0"}),
                  Reply({"data": uk_rows()}))
    forecast = UKProvider(settings=local(server), session=fast_session()).forecast(NOW, timedelta(hours=24))
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
        UKProvider(settings=local(server), session=fast_session()).forecast(NOW, timedelta(hours=24))


def test_chain_falls_back_to_mock_on_a_short_forecast_and_records_why(server, monkeypatch):
    server.script(UK_PATH, Reply({"data": uk_rows(hours=3)}))
    spec = {"name": "uk", "conn_id": connection(monkeypatch, "neso_test", "neso", host=server.url)}
    forecast, reasons = fetch_forecast([spec], NOW, timedelta(hours=24), NOW + timedelta(hours=24))
    assert forecast.source == "mock"
    assert "forecast too short" in reasons[0] and reasons[1].startswith("history: the grid store holds 0 h")
    assert reasons[2].startswith("mock:") and len(reasons) == 3


def test_chain_uses_the_next_provider_in_order(server, monkeypatch):
    """Each provider's default connection, of its own type, gives its endpoint."""
    server.script(UK_PATH, Reply({"error": "down"}, status=503))
    server.script("/emissions/forecasts/current", Reply(sdk_body(hours=25)))
    connection(monkeypatch, "neso_default", "neso", host=server.url)
    connection(monkeypatch, "carbon_aware_sdk_default", "carbon_aware_sdk", host=server.url)
    specs = [{"name": "uk"}, {"name": "carbon_aware_sdk", "location": "westeurope"}]
    forecast, reasons = fetch_forecast(specs, NOW, timedelta(hours=24), NOW + timedelta(hours=24))
    assert forecast.source == "carbon_aware_sdk" and "HTTP 503" in reasons[0]


def test_unreachable_provider_falls_back(monkeypatch):
    closed = connection(monkeypatch, "neso_closed", "neso", host="http://127.0.0.1:9")
    spec = {"name": "uk", "conn_id": closed}
    forecast, reasons = fetch_forecast([spec], NOW, timedelta(hours=24), NOW + timedelta(hours=24))
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
    provider = ElectricityMapsProvider("DE", settings=local(server, password=token),
                                       session=fast_session())
    forecast = provider.forecast(NOW, timedelta(hours=20))
    assert ([p.value for p in forecast.points[:2]] == [300, 299]
            and forecast.points[0].duration == timedelta(hours=1))
    assert len(provider.actuals(SLOT - timedelta(hours=24), SLOT)) == 24
    assert provider.current(NOW) == 312
    assert all(r["headers"].get("auth-token") == token for r in server.requests)
    assert all("zone=DE" in r["query"] for r in server.requests)


def test_electricitymaps_bad_token_is_reported_without_the_token(server, caplog, monkeypatch):
    token = "em-wrong-token-456"
    server.script("/v3/carbon-intensity/forecast", Reply({"message": "unauthorized"}, status=401))
    conn_id = connection(monkeypatch, "em_wrong", "electricitymaps", host=server.url, password=token)
    with caplog.at_level(logging.DEBUG):
        forecast, reasons = fetch_forecast([{"name": "electricitymaps", "zone": "DE", "conn_id": conn_id}],
                                           NOW, timedelta(hours=24), NOW + timedelta(hours=24))
    assert forecast.source == "mock" and "401" in reasons[0]
    assert token not in caplog.text and token not in " ".join(reasons)


def test_electricitymaps_token_from_an_airflow_connection(server, monkeypatch):
    connection(monkeypatch, "electricitymaps_default", "electricitymaps", host=server.url,
               password="from-connection")
    server.script("/v3/carbon-intensity/forecast", Reply({"zone": "DE", "forecast": em_rows()}))
    ElectricityMapsProvider("DE", session=fast_session()).forecast(NOW, timedelta(hours=20))
    assert server.requests[-1]["headers"]["auth-token"] == "from-connection"


def test_electricitymaps_without_a_token_says_where_to_put_one(monkeypatch):
    monkeypatch.setenv("ELECTRICITYMAPS_API_TOKEN", "from-env")  # the old way: no longer read
    with pytest.raises(ForecastError, match="no API token: set the password of Airflow connection "
                                            "'electricitymaps_default' \\(type electricitymaps\\)"):
        ElectricityMapsProvider("DE")


def test_history_forecaster_over_electricitymaps_actuals(server, monkeypatch):
    """The free tier has no forecast: the history provider forecasts from /history."""
    server.script("/v3/carbon-intensity/history",
                  Reply({"zone": "DE", "history": em_rows(hours=72, start=SLOT - timedelta(hours=72),
                                                          value=lambda i: 300 + 100 * ((i % 24) > 12))}))
    connection(monkeypatch, "electricitymaps_default", "electricitymaps", host=server.url, password="t")
    provider = build_provider({"name": "electricitymaps", "zone": "DE", "history": True})
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
    provider = WattTimeProvider("CAISO_NORTH", settings=local(server, "user", "pw"),
                                session=fast_session())
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
        WattTimeProvider("CAISO_NORTH", settings=local(server, "u", "p"),
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
    forecast = CarbonAwareSDKProvider("westeurope", settings=local(server),
                                      session=fast_session()).forecast(NOW, timedelta(hours=20))
    assert len(forecast.points) == 48 and forecast.points[0].duration == timedelta(minutes=30)
    assert "location=westeurope" in server.requests[0]["query"]


def test_validation_rejects_overlapping_slots():
    a = IntensityPoint(SLOT, timedelta(hours=1), 100)
    b = IntensityPoint(SLOT + timedelta(minutes=30), timedelta(hours=1), 100)
    with pytest.raises(ForecastError, match="overlap"):
        validate_points([a, b], "x")


def test_unknown_provider_name():
    with pytest.raises(ValueError, match="provider.name: expected one of mock, trace, uk"):
        build_provider({"name": "nope"})


# --- specs from params and regions files: no endpoints, no secrets; connections of the provider's type ---

@pytest.fixture
def outbound(monkeypatch):
    """Every request any provider sends, wherever it goes (the real network included)."""
    sent = []
    send = requests.adapters.HTTPAdapter.send

    def recording(adapter, request, *args, **kwargs):
        sent.append(request.url)
        return send(adapter, request, *args, **kwargs)

    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", recording)
    return sent


@pytest.fixture
def prod_db(monkeypatch):
    """Another system's connection, with a password and a login, which no provider may ever use."""
    return connection(monkeypatch, "prod_db", "postgres", host="db.internal", login="admin",
                      password="db-secret")


def test_a_spec_cannot_send_another_connections_secret_anywhere(server, prod_db, outbound, caplog, capsys):
    spec = {"name": "electricitymaps", "zone": "DE", "base_url": server.url, "conn_id": prod_db}
    with pytest.raises(ParamsError, match=r"providers\[0\]\.base_url: unknown option for electricitymaps") \
            as refused:
        validate_params({"providers": [spec]})
    chains = [[spec], [{"name": "electricitymaps", "zone": "DE", "conn_id": prod_db}],
              [{"name": "watttime", "region": "CAISO_NORTH", "conn_id": prod_db}]]
    with caplog.at_level(logging.DEBUG):
        results = [fetch_forecast(specs, NOW, timedelta(hours=24), NOW + timedelta(hours=24))
                   for specs in chains]
        with pytest.raises(ValueError, match="'prod_db' has type 'postgres', expected 'electricitymaps'") \
                as built:
            build_provider(chains[1][0])
    assert server.requests == [] and outbound == []
    assert all(forecast.source == "mock" for forecast, _ in results)
    assert "base_url" in results[0][1][0] and "expected 'watttime'" in results[2][1][0]
    shown = [str(refused.value), str(built.value), caplog.text, *capsys.readouterr()]
    shown += [reason for _, reasons in results for reason in reasons]
    assert not [text for text in shown if "db-secret" in text]


@pytest.mark.parametrize("name, options", [
    ("uk", {}), ("electricitymaps", {"zone": "DE"}), ("watttime", {"region": "CAISO_NORTH"}),
    ("carbon_aware_sdk", {"location": "westeurope"}), ("mock", {}), ("trace", {"path": "x.csv"}),
])
def test_an_endpoint_in_a_params_spec_is_refused(name, options):
    with pytest.raises(ParamsError, match=rf"param providers: .*providers\[0\]\.base_url: unknown option "
                                          rf"for {name} \(allowed: "):
        validate_params({"providers": [{"name": name, **options, "base_url": "http://169.254.169.254"}]})


@pytest.mark.parametrize("key", ["auth-token", "access_token", "apikey", "API-Key", "Bearer", "clientSecret",
                                 "token", "session", "password"])
def test_secrets_in_any_spelling_are_refused_first_and_redacted(key, outbound):
    secret = "hunter2-9c1f"
    spec = {"name": "electricitymaps", "zone": "DE", "base_url": "http://x.invalid", key: secret}
    with pytest.raises(ParamsError) as refused:
        validate_params({"providers": [spec]})
    text = str(refused.value)
    assert f"providers[0]: secrets ({key}) do not belong in params; use an Airflow connection" in text
    assert secret not in text
    with pytest.raises(ValueError, match="do not belong in a provider spec") as built:
        build_provider(spec)
    forecast, reasons = fetch_forecast([spec], NOW, timedelta(hours=24), NOW + timedelta(hours=24))
    assert secret not in str(built.value) + " ".join(reasons) and outbound == []


@pytest.mark.parametrize("spec, error", [
    ({"name": "electricitymaps"}, r"providers\[0\]\.zone: required"),
    ({"name": "electricitymaps", "zone": "de"}, r"providers\[0\]\.zone: String should match pattern"),
    ({"name": "electricitymaps", "zone": "DE", "zoom": 3},
     r"providers\[0\]\.zoom: unknown option for electricitymaps \(allowed: zone, conn_id, history\)"),
    ({"name": "electricitymaps", "zone": "DE", "history": "yes"}, r"providers\[0\]\.history: .*boolean"),
    ({"name": "electricitymaps", "zone": "DE", "conn_id": "prod db;"}, r"providers\[0\]\.conn_id: String"),
    ({"name": "uk", "region_id": 18}, r"providers\[0\]\.region_id: .*less than or equal to 17"),
    ({"name": "uk", "region_id": "13"}, r"providers\[0\]\.region_id: .*valid integer"),
    ({"name": "uk", "postcode": "RG10 4AB"}, r"providers\[0\]\.postcode: String should match pattern"),
    ({"name": "watttime", "region": "CAISO NORTH"}, r"providers\[0\]\.region: String should match"),
    ({"name": "carbon_aware_sdk", "location": "west/europe"}, r"providers\[0\]\.location: String should"),
    ({"name": "mock", "timezone_name": "Mars/Olympus"}, r"providers\[0\]\.timezone_name: expected an IANA"),
    ({"name": "mock", "high": 6000}, r"providers\[0\]\.high: .*less than or equal to 5000"),
    ({"name": "mock", "peak_hour": 25}, r"providers\[0\]\.peak_hour: .*less than or equal to 24"),
    ({"name": "mock", "region": "a b"}, r"providers\[0\]\.region: String should match"),
    ({"name": "mock", "history": True}, r"providers\[0\]\.history: unknown option for mock"),
    ({"name": "trace", "path": "../../etc/passwd"}, r"providers\[0\]\.path: '../../etc/passwd' is outside"),
    ({"name": "trace", "path": "gb.csv", "forecast": "magic"}, r"providers\[0\]\.forecast: Input should be "
                                                               r"'auto', 'file', 'history' or 'oracle'"),
    ({"name": "trace", "path": "gb.csv", "replay_start": "yesterday"}, r"providers\[0\]\.replay_start: "),
    ({"name": "trace", "path": "gb.csv", "signal": "marginal"}, r"providers\[0\]\.signal: Input should be"),
    ({"name": "nope"}, r"providers\[0\]\.name: expected one of mock, trace, uk, electricitymaps"),
])
def test_unknown_options_and_wrong_types_are_refused_naming_the_field(spec, error, data_dir):
    with pytest.raises(ParamsError, match=rf"param providers: .*{error}"):
        validate_params({"providers": [spec]})
    with pytest.raises(ValueError, match=error.replace(r"providers\[0\]", "provider")):
        build_provider(spec)


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    """The deployment's data folder, holding one trace."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "gb.csv").write_text("Datetime (UTC),Carbon Intensity gCO₂eq/kWh (direct)\n")
    monkeypatch.setenv("CARBON_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


def test_valid_specs_are_normalized(data_dir, monkeypatch):
    specs = validate_provider_specs([
        {"name": "trace", "path": "gb.csv", "signal": "LCA", "replay_start": "2023-03-01T06:00:00Z"},
        {"name": "trace", "path": str(data_dir / "gb.csv"), "forecast": "history", "history": True},
        {"name": "uk", "postcode": "rg10", "conn_id": "neso_eu.1-a"}, {"name": "uk", "region_id": 13},
        {"name": "electricitymaps", "zone": "US-CAL-CISO", "history": True, "conn_id": None},
        {"name": "mock", "timezone_name": "Europe/London", "low": 50, "high": 500.5, "peak_hour": 19},
    ], "params")
    real = "gb.csv"  # relative to the data folder, where each worker finds it
    assert specs == [
        {"name": "trace", "path": real, "signal": "lca", "replay_start": "2023-03-01T06:00:00Z"},
        {"name": "trace", "path": real, "forecast": "history", "history": True},
        {"name": "uk", "postcode": "RG10", "conn_id": "neso_eu.1-a"}, {"name": "uk", "region_id": 13},
        {"name": "electricitymaps", "zone": "US-CAL-CISO", "history": True},
        {"name": "mock", "timezone_name": "Europe/London", "low": 50, "high": 500.5, "peak_hour": 19},
    ]
    assert validate_params({"providers": specs[2:4]}).providers == specs[2:4]
    with pytest.raises(ValueError, match=r"providers\[0\]\.path: no file 'missing.csv'"):
        validate_provider_specs([{"name": "trace", "path": "missing.csv"}], "a regions file")
    with pytest.raises(ValueError, match=r"providers\[1\]: expected an object with a name, got str"):
        validate_provider_specs([{"name": "mock"}, "uk"], "a regions file")


def test_a_connection_of_the_providers_type_gives_the_endpoint_and_the_token(server, monkeypatch):
    server.script("/v3/carbon-intensity/forecast", Reply({"zone": "DE", "forecast": em_rows()}))
    connection(monkeypatch, "em_eu", "electricitymaps", host=server.url, password="conn-token")
    params = validate_params({"providers": [{"name": "electricitymaps", "zone": "DE", "conn_id": "em_eu"}]})
    check_connections(params.providers)
    forecast, reasons = fetch_forecast(params.providers, NOW, timedelta(hours=20), NOW + timedelta(hours=20))
    assert forecast.source == "electricitymaps" and reasons == []
    assert server.requests[-1]["headers"]["auth-token"] == "conn-token"


def test_a_connection_as_host_schema_and_port_and_a_token_in_extra(server, monkeypatch):
    port = int(server.url.rsplit(":", 1)[1])
    connection(monkeypatch, "em_parts", "electricitymaps", host="127.0.0.1", schema="http", port=port,
               extra=json.dumps({"token": "extra-token"}))
    server.script("/v3/carbon-intensity/forecast", Reply({"zone": "DE", "forecast": em_rows()}))
    provider = ElectricityMapsProvider("DE", conn_id="em_parts", session=fast_session())
    provider.forecast(NOW, timedelta(hours=20))
    assert provider.base_url == server.url
    assert server.requests[-1]["headers"]["auth-token"] == "extra-token"


def test_watttime_logs_in_with_the_connections_login_at_the_connections_host(server, monkeypatch):
    server.script("/login", Reply({"token": "tok-1"}))
    server.script("/v3/forecast", Reply(watttime_body()))
    connection(monkeypatch, "watttime_default", "watttime", host=server.url, login="wt-user",
               password="wt-pass")
    forecast, reasons = fetch_forecast([{"name": "watttime", "region": "CAISO_NORTH"}], NOW,
                                       timedelta(hours=20), NOW + timedelta(hours=20))
    assert forecast.source == "watttime" and reasons == []
    basic = base64.b64encode(b"wt-user:wt-pass").decode()
    assert server.hits("/login")[0]["headers"]["Authorization"] == f"Basic {basic}"


def test_a_default_connection_of_another_type_is_never_read(server, monkeypatch, outbound):
    connection(monkeypatch, "electricitymaps_default", "http", host=server.url, password="http-secret")
    with pytest.raises(ProviderConnectionError, match="'electricitymaps_default' has type 'http', "
                                                      "expected 'electricitymaps'") as refused:
        ElectricityMapsProvider("DE")
    assert "http-secret" not in str(refused.value) and outbound == [] and server.requests == []


def test_a_missing_connection_is_an_error_unless_it_is_the_providers_default(server, monkeypatch):
    with pytest.raises(ProviderConnectionError, match="'em_nowhere' does not exist"):
        ElectricityMapsProvider("DE", conn_id="em_nowhere")
    assert UKProvider(conn_id="neso_default").base_url == "https://api.carbonintensity.org.uk"  # not defined
    assert CarbonAwareSDKProvider("westeurope").base_url == "http://localhost:8080"
    with pytest.raises(ForecastError, match="no API token"):  # undefined: the public API, but no token
        ElectricityMapsProvider("DE", conn_id="electricitymaps_default")


def test_check_connections_names_the_field_and_the_expected_type(prod_db, monkeypatch, caplog):
    connection(monkeypatch, "neso_eu", "neso", host="http://127.0.0.1:9")
    good = [{"name": "uk", "conn_id": "neso_eu"}, {"name": "mock"},
            {"name": "electricitymaps", "zone": "DE", "conn_id": "electricitymaps_default"}]
    check_connections(good)  # the default id need not exist: the built-in endpoint and the environment
    cases = [({"name": "watttime", "region": "CAISO_NORTH", "conn_id": prod_db},
              r"providers\[1\]\.conn_id: Airflow connection 'prod_db' has type 'postgres', "
              r"expected 'watttime'"),
             ({"name": "carbon_aware_sdk", "location": "westeurope", "conn_id": "nowhere"},
              r"providers\[1\]\.conn_id: Airflow connection 'nowhere' does not exist "
              r"\(expected a connection of type 'carbon_aware_sdk'\)")]
    for spec, error in cases:
        with pytest.raises(ValueError, match=error) as refused:
            check_connections([good[0], spec])
        assert "db-secret" not in str(refused.value) + caplog.text
    with pytest.raises(ValueError, match=r"providers\[0\]\.conn_id: .* \(include/regions.yaml\)"):
        check_connections([{"name": "uk", "conn_id": "nowhere"}], "include/regions.yaml")


# --- parsing: gaps, nulls, signals, boundaries, windows, units, 401/403 -------------------------------

def em_provider(server, **options):
    return ElectricityMapsProvider("DE", settings=local(server, password="t"),
                                   session=fast_session(), **options)


def without_null_entries(body):
    return {**body, "history": [row for row in body["history"] if row["carbonIntensity"] is not None]}


@pytest.mark.parametrize("endpoint", ["forecast", "history"])
def test_electricitymaps_a_missing_hour_stays_a_gap(server, endpoint):
    body = (fixture("electricitymaps_forecast_gap") if endpoint == "forecast"
            else without_null_entries(fixture("electricitymaps_history_null")))
    server.script(f"/v3/carbon-intensity/{endpoint}", Reply(body))
    provider = em_provider(server)
    points = (provider.forecast(NOW, timedelta(hours=20)).points if endpoint == "forecast"
              else provider.actuals(SLOT - timedelta(hours=24), SLOT))
    missing = SLOT + timedelta(hours=3) if endpoint == "forecast" else SLOT - timedelta(hours=7)
    assert len(points) == 23 and all(p.duration == timedelta(hours=1) for p in points)
    assert not [p for p in points if p.start <= missing + timedelta(minutes=30) < p.end]
    curve = Curve(*points_to_arrays(points))
    around = (missing - timedelta(hours=1)).timestamp()
    assert np.isnan(curve.window_means(np.array([around]), 3 * 3600.0))[0]  # the planner sees the hole


def test_electricitymaps_history_skips_a_null_entry(server):
    server.script("/v3/carbon-intensity/history", Reply(fixture("electricitymaps_history_null")))
    points = em_provider(server).actuals(SLOT - timedelta(hours=24), SLOT)
    null_hour = SLOT - timedelta(hours=7)
    assert len(points) == 23 and null_hour not in [p.start for p in points]
    assert points[0].value == 250 and points[-1].value == 250 + 3 * 23


def test_electricitymaps_asks_for_direct_intensity_and_names_the_signal(server):
    server.script("/v3/carbon-intensity/forecast", Reply(fixture("electricitymaps_forecast_gap")))
    server.script("/v3/carbon-intensity/history",
                  Reply(without_null_entries(fixture("electricitymaps_history_null"))))
    server.script("/v3/carbon-intensity/latest", Reply({"zone": "DE", "carbonIntensity": 301,
                                                        "datetime": "2026-03-01T10:00:00.000Z"}))
    provider = em_provider(server)
    forecast = provider.forecast(NOW, timedelta(hours=20))
    provider.actuals(SLOT - timedelta(hours=24), SLOT)
    provider.current(NOW)
    assert all("emissionFactorType=direct" in r["query"] for r in server.requests)
    assert forecast.source == "electricitymaps" and "direct (operational) intensity" in forecast.notes
    lifecycle = em_provider(server, signal="lifecycle")
    assert "lifecycle (LCA) intensity" in lifecycle.forecast(NOW, timedelta(hours=20)).notes
    assert "emissionFactorType=lifecycle" in server.requests[-1]["query"]
    with pytest.raises(ForecastError, match="asked for lifecycle intensity, the API answered direct"):
        lifecycle.actuals(SLOT - timedelta(hours=24), SLOT)  # the history fixture says direct
    with pytest.raises(ValueError, match="signal: expected 'direct' or 'lifecycle'"):
        em_provider(server, signal="marginal")


@pytest.mark.parametrize("now", [SLOT, NOW])
def test_uk_forecast_from_a_half_hour_boundary_starts_with_the_slot_containing_now(server, now):
    server.script(UK_PATH, Reply(fixture("neso_fw48h_from_boundary")))
    forecast = UKProvider(settings=local(server), session=fast_session()).forecast(now, timedelta(hours=2))
    assert forecast.start == SLOT and forecast.points[0].value == 240 and len(forecast.points) == 5


def test_uk_current_is_the_half_hour_containing_now(server):
    stale = uk_rows(hours=2, start=SLOT - timedelta(hours=2))
    for row in stale[:3]:
        row["intensity"]["actual"] = 300  # published actuals end 1 h to 2 h before now
    server.script("/intensity/2026-03-01T08:00Z/2026-03-01T10:00Z", Reply({"data": stale}))
    now_slot = fixture("neso_current_half_hour")
    server.script("/intensity/2026-03-01T10:01Z", Reply(now_slot))
    provider = UKProvider(settings=local(server), session=fast_session())
    assert provider.current(NOW) == 263  # the actual of 10:00-10:30
    now_slot["data"][0]["intensity"]["actual"] = None
    server.script("/intensity/2026-03-01T10:01Z", Reply(now_slot))
    assert provider.current(NOW) == 266  # no actual yet: its forecast


def test_carbon_aware_sdk_accepts_a_window_size(server):
    server.script("/emissions/forecasts/current", Reply(fixture("carbon_aware_sdk_window")))
    forecast = CarbonAwareSDKProvider("westeurope", settings=local(server),
                                      session=fast_session()).forecast(NOW, timedelta(hours=2))
    points = forecast.points
    assert len(points) == 36 and all(p.duration == timedelta(minutes=5) for p in points)
    assert all(a.end == b.start for a, b in zip(points, points[1:])) and points[1].value == 398.5
    assert any("60-minute" in note for note in forecast.notes)


@pytest.mark.parametrize("damage", ["irregular spacing", "mixed durations", "window size mismatch"])
def test_carbon_aware_sdk_still_rejects_inconsistent_overlaps(server, damage):
    body = fixture("carbon_aware_sdk_window")
    rows = body[0]["forecastData"]
    if damage == "irregular spacing":
        rows[10]["timestamp"] = (datetime.fromisoformat(rows[10]["timestamp"])
                                 + timedelta(minutes=2)).isoformat()
    elif damage == "mixed durations":
        rows[10]["duration"] = 30
    else:
        body[0]["windowSize"] = 30
    server.script("/emissions/forecasts/current", Reply(body))
    with pytest.raises(ForecastError, match="slots overlap"):
        CarbonAwareSDKProvider("westeurope", settings=local(server),
                               session=fast_session()).forecast(NOW, timedelta(hours=2))


def watttime_provider(server):
    return WattTimeProvider("CAISO_NORTH", settings=local(server, "user", "wt-secret-pw"),
                            session=fast_session())


@pytest.mark.parametrize("units, factor", [("lbs_co2_per_mwh", 0.453592), ("kg_co2_per_mwh", 1.0),
                                           ("g_co2_per_kwh", 1.0)])
def test_watttime_converts_known_units(server, units, factor):
    body = fixture("watttime_forecast")
    body["meta"]["units"] = units
    server.script("/login", Reply({"token": "tok-1"}))
    server.script("/v3/forecast", Reply(body))
    forecast = watttime_provider(server).forecast(NOW, timedelta(hours=1))
    assert forecast.points[0].value == pytest.approx(900.0 * factor)


@pytest.mark.parametrize("units", ["percent", "usd_per_mwh", "tons_co2_per_mwh"])
def test_watttime_refuses_unknown_units_naming_them(server, units):
    body = fixture("watttime_forecast")
    body["meta"]["units"] = units
    server.script("/login", Reply({"token": "tok-1"}))
    server.script("/v3/forecast", Reply(body))
    with pytest.raises(ForecastError, match=f"units {units!r}"):
        watttime_provider(server).forecast(NOW, timedelta(hours=1))


def test_a_401_asks_for_the_credentials_of_the_connection(server, monkeypatch):
    token = "em-expired-token-789"
    server.script("/v3/carbon-intensity/forecast", Reply({"message": "unauthorized"}, status=401))
    conn_id = connection(monkeypatch, "em_expired", "electricitymaps", host=server.url, password=token)
    forecast, reasons = fetch_forecast([{"name": "electricitymaps", "zone": "DE", "conn_id": conn_id}],
                                       NOW, timedelta(hours=24), NOW + timedelta(hours=24))
    assert "401 unauthorized: check the credentials of connection 'em_expired'" in reasons[0]
    assert token not in " ".join(reasons)


def test_a_403_gives_the_apis_reason_and_watttime_does_not_log_in_again(server):
    server.script("/login", Reply({"token": "tok-secret-1"}))
    server.script("/v3/forecast", Reply(fixture("watttime_403_region"), status=403))
    with pytest.raises(AuthError, match="403 forbidden: Invalid scope. You do not have sufficient access") \
            as refused:
        watttime_provider(server).forecast(NOW, timedelta(hours=1))
    assert len(server.hits("/login")) == 1 and len(server.hits("/v3/forecast")) == 1
    assert len(str(refused.value).split("forbidden: ", 1)[1]) <= base.MESSAGE_CHARS


def test_a_403_message_never_carries_the_credentials_of_its_request(server):
    server.script("/login", Reply({"token": "tok-secret-1"}))
    server.script("/v3/forecast", Reply({"detail": "token tok-secret-1 may not read PJM"}, status=403))
    with pytest.raises(AuthError, match=r"403 forbidden: token \*\*\* may not read PJM$") as refused:
        watttime_provider(server).forecast(NOW, timedelta(hours=1))
    assert "tok-secret-1" not in str(refused.value)
    server.script("/login", Reply({"detail": "wrong password wt-secret-pw"}, status=403))
    refused_login = (r"forbidden: wrong password \*\*\* \(login refused: check the credentials of the "
                     r"provider's settings")
    with pytest.raises(AuthError, match=refused_login) as refused:
        watttime_provider(server).forecast(NOW, timedelta(hours=1))
    assert "wt-secret-pw" not in str(refused.value)
