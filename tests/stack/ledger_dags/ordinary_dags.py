"""Two ordinary DAGs with no carbon parts in them: a few @task functions doing seconds of CPU work.
``ordinary_ledger`` is tagged for the carbon ledger, ``ordinary_untagged`` is not. Only the stack of
tests/stack loads them (a DAG bundle of its own). ``work_seconds`` in a run's conf sets each task's
length; ``spin`` runs until the test kills it."""
from __future__ import annotations

import time

import pendulum
from airflow.sdk import DAG, task

START = pendulum.datetime(2026, 1, 1, tz="UTC")


def busy(seconds: float) -> float:
    """CPU work for ``seconds``; returns the sum it computed."""
    total, end = 0.0, time.monotonic() + seconds
    while time.monotonic() < end:
        total += sum(i * i for i in range(10_000)) * 1e-12
    return total


def ordinary(dag_id: str, tags: list[str]) -> DAG:
    # No schedule: only the runs the tests trigger (unpausing a daily DAG would start one at once).
    with DAG(dag_id=dag_id, schedule=None, start_date=START, catchup=False, tags=tags,
             params={"work_seconds": 3.0}) as dag:

        @task
        def extract(params=None) -> float:
            return busy(float(params["work_seconds"]))

        @task
        def transform(value: float, params=None) -> float:
            return value + busy(float(params["work_seconds"]))

        @task
        def load(value: float, params=None) -> float:
            return value + busy(float(params["work_seconds"]))

        load(transform(extract()))
    return dag


ordinary("ordinary_ledger", ["carbon-ledger", "test"])
ordinary("ordinary_untagged", ["test"])

with DAG(dag_id="ordinary_spin", schedule=None, start_date=START, catchup=False,
         tags=["carbon-ledger", "test"]) as spin_dag:

    @task(retries=0)
    def spin() -> None:
        """Runs until it is killed (the test kills its process)."""
        busy(600)

    spin()
