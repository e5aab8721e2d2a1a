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


def _option(description: str, example: str | None, default: str | None) -> dict:
    return {"description": description, "version_added": "0.1.0", "type": "string",
            "example": example, "default": default}


# ``airflow config list`` shows these; carbon_aware.ledger.settings reads them.
LEDGER_CONFIG = {"carbon_aware": {
    "description": "The carbon ledger: per-task energy and emissions of opted-in DAGs, and what "
                   "carbon-aware scheduling would have saved (shadow plans).",
    "options": {
        "ledger_tag": _option("A DAG with this tag is measured.", None, "carbon-ledger"),
        "ledger_dag_ids": _option("DAG ids measured without the tag, comma-separated.", "etl,train", ""),
        "ledger_deadlines": _option("dag_id=hours pairs: the shadow plan's deadline after a task starts "
                                    "(default: the DAG's next scheduled run, else 24 h).", "train=12", ""),
        "ledger_run_units": _option("DAG ids whose whole run, not each task, is the unit of the shadow "
                                    "plan, comma-separated.", "nightly_etl", ""),
        "ledger_reading_seconds": _option("How often a running task's energy is written down.", None, "10"),
        "ledger_providers": _option("The grid's provider specs as a JSON list; default: the regions "
                                    "file's region named by CARBON_REGION, else the DAG's default.",
                                    '[{"name": "uk"}]', ""),
    }}}


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
                     "plugin-class": "carbon_aware.plugins.carbon_page.CarbonPagePlugin"},
                    {"name": "carbon_ledger",
                     "plugin-class": "carbon_aware.plugins.carbon_ledger.CarbonLedgerPlugin"}],
        "config": LEDGER_CONFIG,
    }
