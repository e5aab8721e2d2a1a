"""The "Carbon" page in the Airflow UI: every carbon_training run's saving, from its report.

The app lives in carbon_aware.web; this file only registers it (Airflow imports every top-level .py in
plugins/, so it stays small). The API server mounts the app at /carbon and the UI shows it in its nav.
"""
from airflow.plugins_manager import AirflowPlugin

from carbon_aware.web import MOUNT, app


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
