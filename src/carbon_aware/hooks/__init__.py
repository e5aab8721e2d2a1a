"""One hook per grid-data service, each owning its connection type (Electricity Maps, WattTime, the
Carbon Aware SDK, NESO).

``CONNECTION_TYPES`` is the one source of each type's form: Airflow 3.2+ reads its declarative
``conn-fields`` and ``ui-field-behaviour`` from the provider info (``get_provider_info``); on 3.1 the
hooks' ``get_ui_field_behaviour`` and ``get_connection_form_widgets`` derive the same from it. This
module imports nothing from Airflow (the providers manager reads it without importing the hooks)."""
from __future__ import annotations

from importlib import import_module
from typing import Any

CONNECTION_TYPES: list[dict] = [
    {"connection-type": "electricitymaps", "hook-class-name":
        "carbon_aware.hooks.electricitymaps.ElectricityMapsHook", "hook-name": "Electricity Maps",
     "conn-fields": {
         "signal": {"label": "Emission signal", "description":
                    "direct (operational, as the traces and the forecaster) or lifecycle (LCA)",
                    "schema": {"type": ["string", "null"], "enum": ["direct", "lifecycle"],
                               "default": "direct"}},
         "zone": {"label": "Test zone", "description": "The zone the connection test asks for (default DE)",
                  "schema": {"type": ["string", "null"]}}},
     "ui-field-behaviour": {
         "hidden-fields": ["login", "port", "schema"],
         "relabeling": {"host": "API base URL", "password": "Auth token"},
         "placeholders": {"host": "https://api.electricitymap.org", "zone": "DE"}}},
    {"connection-type": "watttime", "hook-class-name": "carbon_aware.hooks.watttime.WattTimeHook",
     "hook-name": "WattTime",
     "ui-field-behaviour": {
         "hidden-fields": ["port", "schema"],
         "relabeling": {"host": "API base URL", "login": "Username", "password": "Password"},
         "placeholders": {"host": "https://api.watttime.org"}}},
    {"connection-type": "carbon_aware_sdk", "hook-class-name":
        "carbon_aware.hooks.carbon_aware_sdk.CarbonAwareSdkHook", "hook-name": "Carbon Aware SDK",
     "ui-field-behaviour": {
         "hidden-fields": ["login", "password", "port", "schema"],
         "relabeling": {"host": "WebAPI base URL"},
         "placeholders": {"host": "http://localhost:8080"}}},
    {"connection-type": "neso", "hook-class-name": "carbon_aware.hooks.neso.NesoHook",
     "hook-name": "NESO Carbon Intensity (GB)",
     "ui-field-behaviour": {
         "hidden-fields": ["login", "password", "port", "schema"],
         "relabeling": {"host": "API base URL"},
         "placeholders": {"host": "https://api.carbonintensity.org.uk"}}},
]


def connection_type(conn_type: str) -> dict:
    """The ``CONNECTION_TYPES`` entry of ``conn_type`` (KeyError if the provider has none)."""
    for entry in CONNECTION_TYPES:
        if entry["connection-type"] == conn_type:
            return entry
    raise KeyError(conn_type)


def hook_class(conn_type: str) -> type:
    """The hook of a connection type, imported on first use (ImportError outside Airflow)."""
    module, _, name = connection_type(conn_type)["hook-class-name"].rpartition(".")
    return getattr(import_module(module), name)


def ui_field_behaviour(conn_type: str) -> dict[str, Any]:
    """``ui-field-behaviour`` as ``get_ui_field_behaviour`` returns it (Airflow 3.1)."""
    behaviour = connection_type(conn_type).get("ui-field-behaviour", {})
    return {"hidden_fields": list(behaviour.get("hidden-fields", [])),
            "relabeling": dict(behaviour.get("relabeling", {})),
            "placeholders": dict(behaviour.get("placeholders", {}))}


def connection_form_widgets(conn_type: str) -> dict[str, Any]:
    """``conn-fields`` as wtforms fields, as ``get_connection_form_widgets`` returns them (Airflow 3.1's
    connection form; wtforms and Flask-AppBuilder are imported only here)."""
    fields = connection_type(conn_type).get("conn-fields", {})
    if not fields:
        return {}
    from flask_appbuilder.fieldwidgets import BS3TextFieldWidget
    from wtforms import StringField
    from wtforms.validators import AnyOf, Optional

    widgets = {}
    for name, field in fields.items():
        schema = field.get("schema", {})
        validators = [Optional()]
        if "enum" in schema:
            validators.append(AnyOf(schema["enum"]))
        widgets[name] = StringField(field["label"], description=field.get("description", ""),
                                    default=schema.get("default"), validators=validators,
                                    widget=BS3TextFieldWidget())
    return widgets
