import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("CARBON_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
MNIST_DIR = SHARED_DATA / "mnist"
CARBON_DIR = SHARED_DATA / "carbon"


@pytest.fixture
def mnist_dir() -> Path:
    assert (MNIST_DIR / "train-images-idx3-ubyte.gz").is_file(), f"real MNIST expected in {MNIST_DIR}"
    return MNIST_DIR


@pytest.fixture
def carbon_dir() -> Path:
    assert CARBON_DIR.is_dir(), f"real carbon traces expected in {CARBON_DIR}"
    return CARBON_DIR
