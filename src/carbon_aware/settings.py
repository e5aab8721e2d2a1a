"""Where the deployment's own files live, and the one check every file named in params passes.

Nothing here points into the installed package: users' files live under one base folder,
``CARBON_HOME`` (default ``$AIRFLOW_HOME/carbon``, and ``AIRFLOW_HOME`` defaults to ``~/airflow``), or
wherever each setting below moves them:

- ``CARBON_OUTPUT_DIR``: one folder per run (reports, energy logs, checkpoints). Default ``<home>/output``.
- ``CARBON_DATA_DIR``: carbon-intensity traces (``trace`` providers) and the demo's MNIST.
  Default ``<home>/data``.
- ``CARBON_CONFIG_DIR``: trainer configs (``baseline_config``, ``optimized_config``). Default
  ``<home>/configs``.
- ``CARBON_REGIONS_FILE``: the regions file. Default ``<home>/regions.yaml`` when there is one.
- ``CARBON_RECORDS_URL``: the records database (grid store, energy readings, reports), a SQLAlchemy URL;
  else the Airflow connection ``carbon_records``; else ``<output>/carbon_records.db`` (``records``).

Params (the trigger form, the API's ``conf``) are untrusted: a file they name is looked up under a
configured root and must stay inside it (no absolute path elsewhere, no ``..``, no symlink out).

Errors name the param and the root, never the file's content.
"""
from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "CARBON_HOME"
OUTPUT_ENV = "CARBON_OUTPUT_DIR"
DATA_ENV = "CARBON_DATA_DIR"
CONFIG_ENV = "CARBON_CONFIG_DIR"
REGIONS_ENV = "CARBON_REGIONS_FILE"


class OutsideRoot(ValueError):
    """A file named in params is missing or resolves outside its configured root."""


def carbon_home() -> Path:
    """The deployment's base folder: ``CARBON_HOME``, else ``$AIRFLOW_HOME/carbon``."""
    if os.environ.get(HOME_ENV):
        return Path(os.environ[HOME_ENV]).expanduser().resolve()
    airflow_home = os.environ.get("AIRFLOW_HOME") or "~/airflow"
    return (Path(airflow_home).expanduser() / "carbon").resolve()


def _setting_or_home(env: str, default: str) -> Path:
    return Path(os.environ.get(env) or carbon_home() / default).expanduser().resolve()


def output_root() -> Path:
    return _setting_or_home(OUTPUT_ENV, "output")


def data_dir() -> Path:
    return _setting_or_home(DATA_ENV, "data")


def config_dir() -> Path:
    return _setting_or_home(CONFIG_ENV, "configs")


def regions_file() -> tuple[Path, bool]:
    """The regions file and whether it was set explicitly (then it must exist). A relative
    ``CARBON_REGIONS_FILE`` is relative to ``CARBON_HOME``."""
    configured = os.environ.get(REGIONS_ENV)
    if configured:
        path = Path(configured).expanduser()
        return (path if path.is_absolute() else carbon_home() / path), True
    return carbon_home() / "regions.yaml", False


def resolve_in(root: Path, name: str, field: str) -> Path:
    """``name`` (relative to ``root``, or absolute inside it) as a real path to an existing file inside
    ``root``; anything else raises :class:`OutsideRoot` naming ``field``."""
    if not isinstance(name, str) or not name.strip() or "\x00" in name:
        raise OutsideRoot(f"{field}: expected a file name relative to {root}")
    path = Path(name).expanduser() if name.startswith("~") else Path(name)
    real = (path if path.is_absolute() else root / path).resolve()
    if not real.is_relative_to(root):
        raise OutsideRoot(f"{field}: {name!r} is outside {root} (files named in params must be in "
                          f"that folder; set {_setting(root)} to move it)")
    if not real.is_file():
        raise OutsideRoot(f"{field}: no file {name!r} in {root}")
    return real


def _setting(root: Path) -> str:
    return DATA_ENV if root == data_dir() else CONFIG_ENV if root == config_dir() else "the setting"


def trainer_config(name: str, field: str = "config") -> Path:
    """A trainer config named in params (``baseline_config``, ``optimized_config``), in the config folder."""
    return resolve_in(config_dir(), name, field)
