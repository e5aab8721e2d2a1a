"""The carbon_training DAG: parsing, structure, the deferrable sensor, a full dag.test(), bad params."""
import asyncio
import json
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from carbon_aware.planning.params import ParamsError
from carbon_aware.planning.plan import make_plan
from tests.conftest import CARBON_DIR, REPO_ROOT, compression_for_wait
from tests.fake_provider_server import FakeProviderServer, Reply
from tests.test_providers import neso

NESO = "carbon/neso_carbon_intensity_api/neso_2023_national_intensity.csv"  # in the data folder
FAST_TRAINING = ["training.epochs=1", "data.train_subset=1500", "data.test_subset=500"]


def trace_params(**extra):
    params = {"providers": [{"name": "trace", "path": NESO, "replay_start": "2023-03-01T06:00:00Z"}],
              "job_duration_hours": 1, "deadline_hours": 12, "time_compression": 3600,
              "baseline_config": "baseline.yaml",
              "optimized_config": "optimized.yaml",
              "training_overrides": FAST_TRAINING}
    params.update(extra)
    return params


@pytest.fixture(scope="module")
def dag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO_ROOT / "dags"))
    assert bag.import_errors == {}
    return bag.dags["carbon_training"]


def test_dag_structure_and_params(dag):
    assert set(dag.task_ids) == {"plan_window", "train_baseline", "wait_for_window", "train_optimized",
                                 "report"}
    assert dag.max_active_runs == 1 and dag.catchup is False and dag.start_date.tzinfo is not None
    assert dag.get_task("wait_for_window").upstream_task_ids == {"plan_window"}
    assert dag.get_task("train_optimized").upstream_task_ids == {"wait_for_window"}
    assert dag.get_task("report").upstream_task_ids == {"train_baseline", "train_optimized"}
    assert dag.get_task("report").trigger_rule == "all_done"  # it reports a run the carbon budget stopped
    assert dag.get_task("train_baseline").upstream_task_ids == {"plan_window"}
    for task_id in ("train_baseline", "train_optimized"):
        assert dag.get_task(task_id).pool == "gpu" and dag.get_task(task_id).retries >= 1
    for name, param in dag.params.items():
        assert param.description, f"param {name} has no description"
    assert dag.params.get_param("deadline_hours").schema["maximum"] == 48


def test_the_dag_params_are_generated_from_the_params_model(dag):
    import re

    from carbon_aware.planning.params import RunParams, validate_params

    assert list(dag.params) == list(RunParams.model_fields)  # the form's fields, in the model's order
    defaults = {name: dag.params[name] for name in dag.params}
    assert validate_params(defaults).model_dump() == RunParams().model_dump()
    schema = {name: dag.params.get_param(name).schema for name in dag.params}
    assert schema["job_duration_hours"] == {"type": ["number", "null"], "exclusiveMinimum": 0, "maximum": 48}
    assert schema["carbon_budget_g"] == {"type": ["number", "null"], "exclusiveMinimum": 0}
    assert schema["baseline"] == {"enum": ["cached", "every_run", "off"]}
    assert schema["max_replans"]["type"] == "integer" and schema["interruptible"] == {"type": "boolean"}
    assert schema["providers"] == {"type": "array", "items": {"type": "object"}, "maxItems": 10}
    assert dag.params.get_param("planning_mode").description.startswith("window: lowest mean intensity")
    # the trainer's own limits on its overrides, added by the DAG
    items = schema["training_overrides"]["items"]
    assert re.fullmatch(items["pattern"], "training.epochs=1") and not re.fullmatch(items["pattern"],
                                                                                   "training.bogus=1")
    assert "Allowed keys: " in dag.params.get_param("training_overrides").description


