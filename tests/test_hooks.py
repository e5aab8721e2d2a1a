"""The hooks of the four grid-data services: each connection tested against responses built from the
service's own documentation and recorded responses in public repositories (each fixture's ``_source``
names them), served by a real HTTP server on 127.0.0.1; their forms as Airflow's providers manager
reads them; the connection through Airflow's CLI."""
import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from carbon_aware import hooks
from carbon_aware.grid.clients import base, build_provider
from carbon_aware.grid.clients.base import ConnectionSettings, ProviderConnectionError, connection_settings
from carbon_aware.hooks import CONNECTION_TYPES, hook_class
from carbon_aware.hooks.carbon_aware_sdk import CarbonAwareSdkHook
from carbon_aware.hooks.electricitymaps import ElectricityMapsHook
from carbon_aware.hooks.neso import NesoHook
from carbon_aware.hooks.watttime import WattTimeHook
from tests.fake_provider_server import Reply
from tests.test_providers import fast_timeouts, server  # noqa: F401  (the clients' tests' fixtures)

FIXTURES = Path(__file__).parent / "fixtures" / "providers"
TOKEN = "em-hook-secret-4d1e"
PASSWORD = "wt-hook-secret-77aa"
HOOKS = {"electricitymaps": ElectricityMapsHook, "watttime": WattTimeHook,
         "carbon_aware_sdk": CarbonAwareSdkHook, "neso": NesoHook}


def fixture(name: str):
    """The reply a fixture holds (its ``_source`` names where its shape comes from)."""
    return json.loads((FIXTURES / f"{name}.json").read_text())["reply"]




def connection(monkeypatch, conn_id: str, conn_type: str, **fields) -> str:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": conn_type, **fields}))
    return conn_id


def service(server, conn_type: str) -> dict:
    """Script the service's test endpoint with its fixture; the connection's fields for ``server``."""
    if conn_type == "electricitymaps":
        server.script("/v3/carbon-intensity/latest", Reply(fixture("electricitymaps_latest")))
        return {"password": TOKEN}
    if conn_type == "watttime":
        server.script("/login", Reply({"token": "wt-bearer-1"}))
        server.script("/v3/my-access", Reply(fixture("watttime_my_access")))
        return {"login": "wt-user", "password": PASSWORD}
    if conn_type == "carbon_aware_sdk":
        server.script("/locations", Reply(fixture("carbon_aware_sdk_locations")))
        return {}
    server.script("/intensity", Reply(fixture("neso_current_half_hour")))
    return {}


# --- test_connection against the local server -------------------------------------------------------

@pytest.mark.parametrize("conn_type, path, summary", [
    ("electricitymaps", "/v3/carbon-intensity/latest", "DE now 312 gCO2eq/kWh (direct)"),
    ("watttime", "/v3/my-access", "logged in; access to 1 region(s), signals co2_moer, health_damage"),
    ("carbon_aware_sdk", "/locations", "the WebAPI knows 4 location(s)"),
    ("neso", "/intensity", "GB now 266 gCO2/kWh (forecast for the half hour from 10:00 UTC)"),
])
def test_each_hook_tests_its_connection_with_one_request_to_its_service(server, monkeypatch, conn_type,
                                                                        path, summary):
    conn_id = connection(monkeypatch, f"{conn_type}_local", conn_type, host=server.url,
                         **service(server, conn_type))
    ok, message = hook_class(conn_type)(conn_id=conn_id).test_connection()
    assert ok, message
    assert message == f"{HOOKS[conn_type].hook_name} connection {conn_id!r} works ({server.url}): {summary}"
    assert len(server.hits(path)) == 1 and TOKEN not in message and PASSWORD not in message
    request = server.hits(path)[0]
    if conn_type == "electricitymaps":
        assert request["headers"]["auth-token"] == TOKEN
        assert request["query"] == "zone=DE&emissionFactorType=direct"
    if conn_type == "watttime":
        assert request["headers"]["Authorization"] == "Bearer wt-bearer-1"
        assert server.hits("/login")[0]["headers"]["Authorization"].startswith("Basic ")


