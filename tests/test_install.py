"""The provider as a user installs it: the wheel built from this checkout, in a fresh virtualenv with
the oldest supported Airflow (not the lock's), a DAG in a dags folder outside the repository.

Nothing from the repository's own environment is used in that virtualenv: pip resolves the wheel's
declared ranges against the package registry, as `pip install <wheel>` does on a user's machine.
"""

from __future__ import annotations

import json
import sqlite3
import os
import subprocess
import sys
import textwrap
import time
import venv
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, SHARED_DATA
from tests.fake_provider_server import FakeProviderServer, Reply
from tests.test_hooks import fixture

OLDEST_AIRFLOW = "3.1.8"  # the oldest Airflow 3 the provider supports (plugin web apps need 3.1)
DISTRIBUTION = "airflow-provider-carbon-aware"
TRACE = "carbon/neso_carbon_intensity_api/neso_2023_national_intensity.csv"

USER_DAG = '''
"""A user's DAG: plan, wait, a plain Python command measured, report."""
import sys

import pendulum
from airflow.sdk import DAG

from carbon_aware import CarbonJobOperator, CarbonPlanOperator, CarbonReportOperator, CarbonWindowSensor
from carbon_aware.operators.params import dag_params

WORK = "import time; t = time.time(); n = 0\\nwhile time.time() - t < 4: n += sum(range(2000))\\nprint(n)"

with DAG(dag_id="users_job", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
         catchup=False,
         params=dag_params(("providers", "job_duration_hours", "deadline_hours", "baseline",
                            "time_compression"), baseline={"default": "off", "enum": ["off"]})):
    plan = CarbonPlanOperator(task_id="plan")
    wait = CarbonWindowSensor(task_id="wait", plan_task_id="plan")
    job = CarbonJobOperator(task_id="job", wait_task_id="wait", run_name="users_job",
                            command=[sys.executable, "-c", WORK])
    report = CarbonReportOperator(task_id="report", job_task_id="job", wait_task_id="wait")
    plan >> wait >> job >> report
'''


def _run(argv: list[str], env: dict[str, str], timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, **kwargs)


@pytest.fixture(scope="module")
def user_venv(tmp_path_factory) -> Path:
    """A fresh virtualenv with Airflow OLDEST_AIRFLOW and the provider's wheel (pip resolves the rest)."""
    root = tmp_path_factory.mktemp("user")
    wheels = root / "wheels"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "CARBON_", "PYTHON"))}
    built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(wheels), str(REPO_ROOT)],
                 env, timeout=300)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    (wheel,) = wheels.glob("airflow_provider_carbon_aware-*.whl")
    venv.create(root / "venv", with_pip=True)
    python = root / "venv" / "bin" / "python"
    started = time.monotonic()
    installed = _run([str(python), "-m", "pip", "install", "-q", f"apache-airflow=={OLDEST_AIRFLOW}",
                      str(wheel)], env, timeout=900)
    assert installed.returncode == 0, installed.stdout[-3000:] + installed.stderr[-3000:]
    print(f"installed Airflow {OLDEST_AIRFLOW} + {wheel.name} in {time.monotonic() - started:.0f} s")
    return root


