"""Airflow operators: plan (:mod:`.plan`), run a measured job (:mod:`.job`), report (:mod:`.report`)."""
