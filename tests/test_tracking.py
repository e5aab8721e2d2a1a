"""Experiment tracking against a real `mlflow server` (SQLite backend, proxied artefacts) on 127.0.0.1.

Two real trainings on a real MNIST subset under real CodeCarbon, priced by the real report, logged with
carbon_aware.accounting.tracking.log_run and read back through MLflow's own client."""
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests

pytest.importorskip("mlflow", reason="mlflow not installed (the tracking extra: make install installs it)")

from carbon_aware.accounting import tracking  # noqa: E402
from carbon_aware.grid.forecast import IntensityPoint  # noqa: E402
from carbon_aware.accounting.report import build_report, plot_png  # noqa: E402
from tests.conftest import MNIST_DIR, REPO_ROOT  # noqa: E402
from training.config import load_config  # noqa: E402
from training.trainer import train  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RUN_NOW = datetime(2023, 3, 1, 10, tzinfo=timezone.utc)  # grid time: the plan says run now = 10:00
WINDOW = RUN_NOW + timedelta(hours=4)  # the chosen window 14:00-15:00
# Half-hourly g/kWh from 10:00 to 16:00: the run-now hour is dirty, the window clean and split in two slots.
CURVE_VALUES = [231, 224, 210, 198, 180, 171, 150, 139, 96, 118, 160, 175]
SECRET = "hunter2-not-in-logs"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory) -> str:
    """A real MLflow tracking server; its whole process group is stopped at the end, pass or fail."""
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = root / "server.log"
    command = [str(Path(sys.executable).parent / "mlflow"), "server",
               "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
               "--artifacts-destination", str(root / "artifacts"),
               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    # No background job runner (huey consumers): nothing here uses MLflow's server-side jobs.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with open(log_path, "wb") as server_log:
        proc = subprocess.Popen(command, cwd=root, stdout=server_log, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mlflow server exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                if requests.get(f"{url}/health", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow server not healthy after 180 s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        stop_process_group(proc)


def stop_process_group(proc: subprocess.Popen) -> None:
    """SIGTERM to the server's whole group (uvicorn worker included), SIGKILL to what is left after 30 s."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        proc.poll()  # reaps the leader, so only live members keep the group
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.5)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def logged_inputs(tmp_path_factory) -> dict:
    """Real summaries (two 2-epoch runs on 1,200 MNIST images, CodeCarbon on), the real report and plot."""
    assert (MNIST_DIR / "train-images-idx3-ubyte.gz").is_file(), f"real MNIST expected in {MNIST_DIR}"
    out = tmp_path_factory.mktemp("runs")
    common = [f"output.dir={out}", f"data.root={MNIST_DIR}", "training.device=cpu", "training.epochs=2",
              "data.train_subset=1200", "data.test_subset=400"]
    config = REPO_ROOT / "include/configs/test.yaml"
    summaries = {
        name: train(load_config(config, [*common, f"training.run_name={name}", *extra]))
        for name, extra in (("baseline", ["training.learning_rate=0.001"]), ("optimized", []))
    }
    for name, summary in summaries.items():
        assert len(summary["energy_timeline"]) >= 3 and summary["energy"], f"{name}: no energy measured"
    curve = [IntensityPoint(RUN_NOW + timedelta(minutes=30 * i), timedelta(minutes=30), value)
             for i, value in enumerate(CURVE_VALUES)]
    plan = {
        # Demo time compression: each run is laid onto its planned hour of grid time.
        "clock": {"anchor": RUN_NOW.isoformat(), "compression": 240.0},
        "curve": [p.to_dict() for p in curve],
        "duration_hours": 1.0, "run_now_start": RUN_NOW.isoformat(), "run_now_mean_intensity": 227.5,
        "mean_intensity": 117.5, "expected_saving_pct": 48.4, "start": WINDOW.isoformat(),
        "end": (WINDOW + timedelta(hours=1)).isoformat(),
        "deadline": (RUN_NOW + timedelta(hours=12)).isoformat(),
        "mode": "window", "reason": "lowest mean intensity before the deadline", "source": "test-curve",
        "region": "GB", "fallback_reasons": [],
    }
    baseline = {"kind": "measured", "key": "k", "dag_run_id": "manual__tracking",
                "measured_at": summaries["baseline"]["finished_at"], "summary": summaries["baseline"]}
    report = build_report(dag_run_id="manual__tracking", plan=plan,
                          wait={"woke_at_grid": WINDOW.isoformat(), "waited_seconds": 60.0},
                          baseline=baseline, optimized=summaries["optimized"], actual=[],
                          report_time=WINDOW + timedelta(hours=1))
    report_path, plot_path = out / "report.json", out / "report.png"
    report_path.write_text(json.dumps(report, indent=2))
    plot_path.write_bytes(plot_png(report))
    assert len(report["intensities"]["optimized"]["intervals"]) >= 3, "the window should be priced piecewise"
    return {"report": report, "summaries": summaries, "report_path": report_path, "plot_path": plot_path}


def history(client, run_id: str, key: str) -> list:
    return sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)


def test_a_run_is_logged_and_reads_back_through_the_mlflow_client(mlflow_server, logged_inputs, monkeypatch,
                                                                  tmp_path):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    report, summaries = logged_inputs["report"], logged_inputs["summaries"]
    run_id = tracking.log_run(report, summaries, logged_inputs["report_path"], logged_inputs["plot_path"],
                              experiment="carbon_training_test", run_name="manual__tracking")
    assert run_id, "log_run should return the MLflow run id"

    client = MlflowClient(tracking_uri=mlflow_server)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "manual__tracking"
    assert client.get_experiment(run.info.experiment_id).name == "carbon_training_test"
    assert run.data.tags["dag_run_id"] == "manual__tracking" and run.data.tags["baseline_kind"] == "measured"
    config = summaries["optimized"]["config"]
    params = run.data.params
    assert params["config.training.learning_rate"] == str(config["training"]["learning_rate"])
    assert params["config.training.run_name"] == "optimized" and params["config.data.train_subset"] == "1200"
    assert params["plan.region"] == "GB" and params["plan.source"] == "test-curve"
    assert params["plan.planned_start"] == WINDOW.isoformat() and params["plan.duration_hours"] == "1.0"
    assert params["plan.deadline"] == report["schedule"]["deadline"]
    assert params["plan.baseline_kind"] == "measured"

    for name in ("optimized", "baseline"):
        epochs = summaries[name]["epochs"]
        for key, field in (("test_accuracy_pct", "test_accuracy_pct"), ("train_loss", "train_loss"),
                           ("test_loss", "test_loss"), ("energy_kwh", "energy_kwh_cumulative")):
            got = history(client, run_id, f"{name}.{key}")
            assert [(m.step, m.value) for m in got] == [
                (e["epoch"], pytest.approx(e[field], rel=1e-12)) for e in epochs], f"{name}.{key}"
            assert [m.timestamp for m in got] == [
                int(datetime.fromisoformat(e["finished_at"]).timestamp() * 1000) for e in epochs]

    intervals = report["intensities"]["optimized"]["intervals"]
    series = history(client, run_id, "optimized.emissions_g_cumulative")
    assert [m.step for m in series] == list(range(len(intervals)))
    assert [m.timestamp for m in series] == [
        int(datetime.fromisoformat(i["end"]).timestamp() * 1000) for i in intervals]
    assert all(a.value <= b.value for a, b in zip(series, series[1:])) and series[0].value > 0
    emissions_g = report["carbon_savings"]["optimized_emissions_kg"] * 1000
    assert series[-1].value == pytest.approx(emissions_g, rel=1e-9)

    metrics = run.data.metrics
    assert metrics["optimized.emissions_g"] == pytest.approx(emissions_g, rel=1e-12)
    counterfactual_g = report["carbon_savings"]["baseline_emissions_kg"] * 1000
    assert metrics["baseline.emissions_g"] == pytest.approx(counterfactual_g)
    assert metrics["saving_g"] == pytest.approx(report["carbon_savings"]["reduction_kg"] * 1000)
    assert metrics["saving_g"] == pytest.approx(metrics["timing_saving_g"] + metrics["efficiency_saving_g"])
    assert metrics["timing_saving_g"] > 0  # the window (~117 g/kWh) is cleaner than run-now (~227)
    assert metrics["saving_pct"] == pytest.approx(report["carbon_savings"]["reduction_percentage"])
    energy = report["efficiency"]["optimized_energy_kwh"]
    assert metrics["optimized.energy_kwh_total"] == pytest.approx(energy)

    artefacts = {a.path for a in client.list_artifacts(run_id)}
    assert artefacts == {"report.json", "report.png"}
    downloaded = Path(client.download_artifacts(run_id, "report.json", str(tmp_path)))
    assert json.loads(downloaded.read_text()) == report
    assert downloaded.read_bytes() == logged_inputs["report_path"].read_bytes()
    plot = Path(client.download_artifacts(run_id, "report.png", str(tmp_path)))
    assert plot.read_bytes() == logged_inputs["plot_path"].read_bytes()
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ, "log_run must restore the environment"


def test_an_unreachable_server_warns_without_secrets_and_returns_none(logged_inputs, monkeypatch, caplog):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://tracker:{SECRET}@127.0.0.1:{free_port()}")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", SECRET)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="carbon_aware.accounting.tracking"):
        run_id = tracking.log_run(logged_inputs["report"], logged_inputs["summaries"],
                                  logged_inputs["report_path"], None, run_name="unreachable")
    assert run_id is None
    warnings = [r.getMessage() for r in caplog.records if r.name == "carbon_aware.accounting.tracking"]
    assert any("MLflow tracking failed" in w and "127.0.0.1" in w for w in warnings), warnings
    assert SECRET not in caplog.text
    assert time.monotonic() - started < 90, "bounded retries: a down server must not hold the report step"


def test_an_airflow_connection_names_the_server(mlflow_server, logged_inputs, monkeypatch):
    from mlflow.tracking import MlflowClient

    port = mlflow_server.rsplit(":", 1)[1]
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    assert tracking.tracking_uri() is None  # neither the variable nor the connection: tracking is off
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", f"http://tracker:{SECRET}@127.0.0.1:{port}")
    assert tracking.tracking_uri() == mlflow_server

    inputs = logged_inputs
    run_id = tracking.log_run(inputs["report"], inputs["summaries"], inputs["report_path"], None,
                              experiment="via_connection", run_name="conn")
    assert run_id and MlflowClient(tracking_uri=mlflow_server).get_run(run_id).info.status == "FINISHED"
    assert "MLFLOW_TRACKING_USERNAME" not in os.environ and "MLFLOW_TRACKING_PASSWORD" not in os.environ

    # JSON form, another conn id: schema http/https is the scheme, anything else a path prefix.
    monkeypatch.setenv("CARBON_MLFLOW_CONN_ID", "tracking_elsewhere")
    elsewhere = {"conn_type": "http", "host": "mlflow.internal", "port": 8443, "schema": "https"}
    monkeypatch.setenv("AIRFLOW_CONN_TRACKING_ELSEWHERE", json.dumps(elsewhere))
    assert tracking.tracking_uri() == "https://mlflow.internal:8443"
    monkeypatch.setenv("AIRFLOW_CONN_TRACKING_ELSEWHERE",
                       json.dumps({"conn_type": "http", "host": "gateway", "schema": "mlflow"}))
    assert tracking.tracking_uri() == "http://gateway/mlflow"


def test_a_connection_without_a_host_is_a_warning_not_an_error(monkeypatch, caplog):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", json.dumps({"conn_type": "http", "password": SECRET}))
    with caplog.at_level(logging.WARNING, logger="carbon_aware.accounting.tracking"):
        assert tracking.tracking_uri() is None
        assert tracking.log_run({}, {}, Path("unused.json"), None, run_name="x") is None
    assert "'mlflow_default' has no host" in caplog.text and SECRET not in caplog.text


def test_the_dag_logs_each_run_to_mlflow_when_a_tracking_uri_is_set(mlflow_server, airflow_db):
    """The whole path: `airflow dags test carbon_training` with MLFLOW_TRACKING_URI in its environment;
    the report step logs the run, read back by its DAG run id."""
    from mlflow.tracking import MlflowClient

    from carbon_aware.planning.plan import make_plan
    from tests.conftest import compression_for_wait
    from tests.test_dag import trace_params

    params = trace_params(baseline="every_run")
    params["time_compression"] = compression_for_wait(make_plan(params, "probe"), 5)
    airflow = str(Path(sys.executable).parent / "airflow")
    out = subprocess.run([airflow, "dags", "test", "carbon_training", "-c", json.dumps(params)],
                         cwd=REPO_ROOT, env={**airflow_db, "MLFLOW_TRACKING_URI": mlflow_server},
                         capture_output=True, text=True, timeout=600)
    log = out.stdout + out.stderr
    assert out.returncode == 0 and "MLflow: logged as run" in log, log[-4000:]
    dag_run_id = log.split("DagRun Finished:")[1].split("run_id=")[1].split(",")[0]
    client = MlflowClient(tracking_uri=mlflow_server)
    experiment = client.get_experiment_by_name("carbon_training")
    [run] = client.search_runs([experiment.experiment_id], filter_string=f"tags.dag_run_id = '{dag_run_id}'")
    from carbon_aware.records.reports import report_of

    report = report_of("carbon_training", dag_run_id)
    emitted = history(client, run.info.run_id, "optimized.emissions_g_cumulative")
    assert emitted[-1].value == pytest.approx(report["intensities"]["optimized"]["emissions_g"], rel=1e-6)
    accuracy = history(client, run.info.run_id, "optimized.test_accuracy_pct")
    assert accuracy[-1].value == pytest.approx(report["accuracy_impact"]["optimized_accuracy"])
    energy = history(client, run.info.run_id, "optimized.energy_kwh")  # per epoch, from the outside meter
    assert energy and 0 < energy[-1].value <= report["efficiency"]["optimized_energy_kwh"] * (1 + 1e-9)
    assert run.data.metrics["saving_g"] == pytest.approx(report["carbon_savings"]["reduction_kg"] * 1000)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert "comparison_report.json" in artifacts
