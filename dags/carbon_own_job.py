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
from pathlib import Path

import pendulum
from airflow.sdk import DAG, Param

from carbon_aware import CarbonJobOperator, CarbonPlanOperator, CarbonReportOperator, CarbonWindowSensor
from carbon_aware.operators.params import dag_params

# Your script, found from this file (the job runs in its own folder under the run's directory).
OWN_SCRIPT = Path(__file__).resolve().parents[1] / "include" / "examples" / "own_training.py"

with DAG(
    dag_id="carbon_own_job",
    description="Any training command, planned, paused on dirty hours, measured and reported",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params=dag_params(
        ("providers", "job_duration_hours", "deadline_hours", "interruptible", "min_segment_minutes",
         "resume_cost_minutes", "carbon_budget_g", "baseline", "time_compression"),
        providers={"default": [{"name": "mock"}],
                   "description": "Carbon-intensity sources, as in carbon_training (offline: mock or "
                                  "trace)."},
        job_duration_hours={"default": 2.0, "type": "number",
                            "description": "Expected run time of the job, hours."},
        interruptible={"default": True,
                       "description": "Run in the cleanest slots, pausing between them (the script resumes "
                                      "from its checkpoint)."},
        min_segment_minutes={"default": 60.0},
        resume_cost_minutes={"description": "Interruptible: the run time a pause costs."},
        carbon_budget_g={"description": "Optional: grams of CO2 the job may emit before it is stopped."},
        baseline={"default": "off", "enum": ["off"],
                  "description": "A user's job has no baseline config: timing only."},
        time_compression={
            "default": 3600.0,
            "description": "This example waits 3600x faster than the grid's clock, so that `airflow dags "
            "test carbon_own_job` finishes in a minute or two offline. Set 1 for real runs.",
        },
        job_params={"steps": Param(1500, type="integer", minimum=1,
                                   description="The example script's training steps.")},
    ),
    tags=["carbon-aware", "training", "example"],
    doc_md=__doc__,
) as dag:
    plan = CarbonPlanOperator(task_id="plan", job_params=("steps",))
    wait = CarbonWindowSensor(task_id="wait", plan_task_id="plan")
    train = CarbonJobOperator(
        task_id="train",
        wait_task_id="wait",
        run_name="own_training",
        command=[sys.executable, str(OWN_SCRIPT)],
        job_params=("steps",),  # read by the script from $CARBON_JOB_PARAMS: params never reach an argv
        pool="gpu",  # one slot per GPU (created by `make airflow`, `make demo` and docker-compose.yaml)
        queue=os.environ.get("CARBON_TRAINING_QUEUE", "training"),
        retries=2,
    )
    report = CarbonReportOperator(task_id="report", job_task_id="train", wait_task_id="wait")
    plan >> wait >> train >> report
