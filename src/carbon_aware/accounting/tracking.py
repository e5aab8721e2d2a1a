"""Experiment tracking in MLflow: one MLflow run per DAG run, from the report and the training summaries.

Enabled when ``MLFLOW_TRACKING_URI`` is set, or else when the Airflow connection ``mlflow_default`` (another
id via ``CARBON_MLFLOW_CONN_ID``) exists: its host, port and schema form the URI (schema ``http``/``https``
is the scheme, anything else a path prefix), its login and password reach MLflow as
``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD`` for the duration of the call only.

Logged: the optimized run's trainer config and the plan as params; each run's per-epoch loss, accuracy
and cumulative energy (step = epoch, ``optimized.``/``baseline.`` prefixes); the final emissions and the
saving split; the optimized run's time-resolved emissions as a cumulative series (step = priced interval,
timestamp = the interval's end in grid time); the report JSON and plot as artefacts. Tracking is a side
channel: nothing here raises into the training run (a warning, without secrets, and ``None`` instead).
mlflow is imported only inside the functions that use it: the DAG file never imports it.
"""
from __future__ import annotations

import logging
import os
import re
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

log = logging.getLogger(__name__)

DEFAULT_CONN_ID = "mlflow_default"
CONN_ID_ENV = "CARBON_MLFLOW_CONN_ID"
# A tracking server that is down must not hold the report step for MLflow's default ~4 minutes of
# retries; these apply only where the MLflow variable itself is unset.
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}
SECRET_ENVS = ("MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME")
RUNS = ("optimized", "baseline")
EPOCH_METRICS = ("train_loss", "test_loss", "test_accuracy_pct")


class TrackingConfigError(ValueError):
    """The tracking configuration (environment or Airflow connection) cannot form a tracking URI."""


def tracking_uri() -> str | None:
    """The MLflow tracking URI, or None when tracking is not configured (or its connection is unusable,
    which is logged as a warning)."""
    try:
        return _resolve()[0]
    except TrackingConfigError as error:
        log.warning("MLflow tracking disabled: %s", error)
        return None


def _resolve() -> tuple[str | None, dict[str, str]]:
    """(URI, MLflow credential variables to set) from the environment, else the Airflow connection."""
    env_uri = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if env_uri:
        return env_uri, {}
    conn_id = os.environ.get(CONN_ID_ENV, "").strip() or DEFAULT_CONN_ID
    conn = _airflow_connection(conn_id)
    if conn is None:
        return None, {}
    login = (("MLFLOW_TRACKING_USERNAME", conn.login), ("MLFLOW_TRACKING_PASSWORD", conn.password))
    return _uri_from_connection(conn_id, conn), {name: value for name, value in login if value}


def _airflow_connection(conn_id: str) -> Any | None:
    try:
        from airflow.sdk import Connection
        from carbon_aware.compat import AirflowNotFoundException
    except ImportError:
        log.debug("Airflow is not importable: no MLflow connection to look up")
        return None
    try:
        return Connection.get(conn_id)
    except AirflowNotFoundException:
        return None
    except Exception as error:  # a secrets backend that is down: tracking is off, the run goes on
        raise TrackingConfigError(
            f"could not read Airflow connection {conn_id!r} ({type(error).__name__})"
        ) from None


def _uri_from_connection(conn_id: str, conn: Any) -> str:
    host = (conn.host or "").strip().rstrip("/")
    if not host:
        raise TrackingConfigError(
            f"Airflow connection {conn_id!r} has no host (expected the MLflow server's)"
        )
    if "://" in host:  # a host written as a URL, as the HTTP provider also accepts
        return host
    schema = (conn.schema or "").strip().strip("/")
    conn_type = (conn.conn_type or "").lower()
    if schema.lower() in ("http", "https"):
        scheme, path = schema.lower(), ""
    else:
        scheme, path = ("https" if conn_type == "https" else "http"), schema
    port = f":{int(conn.port)}" if conn.port else ""
    return f"{scheme}://{host}{port}" + (f"/{path}" if path else "")


def _redact(text: str, secrets: list[str]) -> str:
    """``text`` without URL credentials (``scheme://user:pass@``) or any of ``secrets``."""
    text = re.sub(r"(?<=://)[^/@\s]+@", "***@", text)
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


@contextmanager
def _mlflow_env(credentials: dict[str, str]) -> Iterator[None]:
    """The connection's credentials and bounded HTTP retries, for this call only; restored after."""
    wanted = {**{k: v for k, v in HTTP_DEFAULTS.items() if not os.environ.get(k)}, **credentials}
    saved = {name: os.environ.get(name) for name in wanted}
    os.environ.update(wanted)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def flatten(value: Any, prefix: str = "") -> dict[str, str]:
    """Nested dicts as dotted keys; lists and scalars as their string form (MLflow params are strings)."""
    if isinstance(value, dict):
        flat: dict[str, str] = {}
        for key, item in value.items():
            flat.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: "" if value is None else str(value)}


def _ms(iso: str | None) -> int | None:
    return int(datetime.fromisoformat(iso).timestamp() * 1000) if iso else None


def _g(kg: float | None) -> float | None:
    return kg * 1000 if kg is not None else None


