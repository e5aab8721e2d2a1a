"""The Celery stack as on separate machines: every component and every worker in a directory of its own
(its own AIRFLOW_HOME, output folder, CARBON_HOME, HOME and TMPDIR; as root, in a mount namespace
where every other process's directory is an empty read-only folder). What they share: PostgreSQL
(Airflow's database and the records' database ``carbon``), Redis, and an S3 server on 127.0.0.1 (moto,
through the real S3 client stack), configured as docker-compose.yaml configures a multi-machine
deployment. Two regions, one training worker each, and a second on the chosen region's queue."""
import json
from pathlib import Path

import psutil
import psycopg2
import requests
import pytest

from carbon_aware.outputs import run_dir_name
from tests.stack.services import CLI, DEFAULT_WORKER, kill_tree, trainer_processes, wait_until
from tests.stack_private.conftest import run_conf, second_worker
from tests.stack_regions.conftest import REGIONS

pytestmark = [pytest.mark.integration, pytest.mark.stack, pytest.mark.timeout(900)]

PROBE = "carbon_stack_probe"
PRIVATE_SETTINGS = ("AIRFLOW_HOME", "CARBON_OUTPUT_DIR", "CARBON_HOME", "CARBON_CONFIG_DIR", "HOME",
                    "TMPDIR")


def test_every_process_has_folders_of_its_own_and_the_shared_services(private_stack):
    stack = private_stack
    assert second_worker(stack.chosen_region) in stack.components
    seen: dict[str, dict[str, str]] = {}
    for name in stack.components:
        process = psutil.Process(stack.processes[name].pid)
        assert process.is_running(), name
        # As started (its /proc environ is overwritten when Airflow sets the process title).
        env = stack.environments[name]
        own = stack.private_dir(name)
        for key in PRIVATE_SETTINGS:
            assert env[key].startswith(f"{own}/") or env[key] == str(own), (name, key, env[key])
        # Nothing in its environment names another process's directory, or a folder of the shared mode.
        others = [stack.private_dir(other) for other in (*stack.components, CLI, "airflow-init")
                  if other != name]
        leaked = {key: value for key, value in env.items()
                  if any(f"{other}/" in value or value == str(other) for other in others)
                  or str(stack.output_dir) in value or str(stack.home) in value}
        assert not leaked, (name, leaked)
        # The records' database in the stack's PostgreSQL, files in the S3 server, through connections.
        assert env["AIRFLOW_CONN_CARBON_RECORDS"].startswith("postgres://") \
            and env["AIRFLOW_CONN_CARBON_RECORDS"].endswith(f":{stack.postgres.port}/carbon")
        assert env["CARBON_OBJECTS_URL"] == f"s3://{stack.s3.bucket}/objects"
        assert env["CARBON_OBJECTS_CONN_ID"] == "carbon_objects"
        assert env["AIRFLOW__LOGGING__REMOTE_BASE_LOG_FOLDER"] == f"s3://{stack.s3.bucket}/logs"
        if stack.isolated:  # the paths as the process itself sees them: its own folder, no other's
            sees = Path(f"/proc/{process.pid}/root")
            assert (sees / own.relative_to("/") / "airflow_home" / "config" / "airflow.cfg").is_file(), name
            for other in others:
                assert list((sees / other.relative_to("/")).iterdir()) == [], (name, other)
        seen[name] = env
    for key in PRIVATE_SETTINGS:
        assert len({env[key] for env in seen.values()}) == len(seen), key


def test_tasks_on_two_workers_hand_a_file_over_through_s3_and_share_the_records(private_stack):
    stack = private_stack
    stack.unpause(PROBE)
    run_id = stack.trigger({}, dag_id=PROBE)
    stack.wait_for_run(run_id, timeout=300, dag_id=PROBE)
    written, read = stack.xcom(run_id, "write", PROBE), stack.xcom(run_id, "read", PROBE)

    # Two processes, each in its own folders: the default worker's task and a training worker's.
    writers = [name for name in stack.components if str(stack.output_dir_of(name)) == written["output"]]
    readers = [name for name in stack.components if str(stack.output_dir_of(name)) == read["output"]]
    chosen_queue_workers = (REGIONS[stack.chosen_region][2], second_worker(stack.chosen_region))
    assert writers == [DEFAULT_WORKER] and readers[0] in chosen_queue_workers, (written, read)
    assert written["tmp"].startswith(str(stack.private_dir(DEFAULT_WORKER)))
    assert (stack.output_dir_of(DEFAULT_WORKER) / "scratch.txt").is_file()
    if stack.isolated:
        assert read["wrote_into_writers_folder"] is False
        assert not (stack.output_dir_of(DEFAULT_WORKER) / "intruder.txt").exists()

    # The file went through the S3 server: the reader had what the writer put there.
    assert read["read"] == f"written by pid {written['pid']}"
    key = f"objects/{PROBE}/{run_dir_name(run_id)}/probe.txt"
    assert key in stack.s3.keys("objects/"), stack.s3.keys("objects/")
    assert stack.s3.read(key) == read["read"].encode()
    assert written["url"].endswith(f"{stack.s3.bucket}/{key}")

    # Both opened the records' PostgreSQL database, which the init made and migrated.
    for seen in (written, read):
        assert seen["records"]["backend"] == "postgresql" and seen["records"]["database"] == "carbon"
        assert seen["records"]["version"] >= 1
    connection = psycopg2.connect(host="127.0.0.1", port=stack.postgres.port, user="airflow",
                                  password=stack.postgres.password, dbname="carbon")
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT max(version) FROM carbon_schema_version")
            assert cursor.fetchone()[0] == written["records"]["version"]
    finally:
        connection.close()

    # The task logs are in the object store, and the API server reads them from there.
    assert any(f"run_id={run_id}" in k for k in stack.s3.keys("logs/")), stack.s3.keys("logs/")[-5:]
    assert f"probe read {read['read']!r}" in stack.log(run_id, "read", 1, PROBE)


