"""The cached baseline: the baseline config's measured energy, stored once per what it depends on.

A plain run's energy depends on the baseline config (with the run's overrides), the device model, the
dataset and the trainer's version; nothing else a run changes. So it is measured once, stored under
``output/baselines/<key>.json`` (written atomically) and reused until it is older than
``baseline_max_age_days``. Imports nothing heavy.
"""
from __future__ import annotations

import hashlib
import json
import logging
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

from carbon_aware.outputs import output_root
from carbon_aware.settings import trainer_config

log = logging.getLogger(__name__)

STORE_NAME = "baselines"
# Keys of a trainer config that name or place a run but do not change what it computes.
NOT_IDENTITY = {"training": ("run_name", "resume", "model_save_path"), "output": ("dir",)}


def store_dir() -> Path:
    return output_root() / STORE_NAME


def identity(config: dict[str, Any], device_model: str, trainer_version: str) -> dict[str, Any]:
    """What the baseline's energy depends on, from the resolved config (a ``model_dump()``)."""
    config = json.loads(json.dumps(config))
    for block, keys in NOT_IDENTITY.items():
        for key in keys:
            config.get(block, {}).pop(key, None)
    data = config.get("data", {})
    dataset = {"name": data.get("dataset"), "root": data.get("root"),
               "train_subset": data.get("train_subset"), "test_subset": data.get("test_subset")}
    return {
        "config": config,
        "device_model": device_model,
        "dataset": dataset,
        "trainer_version": trainer_version,
    }


def key_of(ident: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:20]


def lookup(key: str, max_age_days: float, now: datetime) -> tuple[dict[str, Any] | None, str]:
    """(stored entry, why) when usable; (None, why not) when missing, unreadable or too old."""
    path = store_dir() / f"{key}.json"
    if not path.is_file():
        return None, f"no stored baseline for key {key}"
    try:
        entry = json.loads(path.read_text())
        measured = datetime.fromisoformat(entry["measured_at"])
        entry["summary"]["energy"]["energy_kwh"]  # noqa: B018 - a stored baseline must carry its energy
    except (OSError, ValueError, KeyError, TypeError) as error:
        return None, f"stored baseline {path} is unreadable ({error!r})"
    age = now - measured
    if age > timedelta(days=max_age_days):
        return None, (f"stored baseline {key} is {age.total_seconds() / 86400:.1f} days old "
                      f"(baseline_max_age_days {max_age_days:g})")
    return entry, f"stored baseline {key}, measured in run {entry['dag_run_id']} at {entry['measured_at']}"


def save(
    key: str, ident: dict[str, Any], dag_run_id: str, summary: dict[str, Any], now: datetime
) -> Path | None:
    """Store a fresh measurement; one without energy is not stored (it could not serve as a baseline)."""
    from carbon_aware.files import atomic_write_json

    if not (summary.get("energy") or {}).get("energy_kwh"):
        log.warning("baseline run has no measured energy (%s): not stored", summary.get("energy_error"))
        return None
    path = store_dir() / f"{key}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, {"key": key, "identity": ident, "dag_run_id": dag_run_id,
                             "measured_at": now.isoformat(), "summary": summary})
    return path


def train_or_reuse_baseline(
    params: dict[str, Any],
    dag_run_id: str,
    run_dir: Path,
    now: datetime | None = None,
    emit: Callable[[str], None] = print,
) -> dict[str, Any] | None:
    """The baseline the report compares against, per ``params['baseline']``: None (off), a fresh
    measurement (every_run, or cached with nothing usable stored), or the stored one (cached).
    The baseline is the built-in trainer run as a command and measured from outside, as any job is."""
    from carbon_aware.accounting.jobs import job_summary, run_attempt
    from carbon_aware.accounting.trainer_job import trainer_command
    from training import TRAINER_VERSION
    from training.config import load_config
    from training.trainer import device_model_for

    kind = params["baseline"]
    if kind == "off":
        return None
    config = load_config(trainer_config(params["baseline_config"], "baseline_config"),
                         params["training_overrides"])
    ident = identity(config.model_dump(), device_model_for(config.training.device), TRAINER_VERSION)
    key = key_of(ident)
    now = now or datetime.now(timezone.utc)
    if kind == "cached":
        entry, why = lookup(key, params["baseline_max_age_days"], now)
        emit(f"baseline: {why}")
        if entry is not None:
            return {"kind": "cached", "key": key, "dag_run_id": entry["dag_run_id"],
                    "measured_at": entry["measured_at"], "summary": entry["summary"]}
    emit(f"baseline: measuring the baseline config now (baseline: {kind})")
    command = trainer_command(params["baseline_config"], params["training_overrides"], run_dir, "baseline")
    emissions = config.emissions.model_dump()
    attempt = run_attempt(command, run_dir / "baseline", "baseline", emissions=emissions, emit=emit)
    segment = {"index": 0, "grid_start": None, "grid_hours": None, "attempts": [attempt]}
    summary = job_summary(run_dir / "baseline", "baseline", command, [segment])
    stored = save(key, ident, dag_run_id, summary, now)
    if stored:
        emit(f"baseline: stored as {stored}")
    return {"kind": "measured", "key": key, "dag_run_id": dag_run_id, "measured_at": now.isoformat(),
            "summary": summary}
