"""Where as well as when, on the real engine: two regions replaying real 2023 traces (DE-LU home, GB),
one Celery training worker per region on its own queue. The run trains on the worker of the region the
plan chose, the other runs none of it, and the report's place + timing + efficiency add up to the
saving. With the chosen region's worker down, the run waits within the deadline and falls back."""
from datetime import datetime

import pytest

from tests.stack.services import stop_process
from tests.stack_regions.conftest import REGIONS, regions_conf

pytestmark = [pytest.mark.integration, pytest.mark.stack, pytest.mark.timeout(900)]

def planned_region(stack, monkeypatch, conf: dict) -> str:
    from carbon_aware.planning.plan import make_plan

    monkeypatch.setenv("CARBON_REGIONS_FILE", stack.extra_env["CARBON_REGIONS_FILE"])
    return make_plan(conf, "probe")["region"]


def worker_log(stack, region: str) -> str:
    return (stack.root / f"{REGIONS[region][2]}.log").read_text()


def test_the_run_trains_on_the_chosen_regions_worker_and_splits_the_saving_three_ways(regions_stack):
    stack = regions_stack
    run_id = stack.trigger(regions_conf(baseline="every_run"))
    run = stack.wait_for_run(run_id, timeout=600)
    assert run["state"] == "success", stack.diagnostics()

    report = stack.xcom(run_id, "report")
    chosen = report["route"]["region"]
    other = next(name for name in REGIONS if name != chosen)
    assert chosen == report["place"]["chosen_region"] and report["route"]["fallback"] is False
    tis = stack.task_instances(run_id)
    assert tis[f"train_optimized_{chosen}"]["state"] == "success"
    assert tis[f"train_optimized_{chosen}"]["queue"] == REGIONS[chosen][1]
    assert tis[f"train_optimized_{other}"]["state"] == "skipped"
    # The worker that ran it is the chosen region's: its log says so, the job summary names it, and only
    # that worker's Celery log saw the task.
    log = stack.log(run_id, f"train_optimized_{chosen}", 1)
    assert f"running on a worker of region {chosen}" in log, log[-3000:]
    assert report["job"]["worker_region"] == chosen
    assert f"train_optimized_{chosen}" in worker_log(stack, chosen)
    assert "train_optimized" not in worker_log(stack, other)

    # Every region's figures are in the report; place + timing + efficiency = the saving, exactly.
    assert {row["name"] for row in report["regions"]} == set(REGIONS)
    place, timing, efficiency = (report[k]["saving_kg"] for k in ("place", "timing", "efficiency"))
    assert place + timing + efficiency == pytest.approx(report["carbon_savings"]["reduction_kg"], rel=1e-9)
    assert report["place"]["home_region"] == "de"
    report_log = stack.log(run_id, "report", 1)
    assert f"trained in region {chosen}" in report_log and "place" in report_log, report_log[-3000:]


def test_with_the_chosen_regions_worker_down_the_run_waits_then_falls_back(regions_stack, monkeypatch):
    stack = regions_stack
    conf = regions_conf(baseline="off")
    planned = planned_region(stack, monkeypatch, conf)
    other = next(name for name in REGIONS if name != planned)
    stop_process(stack.processes[REGIONS[planned][2]])  # the planned region's only worker is down
    run_id = stack.trigger(conf)
    run = stack.wait_for_run(run_id, timeout=600)
    assert run["state"] == "success", stack.diagnostics()

    report = stack.xcom(run_id, "report")
    assert report["schedule"]["planned_start"] and report["place"]["chosen_region"] in REGIONS
    route = stack.xcom(run_id, "choose_region")
    assert route["fallback"] is True and route["region"] == other, route
    # It waited for the planned region's worker as long as the fallback could still finish in time.
    assert datetime.fromisoformat(route["decided_at"]) >= datetime.fromisoformat(route["last_chance"])
    tries = stack.task_instances(run_id)["choose_region"]["try_number"]
    sensor_log = stack.log(run_id, "choose_region", tries)
    assert "fell back to" in sensor_log, sensor_log[-3000:]
    tis = stack.task_instances(run_id)
    assert tis[f"train_optimized_{other}"]["state"] == "success"
    assert tis[f"train_optimized_{planned}"]["state"] == "skipped"
    assert report["job"]["worker_region"] == other and report["route"]["region"] == other
    assert f"fell back to {other}" in stack.log(run_id, "report", 1)
