"""CarbonJobOperator across machines that share nothing but the records database and the object store:
its retry on another machine (another output folder) resumes from the checkpoint the killed attempt left
in the store, continues its energy log, and names both machines; a command's checkpoint folder, with
subfolders, reaches the store at $CARBON_CHECKPOINT_URL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from tests.conftest import CARBON_DIR, REPO_ROOT

NESO = CARBON_DIR / "neso_carbon_intensity_api" / "neso_2023_national_intensity.csv"
SCRIPT = [sys.executable, str(REPO_ROOT / "include" / "examples" / "own_training.py")]
DAG_ID, RUN_ID, JOB = "carbon_own_job", "manual__across", "own"
FAST_METER = {"measure_power_secs": 0.5, "log_every_seconds": 1.0}


class FakeTI:
    """The task instance a job operator sees: the sensor's release in XCom, its own XComs, its try."""

    dag_id, run_id = DAG_ID, RUN_ID

    def __init__(self, wait: dict, try_number: int):
        self.wait, self.try_number, self.pushed = wait, try_number, {}

    def xcom_pull(self, task_ids, key="return_value"):
        return self.wait if task_ids == "wait" else self.pushed.get((task_ids, key))

    def xcom_push(self, key, value):
        self.pushed[key] = json.loads(json.dumps(value))


# The first machine: the operator's first try in a process of its own (killed with it), named machine-a.
MACHINE_A = """
import json, socket, sys
socket.gethostname = lambda: "machine-a"
from carbon_aware.operators.job import CarbonJobOperator
from tests.test_job_across_machines import FAST_METER, JOB, FakeTI

wait = json.loads(open(sys.argv[1]).read())
operator = CarbonJobOperator(task_id="train", wait_task_id="wait", run_name=JOB, command=sys.argv[2:],
                             emissions=FAST_METER, grace_seconds=30)
operator.execute({"ti": FakeTI(wait, try_number=1), "params": {}})
"""


def _wait() -> dict:
    from carbon_aware.planning.plan import make_plan

    now = datetime.now(timezone.utc)
    conf = {"providers": [{"name": "trace", "path": str(NESO), "replay_start": "2023-03-01T06:00:00Z"}],
            "job_duration_hours": 1, "deadline_hours": 12, "interruptible": False}
    plan = make_plan(conf, RUN_ID, now=now, trainer_configs=False)
    return {"plan": plan, "woke_at": now.isoformat(), "woke_at_grid": now.isoformat()}


@pytest.fixture
def store(tmp_path, monkeypatch) -> Path:
    """The object store both machines share: a file:// folder apart from either machine's output."""
    monkeypatch.setenv("CARBON_OBJECTS_URL", f"file://{tmp_path / 'store'}")
    return tmp_path / "store"