def _user_env(root: Path) -> dict[str, str]:
    """The user's Airflow: its own home, a dags folder outside the repository, the provider's base
    folder (CARBON_HOME) in the user's space, the data folder where their traces live."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "CARBON_", "PYTHON"))}
    env.update({
        "PATH": f"{root / 'venv' / 'bin'}:{env.get('PATH', '')}",
        "AIRFLOW_HOME": str(root / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(root / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
        "CARBON_HOME": str(root / "carbon"),
        "CARBON_DATA_DIR": str(SHARED_DATA),
        "AIRFLOW__CARBON_AWARE__LEDGER_DAG_IDS": "users_job",  # in the carbon ledger, by the setting
    })
    return env


@pytest.mark.integration
@pytest.mark.slow
def test_the_wheel_installs_into_an_older_airflow_and_runs_a_users_dag(user_venv):
    root, bin_dir = user_venv, user_venv / "venv" / "bin"
    env = _user_env(root)
    python, airflow = str(bin_dir / "python"), str(bin_dir / "airflow")

    versions = _run([python, "-c", "import importlib.util as u, airflow; "
                     "print(airflow.__version__, u.find_spec('torch') is not None)"], env)
    assert versions.stdout.split() == [OLDEST_AIRFLOW, "False"], versions.stdout + versions.stderr  # no torch

    assert _run([airflow, "db", "migrate"], env, timeout=600).returncode == 0
    listed = _run([airflow, "providers", "list"], env)
    assert DISTRIBUTION in listed.stdout, listed.stdout[-3000:] + listed.stderr[-3000:]
    plugins = _run([airflow, "plugins", "-o", "json"], env)
    assert "carbon_page" in plugins.stdout and "carbon_ledger" in plugins.stdout, plugins.stdout[-3000:]

    with FakeProviderServer() as server:
        server.script("/v3/carbon-intensity/latest", Reply(fixture("electricitymaps_latest")))
        added = _run([airflow, "connections", "add", "em_local", "--conn-type", "electricitymaps",
                      "--conn-host", server.url, "--conn-password", "test-token"], env)
        assert added.returncode == 0, added.stdout + added.stderr
        # The hook's test_connection, as the UI's Test button and the CLI call it
        tested = _run([airflow, "connections", "test", "em_local"], env)
        said = tested.stdout + tested.stderr
        assert tested.returncode == 0 and "Connection success!" in said, said[-3000:]
        assert "test-token" not in said
        (request,) = server.hits("/v3/carbon-intensity/latest")  # the hook talked to the local server
        assert request["headers"]["auth-token"] == "test-token"

    (root / "dags").mkdir()
    (root / "dags" / "users_job.py").write_text(textwrap.dedent(USER_DAG))
    conf = {"providers": [{"name": "trace", "path": TRACE, "replay_start": "2023-03-01T06:00:00Z"}],
            "job_duration_hours": 1, "deadline_hours": 12, "time_compression": 3600}
    out = _run([airflow, "dags", "test", "users_job", "-c", json.dumps(conf)], env, timeout=600,
               cwd=root)
    log = out.stdout + out.stderr
    assert out.returncode == 0 and "state=success" in log, log[-5000:]

    # No records connection set up: the records are the default SQLite file in the user's output folder.
    with sqlite3.connect(root / "carbon" / "output" / "carbon_records.db") as records:
        ((dag_id, text, plot_url),) = records.execute("SELECT dag_id, report, plot_url FROM carbon_reports")
        (measured,) = records.execute("SELECT count(*) FROM carbon_energy_readings WHERE dag_id = ?",
                                      (dag_id,)).fetchone()
    report = json.loads(text)
    assert dag_id == "users_job" and measured >= 2, "the job's energy readings are in the records"
    default_store = root / "carbon" / "output" / "objects"
    assert plot_url.startswith(f"file://{default_store}/users_job/")
    assert not list(Path(python).resolve().parents[1].rglob("comparison_report.json"))  # not in the venv
    for name in ("optimized", "optimized_at_run_now"):  # the job's energy, priced interval by interval
        priced = report["intensities"][name]
        assert priced["intervals"] and priced["emissions_g"] > 0
        recomputed = sum(i["kwh"] * i["g_per_kwh"] for i in priced["intervals"])
        assert recomputed == pytest.approx(priced["emissions_g"], rel=1e-9)
        assert sum(i["kwh"] for i in priced["intervals"]) == pytest.approx(priced["energy_kwh"], rel=1e-9)
    assert report["sources"]["forecast"].startswith("trace:") and not report["no_real_signal"]

    # The ledger's listener measured every try on Airflow 3.1 too (each meter writes the try's end).
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with sqlite3.connect(root / "carbon" / "output" / "carbon_records.db") as records:
            tries = dict(records.execute("SELECT task_id, state FROM carbon_ledger_tasks "
                                         "WHERE ended_at IS NOT NULL"))
        if len(tries) == 4:
            break
        time.sleep(0.5)
    assert tries == {"plan": "success", "wait": "success", "job": "success", "report": "success"}, tries
    assert report["replay"]["planned_start"].startswith("2023-03-01")  # the trace's own time
    assert report["job"]["status"] == "completed", report["job"]