def test_the_electricitymaps_test_zone_and_signal_come_from_the_connections_fields(server, monkeypatch):
    service(server, "electricitymaps")
    conn_id = connection(monkeypatch, "em_fr", "electricitymaps", host=server.url, password=TOKEN,
                         extra={"zone": "FR", "signal": "lifecycle"})
    ok, message = ElectricityMapsHook(conn_id=conn_id).test_connection()
    assert not ok  # the fixture answers direct: asked for lifecycle, refused
    assert "asked for lifecycle intensity, the API answered direct" in message
    assert server.requests[0]["query"] == "zone=FR&emissionFactorType=lifecycle"


@pytest.mark.parametrize("conn_type, path", [("electricitymaps", "/v3/carbon-intensity/latest"),
                                             ("watttime", "/login")])
def test_a_refused_secret_fails_the_test_naming_the_connection_not_the_secret(server, monkeypatch,
                                                                             conn_type, path):
    fields = service(server, conn_type)
    server.script(path, Reply({"message": "unauthorized"}, status=401))
    conn_id = connection(monkeypatch, f"{conn_type}_wrong", conn_type, host=server.url, **fields)
    ok, message = hook_class(conn_type)(conn_id=conn_id).test_connection()
    assert not ok
    assert f"401 unauthorized: check the credentials of connection {conn_id!r}" in message
    assert TOKEN not in message and PASSWORD not in message and "wt-user" not in message


def test_watttime_refusing_the_login_with_403_fails_the_test(server, monkeypatch):
    fields = service(server, "watttime")
    server.script("/login", Reply(json.loads((FIXTURES / "watttime_403_region.json").read_text())["reply"],
                                  status=403))
    conn_id = connection(monkeypatch, "wt_403", "watttime", host=server.url, **fields)
    ok, message = WattTimeHook(conn_id=conn_id).test_connection()
    assert not ok and "login refused: check the credentials of connection 'wt_403'" in message
    assert PASSWORD not in message and server.hits("/v3/my-access") == []


@pytest.mark.parametrize("conn_type", list(HOOKS))
def test_an_unreachable_service_fails_the_test(monkeypatch, conn_type):
    fields = {"password": TOKEN} if conn_type == "electricitymaps" else (
        {"login": "u", "password": PASSWORD} if conn_type == "watttime" else {})
    conn_id = connection(monkeypatch, f"{conn_type}_closed", conn_type, host="http://127.0.0.1:9",
                         **fields)
    ok, message = hook_class(conn_type)(conn_id=conn_id).test_connection()
    assert not ok and f"connection {conn_id!r}: " in message and "cannot reach" in message
    assert TOKEN not in message and PASSWORD not in message


@pytest.mark.parametrize("conn_type", list(HOOKS))
def test_a_connection_of_another_type_is_refused_before_it_is_used(server, monkeypatch, conn_type):
    conn_id = connection(monkeypatch, "prod_http", "http", host=server.url, login="admin",
                         password="db-secret")
    hook = hook_class(conn_type)(conn_id=conn_id)
    with pytest.raises(ProviderConnectionError,
                       match=f"'prod_http' has type 'http', expected '{conn_type}'"):
        hook.settings()
    ok, message = hook.test_connection()
    assert not ok and f"expected '{conn_type}': not used" in message
    assert "db-secret" not in message and "admin" not in message and server.requests == []


