"""Where runs write their files: one directory per DAG run under the output root."""
from __future__ import annotations

import os
import re
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
OUTPUT_ENV = "CARBON_OUTPUT_DIR"
REPORT_NAME = "comparison_report.json"
PLOT_NAME = "comparison.png"


def output_root() -> Path:
    return Path(os.environ.get(OUTPUT_ENV) or REPO_ROOT / "output").resolve()


def run_dir_for(dag_run_id: str) -> Path:
    """output/<dag_run_id>, with the id made safe for a file name (run ids hold ':' and '+')."""
    return output_root() / re.sub(r"[^A-Za-z0-9_.-]", "_", dag_run_id)


def report_paths() -> list[Path]:
    return list(output_root().glob(f"*/{REPORT_NAME}"))
