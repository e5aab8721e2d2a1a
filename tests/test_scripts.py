"""The newcomer's scripts: `make demo`'s summary of the `airflow dags test` log, and `make airflow`'s
environment (no scheduled run that would hold the UI's first trigger behind max_active_runs=1)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from datetime import timedelta

from tests.conftest import REPO_ROOT

# Lines as `airflow dags test carbon_training` writes them (Airflow 3.3, a demo run), ids shortened.
RUN_ID = "manual__2026-12-03T06:03:08.765054+00:00"
LOG = f"""\
2026-12-03T06:03:15.291957Z [info     ] ::endgroup::                   [task] loc=task_runner.py:2232
2026-12-03T06:03:17.597874Z [info     ] Now 242 g/kWh; best 1 h window starts 2026-12-03 12:03 UTC \
(trace 2023-03-01 12:00) at 214 g/kWh (−11%); deadline 2026-12-04 06:03 UTC (trace 2023-03-02 06:00); \
source trace:neso_2023_national_intensity.csv:file
reason: lowest mean intensity before the deadline; duration 1 h (from params) \
[airflow.task.operators.carbon_aware.operators.plan.CarbonPlanOperator] loc=plan.py:43
2026-12-03T06:03:17.598051Z [info     ] ::group::Post Execute          [task] loc=task_runner.py:1580
2026-12-03T06:03:41.844187Z [info     ] woke at 2026-12-03T06:03:41.844158+00:00 for the window planned at \
2026-12-03T12:03:17.584628+00:00 [airflow.task.operators.carbon_aware.sensors.window.CarbonWindowSensor] \
loc=window.py:38
2026-12-03 06:03:51,671 INFO training: data: mnist, 6000 train / 2000 test samples, resident on device
2026-12-03 06:04:12,901 INFO training: epoch 1/1 | loss 0.5703 | test acc 92.45% | 283 samples/s | energy n/a
attempt 1: exit code 0, 0.000221233 kWh so far
2026-12-03T06:04:23.965332Z [info     ] 2026-12-03 06:04:23,965 INFO training: epoch 1/1 | loss 0.6224 | \
test acc 93.30% | 1447 samples/s | energy n/a \
[airflow.task.operators.carbon_aware.operators.job.CarbonTrainerOperator] loc=jobs.py:154
2026-12-03T06:04:27.346405Z [info     ] DagRun Finished: dag_id=carbon_training, \
logical_date=2026-12-03 06:03:08.023006+00:00, run_id={RUN_ID}, run_duration=79.3, state=success, \
run_type=manual [airflow.models.dagrun.DagRun] loc=dagrun.py:1212
"""


def test_the_demo_prints_the_plan_the_wake_up_and_the_epochs_from_the_airflow_log():
    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    try:
        from demo_report import finished_run, highlights
    finally:
        sys.path.remove(str(REPO_ROOT / "scripts"))
    assert highlights(LOG) == [
        "Now 242 g/kWh; best 1 h window starts 2026-12-03 12:03 UTC (trace 2023-03-01 12:00) at 214 g/kWh "
        "(−11%); deadline 2026-12-04 06:03 UTC (trace 2023-03-02 06:00); "
        "source trace:neso_2023_national_intensity.csv:file",
        "reason: lowest mean intensity before the deadline; duration 1 h (from params)",
        "woke at 2026-12-03T06:03:41.844158+00:00 for the window planned at 2026-12-03T12:03:17.584628+00:00",
        "epoch 1/1 | loss 0.5703 | test acc 92.45% | 283 samples/s | energy n/a",
        "epoch 1/1 | loss 0.6224 | test acc 93.30% | 1447 samples/s | energy n/a",
    ]
    assert finished_run(LOG) == RUN_ID


def test_the_demo_summary_runs_on_a_finished_run(tmp_path):
    """scripts/demo_report.py as demo.sh runs it: the highlights, the report's table, the year line."""
    from tests.test_report import CURVE, T0, _plan, _summary, at
    from carbon_aware.accounting.report import build_report
    from carbon_aware.records.reports import save_report

    env = {**os.environ, "CARBON_OUTPUT_DIR": str(tmp_path / "output"),
           "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "src"), str(REPO_ROOT)])}
    plan = {**_plan(CURVE, T0, at(240)), "replay": {"trace": "neso.csv",
                                                    "offset_seconds": -timedelta(days=1).total_seconds()}}
    report = build_report(dag_run_id=RUN_ID, plan=plan, wait={"woke_at_grid": at(240).isoformat()},
                          baseline=None, optimized=_summary(at(240), 1.0), actual=[], report_time=at(300))
    report["files"] = {"json": "file:///somewhere/comparison_report.json",
                       "plot": "file:///somewhere/comparison.png"}
    save_report("carbon_training", RUN_ID, report)  # in this test's records database (CARBON_RECORDS_URL)
    (tmp_path / "demo.log").write_text(LOG)
    out = subprocess.run([sys.executable, "scripts/demo_report.py", str(tmp_path / "demo.log"),
                          "include/demo_conf.json"], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    assert lines[0].startswith("Now 242 g/kWh") and "start (trace time, UTC)" in out.stdout
    assert any(line.startswith("saving: 100 g") for line in lines)
    assert lines[-1].startswith("run daily in 2023 on this trace (neso_2023_national_intensity.csv")


def test_make_airflow_runs_carbon_training_on_triggers_only(tmp_path):
    """An unpaused daily schedule would start a run that waits up to a day for its window and, with
    max_active_runs=1, queues the UI's first trigger behind it: standalone.sh sets the schedule to none."""
    for name in ("standalone.sh", "airflow_env.sh"):
        (tmp_path / "scripts").mkdir(exist_ok=True)
        shutil.copy(REPO_ROOT / "scripts" / name, tmp_path / "scripts" / name)
    fake = tmp_path / ".venv" / "bin" / "airflow"  # airflow_env.sh puts the checkout's .venv first
    fake.parent.mkdir(parents=True)
    calls = tmp_path / "calls"
    fake.write_text(f'#!/bin/sh\necho "$* | schedule=${{CARBON_TRAINING_SCHEDULE-unset}}" >> {calls}\n')
    fake.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "CARBON_TRAINING_SCHEDULE"}
    out = subprocess.run(["bash", str(tmp_path / "scripts" / "standalone.sh")], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    made = calls.read_text().splitlines()
    assert "dags unpause carbon_training | schedule=none" in made
    assert made[-1] == "standalone | schedule=none"
    assert "runs only when triggered" in out.stdout
    kept = subprocess.run(["bash", str(tmp_path / "scripts" / "standalone.sh")], capture_output=True,
                          env={**env, "CARBON_TRAINING_SCHEDULE": "@weekly"}, text=True, timeout=60)
    assert kept.returncode == 0 and calls.read_text().splitlines()[-1] == "standalone | schedule=@weekly"


def test_the_schedule_none_gives_a_dag_without_scheduled_runs():
    code = ("import runpy; ns = runpy.run_path('dags/carbon_training.py'); "
            "print(type(ns['dag'].timetable).__name__, ns['dag'].max_active_runs)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "src"), str(REPO_ROOT)])}
    out = {}
    for value in ("none", "@daily"):
        run = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True,
                             env={**env, "CARBON_TRAINING_SCHEDULE": value}, timeout=120)
        assert run.returncode == 0, run.stderr[-2000:]
        out[value] = run.stdout.split()
    assert out["none"] == ["NullTimetable", "1"] and out["@daily"] != out["none"]
