"""Where the deployment's own files live, and the one check every file named in params passes.

Params (the trigger form, the API's ``conf``) are untrusted: a file they name is looked up under a
configured root and must stay inside it (no absolute path elsewhere, no ``..``, no symlink out).

- ``CARBON_DATA_DIR``: carbon-intensity traces (``trace`` providers). Default: ``shared/data`` beside
  the project folder (``../shared/data`` from the repository root).
- ``CARBON_CONFIG_DIR``: trainer configs (``baseline_config``, ``optimized_config``). Default:
  ``include/configs`` in the project folder.

Errors name the param and the root, never the file's content.
"""
from __future__ import annotations

import os
from pathlib import Path

from carbon_aware.outputs import REPO_ROOT

DATA_ENV = "CARBON_DATA_DIR"
CONFIG_ENV = "CARBON_CONFIG_DIR"


class OutsideRoot(ValueError):
    """A file named in params is missing or resolves outside its configured root."""


def data_dir() -> Path:
    return Path(os.environ.get(DATA_ENV) or REPO_ROOT.parent / "shared" / "data").resolve()


def config_dir() -> Path:
    return Path(os.environ.get(CONFIG_ENV) or REPO_ROOT / "include" / "configs").resolve()


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
