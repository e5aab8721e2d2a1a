"""What the ledger's listener costs a short task: a task of about one second of CPU work (a fixed amount
of work, not a fixed time) run in a fresh process, as a Celery worker's task runs, plainly and with the
listener's hooks around it (the Task SDK calls them in the task's process), alternating, ``--runs``
times each. Prints each variant's median wall time from the first hook to the last one's return, the
work's own time (what contention from the meter's thread adds to the work), the ratio to the plain run,
and the energy the ledger recorded.

    python -m carbon_aware.ledger.overhead_bench [--runs 7] [--work-seconds 1]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TASK = r"""
import json, sys, time
import airflow.sdk  # already loaded in a task's process before the hooks run
from airflow.sdk import DAG
import pendulum

iterations, measured = int(sys.argv[1]), sys.argv[2] == "ledger"
dag = DAG("bench", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
          tags=["carbon-ledger"] if measured else [])
ti = type("RuntimeTaskInstance", (), {})()
ti.dag_id, ti.run_id, ti.task_id, ti.map_index, ti.try_number = "bench", sys.argv[3], "work", -1, 1
ti.task = type("Task", (), {"dag": dag})()
from carbon_aware.ledger import listener

started = time.perf_counter()
listener.on_task_instance_running(previous_state=None, task_instance=ti)
work_started = time.perf_counter()
total = 0
for i in range(iterations):
    total += i * i
work = time.perf_counter() - work_started
listener.on_task_instance_success(previous_state=None, task_instance=ti)
print(json.dumps({"wall": time.perf_counter() - started, "work": work}))
"""


def calibrate(seconds: float) -> int:
    """Loop iterations that take about ``seconds`` here."""
    n, elapsed = 1_000_000, 0.0
    while elapsed < 0.2:
        n *= 2
        started = time.perf_counter()
        total = 0
        for i in range(n):
            total += i * i
        elapsed = time.perf_counter() - started
    return int(n * seconds / elapsed)


def run_task(iterations: int, variant: str, run_id: str, env: dict[str, str]) -> dict[str, float]:
    done = subprocess.run([sys.executable, "-c", TASK, str(iterations), variant, run_id], env=env,
                          capture_output=True, text=True, timeout=300, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def recorded(url: str, run_id: str, timeout: float = 60) -> tuple[float | None, str | None]:
    """(kWh, note) the ledger recorded for the try, once its meter has written the try's end."""
    from carbon_aware.ledger.book import ledger

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        entries = [e for e in ledger(url=url).entries if e.run_id == run_id and e.ended_at]
        if entries:
            return entries[0].energy_kwh, entries[0].energy_note
        time.sleep(0.5)
    return None, "its meter wrote no end"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--work-seconds", type=float, default=1.0)
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="carbon-ledger-bench-"))
    url = f"sqlite:///{folder / 'records.db'}"
    os.environ.update({"CARBON_RECORDS_URL": url, "CARBON_OUTPUT_DIR": str(folder),
                       "AIRFLOW__CARBON_AWARE__LEDGER_PROVIDERS": json.dumps([{"name": "mock"}])})
    env = dict(os.environ)
    iterations = calibrate(args.work_seconds)
    results: dict[str, list[dict[str, float]]] = {"plain": [], "ledger": []}
    kwh, notes = [], set()
    for n in range(args.runs):
        for variant in ("plain", "ledger"):
            results[variant].append(run_task(iterations, variant, f"bench-{n}", env))
        energy, note = recorded(url, f"bench-{n}")  # its meter done before the next pair starts
        kwh.append(energy)
        notes.add(note)
    plain_wall = statistics.median(r["wall"] for r in results["plain"])
    plain_work = statistics.median(r["work"] for r in results["plain"])
    print(f"a task of {iterations:,} loop iterations (~{args.work_seconds:g} s), "
          f"{args.runs} fresh processes "
          "each, alternating")
    for variant, rows in results.items():
        wall, work = statistics.median(r["wall"] for r in rows), statistics.median(r["work"] for r in rows)
        print(f"  {variant:7s} wall {wall:6.3f} s (x{wall / plain_wall:.3f})   "
              f"work {work:6.3f} s (x{work / plain_work:.3f})")
    measured = [k for k in kwh if k]
    print(f"  energy recorded: {len(measured)}/{len(kwh)} tries"
          + (f", median {statistics.median(measured) * 3.6e6:.1f} J" if measured else ""))
    for note in sorted(filter(None, notes)):
        print(f"    {note}")


if __name__ == "__main__":
    main()
