"""The Celery stack as on separate machines: every component and every worker in a directory of its own
(its own AIRFLOW_HOME, output folder, CARBON_HOME, HOME and TMPDIR; as root, in a mount namespace
where every other process's directory is an empty read-only folder). What they share: PostgreSQL
(Airflow's database and the records' database ``carbon``), Redis, and an S3 server on 127.0.0.1 (moto, through the real S3 client stack),
configured as docker-compose.yaml configures a multi-machine deployment."""
import json
from pathlib import Path

import psutil
import psycopg2
import pytest

from carbon_aware.outputs import run_dir_name
from tests.conftest import REPO_ROOT
from tests.stack.services import CLI, DEFAULT_WORKER, TRAINING_WORKER, running_stack

pytestmark = [pytest.mark.integration, pytest.mark.stack, pytest.mark.timeout(900)]

PROBE = "carbon_stack_probe"
LOCAL_BUNDLE = "airflow.dag_processing.bundles.local.LocalDagBundle"
BUNDLES = [{"name": "dags-folder", "classpath": LOCAL_BUNDLE, "kwargs": {"path": str(REPO_ROOT / "dags")}},
           {"name": "stack-probes", "classpath": LOCAL_BUNDLE,
            "kwargs": {"path": str(REPO_ROOT / "tests" / "stack" / "probe_dags")}}]
SECOND_TRAINING_WORKER = f"{TRAINING_WORKER}-2"
PRIVATE_SETTINGS = ("AIRFLOW_HOME", "CARBON_OUTPUT_DIR", "CARBON_HOME", "CARBON_CONFIG_DIR", "HOME",
                    "TMPDIR")


@pytest.fixture(scope="module")
def private_stack():
    """One stack for this module's tests, stopped when they are done (before the next module's stack
    starts): two training workers on the training queue, so that a killed one's task can retry on the
    other."""
    options = {"private": True, "training_workers": 2,
               "extra_env": {"AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps(BUNDLES)}}
    with running_stack("carbon-private-stack-", **options) as stack:
        yield stack


@pytest.fixture(autouse=True)
def clean_stack(private_stack):
    """This module's stack, not the package's shared one, made clean before each test."""
    cleared = private_stack.clear()
    if cleared:
        print("before this test:", "; ".join(cleared))
    yield private_stack


def test_every_process_has_folders_of_its_own_and_the_shared_services(private_stack):
    stack = private_stack
    assert SECOND_TRAINING_WORKER in stack.components
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
    assert writers == [DEFAULT_WORKER] and readers[0] in (TRAINING_WORKER, SECOND_TRAINING_WORKER), \
        (written, read)
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
