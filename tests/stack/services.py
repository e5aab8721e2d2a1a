"""The deployed stack without Docker: PostgreSQL from the Debian packages on 127.0.0.1 and Airflow's
scheduler, DAG processor, triggerer and API server from the venv (LocalExecutor), each started here,
tracked by pid and stopped by pid."""
from __future__ import annotations

import glob
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests

REPO_ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
COMPONENTS = ("scheduler", "dag-processor", "triggerer", "api-server")
ADMIN = "admin"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(condition, timeout: float, what: str, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def stop_process(process: subprocess.Popen, grace: float = 30) -> None:
    """SIGTERM the process group (Airflow components fork workers), SIGKILL after the grace period."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


class Postgres:
    """A throwaway cluster: initdb into ``data_dir``, listen on 127.0.0.1 only, password auth."""

    def __init__(self, data_dir: Path):
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
        if not found:
            raise RuntimeError("PostgreSQL server binaries not found under /usr/lib/postgresql: "
                               "run `make system-deps` (apt-get install postgresql)")
        self.bin = Path(found[-1]).parent
        self.data_dir = data_dir
        self.port = free_port()
        self.password = secrets.token_hex(12)
        self.process: subprocess.Popen | None = None
        # PostgreSQL refuses to run as root: as root, run it as the packages' `postgres` user.
        self._as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://airflow:{self.password}@127.0.0.1:{self.port}/airflow"

    def start(self) -> None:
        self.data_dir.mkdir(parents=True)
        password_file = self.data_dir.parent / "pg-password"
        password_file.write_text(self.password)
        if self._as_owner:
            shutil.chown(self.data_dir, "postgres", "postgres")
            shutil.chown(password_file, "postgres", "postgres")
            self.data_dir.parent.chmod(0o755)
        subprocess.run([*self._as_owner, str(self.bin / "initdb"), "-D", str(self.data_dir), "-U", "airflow",
                        "--auth=scram-sha-256", f"--pwfile={password_file}", "-E", "UTF8"],
                       check=True, capture_output=True, timeout=120)
        password_file.unlink()
        log = open(self.data_dir.parent / "postgres.log", "w")
        self.process = subprocess.Popen(
            [*self._as_owner, str(self.bin / "postgres"), "-D", str(self.data_dir), "-h", "127.0.0.1",
             "-p", str(self.port), "-k", str(self.data_dir)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_until(lambda: subprocess.run([str(self.bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                                          capture_output=True).returncode == 0, 60, "PostgreSQL to accept connections")
        subprocess.run([str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "airflow", "airflow"],
                       check=True, capture_output=True, timeout=60, env={**os.environ, "PGPASSWORD": self.password})

    def stop(self) -> None:
        if self.process:
            stop_process(self.process)


class AirflowStack:
    """PostgreSQL + the four Airflow components, with this checkout's DAGs and plugins."""

    def __init__(self, root: Path):
        self.root = root
        self.postgres = Postgres(root / "pgdata")
        self.port = free_port()
        self.password = secrets.token_hex(8)
        self.processes: dict[str, subprocess.Popen] = {}
        self.output_dir = root / "output"
        self.home = root / "airflow_home"
        self._token: str | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith("AIRFLOW")}
        env.update({
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__DEFAULT_TASK_RETRY_DELAY": "2",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base_url}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.home / "passwords.json"),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.postgres.url,
            "AIRFLOW__API__BASE_URL": self.base_url,
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
            "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
            "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "10",
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            "CARBON_OUTPUT_DIR": str(self.output_dir),
            "CARBON_TRAINING_SCHEDULE": "none",  # only the runs the tests trigger
            "PYTHONUNBUFFERED": "1",
        })
        env["PATH"] = f"{VENV_BIN}:{env.get('PATH', '')}"
        return env

    def airflow(self, *args: str, timeout: float = 300) -> str:
        done = subprocess.run([str(VENV_BIN / "airflow"), *args], env=self._env, capture_output=True, text=True,
                              timeout=timeout, cwd=REPO_ROOT)
        if done.returncode != 0:
            raise RuntimeError(f"airflow {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        return done.stdout

    def start(self) -> "AirflowStack":
        self.home.mkdir(parents=True)
        self.output_dir.mkdir()
        (self.home / "passwords.json").write_text(json.dumps({ADMIN: self.password}))
        self.postgres.start()
        self._env = self.env()
        self.airflow("db", "migrate", timeout=600)
        self.airflow("pools", "set", "gpu", "1", "one slot per GPU")
        for component in COMPONENTS:
            self.start_component(component)
        wait_until(self._healthy, 240, "the API server to report every component healthy", interval=2)
        wait_until(lambda: self.get("/api/v2/dags/carbon_training", ok_only=False).status_code == 200, 240,
                   "the DAG processor to register carbon_training", interval=2)
        self.patch("/api/v2/dags/carbon_training", {"is_paused": False})
        return self

    def start_component(self, component: str) -> subprocess.Popen:
        log = open(self.root / f"{component}.log", "a")
        process = subprocess.Popen([str(VENV_BIN / "airflow"), component], env=self._env, cwd=REPO_ROOT,
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.processes[component] = process
        return process

    def restart_component(self, component: str) -> None:
        stop_process(self.processes[component])
        self.start_component(component)

    def stop(self) -> None:
        for component in reversed(COMPONENTS):
            if component in self.processes:
                stop_process(self.processes[component])
        self.postgres.stop()

    def _healthy(self) -> bool:
        try:
            health = requests.get(f"{self.base_url}/api/v2/monitor/health", timeout=5).json()
        except (requests.RequestException, ValueError):
            return False
        return all(health.get(part, {}).get("status") == "healthy"
                   for part in ("metadatabase", "scheduler", "triggerer", "dag_processor"))

    # --- the REST API, authenticated like any client -------------------------------------------------
    def token(self) -> str:
        if self._token is None:
            response = requests.post(f"{self.base_url}/auth/token", json={"username": ADMIN, "password": self.password},
                                     timeout=30)
            response.raise_for_status()
            self._token = response.json()["access_token"]
        return self._token

    def _request(self, method: str, path: str, ok_only: bool = True, **kwargs) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.token()}", "Accept": "application/json"}
        response = requests.request(method, f"{self.base_url}{path}", headers=headers, timeout=30, **kwargs)
        if ok_only and not response.ok:
            raise RuntimeError(f"{method} {path}: {response.status_code} {response.text[:1000]}")
        return response

    def get(self, path: str, ok_only: bool = True, **params) -> Any:
        response = self._request("GET", path, ok_only=ok_only, params=params)
        return response.json() if ok_only else response

    def patch(self, path: str, body: dict) -> Any:
        return self._request("PATCH", path, json=body).json()

    def trigger(self, conf: dict[str, Any]) -> str:
        run = self._request("POST", "/api/v2/dags/carbon_training/dagRuns", json={"logical_date": None, "conf": conf}).json()
        return run["dag_run_id"]

    def run(self, run_id: str) -> dict:
        return self.get(f"/api/v2/dags/carbon_training/dagRuns/{run_id}")

    def task_instances(self, run_id: str) -> dict[str, dict]:
        rows = self.get(f"/api/v2/dags/carbon_training/dagRuns/{run_id}/taskInstances")["task_instances"]
        return {row["task_id"]: row for row in rows}

    def tries(self, run_id: str, task_id: str) -> list[dict]:
        return self.get(f"/api/v2/dags/carbon_training/dagRuns/{run_id}/taskInstances/{task_id}/tries")["task_instances"]

    def xcom(self, run_id: str, task_id: str) -> Any:
        return self.get(f"/api/v2/dags/carbon_training/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value",
                        deserialize="true")["value"]

    def log(self, run_id: str, task_id: str, try_number: int) -> str:
        body = self.get(f"/api/v2/dags/carbon_training/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}",
                        full_content="true")
        lines = []
        for part in body["content"]:
            if not isinstance(part, dict):
                lines.append(str(part))
                continue
            lines.append(str(part.get("event", "")))
            if part.get("error_detail"):  # a task's exception travels beside the event, not in it
                lines.append(json.dumps(part["error_detail"]))
        return "\n".join(lines)

    def wait_for_run(self, run_id: str, timeout: float = 600, on_poll=None) -> dict:
        def finished():
            if on_poll:
                on_poll()
            run = self.run(run_id)
            return run if run["state"] in ("success", "failed") else None
        run = wait_until(finished, timeout, f"run {run_id} to finish", interval=1)
        if run["state"] != "success":
            tis = self.task_instances(run_id)
            failed = "\n".join(f"--- {task} log ---\n{self.log(run_id, task, ti['try_number'])[-4000:]}"
                               for task, ti in tis.items() if ti["state"] == "failed")
            states = {task: ti["state"] for task, ti in tis.items()}
            raise AssertionError(f"run {run_id} ended {run['state']}: {states}\n{failed}\n{self.diagnostics()}")
        return run

    def diagnostics(self) -> str:
        parts = []
        for path in sorted(self.root.glob("*.log")):
            parts.append(f"--- {path.name} (tail) ---\n" + "\n".join(path.read_text(errors="replace").splitlines()[-40:]))
        return "\n".join(parts)
