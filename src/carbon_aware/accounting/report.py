"""The baseline-vs-optimized report: each run's energy priced at the grid intensity of its own time.

CodeCarbon prices every kWh at one yearly figure, so it cannot see a time-shift saving; here each
interval of a run's energy timeline is multiplied by the intensity of that interval (actuals where
the provider had them by report time, else the forecast, else the nearest known slot). The saving is
counterfactual - actual, never an emitted baseline, and splits exactly into
timing = G(optimized timeline at run-now) - G(optimized timeline in its window) and
efficiency = G(baseline timeline at run-now) - G(optimized timeline at run-now).

With a regions file the run-now counterfactual is the home region started at once, priced at the home
region's intensity (its actuals, else its forecast ``home_curve``), and a third term appears:
place = G(optimized timeline at run-now, home) - G(optimized timeline at run-now, chosen region);
timing is then within the chosen region and efficiency at home, so place + timing + efficiency is the
saving exactly. The measured timeline is priced as is in both regions (the report cannot measure what
the job would have drawn on another region's GPUs).
"""
from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np

from carbon_aware.clock import Clock
from carbon_aware.grid.forecast import IntensityPoint
from carbon_aware.outputs import PLOT_NAME, REPORT_NAME, run_dir_for
from carbon_aware.planning.plan import no_real_signal, trace_offset

log = logging.getLogger(__name__)

REPORT_VERSION = "2.0"


def _points(rows: list[dict[str, Any]]) -> list[IntensityPoint]:
    return [IntensityPoint(datetime.fromisoformat(r["start"]),
                           datetime.fromisoformat(r["end"]) - datetime.fromisoformat(r["start"]),
                           r["g_per_kwh"])
            for r in rows]


Timeline = list[tuple[datetime, float]]


def _attempt_segments(segments: list[dict[str, Any]]) -> dict[int, int]:
    """Attempt number -> index in ``segments``. An attempt with no record (killed with its worker)
    belongs to the segment of the next recorded attempt: the retry that went on with the same slot."""
    owner = {a["attempt"]: k for k, segment in enumerate(segments) for a in segment["attempts"]}
    return owner


def timeline_pieces(summary: dict[str, Any] | None, grid_start: datetime | None,
                    planned_hours: float) -> list[Timeline]:
    """(grid time, cumulative kWh) of a run, one piece per segment it ran in (one for a contiguous run).

    Real timestamps are grid time, except in time-compressed demos (``grid_start`` given): there each
    piece is laid onto its planned span (the whole run onto [grid_start, + planned duration]; a segment
    of an interruptible job onto its slot). A piece starts at the cumulative kWh the one before it
    ended with, so a pause draws nothing, and what CodeCarbon counted before a piece's first reading
    belongs to its first interval. One reading alone is an instant."""
    readings = [(datetime.fromisoformat(p["time"]), p["kwh"], p.get("attempt"))
                for p in (summary or {}).get("energy_timeline") or [] if p.get("kwh") is not None]
    if not readings:
        return []
    segments = [s for s in (summary or {}).get("segments") or [] if s.get("attempts")]
    owner = _attempt_segments(segments)
    groups: list[list[tuple[datetime, float]]] = [[] for _ in segments] or [[]]
    for moment, kwh, attempt in readings:
        if attempt in owner:
            k = owner[attempt]
        else:
            later = [owner[a] for a in owner if attempt is not None and a > attempt]
            k = min(later) if later else len(groups) - 1
        groups[k].append((moment, kwh))
    pieces, before = [], 0.0
    for k, points in enumerate(groups):
        if not points:
            continue
        segment = segments[k] if segments else {}
        start = grid_start
        if grid_start is not None and segment.get("grid_start"):
            start = datetime.fromisoformat(segment["grid_start"])
        hours = segment.get("grid_hours") or planned_hours
        if len(points) == 1:
            moment = start or points[0][0]
            piece = [(moment, before), (moment, points[0][1])]
        else:
            piece = [(points[0][0], before), *points[1:]]
            if start is not None:
                first, last = piece[0][0], piece[-1][0]
                span = (last - first).total_seconds() or 1.0
                piece = [(start + timedelta(hours=hours) * ((t - first).total_seconds() / span), kwh)
                         for t, kwh in piece]
        pieces.append(piece)
        before = piece[-1][1]
    return pieces


def joined(pieces: list[Timeline]) -> Timeline:
    """The pieces as one timeline: between two segments the cumulative kWh stays put (a pause)."""
    return [point for piece in pieces for point in piece]


