"""The baseline-vs-optimized report: each run's energy priced at the grid intensity of its own time.

CodeCarbon prices every kWh at one yearly figure, so it cannot see a time-shift saving; here each
interval of a run's energy timeline is multiplied by the intensity of that interval (actuals where
the provider had them by report time, else the forecast). The saving splits exactly into
timing = (I_baseline - I_optimized) x E_optimized and efficiency = (E_baseline - E_optimized) x I_baseline.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from carbon_aware.forecast import IntensityPoint, points_to_arrays
from carbon_aware.planner import Curve

REPORT_VERSION = "1.0"


@dataclass
class Clock:
    """Maps real time to grid time. ``compression`` > 1 only in demos: waiting passes that much faster
    from ``started`` (real) = ``anchor`` (grid), and each run is priced as if it took its planned
    duration from its intended start (the baseline at once, the optimized run when it was released:
    the trigger's moment plus the real seconds the scheduler took to resume the sensor)."""

    anchor: datetime
    compression: float = 1.0
    started: datetime | None = None

    def grid(self, real: datetime) -> datetime:
        return self.anchor + (real - (self.started or self.anchor)) * self.compression

    def real(self, grid: datetime) -> datetime:
        return (self.started or self.anchor) + (grid - self.anchor) / self.compression

    @classmethod
    def from_plan(cls, plan: dict[str, Any], started: datetime | None = None) -> "Clock":
        compression = plan["clock"]["compression"]
        return cls(datetime.fromisoformat(plan["clock"]["anchor"]), compression, started if compression != 1 else None)


def _points(rows: list[dict[str, Any]]) -> list[IntensityPoint]:
    return [IntensityPoint(datetime.fromisoformat(r["start"]), datetime.fromisoformat(r["end"]) - datetime.fromisoformat(r["start"]), r["g_per_kwh"])
            for r in rows]


def grid_timeline(summary: dict[str, Any], grid_start: datetime | None, planned_hours: float) -> list[tuple[datetime, float]]:
    """(grid time, cumulative kWh) of a run: its real timestamps, or (time-compressed demos) the
    timeline laid onto [grid_start, grid_start + planned duration]."""
    points = [(datetime.fromisoformat(p["time"]), p["kwh"]) for p in summary.get("energy_timeline") or []]
    if len(points) < 2:
        return []
    points[0] = (points[0][0], 0.0)  # what CodeCarbon counted before its first reading belongs to the first interval
    if grid_start is None:
        return points
    first, last = points[0][0], points[-1][0]
    span = (last - first).total_seconds() or 1.0
    return [(grid_start + timedelta(hours=planned_hours) * ((t - first).total_seconds() / span), kwh) for t, kwh in points]


def price_run(timeline: list[tuple[datetime, float]], actual: list[IntensityPoint], forecast: list[IntensityPoint]) -> dict[str, Any] | None:
    """Grams of CO2 for each interval of the timeline at the intensity of that interval."""
    if not timeline:
        return None
    curves = {name: Curve(*points_to_arrays(points)) for name, points in (("actual", actual), ("forecast", forecast)) if points}
    grams, energy, used = 0.0, 0.0, set()
    for (t0, k0), (t1, k1) in zip(timeline, timeline[1:]):
        kwh = k1 - k0
        if kwh <= 0:
            continue
        intensity = None
        a, b = t0.timestamp(), max(t1.timestamp(), t0.timestamp() + 1e-3)
        for name, curve in curves.items():
            mean = curve.window_means(np.array([a]), b - a)[0]
            if not np.isnan(mean):
                intensity, source = float(mean), name
                break
        if intensity is None:
            return {"error": f"no intensity known for {t0.isoformat()}-{t1.isoformat()}"}
        grams += kwh * intensity
        energy += kwh
        used.add(source)
    source = "actual" if used == {"actual"} else "forecast" if used == {"forecast"} else "actual+forecast"
    return {"energy_kwh": energy, "emissions_g": grams, "mean_intensity_g_per_kwh": grams / energy if energy else None,
            "intensity_source": source, "window_start": timeline[0][0].isoformat(), "window_end": timeline[-1][0].isoformat()}


def _reduction(before: float | None, after: float | None) -> float | None:
    """Percent less than ``before``."""
    return 100.0 * (before - after) / before if before and after is not None else None


def build_report(*, dag_run_id: str, plan: dict[str, Any], wait: dict[str, Any], baseline: dict[str, Any] | None,
                 optimized: dict[str, Any], actual: list[IntensityPoint], report_time: datetime) -> dict[str, Any]:
    clock = Clock.from_plan(plan)
    forecast = _points(plan["curve"])
    hours = plan["duration_hours"]
    compressed = clock.compression != 1
    run_now = datetime.fromisoformat(plan["run_now_start"])
    released = datetime.fromisoformat(wait["woke_at_grid"]) if compressed else None
    opt_timeline = grid_timeline(optimized, released, hours)
    opt = price_run(opt_timeline, actual, forecast)
    if baseline is not None:
        base = price_run(grid_timeline(baseline, run_now if compressed else None, hours), actual, forecast)
        counterfactual = "measured baseline run, started at once"
    else:
        counterfactual = "counterfactual: the optimized run's measured energy at the run-now intensity"
        shifted = [(run_now + (t - opt_timeline[0][0]), k) for t, k in opt_timeline]
        base = price_run(shifted, actual, forecast)

    energy_b = base["energy_kwh"] if base and "error" not in base else None
    energy_o = opt["energy_kwh"] if opt and "error" not in opt else None
    intensity_b = base["mean_intensity_g_per_kwh"] if energy_b else None
    intensity_o = opt["mean_intensity_g_per_kwh"] if energy_o else None
    emis_b = base["emissions_g"] / 1000 if energy_b else None
    emis_o = opt["emissions_g"] / 1000 if energy_o else None
    known = None not in (energy_b, energy_o, intensity_b, intensity_o)
    timing_kg = (intensity_b - intensity_o) * energy_o / 1000 if known else None
    efficiency_kg = (energy_b - energy_o) * intensity_b / 1000 if known else None

    acc_b = baseline["final_test_accuracy_pct"] if baseline else None
    acc_o = optimized["final_test_accuracy_pct"]
    mem_b = baseline["peak_memory_mb"] if baseline else None
    mem_o = optimized["peak_memory_mb"]
    return {
        "report_version": REPORT_VERSION,
        "dag_run_id": dag_run_id,
        "generated_at": report_time.isoformat(),
        "baseline_kind": counterfactual,
        # The original pipeline's blocks, with emissions now priced by the time of use.
        "carbon_savings": {"baseline_emissions_kg": emis_b, "optimized_emissions_kg": emis_o,
                           "reduction_kg": emis_b - emis_o if known else None, "reduction_percentage": _reduction(emis_b, emis_o)},
        "accuracy_impact": {"baseline_accuracy": acc_b, "optimized_accuracy": acc_o,
                            "degradation_percentage": acc_b - acc_o if acc_b is not None else None},
        "memory_savings": {"baseline_memory_mb": mem_b, "optimized_memory_mb": mem_o, "memory_kind": optimized["peak_memory_kind"],
                           "reduction_percentage": _reduction(mem_b, mem_o)},
        "timing": {"saving_kg": timing_kg, "saving_percentage": _reduction(intensity_b, intensity_o),
                   "run_now_intensity_g_per_kwh": intensity_b, "chosen_window_intensity_g_per_kwh": intensity_o},
        "efficiency": {"saving_kg": efficiency_kg, "saving_percentage": _reduction(energy_b, energy_o),
                       "baseline_energy_kwh": energy_b, "optimized_energy_kwh": energy_o},
        "intensities": {"planned_run_now_g_per_kwh": plan["run_now_mean_intensity"], "planned_window_g_per_kwh": plan["mean_intensity"],
                        "expected_saving_pct": plan["expected_saving_pct"], "baseline": base, "optimized": opt},
        "codecarbon_static": {
            "note": "CodeCarbon's own figure: one yearly intensity per country, blind to timing",
            "baseline_emissions_kg": (baseline.get("energy") or {}).get("codecarbon_emissions_kg") if baseline else None,
            "optimized_emissions_kg": (optimized.get("energy") or {}).get("codecarbon_emissions_kg"),
            "intensity_g_per_kwh": (optimized.get("energy") or {}).get("codecarbon_intensity_g_per_kwh"),
        },
        "schedule": {"planned_start": plan["start"], "planned_end": plan["end"], "run_now_start": plan["run_now_start"],
                     "deadline": plan["deadline"], "actual_start": wait.get("woke_at_grid"),
                     "wait_seconds": wait.get("waited_seconds"), "time_compression": clock.compression,
                     "mode": plan["mode"], "reason": plan["reason"]},
        "replans": wait.get("replans", []),
        "sources": {"forecast": plan["source"], "region": plan["region"], "fallback_reasons": plan["fallback_reasons"],
                    "intensity_used": sorted({r["intensity_source"] for r in (base, opt) if r and "intensity_source" in r})},
        "runs": {"baseline": _run_block(baseline), "optimized": _run_block(optimized)},
    }


def _run_block(summary: dict[str, Any] | None) -> dict[str, Any] | None:
    if summary is None:
        return None
    energy = summary.get("energy") or {}
    return {"run_name": summary["run_name"], "device": summary["device"]["type"], "precision": summary["precision"],
            "effective_batch_size": summary["effective_batch_size"], "wall_time_seconds": summary["wall_time_seconds"],
            "energy_kwh": energy.get("energy_kwh"), "energy_error": summary.get("energy_error"),
            "final_test_accuracy_pct": summary["final_test_accuracy_pct"], "started_at": summary["started_at"],
            "finished_at": summary["finished_at"]}


def _fmt(value, pattern="{:.3g}", unit=""):
    return "n/a" if value is None else pattern.format(value) + unit


def format_table(report: dict[str, Any]) -> str:
    i, c, t, e = report["intensities"], report["carbon_savings"], report["timing"], report["efficiency"]
    base, opt = i["baseline"] or {}, i["optimized"] or {}
    rows = [
        ("", "baseline (run now)", "optimized (chosen window)"),
        ("start (grid time, UTC)", report["schedule"]["run_now_start"][:16], (report["schedule"]["actual_start"] or "")[:16]),
        ("energy", _fmt(e["baseline_energy_kwh"], "{:.3g}", " kWh"), _fmt(e["optimized_energy_kwh"], "{:.3g}", " kWh")),
        ("grid intensity", _fmt(t["run_now_intensity_g_per_kwh"], "{:.0f}", " g/kWh"), _fmt(t["chosen_window_intensity_g_per_kwh"], "{:.0f}", " g/kWh")),
        ("emissions (time-resolved)", _fmt(c["baseline_emissions_kg"] and c["baseline_emissions_kg"] * 1000, "{:.3g}", " g"),
         _fmt(c["optimized_emissions_kg"] and c["optimized_emissions_kg"] * 1000, "{:.3g}", " g")),
        ("emissions (CodeCarbon static)", _fmt(_g(report["codecarbon_static"]["baseline_emissions_kg"]), "{:.3g}", " g"),
         _fmt(_g(report["codecarbon_static"]["optimized_emissions_kg"]), "{:.3g}", " g")),
        ("test accuracy", _fmt(report["accuracy_impact"]["baseline_accuracy"], "{:.2f}", " %"),
         _fmt(report["accuracy_impact"]["optimized_accuracy"], "{:.2f}", " %")),
        ("peak memory", _fmt(report["memory_savings"]["baseline_memory_mb"], "{:.0f}", " MB"),
         _fmt(report["memory_savings"]["optimized_memory_mb"], "{:.0f}", " MB")),
        ("intensity from", base.get("intensity_source", "n/a"), opt.get("intensity_source", "n/a")),
    ]
    width = [max(len(str(r[k])) for r in rows) for k in range(3)]
    lines = ["  ".join(str(cell).ljust(width[k]) for k, cell in enumerate(row)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in width))
    lines += [
        "",
        f"saving: {_fmt(_g(c['reduction_kg']), '{:.3g}', ' g')} ({_fmt(c['reduction_percentage'], '{:.1f}', ' %')}) = "
        f"timing {_fmt(_g(t['saving_kg']), '{:.3g}', ' g')} (window g/kWh {_change(t['saving_percentage'])} vs run-now) + "
        f"efficiency {_fmt(_g(e['saving_kg']), '{:.3g}', ' g')} (energy {_change(e['saving_percentage'])} vs baseline)",
        f"baseline: {report['baseline_kind']}",
        f"forecast source: {report['sources']['forecast']}; fallbacks: {report['sources']['fallback_reasons'] or 'none'}; "
        f"re-plans: {len(report['replans'])}; wait {_fmt(report['schedule']['wait_seconds'], '{:.1f}', ' s')}"
        + (f" (time compressed x{report['schedule']['time_compression']:g})" if report["schedule"]["time_compression"] != 1 else ""),
    ]
    return "\n".join(lines)


def _change(saving_pct: float | None) -> str:
    return "n/a" if saving_pct is None else f"{-saving_pct:+.1f} %"


def _g(kg):
    return kg * 1000 if kg is not None else None


def write_plot(report: dict[str, Any], plan: dict[str, Any], actual: list[IntensityPoint], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from training.files import atomic_write

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7), gridspec_kw={"height_ratios": [2, 1]})
    forecast = _points(plan["curve"])
    top.step([p.start for p in forecast], [p.value for p in forecast], where="post", label=f"forecast ({plan['source']})")
    if actual:
        top.step([p.start for p in actual], [p.value for p in actual], where="post", alpha=0.7, label="actual")
    for key, colour, label in (("baseline", "tab:red", "run now (baseline)"), ("optimized", "tab:green", "chosen window (optimized)")):
        run = report["intensities"][key]
        if run and "window_start" in run:
            top.axvspan(datetime.fromisoformat(run["window_start"]), datetime.fromisoformat(run["window_end"]), color=colour, alpha=0.25, label=label)
    top.axvspan(datetime.fromisoformat(plan["start"]), datetime.fromisoformat(plan["end"]), fill=False, hatch="//", edgecolor="tab:green", label="planned window")
    top.axvline(datetime.fromisoformat(plan["deadline"]), color="black", linestyle="--", label="deadline")
    top.set_ylabel("gCO2/kWh")
    top.set_title(f"carbon_training {report['dag_run_id']}: intensity and windows (UTC)")
    top.legend(fontsize=8, loc="upper right")
    names = ["baseline", "optimized"]
    energy = [report["efficiency"]["baseline_energy_kwh"] or 0, report["efficiency"]["optimized_energy_kwh"] or 0]
    grams = [_g(report["carbon_savings"]["baseline_emissions_kg"]) or 0, _g(report["carbon_savings"]["optimized_emissions_kg"]) or 0]
    x = np.arange(2)
    bottom.bar(x - 0.2, [v * 1000 for v in energy], 0.4, label="energy (Wh)")
    bottom.bar(x + 0.2, grams, 0.4, label="emissions (g CO2)")
    bottom.set_xticks(x, names)
    bottom.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)

