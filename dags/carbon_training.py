"""carbon_training: plan the lowest-carbon start before the deadline, wait for it without holding a
worker slot, train, and report the measured saving against running at once.

Thin wiring only: no torch, numpy or network at import time; the work lives in plugins/carbon_aware
and training/, imported inside the tasks.
"""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import DAG, Param, get_current_context, task

from carbon_aware import CarbonPlanOperator, CarbonReportOperator, CarbonTrainerOperator, CarbonWindowSensor
from carbon_aware.sensors.window import CarbonRegionSensor
from training.config import MAX_OVERRIDE_CHARS, MAX_OVERRIDES, overridable_keys

OVERRIDE_KEYS = overridable_keys()
OVERRIDE_PATTERN = "^(" + "|".join(key.replace(".", "\\.") for key in OVERRIDE_KEYS) + ")=.+$"

GPU_POOL = "gpu"
# CeleryExecutor: the training tasks go to this queue, which the GPU workers consume (docker-compose.yaml).
# Executors without queues (LocalExecutor, `dags test`) ignore it.
TRAINING_QUEUE = os.environ.get("CARBON_TRAINING_QUEUE", "training")

PARAMS = {
    "providers": Param(
        [{"name": "uk"}],
        type="array",
        maxItems=10,
        items={"type": "object"},
        description="Carbon-intensity sources, tried in order, then the mock curve. Each is an object with "
        "'name' (uk, electricitymaps, watttime, carbon_aware_sdk, trace, mock) and its options, e.g. "
        '{"name": "uk", "region_id": 13}, {"name": "electricitymaps", "zone": "DE", "history": true}, '
        '{"name": "trace", "path": "carbon/...csv", "replay_start": "2023-03-01T00:00:00Z"} (a file '
        "in the deployment's data folder). Endpoints and tokens come from Airflow connections, never "
        "from here: a spec may name a 'conn_id' of its provider's connection type.",
    ),
    "job_duration_hours": Param(
        1.0,
        type=["number", "null"],
        exclusiveMinimum=0,
        maximum=48,
        description="Expected training time in hours; empty = the last run's measured duration.",
    ),
    "deadline_hours": Param(
        24.0,
        type="number",
        exclusiveMinimum=0,
        maximum=48,
        description="Latest finish, in hours after the run starts.",
    ),
    "planning_mode": Param(
        "window",
        enum=["window", "threshold"],
        description="window: lowest mean intensity before the deadline. threshold: the original "
        "rule (first slot below the threshold, else the best window).",
    ),
    "carbon_threshold": Param(
        300.0, type="number", exclusiveMinimum=0, maximum=2000, description="gCO2/kWh, threshold mode only."
    ),
    "replan_tolerance_pct": Param(
        20.0,
        type="number",
        minimum=0,
        maximum=500,
        description="On waking, re-plan if the current intensity is this much above the forecast.",
    ),
    "max_replans": Param(3, type="integer", minimum=0, maximum=10, description="Re-plans allowed per run."),
    "baseline_config": Param(
        "baseline.yaml", type="string", maxLength=200,
        description="Trainer config of the run-now baseline: a file in the deployment's config folder.",
    ),
    "optimized_config": Param(
        "optimized.yaml", type="string", maxLength=200,
        description="Trainer config of the carbon-aware run: a file in the deployment's config folder.",
    ),
    "training_overrides": Param(
        [],
        type="array",
        maxItems=MAX_OVERRIDES,
        items={"type": "string", "maxLength": MAX_OVERRIDE_CHARS, "pattern": OVERRIDE_PATTERN},
        description="KEY=VALUE overrides for both trainer configs, e.g. training.epochs=1. Allowed keys: "
        + ", ".join(OVERRIDE_KEYS) + ".",
    ),
    "baseline": Param(
        "cached",
        enum=["cached", "every_run", "off"],
        description="What the saving is measured against. cached: the baseline config's energy, measured "
        "once per (config with overrides, device model, dataset, trainer version) and reused; "
        "every_run: train the baseline at once in every run (it doubles the emissions); off: "
        "timing only, the optimized run's energy priced at run-now.",
    ),
    "baseline_max_age_days": Param(
        30.0,
        type="number",
        minimum=0,
        maximum=3650,
        description="A cached baseline older than this is measured again (0: now).",
    ),
    "interruptible": Param(
        False,
        type="boolean",
        description="The trainer checkpoints and resumes: run it in the cleanest slots before the deadline, "
        "pausing on dirty hours in between (the task defers, holding no worker slot).",
    ),
    "min_segment_minutes": Param(
        30.0,
        type="number",
        exclusiveMinimum=0,
        maximum=2880,
        description="Interruptible: the shortest slot worth starting the job for.",
    ),
    "resume_cost_minutes": Param(
        5.0,
        type="number",
        minimum=0,
        maximum=1440,
        description="Interruptible: what a pause costs (restart and reload), in run time.",
    ),
    "carbon_budget_g": Param(
        None,
        type=["number", "null"],
        exclusiveMinimum=0,
        description="Optional: grams of CO2 the optimized run may emit, priced as its energy comes in; it "
        "stops at its next checkpoint when finishing would exceed it (the task fails, no retry).",
    ),
    "time_compression": Param(
        1.0,
        type="number",
        minimum=1,
        maximum=86400,
        description="Demos only: 3600 makes each forecast hour of waiting pass in one second.",
    ),
}