def back_to_back(pieces: list[Timeline], start: datetime) -> Timeline:
    """The run had it started at ``start`` and run without pausing: the pieces placed end to end."""
    out: Timeline = []
    at = start
    for piece in pieces:
        out += [(at + (t - piece[0][0]), kwh) for t, kwh in piece]
        at = out[-1][0]
    return out


def grid_timeline(summary: dict[str, Any] | None, grid_start: datetime | None,
                  planned_hours: float) -> Timeline:
    return joined(timeline_pieces(summary, grid_start, planned_hours))


def shifted(timeline: Timeline, start: datetime) -> Timeline:
    """The same timeline started at ``start``: the energy a run would have drawn had it begun then."""
    return [(start + (t - timeline[0][0]), kwh) for t, kwh in timeline] if timeline else []


def _slot_at(points: list[IntensityPoint], a: float, b: float) -> IntensityPoint | None:
    """The slot holding [a, b] (a piece never straddles a slot boundary), or the one holding instant a."""
    for point in points:
        s, e = point.start.timestamp(), point.end.timestamp()
        if s <= a and (b <= e if b > a else a < e):
            return point
    return None


def _nearest(curves: dict[str, list[IntensityPoint]], a: float, b: float) -> tuple[float, str] | None:
    """The intensity of the slot closest in time to [a, b], actual before forecast at equal distance."""
    best = None
    for name, points in curves.items():
        for point in points:
            s, e = point.start.timestamp(), point.end.timestamp()
            distance = max(s - b, a - e, 0.0)
            if best is None or distance < best[0]:
                best = (distance, point.value, name)
    return (best[1], best[2]) if best else None


def price_run(timeline: list[tuple[datetime, float]], actual: list[IntensityPoint],
              forecast: list[IntensityPoint]) -> dict[str, Any] | None:
    """Grams of CO2 for each interval of the timeline at the intensity of that interval.

    Each interval is cut at every slot boundary of the two curves and its energy shared in proportion
    to time (constant power within an interval). A piece takes the actual intensity where there is one,
    else the forecast, else (a gap, or past both curves) the nearest known slot: ``source`` is then
    ``nearest`` and ``nearest_share`` says how much of the energy was priced that way. ``intervals``
    lists every piece; the sum of kwh x g_per_kwh over them is ``emissions_g``."""
    if not timeline:
        return None
    curves = {name: points for name, points in (("actual", actual), ("forecast", forecast)) if points}
    if not curves:
        return {"error": "no intensity known at all (no forecast and no actuals)"}
    bounds = sorted(
        {t for points in curves.values() for p in points for t in (p.start.timestamp(), p.end.timestamp())}
    )
    intervals: list[dict[str, Any]] = []
    for (t0, k0), (t1, k1) in zip(timeline, timeline[1:]):
        kwh = k1 - k0
        if kwh <= 0:
            continue
        a, b = t0.timestamp(), t1.timestamp()
        cuts = [a, *(x for x in bounds if a < x < b), b] if b > a else [a, a]
        for x0, x1 in zip(cuts, cuts[1:]):
            share = kwh * (x1 - x0) / (b - a) if b > a else kwh
            found = next(((slot.value, name) for name, points in curves.items()
                          if (slot := _slot_at(points, x0, x1)) is not None), None)
            if found is None:
                value, name = _nearest(curves, x0, x1)
                found = (value, "nearest")
            intervals.append({"start": datetime.fromtimestamp(x0, tz=t0.tzinfo).isoformat(),
                              "end": datetime.fromtimestamp(x1, tz=t0.tzinfo).isoformat(),
                              "kwh": share, "g_per_kwh": found[0], "source": found[1]})
    energy = sum(i["kwh"] for i in intervals)
    grams = sum(i["kwh"] * i["g_per_kwh"] for i in intervals)
    used = sorted({i["source"] for i in intervals}, key=["actual", "forecast", "nearest"].index)
    nearest = sum(i["kwh"] for i in intervals if i["source"] == "nearest")
    return {
        "energy_kwh": energy,
        "emissions_g": grams,
        "mean_intensity_g_per_kwh": grams / energy if energy else None,
        "intensity_source": "+".join(used) or None,
        "nearest_share": nearest / energy if energy else None,
        "window_start": timeline[0][0].isoformat(),
        "window_end": timeline[-1][0].isoformat(),
        "intervals": intervals,
    }


def _reduction(before: float | None, after: float | None) -> float | None:
    """Percent less than ``before``."""
    return 100.0 * (before - after) / before if before and after is not None else None


def _priced(block: dict[str, Any] | None) -> dict[str, Any] | None:
    return block if block and "error" not in block and block["energy_kwh"] else None


