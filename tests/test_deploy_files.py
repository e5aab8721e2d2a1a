"""Dockerfile and docker-compose.yaml, checked statically (no Docker engine here): the compose file is
interpolated as compose does, then validated by the compose specification's own parser."""
import json
import re
import subprocess

import pytest
import yaml
from compose_spec import PyCompose

from tests.conftest import REPO_ROOT

LONG_RUNNING = ["postgres", "redis", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
                "airflow-triggerer", "airflow-worker", "airflow-worker-cpu"]


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's variable syntax: $$, ${VAR}, ${VAR:-default}, ${VAR-default}."""
    def replace(match):
        if match.group(0) == "$$":
            return "$"
        value = env.get(match.group("name"))
        if match.group("op") == ":-":
            return value or match.group("default")
        if match.group("op") == "-":
            return match.group("default") if value is None else value
        return value or ""
    return re.sub(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?-)(?P<default>[^}]*))?\}", replace, text)


@pytest.fixture(scope="module")
def compose():
    raw = yaml.safe_load(interpolate((REPO_ROOT / "docker-compose.yaml").read_text(), {}))
    return PyCompose.from_json(json.dumps(raw)).to_dict()  # raises ValueError, naming the field, if invalid


def test_the_validator_rejects_what_compose_would():
    raw = yaml.safe_load(interpolate((REPO_ROOT / "docker-compose.yaml").read_text(), {}))
    raw["services"]["airflow-worker"]["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] = "gpu"
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
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor" and "postgresql" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]


def test_worker_reserves_one_nvidia_gpu_and_the_cpu_variant_does_not(compose):
    devices = compose["services"]["airflow-worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    cpu = compose["services"]["airflow-worker-cpu"]
    assert cpu["profiles"] == ["cpu"] and "deploy" not in cpu


def test_every_mounted_path_exists(compose):
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0] if isinstance(volume, str) else volume["source"]
            if source.startswith((".", "/")):
                assert (REPO_ROOT / source).exists(), f"{name} mounts {source}, which does not exist"


def test_secrets_come_from_the_environment_not_the_file():
    text = (REPO_ROOT / "docker-compose.yaml").read_text()
    for key in ("ELECTRICITYMAPS_API_TOKEN", "WATTTIME_PASSWORD", "POSTGRES_PASSWORD"):
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
    assert "COPY --chown=airflow:root requirements.lock" in dockerfile
    assert re.search(r"^USER airflow$", dockerfile, re.M) and dockerfile.rstrip().splitlines()[-1].startswith("RUN pip install")