def test_each_bound_of_the_params_model_holds_in_the_trigger_form_too(dag):
    from airflow.sdk.exceptions import ParamValidationError

    from carbon_aware.planning.params import ParamsError, validate_params

    past = {"maximum": lambda v: v + 1, "exclusiveMinimum": lambda v: v, "minimum": lambda v: v - 1,
            "maxLength": lambda n: "x" * (n + 1), "minLength": lambda n: "x" * (n - 1),
            "maxItems": lambda n: [{"name": "mock"}] * (n + 1)}
    checked = 0
    for name in dag.params:
        param = dag.params.get_param(name)
        for bound in set(param.schema) & set(past):
            bad = past[bound](param.schema[bound])
            with pytest.raises(ParamValidationError):
                param.resolve(bad)
            with pytest.raises(ParamsError, match=f"param {name}"):
                validate_params({name: bad})
            checked += 1
    assert checked >= 20


def test_the_own_job_dag_params_are_the_models_with_its_own_defaults():
    from airflow.dag_processing.dagbag import DagBag

    from carbon_aware.planning.params import validate_params

    own = DagBag(dag_folder=str(REPO_ROOT / "dags" / "carbon_own_job.py")).dags["carbon_own_job"]
    run = validate_params({name: own.params[name] for name in own.params if name != "steps"})
    assert run.baseline == "off" and run.interruptible is True and run.time_compression == 3600
    assert own.params.get_param("baseline").schema == {"enum": ["off"]}
    assert own.params.get_param("job_duration_hours").schema["type"] == "number"  # the job has a duration
    assert own.params.get_param("steps").schema == {"type": "integer", "minimum": 1}


def test_generated_params_refuse_names_the_model_does_not_have():
    from airflow.sdk import Param

    from carbon_aware.operators.params import dag_params
    from carbon_aware.planning.params import param_schemas

    with pytest.raises(ValueError, match="not RunParams fields: steps"):
        param_schemas(["deadline_hours", "steps"])
    with pytest.raises(ValueError, match="not included: baseline"):
        param_schemas(["deadline_hours"], {"baseline": {"default": "off"}})
    with pytest.raises(ValueError, match="may not reuse RunParams' names: baseline"):
        dag_params(["deadline_hours"], job_params={"baseline": Param("x", type="string")})


def test_dag_file_parses_fast_without_torch():
    code = ("import sys, time; import airflow.sdk; t = time.perf_counter(); "
            "import runpy; runpy.run_path('dags/carbon_training.py'); elapsed = time.perf_counter() - t; "
            "heavy = [m for m in ('torch', 'pandas', 'requests', 'matplotlib', 'numpy') "
            "if m in sys.modules]; "
            "print(elapsed, heavy)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True,
                         timeout=120)
    elapsed, heavy = out.stdout.strip().split(" ", 1)
    assert float(elapsed) < 1.0 and heavy == "[]", out.stdout + out.stderr


# --- the sensor ---------------------------------------------------------------------------------------

class _TI:
    """The task instance a sensor sees: the plan task's XCom, its own XComs, its try and reschedules."""

    try_number = 1
    dag_id, run_id = "carbon_training", "manual__sensor"

    def __init__(self, plan, first_reschedule=None):
        self.plan, self.first_reschedule, self.pushed = plan, first_reschedule, {}

    def xcom_pull(self, task_ids, key="return_value"):
        return self.plan if task_ids == "plan_window" else self.pushed.get((task_ids, key))

    def xcom_push(self, key, value):
        self.pushed[("wait_for_window", key)] = json.loads(json.dumps(value))

    def get_first_reschedule_date(self, context):
        return self.first_reschedule


def _sensor(**kwargs):
    from carbon_aware.sensors.window import CarbonWindowSensor

    return CarbonWindowSensor(task_id="wait_for_window", **kwargs)