BASELINE_NOTES = {
    "measured": "baseline config measured in this run, started at once (its emissions were really emitted: "
    "a cost of the comparison)",
    "cached": "baseline config's energy measured earlier (see baseline.source_run), "
              "priced as if started at once",
    "off": "timing only: the optimized run's own energy priced at run-now; no baseline energy known",
}


def build_report(*, dag_run_id: str, plan: dict[str, Any], wait: dict[str, Any],
                 baseline: dict[str, Any] | None, optimized: dict[str, Any], actual: list[IntensityPoint],
                 report_time: datetime, home_actual: list[IntensityPoint] | None = None) -> dict[str, Any]:
    """``baseline`` is the train_baseline task's record (``kind`` measured or cached, ``summary``, where it
    came from) or None when off. Counterfactual = the baseline config started at run-now; actual = the
    optimized run in its window. Saving = counterfactual - actual = timing + efficiency, where timing
    prices the optimized run's own timeline shifted to run-now. A plan across regions (``home_region``)
    prices the counterfactual in the home region (``home_actual``, else ``home_curve``) and adds place.
    A plan on the mock curve (``no_real_signal``) is priced, but every saving is None: not counted."""
    runs = _price_runs(plan, wait, baseline, optimized, actual, home_actual)
    figures = _figures(runs, no_signal=bool(no_real_signal(plan)))
    kind = runs["kind"]
    return {
        "report_version": REPORT_VERSION,
        "dag_run_id": dag_run_id,
        "generated_at": report_time.isoformat(),
        "baseline_kind": kind,
        "no_real_signal": no_real_signal(plan),
        "baseline": {
            "kind": kind,
            "note": BASELINE_NOTES[kind],
            "source_run": (baseline or {}).get("dag_run_id"),
            "measured_at": (baseline or {}).get("measured_at"),
            "key": (baseline or {}).get("key"),
            "measurement_cost_kg": figures["cost_kg"],
        },
        # The original pipeline's blocks: "baseline" is the counterfactual (a plain run started at once).
        "carbon_savings": {
            "baseline_emissions_kg": figures["emis_b"],
            "optimized_emissions_kg": figures["emis_o"],
            "reduction_kg": figures["reduction_kg"],
            "reduction_percentage": figures["reduction_pct"],
        },
        **_quality_blocks(runs["summary_b"], optimized),
        **_saving_blocks(plan, runs, figures),
        "intensities": _intensities_block(plan, runs, figures),
        "codecarbon_static": _codecarbon_block(runs["summary_b"], optimized),
        "schedule": _schedule_block(plan, wait),
        "replay": _replay_block(plan, wait),
        "replans": wait.get("replans", []),
        "sources": _sources_block(plan, runs),
        "runs": {"baseline": _run_block(runs["summary_b"]), "optimized": _run_block(optimized)},
        "job": {
            "command": optimized.get("command"),
            "status": optimized.get("status", "completed"),
            "attempts": optimized.get("attempts"),
            "interruptible": bool(plan.get("request", {}).get("interruptible")),
            "planned_segments": plan.get("segments"),
            "segments": _segment_blocks(optimized, runs["opt_pieces"], actual, runs["forecast"]),
        },
        "stop": optimized.get("stop"),
    }


def _price_runs(plan: dict[str, Any], wait: dict[str, Any], baseline: dict[str, Any] | None,
                optimized: dict[str, Any], actual: list[IntensityPoint],
                home_actual: list[IntensityPoint] | None) -> dict[str, Any]:
    """Each run's timeline priced: ``opt`` (in its window), ``at_now`` (the same timeline at run-now),
    ``at_now_home`` (that, in the home region) and ``base`` (the baseline config at run-now, at home)."""
    forecast = _points(plan["curve"])
    hours = plan["duration_hours"]
    compressed = Clock.from_plan(plan).compression != 1
    run_now = datetime.fromisoformat(plan["run_now_start"])
    released = datetime.fromisoformat(wait["woke_at_grid"]) if compressed else None
    opt_pieces = timeline_pieces(optimized, released, hours)
    opt = price_run(joined(opt_pieces), actual, forecast)
    at_now = price_run(back_to_back(opt_pieces, run_now), actual, forecast)
    regional = plan.get("home_region") is not None
    home_forecast, home_hours = forecast, hours
    if regional:
        home_actual, home_forecast = list(home_actual or []), _points(plan["home_curve"])
        home_hours = plan["regions"][0]["duration_hours"]  # the home region is listed first
    else:
        home_actual = actual
    at_now_home = (price_run(back_to_back(opt_pieces, run_now), home_actual, home_forecast)
                   if regional else at_now)
    summary_b = baseline["summary"] if baseline else None
    base_pieces = timeline_pieces(summary_b, run_now if compressed else None, home_hours)
    base = price_run(back_to_back(base_pieces, run_now), home_actual, home_forecast) if baseline else None
    return {"kind": baseline["kind"] if baseline else "off", "has_baseline": bool(baseline),
            "summary_b": summary_b, "forecast": forecast,
            "regional": regional, "opt_pieces": opt_pieces, "opt": opt, "at_now": at_now,
            "at_now_home": at_now_home, "base": base}


