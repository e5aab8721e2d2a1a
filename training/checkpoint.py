"""Checkpoint dicts with everything needed to resume, written atomically."""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from carbon_aware.files import atomic_write


def rng_state() -> dict[str, Any]:
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def save_checkpoint(path: Path, checkpoint: dict[str, Any]) -> None:
    atomic_write(path, lambda tmp: torch.save(checkpoint, tmp))


def load_checkpoint(path: Path, map_location: torch.device) -> dict[str, Any]:
    # Our own file: it holds numpy RNG state and the config dict, so weights_only is off.
    return torch.load(path, map_location=map_location, weights_only=False)
