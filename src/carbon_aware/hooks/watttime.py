"""The WattTime connection: host (API base URL, default the public API), login (username), password."""
from __future__ import annotations

from typing import Any

from carbon_aware.grid.clients.base import ConnectionSettings
from carbon_aware.grid.clients.watttime import BASE_URL, CONN_ID, CONN_TYPE
from carbon_aware.hooks.base import GridHook


class WattTimeHook(GridHook):
    """WattTime API v3; ``test_connection`` logs in (``/login``, basic auth) and reads
    ``/v3/my-access`` with the bearer token: the regions and signals the account may read."""

    conn_type = CONN_TYPE
    default_conn_name = CONN_ID
    hook_name = "WattTime"
    provider_name = "watttime"
    default_base_url = BASE_URL

    def test_options(self, settings: ConnectionSettings) -> dict[str, Any]:
        return {"region": None}  # my-access is not about one region
