"""The records' tables: what many writers on many machines append to. Every table is the provider's own
(``carbon_`` prefix), in the records database, never in Airflow's metadata database.

- ``carbon_grid_points``: every actual and every issued forecast a real provider returned, one row per
  slot, unique per (region, kind, source, issue time, start, length); indexed so that a write and a
  read of the last weeks stay flat with the store's age.
- ``carbon_energy_readings``: every reading of every attempt of every job, written while it runs.
- ``carbon_job_summaries``, ``carbon_reports``: one row per job, one per DAG run.
- ``carbon_baselines``: the cached baseline measurements, by what they depend on.
- ``carbon_task_state`` (v2): a rescheduled sensor's state between its pokes (each poke may run on
  another worker).
- ``carbon_ledger_tasks``, ``carbon_ledger_forecasts`` (v3): the ledger: every measured try of a task of
  an opted-in DAG (its readings are in ``carbon_energy_readings``), and the one forecast per region per
  hour its shadow plans use.
"""
from __future__ import annotations

from sqlalchemy import (BigInteger, Column, Float, Index, Integer, MetaData, String, Table, Text,
                        UniqueConstraint)

metadata = MetaData()

ID_CHARS = 250  # an Airflow DAG id or run id is at most 250 characters

schema_version = Table(
    "carbon_schema_version", metadata,
    Column("version", Integer, primary_key=True),
    Column("description", String(200), nullable=False),
    Column("applied_at", Float, nullable=False),
)

grid_points = Table(
    "carbon_grid_points", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("region", String(64), nullable=False),
    Column("kind", String(8), nullable=False),  # actual | forecast
    Column("source", String(200), nullable=False),
    Column("issued", BigInteger, nullable=False),  # epoch s of a forecast's issue; 0 for an actual
    Column("start", BigInteger, nullable=False),  # epoch s
    Column("seconds", Integer, nullable=False),
    Column("value", Float, nullable=False),  # g CO2e/kWh
    Column("recorded_at", Float, nullable=False),
    UniqueConstraint("region", "kind", "source", "issued", "start", "seconds", name="uq_carbon_grid_slot"),
    Index("ix_carbon_grid_region_kind_start", "region", "kind", "start"),
    Index("ix_carbon_grid_region_kind_issued", "region", "kind", "issued"),
)

energy_readings = Table(
    "carbon_energy_readings", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("dag_id", String(ID_CHARS), nullable=False),
    Column("run_id", String(ID_CHARS), nullable=False),
    Column("job", String(ID_CHARS), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("time", String(40), nullable=False),  # ISO 8601 UTC
    Column("label", String(40), nullable=False),
    Column("kwh", Float, nullable=False),  # cumulative over every attempt of the job
    Column("cpu_kwh", Float, nullable=False),
    Column("gpu_kwh", Float, nullable=False),
    Column("ram_kwh", Float, nullable=False),
    Column("co2_kg", Float, nullable=False),
    Column("seconds", Float, nullable=False),
    Column("attempt_kwh", Float, nullable=False),
    Column("worker", String(200), nullable=False),
    Index("ix_carbon_energy_job", "dag_id", "run_id", "job", "id"),
)

job_summaries = Table(
    "carbon_job_summaries", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("dag_id", String(ID_CHARS), nullable=False),
    Column("run_id", String(ID_CHARS), nullable=False),
    Column("job", String(ID_CHARS), nullable=False),
    Column("summary", Text, nullable=False),  # JSON
    Column("updated_at", Float, nullable=False),
    UniqueConstraint("dag_id", "run_id", "job", name="uq_carbon_job_summary"),
)

reports = Table(
    "carbon_reports", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("dag_id", String(ID_CHARS), nullable=False),
    Column("run_id", String(ID_CHARS), nullable=False),
    Column("report", Text, nullable=False),  # JSON, checked by report_schema when read
    Column("plot_url", String(2000)),
    Column("report_url", String(2000)),
    Column("created_at", Float, nullable=False),
    UniqueConstraint("dag_id", "run_id", name="uq_carbon_report_run"),
    Index("ix_carbon_reports_created", "created_at"),
)

baselines = Table(
    "carbon_baselines", metadata,
    Column("key", String(200), primary_key=True),
    Column("entry", Text, nullable=False),  # JSON
    Column("measured_at", Float, nullable=False),
)

task_state = Table(
    "carbon_task_state", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("dag_id", String(ID_CHARS), nullable=False),
    Column("run_id", String(ID_CHARS), nullable=False),
    Column("task_id", String(ID_CHARS), nullable=False),
    Column("try_number", Integer, nullable=False),
    Column("state", Text, nullable=False),  # JSON
    Column("updated_at", Float, nullable=False),
    UniqueConstraint("dag_id", "run_id", "task_id", "try_number", name="uq_carbon_task_state"),
)

ledger_tasks = Table(
    "carbon_ledger_tasks", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("dag_id", String(ID_CHARS), nullable=False),
    Column("run_id", String(ID_CHARS), nullable=False),
    Column("task_id", String(ID_CHARS), nullable=False),
    Column("map_index", Integer, nullable=False),
    Column("try_number", Integer, nullable=False),
    Column("worker", String(200), nullable=False),
    Column("region", String(64), nullable=False),
    Column("started_at", Float, nullable=False),  # epoch s
    Column("ended_at", Float),  # None until the task says it ended (never, for a killed one)
    Column("state", String(30), nullable=False),
    Column("energy_error", Text),  # why the meter did not measure (energy unknown)
    Column("deadline", Float, nullable=False),  # the shadow plan's latest end, epoch s
    Column("priced", Text),  # JSON: the priced try, kept once it can no longer change
    UniqueConstraint("dag_id", "run_id", "task_id", "map_index", "try_number", name="uq_carbon_ledger_try"),
    Index("ix_carbon_ledger_started", "started_at"),
)

ledger_forecasts = Table(
    "carbon_ledger_forecasts", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("region", String(64), nullable=False),
    Column("hour", BigInteger, nullable=False),  # epoch s of the UTC hour it was fetched in
    Column("source", String(200), nullable=False),
    Column("anchor", Float, nullable=False),  # the real moment a replayed trace maps to its replay_start
    Column("points", Text, nullable=False),  # JSON [[start epoch s, seconds, g/kWh], ...]
    Column("fetched_at", Float, nullable=False),
    UniqueConstraint("region", "hour", name="uq_carbon_ledger_forecast_hour"),
)