def test_sensor_defers_until_the_planned_moment_bounded_by_the_deadline():
    from airflow.sdk.exceptions import TaskDeferred

    now = datetime.now(timezone.utc)
    plan = make_plan(trace_params(time_compression=1.0), "test-run", now=now)
    ti = _TI(plan)
    with pytest.raises(TaskDeferred) as deferred:
        _sensor().execute({"ti": ti})
    trigger = deferred.value.trigger
    assert datetime.fromisoformat(trigger.moment) == datetime.fromisoformat(plan["start"])
    latest_start = datetime.fromisoformat(plan["deadline"]) - timedelta(hours=1)
    assert deferred.value.timeout <= latest_start - now + timedelta(minutes=5)
    assert deferred.value.method_name == "execute_complete"
    # The trigger carries the moment only (as the standard DateTimeTrigger): the plan, with its curve,
    # waits in the sensor's own XCom, which Airflow keeps across a deferral.
    classpath, kwargs = trigger.serialize()
    assert classpath == "carbon_aware.triggers.window.CarbonWindowTrigger"
    assert kwargs == {"moment": trigger.moment, "payload": {}} and len(json.dumps(kwargs)) < 200
    assert len(json.dumps(plan["curve"])) > 1000  # what the trigger used to carry
    assert ti.pushed[("wait_for_window", "wait")]["plan"] == plan


def test_trigger_fires_at_its_moment_and_the_sensor_resumes():
    from carbon_aware.triggers.window import CarbonWindowTrigger

    plan = make_plan(trace_params(), "test-run")
    moment = datetime.now(timezone.utc) + timedelta(seconds=1.5)
    trigger = CarbonWindowTrigger(moment.isoformat())
    ti = _TI(plan)
    ti.xcom_push("wait", {"plan": plan, "started_at": datetime.now(timezone.utc).isoformat()})

    async def first_event():
        async for event in trigger.run():
            return event

    began = time.monotonic()
    event = asyncio.run(first_event())
    assert 1.0 < time.monotonic() - began < 5.0
    result = _sensor().execute_complete({"ti": ti}, event.payload)
    assert result["plan"]["start"] == plan["start"] and result["replans"] == []
    assert result["waited_seconds"] >= 1.0


def test_compressed_wait_does_not_compress_the_scheduler_lag_after_the_trigger_fired():
    from carbon_aware.clock import Clock

    plan = make_plan(trace_params(time_compression=3600.0), "test-run")
    started = datetime.now(timezone.utc) - timedelta(seconds=5)
    # the trigger fired 3 s into the wait, the task resumed ~2 s later
    fired = started + timedelta(seconds=3)
    result = _sensor()._on_wake({"ti": _TI(plan)}, plan, started.isoformat(), fired_at=fired)
    clock = Clock.from_plan(plan, started=started)
    lag = datetime.fromisoformat(result["woke_at"]) - fired
    # 3 grid hours + ~2 real seconds
    assert datetime.fromisoformat(result["woke_at_grid"]) == clock.grid(fired) + lag
    assert (clock.grid(datetime.fromisoformat(result["woke_at"]))
            - datetime.fromisoformat(result["woke_at_grid"]) > timedelta(hours=1))


def test_a_wait_shorter_than_a_deferral_is_slept_in_the_worker():
    plan = make_plan(trace_params(time_compression=3600.0), "test-run")
    plan["clock"]["compression"] = compression_for_wait(plan, 1.5)  # the window is 1.5 real seconds away
    began = time.monotonic()
    result = _sensor().execute({"ti": _TI(plan)})  # no TaskDeferred
    assert 1.3 < time.monotonic() - began < 5 and result["waited_seconds"] >= 1.3


def test_a_start_in_the_past_does_not_defer():
    plan = make_plan(trace_params(), "test-run", now=datetime.now(timezone.utc) - timedelta(hours=2))
    plan["start"] = plan["earliest_start"]
    result = _sensor().execute({"ti": _TI(plan)})
    assert result["waited_seconds"] >= 0 and "woke_at" in result


# --- the sensor without deferring: poke and reschedule modes, timeout, soft_fail ------------------------

def _future_plan():
    return make_plan(trace_params(time_compression=1.0), "test-run", now=datetime.now(timezone.utc))


