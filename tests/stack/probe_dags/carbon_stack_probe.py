"""carbon_stack_probe: two tasks on two workers, the default queue's and the training queue's, that
hand a file over through the object store and open the records database, each returning where it ran.
Only the stack of tests/stack_private/test_no_shared_disk.py loads it (a DAG bundle of its own)."""
from __future__ import annotations

import os

import pendulum
from airflow.sdk import DAG, task

FILE = "probe.txt"


def where() -> dict:
    """This process: its id, its folders, and the records database and object store it reaches."""
    import tempfile

    from carbon_aware import objects
    from carbon_aware.records import engine_for
    from carbon_aware.records.migrations import current_version
    from carbon_aware.settings import output_root

    engine = engine_for()
    with engine.connect() as connection:
        version = current_version(connection)
    return {"pid": os.getpid(), "output": str(output_root()),
            "tmp": tempfile.gettempdir(), "objects": objects.base_url(),
            "records": {"backend": engine.url.get_backend_name(), "database": engine.url.database,
                        "version": version}}


with DAG(dag_id="carbon_stack_probe", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
         catchup=False, tags=["test"]) as dag:

    @task(queue="default")
    def write(dag_run=None) -> dict:
        from carbon_aware import objects
        from carbon_aware.settings import output_root

        output_root().mkdir(parents=True, exist_ok=True)
        (output_root() / "scratch.txt").write_text("this worker's own folder")
        target = objects.run_path(dag_run.dag_id, dag_run.run_id) / FILE
        return {**where(), "url": objects.put_bytes(f"written by pid {os.getpid()}".encode(), target)}

    @task(queue=os.environ.get("CARBON_TRAINING_QUEUE", "training"))
    def read(written: dict, dag_run=None) -> dict:
        from pathlib import Path

        from carbon_aware import objects

        data = objects.read_bytes(objects.run_path(dag_run.dag_id, dag_run.run_id) / FILE)
        print(f"probe read {data.decode() if data is not None else None!r}")  # into the task's log
        try:  # the writer's folder, on another machine: out of reach
            (Path(written["output"]) / "intruder.txt").write_text("from the reader")
            wrote_into_writers_folder = True
        except OSError:
            wrote_into_writers_folder = False
        return {**where(), "read": data.decode() if data is not None else None,
                "wrote_into_writers_folder": wrote_into_writers_folder}

    read(write())
