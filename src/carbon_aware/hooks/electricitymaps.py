"""The Electricity Maps connection: host (API base URL, default the public API), password (the auth
token); extra fields ``signal`` (direct or lifecycle) and ``zone`` (the zone the connection test asks
for)."""
from __future__ import annotations

from typing import Any

from carbon_aware.grid.clients.base import ConnectionSettings
from carbon_aware.grid.clients.electricitymaps import BASE_URL, CONN_ID, CONN_TYPE
from carbon_aware.hooks.base import GridHook

TEST_ZONE = "DE"


class ElectricityMapsHook(GridHook):
    """Electricity Maps API v3; ``test_connection`` asks for the test zone's latest carbon intensity
    (``GET /v3/carbon-intensity/latest``), which needs a valid token."""

    conn_type = CONN_TYPE
    default_conn_name = CONN_ID
    hook_name = "Electricity Maps"
    provider_name = "electricitymaps"
    default_base_url = BASE_URL

    def test_options(self, settings: ConnectionSettings) -> dict[str, Any]:
        return {"zone": settings.option("zone", self.conn_type) or TEST_ZONE}