def _regions() -> list:
    """The regions file's regions (validated here, at parse time: an invalid file is an import error that
    names the field), or [] without one: then one region, the training queue."""
    from carbon_aware.planning.regions import load_regions, regions_path

    path = regions_path()
    return load_regions(path) if path else []


REGIONS = _regions()


def _schedule() -> str | None:
    """Daily unless the deployment says otherwise: CARBON_TRAINING_SCHEDULE is a cron expression,
    a preset such as @weekly, or "none" (manual and API-triggered runs only)."""
    value = os.environ.get("CARBON_TRAINING_SCHEDULE", "@daily").strip()
    return None if value.lower() in ("", "none") else value


with DAG(
    dag_id="carbon_training",
    description="Train in the lowest-carbon window before the deadline and measure the saving",
    schedule=_schedule(),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    params=PARAMS,
    tags=["carbon-aware", "training"],
    doc_md=__doc__,
) as dag:

    plan = CarbonPlanOperator(task_id="plan_window", trainer_configs=True)

    @task(pool=GPU_POOL, queue=REGIONS[0].queue if REGIONS else TRAINING_QUEUE, retries=2)
    def train_baseline(plan: dict) -> dict | None:
        from pathlib import Path

        from carbon_aware.compat import AirflowSkipException

        from carbon_aware.accounting.baselines import train_or_reuse_baseline

        context = get_current_context()
        params = dict(context["params"])
        if params["baseline"] == "off":
            raise AirflowSkipException("baseline is off: the report shows the timing saving only")
        return train_or_reuse_baseline(params, context["dag_run"].run_id, Path(plan["run_dir"]))

    wait_for_window = CarbonWindowSensor(task_id="wait_for_window", plan_task_id="plan_window")
    baseline_summary = train_baseline(plan.output)
    plan >> wait_for_window

    if not REGIONS:
        train_optimized = CarbonTrainerOperator(
            task_id="train_optimized", run_name="optimized", pool=GPU_POOL, queue=TRAINING_QUEUE, retries=2
        )
        report = CarbonReportOperator(
            task_id="report", job_task_id="train_optimized", baseline_task_id="train_baseline"
        )
        wait_for_window >> train_optimized >> report
    else:  # one training task per region, on its queue; the route picks one once the window opens
        from carbon_aware.planning.regions import task_suffix

        choose_region = CarbonRegionSensor(task_id="choose_region", wait_task_id="wait_for_window")
        per_region = {
            region.name: CarbonTrainerOperator(
                task_id=f"train_optimized_{task_suffix(region.name)}", run_name="optimized", pool=GPU_POOL,
                queue=region.queue, retries=2,
            )
            for region in REGIONS
        }

        @task.branch
        def route(chosen: dict) -> str:
            return per_region[chosen["region"]].task_id

        report = CarbonReportOperator(
            task_id="report", job_task_id=[t.task_id for t in per_region.values()],
            baseline_task_id="train_baseline", route_task_id="choose_region",
        )
        routed = route(choose_region.output)
        wait_for_window >> choose_region
        for train_optimized in per_region.values():
            routed >> train_optimized >> report
    baseline_summary >> report