def test_a_poking_sensor_returns_the_wake_once_the_window_has_opened():
    from airflow.sdk import PokeReturnValue

    plan = make_plan(trace_params(), "test-run", now=datetime.now(timezone.utc) - timedelta(hours=2))
    plan["start"] = plan["earliest_start"]
    sensor = _sensor(deferrable=False, mode="poke", poke_interval=0.1)
    poked = sensor.poke({"ti": _TI(plan)})
    assert isinstance(poked, PokeReturnValue) and poked.is_done
    assert poked.xcom_value["plan"]["start"] == plan["start"] and "woke_at" in poked.xcom_value
    result = _sensor(deferrable=False, mode="poke", poke_interval=0.1).execute({"ti": _TI(plan)})
    assert result["replans"] == [] and result["waited_seconds"] >= 0  # the loop returns the xcom_value


def test_a_poking_sensor_times_out_or_skips_with_soft_fail():
    from airflow.sdk.exceptions import AirflowSensorTimeout

    from carbon_aware.compat import AirflowSkipException

    plan = _future_plan()
    assert datetime.fromisoformat(plan["start"]) > datetime.now(timezone.utc) + timedelta(minutes=1)
    assert _sensor(deferrable=False, mode="poke").poke({"ti": _TI(plan)}) is False
    began = time.monotonic()
    with pytest.raises(AirflowSensorTimeout):
        _sensor(deferrable=False, mode="poke", poke_interval=0.1, timeout=0.3).execute({"ti": _TI(plan)})
    assert time.monotonic() - began < 5
    with pytest.raises(AirflowSkipException):
        _sensor(deferrable=False, mode="poke", poke_interval=0.1, timeout=0.3,
                soft_fail=True).execute({"ti": _TI(plan)})


def test_a_rescheduled_sensor_frees_its_slot_and_keeps_its_start_between_pokes():
    from airflow.sdk.exceptions import AirflowRescheduleException

    plan = _future_plan()
    first = datetime.now(timezone.utc) - timedelta(minutes=3)
    with pytest.raises(AirflowRescheduleException):
        _sensor(deferrable=False, mode="reschedule", poke_interval=60).execute(
            {"ti": _TI(plan, first_reschedule=first)})
    # each poke is a fresh task run, maybe on another worker: a re-plan is kept in the records, per try
    sensor = _sensor(deferrable=False, mode="reschedule")
    moved = {**plan, "start": (datetime.fromisoformat(plan["start"]) + timedelta(hours=1)).isoformat()}
    sensor._keep({"ti": _TI(plan)}, {"plan": moved, "started_at": first.isoformat()})
    again = _sensor(deferrable=False, mode="reschedule")._waiting({"ti": _TI(plan, first_reschedule=first)})
    assert again == {"plan": json.loads(json.dumps(moved)), "started_at": first.isoformat()}
    retry = _TI(plan, first_reschedule=first)
    retry.try_number = 2  # a retry waits on the plan task's plan again
    assert _sensor(deferrable=False, mode="reschedule")._waiting({"ti": retry})["plan"] == plan


def test_a_deferred_wait_is_bounded_by_the_sensor_timeout_too():
    from airflow.sdk.exceptions import TaskDeferred

    with pytest.raises(TaskDeferred) as deferred:
        _sensor(timeout=600).execute({"ti": _TI(_future_plan())})
    assert timedelta(seconds=590) < deferred.value.timeout <= timedelta(seconds=600)


def uk_rows(start, hours, forecast, actual=None):
    rows = []
    for i in range(hours * 2):
        a, b = start + timedelta(minutes=30 * i), start + timedelta(minutes=30 * (i + 1))
        rows.append({"from": a.strftime("%Y-%m-%dT%H:%MZ"), "to": b.strftime("%Y-%m-%dT%H:%MZ"),
                     "intensity": {"forecast": forecast(i), "actual": actual(i) if actual else None,
                                   "index": "moderate"}})
    return rows


