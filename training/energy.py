"""Energy measurement with CodeCarbon, plus a timeline of cumulative energy.

CodeCarbon prices every kWh at one yearly figure per country, so its CO2 number cannot see
*when* the energy was drawn. The timeline of (UTC time, cumulative kWh) lets the report price
each interval at the grid intensity of its own time.
"""
from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from training.config import EmissionsConfig

log = logging.getLogger(__name__)


def utc_now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class EnergyMeter:
    """Wraps ``OfflineEmissionsTracker`` (no network). Never raises: if CodeCarbon cannot start,
    training goes on and :meth:`summary` reports ``None`` with the reason."""

    def __init__(self, config: EmissionsConfig, output_dir: Path, run_name: str, resumed_from: dict | None = None):
        self.config = config
        self.output_dir = output_dir
        self.run_name = run_name
        self.error: str | None = None if config.enabled else "disabled in config (emissions.enabled: false)"
        self._tracker = None
        # Energy measured by earlier attempts of the same run (a resumed run continues their totals).
        previous = resumed_from or {}
        self._offset = {key: float(previous.get(key, 0.0)) for key in ("kwh", "cpu_kwh", "gpu_kwh", "ram_kwh", "co2_kg", "seconds")}
        self.timeline: list[dict[str, Any]] = list(previous.get("timeline", []))

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

    def mark(self, label: str) -> float | None:
        """Append (now, cumulative kWh) to the timeline; returns the cumulative kWh."""
        if not self.active:
            return None
        kwh = self.totals()["kwh"]
        self.timeline.append({"time": utc_now_iso(), "kwh": kwh, "label": label})
        return kwh

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
        self.timeline.append({"time": utc_now_iso(), "kwh": totals["kwh"], "label": "end"})  # equals the total
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
            "codecarbon_intensity_g_per_kwh": 1000 * totals["co2_kg"] / totals["kwh"] if totals["kwh"] > 0 else None,
            "country_iso_code": self.config.country_iso_code,
            "region": self.config.region,
            "tracking_mode": data.tracking_mode,
            "cpu_model": data.cpu_model,
            "gpu_model": data.gpu_model or None,
        }
