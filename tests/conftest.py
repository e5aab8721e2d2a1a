import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent

# Airflow reads its settings at import: give the whole test session its own home (SQLite) and output dir.
_SESSION_DIR = Path(tempfile.mkdtemp(prefix="carbon-tests-"))
AIRFLOW_ENV = {
    "AIRFLOW_HOME": str(_SESSION_DIR / "airflow_home"),
    "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
    "AIRFLOW__CORE__PLUGINS_FOLDER": str(_SESSION_DIR / "plugins"),  # the Carbon page comes from the provider
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "CARBON_HOME": str(REPO_ROOT / "include"),
    "CARBON_OUTPUT_DIR": str(_SESSION_DIR / "output"),
}
SHARED_DATA = Path(os.environ.get("CARBON_SHARED_DATA", REPO_ROOT.parent / "shared" / "data")).resolve()
AIRFLOW_ENV["CARBON_DATA_DIR"] = str(SHARED_DATA)
os.environ.update(AIRFLOW_ENV)
MNIST_DIR = SHARED_DATA / "mnist"
CARBON_DIR = SHARED_DATA / "carbon"


def pytest_sessionfinish(session, exitstatus):
    """The session's Airflow home and output go with it (``CARBON_KEEP_STACK=1`` keeps them)."""
    if not os.environ.get("CARBON_KEEP_STACK"):
        shutil.rmtree(_SESSION_DIR, ignore_errors=True)


def compression_for_wait(plan: dict, wait_seconds: float) -> float:
    """The time_compression that makes ``plan``'s wait for its window take ``wait_seconds`` of real time."""
    from datetime import datetime

    ahead = datetime.fromisoformat(plan["start"]) - datetime.fromisoformat(plan["clock"]["anchor"])
    assert ahead.total_seconds() > 1800, f"the plan should put the window ahead of now, got {ahead}"
    return ahead.total_seconds() / wait_seconds


@pytest.fixture(autouse=True)
def records_db(tmp_path_factory, monkeypatch) -> str:
    """Each test writes its records (grid store, energy, summaries, reports, baselines) into its own
    SQLite database, so one test's rows never feed another's."""
    url = f"sqlite:///{tmp_path_factory.mktemp('records') / 'records.db'}"
    monkeypatch.setenv("CARBON_RECORDS_URL", url)
    return url


@pytest.fixture
def mnist_dir() -> Path:
    assert (MNIST_DIR / "train-images-idx3-ubyte.gz").is_file(), f"real MNIST expected in {MNIST_DIR}"
    return MNIST_DIR


@pytest.fixture
def carbon_dir() -> Path:
    assert CARBON_DIR.is_dir(), f"real carbon traces expected in {CARBON_DIR}"
    return CARBON_DIR


@pytest.fixture(scope="session")
def migrated_airflow_db() -> None:
    """A migrated Airflow metadata DB with the gpu pool, via the real CLI."""
    airflow = str(Path(sys.executable).parent / "airflow")
    subprocess.run([airflow, "db", "migrate"], check=True, capture_output=True, timeout=300)
    subprocess.run([airflow, "pools", "set", "gpu", "1", "training"], check=True, capture_output=True,
                   timeout=120)


@pytest.fixture
def airflow_db(migrated_airflow_db) -> dict:
    """The environment an Airflow command of this test runs with: the migrated metadata DB, and this
    test's own records database (``records_db``), which the test then reads."""
    return dict(os.environ)
