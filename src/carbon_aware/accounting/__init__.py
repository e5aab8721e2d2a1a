"""Accounting, Airflow-free: energy measurement (:mod:`.energy`), the measured job (:mod:`.jobs`),
baselines, the report and its schema, MLflow tracking."""