def test_sensor_replans_when_the_actual_runs_above_the_forecast_and_defers_again():
    from airflow.sdk.exceptions import TaskDeferred

    now = datetime.now(timezone.utc)
    slot = now.replace(minute=0 if now.minute < 30 else 30, second=0, microsecond=0)
    with FakeProviderServer() as server:
        # First forecast: the first hour is cleanest. Later the grid reports 2x that, and a new
        # forecast puts the clean window four hours out.
        server.script(f"/intensity/{slot:%Y-%m-%dT%H:%MZ}/fw48h",
                      Reply({"data": uk_rows(slot, 30, lambda i: 100 if i < 2 else 300)}),
                      Reply({"data": uk_rows(slot, 30, lambda i: 300 if i < 8 else 90)}))
        server.script(f"/intensity/{(slot + timedelta(minutes=1)):%Y-%m-%dT%H:%MZ}",  # the half hour now
                      Reply({"data": uk_rows(slot, 1, lambda i: 300, actual=lambda i: 250)[:1]}))
        params = trace_params(providers=[{"name": "uk", "conn_id": neso(server)}], time_compression=1.0,
                              replan_tolerance_pct=20)
        plan = make_plan(params, "test-run", now=now)
        assert datetime.fromisoformat(plan["start"]) == now
        ti = _TI(plan)
        with pytest.raises(TaskDeferred):
            _sensor()._on_wake({"ti": ti}, plan, now.isoformat())
    replanned = ti.pushed[("wait_for_window", "wait")]["plan"]  # what the sensor resumes with
    assert len(replanned["replans"]) == 1
    record = replanned["replans"][0]
    assert record["current_g_per_kwh"] == 250 and record["forecast_g_per_kwh"] == 100
    assert datetime.fromisoformat(replanned["start"]) == slot + timedelta(hours=4)
    assert (datetime.fromisoformat(replanned["start"]) + timedelta(hours=1)
            <= datetime.fromisoformat(plan["deadline"]))


def test_bad_params_fail_with_the_param_name():
    with pytest.raises(ParamsError, match="param job_duration_hours|deadline_hours"):
        make_plan(trace_params(job_duration_hours=13), "x")
    with pytest.raises(ParamsError, match="param baseline_config"):
        make_plan(trace_params(baseline_config="missing.yaml"), "x")
    with pytest.raises(ParamsError, match="training_overrides: .0.: 'training.bogus' may not be set"):
        make_plan(trace_params(training_overrides=["training.bogus=1"]), "x")
    with pytest.raises(ParamsError, match="param providers"):
        make_plan(trace_params(providers=[{"name": "electricitymaps", "zone": "DE", "token": "abc"}]), "x")
    with pytest.raises(ParamsError, match="param time_compression"):
        make_plan(trace_params(time_compression=0.5), "x")
    with pytest.raises(ParamsError, match="param baseline: .*cached.*every_run.*off"):
        make_plan(trace_params(baseline="sometimes"), "x")
    with pytest.raises(ParamsError, match="param run_baseline: unknown param .replaced by baseline"):
        make_plan(trace_params(run_baseline=False), "x")


# --- the whole DAG ------------------------------------------------------------------------------------

