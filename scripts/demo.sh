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
python scripts/demo_report.py "$log" include/demo_conf.json