def _figures(runs: dict[str, Any], no_signal: bool) -> dict[str, Any]:
    """The saving and its terms (kg), the emissions and energies; every saving None when ``no_signal``
    (priced on a made-up curve, a difference of two made-up figures is no saving)."""
    p_opt, p_now, p_base, p_home = (_priced(runs[k]) for k in ("opt", "at_now", "base", "at_now_home"))
    counterfactual = p_base if runs["has_baseline"] else p_home
    emis_b = counterfactual["emissions_g"] / 1000 if counterfactual else None
    emis_o = p_opt["emissions_g"] / 1000 if p_opt else None
    saving = {
        "timing_kg": (p_now["emissions_g"] - p_opt["emissions_g"]) / 1000 if p_opt and p_now else None,
        "timing_pct": _reduction(p_now and p_now["mean_intensity_g_per_kwh"],
                                 p_opt and p_opt["mean_intensity_g_per_kwh"]),
        "place_kg": (p_home["emissions_g"] - p_now["emissions_g"]) / 1000 if p_home and p_now else None,
        "place_pct": _reduction(p_home and p_home["emissions_g"], p_now and p_now["emissions_g"]),
        "efficiency_kg": ((p_base["emissions_g"] - p_home["emissions_g"]) / 1000
                          if p_base and p_home else None),
        "reduction_kg": emis_b - emis_o if emis_b is not None and emis_o is not None else None,
        "reduction_pct": _reduction(emis_b, emis_o),
    }
    if no_signal:
        saving = dict.fromkeys(saving)
    return {**saving, "p_opt": p_opt, "p_now": p_now, "p_home": p_home, "emis_b": emis_b, "emis_o": emis_o,
            "energy_b": p_base["energy_kwh"] if p_base else None,
            "energy_o": p_opt["energy_kwh"] if p_opt else None,
            "cost_kg": emis_b if runs["kind"] == "measured" else 0.0}


def _quality_blocks(summary_b: dict[str, Any] | None, optimized: dict[str, Any]) -> dict[str, Any]:
    acc_b = summary_b.get("final_test_accuracy_pct") if summary_b else None
    acc_o = optimized.get("final_test_accuracy_pct")
    mem_b = summary_b.get("peak_memory_mb") if summary_b else None
    mem_o = optimized.get("peak_memory_mb")
    return {
        "accuracy_impact": {
            "baseline_accuracy": acc_b,
            "optimized_accuracy": acc_o,
            "degradation_percentage": acc_b - acc_o if acc_b is not None and acc_o is not None else None,
        },
        "memory_savings": {
            "baseline_memory_mb": mem_b,
            "optimized_memory_mb": mem_o,
            "memory_kind": optimized.get("peak_memory_kind"),
            "reduction_percentage": _reduction(mem_b, mem_o),
        },
    }


def _saving_blocks(plan: dict[str, Any], runs: dict[str, Any], f: dict[str, Any]) -> dict[str, Any]:
    """timing, place (with a regions file) and efficiency: the three terms of the saving."""
    p_opt, p_now, regional = f["p_opt"], f["p_now"], runs["regional"]
    return {
        "timing": {
            "saving_kg": f["timing_kg"],
            "saving_percentage": f["timing_pct"],
            "run_now_intensity_g_per_kwh": p_now["mean_intensity_g_per_kwh"] if p_now else None,
            "chosen_window_intensity_g_per_kwh": p_opt["mean_intensity_g_per_kwh"] if p_opt else None,
        },
        "place": _place_block(plan, f["place_kg"], f["place_pct"], f["p_home"], p_now) if regional else None,
        "regions": plan["regions"] if regional else None,
        "efficiency": {
            "saving_kg": f["efficiency_kg"],
            "saving_percentage": _reduction(f["energy_b"], f["energy_o"]),
            "baseline_energy_kwh": f["energy_b"],
            "optimized_energy_kwh": f["energy_o"],
        },
    }


