"""Dockerfile and docker-compose.yaml, checked statically (no Docker engine here): the compose file is
interpolated as compose does, then validated by the compose specification's own parser."""
import json
import re
import subprocess

import pytest
import yaml
from compose_spec import PyCompose

from tests.compose_file import (COMPOSE_FILE, DuplicateKeyError, InterpolationError, interpolate,
                                load_compose, service_command, service_environment)
from tests.conftest import REPO_ROOT

LONG_RUNNING = ["postgres", "redis", "minio", "airflow-apiserver", "airflow-scheduler",
                "airflow-dag-processor", "airflow-triggerer", "airflow-worker", "airflow-worker-cpu",
                "airflow-worker-default"]


@pytest.fixture(scope="module")
def compose():
    return PyCompose.from_json(json.dumps(load_compose())).to_dict()  # raises ValueError, naming the field


def test_the_file_loads_with_a_loader_that_rejects_duplicate_keys():
    text = COMPOSE_FILE.read_text()
    load_compose(text=text)  # no duplicate key, no undefined alias
    # The loader does reject what Compose's would: a service defined twice, an alias never anchored.
    twice = text.replace("\nvolumes:\n", "\n  redis:\n    image: redis:7\nvolumes:\n", 1)
    with pytest.raises(DuplicateKeyError, match=r"duplicate key 'redis' \(first at line \d+\)"):
        load_compose(text=twice)
    with pytest.raises(yaml.composer.ComposerError, match="undefined alias"):
        load_compose(text=text.replace("<<: *airflow-common\n", "<<: *airflow-commons\n", 1))
    # A merge key may be overridden by the mapping that merges it: not a duplicate.
    assert load_compose(text="a: &a {x: 1}\nb:\n  <<: *a\n  x: 2\n")["b"] == {"x": 2}


def test_interpolation_follows_compose():
    env = {"SET": "v", "EMPTY": ""}
    cases = {"$$SET": "$SET", "${SET}": "v", "$SET/x": "v/x", "${UNSET}": "", "${UNSET:-d}": "d",
             "${EMPTY:-d}": "d", "${EMPTY-d}": "", "${UNSET-d}": "d", "${SET:+alt}": "alt",
             "${EMPTY:+alt}": "", "${EMPTY+alt}": "alt"}
    for text, expected in cases.items():
        assert interpolate(text, env) == expected, text
    with pytest.raises(InterpolationError, match="UNSET.*needs it"):
        interpolate("${UNSET:?needs it}", env)


def test_the_validator_rejects_what_compose_would():
    raw = load_compose()
    (raw["services"]["airflow-worker"]["deploy"]["resources"]["reservations"]["devices"][0]
        ["capabilities"]) = "gpu"
    with pytest.raises(ValueError, match='string "gpu", expected a set'):
        PyCompose.from_json(json.dumps(raw))


def test_services_of_the_deployed_stack(compose):
    services = compose["services"]
    assert set(LONG_RUNNING) | {"airflow-init"} == set(services)
    assert services["airflow-triggerer"]["command"] in ("triggerer", ["triggerer"])
    for name in LONG_RUNNING:
        assert "healthcheck" in services[name], f"{name} has no health check"
    assert "ports" not in services["postgres"], "PostgreSQL must not be published on the host"
    env = services["airflow-scheduler"]["environment"]
    assert (env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
            and "postgresql" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    assert (env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://")
            and "postgresql" in env["AIRFLOW__CELERY__RESULT_BACKEND"])


def test_training_and_default_queues_each_have_a_worker(compose):
    services = compose["services"]
    queue = services["airflow-scheduler"]["environment"]["CARBON_TRAINING_QUEUE"]
    queues = {name: service_command(services[name]) for name in ("airflow-worker", "airflow-worker-cpu",
                                                                  "airflow-worker-default")}
    for name, argv in queues.items():
        assert argv[:2] == ["celery", "worker"], (name, argv)
    assert queues["airflow-worker"] == queues["airflow-worker-cpu"]  # the CPU variant is the same worker
    assert queues["airflow-worker"][queues["airflow-worker"].index("--queues") + 1] == queue
    assert (queues["airflow-worker-default"][queues["airflow-worker-default"].index("--queues") + 1]
            == "default")


def test_worker_reserves_one_nvidia_gpu_and_the_cpu_variant_does_not(compose):
    devices = compose["services"]["airflow-worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    cpu = compose["services"]["airflow-worker-cpu"]
    assert cpu["profiles"] == ["cpu"] and not cpu.get("deploy")
    assert not compose["services"]["airflow-worker-default"].get("deploy")


def test_every_mounted_path_exists(compose):
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0] if isinstance(volume, str) else volume["source"]
            if source.startswith((".", "/")):
                assert (REPO_ROOT / source).exists(), f"{name} mounts {source}, which does not exist"


def test_secrets_come_from_the_environment_not_the_file():
    text = (REPO_ROOT / "docker-compose.yaml").read_text()
    for key in ("ELECTRICITYMAPS_API_TOKEN", "WATTTIME_PASSWORD", "POSTGRES_PASSWORD", "REDIS_PASSWORD",
                "CARBON_S3_SECRET_KEY"):
        assert f"${{{key}" in text, f"{key} should come from .env / the environment"
    assert (REPO_ROOT / ".env.example").is_file()
    ignored = subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=REPO_ROOT)
    assert ignored.returncode == 0, ".env must be ignored by git"


