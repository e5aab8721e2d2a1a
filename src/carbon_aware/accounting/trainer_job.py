"""The built-in trainer (the demo workload, the ``training`` package) as a job: its command and how it is
measured. Used by the baseline (:mod:`.baselines`) and ``CarbonTrainerOperator``; :mod:`.jobs` runs any
command and knows nothing of this trainer. ``training`` is imported inside each function.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from carbon_aware.settings import trainer_config

TRAINER_CONFIG_NAME = "trainer_config.yaml"  # the built-in trainer's resolved config, in its job folder


def trainer_command(config: str, overrides: list[str], run_dir: Path, run_name: str) -> list[str]:
    """The built-in trainer as a command: measured from outside like any other, so its own meter is off.
    The config named in params, with its (validated) overrides, is resolved here and written into the
    job's directory: the argv holds that file's path only, nothing from params."""
    import yaml

    from training.config import load_config
    from carbon_aware.files import atomic_write

    resolved = load_config(trainer_config(config), overrides)
    resolved.output.dir = str(run_dir)
    resolved.training.run_name = run_name
    resolved.training.resume = True
    resolved.emissions.enabled = False
    settings = {**resolved.model_dump(mode="json"), "on_device": {}}  # already applied for this device
    path = run_dir / run_name / TRAINER_CONFIG_NAME
    atomic_write(path, lambda tmp: tmp.write_text(yaml.safe_dump(settings, sort_keys=False)))
    return [sys.executable, "-u", "-m", "training", "--config", str(path)]


def trainer_emissions(config: str, overrides: list[str]) -> dict[str, Any]:
    """The trainer config's ``emissions`` block (country, sampling): how the outside meter measures it."""
    from training.config import load_config

    return load_config(trainer_config(config), overrides).emissions.model_dump()


def check_trainer_configs(params) -> None:
    """Both trainer configs a run's params name (``baseline_config``, ``optimized_config``), each with
    its ``training_overrides``, load and validate; errors name the param, never the file's content."""
    from carbon_aware.planning.params import ParamsError
    from carbon_aware.settings import OutsideRoot
    from training.config import ConfigError, load_config

    for name in ("baseline_config", "optimized_config"):
        try:
            load_config(trainer_config(getattr(params, name), name), params.training_overrides)
        except OutsideRoot as error:
            raise ParamsError(f"param {error}") from None
        except ConfigError as error:
            raise ParamsError(f"param {name} with training_overrides: {error}") from None
