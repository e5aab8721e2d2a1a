# Sourced by the Makefile and scripts: a self-contained Airflow home (SQLite) inside the checkout.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export AIRFLOW_HOME="${AIRFLOW_HOME:-$ROOT/airflow_home}"
export AIRFLOW__CORE__DAGS_FOLDER="$ROOT/dags"
export AIRFLOW__CORE__PLUGINS_FOLDER="$ROOT/plugins"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS="${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS:-admin:admin}"
export PATH="$ROOT/.venv/bin:$PATH"
export PYTHONUNBUFFERED=1

airflow_prepare() {
  airflow db migrate >/dev/null
  airflow pools set gpu 1 "one slot per GPU: training runs one at a time" >/dev/null
}