def params_of(report: dict[str, Any], summaries: dict[str, dict | None]) -> dict[str, str]:
    """The optimized run's trainer config (``config.*``) and the plan (``plan.*``)."""
    schedule, sources = report.get("schedule") or {}, report.get("sources") or {}
    start, end = schedule.get("planned_start"), schedule.get("planned_end")
    hours = None
    if start and end:
        hours = (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds() / 3600
    plan = {
        "region": sources.get("region"), "source": sources.get("forecast"), "planned_start": start,
        "planned_end": end, "deadline": schedule.get("deadline"), "duration_hours": hours,
        "baseline_kind": report.get("baseline_kind"), "mode": schedule.get("mode"),
        "time_compression": schedule.get("time_compression"),
    }
    optimized = summaries.get("optimized") or {}
    return {**flatten(optimized.get("config") or {}, "config"), **flatten(plan, "plan")}


def metrics_of(report: dict[str, Any], summaries: dict[str, dict | None],
               logged_at_ms: int) -> list[tuple[str, float, int, int]]:
    """(key, value, timestamp ms, step) for every metric; None values are left out."""
    rows: list[tuple[str, float, int, int]] = []
    for run in RUNS:
        summary = summaries.get(run)
        for epoch in (summary or {}).get("epochs") or []:
            at = _ms(epoch.get("finished_at")) or logged_at_ms
            values = {k: epoch.get(k) for k in EPOCH_METRICS}
            values["energy_kwh"] = epoch.get("energy_kwh_cumulative")
            step = int(epoch["epoch"])
            rows += [(f"{run}.{k}", float(v), at, step) for k, v in values.items() if v is not None]
    savings, timing = report.get("carbon_savings") or {}, report.get("timing") or {}
    efficiency, accuracy = report.get("efficiency") or {}, report.get("accuracy_impact") or {}
    finals = {
        "optimized.emissions_g": _g(savings.get("optimized_emissions_kg")),
        "baseline.emissions_g": _g(savings.get("baseline_emissions_kg")),  # the counterfactual: run now
        "optimized.energy_kwh_total": efficiency.get("optimized_energy_kwh"),
        "baseline.energy_kwh_total": efficiency.get("baseline_energy_kwh"),
        "optimized.final_test_accuracy_pct": accuracy.get("optimized_accuracy"),
        "baseline.final_test_accuracy_pct": accuracy.get("baseline_accuracy"),
        "saving_g": _g(savings.get("reduction_kg")),
        "saving_pct": savings.get("reduction_percentage"),
        "timing_saving_g": _g(timing.get("saving_kg")),
        "efficiency_saving_g": _g(efficiency.get("saving_kg")),
        "optimized.mean_intensity_g_per_kwh": timing.get("chosen_window_intensity_g_per_kwh"),
        "run_now_intensity_g_per_kwh": timing.get("run_now_intensity_g_per_kwh"),
        "measurement_cost_g": _g((report.get("baseline") or {}).get("measurement_cost_kg")),
    }
    rows += [(k, float(v), logged_at_ms, 0) for k, v in finals.items() if v is not None]
    rows += [("optimized.emissions_g_cumulative", grams, at, step)
             for step, (at, grams) in enumerate(cumulative_emissions(report))]
    return rows


def cumulative_emissions(report: dict[str, Any]) -> list[tuple[int, float]]:
    """(interval end in ms, grams emitted up to it) over the optimized run's priced intervals."""
    block = (report.get("intensities") or {}).get("optimized") or {}
    total, series = 0.0, []
    for interval in block.get("intervals") or []:
        total += interval["kwh"] * interval["g_per_kwh"]
        series.append((_ms(interval["end"]), total))
    return series


def log_run(report: dict[str, Any], summaries: dict[str, dict | None], report_path: Path,
            plot_path: Path | None, *, experiment: str = "carbon_training", run_name: str) -> str | None:
    """Log one DAG run to MLflow; returns the MLflow run id, or None when tracking is off or failed.

    ``summaries``: ``{"optimized": summary, "baseline": summary or None}`` (training/summary.py schema).
    ``report``: build_report's dict, as written to ``report_path``."""
    try:
        uri, credentials = _resolve()
    except TrackingConfigError as error:
        log.warning("MLflow tracking disabled: %s", error)
        return None
    if not uri:
        log.debug("MLflow tracking not configured (no MLFLOW_TRACKING_URI, no Airflow connection)")
        return None
    secrets = [*credentials.values(), *(os.environ.get(name, "") for name in SECRET_ENVS)]
    try:
        from mlflow.entities import Metric, Param, RunTag
        from mlflow.tracking import MlflowClient
    except ImportError:
        log.warning("MLflow tracking configured but mlflow is not installed (pip install '.[tracking]')")
        return None
    run_id = None
    client = None
    try:
        with _mlflow_env(credentials):
            client = MlflowClient(tracking_uri=uri)
            experiment_id = _experiment_id(client, experiment)
            now_ms = int(datetime.now().timestamp() * 1000)
            tags = {"dag_run_id": str(report.get("dag_run_id")),
                    "report_version": str(report.get("report_version"))}
            run_id = client.create_run(experiment_id, run_name=run_name, tags=tags).info.run_id
            client.log_batch(
                run_id,
                metrics=[Metric(k, v, at, step) for k, v, at, step in metrics_of(report, summaries, now_ms)],
                params=[Param(k, v) for k, v in params_of(report, summaries).items()],
                tags=[RunTag("baseline_kind", str(report.get("baseline_kind")))],
            )
            client.log_artifact(run_id, str(report_path))
            if plot_path is not None and Path(plot_path).is_file():
                client.log_artifact(run_id, str(plot_path))
            client.set_terminated(run_id, "FINISHED")
        log.info("MLflow run %s logged to experiment %r at %s", run_id, experiment, _redact(uri, secrets))
        return run_id
    except Exception as error:  # tracking must never fail the training run
        log.warning("MLflow tracking failed at %s, run not logged: %s: %s", _redact(uri, secrets),
                    type(error).__name__, _redact(str(error), secrets)[:500])
        if run_id is not None and client is not None:
            try:
                with _mlflow_env(credentials):
                    client.set_terminated(run_id, "FAILED")
            except Exception:
                pass
        return None


def _experiment_id(client: Any, name: str) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name)
    except Exception:  # another DAG run created it first
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id