def _dags_test(env, conf):
    airflow = str(Path(sys.executable).parent / "airflow")
    return subprocess.run([airflow, "dags", "test", "carbon_training", "-c", json.dumps(conf)],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.integration
def test_dag_test_end_to_end_report_agrees_with_summaries_and_curve(airflow_db):
    compression = compression_for_wait(make_plan(trace_params(), "probe"), 25)  # a 25 s wait: it defers
    out = _dags_test(airflow_db, trace_params(time_compression=compression, baseline="every_run"))
    log = out.stdout + out.stderr
    assert out.returncode == 0 and "state=success" in log, log[-4000:]
    assert "deferring until" in log and "woke at" in log  # a real, short wait through the trigger
    run_id = log.split("DagRun Finished:")[1].split("run_id=")[1].split(",")[0]
    from carbon_aware.outputs import run_dir_for
    from carbon_aware.records.jobs import RecordsEnergyLog, summary_of
    from carbon_aware.records.reports import report_of

    report = report_of("carbon_training", run_id)  # as the report task stored it
    local = run_dir_for(run_id, "carbon_training")  # this machine's folder for the run (every task's)
    run_dir = local
    plan = json.loads((local / "plan.json").read_text())
    baseline = json.loads((run_dir / "baseline" / "summary.json").read_text())
    optimized = json.loads((run_dir / "optimized" / "summary.json").read_text())
    assert (local / "comparison.png").stat().st_size > 10_000
    objects = local.parent.parent / "objects" / "carbon_training" / local.name  # the default store
    assert report["files"]["plot"] == f"file://{objects}/comparison.png"
    # The trainer is measured from outside, as any command: its own meter is off, the job's energy log
    # counts.
    assert baseline["energy"] is None and optimized["energy"] is None
    measured = {name: RecordsEnergyLog("carbon_training", run_id, name).read()[-1]["kwh"]
                for name in ("baseline", "optimized")}
    stored = summary_of("carbon_training", run_id, "optimized")
    assert stored["energy"]["energy_kwh"] == measured["optimized"]
    assert report["efficiency"]["baseline_energy_kwh"] == pytest.approx(measured["baseline"], rel=1e-6)
    assert report["efficiency"]["optimized_energy_kwh"] == pytest.approx(measured["optimized"], rel=1e-6)
    assert report["accuracy_impact"]["optimized_accuracy"] == optimized["final_test_accuracy_pct"]
    assert report["memory_savings"]["baseline_memory_mb"] == baseline["peak_memory_mb"]
    t, e, c = report["timing"], report["efficiency"], report["carbon_savings"]
    assert report["baseline_kind"] == "measured" and report["baseline"]["measurement_cost_kg"] > 0
    for name, block in report["intensities"].items():  # every interval priced, and they add up
        if isinstance(block, dict):
            grams = sum(i["kwh"] * i["g_per_kwh"] for i in block["intervals"])
            assert grams == pytest.approx(block["emissions_g"], rel=0.01), name
            assert sum(i["kwh"] for i in block["intervals"]) == pytest.approx(block["energy_kwh"], rel=1e-6)
    assert c["baseline_emissions_kg"] * 1000 == pytest.approx(
        report["intensities"]["baseline"]["emissions_g"]
    )
    curve = [p["g_per_kwh"] for p in plan["curve"]]
    assert min(curve) * 0.5 <= t["chosen_window_intensity_g_per_kwh"] <= max(curve) * 1.5
    assert (report["schedule"]["planned_start"] == plan["start"]
            and report["sources"]["forecast"] == plan["source"])
    assert "saving:" in log and "timing" in log and "efficiency" in log  # the table in the task log


@pytest.mark.integration
def test_bad_params_fail_the_first_task_before_any_wait(airflow_db):
    out = _dags_test(airflow_db, trace_params(training_overrides=["training.batch_size=0"]))
    log = out.stdout + out.stderr
    assert "training.batch_size" in log and "greater than or equal to 1" in log
    assert "launching " not in log and "deferring until" not in log
    assert "state=failed" in log


@pytest.mark.integration
def test_without_baseline_the_report_shows_timing_only(airflow_db):
    out = _dags_test(airflow_db, trace_params(baseline="off"))
    log = out.stdout + out.stderr
    assert out.returncode == 0 and "state=success" in log, log[-4000:]
    run_id = log.split("DagRun Finished:")[1].split("run_id=")[1].split(",")[0]
    from carbon_aware.outputs import run_dir_for

    from carbon_aware.records.reports import report_of

    report = report_of("carbon_training", run_id)
    assert report["runs"]["baseline"] is None and report["baseline_kind"] == "off"
    assert report["efficiency"]["saving_kg"] is None and report["efficiency"]["baseline_energy_kwh"] is None
    assert report["carbon_savings"]["reduction_kg"] == pytest.approx(report["timing"]["saving_kg"])
    assert not (run_dir_for(run_id, "carbon_training") / "baseline").exists()


def test_the_installed_provider_registers_its_connection_types_and_the_carbon_page():
    """Airflow finds the provider through its entry point (no files copied into plugins/)."""
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    assert "airflow-provider-carbon-aware" in manager.providers
    for conn_type in ("electricitymaps", "watttime", "carbon_aware_sdk", "neso"):
        assert conn_type in manager.hooks, conn_type
    plugins = {plugin.name: plugin.plugin_class for plugin in manager.plugins}
    assert plugins["carbon_page"] == "carbon_aware.plugins.carbon_page.CarbonPagePlugin"
    # ...and Airflow loads the page with its default settings (lazy-loaded providers), from no plugins folder
    airflow = str(Path(sys.executable).parent / "airflow")
    out = subprocess.run([airflow, "plugins", "-o", "json"], capture_output=True, text=True, timeout=120)
    loaded = {plugin["name"]: plugin for plugin in json.loads(out.stdout)}
    assert "/carbon" in str(loaded["carbon_page"]["fastapi_apps"]), out.stdout[-2000:] + out.stderr[-2000:]


# --- fixes: re-plan on a trace, deadline past the horizon, refused secrets ------------------------------

def test_a_replan_on_a_trace_sees_the_slots_of_its_own_moment_not_the_anchors():
    from carbon_aware.grid.clients.trace import TraceProvider
    from carbon_aware.planning.plan import check_window

    anchor = datetime(2026, 11, 24, 0, 0, tzinfo=timezone.utc)
    plan = make_plan(
        trace_params(time_compression=1.0, replan_tolerance_pct=0, deadline_hours=24), "replan", now=anchor
    )
    grid_now = anchor + timedelta(hours=5)
    # the grid now runs far above "the forecast": the sensor re-plans
    plan["curve"] = [{**p, "g_per_kwh": 1.0} for p in plan["curve"]]
    updated, check = check_window(plan, grid_now)
    assert check is not None and check["decision"].startswith("re-planned"), check
    replay = TraceProvider.replaying(
        CARBON_DIR.parent / NESO, real_now=anchor, trace_now=datetime(2023, 3, 1, 6, tzinfo=timezone.utc)
    )
    truth = replay.forecast(grid_now, timedelta(hours=19)).points
    seen = [(p["start"], p["g_per_kwh"]) for p in updated["curve"]]
    # 11:00 of the trace day (anchor + 5 h), not 06:00 (the anchor's slots)
    assert seen[:12] == [(p.start.isoformat(), p.value) for p in truth[:12]]
    at_anchor = replay.forecast(anchor, timedelta(hours=19)).points
    assert [v for _s, v in seen[:12]] != [p.value for p in at_anchor[:12]]


def test_a_deadline_past_the_forecast_horizon_plans_within_it_and_says_so():
    now = datetime.now(timezone.utc)
    slot = now.replace(minute=0 if now.minute < 30 else 30, second=0, microsecond=0)
    with FakeProviderServer() as server:  # fw48h from the current slot: it ends before now + 48 h
        server.script(
            f"/intensity/{slot:%Y-%m-%dT%H:%MZ}/fw48h",
            Reply({"data": uk_rows(slot, 48, lambda i: 400 - 4 * i)}),
        )
        plan = make_plan(trace_params(providers=[{"name": "uk", "conn_id": neso(server)}], deadline_hours=48,
                                      time_compression=1.0), "horizon", now=now)
    assert plan["source"] == "uk" and plan["fallback_reasons"] == []
    assert "before the deadline" in plan["horizon_note"] and "planned within its horizon" in plan["summary"]
    # the cleanest hour is the forecast's last
    assert datetime.fromisoformat(plan["end"]) == slot + timedelta(hours=48)


@pytest.mark.integration
def test_a_refused_token_is_never_echoed_into_the_log(airflow_db):
    secret = "SUPER-SECRET-123"
    out = _dags_test(
        airflow_db, trace_params(providers=[{"name": "electricitymaps", "zone": "DE", "token": secret}])
    )
    log = out.stdout + out.stderr
    assert "secrets (token) do not belong in params" in log and "state=failed" in log
    assert "plan_window" in log and secret not in log  # dags test streams the task's log here


def test_a_trace_that_is_not_there_is_an_error_naming_the_param_never_the_mock_curve():
    missing = r"param providers: providers\[0\]\.path: no file 'carbon/nope\.csv' in "
    with pytest.raises(ParamsError, match=missing):
        make_plan(trace_params(providers=[{"name": "trace", "path": "carbon/nope.csv"}]), "x")
    outside = (r"param providers\[0\]\.replay_start: 2030-03-01T06:00:00Z is outside "
               r"carbon/neso.*, which runs from 2022-12-31 23:30 to 2024-01-01")
    with pytest.raises(ParamsError, match=outside):
        make_plan(trace_params(providers=[{"name": "trace", "path": NESO,
                                           "replay_start": "2030-03-01T06:00:00Z"}]), "x")


def test_a_plan_on_the_mock_curve_says_it_has_no_real_signal():
    plan = make_plan(trace_params(providers=[{"name": "mock"}]), "x", trainer_configs=False)
    assert plan["no_real_signal"] == ("no real signal: the plan used the mock curve (the providers name the "
                                      "mock curve); no saving is counted for this run")
    first, *rest = plan["summary"].splitlines()
    assert first.endswith("[no real signal]") and rest[-1] == plan["no_real_signal"]
    assert make_plan(trace_params(), "x", trainer_configs=False)["no_real_signal"] is None


def test_a_replayed_trace_plan_shows_the_traces_own_time_beside_the_grid_time():
    now = datetime(2026, 12, 3, 6, 0, tzinfo=timezone.utc)
    plan = make_plan(trace_params(), "x", now=now, trainer_configs=False)
    offset = timedelta(seconds=plan["replay"]["offset_seconds"])
    assert plan["replay"]["trace"] == "neso_2023_national_intensity.csv"
    assert now + offset == datetime(2023, 3, 1, 6, 0, tzinfo=timezone.utc)  # replay_start is now
    start = datetime.fromisoformat(plan["start"])
    trace_start = start + offset
    assert (f"window starts {start:%Y-%m-%d %H:%M} UTC (trace {trace_start:%Y-%m-%d %H:%M}) at"
            in plan["summary"])
    assert "deadline 2026-12-03 18:00 UTC (trace 2023-03-01 18:00)" in plan["summary"]
    assert make_plan(trace_params(providers=[{"name": "mock"}]), "x", trainer_configs=False)["replay"] is None


def test_the_job_operators_take_airflows_default_pool_and_the_dags_choose_gpu(dag):
    from airflow.dag_processing.dagbag import DagBag
    from airflow.models.pool import Pool

    from carbon_aware import CarbonJobOperator, CarbonTrainerOperator

    assert CarbonJobOperator(task_id="job", command=["true"]).pool == Pool.DEFAULT_POOL_NAME
    assert CarbonTrainerOperator(task_id="train").pool == Pool.DEFAULT_POOL_NAME
    assert CarbonJobOperator(task_id="own", command=["true"], pool="gpu").pool == "gpu"
    own = DagBag(dag_folder=str(REPO_ROOT / "dags" / "carbon_own_job.py")).dags["carbon_own_job"]
    assert own.get_task("train").pool == "gpu" and dag.get_task("train_optimized").pool == "gpu"
