#!/usr/bin/env bash
# The main job end to end on embedded defaults: SQLite, CPU, a real grid trace replayed offline,
# waiting compressed 900x (a forecast hour of waiting takes four seconds; the sensor defers).
set -euo pipefail
source "$(dirname "$0")/airflow_env.sh"
cd "$ROOT"
airflow_prepare
mkdir -p output
log="output/demo-$(date -u +%Y%m%dT%H%M%S).log"
echo "running: airflow dags test carbon_training (full log: $log)"
if ! airflow dags test carbon_training -c "$(cat include/demo_conf.json)" >"$log" 2>&1; then
  tail -40 "$log"; echo "demo failed; see $log"; exit 1
fi
grep -oE "^Now [0-9]+ g/kWh.*|woke at .* for the window planned at [^ ]+|epoch [0-9]+/[0-9]+ \| .*" \
  "$log" || true
python - "$log" <<'PY'
import json, re, sys
from pathlib import Path
log = Path(sys.argv[1]).read_text()
state = re.findall(r"DagRun Finished: .*?run_id=([^,]+), .*?state=(\w+)", log)
if not state or state[-1][1] != "success":
    sys.exit(f"DAG run did not succeed: {state}")
from carbon_aware.outputs import run_dir_for
from carbon_aware.accounting.report import format_table
report_path = run_dir_for(state[-1][0]) / "comparison_report.json"
report = json.loads(report_path.read_text())
print()
print(format_table(report))
print(f"\nreport: {report_path}\nplot:   {report['files']['plot']}")

# One day's saving is mostly forecast noise: what the same policy saves over the whole trace year.
from carbon_aware.evaluation import year_line
from carbon_aware.outputs import REPO_ROOT
from carbon_aware.settings import data_dir
conf = json.loads((REPO_ROOT / "include" / "demo_conf.json").read_text())
trace = next(spec for spec in conf["providers"] if spec["name"] == "trace")
print(year_line(data_dir() / trace["path"], conf["job_duration_hours"], conf["deadline_hours"],
                trace.get("forecast", "auto")))
PY
