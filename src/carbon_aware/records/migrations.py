"""Migrations: each creates or changes the records' tables once, in order, recorded in
``carbon_schema_version``. ``carbon-aware db upgrade`` runs them; so does the first use of the records
in a process. Many processes may start at once: on PostgreSQL an advisory lock lets one migrate while
the others wait; on SQLite the transaction holds the write lock from its start
(``records.write_first``)."""
from __future__ import annotations

import time
from typing import Callable

from sqlalchemy import Connection, Engine, inspect, select, text

from carbon_aware.records import tables


def _create_v1(connection: Connection) -> None:
    for table in (tables.grid_points, tables.energy_readings, tables.job_summaries, tables.reports,
                  tables.baselines):
        table.create(connection, checkfirst=True)


def _create_v2(connection: Connection) -> None:
    tables.task_state.create(connection, checkfirst=True)


def _create_v3(connection: Connection) -> None:
    for table in (tables.ledger_tasks, tables.ledger_forecasts):
        table.create(connection, checkfirst=True)


# (version, what it does, how): append only; never edit one that has shipped.
MIGRATIONS: list[tuple[int, str, Callable[[Connection], None]]] = [
    (1, "grid points, energy readings, job summaries, reports, baselines", _create_v1),
    (2, "task state between a rescheduled sensor's pokes", _create_v2),
    (3, "the ledger: measured task tries, forecasts per region and hour", _create_v3),
]
HEAD = MIGRATIONS[-1][0]
LOCK_KEY = 0x6361726230  # "carb0": the advisory lock's key on PostgreSQL


def current_version(connection: Connection) -> int:
    if not inspect(connection).has_table(tables.schema_version.name):
        return 0
    return connection.execute(select(tables.schema_version.c.version)
                              .order_by(tables.schema_version.c.version.desc()).limit(1)).scalar() or 0


def upgrade(engine: Engine) -> list[int]:
    """Apply every migration the database has not had; returns the versions applied."""
    applied = []
    from carbon_aware.records import write_first

    with write_first(engine) as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
        tables.schema_version.create(connection, checkfirst=True)
        version = current_version(connection)
        for number, description, migrate in MIGRATIONS:
            if number > version:
                migrate(connection)
                connection.execute(tables.schema_version.insert().values(
                    version=number, description=description, applied_at=time.time()))
                applied.append(number)
    return applied
