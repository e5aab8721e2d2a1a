"""After `airflow dags test carbon_training` in scripts/demo.sh: the plan, the wake-up and the epochs from
its log, the report's table, and what the same policy saves over the whole trace year.

    python scripts/demo_report.py LOG CONF

Airflow's log wraps each task's message: a timestamp and level before it
(``2026-12-03T06:03:17.597874Z [info     ] ``), the logger and ``key=value`` fields after its last line
(`` [airflow.task.operators...] loc=plan.py:43``), and a trainer's line arrives with its own
``2026-12-03 06:04:23,965 INFO training: `` inside that. ``highlights`` strips both.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

AIRFLOW_PREFIX = re.compile(r"^\d{4}-\d\d-\d\dT[\d:.]+Z? \[\s*\w+\s*\] ")
LOGGING_PREFIX = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ \w+ [\w.]+: ")
AIRFLOW_SUFFIX = re.compile(r" \[[\w.]+\](?: [\w.]+=\S*)*$")
WANTED = re.compile(r"^(Now \d+ g/kWh|woke at .* for the window planned at|epoch \d+/\d+ \| )")


def _message(line: str) -> str:
    return LOGGING_PREFIX.sub("", AIRFLOW_PREFIX.sub("", line))


def highlights(log: str) -> list[str]:
    """The plan summary (every line of it), each wake-up and each epoch line, as the tasks logged them."""
    out: list[str] = []
    lines = log.splitlines()
    k = 0
    while k < len(lines):
        line = lines[k]
        k += 1
        if not AIRFLOW_PREFIX.match(line) and not LOGGING_PREFIX.match(line):
            continue
        message = _message(line)
        if not WANTED.match(message):
            continue
        block = [message]
        # A multi-line task message (the plan summary) runs on, unprefixed, up to the line with the suffix.
        wrapped = AIRFLOW_PREFIX.match(line) is not None
        while (wrapped and not AIRFLOW_SUFFIX.search(block[-1]) and k < len(lines)
               and not AIRFLOW_PREFIX.match(lines[k]) and not LOGGING_PREFIX.match(lines[k])):
            block.append(lines[k])
            k += 1
        block[-1] = AIRFLOW_SUFFIX.sub("", block[-1])
        out += block
    return out


def finished_run(log: str) -> str:
    """The run id of the DAG run the log ends with; exits when it did not succeed."""
    state = re.findall(r"DagRun Finished: .*?run_id=([^,]+), .*?state=(\w+)", log)
    if not state or state[-1][1] != "success":
        sys.exit(f"DAG run did not succeed: {state}")
    return state[-1][0]


def main(log_path: str, conf_path: str) -> None:
    from carbon_aware.accounting.report import format_table
    from carbon_aware.evaluation import year_line
    from carbon_aware.records import records_url
    from carbon_aware.records.reports import report_of
    from carbon_aware.settings import data_dir

    log = Path(log_path).read_text()
    print("\n".join(highlights(log)))
    run_id = finished_run(log)
    report = report_of("carbon_training", run_id)
    if report is None:
        sys.exit(f"no report of carbon_training {run_id} in the records database {records_url()}")
    print()
    print(format_table(report))
    print(f"\nreport: {report['files']['json']}\nplot:   {report['files']['plot']}")
    # One day's saving is mostly forecast noise: what the same policy saves over the whole trace year.
    conf = json.loads(Path(conf_path).read_text())
    trace = next(spec for spec in conf["providers"] if spec["name"] == "trace")
    print(year_line(data_dir() / trace["path"], conf["job_duration_hours"], conf["deadline_hours"],
                    trace.get("forecast", "auto")))


if __name__ == "__main__":
    main(*sys.argv[1:3])