def _worker_running_the_trainer(stack, run_id: str, job: str) -> str | None:
    """The training worker whose own folder holds ``job``'s running trainer for the run."""
    for name in stack.region_workers:
        run_dir = stack.output_dir_of(name) / run_dir_name("carbon_training") / run_dir_name(run_id)
        if trainer_processes(stack.output_dir_of(name), run_dir, job):
            return name
    return None


def test_a_run_trains_on_the_chosen_regions_worker_and_is_priced_from_the_shared_records(private_stack):
    stack = private_stack
    run_id = stack.trigger(run_conf(baseline="every_run"))
    assert stack.wait_for_run(run_id, timeout=600)["state"] == "success", stack.diagnostics()

    report = stack.xcom(run_id, "report")
    chosen = report["route"]["region"]
    assert chosen == stack.chosen_region == report["place"]["chosen_region"]
    assert report["job"]["worker_region"] == chosen
    tis = stack.task_instances(run_id)
    other = next(name for name in REGIONS if name != chosen)
    assert tis[f"train_optimized_{chosen}"]["state"] == "success"
    assert tis[f"train_optimized_{other}"]["state"] == "skipped"
    # Place + timing + efficiency = the saving, priced by the report task on the default worker from
    # what the training workers left in the records (the report's energy is the readings' total).
    place, timing, efficiency = (report[k]["saving_kg"] for k in ("place", "timing", "efficiency"))
    assert place + timing + efficiency == pytest.approx(report["carbon_savings"]["reduction_kg"], rel=1e-9)
    for job in ("baseline", "optimized"):
        (last,) = stack.records("SELECT kwh FROM carbon_energy_readings WHERE run_id = :run AND job = :job "
                                "ORDER BY id DESC LIMIT 1", run=run_id, job=job)
        assert report["efficiency"][f"{job}_energy_kwh"] == pytest.approx(last[0], rel=1e-9), job
    # Nothing of the run is in a worker's folder that another process reads: the report is in the
    # records (and, with its plot, in the store), not in the default worker's folder.
    assert stack.stored_report(run_id) == report
    assert {"comparison.png", "comparison_report.json"} <= set(stack.object_keys(run_id))
    assert not (stack.output_dir_of(DEFAULT_WORKER) / "objects").exists()


def test_a_training_worker_killed_mid_epoch_retries_on_the_second_worker_from_the_stores_checkpoint(
        private_stack):
    stack = private_stack
    # Epochs of some seconds each, so that the kill lands inside epoch 2.
    overrides = ["training.epochs=3", "data.train_subset=24000"]
    run_id = stack.trigger(run_conf(baseline="off", training_overrides=overrides))
    job = f"train_optimized_{stack.chosen_region}"

    # Once epoch 1's checkpoint is in the object store the trainer is inside epoch 2: SIGKILL the worker
    # that runs it, with everything under it, as if its machine died.
    wait_until(lambda: "optimized/checkpoints/last.pt" in stack.object_keys(run_id), 400,
               "the first epoch's checkpoint in the object store", interval=0.5)
    first = wait_until(lambda: _worker_running_the_trainer(stack, run_id, "optimized"), 60,
                       "the trainer running on a training worker")
    killed = kill_tree(stack.processes[first].pid)
    assert len(killed) >= 3, killed
    (second,) = [name for name in stack.region_workers
                 if stack.region_workers[name][0] == stack.region_workers[first][0] and name != first]

    run = stack.wait_for_run(run_id, timeout=600)
    assert run["state"] == "success", stack.diagnostics()
    tries = stack.tries(run_id, job)
    assert [t["state"] for t in tries] == ["failed", "success"], tries
    retry_log = stack.log(run_id, job, 2)
    assert "checkpoints from s3://" in retry_log and "resumed from" in retry_log, retry_log[-3000:]
    # The retry ran on the second worker, in its own folder, from the checkpoint it fetched from the store.
    assert (stack.output_dir_of(second) / run_dir_name("carbon_training") / run_dir_name(run_id)
            / "optimized" / "checkpoints" / "last.pt").is_file()
    assert f"{job}" in (stack.root / f"{second}.log").read_text()

    # Both attempts' energy counts: the killed attempt's readings were in the records before it died.
    readings = [row._asdict() for row in stack.records(
        "SELECT attempt, kwh, attempt_kwh FROM carbon_energy_readings WHERE run_id = :run AND "
        "job = 'optimized' ORDER BY id", run=run_id)]
    assert sorted({r["attempt"] for r in readings}) == [1, 2], readings
    last = {a: [r for r in readings if r["attempt"] == a][-1] for a in (1, 2)}
    assert last[1]["attempt_kwh"] > 0 and last[2]["attempt_kwh"] > 0
    report = stack.xcom(run_id, "report")
    assert report["job"]["attempts"] == 2
    assert report["intensities"]["optimized"]["energy_kwh"] == pytest.approx(
        last[1]["attempt_kwh"] + last[2]["attempt_kwh"], rel=1e-6)

    # The Carbon page (the API server, in its own folder) lists the runs from the records.
    listed = requests.get(f"{stack.base_url}/carbon/api/runs", timeout=30,
                          headers={"Authorization": f"Bearer {stack.token()}"}).json()
    stored = {row[0] for row in stack.records("SELECT run_id FROM carbon_reports")}
    assert run_id in stored and {row["run_id"] for row in listed["runs"]} == stored
