"""Energy measurement with CodeCarbon, plus a timeline of cumulative energy (no torch, no Airflow).

CodeCarbon prices every kWh at one yearly figure per country, so its CO2 number cannot see
*when* the energy was drawn. The timeline of (UTC time, cumulative kWh) lets the report price
each interval at the grid intensity of its own time.
"""
from __future__ import annotations

import json
import logging
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger(__name__)


class EmissionsConfig(BaseModel):
    """How CodeCarbon measures: the country (and region) its yearly figure is for, the sampling."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    enabled: bool = True
    country_iso_code: str = Field(default="GBR", pattern=r"^[A-Z]{3}$")
    region: str | None = None
    measure_power_secs: float = Field(default=1.0, gt=0)
    log_every_seconds: float = Field(
        default=10.0, gt=0, description="energy log reading interval during training"
    )


def utc_now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


ENERGY_LOG_NAME = "energy_log.jsonl"
TOTAL_KEYS = ("kwh", "cpu_kwh", "gpu_kwh", "ram_kwh", "co2_kg", "seconds")
ENTRY_KEYS = ("time", "label", "attempt", "attempt_kwh", *TOTAL_KEYS)


class EnergyLog(Protocol):
    """Where a job's readings go, every attempt's, in order: a job's log outlives its attempts (a
    retry, maybe on another machine, continues its cumulative totals)."""

    def read(self) -> list[dict[str, Any]]:
        """Every reading so far, oldest first: ``ENTRY_KEYS``."""

    def append(self, entry: dict[str, Any]) -> None:
        """One reading, durable before this returns (a SIGKILL right after loses nothing)."""


class FileEnergyLog:
    """The log as an append-only JSON-lines file (the trainer run by hand, without Airflow)."""

    def __init__(self, path: Path):
        self.path = path

    def read(self) -> list[dict[str, Any]]:
        return read_energy_log(self.path)

    def append(self, entry: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as handle:
            handle.write(json.dumps(entry) + "\n")
            handle.flush()
            os.fsync(handle.fileno())


def read_energy_log(path: Path) -> list[dict[str, Any]]:
    """Every complete line of a run's energy log; a line torn by a kill mid-write is left out."""
    if not path.is_file():
        return []
    entries = []
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and all(key in entry for key in (*TOTAL_KEYS, "attempt", "time")):
            entries.append(entry)
    return entries


