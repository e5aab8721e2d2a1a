"""One hook per grid-data service, each owning its connection type (Electricity Maps, WattTime, the
Carbon Aware SDK, NESO)."""
from __future__ import annotations

# The connection types the provider registers (get_provider_info), with their hook classes. Each hook
# module adds its form fields ("conn-fields", "ui-field-behaviour") here.
CONNECTION_TYPES: list[dict] = [
    {"connection-type": "electricitymaps", "hook-class-name":
        "carbon_aware.hooks.electricitymaps.ElectricityMapsHook", "hook-name": "Electricity Maps"},
    {"connection-type": "watttime", "hook-class-name": "carbon_aware.hooks.watttime.WattTimeHook",
     "hook-name": "WattTime"},
    {"connection-type": "carbon_aware_sdk", "hook-class-name":
        "carbon_aware.hooks.carbon_aware_sdk.CarbonAwareSdkHook", "hook-name": "Carbon Aware SDK"},
    {"connection-type": "neso", "hook-class-name": "carbon_aware.hooks.neso.NesoHook",
     "hook-name": "NESO Carbon Intensity (GB)"},
]