def _intensities_block(plan: dict[str, Any], runs: dict[str, Any], f: dict[str, Any]) -> dict[str, Any]:
    return {
        "planned_run_now_g_per_kwh": plan["run_now_mean_intensity"],
        "planned_window_g_per_kwh": plan["mean_intensity"],
        "expected_saving_pct": None if no_real_signal(plan) else plan["expected_saving_pct"],
        "baseline": runs["base"],
        "optimized": runs["opt"],
        "optimized_at_run_now": runs["at_now"],
        **({"optimized_at_run_now_home": runs["at_now_home"]} if runs["regional"] else {}),
    }


def _codecarbon_block(summary_b: dict[str, Any] | None, optimized: dict[str, Any]) -> dict[str, Any]:
    energy = optimized.get("energy") or {}
    return {
        "note": "CodeCarbon's own figure: one yearly intensity per country, blind to timing",
        "baseline_emissions_kg": (
            (summary_b.get("energy") or {}).get("codecarbon_emissions_kg") if summary_b else None
        ),
        "optimized_emissions_kg": energy.get("codecarbon_emissions_kg"),
        "intensity_g_per_kwh": energy.get("codecarbon_intensity_g_per_kwh"),
    }


def _schedule_block(plan: dict[str, Any], wait: dict[str, Any]) -> dict[str, Any]:
    return {
        "planned_start": plan["start"],
        "planned_end": plan["end"],
        "run_now_start": plan["run_now_start"],
        "deadline": plan["deadline"],
        "actual_start": wait.get("woke_at_grid"),
        "wait_seconds": wait.get("waited_seconds"),
        "time_compression": Clock.from_plan(plan).compression,
        "mode": plan["mode"],
        "reason": plan["reason"],
        "horizon_note": plan.get("horizon_note"),
    }


def _replay_block(plan: dict[str, Any], wait: dict[str, Any]) -> dict[str, Any] | None:
    """A replayed trace: the schedule's grid times as the trace's own times (grid time + offset)."""
    offset = trace_offset(plan)
    if offset is None:
        return None

    def in_trace(iso: str | None) -> str | None:
        return (datetime.fromisoformat(iso) + offset).isoformat() if iso else None

    return {"trace": plan["replay"]["trace"], "offset_seconds": plan["replay"]["offset_seconds"],
            "run_now_start": in_trace(plan["run_now_start"]), "planned_start": in_trace(plan["start"]),
            "actual_start": in_trace(wait.get("woke_at_grid")), "deadline": in_trace(plan["deadline"])}


def _sources_block(plan: dict[str, Any], runs: dict[str, Any]) -> dict[str, Any]:
    priced = (runs["base"], runs["opt"], runs["at_now"], runs["at_now_home"])
    return {
        "forecast": plan["source"],
        "region": plan["region"],
        "fallback_reasons": plan["fallback_reasons"],
        "intensity_used": sorted({r["intensity_source"] for r in priced if r and r.get("intensity_source")}),
    }


def _place_block(plan: dict[str, Any], place_kg: float | None, place_pct: float | None,
                 home: dict[str, Any] | None, chosen: dict[str, Any] | None) -> dict[str, Any]:
    """Where it ran: the optimized run's timeline at run-now in the home region vs in the chosen one."""
    return {
        "saving_kg": place_kg,
        "saving_percentage": place_pct,
        "home_region": plan["home_region"],
        "chosen_region": plan["region"],
        "queue": plan.get("queue"),
        "ranking": plan.get("ranking"),
        "home_run_now_intensity": home["mean_intensity_g_per_kwh"] if home else None,
        "chosen_run_now_intensity": chosen["mean_intensity_g_per_kwh"] if chosen else None,
    }


def _segment_blocks(summary: dict[str, Any], pieces: list[Timeline], actual: list[IntensityPoint],
                    forecast: list[IntensityPoint]) -> list[dict[str, Any]]:
    """Each segment the job ran in, priced on its own, with its attempts."""
    recorded = [s for s in summary.get("segments") or [] if s.get("attempts")]
    blocks = []
    for k, piece in enumerate(pieces):
        priced = _priced(price_run(piece, actual, forecast)) or {}
        segment = recorded[k] if k < len(recorded) else {}
        blocks.append({
            "index": k + 1,
            "start": piece[0][0].isoformat(),
            "end": piece[-1][0].isoformat(),
            "planned_start": segment.get("planned_start"),
            "planned_end": segment.get("planned_end"),
            "energy_kwh": priced.get("energy_kwh"),
            "emissions_g": priced.get("emissions_g"),
            "mean_intensity_g_per_kwh": priced.get("mean_intensity_g_per_kwh"),
            "attempts": [a["attempt"] for a in segment.get("attempts", [])],
            "stopped": [a["stopped"] for a in segment.get("attempts", [])],
        })
    return blocks


