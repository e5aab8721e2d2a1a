"""Every run's comparison report as one flat row, and the totals across runs: what the Carbon page
and its JSON endpoint show. Reads the reports the report tasks stored in the records database, only of
the DAGs the caller may read, each through the schema check of report_schema (reports are untrusted
input); imports nothing heavy."""
from __future__ import annotations

import logging
from typing import Any, Callable

from carbon_aware.accounting.report_schema import UnreadableReport, check_report
from carbon_aware.records.reports import StoredReport, report_dag_ids, stored_report, stored_reports

log = logging.getLogger(__name__)

# (row key, path in comparison_report.json): the numbers and facts a row carries.
ROW_FIELDS = {
    "dag_id": ("dag_id",),
    "job_status": ("job", "status"),
    "wait_task_id": ("tasks", "wait"),
    "report_task_id": ("tasks", "report"),
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
    "place_saving_kg": ("place", "saving_kg"),
    "home_region": ("place", "home_region"),
    "chosen_region": ("place", "chosen_region"),
    "timing_saving_kg": ("timing", "saving_kg"),
    "efficiency_saving_kg": ("efficiency", "saving_kg"),
    "baseline_accuracy_pct": ("accuracy_impact", "baseline_accuracy"),
    "optimized_accuracy_pct": ("accuracy_impact", "optimized_accuracy"),
    "baseline_kind": ("baseline_kind",),
    "baseline_source_run": ("baseline", "source_run"),
    "baseline_cost_kg": ("baseline", "measurement_cost_kg"),
    "no_real_signal": ("no_real_signal",),
    "trace": ("replay", "trace"),
    "trace_planned_start": ("replay", "planned_start"),
    "trace_actual_start": ("replay", "actual_start"),
}
# A run without a real signal (planned on the mock curve) claims none of these and counts in no total.
SAVINGS = ("saving_kg", "saving_pct", "place_saving_kg", "timing_saving_kg", "efficiency_saving_kg",
           "net_saving_kg")
NO_REAL_SIGNAL = "no real signal"
TOTALS = (
    "saving_kg",
    "place_saving_kg",
    "timing_saving_kg",
    "efficiency_saving_kg",
    "baseline_emissions_kg",
    "optimized_emissions_kg",
    "baseline_cost_kg",
)


def _dig(report: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = report
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def row_for(report: dict[str, Any], report_id: int) -> dict[str, Any]:
    row = {"run_id": report["dag_run_id"], "report_id": report_id}
    row.update({key: _dig(report, path) for key, path in ROW_FIELDS.items()})
    row["replans"] = len(report.get("replans") or [])
    segments = _dig(report, ("job", "segments"))
    row["segments"] = len(segments) if isinstance(segments, list) else None
    if (
        "baseline" not in report
    ):  # a report from before the cached baseline: its baseline run was really emitted
        measured = str(row["baseline_kind"] or "").startswith("measured")
        row["baseline_kind"] = "measured" if measured else "off"
        row["baseline_cost_kg"] = row["baseline_emissions_kg"] if measured else 0.0
    row["net_saving_kg"] = (row["saving_kg"] - (row["baseline_cost_kg"] or 0.0)
                            if isinstance(row["saving_kg"], (int, float)) else None)
    if not row["no_real_signal"] and row["provider"] == "mock":  # a report from before the label
        row["no_real_signal"] = f"{NO_REAL_SIGNAL}: planned on the mock curve"
    if row["no_real_signal"]:
        row.update(dict.fromkeys(SAVINGS))
    return row


def counted(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows the totals and the chart sum: those with a real signal."""
    return [row for row in rows if not row.get("no_real_signal")]


def readable_report(report_id: int, may_read: Callable[[str], bool]) -> StoredReport | None:
    """The stored report ``report_id``, or None where there is none or the caller may not read its
    DAG's runs (the same answer: no hint that it exists). Check its content with ``check_report``."""
    stored = stored_report(report_id)
    return stored if stored is not None and may_read(stored.dag_id) else None


def unreadable_row(stored: StoredReport, error: UnreadableReport) -> dict[str, Any]:
    """What the page lists for a report it cannot show: its ids and the reason, no content."""
    return {"run_id": error.run_id or stored.run_id, "dag_id": stored.dag_id,
            "report_id": stored.report_id, "unreadable": error.reason}


def load_runs(may_read: Callable[[str], bool]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(one row per valid report of the DAGs the caller may read, newest first; one unreadable_row per
    such report that failed the check)."""
    rows, unreadable = [], []
    for stored in stored_reports({dag_id for dag_id in report_dag_ids() if may_read(dag_id)}):
        try:
            rows.append(row_for(check_report(stored.text.encode()), stored.report_id))
        except UnreadableReport as error:
            log.warning("unreadable report %s of %s: %s", stored.run_id, stored.dag_id, error.reason)
            unreadable.append(unreadable_row(stored, error))
    rows.sort(key=lambda row: row["generated_at"] or "", reverse=True)
    return rows, sorted(unreadable, key=lambda row: row["report_id"])


def totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Sums across runs; a run without a figure (e.g. no energy measured) is counted as not priced, a
    run without a real signal (``no_real_signal``) not at all: ``runs`` counts the others."""
    result: dict[str, Any] = {"runs_no_real_signal": len(rows) - len(counted(rows))}
    rows = counted(rows)
    result["runs"] = len(rows)
    for key in TOTALS:
        values = [row[key] for row in rows if isinstance(row[key], (int, float))]
        result[key] = sum(values)
        result[f"{key}_runs_priced"] = len(values)
    # What the product really avoided: counterfactual - actual, less what measuring baselines emitted.
    result["net_saving_kg"] = result["saving_kg"] - result["baseline_cost_kg"]
    return result


def cumulative(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Oldest first: the running sums of avoided (counterfactual - actual), measurement cost and net,
    over the runs with a real signal."""
    points, avoided, cost = [], 0.0, 0.0
    for row in sorted(counted(rows), key=lambda r: r["generated_at"] or ""):
        avoided += row["saving_kg"] if isinstance(row["saving_kg"], (int, float)) else 0.0
        cost += row["baseline_cost_kg"] if isinstance(row["baseline_cost_kg"], (int, float)) else 0.0
        points.append({"run_id": row["run_id"], "generated_at": row["generated_at"], "avoided_kg": avoided,
                       "baseline_cost_kg": cost, "net_kg": avoided - cost})
    return points
