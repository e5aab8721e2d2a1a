"""Every run's comparison report as one flat row, and the totals across runs: what the Carbon page
and its JSON endpoint show. Reads the reports the DAG's report task wrote; imports nothing heavy."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from carbon_aware.outputs import REPORT_NAME, output_root, report_paths

log = logging.getLogger(__name__)

# (row key, path in comparison_report.json): the numbers and facts a row carries.
ROW_FIELDS = {
    "generated_at": ("generated_at",),
    "provider": ("sources", "forecast"),
    "region": ("sources", "region"),
    "fallback_reasons": ("sources", "fallback_reasons"),
    "run_now_start": ("schedule", "run_now_start"),
    "planned_start": ("schedule", "planned_start"),
    "actual_start": ("schedule", "actual_start"),
    "wait_seconds": ("schedule", "wait_seconds"),
    "time_compression": ("schedule", "time_compression"),
    "run_now_intensity_g_per_kwh": ("timing", "run_now_intensity_g_per_kwh"),
    "window_intensity_g_per_kwh": ("timing", "chosen_window_intensity_g_per_kwh"),
    "baseline_energy_kwh": ("efficiency", "baseline_energy_kwh"),
    "optimized_energy_kwh": ("efficiency", "optimized_energy_kwh"),
    "baseline_emissions_kg": ("carbon_savings", "baseline_emissions_kg"),
    "optimized_emissions_kg": ("carbon_savings", "optimized_emissions_kg"),
    "saving_kg": ("carbon_savings", "reduction_kg"),
    "saving_pct": ("carbon_savings", "reduction_percentage"),
    "timing_saving_kg": ("timing", "saving_kg"),
    "efficiency_saving_kg": ("efficiency", "saving_kg"),
    "baseline_accuracy_pct": ("accuracy_impact", "baseline_accuracy"),
    "optimized_accuracy_pct": ("accuracy_impact", "optimized_accuracy"),
    "baseline_kind": ("baseline_kind",),
}
TOTALS = ("saving_kg", "timing_saving_kg", "efficiency_saving_kg", "baseline_emissions_kg", "optimized_emissions_kg")


def _dig(report: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = report
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def row_for(report: dict[str, Any], directory: str) -> dict[str, Any]:
    row = {"run_id": report["dag_run_id"], "directory": directory}
    row.update({key: _dig(report, path) for key, path in ROW_FIELDS.items()})
    row["replans"] = len(report.get("replans") or [])
    return row


def load_report(directory: str) -> dict[str, Any] | None:
    """The report in output/<directory>, or None; ``directory`` must name a direct child of the output root."""
    root = output_root()
    path = (root / directory / REPORT_NAME).resolve()
    if path.parent.parent != root or not path.is_file():
        return None
    return json.loads(path.read_text())


def load_rows() -> list[dict[str, Any]]:
    """One row per readable report, newest first. An unreadable report is logged and left out."""
    rows = []
    for path in report_paths():
        try:
            rows.append(row_for(json.loads(path.read_text()), path.parent.name))
        except (OSError, ValueError, KeyError) as error:
            log.warning("skipping unreadable report %s: %s", path, error)
    return sorted(rows, key=lambda row: row["generated_at"] or "", reverse=True)


def totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Sums across runs; a run without a figure (e.g. no energy measured) is counted as not priced."""
    result: dict[str, Any] = {"runs": len(rows)}
    for key in TOTALS:
        values = [row[key] for row in rows if isinstance(row[key], (int, float))]
        result[key] = sum(values)
        result[f"{key}_runs_priced"] = len(values)
    return result


def report_file(directory: str, name: str) -> Path | None:
    """A file the report task wrote for one run (the JSON or the plot), or None."""
    root = output_root()
    path = (root / directory / name).resolve()
    return path if path.parent.parent == root and path.is_file() else None

