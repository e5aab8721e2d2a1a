"""Who is in the ledger and how it measures: the provider's settings, section ``[carbon_aware]`` of
Airflow's configuration (so also ``AIRFLOW__CARBON_AWARE__<KEY>`` in the environment), read once per
process. Deployment settings, never DAG params: nothing here comes from a trigger form.

- ``ledger_tag`` (``carbon-ledger``): a DAG with this tag is measured.
- ``ledger_dag_ids``: DAG ids measured without a tag, comma-separated.
- ``ledger_deadlines``: ``dag_id=hours`` pairs, comma-separated: the shadow plan's deadline after a
  task starts; default: the DAG's next scheduled run (24 h for a DAG without a schedule).
- ``ledger_run_units``: DAG ids whose run, not each task, is the unit of the shadow plan (the whole
  run moved as one), comma-separated.
- ``ledger_reading_seconds`` (10): how often a running task's energy is written down (what a killed
  task can lose at most).
- ``ledger_providers``: the grid's provider specs as JSON (a list, as the DAG's ``providers`` param);
  else the regions file's region named by the worker's ``CARBON_REGION`` (else its first region); else
  the DAG's default providers.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

SECTION = "carbon_aware"
DEFAULT_TAG = "carbon-ledger"
MAX_SHADOW_HOURS = 48.0  # the forecast's horizon


class LedgerSettingsError(ValueError):
    pass


def _option(key: str) -> str:
    try:
        from airflow.configuration import conf

        return conf.get(SECTION, key, fallback="") or ""
    except ImportError:  # outside Airflow (the benchmark's plain runs, tests)
        return os.environ.get(f"AIRFLOW__{SECTION.upper()}__{key.upper()}", "")


def _ids(text: str) -> frozenset[str]:
    return frozenset(part.strip() for part in text.split(",") if part.strip())


def _deadlines(text: str) -> dict[str, float]:
    deadlines = {}
    for pair in filter(None, (part.strip() for part in text.split(","))):
        dag_id, _, hours = pair.partition("=")
        try:
            value = float(hours)
        except ValueError:
            raise LedgerSettingsError(
                f"[{SECTION}] ledger_deadlines: {pair!r} is not dag_id=hours") from None
        if not 0 < value <= MAX_SHADOW_HOURS:
            raise LedgerSettingsError(f"[{SECTION}] ledger_deadlines: {dag_id.strip()}: hours must be in "
                                      f"(0, {MAX_SHADOW_HOURS:g}]")
        deadlines[dag_id.strip()] = value
    return deadlines


def _providers(text: str) -> list[dict[str, Any]] | None:
    if not text.strip():
        return None
    from carbon_aware.planning.params import check_provider_specs

    try:
        specs = json.loads(text)
    except ValueError as error:
        raise LedgerSettingsError(f"[{SECTION}] ledger_providers: not JSON ({error.msg})") from None
    if not isinstance(specs, list) or not specs:
        raise LedgerSettingsError(f"[{SECTION}] ledger_providers: expected a non-empty JSON list")
    try:
        return check_provider_specs(specs, f"[{SECTION}] ledger_providers")
    except ValueError as error:
        raise LedgerSettingsError(f"[{SECTION}] ledger_providers: {error}") from None


@dataclass(frozen=True)
class LedgerSettings:
    tag: str = DEFAULT_TAG
    dag_ids: frozenset[str] = frozenset()
    deadlines: dict[str, float] = field(default_factory=dict)
    reading_seconds: float = 10.0
    providers: list[dict[str, Any]] | None = None
    run_units: frozenset[str] = frozenset()

    def measures(self, dag_id: str, tags: Any) -> bool:
        return dag_id in self.dag_ids or self.tag in set(tags or ())


def read_settings() -> LedgerSettings:
    reading = _option("ledger_reading_seconds") or "10"
    try:
        seconds = float(reading)
    except ValueError:
        raise LedgerSettingsError(
            f"[{SECTION}] ledger_reading_seconds: {reading!r} is not a number") from None
    if not 0.1 <= seconds <= 3600:
        raise LedgerSettingsError(f"[{SECTION}] ledger_reading_seconds: expected 0.1 to 3600")
    return LedgerSettings(tag=_option("ledger_tag").strip() or DEFAULT_TAG,
                          dag_ids=_ids(_option("ledger_dag_ids")),
                          deadlines=_deadlines(_option("ledger_deadlines")),
                          reading_seconds=seconds, providers=_providers(_option("ledger_providers")),
                          run_units=_ids(_option("ledger_run_units")))


@lru_cache(maxsize=1)
def settings() -> LedgerSettings:
    """The settings, read once per process."""
    return read_settings()


def worker_grid() -> tuple[str, list[dict[str, Any]]]:
    """(region name, provider specs) of the grid this worker draws from: ``ledger_providers`` (named by
    ``CARBON_REGION``, else by its first spec's region), else the regions file's region named by
    ``CARBON_REGION`` (else its first), else the DAG's default providers."""
    from carbon_aware.grid.clients import spec_region
    from carbon_aware.planning.params import RunParams
    from carbon_aware.planning.regions import load_regions, regions_path

    declared = os.environ.get("CARBON_REGION", "").strip() or None
    specs = settings().providers
    if specs:
        return declared or spec_region(specs[0]) or "default", specs
    path = regions_path()
    if path is not None:
        regions = load_regions(path)
        region = next((r for r in regions if r.name == declared), regions[0])
        return region.name, list(region.providers)
    specs = RunParams().providers
    return declared or spec_region(specs[0]) or "default", specs


def region_specs(region: str) -> list[dict[str, Any]]:
    """The provider specs of a region the ledger names (what :func:`worker_grid` gave its worker)."""
    from carbon_aware.planning.params import RunParams
    from carbon_aware.planning.regions import load_regions, regions_path

    if settings().providers:
        return settings().providers
    path = regions_path()
    if path is not None:
        regions = load_regions(path)
        return list(next((r for r in regions if r.name == region), regions[0]).providers)
    return RunParams().providers
