"""A second stack, on its own, for regions: the same compose services as processes, with a regions file
(two regions replaying real 2023 traces) and one training worker per region, each consuming its region's
queue with CARBON_REGION set. Started after tests/stack's stack is gone (a package of its own)."""
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import yaml

from tests.conftest import CARBON_DIR
from tests.stack.services import AirflowStack

EM = CARBON_DIR / "electricitymaps_via_green-dcc"
REPLAY_START = "2023-03-01T06:00:00Z"
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


@pytest.fixture(scope="package")
def regions_stack():
    root = Path(tempfile.mkdtemp(prefix="carbon-regions-stack-"))
    os.chmod(root, 0o755)
    path = regions_file(root / "regions.yaml")
    stack = AirflowStack(root, extra_env={"CARBON_REGIONS_FILE": str(path)},
                         region_workers={worker: (queue, name)
                                         for name, (_trace, queue, worker) in REGIONS.items()})
    try:
        stack.start()
        yield stack
    except BaseException:
        print(stack.diagnostics())
        raise
    finally:
        stack.stop()
        if os.environ.get("CARBON_KEEP_STACK"):
            print(f"stack files kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(autouse=True)
def clean_regions_stack(regions_stack):
    cleared = regions_stack.clear()
    if cleared:
        print("before this test:", "; ".join(cleared))
    yield regions_stack