def test_dockerfile_matches_the_pinned_airflow_and_installs_the_lock():
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    lock = (REPO_ROOT / "requirements.lock").read_text()
    pinned = re.search(r"^apache-airflow==([\d.]+)$", lock, re.M).group(1)
    base = re.search(r"^FROM apache/airflow:([\d.]+)-python(3\.\d+)$", dockerfile, re.M)
    assert base and base.group(1) == pinned and base.group(2) == "3.11"
    assert re.search(r"pip install [^\n]*-r /opt/carbon/requirements.lock", dockerfile)
    assert "COPY --chown=airflow:root requirements.lock requirements-tracking.lock" in dockerfile
    assert re.search(r"pip install [^\n]*-r /opt/carbon/requirements-tracking.lock", dockerfile)
    assert (re.search(r"^USER airflow$", dockerfile, re.M)
            and dockerfile.rstrip().splitlines()[-1].startswith("RUN pip install"))


def test_the_init_creates_each_providers_connection_with_the_providers_own_type(compose):
    """A provider reads only a connection of its own type (never a generic http one)."""
    from carbon_aware.grid.clients.electricitymaps import ElectricityMapsProvider
    from carbon_aware.grid.clients.watttime import WattTimeProvider

    script = " ".join(compose["services"]["airflow-init"]["command"])
    for provider in (ElectricityMapsProvider, WattTimeProvider):
        assert f"connections add {provider.default_conn_id} --conn-type {provider.conn_type} " in script
    assert "--conn-type http" not in script
    # The credentials from .env reach the init only: the hooks read the connections, not the environment.
    credentials = {"ELECTRICITYMAPS_API_TOKEN", "WATTTIME_USERNAME", "WATTTIME_PASSWORD"}
    for name, service in compose["services"].items():
        held = credentials & set(service_environment(service))
        assert held == (credentials if name == "airflow-init" else set()), (name, held)


def _airflow_services(compose) -> dict:
    return {name: service for name, service in compose["services"].items() if name.startswith("airflow-")}


def _mount_targets(service) -> list[str]:
    return [volume.split(":")[1] if isinstance(volume, str) else volume["target"]
            for volume in service.get("volumes", [])]


def test_no_service_mounts_a_folder_for_output(compose):
    """Each service's output folder is its own scratch space: what others need goes to the records
    database and the object store, so no volume is shared between workers for it."""
    for name, service in _airflow_services(compose).items():
        output = service_environment(service)["CARBON_OUTPUT_DIR"]
        for target in _mount_targets(service):
            assert not (output == target or output.startswith(target.rstrip("/") + "/")
                        or target.startswith(output.rstrip("/") + "/")), (name, target, output)


def test_every_airflow_service_has_the_records_database_and_the_object_store(compose):
    for name, service in _airflow_services(compose).items():
        env = service_environment(service)
        records = env["AIRFLOW_CONN_CARBON_RECORDS"]
        assert re.fullmatch(r"postgres://airflow:[^@]+@postgres/carbon", records), (name, records)
        assert env["CARBON_OBJECTS_URL"].startswith("s3://"), name
        assert env["CARBON_OBJECTS_CONN_ID"] == "carbon_objects", name
        # The store is up before any of them starts
        assert compose["services"][name]["depends_on"]["minio"]["condition"] == "service_healthy", name
    assert load_compose({"CARBON_OBJECTS_URL": "s3://mine/carbon"})["services"]["airflow-worker"][
        "environment"]["CARBON_OBJECTS_URL"] == "s3://mine/carbon"


def test_the_object_stores_connection_reaches_every_airflow_service_and_the_keys_no_other():
    """The aws connection carbon_objects, in the environment (JSON, so that keys need no URL escaping):
    tasks, the API server and airflow-init's script all find it there."""
    dotenv = {"CARBON_S3_ACCESS_KEY": "access-sentinel", "CARBON_S3_SECRET_KEY": "secret/sentinel+",
              "CARBON_S3_ENDPOINT": "https://s3.eu-west-1.amazonaws.com", "CARBON_S3_REGION": "eu-west-1"}
    services = load_compose(dotenv)["services"]
    for name, service in _airflow_services({"services": services}).items():
        connection = json.loads(service_environment(service)["AIRFLOW_CONN_CARBON_OBJECTS"])
        assert connection == {"conn_type": "aws", "login": "access-sentinel", "password": "secret/sentinel+",
                              "extra": {"endpoint_url": "https://s3.eu-west-1.amazonaws.com",
                                        "region_name": "eu-west-1"}}, name
    holders = {name for name, service in services.items()
               if any("secret/sentinel+" in value for value in service_environment(service).values())}
    assert holders == set(_airflow_services({"services": services})) | {"minio"}, holders
    # By default, the bundled MinIO with the keys it was started with.
    default = load_compose()["services"]
    connection = json.loads(service_environment(default["airflow-worker"])["AIRFLOW_CONN_CARBON_OBJECTS"])
    minio = default["minio"]["environment"]
    assert (connection["login"], connection["password"]) == (minio["MINIO_ROOT_USER"],
                                                             minio["MINIO_ROOT_PASSWORD"])
    assert connection["extra"]["endpoint_url"] == "http://minio:9000"


def test_the_init_makes_the_records_database_and_the_bucket(compose):
    script = compose["services"]["airflow-init"]["command"][1]
    assert "CREATE DATABASE" in script and "engine_for(records_url())" in script
    assert "objects.base_path().mkdir(parents=True, exist_ok=True)" in script