def _kill_machine_a(tmp_path: Path, wait: dict, stored: Path) -> list[dict]:
    """Machine A runs the job until the store holds its checkpoint and the records three readings, then
    dies (SIGKILL to its whole process group: the worker and the command under it)."""
    from carbon_aware.records.jobs import RecordsEnergyLog

    (tmp_path / "wait.json").write_text(json.dumps(wait))
    env = {**os.environ, "CARBON_OUTPUT_DIR": str(tmp_path / "machine-a"), "PYTHONPATH": os.pathsep.join(
        [str(REPO_ROOT / "src"), str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    command = [*SCRIPT, "--steps", "1000000", "--checkpoint-every", "50"]
    output = tmp_path / "machine-a.log"
    with open(output, "w") as sink:
        first = subprocess.Popen([sys.executable, "-c", MACHINE_A, str(tmp_path / "wait.json"), *command],
                                 cwd=REPO_ROOT, env=env, start_new_session=True, stdout=sink,
                                 stderr=subprocess.STDOUT)
    log = RecordsEnergyLog(DAG_ID, RUN_ID, JOB)
    deadline = time.monotonic() + 180
    while not (stored.exists() and len(log.read()) >= 3) and time.monotonic() < deadline:
        assert first.poll() is None, output.read_text()[-3000:]
        time.sleep(0.2)
    assert stored.exists() and len(log.read()) >= 3, (stored.exists(), len(log.read()), output.read_text()[-3000:])
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(timeout=30)
    return log.read()


def test_a_retry_on_another_machine_resumes_from_the_store_and_counts_both_attempts(
        tmp_path, store, monkeypatch, capsys):
    import socket

    import torch

    from carbon_aware.operators.job import CarbonJobOperator
    from carbon_aware.outputs import run_dir_for
    from carbon_aware.records.jobs import summary_of

    wait = _wait()
    stored = store / DAG_ID / RUN_ID / JOB / "checkpoints" / "checkpoint.pt"
    killed = _kill_machine_a(tmp_path, wait, stored)
    assert {e["attempt"] for e in killed} == {1} and {e["worker"] for e in killed} == {"machine-a"}
    assert summary_of(DAG_ID, RUN_ID, JOB) is None  # it died before it could write one
    at_kill = stored.read_bytes()
    step = torch.load(stored, weights_only=False)["step"]

    monkeypatch.setenv("CARBON_OUTPUT_DIR", str(tmp_path / "machine-b"))  # its own, empty disk
    monkeypatch.setattr(socket, "gethostname", lambda: "machine-b")
    ti = FakeTI(wait, try_number=2)
    operator = CarbonJobOperator(task_id="train", wait_task_id="wait", run_name=JOB, emissions=FAST_METER,
                                 command=[*SCRIPT, "--steps", str(step + 100), "--checkpoint-every", "50"])
    capsys.readouterr()
    summary = operator.execute({"ti": ti, "params": {}})

    job_dir = run_dir_for(RUN_ID, DAG_ID) / JOB
    assert str(job_dir).startswith(str(tmp_path / "machine-b"))
    task_log = capsys.readouterr().out  # the operator's log (the command's output in it)
    assert f"resumed from {job_dir / 'checkpoints' / 'checkpoint.pt'} at step {step} " in task_log, \
        task_log[-3000:]
    assert summary["attempts"] == 2 and summary["workers"] == ["machine-a", "machine-b"]
    last_b = [e for e in summary["energy_timeline"] if e["attempt"] == 2][-1]
    assert summary["energy"]["energy_kwh"] == last_b["kwh"] > killed[-1]["kwh"]
    assert [e["attempt"] for e in summary["energy_timeline"]].count(1) == len(killed)
    assert summary_of(DAG_ID, RUN_ID, JOB) == summary == ti.pushed["job"]  # records and XCom
    assert stored.read_bytes() != at_kill  # machine B's own last checkpoint went to the store


def test_a_commands_checkpoint_folder_with_subfolders_reaches_the_store_at_its_url(tmp_path, store):
    from carbon_aware import objects
    from carbon_aware.operators.job import CarbonJobOperator

    write = ("import os, pathlib; url = os.environ['CARBON_CHECKPOINT_URL']; "
             "p = pathlib.Path(os.environ['CARBON_JOB_DIR']) / 'checkpoints' / 'step-2' / 'model.bin'; "
             "p.parent.mkdir(parents=True); tmp = p.with_name('.model.bin.tmp'); tmp.write_text(url); "
             "tmp.rename(p)")
    operator = CarbonJobOperator(task_id="train", wait_task_id="wait", run_name=JOB, emissions=FAST_METER,
                                 command=[sys.executable, "-c", write])
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CARBON_OUTPUT_DIR", str(tmp_path / "machine-a"))
        operator.execute({"ti": FakeTI(_wait(), try_number=1), "params": {}})
    url = objects.url(objects.run_path(DAG_ID, RUN_ID) / JOB / "checkpoints")
    assert url == f"file://{store / DAG_ID / RUN_ID / JOB / 'checkpoints'}"
    assert (store / DAG_ID / RUN_ID / JOB / "checkpoints" / "step-2" / "model.bin").read_text() == url
