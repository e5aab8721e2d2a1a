"""A second stack, on its own, for regions: the same compose services as processes, with a regions file
(two regions replaying real 2023 traces) and one training worker per region, each consuming its region's
queue with CARBON_REGION set. Started after tests/stack's stack is gone (a package of its own)."""
from pathlib import Path

import pytest
import yaml

from tests.conftest import CARBON_DIR
from tests.stack.services import cleared, running_stack

EM = CARBON_DIR / "electricitymaps_via_green-dcc"
REPLAY_START = "2023-03-01T06:00:00Z"
TEST_CONFIG = "test.yaml"  # a file in the config folder (CARBON_CONFIG_DIR)
# region -> (trace, queue, worker component)
REGIONS = {"de": ("DE-LU_2023_hourly.csv", "training-de", "airflow-worker-de"),
           "gb": ("GB_2023_hourly.csv", "training-gb", "airflow-worker-gb")}


def regions_file(path: Path) -> Path:
    document = {"regions": [
        {"name": name, "queue": queue,
         "providers": [{"name": "trace", "path": str(EM / trace), "replay_start": REPLAY_START}]}
        for name, (trace, queue, _worker) in REGIONS.items()
    ]}
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def regions_conf(**extra) -> dict:
    """carbon_training across the two regions; one hour of grid time passes in 30 real seconds."""
    conf = {"job_duration_hours": 1, "deadline_hours": 3, "time_compression": 120,
            "baseline_config": TEST_CONFIG, "optimized_config": TEST_CONFIG,
            "training_overrides": ["training.epochs=1"]}
    conf.update(extra)
    return conf


@pytest.fixture(scope="package")
def regions_stack(tmp_path_factory):
    path = regions_file(tmp_path_factory.mktemp("deployment") / "regions.yaml")
    workers = {worker: (queue, name) for name, (_trace, queue, worker) in REGIONS.items()}
    with running_stack("carbon-regions-stack-", extra_env={"CARBON_REGIONS_FILE": str(path)},
                       region_workers=workers) as stack:
        yield stack


@pytest.fixture(autouse=True)
def clean_regions_stack(regions_stack):
    yield cleared(regions_stack)
