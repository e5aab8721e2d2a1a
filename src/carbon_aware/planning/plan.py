"""Planning a run: validate its params, choose the window (or slots) before the deadline, and
re-plan on waking when the grid runs dirtier than forecast. Written against plain inputs (no Airflow)."""
from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from typing import Any

from carbon_aware.planning.params import ParamsError, RunParams, validate_params
from carbon_aware.planning.regions import regions_path

log = logging.getLogger(__name__)

DEFAULT_JOB_HOURS = 1.0
NO_REAL_SIGNAL = "no real signal"


def check_params(raw: dict[str, Any], trainer_configs: bool = True) -> RunParams:
    """Validate params and (``trainer_configs``) both trainer configs with the overrides, before anything
    waits or trains. Only the built-in trainer's checks need the demo ``training`` package."""
    params = validate_params(raw)
    check_sources(params.providers)
    if trainer_configs:
        from carbon_aware.accounting.trainer_job import check_trainer_configs

        check_trainer_configs(params)
    return params


def check_sources(specs: list[dict[str, Any]]) -> None:
    """What the providers in params name must be usable before anything waits: each connection exists
    with its provider's type, each trace file reads as a trace. Errors name the field, never content."""
    from carbon_aware.grid.forecast import ForecastError
    from carbon_aware.grid.clients.specs import check_connections
    from carbon_aware.settings import data_dir
    from carbon_aware.grid.traces import load_trace

    try:
        check_connections(specs)
    except ValueError as error:
        raise ParamsError(f"param providers: {error}") from None
    for i, spec in enumerate(specs):
        if spec["name"] == "trace":
            try:
                trace = load_trace(str(data_dir() / spec["path"]), spec.get("signal", "direct"))
            except ForecastError as error:
                raise ParamsError(f"param providers[{i}].path: {error}") from None
            _check_replay(trace, spec, f"param providers[{i}].replay_start")


def _check_replay(trace, spec: dict[str, Any], field: str) -> None:
    """A replay must start inside its trace: else the trace is skipped and the run planned on the
    fallbacks (the mock curve), which no one asked for."""
    from carbon_aware.grid.forecast import parse_time

    if not spec.get("replay_start"):
        return
    if not trace.start <= parse_time(spec["replay_start"]).timestamp() < trace.end:
        first, end = (datetime.fromtimestamp(t, timezone.utc) for t in (trace.start, trace.end))
        raise ParamsError(f"{field}: {spec['replay_start']} is outside {spec['path']}, which runs from "
                          f"{first:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC")


def make_plan(raw_params: dict[str, Any], dag_run_id: str, now: datetime | None = None,
              trainer_configs: bool = True) -> dict[str, Any]:
    from carbon_aware.planning.planner import plan_window
    from carbon_aware.grid.clients import fetch_forecast
    from carbon_aware.records.reports import last_measured_hours

    params = check_params(raw_params, trainer_configs)
    now = now or datetime.now(timezone.utc)
    hours = params.job_duration_hours
    duration_note = "from params"
    if hours is None:
        hours = last_measured_hours(exclude_run=dag_run_id)
        duration_note = ("the last run's measured duration" if hours
                         else f"no earlier run measured: default {DEFAULT_JOB_HOURS} h")
        hours = hours or DEFAULT_JOB_HOURS
    duration = timedelta(hours=hours)
    deadline = now + timedelta(hours=params.deadline_hours)
    if regions_path() is not None:
        plan = plan_across_regions(params, now, duration, deadline, duration_note)
        return _finish(plan, params, duration_note, dag_run_id, now)
    # A provider whose forecast ends before the deadline (the UK API's fw48h with a 48 h deadline) is kept
    # as long as the job fits inside it: the plan stays within the forecast's horizon and says so.
    forecast, reasons = fetch_forecast(
        params.providers, now, timedelta(hours=params.deadline_hours), now + duration
    )
    chosen = plan_window(forecast, duration, now, deadline, mode=params.planning_mode,
                         threshold=params.carbon_threshold, fallback_reasons=reasons, planned_at=now,
                         **segmenting(params.model_dump()))
    plan = chosen.to_dict()
    plan["horizon_note"] = _horizon_note(forecast, deadline)
    plan["replay"] = replay_of(forecast)
    plan["summary"] = (f"{chosen.summary_line(trace_offset(plan))}\nreason: {chosen.reason}; "
                       f"duration {hours:g} h ({duration_note})"
                       + (f"\nfallbacks: {reasons}" if reasons else "")
                       + (f"\nhorizon: {plan['horizon_note']}" if plan["horizon_note"] else ""))
    return _finish(plan, params, duration_note, dag_run_id, now)


