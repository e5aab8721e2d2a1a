"""Carbon-intensity signals and the start-window planner. Imports neither Airflow nor torch."""
