"""carbon_own_job: your own training script, run in the cleanest hours before its deadline.

The four carbon-aware parts around a script that knows nothing of this project
(include/examples/own_training.py stands for yours: it checkpoints on SIGTERM and resumes). With
``interruptible`` the job runs in the cleanest slots, pausing (deferred, no worker slot held) on dirty
hours between them. The report prices the script's measured energy at the grid intensity of its own
time against starting it at once.
"""

from __future__ import annotations

import os
import sys

import pendulum
from airflow.sdk import DAG, Param

from carbon_aware import CarbonJobOperator, CarbonPlanOperator, CarbonReportOperator, CarbonWindowSensor

with DAG(
    dag_id="carbon_own_job",
    description="Any training command, planned, paused on dirty hours, measured and reported",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params={
        "providers": Param(
            [{"name": "mock"}],
            type="array",
            items={"type": "object"},
            description="Carbon-intensity sources, as in carbon_training (offline: mock or trace).",
        ),
        "job_duration_hours": Param(2.0, type="number", exclusiveMinimum=0, maximum=48,
                                    description="Expected run time of the job, hours."),
        "deadline_hours": Param(24.0, type="number", exclusiveMinimum=0, maximum=48,
                                description="Latest finish, hours after the run starts."),
        "interruptible": Param(
            True,
            type="boolean",
            description="Run in the cleanest slots, pausing between them (the script resumes "
            "from its checkpoint).",
        ),
        "min_segment_minutes": Param(60.0, type="number", exclusiveMinimum=0,
                                     description="Interruptible: the shortest slot worth starting for."),
        "resume_cost_minutes": Param(5.0, type="number", minimum=0,
                                     description="Interruptible: the run time a pause costs."),
        "carbon_budget_g": Param(None, type=["number", "null"], exclusiveMinimum=0,
                                 description="Optional: grams of CO2 the job may emit "
                                             "before it is stopped."),
        "baseline": Param(
            "off", enum=["off"], description="A user's job has no baseline config: timing only."
        ),
        "steps": Param(1500, type="integer", minimum=1, description="The example script's training steps."),
        "time_compression": Param(
            3600.0,
            type="number",
            minimum=1,
            maximum=86400,
            description="This example waits 3600x faster than the grid's clock, so that `airflow dags test "
            "carbon_own_job` finishes in a minute or two offline. Set 1 for real runs.",
        ),
    },
    tags=["carbon-aware", "training", "example"],
    doc_md=__doc__,
) as dag:
    plan = CarbonPlanOperator(task_id="plan", job_params=("steps",))
    wait = CarbonWindowSensor(task_id="wait", plan_task_id="plan")
    train = CarbonJobOperator(
        task_id="train",
        wait_task_id="wait",
        run_name="own_training",
        command=[sys.executable, "include/examples/own_training.py"],
        job_params=("steps",),  # read by the script from $CARBON_JOB_PARAMS: params never reach an argv
        pool="gpu",  # one slot per GPU (created by `make airflow`, `make demo` and docker-compose.yaml)
        queue=os.environ.get("CARBON_TRAINING_QUEUE", "training"),
        retries=2,
    )
    report = CarbonReportOperator(task_id="report", job_task_id="train", wait_task_id="wait")
    plan >> wait >> train >> report
