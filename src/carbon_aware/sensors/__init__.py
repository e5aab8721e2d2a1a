"""Airflow sensors: wait for the planned window without holding a worker slot (:mod:`.window`)."""
