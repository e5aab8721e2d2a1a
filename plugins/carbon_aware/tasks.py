"""What the DAG's tasks do, written against plain inputs so it runs and tests without Airflow."""
from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
from collections import deque
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

from carbon_aware.outputs import PLOT_NAME, REPO_ROOT, REPORT_NAME, report_paths, run_dir_for
from carbon_aware.params import ParamsError, RunParams, validate_params

log = logging.getLogger(__name__)

DEFAULT_JOB_HOURS = 1.0


def _config_path(path: str) -> Path:
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else REPO_ROOT / candidate


def check_params(raw: dict[str, Any]) -> RunParams:
    """Validate params and both trainer configs (with the overrides) before anything waits or trains."""
    from training.config import ConfigError, load_config

    params = validate_params(raw)
    for name in ("baseline_config", "optimized_config"):
        try:
            load_config(_config_path(getattr(params, name)), params.training_overrides)
        except ConfigError as error:
            raise ParamsError(f"param {name} ({getattr(params, name)}) with training_overrides: {error}") from None
    return params


def last_measured_hours(exclude: Path | None = None) -> float | None:
    """The optimized run's wall time in the newest report under the output directory."""
    reports = sorted(report_paths(), key=lambda p: p.stat().st_mtime, reverse=True)
    for path in reports:
        if exclude and path.parent == exclude:
            continue
        try:
            seconds = json.loads(path.read_text())["runs"]["optimized"]["wall_time_seconds"]
        except (KeyError, TypeError, ValueError):
            continue
        return max(seconds / 3600, 1 / 60)
    return None


def make_plan(raw_params: dict[str, Any], dag_run_id: str, now: datetime | None = None) -> dict[str, Any]:
    from carbon_aware.planner import plan_window
    from carbon_aware.providers import fetch_forecast

    params = check_params(raw_params)
    now = now or datetime.now(timezone.utc)
    hours = params.job_duration_hours
    duration_note = "from params"
    if hours is None:
        hours = last_measured_hours(exclude=run_dir_for(dag_run_id))
        duration_note = "the last run's measured duration" if hours else f"no earlier run measured: default {DEFAULT_JOB_HOURS} h"
        hours = hours or DEFAULT_JOB_HOURS
    duration = timedelta(hours=hours)
    deadline = now + timedelta(hours=params.deadline_hours)
    # A provider whose forecast ends before the deadline (the UK API's fw48h with a 48 h deadline) is kept
    # as long as the job fits inside it: the plan stays within the forecast's horizon and says so.
    forecast, reasons = fetch_forecast(
        params.providers, now, timedelta(hours=params.deadline_hours), now + duration
    )
    chosen = plan_window(forecast, duration, now, deadline, mode=params.planning_mode, threshold=params.carbon_threshold,
                         fallback_reasons=reasons, planned_at=now)
    plan = chosen.to_dict()
    plan["horizon_note"] = (
        f"{forecast.source}'s forecast ends at {forecast.end.isoformat()}, before the deadline "
        f"{deadline.isoformat()}: planned within its horizon"
        if forecast.end < deadline
        else None
    )
    plan["summary"] = (f"{chosen.summary_line()}\nreason: {chosen.reason}; duration {hours:g} h ({duration_note})"
                       + (f"\nfallbacks: {reasons}" if reasons else "")
                       + (f"\nhorizon: {plan['horizon_note']}" if plan["horizon_note"] else ""))
    plan["duration_source"] = duration_note
    plan["clock"] = {"anchor": now.isoformat(), "compression": params.time_compression}
    plan["request"] = params.model_dump()
    plan["run_dir"] = str(run_dir_for(dag_run_id))
    return plan


def check_window(plan: dict[str, Any], grid_now: datetime) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """On waking: compare the current intensity with the forecast for now. If it runs more than the
    tolerance above and the deadline allows, re-plan. Returns (plan to follow, re-plan record or None)."""
    from carbon_aware.forecast import ForecastError
    from carbon_aware.planner import PlanningError, plan_window
    from carbon_aware.providers import build_provider, fetch_forecast

    request = plan["request"]
    anchor = datetime.fromisoformat(plan["clock"]["anchor"])
    expected = next((p["g_per_kwh"] for p in plan["curve"]
                     if datetime.fromisoformat(p["start"]) <= grid_now < datetime.fromisoformat(p["end"])), None)
    current, source = None, None
    for spec in request["providers"]:
        try:
            current = build_provider(spec, anchor).current(grid_now)
            source = spec["name"]
            if current is not None:
                break
        except (ForecastError, ValueError, OSError) as error:
            log.info("current intensity from %s unavailable: %s", spec.get("name"), error)
    check = {"at": grid_now.isoformat(), "current_g_per_kwh": current, "forecast_g_per_kwh": expected, "current_source": source}
    limit = expected * (1 + request["replan_tolerance_pct"] / 100) if expected is not None else None
    duration = timedelta(hours=plan["duration_hours"])
    deadline = datetime.fromisoformat(plan["deadline"])
    if current is None or limit is None or current <= limit:
        return plan, None
    if len(plan.get("replans", [])) >= request["max_replans"] or grid_now + duration > deadline:
        check["decision"] = "above tolerance, but no re-plan left or no time before the deadline: start now"
        return plan, check
    try:
        forecast, reasons = fetch_forecast(
            request["providers"], grid_now, deadline - grid_now, grid_now + duration, anchor=anchor
        )
        fresh = plan_window(forecast, duration, grid_now, deadline, mode=request["planning_mode"],
                            threshold=request["carbon_threshold"], fallback_reasons=reasons, planned_at=grid_now).to_dict()
    except (ForecastError, PlanningError) as error:
        check["decision"] = f"re-plan failed ({error}); start now"
        return plan, check
    check["decision"] = f"re-planned: new start {fresh['start']}"
    check["new_start"] = fresh["start"]
    updated = {**plan, **{k: fresh[k] for k in ("start", "end", "mean_intensity", "source", "curve", "reason", "fallback_reasons")}}
    updated["replans"] = [*plan.get("replans", []), check]
    return updated, check


