"""The deployed stack without Docker: the services of docker-compose.yaml run as processes on this
machine. PostgreSQL (metadata DB, Celery result backend, the provider's records) and Redis (the Celery
broker) come from the Debian packages, listening on 127.0.0.1 with passwords; compose's MinIO is moto's
S3 server (tests/s3_server.py); airflow-init's script, then the API server, scheduler, DAG processor,
triggerer and the Celery workers (training queue, default queue) run from the venv with the environment
and command their compose service declares. Only host names, container paths and ports are mapped to
this machine; every process is tracked and stopped by pid.

By default the services share this machine's folders (AIRFLOW_HOME, the output folder), as one host's
containers sharing volumes. ``private=True`` gives every process a directory of its own instead, as
separate machines have: see ``AirflowStack``."""
from __future__ import annotations

import glob
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlsplit

import psutil
import requests

from tests.compose_file import load_compose, service_command, service_environment
from tests.conftest import SHARED_DATA

REPO_ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
ADMIN = "admin"
# The compose services that run here. No GPU on this machine: the CPU variant of the training worker.
COMPONENTS = ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer",
              "airflow-worker-cpu", "airflow-worker-default")
TRAINING_WORKER, DEFAULT_WORKER = "airflow-worker-cpu", "airflow-worker-default"
DAG_ID = "carbon_training"  # what the API helpers below mean unless given another dag_id
# The name of the one-shot CLI calls (``AirflowStack.airflow``): the scheduler's environment.
CLI = "airflow-cli"
# Test-only timings layered on top of compose's environment: faster heartbeats and failure detection.
FAST = {
    "AIRFLOW__CORE__PARALLELISM": "8",
    "AIRFLOW__CORE__DEFAULT_TASK_RETRY_DELAY": "2",
    "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
    "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
    "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "10",
    "PYTHONUNBUFFERED": "1",
}


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
        kill_tree(process.pid)
        process.wait(timeout=10)


def kill_tree(pid: int) -> list[int]:
    """SIGKILL a process and every descendant, as a machine or container dying would: nothing gets to
    clean up. Returns the pids killed."""
    try:
        root = psutil.Process(pid)
        family = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []
    for process in family:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(family, timeout=10)
    return [process.pid for process in family]


