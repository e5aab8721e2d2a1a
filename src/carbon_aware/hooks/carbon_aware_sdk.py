"""The Carbon Aware SDK connection: host (the WebAPI's base URL, default http://localhost:8080); the
WebAPI takes no credentials."""
from __future__ import annotations

from typing import Any

from carbon_aware.grid.clients.base import ConnectionSettings
from carbon_aware.grid.clients.carbon_aware_sdk import BASE_URL, CONN_ID, CONN_TYPE
from carbon_aware.hooks.base import GridHook


class CarbonAwareSdkHook(GridHook):
    """The Green Software Foundation Carbon Aware SDK WebAPI; ``test_connection`` reads
    ``GET /locations`` (the locations it is configured with; no data source is called)."""

    conn_type = CONN_TYPE
    default_conn_name = CONN_ID
    hook_name = "Carbon Aware SDK"
    provider_name = "carbon_aware_sdk"
    default_base_url = BASE_URL

    def test_options(self, settings: ConnectionSettings) -> dict[str, Any]:
        return {"location": None}  # /locations is not about one location
