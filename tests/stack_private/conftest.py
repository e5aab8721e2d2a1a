"""The Celery stack as on separate machines (its own package: its stack runs alone, after the others).

Every component and every worker in a directory of its own; what they share is PostgreSQL (Airflow's
database and the records' database ``carbon``), Redis and an S3 server on 127.0.0.1 (moto). Two regions
replay real 2023 traces (DE-LU home, GB), one training worker per region, and a second worker on the
queue of the region the plan chooses: a worker killed there has its task retried on the other."""
import json
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.stack.services import cleared, running_stack
from tests.stack_regions.conftest import REGIONS, regions_conf, regions_file

LOCAL_BUNDLE = "airflow.dag_processing.bundles.local.LocalDagBundle"
BUNDLES = [{"name": "dags-folder", "classpath": LOCAL_BUNDLE, "kwargs": {"path": str(REPO_ROOT / "dags")}},
           {"name": "stack-probes", "classpath": LOCAL_BUNDLE,
            "kwargs": {"path": str(REPO_ROOT / "tests" / "stack" / "probe_dags")}}]


run_conf = regions_conf


def planned_region(regions: Path) -> str:
    """The region the DAG's own planner chooses for ``run_conf()`` (the traces make it the same for
    every run of these tests)."""
    import os

    from carbon_aware.planning.plan import make_plan

    before = os.environ.get("CARBON_REGIONS_FILE")
    os.environ["CARBON_REGIONS_FILE"] = str(regions)
    try:
        return make_plan(run_conf(), "probe")["region"]
    finally:
        if before is None:
            del os.environ["CARBON_REGIONS_FILE"]
        else:
            os.environ["CARBON_REGIONS_FILE"] = before


def second_worker(region: str) -> str:
    return f"{REGIONS[region][2]}-2"


@pytest.fixture(scope="package")
def private_stack(tmp_path_factory):
    regions = regions_file(tmp_path_factory.mktemp("deployment") / "regions.yaml")
    chosen = planned_region(regions)
    workers = {worker: (queue, name) for name, (_trace, queue, worker) in REGIONS.items()}
    workers[second_worker(chosen)] = (REGIONS[chosen][1], chosen)
    extra_env = {"AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps(BUNDLES),
                 "CARBON_REGIONS_FILE": str(regions),
                 "CARBON_TRAINING_QUEUE": REGIONS[chosen][1]}  # the probe DAG's second task
    with running_stack("carbon-private-stack-", private=True, region_workers=workers,
                       extra_env=extra_env) as stack:
        stack.chosen_region = chosen
        yield stack


@pytest.fixture(autouse=True)
def clean_stack(private_stack):
    yield cleared(private_stack)