def test_the_default_connection_may_be_undefined_any_other_must_exist(monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_NESO_DEFAULT", raising=False)
    assert NesoHook().conn_id == "neso_default" and NesoHook().settings() == ConnectionSettings()
    assert NesoHook().client().base_url == NesoHook.default_base_url == "https://api.carbonintensity.org.uk"
    ok, message = ElectricityMapsHook(conn_id="em_nowhere").test_connection()
    assert not ok
    assert "'em_nowhere' does not exist (expected a connection of type 'electricitymaps')" in message


def test_settings_build_the_url_from_host_schema_and_port_and_keep_the_extra_fields(monkeypatch):
    conn_id = connection(monkeypatch, "em_parts", "electricitymaps", host="127.0.0.1", schema="http",
                         port=8123, extra={"token": TOKEN, "signal": "lifecycle"})
    settings = ElectricityMapsHook(conn_id=conn_id).settings()
    assert settings == ConnectionSettings("http://127.0.0.1:8123", None, TOKEN, conn_id,
                                          {"signal": "lifecycle"})
    assert ElectricityMapsHook(conn_id=conn_id).client(zone="DE").signal == "lifecycle"
    assert TOKEN not in repr(settings.credentials_of())


def test_the_secret_goes_to_airflows_log_masker(server, monkeypatch):
    masked = []
    monkeypatch.setattr("carbon_aware.compat.mask_secret", masked.append)
    conn_id = connection(monkeypatch, "em_masked", "electricitymaps", host=server.url, password=TOKEN)
    ElectricityMapsHook(conn_id=conn_id).settings()
    assert masked == [TOKEN]


# --- providers read their connection through the hook; outside Airflow, from the environment ----------

def test_build_provider_reads_the_specs_connection_through_its_hook(server, monkeypatch):
    read = []
    original = ElectricityMapsHook.get_connection.__func__

    def recording(cls, conn_id):
        read.append((cls.__name__, conn_id))
        return original(cls, conn_id)

    monkeypatch.setattr(ElectricityMapsHook, "get_connection", classmethod(recording))
    conn_id = connection(monkeypatch, "em_spec", "electricitymaps", host=server.url, password=TOKEN)
    provider = build_provider({"name": "electricitymaps", "zone": "DE", "conn_id": conn_id})
    assert read == [("ElectricityMapsHook", "em_spec")]
    assert provider.base_url == server.url and provider._token == TOKEN


def test_without_airflow_the_core_reads_airflows_connection_variables(monkeypatch):
    def no_airflow(conn_type):
        raise ImportError("No module named 'airflow'")

    monkeypatch.setattr(hooks, "hook_class", no_airflow)
    monkeypatch.setattr(base, "_read_connection", lambda conn_id, read: base._environment_connection(conn_id))
    connection(monkeypatch, "em_json", "electricitymaps", host="http://127.0.0.1:8123", password=TOKEN,
               extra={"signal": "lifecycle"})
    monkeypatch.setenv("AIRFLOW_CONN_WT_URI", "watttime://wt-user:pa%2Fss@127.0.0.1:8124/http?zone=x")
    monkeypatch.setenv("AIRFLOW_CONN_DB_URI", "postgres://admin:db-secret@db.internal:5432/app")
    assert connection_settings("electricitymaps", "em_json") == ConnectionSettings(
        "http://127.0.0.1:8123", None, TOKEN, "em_json", {"signal": "lifecycle"})
    assert connection_settings("watttime", "wt_uri") == ConnectionSettings(
        "http://127.0.0.1:8124", "wt-user", "pa/ss", "wt_uri", {"zone": "x"})
    assert connection_settings("neso", None, "neso_default") == ConnectionSettings()
    with pytest.raises(ProviderConnectionError, match="'db_uri' has type 'postgres', expected 'watttime'") \
            as refused:
        connection_settings("watttime", "db_uri")
    assert "db-secret" not in str(refused.value)


# --- the connection forms ---------------------------------------------------------------------------

@pytest.mark.parametrize("entry", CONNECTION_TYPES, ids=lambda entry: entry["connection-type"])
def test_each_form_is_declared_once_and_the_hook_returns_the_same(entry):
    from airflow import providers_manager

    schema_path = Path(providers_manager.__file__).parent / "customized_form_field_behaviours.schema.json"
    hook = hook_class(entry["connection-type"])
    behaviour = hook.get_ui_field_behaviour()
    jsonschema.validate(behaviour, json.loads(schema_path.read_text()))
    declared = entry["ui-field-behaviour"]
    assert behaviour == {"hidden_fields": declared["hidden-fields"], "relabeling": declared["relabeling"],
                         "placeholders": declared["placeholders"]}
    assert "get_ui_field_behaviour" in hook.__dict__ and "get_connection_form_widgets" in hook.__dict__
    assert hook.conn_type == entry["connection-type"] and hook.hook_name == entry["hook-name"]
    assert declared["placeholders"]["host"] == hook.default_base_url
    conn_attrs = {"host", "schema", "login", "password", "port", "extra"}
    assert set(declared["hidden-fields"]) <= conn_attrs and set(declared["relabeling"]) <= conn_attrs
    assert set(declared["placeholders"]) <= conn_attrs | set(entry.get("conn-fields", {}))
    assert not set(declared["hidden-fields"]) & set(declared["relabeling"])


def test_airflows_providers_manager_registers_the_four_types_with_their_forms():
    from airflow.providers_manager import ProvidersManager

    try:  # Airflow 3.3+: the hooks as tasks look them up
        from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime as HooksManager
    except ImportError:
        HooksManager = ProvidersManager
    manager = ProvidersManager()
    for conn_type, hook in HOOKS.items():
        info = HooksManager().hooks[conn_type]
        assert info.hook_class_name == f"{hook.__module__}.{hook.__name__}"
        assert info.connection_testable and info.connection_id_attribute_name == "conn_id"
        assert manager.field_behaviours[conn_type] == {
            **hook.get_ui_field_behaviour(),
            "placeholders": {(name if name == "host" else f"extra__{conn_type}__{name}"): text
                             for name, text in hook.get_ui_field_behaviour()["placeholders"].items()}}
    widgets = manager.connection_form_widgets
    signal = widgets["extra__electricitymaps__signal"]
    assert signal.field["schema"]["enum"] == ["direct", "lifecycle"] and not signal.is_sensitive
    assert "extra__electricitymaps__zone" in widgets
    assert not [name for name in widgets if name.startswith(("extra__watttime__", "extra__neso__"))]


# --- through Airflow's CLI ------------------------------------------------------------------------------

def _airflow(env: dict, *args: str) -> subprocess.CompletedProcess:
    airflow = str(Path(sys.executable).parent / "airflow")
    return subprocess.run([airflow, *args], env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.integration
@pytest.mark.slow
def test_the_cli_adds_and_tests_a_connection_of_each_type(airflow_db, server):
    env = {**airflow_db, "AIRFLOW__CORE__TEST_CONNECTION": "Enabled"}
    service(server, "electricitymaps")
    service(server, "neso")
    for conn_id, conn_type, secret in (("em_cli", "electricitymaps", TOKEN), ("neso_cli", "neso", None)):
        _airflow(env, "connections", "delete", conn_id)
        extra = ["--conn-password", secret] if secret else []
        added = _airflow(env, "connections", "add", conn_id, "--conn-type", conn_type, "--conn-host",
                         server.url, *extra)
        assert added.returncode == 0, added.stderr[-2000:]
        tested = _airflow(env, "connections", "test", conn_id)
        assert tested.returncode == 0 and "Connection success!" in tested.stdout, \
            tested.stdout + tested.stderr
    assert server.hits("/v3/carbon-intensity/latest")[0]["headers"]["auth-token"] == TOKEN
    assert len(server.hits("/intensity")) == 1
    server.script("/v3/carbon-intensity/latest", Reply({"message": "unauthorized"}, status=401))
    refused = _airflow(env, "connections", "test", "em_cli")
    output = refused.stdout + refused.stderr
    assert refused.returncode == 1 and "Connection failed!" in output
    assert "check the credentials of connection 'em_cli'" in output and TOKEN not in output
