#!/usr/bin/env bash
# `airflow standalone` with this project's DAGs and plugins, the gpu pool, the DAG unpaused.
# carbon_training runs only when triggered here: an unpaused daily schedule would start a run at once
# that waits up to a day for its window and, with max_active_runs=1, holds the UI's first trigger
# behind it. Set CARBON_TRAINING_SCHEDULE (e.g. @daily) to schedule it.
set -euo pipefail
source "$(dirname "$0")/airflow_env.sh"
export CARBON_TRAINING_SCHEDULE="${CARBON_TRAINING_SCHEDULE:-none}"
cd "$ROOT"
airflow_prepare
airflow dags reserialize >/dev/null
airflow dags unpause carbon_training >/dev/null || true
echo "Airflow UI: http://localhost:8080  login: admin / password in" \
  "$AIRFLOW_HOME/simple_auth_manager_passwords.json.generated"
if [ "$CARBON_TRAINING_SCHEDULE" = none ]; then
  echo "carbon_training runs only when triggered (CARBON_TRAINING_SCHEDULE=none; set it, e.g. to @daily," \
    "to schedule it)."
else
  echo "carbon_training is scheduled $CARBON_TRAINING_SCHEDULE (CARBON_TRAINING_SCHEDULE)."
fi
echo "Trigger 'carbon_training' from the UI (Trigger button; the form explains each param)."
exec airflow standalone
