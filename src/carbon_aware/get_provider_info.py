"""What Airflow's providers manager reads from the ``apache_airflow_provider`` entry point: the
provider's name and versions, its connection types (each with its hook and form fields) and the Carbon
page plugin. ``airflow providers list`` shows it; the connection form offers its types."""
from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

DISTRIBUTION = "airflow-provider-carbon-aware"


def _version() -> str:
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:  # imported from a source tree that is not installed
        return "0.0.0"


def get_provider_info() -> dict:
    from carbon_aware.hooks import CONNECTION_TYPES

    return {
        "package-name": DISTRIBUTION,
        "name": "Carbon-aware jobs",
        "description": "Run any job in the lowest-carbon window before its deadline, measured by "
                       "CodeCarbon and priced at the grid's own intensity.",
        "versions": [_version()],
        "connection-types": CONNECTION_TYPES,
        "plugins": [{"name": "carbon_page",
                     "plugin-class": "carbon_aware.plugins.carbon_page.CarbonPagePlugin"}],
    }