def _run_block(summary: dict[str, Any] | None) -> dict[str, Any] | None:
    if summary is None:
        return None
    energy = summary.get("energy") or {}
    return {"run_name": summary["run_name"], "command": summary.get("command"),
            "device": (summary.get("device") or {}).get("type"), "precision": summary.get("precision"),
            "effective_batch_size": summary.get("effective_batch_size"),
            "wall_time_seconds": summary["wall_time_seconds"], "attempts": summary.get("attempts"),
            "energy_kwh": energy.get("energy_kwh"), "energy_error": summary.get("energy_error"),
            "final_test_accuracy_pct": summary.get("final_test_accuracy_pct"),
            "started_at": summary.get("started_at"), "finished_at": summary.get("finished_at")}


def _fmt(value, pattern="{:.3g}", unit=""):
    return "n/a" if value is None else pattern.format(value) + unit


def format_table(report: dict[str, Any]) -> str:
    i, c, t, e = report["intensities"], report["carbon_savings"], report["timing"], report["efficiency"]
    place = report.get("place")  # only with a regions file
    base, opt = i["baseline"] or {}, i["optimized"] or {}
    run_now_g = place["home_run_now_intensity"] if place else t["run_now_intensity_g_per_kwh"]
    rows = [
        ("", f"baseline (run now in {place['home_region']})" if place else "baseline (run now)",
         f"optimized (chosen window in {place['chosen_region']})" if place else "optimized (chosen window)"),
        ("start (grid time, UTC)", report["schedule"]["run_now_start"][:16],
         (report["schedule"]["actual_start"] or "")[:16]),
        *_trace_time_row(report.get("replay")),
        ("energy", _fmt(e["baseline_energy_kwh"], "{:.3g}", " kWh"),
         _fmt(e["optimized_energy_kwh"], "{:.3g}", " kWh")),
        ("grid intensity", _fmt(run_now_g, "{:.0f}", " g/kWh"),
         _fmt(t["chosen_window_intensity_g_per_kwh"], "{:.0f}", " g/kWh")),
        ("emissions (time-resolved)",
         _fmt(c["baseline_emissions_kg"] and c["baseline_emissions_kg"] * 1000, "{:.3g}", " g"),
         _fmt(c["optimized_emissions_kg"] and c["optimized_emissions_kg"] * 1000, "{:.3g}", " g")),
        ("emissions (CodeCarbon static)",
         _fmt(_g(report["codecarbon_static"]["baseline_emissions_kg"]), "{:.3g}", " g"),
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
        f"saving: not counted: {report['no_real_signal']}" if report.get("no_real_signal") else
        f"saving: {_fmt(_g(c['reduction_kg']), '{:.3g}', ' g')} "
        f"({_fmt(c['reduction_percentage'], '{:.1f}', ' %')}) = "
        + (f"place {_fmt(_g(place['saving_kg']), '{:.3g}', ' g')} ({place['chosen_region']} vs "
           f"{place['home_region']} at run-now) + " if place else "") +
        f"timing {_fmt(_g(t['saving_kg']), '{:.3g}', ' g')} "
        f"(window g/kWh {_change(t['saving_percentage'])} vs run-now) + "
        f"efficiency {_fmt(_g(e['saving_kg']), '{:.3g}', ' g')} "
        f"(energy {_change(e['saving_percentage'])} vs baseline)",
        _baseline_line(report),
        *_region_lines(report),
        *_job_lines(report),
        f"forecast source: {report['sources']['forecast']}; "
        f"fallbacks: {report['sources']['fallback_reasons'] or 'none'}; "
        f"re-plans: {len(report['replans'])}; "
        f"wait {_fmt(report['schedule']['wait_seconds'], '{:.1f}', ' s')}"
        + (f" (time compressed x{report['schedule']['time_compression']:g})"
           if report["schedule"]["time_compression"] != 1 else ""),
    ]
    return "\n".join(lines)


def _trace_time_row(replay: dict[str, Any] | None) -> list[tuple[str, str, str]]:
    """A replayed trace: the starts in the trace's own time (the grid time row is the replay's)."""
    if not replay:
        return []
    return [("start (trace time, UTC)", (replay["run_now_start"] or "")[:16],
             (replay["actual_start"] or "")[:16])]


def _region_lines(report: dict[str, Any]) -> list[str]:
    """What each region would have cost, as planned (with a regions file)."""
    from carbon_aware.planning.regions import format_regions

    place = report.get("place")
    if not place:
        return []
    return [f"regions (* chosen; queue {place['queue']}; "
            f"home {place['home_region']} is the counterfactual):",
            format_regions({"regions": report["regions"], "region": place["chosen_region"]})]


def _job_lines(report: dict[str, Any]) -> list[str]:
    job, stop, route = report.get("job") or {}, report.get("stop"), report.get("route") or {}
    lines = []
    if route.get("region"):
        lines.append(f"trained in region {route['region']} (queue {route['queue']}"
                     + (f", on a worker of region {job['worker_region']}"
                        if job.get("worker_region") else "")
                     + f"): {route['reason']}")
    if job.get("interruptible") or len(job.get("segments") or []) > 1:
        lines.append(f"segments: {len(job['segments'])}, attempts: {job['attempts']}")
        lines += [f"  {s['index']}: {s['start'][:19]} to {s['end'][:19]}  "
                  f"{_fmt(s['energy_kwh'], '{:.3g}', ' kWh')}  {_fmt(s['emissions_g'], '{:.3g}', ' g')}  "
                  f"attempts {s['attempts']}" for s in job["segments"]]
    if stop and stop.get("reason") == "carbon_budget":
        lines.append(f"stopped by the carbon budget at {stop['spent_g']:.4g} g "
                     f"(budget {stop['budget_g']:g} g, "
                     f"finishing projected at {stop['projected_g']:.4g} g): "
                     "trained until its last checkpoint, "
                     f"accuracy {_fmt(report['accuracy_impact']['optimized_accuracy'], '{:.2f}', ' %')}")
    return lines


def _baseline_line(report: dict[str, Any]) -> str:
    b = report["baseline"]
    line = f"baseline: {b['kind']} ({b['note']})"
    if b["source_run"]:
        line += f"; measured in run {b['source_run']} at {b['measured_at']}"
    if b["measurement_cost_kg"]:
        line += f"; measurement cost {_fmt(_g(b['measurement_cost_kg']), '{:.3g}', ' g')}"
    nearest = [
        f"{name} {100 * block['nearest_share']:.0f} %"
        for name, block in report["intensities"].items()
        if isinstance(block, dict) and block.get("nearest_share")
    ]
    return line + (
        f"\npriced at the nearest known intensity (no data for its time): {', '.join(nearest)}"
        if nearest
        else ""
    )


def _change(saving_pct: float | None) -> str:
    return "n/a" if saving_pct is None else f"{-saving_pct:+.1f} %"


def _g(kg):
    return kg * 1000 if kg is not None else None


PLOTTED_RUNS = (("baseline", "tab:red", "run now (baseline)"),
                ("optimized_at_run_now", "tab:orange", "optimized config at run-now"),
                ("optimized", "tab:green", "chosen window (optimized)"))


def plot_png(report: dict[str, Any]) -> bytes:
    """The report's plot, drawn from the report alone (so the page can draw it wherever it runs): each
    run's priced intervals as the intensity it met, its window, the deadline; energy and emissions."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7), gridspec_kw={"height_ratios": [2, 1]})
    intensities = report.get("intensities") or {}
    for key, colour, label in PLOTTED_RUNS:
        run = intensities.get(key)
        if not isinstance(run, dict) or not run.get("intervals"):
            continue
        intervals = run["intervals"]
        times = [datetime.fromisoformat(i["start"]) for i in intervals]
        times.append(datetime.fromisoformat(intervals[-1]["end"]))
        values = [i["g_per_kwh"] for i in intervals]
        top.stairs(values, times, color=colour, linewidth=2, label=f"{label}: intensity met")
        top.axvspan(times[0], times[-1], color=colour, alpha=0.15)
    deadline = (report.get("schedule") or {}).get("deadline")
    if deadline:
        top.axvline(datetime.fromisoformat(deadline), color="black", linestyle="--", label="deadline")
    top.set_ylabel("gCO2/kWh")
    top.set_title(f"{report.get('dag_id') or 'carbon_training'} {report['dag_run_id']}: "
                  "grid intensity each run met (UTC)")
    if top.get_legend_handles_labels()[0]:
        top.legend(fontsize=8, loc="upper right")
    names = ["baseline", "optimized"]
    efficiency, savings = report.get("efficiency") or {}, report.get("carbon_savings") or {}
    energy = [efficiency.get("baseline_energy_kwh") or 0, efficiency.get("optimized_energy_kwh") or 0]
    grams = [_g(savings.get("baseline_emissions_kg")) or 0, _g(savings.get("optimized_emissions_kg")) or 0]
    x = np.arange(2)
    bottom.bar(x - 0.2, [v * 1000 for v in energy], 0.4, label="energy (Wh)")
    bottom.bar(x + 0.2, grams, 0.4, label="emissions (g CO2)")
    bottom.set_xticks(x, names)
    bottom.legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def publish(report: dict[str, Any], dag_id: str, run_id: str, local_dir: Path) -> dict[str, str]:
    """The report's JSON and plot written to ``local_dir`` (this task's own folder, for MLflow), copied
    to object storage (for download from any machine), then its row in the records database (what the
    page reads); returns the copies' URLs."""
    from carbon_aware import objects
    from carbon_aware.files import atomic_write, atomic_write_json
    from carbon_aware.records.reports import save_report

    prefix = objects.run_path(dag_id, run_id)
    files = {"json": objects.url(prefix / REPORT_NAME), "plot": objects.url(prefix / PLOT_NAME)}
    report["files"] = files
    plot = plot_png(report)
    atomic_write(local_dir / PLOT_NAME, lambda tmp: tmp.write_bytes(plot))
    atomic_write_json(local_dir / REPORT_NAME, report)
    for name in (PLOT_NAME, REPORT_NAME):
        objects.put_file(local_dir / name, prefix / name)
    save_report(dag_id, run_id, report, plot_url=files["plot"], report_url=files["json"])
    return files