def replay_of(forecast) -> dict[str, Any] | None:
    """A replayed trace's own time: ``offset_seconds`` = trace time - grid time (the plan's times are
    grid time, the replay's moment now), and the trace's file name. None for any other source."""
    if forecast.replay is None:
        return None
    name, offset = forecast.replay
    return {"trace": name, "offset_seconds": offset.total_seconds()}


def trace_offset(plan: dict[str, Any]) -> timedelta | None:
    replay = plan.get("replay")
    return timedelta(seconds=replay["offset_seconds"]) if replay else None


def no_real_signal(plan: dict[str, Any]) -> str | None:
    """The label of a plan whose forecast is the mock curve (the chosen region's, or the home region's,
    which prices the run-now counterfactual): its window and saving follow the curve's made-up shape,
    not a grid, so no saving is claimed for it. None when the signal is real."""
    home = (plan.get("regions") or [{}])[0] if plan.get("home_region") is not None else {}
    mocked = [what for what, source in (("the plan", plan.get("source")),
                                        (f"the home region {plan.get('home_region')}", home.get("source")))
              if source == "mock"]
    if not mocked:
        return None
    why = ("every configured provider failed" if any(r.startswith("mock:") for r in
                                                      plan.get("fallback_reasons") or [])
           else "the providers name the mock curve")
    return (f"{NO_REAL_SIGNAL}: {' and '.join(mocked)} used the mock curve ({why}); "
            "no saving is counted for this run")


def _finish(plan: dict[str, Any], params: RunParams, duration_note: str, dag_run_id: str,
            now: datetime) -> dict[str, Any]:
    plan["no_real_signal"] = no_real_signal(plan)
    if plan["no_real_signal"]:
        log.warning("%s", plan["no_real_signal"])
        first, _, rest = plan["summary"].partition("\n")
        plan["summary"] = f"{first} [{NO_REAL_SIGNAL}]\n{rest}\n{plan['no_real_signal']}"
    plan["duration_source"] = duration_note
    plan["clock"] = {"anchor": now.isoformat(), "compression": params.time_compression}
    plan["request"] = params.model_dump()
    return plan


def _horizon_note(forecast, deadline: datetime) -> str | None:
    return (f"{forecast.source}'s forecast ends at {forecast.end.isoformat()}, before the deadline "
            f"{deadline.isoformat()}: planned within its horizon" if forecast.end < deadline else None)


