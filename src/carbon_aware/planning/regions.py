"""Where to train as well as when: the regions a deployment can train in, and the plan across them.

A regions file (YAML; ``CARBON_REGIONS_FILE``, else ``include/regions.yaml`` if it exists) lists each
region: its name, the provider specs for its grid (as in the DAG's ``providers`` param), the Celery queue
its workers consume, and optionally its GPUs' speed and power relative to the home region (the first
listed). A region with speed 2 finishes in half the time; its expected energy is power x duration / speed.
Without a file there is one region on the default queue, planned exactly as before.

The plan chooses region and start together: every region's best window (``planner.plan_window`` on
that region's forecast, for the job's length there) is scored by expected emissions, power x
duration / speed x the window's mean intensity, and the lowest wins (ties: the earlier listed). The
counterfactual is the home region started at once. No Airflow here.
"""
from __future__ import annotations

import os
import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from carbon_aware.settings import REGIONS_ENV, regions_file


DEFAULT_QUEUE = "default"  # Airflow's [operators] default_queue
DEFAULT_REGION_NAME = "default"


class RegionsError(ValueError):
    pass


class Region(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    providers: list[dict[str, Any]] = Field(min_length=1)
    queue: str
    speed: float = Field(default=1.0, gt=0, le=1000)
    power: float = Field(default=1.0, gt=0, le=1000)

    @field_validator("name", "queue", mode="before")
    @classmethod
    def _non_empty(cls, value: Any) -> str:
        if not isinstance(value, str) or not value.strip() or value != value.strip() or " " in value:
            raise ValueError("expected a non-empty string without spaces")
        return value

    @field_validator("providers")
    @classmethod
    def _known_providers(cls, providers: list[dict[str, Any]]) -> list[dict[str, Any]]:
        from carbon_aware.planning.params import check_provider_specs  # numpy: only when a file is validated

        return check_provider_specs(providers, "a regions file")

    @property
    def relative_energy(self) -> float:
        """Expected energy of the job here, per unit of energy it takes on a speed 1, power 1 GPU."""
        return self.power / self.speed


class RegionsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    regions: list[Region] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> "RegionsFile":
        for field in ("name", "queue"):
            seen: dict[str, int] = {}
            for i, region in enumerate(self.regions):
                value = getattr(region, field)
                if value in seen:
                    raise ValueError(f"regions[{i}].{field}: {value!r} is already used by "
                                     f"regions[{seen[value]}]; each region needs its own {field}")
                seen[value] = i
        return self


def _location(loc: tuple) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def parse_regions(data: Any, where: str = "regions") -> list[Region]:
    """Validate the regions document (already parsed YAML); errors name ``where`` and the field."""
    try:
        return RegionsFile.model_validate(data).regions
    except ValidationError as error:
        from carbon_aware.redaction import redact

        lines = []
        for item in error.errors():
            name = _location(item["loc"])
            message = item["msg"].removeprefix("Value error, ")
            if item["type"] == "extra_forbidden":
                message = "unknown field"
            elif item["type"] == "missing":
                message = "required field missing"
            elif item["type"] == "model_type" and not item["loc"]:
                message = f"expected a mapping with a 'regions' list, got {type(data).__name__}"
            field = f"{name}: " if name else ""
            if message.startswith("regions["):  # a whole-file check that names its own field
                field = ""
            got = "" if item["type"] == "missing" or not name else f" (got {redact(item.get('input'))!r})"
            lines.append(f"{where}: {field}{message}{got}")
        raise RegionsError("\n".join(lines)) from None


def load_regions(path: str | Path) -> list[Region]:
    """The regions in a YAML file, validated; every error names the file and the field."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as error:
        raise RegionsError(f"{path}: cannot read the regions file ({error.strerror or error})") from None
    except yaml.YAMLError as error:
        raise RegionsError(f"{path}: not valid YAML ({error})") from None
    return parse_regions(data, str(path))


def regions_path() -> Path | None:
    """``CARBON_REGIONS_FILE`` (it must exist when set), else ``regions.yaml`` in ``CARBON_HOME`` if there
    is one, else None (one region). See :mod:`carbon_aware.settings`."""
    path, explicit = regions_file()
    if explicit and not path.is_file():
        raise RegionsError(f"{REGIONS_ENV}={os.environ.get(REGIONS_ENV)}: no such file")
    return path if path.is_file() else None


def default_region(providers: list[dict[str, Any]], queue: str = DEFAULT_QUEUE) -> Region:
    """The single region of a deployment without a regions file: the params' providers, one queue."""
    return Region(name=DEFAULT_REGION_NAME, providers=providers, queue=queue)


def deployment_regions(providers: list[dict[str, Any]], queue: str = DEFAULT_QUEUE) -> list[Region]:
    """The regions file's regions if there is one (its providers replace the params'), else one region."""
    path = regions_path()
    return load_regions(path) if path is not None else [default_region(providers, queue)]


def fetch_region_forecasts(regions: list[Region], now: datetime, horizon: timedelta, duration: timedelta,
                           store=None, anchor: datetime | None = None,
                           mock: dict[str, Any] | None = None) -> dict[str, tuple[Any, list[str]]]:
    """Each region's forecast through ``providers.fetch_forecast`` (its providers, then the history
    forecaster on the grid store, then the mock curve), needed for the job's length in that region.
    Returns {name: (forecast, reasons)}: a region whose providers all fail is kept, on its fallback."""
    from carbon_aware.grid.clients import fetch_forecast

    forecasts = {}
    for region in regions:
        needed_until = now + duration / region.speed
        forecasts[region.name] = fetch_forecast(region.providers, now, horizon, needed_until,
                                                mock=mock, store=store, anchor=anchor)
    return forecasts


def plan_regions(regions: list[Region], forecasts: dict[str, tuple[Any, list[str]]], duration: timedelta,
                 now: datetime, deadline: datetime, *, mode: str = "window", threshold: float | None = None,
                 planned_at: datetime | None = None, **segmenting: Any) -> dict[str, Any]:
    """Plan every region's best window and choose the lowest expected emissions.

    ``duration`` is the job's length in the home region (the first); in a region it is
    duration x home speed / speed. Returns the chosen region's plan dict (``planner.Plan`` keys) whose
    ``run_now_*`` and ``expected_saving_pct`` are against the home region started at once, plus
    ``region``, ``queue``, ``home_region``, ``grid_region``, ``ranking`` (names by expected emissions,
    best first), ``run_now_region``, ``expected_emissions_index``, ``run_now_emissions_index``,
    ``regions`` (every region's figures, or its error) and ``home_curve`` (the home region's forecast,
    which prices the run-now counterfactual).

    ``segmenting`` (``interruptible``, ``min_segment``, ``resume_cost``) goes to ``plan_window``: an
    interruptible job's index counts its running time, resume overhead included, not just its length."""
    from carbon_aware.grid.forecast import ForecastError
    from carbon_aware.planning.planner import PlanningError, plan_window

    if not regions:
        raise PlanningError("no regions to plan in")
    missing = [r.name for r in regions if r.name not in forecasts]
    if missing:
        raise PlanningError(f"no forecast for region(s) {', '.join(missing)}")
    home = regions[0]
    home_energy = home.relative_energy  # per unit of the job's work on a speed 1, power 1 GPU
    rows, plans = [], {}
    for region in regions:
        forecast, reasons = forecasts[region.name]
        hours = duration.total_seconds() / 3600 * home.speed / region.speed
        row: dict[str, Any] = {"name": region.name, "queue": region.queue, "speed": region.speed,
                               "power": region.power, "duration_hours": hours,
                               "source": getattr(forecast, "source", None),
                               "fallback_reasons": list(reasons), "start": None, "end": None,
                               "mean_intensity": None, "run_now_mean_intensity": None,
                               "expected_relative_energy": region.relative_energy / home_energy,
                               "expected_emissions_index": None, "run_now_emissions_index": None,
                               "segments": None, "error": None}
        try:
            plan = plan_window(forecast, timedelta(hours=hours), now, deadline, mode=mode,
                               threshold=threshold, fallback_reasons=reasons, planned_at=planned_at or now,
                               **segmenting)
        except (PlanningError, ForecastError) as error:
            if region is home:
                raise PlanningError(f"home region {home.name}: {error}") from None
            row["error"] = str(error)
            rows.append(row)
            continue
        running = sum((datetime.fromisoformat(s["end"]) - datetime.fromisoformat(s["start"])).total_seconds()
                      for s in plan.segments) / 3600 if plan.interruptible else hours
        energy = row["expected_relative_energy"] * running / hours
        row.update(start=plan.start, end=plan.end, mean_intensity=plan.mean_intensity,
                   run_now_mean_intensity=plan.run_now_mean_intensity, segments=len(plan.segments),
                   expected_emissions_index=energy * plan.mean_intensity,
                   run_now_emissions_index=row["expected_relative_energy"] * plan.run_now_mean_intensity)
        rows.append(row)
        plans[region.name] = plan
    # emissions index: g/kWh x the job's energy relative to the home region's, so home run-now = its mean
    planned = [row for row in rows if row["error"] is None]
    ranking = [row["name"] for row in sorted(planned, key=lambda row: row["expected_emissions_index"])]
    best = next(row for row in planned if row["name"] == ranking[0])  # sorted() is stable: ties keep order
    baseline = rows[0]["run_now_emissions_index"]
    chosen = plans[best["name"]].to_dict()
    chosen.update(
        grid_region=chosen["region"],  # the forecast's grid zone; ``region`` becomes the region's name
        region=best["name"], queue=best["queue"], home_region=home.name, ranking=ranking, regions=rows,
        run_now_start=plans[home.name].run_now_start,
        run_now_mean_intensity=plans[home.name].run_now_mean_intensity,
        run_now_region=home.name, home_curve=plans[home.name].curve,
        expected_emissions_index=best["expected_emissions_index"], run_now_emissions_index=baseline,
        expected_saving_pct=(100.0 * (baseline - best["expected_emissions_index"]) / baseline
                             if baseline > 0 else 0.0),
        reason=(plans[best["name"]].reason if len(regions) == 1 else
                f"lowest expected emissions over {len(planned)} of {len(regions)} regions "
                f"(power x duration / speed x mean intensity); in {best['name']}: "
                + plans[best["name"]].reason),
    )
    return chosen


def format_regions(plan: dict[str, Any]) -> str:
    """One line per region: what it would have cost, and the chosen one marked."""
    lines = []
    for row in plan.get("regions", []):
        mark = "*" if row["name"] == plan.get("region") else " "
        if row["error"]:
            lines.append(f"{mark} {row['name']:12} {row['queue']:16} not planned: {row['error']}")
            continue
        start = datetime.fromisoformat(row["start"])
        lines.append(f"{mark} {row['name']:12} {row['queue']:16} start {start:%Y-%m-%d %H:%M} UTC "
                     f"{row['duration_hours']:.3g} h at {row['mean_intensity']:.0f} g/kWh, "
                     f"emissions index {row['expected_emissions_index']:.0f} "
                     f"(run now {row['run_now_emissions_index']:.0f}); source {row['source']}"
                     + (f"; fallbacks: {row['fallback_reasons']}" if row["fallback_reasons"] else ""))
    return "\n".join(lines)


def task_suffix(name: str) -> str:
    """A region's name as it appears in a task id (letters, digits, '_', '-', '.')."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def live_queues() -> set[str] | None:
    """The queues at least one live Celery worker consumes; None when the executor has no queues (the
    local executors, ``dags test``): then every region counts as live."""
    from airflow.configuration import conf

    if "celery" not in conf.get("core", "executor", fallback="").lower():
        return None
    from airflow.providers.celery.executors.celery_executor_utils import app

    replies = app.control.inspect(timeout=3.0).active_queues() or {}
    return {queue["name"] for queues in replies.values() for queue in queues or []}


def choose_route(plan: dict[str, Any], grid_now: datetime, live: set[str] | None,
                 margin: timedelta = timedelta(0)) -> dict[str, Any] | None:
    """Where to train now. The planned region when a live worker consumes its queue. If none does, None
    (wait) until the latest start at which the next best region with a live worker still finishes by the
    deadline (less ``margin``: the time to the next check), then that region, with the reason. If no
    region has a live worker, the planned region (its task waits in the queue for one)."""
    rows = {row["name"]: row for row in plan["regions"]}
    planned = rows[plan["region"]]
    if live is None or planned["queue"] in live:
        return {"region": planned["name"], "queue": planned["queue"], "fallback": False,
                "reason": "the planned region"
                + ("" if live is None else ": a live worker consumes its queue")}
    deadline = datetime.fromisoformat(plan["deadline"])
    others = [rows[name] for name in plan["ranking"]
              if name != planned["name"] and rows[name]["queue"] in live]
    last_chance = deadline - timedelta(hours=(others[0] if others else planned)["duration_hours"]) - margin
    if grid_now < last_chance:
        return None
    if not others:
        return {"region": planned["name"], "queue": planned["queue"], "fallback": False,
                "reason": f"no region has a live worker: queued for {planned['name']} ({planned['queue']})"}
    best = others[0]
    late = grid_now + timedelta(hours=best["duration_hours"]) > deadline
    return {"region": best["name"], "queue": best["queue"], "fallback": True,
            "decided_at": grid_now.isoformat(), "last_chance": last_chance.isoformat(),
            "reason": f"no live worker on {planned['name']}'s queue {planned['queue']} while "
                      f"{best['name']} could still finish by the deadline: fell back to {best['name']}, the "
                      f"next best region with a live worker"
                      + (" (it will finish after the deadline)" if late else "")}
