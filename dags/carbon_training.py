"""carbon_training: plan the lowest-carbon start before the deadline, wait for it without holding a
worker slot, train, and report the measured saving against running at once.

Thin wiring only: no torch, numpy or network at import time; the work lives in plugins/carbon_aware
and training/, imported inside the tasks.
"""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import DAG, get_current_context, task

from carbon_aware import CarbonPlanOperator, CarbonReportOperator, CarbonTrainerOperator, CarbonWindowSensor
from carbon_aware.operators.params import dag_params
from carbon_aware.planning.params import field_schema
from carbon_aware.sensors.window import CarbonRegionSensor
from training.config import MAX_OVERRIDE_CHARS, MAX_OVERRIDES, overridable_keys

GPU_POOL = "gpu"
# CeleryExecutor: the training tasks go to this queue, which the GPU workers consume (docker-compose.yaml).
# Executors without queues (LocalExecutor, `dags test`) ignore it.
TRAINING_QUEUE = os.environ.get("CARBON_TRAINING_QUEUE", "training")


def _training_overrides() -> dict:
    """The demo trainer's own limits on its overrides, for the form: how many, how long, which keys."""
    keys = overridable_keys()
    pattern = "^(" + "|".join(key.replace(".", "\\.") for key in keys) + ")=.+$"
    return {"maxItems": MAX_OVERRIDES,
            "items": {"type": "string", "maxLength": MAX_OVERRIDE_CHARS, "pattern": pattern},
            "description": f"{field_schema('training_overrides')['description']} "
                           f"Allowed keys: {', '.join(keys)}."}


PARAMS = dag_params(training_overrides=_training_overrides())  # the form, from RunParams


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
        from carbon_aware.accounting.baselines import baseline_for_run
        from carbon_aware.compat import AirflowSkipException

        context = get_current_context()
        params = dict(context["params"])
        if params["baseline"] == "off":
            raise AirflowSkipException("baseline is off: the report shows the timing saving only")
        return baseline_for_run(params, context["dag"].dag_id, context["dag_run"].run_id)

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