def plan_across_regions(params: RunParams, now: datetime, duration: timedelta, deadline: datetime,
                        duration_note: str) -> dict[str, Any]:
    """With a regions file: region and start chosen together (``regions.plan_regions``); the file's
    providers replace the params'. ``duration`` is the job's length in the home region (the first).
    The plan is the chosen region's (``curve``, ``source``, ``fallback_reasons``, ``providers``: its
    grid) with ``run_now_*`` the home region started at once, plus ``regions`` (every region's figures
    and fallbacks; a region whose providers fail is planned on its fallback forecast), ``ranking``,
    ``queue``, ``home_region``, ``home_providers`` and ``home_curve`` (what prices the counterfactual)."""
    from dataclasses import fields

    from carbon_aware.planning.planner import Plan
    from carbon_aware.planning.regions import (fetch_region_forecasts, format_regions, load_regions,
                                               plan_regions)

    regions = load_regions(regions_path())
    forecasts = fetch_region_forecasts(regions, now, timedelta(hours=params.deadline_hours), duration)
    plan = plan_regions(regions, forecasts, duration, now, deadline, mode=params.planning_mode,
                        threshold=params.carbon_threshold, planned_at=now, **segmenting(params.model_dump()))
    chosen = next(region for region in regions if region.name == plan["region"])
    plan["providers"] = chosen.providers
    plan["home_providers"] = regions[0].providers
    plan["horizon_note"] = _horizon_note(forecasts[chosen.name][0], deadline)
    plan["replay"] = replay_of(forecasts[chosen.name][0])
    line = Plan(**{f.name: plan[f.name] for f in fields(Plan)}).summary_line(trace_offset(plan))
    reasons = plan["fallback_reasons"]
    plan["summary"] = (f"{line}\nregion {plan['region']} (queue {plan['queue']}; run-now counterfactual: "
                       f"home region {plan['home_region']}; ranking {', '.join(plan['ranking'])})"
                       f"\nreason: {plan['reason']}; duration {duration.total_seconds() / 3600:g} h at home "
                       f"({duration_note})"
                       + (f"\nfallbacks: {reasons}" if reasons else "")
                       + (f"\nhorizon: {plan['horizon_note']}" if plan["horizon_note"] else "")
                       + f"\nregions (* chosen):\n{format_regions(plan)}")
    return plan


def segmenting(request: dict[str, Any]) -> dict[str, Any]:
    """The planner's interruptible settings from a run's params."""
    return {"interruptible": request["interruptible"],
            "min_segment": timedelta(minutes=request["min_segment_minutes"]),
            "resume_cost": timedelta(minutes=request["resume_cost_minutes"])}


def check_window(plan: dict[str, Any], grid_now: datetime) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """On waking: compare the current intensity with the forecast for now. If it runs more than the
    tolerance above and the deadline allows, re-plan. Returns (plan to follow, re-plan record or None).
    A plan across regions re-plans the start within its chosen region only (its ``providers``): the
    region is not chosen again, and its row in ``regions`` keeps the first plan's figures."""
    from carbon_aware.grid.forecast import ForecastError
    from carbon_aware.planning.planner import PlanningError, plan_window
    from carbon_aware.grid.clients import build_provider, fetch_forecast

    request = plan["request"]
    anchor = datetime.fromisoformat(plan["clock"]["anchor"])
    expected = next((p["g_per_kwh"] for p in plan["curve"]
                     if datetime.fromisoformat(p["start"]) <= grid_now < datetime.fromisoformat(p["end"])),
                    None)
    current, source = None, None
    providers = plan.get("providers") or request["providers"]  # the chosen region's, with a regions file
    for spec in providers:
        try:
            current = build_provider(spec, anchor).current(grid_now)
            source = spec["name"]
            if current is not None:
                break
        except (ForecastError, ValueError, OSError) as error:
            log.info("current intensity from %s unavailable: %s", spec.get("name"), error)
    check = {"at": grid_now.isoformat(), "current_g_per_kwh": current, "forecast_g_per_kwh": expected,
             "current_source": source}
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
            providers, grid_now, deadline - grid_now, grid_now + duration, anchor=anchor
        )
        fresh = plan_window(forecast, duration, grid_now, deadline, mode=request["planning_mode"],
                            **segmenting(request), threshold=request["carbon_threshold"],
                            fallback_reasons=reasons, planned_at=grid_now).to_dict()
    except (ForecastError, PlanningError) as error:
        check["decision"] = f"re-plan failed ({error}); start now"
        return plan, check
    check["decision"] = f"re-planned: new start {fresh['start']}"
    check["new_start"] = fresh["start"]
    updated = {**plan, **{k: fresh[k] for k in ("start", "end", "mean_intensity", "source", "curve",
                                                "reason", "fallback_reasons", "segments")}}
    updated["replay"] = replay_of(forecast)
    updated["no_real_signal"] = no_real_signal(updated)
    updated["replans"] = [*plan.get("replans", []), check]
    return updated, check


