"""Planning, Airflow-free: the run's params (:mod:`.params`), the best window (:mod:`.planner`),
regions (:mod:`.regions`) and the plan a run carries (:mod:`.plan`)."""
