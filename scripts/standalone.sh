#!/usr/bin/env bash
# `airflow standalone` with this project's DAGs and plugins, the gpu pool, the DAG unpaused.
set -euo pipefail
source "$(dirname "$0")/airflow_env.sh"
cd "$ROOT"
airflow_prepare
airflow dags reserialize >/dev/null
airflow dags unpause carbon_training >/dev/null || true
echo "Airflow UI: http://localhost:8080  login: admin / password in" \
  "$AIRFLOW_HOME/simple_auth_manager_passwords.json.generated"
echo "Trigger 'carbon_training' from the UI (Trigger button; the form explains each param)."
exec airflow standalone
