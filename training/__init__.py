"""The PyTorch training workload. Never imports Airflow: the DAG runs it in a fresh interpreter."""
from training.config import ConfigError, TrainerConfig, load_config

__all__ = ["ConfigError", "TRAINER_VERSION", "TrainerConfig", "load_config", "run"]

# Part of a cached baseline's key: bump it when a change to the loop changes what a config's run costs.
TRAINER_VERSION = "2"


def run(config_path, overrides=None) -> dict:
    """Train per a YAML config (plus ``key=value`` overrides); returns the summary dict."""
    from training.trainer import train

    return train(load_config(config_path, overrides))
