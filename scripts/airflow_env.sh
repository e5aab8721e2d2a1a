# Sourced by the Makefile and scripts: a self-contained Airflow home (SQLite) inside the checkout.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export AIRFLOW_HOME="${AIRFLOW_HOME:-$ROOT/airflow_home}"
export AIRFLOW__CORE__DAGS_FOLDER="$ROOT/dags"
# This checkout as the deployment's base folder (carbon_aware.settings): configs and the regions file in
# include/, runs in output/, the data beside the checkout in ../shared/data.
export CARBON_HOME="${CARBON_HOME:-$ROOT/include}"
export CARBON_OUTPUT_DIR="${CARBON_OUTPUT_DIR:-$ROOT/output}"
export CARBON_DATA_DIR="${CARBON_DATA_DIR:-$(cd "$ROOT/.." && pwd)/shared/data}"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS="${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS:-admin:admin}"
export PATH="$ROOT/.venv/bin:$PATH"
export PYTHONUNBUFFERED=1

airflow_prepare() {
  airflow db migrate >/dev/null
  airflow pools set gpu 1 "one slot per GPU: training runs one at a time" >/dev/null
}
