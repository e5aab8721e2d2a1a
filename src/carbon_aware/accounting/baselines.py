"""The cached baseline: the baseline config's measured energy, stored once per what it depends on.

A plain run's energy depends on the baseline config (with the run's overrides), the device model, the
dataset and the trainer's version; nothing else a run changes. So it is measured once, stored by that
key in the records database (``carbon_baselines``: any worker finds it) and reused until it is older
than ``baseline_max_age_days``. Imports nothing heavy.
"""
from __future__ import annotations

import hashlib
import json
import logging
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from carbon_aware.settings import trainer_config

if TYPE_CHECKING:
    from carbon_aware.accounting.energy import EnergyLog

log = logging.getLogger(__name__)

# Keys of a trainer config that name or place a run but do not change what it computes.
NOT_IDENTITY = {"training": ("run_name", "resume", "model_save_path"), "output": ("dir",)}


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
    from sqlalchemy import select

    from carbon_aware.records import engine_for, tables

    with engine_for().connect() as connection:
        text = connection.execute(select(tables.baselines.c.entry)
                                  .where(tables.baselines.c.key == key)).scalar()
    if text is None:
        return None, f"no stored baseline for key {key}"
    try:
        entry = json.loads(text)
        measured = datetime.fromisoformat(entry["measured_at"])
        entry["summary"]["energy"]["energy_kwh"]  # noqa: B018 - a stored baseline must carry its energy
    except (ValueError, KeyError, TypeError) as error:
        return None, f"stored baseline {key} is unreadable ({type(error).__name__})"
    age = now - measured
    if age > timedelta(days=max_age_days):
        return None, (f"stored baseline {key} is {age.total_seconds() / 86400:.1f} days old "
                      f"(baseline_max_age_days {max_age_days:g})")
    return entry, f"stored baseline {key}, measured in run {entry['dag_run_id']} at {entry['measured_at']}"


def save(key: str, ident: dict[str, Any], dag_run_id: str, summary: dict[str, Any], now: datetime) -> bool:
    """Store a fresh measurement (replacing an older one of the same key); one without energy is not
    stored (it could not serve as a baseline)."""
    from carbon_aware.records import engine_for, tables
    from carbon_aware.records.upsert import upsert

    if not (summary.get("energy") or {}).get("energy_kwh"):
        log.warning("baseline run has no measured energy (%s): not stored", summary.get("energy_error"))
        return False
    entry = {"key": key, "identity": ident, "dag_run_id": dag_run_id, "measured_at": now.isoformat(),
             "summary": summary}
    with engine_for().begin() as connection:
        upsert(connection, tables.baselines, {"key": key, "entry": json.dumps(entry, default=str),
                                              "measured_at": now.timestamp()}, keys=("key",))
    return True


def train_or_reuse_baseline(
    params: dict[str, Any],
    dag_run_id: str,
    run_dir: Path,
    now: datetime | None = None,
    emit: Callable[[str], None] = print,
    energy_log: EnergyLog | None = None,
) -> dict[str, Any] | None:
    """The baseline the report compares against, per ``params['baseline']``: None (off), a fresh
    measurement (every_run, or cached with nothing usable stored), or the stored one (cached).
    The baseline is the built-in trainer run as a command in ``run_dir`` (this machine's) and measured
    from outside into ``energy_log`` (default: a file in its folder), as any job is."""
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
    attempt = run_attempt(command, run_dir / "baseline", "baseline", emissions=emissions, emit=emit,
                          energy_log=energy_log)
    segment = {"index": 0, "grid_start": None, "grid_hours": None, "attempts": [attempt]}
    summary = job_summary(run_dir / "baseline", "baseline", command, [segment], energy_log=energy_log)
    if save(key, ident, dag_run_id, summary, now):
        emit(f"baseline: stored as {key}")
    return {"kind": "measured", "key": key, "dag_run_id": dag_run_id, "measured_at": now.isoformat(),
            "summary": summary}


def baseline_for_run(params: dict[str, Any], dag_id: str, run_id: str,
                     emit: Callable[[str], None] = print) -> dict[str, Any] | None:
    """:func:`train_or_reuse_baseline` as a DAG's baseline task runs it: in this machine's folder for
    the run, its energy in the records database (a retry elsewhere keeps counting it), the measured
    summary kept there too, whole; the one returned (to XCom) has a long timeline thinned."""
    from carbon_aware.accounting.jobs import summary_for_xcom
    from carbon_aware.outputs import run_dir_for
    from carbon_aware.records.jobs import RecordsEnergyLog, save_summary

    baseline = train_or_reuse_baseline(params, run_id, run_dir_for(run_id, dag_id), emit=emit,
                                       energy_log=RecordsEnergyLog(dag_id, run_id, "baseline"))
    if baseline is None:
        return None
    if baseline["kind"] == "measured":
        save_summary(dag_id, run_id, "baseline", baseline["summary"])
    return {**baseline, "summary": summary_for_xcom(baseline["summary"])}
