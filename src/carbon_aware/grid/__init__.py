"""Grid signals, Airflow-free: the intensity model (:mod:`.forecast`), the clients of each service
(:mod:`.clients`), the store of actuals (:mod:`.store`), the forecaster (:mod:`.forecaster`) and
trace files (:mod:`.traces`)."""