def trainer_processes(output_dir: Path, run_dir: Path | None = None,
                      run_name: str | None = None) -> list[psutil.Process]:
    """The trainer processes (``python -m training --config <run dir>/<run name>/trainer_config.yaml``)
    writing under ``output_dir``, or one run's."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if "training" not in cmdline or "--config" not in cmdline[:-1]:
            continue
        config = Path(cmdline[cmdline.index("--config") + 1])
        if not str(config).startswith(str(output_dir)):
            continue
        same_run = run_dir is None or config.parent.parent == run_dir
        if same_run and (run_name is None or config.parent.name == run_name):
            found.append(process)
    return found


def cleared(stack: "AirflowStack") -> "AirflowStack":
    """The stack made clean before a test, whatever the one before left behind (one failure is one red
    test, never a cascade); what was cleared is printed."""
    done = stack.clear()
    if done:
        print("before this test:", "; ".join(done))
    return stack


@contextmanager
def running_stack(prefix: str, **options: Any) -> Iterator["AirflowStack"]:
    """An ``AirflowStack(root, **options)`` started in a new folder; when done, every process stopped
    and the folder removed (kept if CARBON_KEEP_STACK is set). The processes' logs are printed if it
    does not start."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(root, 0o755)  # PostgreSQL's user (and, in private mode, each process's) reaches into it
    stack = AirflowStack(root, **options)
    try:
        stack.start()
        yield stack
    except BaseException:
        print(stack.diagnostics())
        raise
    finally:
        stack.stop()
        if os.environ.get("CARBON_KEEP_STACK"):
            print(f"stack files kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


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
        wait_until(lambda: subprocess.run([str(self.bin / "pg_isready"), "-h", "127.0.0.1",
                                           "-p", str(self.port)], capture_output=True).returncode == 0,
                   60, "PostgreSQL to accept connections")
        subprocess.run([str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "airflow",
                        "airflow"], check=True, capture_output=True, timeout=60,
                       env={**os.environ, "PGPASSWORD": self.password})

    def stop(self) -> None:
        if self.process:
            stop_process(self.process)


class Redis:
    """Debian's redis-server on 127.0.0.1, a free port, a password and its own directory (snapshots
    there, so a restart keeps what was queued)."""

    def __init__(self, data_dir: Path):
        self.binary = shutil.which("redis-server")
        if not self.binary:
            raise RuntimeError("redis-server not found: run `make system-deps` "
                               "(apt-get install redis-server)")
        self.data_dir = data_dir
        self.port = free_port()
        self.password = secrets.token_hex(12)
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self.data_dir / "redis.conf"  # the password in a file, not on a command line
        config.write_text(f"bind 127.0.0.1\nport {self.port}\nrequirepass {self.password}\n"
                          f"dir {self.data_dir}\nsave 1 1\nappendonly yes\nappendfsync always\n"
                          "protected-mode yes\n")
        config.chmod(0o600)
        log = open(self.data_dir.parent / "redis.log", "a")
        self.process = subprocess.Popen([self.binary, str(config)], stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        wait_until(self.ping, 30, "Redis to answer PING")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
                sock.sendall(f"AUTH {self.password}\r\nPING\r\n".encode())
                return b"+PONG" in sock.recv(100)
        except OSError:
            return False

    def stop(self) -> None:
        if self.process:
            stop_process(self.process)

    def restart(self) -> None:
        self.stop()
        self.start()


class AirflowStack:
    """PostgreSQL, Redis, the S3 server and the Airflow services of docker-compose.yaml, with this
    checkout's DAGs and plugins."""

    def __init__(self, root: Path, extra_env: dict[str, str] | None = None,
                 region_workers: dict[str, tuple[str, str]] | None = None,
                 private: bool = False, training_workers: int = 1):
        """``region_workers``: component name -> (queue, region): training workers like compose's
        airflow-worker-cpu, each consuming its region's queue with CARBON_REGION set, instead of the one
        training worker. ``extra_env`` goes to every process (e.g. CARBON_REGIONS_FILE).
        ``training_workers``: that many workers on the training queue (airflow-worker-cpu, then
        airflow-worker-cpu-2, ...).

        ``private``: no folder shared between processes, as on separate machines. Each process (every
        component, every worker, the init and the CLI calls) has its own directory under
        ``root/private/<name>``: its AIRFLOW_HOME (airflow.cfg and the login file copied from the init's,
        as a deployment hands each machine its configuration), output folder, CARBON_HOME (a copy of
        include/), HOME and TMPDIR. As root (``isolated``), each runs in a mount namespace of its own in
        which every other process's directory is an empty read-only folder: what one writes, no other
        can read or write by its path. Task logs go to the object store (Airflow's remote logging).
        What they share: PostgreSQL, Redis, the S3 server, the checkout's code and the read-only data
        folder."""
        self.root = root
        self.extra_env = extra_env or {}
        self.region_workers = region_workers or {}
        self.private = private
        self.extra_training = tuple(f"{TRAINING_WORKER}-{n}" for n in range(2, training_workers + 1))
        self.components = tuple(c for c in COMPONENTS
                                if not (self.region_workers and c == TRAINING_WORKER)) \
            + tuple(self.region_workers) + self.extra_training
        self.postgres = Postgres(root / "pgdata")
        self.redis = Redis(root / "redis")
        from tests.s3_server import S3Server

        (root / "s3").mkdir(parents=True, exist_ok=True)
        # compose's airflow-init makes the bucket (the one in CARBON_OBJECTS_URL, set in start()).
        self.s3 = S3Server(bucket="", log_path=root / "s3" / "moto.log", create_bucket=False)
        self.port = free_port()
        self.password = secrets.token_hex(8)
        self.processes: dict[str, subprocess.Popen] = {}
        self.environments: dict[str, dict[str, str]] = {}  # what each component was last started with
        self.output_dir = root / "output"
        self.home = root / "airflow_home"
        self.isolated = private and os.geteuid() == 0 and shutil.which("unshare") is not None
        self._token: str | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def dotenv(self) -> dict[str, str]:
        """What a user puts in .env: compose interpolates it and hands it to every service (env_file)."""
        return {"POSTGRES_PASSWORD": self.postgres.password, "REDIS_PASSWORD": self.redis.password,
                "AIRFLOW_ADMIN_USERNAME": ADMIN, "AIRFLOW_ADMIN_PASSWORD": self.password,
                "CARBON_TRAINING_SCHEDULE": "none",  # only the runs the tests trigger
                "CARBON_S3_ACCESS_KEY": self.s3.access_key, "CARBON_S3_SECRET_KEY": self.s3.secret_key,
                "AIRFLOW_UID": str(os.getuid())}

    def compose_services(self) -> dict[str, Any]:
        """docker-compose.yaml as Compose reads it, with this stack's .env."""
        return load_compose(self.dotenv())["services"]

    def service(self, name: str) -> str:
        """The compose service a process runs: extra and region training workers are the training
        worker, the CLI calls the scheduler's."""
        if name in self.region_workers or name in self.extra_training:
            return TRAINING_WORKER
        return "airflow-scheduler" if name == CLI else name

    def private_dir(self, name: str) -> Path:
        return self.root / "private" / name

    def home_of(self, name: str) -> Path:
        """A process's AIRFLOW_HOME."""
        return self.private_dir(name) / "airflow_home" if self.private else self.home

    def output_dir_of(self, name: str) -> Path:
        """A process's CARBON_OUTPUT_DIR."""
        return self.private_dir(name) / "output" if self.private else self.output_dir

    def output_dirs(self) -> list[Path]:
        return [self.output_dir_of(name) for name in self.components] if self.private else [self.output_dir]

    def local(self, value: str, name: str) -> str:
        """A compose value with the containers' host names and paths mapped to this machine, for the
        process ``name``."""
        mapping = {
            "@postgres/": f"@127.0.0.1:{self.postgres.port}/",
            "@redis:6379/": f"@127.0.0.1:{self.redis.port}/",
            "http://airflow-apiserver:8080/": f"{self.base_url}/",
            "http://minio:9000": self.s3.endpoint_url,
            "/opt/carbon/output": str(self.output_dir_of(name)),
            "/opt/shared/data": str(SHARED_DATA),
            **({"/opt/carbon/include": str(self.private_dir(name) / "carbon")} if self.private else {}),
            "/opt/carbon": str(REPO_ROOT),
            "/opt/airflow": str(self.home_of(name)),
        }
        for container, here in mapping.items():
            value = value.replace(container, here)
        return value

    def env(self, name: str) -> dict[str, str]:
        """The process environment of a compose service here: its environment from the compose file (host
        names and paths mapped) over its .env, the test's faster timings, this machine's ports."""
        declared = service_environment(self.compose_services()[self.service(name)])
        env = {key: value for key, value in os.environ.items() if not key.startswith(("AIRFLOW", "CARBON_"))}
        env.update(self.dotenv())
        env.update({key: self.local(value, name) for key, value in declared.items()})
        env.update(FAST)
        env.update({
            "AIRFLOW_HOME": str(self.home_of(name)),
            "AIRFLOW__API__BASE_URL": self.base_url,
            "AIRFLOW__API__PORT": str(self.port),
            # Several servers on one host: each its own log-server port (containers each have their own).
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        })
        if self.private:
            own = self.private_dir(name)
            env.update({"HOME": str(own), "TMPDIR": str(own / "tmp"), "USER": f"carbon-{name}",
                        "LOGNAME": f"carbon-{name}",
                        # The API server cannot reach a log server by a port of its own choosing here:
                        # every task's log goes to the object store, where any machine reads it.
                        "AIRFLOW__LOGGING__REMOTE_LOGGING": "True",
                        "AIRFLOW__LOGGING__REMOTE_BASE_LOG_FOLDER":
                            f"s3://{self.objects_bucket(env)}/logs",
                        "AIRFLOW__LOGGING__REMOTE_LOG_CONN_ID": env["CARBON_OBJECTS_CONN_ID"]})
        env["PATH"] = f"{VENV_BIN}:{env.get('PATH', '')}"
        env.update(self.extra_env)
        if name in self.region_workers:
            env["CARBON_REGION"] = self.region_workers[name][1]
        return env

    @staticmethod
    def objects_bucket(env: dict[str, str]) -> str:
        return urlsplit(env["CARBON_OBJECTS_URL"]).netloc

    def private_names(self) -> tuple[str, ...]:
        return ("airflow-init", CLI, *self.components)

    def _prepare_private(self, name: str) -> None:
        """A process's own directory (private mode)."""
        own = self.private_dir(name)
        for sub in ("airflow_home/config", "airflow_home/secrets", "airflow_home/logs", "output", "tmp"):
            (own / sub).mkdir(parents=True, exist_ok=True)
        if not (own / "carbon").exists():
            shutil.copytree(REPO_ROOT / "include", own / "carbon")

    def command(self, name: str, argv: list[str]) -> list[str]:
        """``argv`` as the process ``name`` runs it: isolated, in a mount namespace of its own where an
        empty read-only tmpfs covers every other process's directory."""
        if not self.isolated:
            return argv
        others = [shlex.quote(str(self.private_dir(other)))
                  for other in self.private_names() if other != name]
        cover = " && ".join(f"mount -t tmpfs -o ro,size=4k elsewhere {path}" for path in others)
        return ["unshare", "--mount", "--propagation", "private", "--",
                "sh", "-c", f'{cover} && exec "$@"', name, *argv]

    def _hand_configuration(self, name: str) -> None:
        """The init's airflow.cfg (its generated keys shared by every service) and login file, copied
        into the process's own home: what a deployment gives each machine. Paths in airflow.cfg that name
        the init's home name the process's own."""
        source, target = self.home_of("airflow-init"), self.home_of(name)
        config = (source / "config" / "airflow.cfg").read_text().replace(str(source), str(target))
        (target / "config" / "airflow.cfg").write_text(config)
        shutil.copy2(source / "secrets" / "passwords.json", target / "secrets" / "passwords.json")

    def airflow(self, *args: str, timeout: float = 300) -> str:
        done = subprocess.run(self.command(CLI, [str(VENV_BIN / "airflow"), *args]), env=self.env(CLI),
                              capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT)
        if done.returncode != 0:
            raise RuntimeError(f"airflow {' '.join(args)} failed:\n"
                               f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        return done.stdout

    def start(self) -> "AirflowStack":
        if self.private:
            for name in self.private_names():
                self._prepare_private(name)
        else:
            for directory in (self.home / "config", self.home / "secrets", self.home / "logs",
                              self.output_dir):
                directory.mkdir(parents=True)
        self.postgres.start()
        self.redis.start()
        self.s3.bucket = self.objects_bucket(self.env(DEFAULT_WORKER))
        self.s3.start()
        self.init()
        if self.private:
            for name in (CLI, *self.components):
                self._hand_configuration(name)
        for component in self.components:
            self.start_component(component)
        self.wait_healthy()
        self.unpause(DAG_ID)
        return self

    def unpause(self, dag_id: str) -> None:
        """Once the DAG processor has registered the DAG (they are paused at creation)."""
        wait_until(lambda: self.get(f"/api/v2/dags/{dag_id}", ok_only=False).status_code == 200, 240,
                   f"the DAG processor to register {dag_id}", interval=2)
        self.patch(f"/api/v2/dags/{dag_id}", {"is_paused": False})

    def init(self) -> None:
        """compose's airflow-init, its own script: the shared airflow.cfg, the login, DB migration, the
        pool."""
        service = self.compose_services()["airflow-init"]
        argv = [service["entrypoint"], *service_command(service)]
        argv = [self.local(arg, "airflow-init") for arg in argv]
        done = subprocess.run(self.command("airflow-init", argv), env=self.env("airflow-init"),
                              cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise RuntimeError(f"airflow-init failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")

    def start_component(self, component: str) -> subprocess.Popen:
        service = self.compose_services()[self.service(component)]
        argv = [str(VENV_BIN / "airflow"), *service_command(service)]
        if component in self.region_workers:  # the training worker's command, on its region's queue
            argv[argv.index("--queues") + 1] = self.region_workers[component][0]
        if argv[1:3] == ["celery", "worker"]:  # containers have their own host names; here, name each worker
            argv += ["--celery-hostname", f"{component}@%h"]
        log = open(self.root / f"{component}.log", "a")
        self.environments[component] = env = self.env(component)
        process = subprocess.Popen(self.command(component, argv), env=env, cwd=REPO_ROOT,
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.processes[component] = process
        return process

    def restart_component(self, component: str) -> None:
        stop_process(self.processes[component])
        self.start_component(component)

    def revive(self) -> list[str]:
        """Start again whatever is not running (a test that failed half-way may leave a killed worker or a
        stopped Redis behind). Returns what was started."""
        started = []
        if self.redis.process is None or self.redis.process.poll() is not None:
            self.redis.start()
            started.append("redis")
        for component in self.components:
            if self.processes[component].poll() is not None:
                self.start_component(component)
                started.append(component)
        if started:
            self.wait_healthy()
        return started

    def clear(self) -> list[str]:
        """A clean state for the next test, whatever the last one left: every process running, no run
        queued, running or deferred (they are marked failed), no trainer left over, the gpu pool free.
        Returns what had to be done."""
        done = [f"started {name}" for name in self.revive()]
        unfinished = self.get("/api/v2/dags/carbon_training/dagRuns",
                              state=["queued", "running"])["dag_runs"]
        for run in unfinished:
            self._mark_failed(run["dag_run_id"])
            done.append(f"marked {run['dag_run_id']} ({run['state']}) failed")

        def settled():
            busy = self.get("/api/v2/dags/carbon_training/dagRuns/~/taskInstances",
                            state=["running", "queued", "scheduled", "deferred", "up_for_retry",
                                   "restarting"])
            pool = self.get("/api/v2/pools/gpu")
            return busy["total_entries"] == 0 and pool["occupied_slots"] == 0
        wait_until(settled, 120, "no task instance left active and the gpu pool free", interval=1)
        for output_dir in self.output_dirs():
            for process in trainer_processes(output_dir):
                done.append(f"killed trainer {process.pid}")
                kill_tree(process.pid)
        return done

    def _mark_failed(self, run_id: str) -> None:
        """PATCH the run to failed. The API server answers 500 when its transaction collides with the
        scheduler's on the same rows (a database error it reports as such): ask again."""
        path = f"/api/v2/dags/carbon_training/dagRuns/{run_id}"
        answers: list[str] = []

        def marked():
            response = self._request("PATCH", path, ok_only=False, json={"state": "failed"})
            if response.status_code < 500:
                if not response.ok:
                    raise RuntimeError(f"PATCH {path}: {response.status_code} {response.text[:500]}")
                return True
            answers.append(f"{response.status_code} {response.text[:200]}")
            return False
        try:
            wait_until(marked, 60, f"run {run_id} to be marked failed", interval=2)
        except TimeoutError:
            raise RuntimeError(f"PATCH {path} kept failing: {answers[-3:]}\n{self.diagnostics()}") from None
        if answers:
            print(f"marking {run_id} failed took {len(answers) + 1} tries: {answers}")

    def wait_healthy(self) -> None:
        wait_until(self._healthy, 240, "the API server to report every component healthy", interval=2)
        wait_until(self._workers_answer, 120, "every Celery worker to answer", interval=2)

    def stop(self) -> None:
        for component in reversed(self.components):
            if component in self.processes:
                stop_process(self.processes[component])
        self.redis.stop()
        self.s3.stop()
        self.postgres.stop()

    def _workers_answer(self) -> bool:
        from celery import Celery

        broker = self.env(DEFAULT_WORKER)["AIRFLOW__CELERY__BROKER_URL"]
        app = Celery(broker=broker)
        try:
            replies = app.control.inspect(timeout=2).active_queues() or {}
        except Exception:  # noqa: BLE001 - the broker is still starting
            return False
        finally:
            app.close()
        workers = {c for c in self.components if c == DEFAULT_WORKER or self.service(c) == TRAINING_WORKER}
        return {name.split("@")[0] for name in replies} >= workers

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
            response = requests.post(f"{self.base_url}/auth/token",
                                     json={"username": ADMIN, "password": self.password}, timeout=30)
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

    def add_connection(self, conn_id: str, conn_type: str, **fields: Any) -> None:
        """An Airflow connection, made as an admin makes one: through the REST API."""
        self._request("DELETE", f"/api/v2/connections/{conn_id}", ok_only=False)
        self._request("POST", "/api/v2/connections",
                      json={"connection_id": conn_id, "conn_type": conn_type, **fields})

    def trigger(self, conf: dict[str, Any], run_id: str | None = None, dag_id: str = DAG_ID) -> str:
        body = {"logical_date": None, "conf": conf, **({"dag_run_id": run_id} if run_id else {})}
        run = self._request("POST", f"/api/v2/dags/{dag_id}/dagRuns", json=body).json()
        return run["dag_run_id"]

    def run(self, run_id: str, dag_id: str = DAG_ID) -> dict:
        return self.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")

    def task_instances(self, run_id: str, dag_id: str = DAG_ID) -> dict[str, dict]:
        rows = self.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]
        return {row["task_id"]: row for row in rows}

    def tries(self, run_id: str, task_id: str, dag_id: str = DAG_ID) -> list[dict]:
        return self.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}"
                        f"/taskInstances/{task_id}/tries")["task_instances"]

    @property
    def records_url(self) -> str:
        """The records database (compose's AIRFLOW_CONN_CARBON_RECORDS), as this test process reaches it."""
        return (f"postgresql+psycopg2://airflow:{self.postgres.password}@127.0.0.1:{self.postgres.port}"
                "/carbon")

    def records(self, sql: str, **params: Any) -> list[Any]:
        """Rows of a query on the records database."""
        from sqlalchemy import create_engine, text

        engine = create_engine(self.records_url)
        try:
            with engine.connect() as connection:
                return list(connection.execute(text(sql), params))
        finally:
            engine.dispose()

    def stored_report(self, run_id: str, dag_id: str = DAG_ID) -> dict | None:
        """The run's report as the report task stored it in the records database."""
        rows = self.records("SELECT report FROM carbon_reports WHERE dag_id = :dag AND run_id = :run",
                            dag=dag_id, run=run_id)
        return json.loads(rows[0][0]) if rows else None

    def object_keys(self, run_id: str, dag_id: str = DAG_ID) -> list[str]:
        """The keys under the run's prefix in the object store (carbon_aware.objects.run_path)."""
        from carbon_aware.outputs import run_dir_name

        base = urlsplit(self.env(DEFAULT_WORKER)["CARBON_OBJECTS_URL"]).path.strip("/")
        prefix = f"{base}/{run_dir_name(dag_id)}/{run_dir_name(run_id)}/"
        listed = self.s3.client().list_objects_v2(Bucket=self.s3.bucket, Prefix=prefix)
        return [item["Key"][len(prefix):] for item in listed.get("Contents", [])]

    def read_object(self, url: str) -> bytes:
        """An object the tasks wrote, by its s3:// URL."""
        parts = urlsplit(url)
        return self.s3.client().get_object(Bucket=parts.netloc, Key=parts.path.lstrip("/"))["Body"].read()

    def xcom(self, run_id: str, task_id: str, dag_id: str = DAG_ID) -> Any:
        return self.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}"
                        f"/taskInstances/{task_id}/xcomEntries/return_value",
                        deserialize="true")["value"]

    def log(self, run_id: str, task_id: str, try_number: int, dag_id: str = DAG_ID) -> str:
        body = self.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}"
                        f"/taskInstances/{task_id}/logs/{try_number}",
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

    def wait_for_run(self, run_id: str, timeout: float = 600, on_poll=None, dag_id: str = DAG_ID) -> dict:
        def finished():
            if on_poll:
                on_poll()
            run = self.run(run_id, dag_id)
            return run if run["state"] in ("success", "failed") else None
        run = wait_until(finished, timeout, f"run {run_id} to finish", interval=1)
        if run["state"] != "success":
            tis = self.task_instances(run_id, dag_id)
            failed = "\n".join(f"--- {task} log ---\n"
                               f"{self.log(run_id, task, ti['try_number'], dag_id)[-4000:]}"
                               for task, ti in tis.items() if ti["state"] == "failed")
            states = {task: ti["state"] for task, ti in tis.items()}
            raise AssertionError(f"run {run_id} ended {run['state']}: {states}\n{failed}\n"
                                 f"{self.diagnostics()}")
        return run

    def diagnostics(self) -> str:
        parts = []
        for path in sorted(self.root.glob("*.log")):
            parts.append(f"--- {path.name} (tail) ---\n"
                         + "\n".join(path.read_text(errors="replace").splitlines()[-40:]))
        return "\n".join(parts)
