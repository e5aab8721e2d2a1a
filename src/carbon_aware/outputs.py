"""Where a task keeps its own files for a run on its machine (one folder per DAG run under the output
root), and how a run id becomes one file or object name."""
from __future__ import annotations

import hashlib
from pathlib import Path

REPORT_NAME = "comparison_report.json"
PLOT_NAME = "comparison.png"
# Folders under the output root that are not runs (``objects``: the default object store, see
# ``objects.DEFAULT_FOLDER``): no DAG or run id maps onto them.
NOT_RUNS = {"baselines", "screenshots", "objects"}
MAX_NAME = 200  # file systems allow 255 bytes a name
SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def output_root() -> Path:
    from carbon_aware.settings import output_root as configured

    return configured()


def run_dir_name(dag_run_id: str) -> str:
    """The run id as one file name, one-to-one: letters, digits, '-' and '_' stay, every other byte is
    %XX (so '.', '..', '/' and ':' never survive, and 'a:b' and 'a_b' stay apart). A name that would
    pass ``MAX_NAME`` keeps its start and ends in '%~' plus a hash of the whole id ('~' is otherwise
    always escaped)."""
    if not isinstance(dag_run_id, str) or not dag_run_id:
        raise ValueError("run id: expected a non-empty string")
    name = "".join(chr(b) if chr(b) in SAFE else f"%{b:02X}" for b in dag_run_id.encode())
    if name in NOT_RUNS:
        name = f"%{ord(name[0]):02X}{name[1:]}"
    if len(name) > MAX_NAME:
        name = f"{name[:MAX_NAME - 34]}%~{hashlib.sha256(dag_run_id.encode()).hexdigest()[:32]}"
    return name


def run_dir_for(dag_run_id: str, dag_id: str | None = None) -> Path:
    """This machine's working folder for one run: ``output/<run>`` (``output/<dag>/<run>`` when the DAG
    is named), each part escaped by :func:`run_dir_name`. Nothing in it is read by another task:
    hand-offs go through XCom, the records database and object storage."""
    root = output_root() / run_dir_name(dag_id) if dag_id else output_root()
    return root / run_dir_name(dag_run_id)
