
import pytest

from tests.conftest import CARBON_DIR, compression_for_wait
from tests.stack.services import cleared, running_stack

NESO_TRACE = CARBON_DIR / "neso_carbon_intensity_api" / "neso_2023_national_intensity.csv"
REPLAY_START = "2023-03-01T06:00:00Z"
TEST_CONFIG = "test.yaml"  # a file in the config folder (CARBON_CONFIG_DIR)


@pytest.fixture(scope="package")
def stack():
    """One stack for the tests of this package: started once, every process stopped and the data
    removed when they are done (before the rest of the suite runs)."""
    with running_stack("carbon-stack-") as airflow:
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