def actuals_for_report(plan: dict[str, Any], grid_now: datetime, home: bool = False) -> list:
    """Measured intensities refetched for the whole span, from an hour before run-now (or the first
    re-plan's anchor) to report time, from the first provider that has them by now. With a regions
    file: the chosen region's providers, or (``home``) the home region's."""
    from carbon_aware.grid.forecast import ForecastError
    from carbon_aware.grid.clients import build_provider

    anchor = datetime.fromisoformat(plan["clock"]["anchor"])
    start = min(anchor, datetime.fromisoformat(plan["run_now_start"])) - timedelta(hours=1)
    specs = (plan.get("home_providers") if home else plan.get("providers")) or plan["request"]["providers"]
    for spec in specs:
        try:
            provider = build_provider(spec, anchor)
            points = provider.actuals(start, grid_now)
        except (ForecastError, ValueError, OSError) as error:
            log.info("actuals from %s unavailable: %s", spec.get("name"), error)
            continue
        if points:
            _keep_actuals(provider, points)
            return points
    return []


def _keep_actuals(provider, points: list) -> None:
    """The grid store keeps every actual a provider returned (for the history forecaster's fallback)."""
    from carbon_aware.grid.store import GridStore

    try:
        GridStore().add_actuals(provider.region or "unknown", provider.actuals_source, points)
    except OSError as error:
        log.warning("grid store: actuals not recorded (%s)", error)