class EnergyMeter:
    """Wraps ``OfflineEmissionsTracker`` (no network). Never raises: if CodeCarbon cannot start,
    training goes on and :meth:`summary` reports ``None`` with the reason.

    Every reading is appended to the job's :class:`EnergyLog` (``energy_log.jsonl`` in the run
    directory by default; the records database for an Airflow job) before training goes on, cumulative
    over all attempts of the run. A new attempt (a retry after a kill, OOM or SIGTERM) continues from
    the log's last reading, so every attempt's kWh counts and the timeline stays monotonic; at most
    ``emissions.log_every_seconds`` of a killed attempt's energy goes unrecorded."""

    def __init__(self, config: EmissionsConfig, output_dir: Path, run_name: str,
                 resumed_from: dict | None = None, log: EnergyLog | None = None):
        self.config = config
        self.output_dir = output_dir
        self.run_name = run_name
        self.error: str | None = None if config.enabled else "disabled in config (emissions.enabled: false)"
        self._tracker = None
        self.log = log or FileEnergyLog(output_dir / ENERGY_LOG_NAME)
        logged = self.log.read()
        # Energy of earlier attempts of the same run: the log, else (older runs) the checkpoint's copy.
        previous = logged[-1] if logged else (resumed_from or {})
        self._offset = {key: float(previous.get(key, 0.0)) for key in TOTAL_KEYS}
        self.timeline: list[dict[str, Any]] = (
            [{k: e[k] for k in ("time", "kwh", "label", "attempt") if k in e} for e in logged]
            if logged
            else list(previous.get("timeline", []))
        )
        self.attempt = max((e["attempt"] for e in logged), default=0) + 1
        self._last_mark = 0.0

    def start(self) -> None:
        if not self.config.enabled:
            return
        try:
            from codecarbon import OfflineEmissionsTracker

            self._tracker = OfflineEmissionsTracker(
                project_name=self.run_name,
                country_iso_code=self.config.country_iso_code,
                region=self.config.region,
                measure_power_secs=self.config.measure_power_secs,
                output_dir=str(self.output_dir),
                output_file="emissions.csv",
                log_level="error",
                allow_multiple_runs=True,
            )
            self._tracker.start()
        except Exception as error:  # CodeCarbon failing must never stop training
            self._tracker = None
            self.error = f"CodeCarbon could not start: {error!r}"
        else:
            # CodeCarbon swallows its own exceptions; a tracker that failed has no start time.
            if getattr(self._tracker, "_start_time", None) is None:
                self._tracker = None
                self.error = "CodeCarbon could not start (see its log above)"
        if self.error:
            log.warning("energy tracking off: %s", self.error)
        else:
            self.mark("start")

    @property
    def active(self) -> bool:
        return self._tracker is not None

    def _reading(self):
        # CodeCarbon has no public call for "energy so far" that does not also append a CSV row;
        # these two calls are what its own flush() runs.
        self._tracker._measure_power_and_energy_if_stale()
        return self._tracker._prepare_emissions_data()

    def totals(self, data=None) -> dict[str, float]:
        data = data if data is not None else self._reading()
        return {
            "kwh": self._offset["kwh"] + data.energy_consumed,
            "cpu_kwh": self._offset["cpu_kwh"] + data.cpu_energy,
            "gpu_kwh": self._offset["gpu_kwh"] + data.gpu_energy,
            "ram_kwh": self._offset["ram_kwh"] + data.ram_energy,
            "co2_kg": self._offset["co2_kg"] + data.emissions,
            "seconds": self._offset["seconds"] + data.duration,
        }

    def _append(self, label: str, totals: dict[str, float], attempt_kwh: float) -> None:
        now = utc_now_iso()
        self.timeline.append({"time": now, "kwh": totals["kwh"], "label": label, "attempt": self.attempt})
        self.log.append({"time": now, "label": label, "attempt": self.attempt, "attempt_kwh": attempt_kwh,
                         **totals})
        self._last_mark = time.monotonic()

    def mark(self, label: str) -> float | None:
        """Append (now, cumulative kWh) to the timeline and the log; returns the cumulative kWh."""
        if not self.active:
            return None
        data = self._reading()
        totals = self.totals(data)
        self._append(label, totals, data.energy_consumed)
        return totals["kwh"]

    def maybe_mark(self) -> None:
        """A reading if ``emissions.log_every_seconds`` passed since the last (called every step)."""
        if self.active and time.monotonic() - self._last_mark >= self.config.log_every_seconds:
            self.mark("reading")

    def checkpoint_state(self) -> dict[str, Any] | None:
        if not self.active:
            return None
        return {**self.totals(), "timeline": self.timeline}

    def stop(self) -> dict[str, Any] | None:
        """Stop the tracker and return the summary's ``energy`` block (``None`` when not measured)."""
        if not self.active:
            return None
        self._tracker.stop()
        data = self._tracker.final_emissions_data
        totals = self.totals(data)
        self._tracker = None
        self._append("end", totals, data.energy_consumed)  # equals the total
        seconds = totals["seconds"]
        return {
            "source": "codecarbon",
            "codecarbon_version": data.codecarbon_version,
            "energy_kwh": totals["kwh"],
            "cpu_energy_kwh": totals["cpu_kwh"],
            "gpu_energy_kwh": totals["gpu_kwh"],
            "ram_energy_kwh": totals["ram_kwh"],
            "avg_power_watts": totals["kwh"] * 3.6e6 / seconds if seconds > 0 else None,
            "duration_seconds": seconds,
            "codecarbon_emissions_kg": totals["co2_kg"],
            "codecarbon_intensity_g_per_kwh": (1000 * totals["co2_kg"] / totals["kwh"]
                                               if totals["kwh"] > 0 else None),
            "country_iso_code": self.config.country_iso_code,
            "region": self.config.region,
            "tracking_mode": data.tracking_mode,
            "cpu_model": data.cpu_model,
            "gpu_model": data.gpu_model or None,
        }
