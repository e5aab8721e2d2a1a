"""The "Carbon" page in the Airflow UI: every carbon_training run's saving, from its report.

The app lives in :mod:`carbon_aware.web.app`; the provider's ``get_provider_info`` names this plugin, so
Airflow loads it from the installed package (nothing to copy into ``plugins/``). The API server mounts
the app at /carbon and the UI shows it in its nav.
"""
from airflow.plugins_manager import AirflowPlugin

from carbon_aware.web.app import MOUNT, app


class CarbonPagePlugin(AirflowPlugin):
    name = "carbon_page"
    fastapi_apps = [{"app": app, "url_prefix": MOUNT, "name": "Carbon-aware training"}]
    external_views = [{
        "name": "Carbon",
        "href": f"{MOUNT.lstrip('/')}/",
        "url_route": "carbon",
        "destination": "nav",
        "nav_top_level": True,
        "icon": f"{MOUNT.lstrip('/')}/icon.svg",
    }]