def run_trainer(config: str, overrides: list[str], run_dir: Path, run_name: str,
                emit: Callable[[str], None] = print) -> dict[str, Any]:
    """Train in a fresh interpreter (CUDA does not survive a fork), streaming its lines to ``emit``.
    ``resume: true`` makes a retry continue from the last checkpoint of the same run."""
    command = [sys.executable, "-u", "-m", "training", "--config", str(_config_path(config)), *sum((["--set", o] for o in overrides), []),
               "--set", f"output.dir={run_dir}", "--set", f"training.run_name={run_name}", "--set", "training.resume=true"]
    emit(f"launching: {' '.join(command)}")
    tail: deque[str] = deque(maxlen=20)
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    try:
        for line in process.stdout:
            line = line.rstrip()
            tail.append(line)
            emit(line)
        code = process.wait()
    finally:
        if process.poll() is None:  # the task itself is being stopped: let the trainer checkpoint first
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
    if code != 0:
        raise RuntimeError(f"trainer exited with {code}:\n" + "\n".join(tail))
    return json.loads((run_dir / run_name / "summary.json").read_text())


def train_or_reuse_baseline(
    params: dict[str, Any],
    dag_run_id: str,
    run_dir: Path,
    now: datetime | None = None,
    emit: Callable[[str], None] = print,
) -> dict[str, Any] | None:
    """The baseline the report compares against, per ``params['baseline']``: None (off), a fresh
    measurement (every_run, or cached with nothing usable stored), or the stored one (cached)."""
    from carbon_aware import baselines
    from training import TRAINER_VERSION
    from training.config import load_config
    from training.trainer import device_model_for

    kind = params["baseline"]
    if kind == "off":
        return None
    config = load_config(_config_path(params["baseline_config"]), params["training_overrides"])
    ident = baselines.identity(
        config.model_dump(), device_model_for(config.training.device), TRAINER_VERSION
    )
    key = baselines.key_of(ident)
    now = now or datetime.now(timezone.utc)
    if kind == "cached":
        entry, why = baselines.lookup(key, params["baseline_max_age_days"], now)
        emit(f"baseline: {why}")
        if entry is not None:
            return {
                "kind": "cached",
                "key": key,
                "dag_run_id": entry["dag_run_id"],
                "measured_at": entry["measured_at"],
                "summary": entry["summary"],
            }
    emit(f"baseline: measuring the baseline config now (baseline: {kind})")
    summary = run_trainer(params["baseline_config"], params["training_overrides"], run_dir, "baseline", emit)
    stored = baselines.save(key, ident, dag_run_id, summary, now)
    if stored:
        emit(f"baseline: stored as {stored}")
    return {
        "kind": "measured",
        "key": key,
        "dag_run_id": dag_run_id,
        "measured_at": now.isoformat(),
        "summary": summary,
    }


def actuals_for_report(plan: dict[str, Any], grid_now: datetime) -> list:
    """Measured intensities refetched for the whole span, from an hour before run-now (or the first
    re-plan's anchor) to report time, from the first provider that has them by now."""
    from carbon_aware.forecast import ForecastError
    from carbon_aware.providers import build_provider

    anchor = datetime.fromisoformat(plan["clock"]["anchor"])
    start = min(anchor, datetime.fromisoformat(plan["run_now_start"])) - timedelta(hours=1)
    for spec in plan["request"]["providers"]:
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
    from carbon_aware.store import GridStore

    try:
        GridStore().add_actuals(provider.region or "unknown", provider.actuals_source, points)
    except OSError as error:
        log.warning("grid store: actuals not recorded (%s)", error)


def write_report(dag_run_id: str, plan: dict[str, Any], wait: dict[str, Any], baseline: dict[str, Any] | None,
                 optimized: dict[str, Any], now: datetime | None = None) -> tuple[dict[str, Any], str]:
    from carbon_aware.report import build_report, format_table, write_plot
    from training.files import atomic_write_json

    now = now or datetime.now(timezone.utc)
    if plan["clock"]["compression"] != 1:  # a demo: the runs are priced as if they took their planned time
        grid_now = datetime.fromisoformat(wait["woke_at_grid"]) + timedelta(hours=plan["duration_hours"])
    else:
        grid_now = now
    actual = actuals_for_report(plan, grid_now)
    report = build_report(dag_run_id=dag_run_id, plan=plan, wait=wait, baseline=baseline, optimized=optimized,
                          actual=actual, report_time=now)
    run_dir = Path(plan["run_dir"])
    report["files"] = {"json": str(run_dir / REPORT_NAME), "plot": str(run_dir / PLOT_NAME)}
    write_plot(report, plan, actual, run_dir / PLOT_NAME)
    atomic_write_json(run_dir / REPORT_NAME, report)
    atomic_write_json(run_dir / "plan.json", plan)
    return report, format_table(report)