def write_report(dag_run_id: str, plan: dict[str, Any], wait: dict[str, Any],
                 baseline: dict[str, Any] | None, optimized: dict[str, Any], now: datetime | None = None,
                 dag_id: str | None = None, route: dict[str, Any] | None = None,
                 tasks: dict[str, str] | None = None) -> tuple[dict[str, Any], str]:
    """``tasks``: the DAG's task ids by role (wait, job, report), for links to their logs. The report
    goes to the records database (the page reads it there); its JSON and plot to object storage."""
    from carbon_aware.files import atomic_write_json

    now = now or datetime.now(timezone.utc)
    if plan["clock"]["compression"] != 1:  # a demo: the runs are priced as if they took their planned time
        grid_now = max(datetime.fromisoformat(wait["woke_at_grid"])
                       + timedelta(hours=plan["duration_hours"]),
                       *(datetime.fromisoformat(s["grid_start"]) + timedelta(hours=s["grid_hours"])
                         for s in optimized.get("segments") or [] if s.get("grid_start")))
    else:
        grid_now = now
    actual = actuals_for_report(plan, grid_now)
    home_actual = None
    if plan.get("home_region") is not None:
        at_home = plan["region"] == plan["home_region"]
        home_actual = actual if at_home else actuals_for_report(plan, grid_now, home=True)
    report = build_report(dag_run_id=dag_run_id, plan=plan, wait=wait, baseline=baseline,
                          optimized=optimized, actual=actual, report_time=now, home_actual=home_actual)
    report["dag_id"] = dag_id
    report["route"] = route
    report["tasks"] = tasks
    report["job"]["worker_region"] = optimized.get("worker_region")
    local_dir = run_dir_for(dag_run_id, dag_id)
    publish(report, dag_id or "carbon_training", dag_run_id, local_dir)
    atomic_write_json(local_dir / "plan.json", plan)  # what was priced, beside the report's local copy
    return report, format_table(report)
