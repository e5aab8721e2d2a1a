"""Routing a run to a region's Celery queue: the choice when the planned region's worker is down, and the
DAG's shape with a regions file (one training task per region, on its queue, behind a route)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
import yaml

from carbon_aware.planning.regions import choose_route
from tests.conftest import CARBON_DIR, REPO_ROOT

NOW = datetime(2026, 3, 1, 6, tzinfo=timezone.utc)


def plan(duration_b: float = 1.0) -> dict:
    return {"region": "a", "deadline": (NOW + timedelta(hours=4)).isoformat(), "ranking": ["a", "b", "c"],
            "regions": [{"name": "a", "queue": "qa", "duration_hours": 1.0},
                        {"name": "b", "queue": "qb", "duration_hours": duration_b},
                        {"name": "c", "queue": "qc", "duration_hours": 1.0}]}


def test_the_planned_region_when_its_worker_is_live_or_the_executor_has_no_queues():
    assert choose_route(plan(), NOW, {"qa", "qb"})["region"] == "a"
    assert choose_route(plan(), NOW, None)["region"] == "a"  # LocalExecutor, dags test


def test_with_the_planned_worker_down_it_waits_while_the_next_best_can_still_finish_then_falls_back():
    live = {"qc", "qb"}
    assert choose_route(plan(), NOW, live) is None  # 4 h to the deadline: wait
    assert choose_route(plan(), NOW + timedelta(hours=2, minutes=59), live) is None
    route = choose_route(plan(), NOW + timedelta(hours=3), live)  # b (ranked before c) must start now
    assert route["region"] == "b" and route["fallback"] and "fell back to b" in route["reason"]
    assert route["last_chance"] == (NOW + timedelta(hours=3)).isoformat()
    # A slower fallback region has to be started earlier; a margin decides one check early.
    assert choose_route(plan(duration_b=2.0), NOW + timedelta(hours=2), live)["region"] == "b"
    early = choose_route(plan(), NOW + timedelta(hours=2, minutes=50), live, timedelta(minutes=10))
    assert early["region"] == "b"


def test_no_live_worker_anywhere_queues_for_the_planned_region():
    route = choose_route(plan(), NOW + timedelta(hours=3, minutes=30), set())
    assert route["region"] == "a" and not route["fallback"]
    assert "no region has a live worker" in route["reason"]


def test_with_a_regions_file_the_dag_has_one_training_task_per_region_on_its_queue(tmp_path, monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    trace = str(CARBON_DIR / "electricitymaps_via_green-dcc" / "GB_2023_hourly.csv")
    path = tmp_path / "regions.yaml"
    path.write_text(yaml.safe_dump({"regions": [
        {"name": "home", "queue": "training-home", "providers": [{"name": "trace", "path": trace}]},
        {"name": "far.away", "queue": "training-far", "providers": [{"name": "mock"}]}]}))
    monkeypatch.setenv("CARBON_REGIONS_FILE", str(path))
    bag = DagBag(dag_folder=str(REPO_ROOT / "dags" / "carbon_training.py"))
    assert bag.import_errors == {}
    dag = bag.dags["carbon_training"]
    assert dag.get_task("train_optimized_home").queue == "training-home"
    assert dag.get_task("train_optimized_far.away").queue == "training-far"
    assert dag.get_task("train_baseline").queue == "training-home"  # the home region measures the baseline
    assert dag.get_task("choose_region").upstream_task_ids == {"wait_for_window"}
    assert dag.get_task("route").downstream_task_ids == {"train_optimized_home", "train_optimized_far.away"}
    assert dag.get_task("report").trigger_rule == "all_done"

    empty_queue = {"name": "home", "queue": "", "providers": [{"name": "mock"}]}
    path.write_text(yaml.safe_dump({"regions": [empty_queue]}))
    broken = DagBag(dag_folder=str(REPO_ROOT / "dags" / "carbon_training.py"))
    [error] = broken.import_errors.values()
    assert "regions[0].queue" in error  # validated at parse time, naming the field


@pytest.mark.parametrize("name", ["a b", ""])
def test_region_names_that_cannot_name_a_task_are_refused(tmp_path, name):
    from carbon_aware.planning.regions import RegionsError, load_regions

    path = tmp_path / "regions.yaml"
    region = {"name": name, "queue": "q", "providers": [{"name": "mock"}]}
    path.write_text(yaml.safe_dump({"regions": [region]}))
    with pytest.raises(RegionsError, match=r"regions\[0\]\.name"):
        load_regions(path)

