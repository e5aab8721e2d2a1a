"""carbon_training: plan the lowest-carbon start before the deadline, wait for it without holding a
worker slot, train, and report the measured saving against running at once.

Thin wiring only: no torch, numpy or network at import time; the work lives in plugins/carbon_aware
and training/, imported inside the tasks.
"""
from __future__ import annotations

import os

import pendulum
from airflow.sdk import DAG, Param, TriggerRule, get_current_context, task

from carbon_aware.sensors import CarbonWindowSensor

GPU_POOL = "gpu"
# CeleryExecutor: the training tasks go to this queue, which the GPU workers consume (docker-compose.yaml).
# Executors without queues (LocalExecutor, `dags test`) ignore it.
TRAINING_QUEUE = os.environ.get("CARBON_TRAINING_QUEUE", "training")

PARAMS = {
    "providers": Param(
        [{"name": "uk"}], type="array", items={"type": "object"},
        description="Carbon-intensity sources, tried in order, then the mock curve. Each is an object with 'name' "
                    "(uk, electricitymaps, watttime, carbon_aware_sdk, trace, mock) and its options, e.g. "
                    "{\"name\": \"uk\", \"region_id\": 13}, {\"name\": \"electricitymaps\", \"zone\": \"DE\", \"history\": true}, "
                    "{\"name\": \"trace\", \"path\": \"../shared/data/carbon/...csv\", \"replay_start\": \"2023-03-01T00:00:00Z\"}. "
                    "Tokens come from Airflow connections or environment variables, never from here."),
    "job_duration_hours": Param(1.0, type=["number", "null"], exclusiveMinimum=0, maximum=48,
                                description="Expected training time in hours; empty = the last run's measured duration."),
    "deadline_hours": Param(24.0, type="number", exclusiveMinimum=0, maximum=48,
                            description="Latest finish, in hours after the run starts."),
    "planning_mode": Param("window", enum=["window", "threshold"],
                           description="window: lowest mean intensity before the deadline. threshold: the original "
                                       "rule (first slot below the threshold, else the best window)."),
    "carbon_threshold": Param(300.0, type="number", exclusiveMinimum=0, maximum=2000, description="gCO2/kWh, threshold mode only."),
    "replan_tolerance_pct": Param(20.0, type="number", minimum=0, maximum=500,
                                  description="On waking, re-plan if the current intensity is this much above the forecast."),
    "max_replans": Param(3, type="integer", minimum=0, maximum=10, description="Re-plans allowed per run."),
    "baseline_config": Param("include/configs/baseline.yaml", type="string", description="Trainer config of the run-now baseline."),
    "optimized_config": Param("include/configs/optimized.yaml", type="string", description="Trainer config of the carbon-aware run."),
    "training_overrides": Param([], type="array", items={"type": "string"},
                                description="KEY=VALUE overrides for both trainer configs, e.g. training.epochs=1."),
    "baseline": Param(
        "cached", enum=["cached", "every_run", "off"],
        description="What the saving is measured against. cached: the baseline config's energy, measured "
                    "once per (config with overrides, device model, dataset, trainer version) and reused; "
                    "every_run: train the baseline at once in every run (it doubles the emissions); off: "
                    "timing only, the optimized run's energy priced at run-now."),
    "baseline_max_age_days": Param(
        30.0, type="number", minimum=0, maximum=3650,
        description="A cached baseline older than this is measured again (0: now)."),
    "time_compression": Param(1.0, type="number", minimum=1, maximum=86400,
                              description="Demos only: 3600 makes each forecast hour of waiting pass in one second."),
}


def _schedule() -> str | None:
    """Daily unless the deployment says otherwise: CARBON_TRAINING_SCHEDULE is a cron expression,
    a preset such as @weekly, or "none" (manual and API-triggered runs only)."""
    value = os.environ.get("CARBON_TRAINING_SCHEDULE", "@daily").strip()
    return None if value.lower() in ("", "none") else value


def _params() -> dict:
    return dict(get_current_context()["params"])


def _run_id() -> str:
    return get_current_context()["dag_run"].run_id


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

    @task
    def plan_window() -> dict:
        from carbon_aware.tasks import make_plan

        plan = make_plan(_params(), _run_id())
        print(plan["summary"])
        return plan

    @task(pool=GPU_POOL, queue=TRAINING_QUEUE, retries=2)
    def train_baseline(plan: dict) -> dict | None:
        from pathlib import Path

        from airflow.sdk.exceptions import AirflowSkipException

        from carbon_aware.tasks import train_or_reuse_baseline

        params = _params()
        if params["baseline"] == "off":
            raise AirflowSkipException("baseline is off: the report shows the timing saving only")
        return train_or_reuse_baseline(params, _run_id(), Path(plan["run_dir"]))

    wait_for_window = CarbonWindowSensor(task_id="wait_for_window", plan_task_id="plan_window")

    @task(pool=GPU_POOL, queue=TRAINING_QUEUE, retries=2)
    def train_optimized(wait: dict) -> dict:
        from pathlib import Path

        from carbon_aware.tasks import run_trainer

        params = _params()
        return run_trainer(params["optimized_config"], params["training_overrides"], Path(wait["plan"]["run_dir"]), "optimized")

    @task(trigger_rule=TriggerRule.NONE_FAILED)
    def report(wait: dict, optimized: dict) -> dict:
        from carbon_aware.tasks import write_report

        baseline = get_current_context()["ti"].xcom_pull(task_ids="train_baseline")  # None when skipped
        result, table = write_report(_run_id(), wait["plan"], wait, baseline, optimized)
        print(table)
        print(f"report: {result['files']['json']}\nplot:   {result['files']['plot']}")
        return result

    planned = plan_window()
    baseline_summary = train_baseline(planned)
    planned >> wait_for_window
    optimized_summary = train_optimized(wait_for_window.output)
    baseline_summary >> report(wait_for_window.output, optimized_summary)
