"""The NESO Carbon Intensity API connection (GB; provider spec name ``uk``): host (API base URL, default
the public API); the API takes no credentials."""
from __future__ import annotations

from carbon_aware.grid.clients.neso import BASE_URL, CONN_ID, CONN_TYPE
from carbon_aware.hooks.base import GridHook


class NesoHook(GridHook):
    """NESO Carbon Intensity API; ``test_connection`` reads ``GET /intensity`` (the national half hour
    now)."""

    conn_type = CONN_TYPE
    default_conn_name = CONN_ID
    hook_name = "NESO Carbon Intensity (GB)"
    provider_name = "uk"
    default_base_url = BASE_URL
