"""A job's records, keyed by (DAG, run, job name), so that any machine finds them: every energy reading
of every attempt (written while the job runs, one committed row each, so a SIGKILLed attempt's energy
survives the machine) and the job's summary."""
from __future__ import annotations

import json
import socket
import time
from typing import Any

from sqlalchemy import select

from carbon_aware.accounting.energy import ENTRY_KEYS
from carbon_aware.records import engine_for, tables
from carbon_aware.records.upsert import upsert

READINGS = tables.energy_readings
SUMMARIES = tables.job_summaries


class RecordsEnergyLog:
    """A job's energy log in the records database (``accounting.energy.EnergyLog``)."""

    def __init__(self, dag_id: str, run_id: str, job: str, worker: str | None = None,
                 url: str | None = None):
        self.key = {"dag_id": dag_id, "run_id": run_id, "job": job}
        self.worker = worker or socket.gethostname()
        self.url = url  # None: the deployment's records database, looked up at each use

    def read(self) -> list[dict[str, Any]]:
        c = READINGS.c
        query = (select(*(c[key] for key in ENTRY_KEYS), c.worker)
                 .where(*(c[name] == value for name, value in self.key.items())).order_by(c.id))
        with engine_for(self.url).connect() as connection:
            return [dict(row._mapping) for row in connection.execute(query)]

    def append(self, entry: dict[str, Any]) -> None:
        row = {**self.key, **{key: entry[key] for key in ENTRY_KEYS}, "worker": self.worker[:200]}
        with engine_for(self.url).begin() as connection:
            connection.execute(READINGS.insert().values(**row))


def save_summary(dag_id: str, run_id: str, job: str, summary: dict[str, Any]) -> None:
    """The job's summary (replaced by a later attempt's)."""
    values = {"dag_id": dag_id, "run_id": run_id, "job": job, "summary": json.dumps(summary, default=str),
              "updated_at": time.time()}
    with engine_for().begin() as connection:
        upsert(connection, SUMMARIES, values, keys=("dag_id", "run_id", "job"))


def summary_of(dag_id: str, run_id: str, job: str) -> dict[str, Any] | None:
    c = SUMMARIES.c
    with engine_for().connect() as connection:
        text = connection.execute(select(c.summary).where(c.dag_id == dag_id, c.run_id == run_id,
                                                           c.job == job)).scalar()
    return json.loads(text) if text is not None else None
