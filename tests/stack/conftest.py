import json

import pytest

from tests.conftest import CARBON_DIR, REPO_ROOT, compression_for_wait
from tests.stack.services import cleared, running_stack

NESO_TRACE = CARBON_DIR / "neso_carbon_intensity_api" / "neso_2023_national_intensity.csv"
REPLAY_START = "2023-03-01T06:00:00Z"
TEST_CONFIG = "test.yaml"  # a file in the config folder (CARBON_CONFIG_DIR)
LOCAL_BUNDLE = "airflow.dag_processing.bundles.local.LocalDagBundle"
LEDGER_DAGS = ("ordinary_ledger", "ordinary_untagged", "ordinary_spin")  # tests/stack/ledger_dags
LEDGER_DEADLINE_HOURS = 12
# The deployment's carbon-ledger settings: the replayed NESO trace is the grid, readings every second,
# and a fixed shadow deadline (the DAG's next scheduled run would depend on the time of day).
LEDGER_ENV = {
    "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps([
        {"name": "dags-folder", "classpath": LOCAL_BUNDLE, "kwargs": {"path": str(REPO_ROOT / "dags")}},
        {"name": "ledger-dags", "classpath": LOCAL_BUNDLE,
         "kwargs": {"path": str(REPO_ROOT / "tests" / "stack" / "ledger_dags")}}]),
    "AIRFLOW__CARBON_AWARE__LEDGER_PROVIDERS": json.dumps(
        [{"name": "trace", "path": str(NESO_TRACE), "replay_start": REPLAY_START}]),
    "AIRFLOW__CARBON_AWARE__LEDGER_READING_SECONDS": "1",
    "AIRFLOW__CARBON_AWARE__LEDGER_DEADLINES": f"ordinary_ledger={LEDGER_DEADLINE_HOURS}",
}


@pytest.fixture(scope="package")
def stack():
    """One stack for the tests of this package: started once, every process stopped and the data
    removed when they are done (before the rest of the suite runs)."""
    with running_stack("carbon-stack-", extra_env=LEDGER_ENV) as airflow:
        for dag_id in LEDGER_DAGS:
            airflow.unpause(dag_id)
        yield airflow


@pytest.fixture(autouse=True)
def clean_stack(stack):
    """Each stack test starts from a clean state, whatever the one before left behind."""
    yield cleared(stack)


def trace_conf(wait_seconds: float, **extra) -> dict:
    """A run that replays the real NESO 2023 trace, compressed so that the planned wait takes
    ``wait_seconds``."""
    from carbon_aware.planning.plan import make_plan

    conf = {"providers": [{"name": "trace", "path": str(NESO_TRACE), "replay_start": REPLAY_START}],
            "job_duration_hours": 1, "deadline_hours": 24, "baseline_config": TEST_CONFIG,
            "optimized_config": TEST_CONFIG}
    # the DAG's own planner
    conf["time_compression"] = compression_for_wait(make_plan(conf, "probe"), wait_seconds)
    conf.update(extra)
    return conf


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the test item, so fixtures can tell whether the test failed."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
