"""Each DAG run's comparison report, one row per (DAG, run) in the records database: written by the
report task on whichever worker ran it, read by the Carbon page on the API server and by the next plan
(the last measured duration). Reports are stored as the JSON the report task built and checked by
``report_schema`` whenever they are read: the page never trusts a row."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Iterable

from sqlalchemy import select

from carbon_aware.records import engine_for, tables
from carbon_aware.records.upsert import upsert

T = tables.reports


@dataclass(frozen=True)
class StoredReport:
    """One stored report: its row id (the page's link), DAG and run, the JSON as stored, and the URLs
    of its copies in object storage."""

    report_id: int
    dag_id: str
    run_id: str
    text: str
    plot_url: str | None
    report_url: str | None
    created_at: float


def save_report(dag_id: str, run_id: str, report: dict[str, Any], plot_url: str | None = None,
                report_url: str | None = None) -> int:
    """Store (or replace, for a rerun of the report task) the run's report; returns its row id."""
    values = {"dag_id": dag_id, "run_id": run_id, "report": json.dumps(report, default=str),
              "plot_url": plot_url, "report_url": report_url, "created_at": time.time()}
    engine = engine_for()
    with engine.begin() as connection:
        upsert(connection, T, values, keys=("dag_id", "run_id"))
        return connection.execute(select(T.c.id).where(T.c.dag_id == dag_id, T.c.run_id == run_id)
                                  ).scalar_one()


def _stored(row: Any) -> StoredReport:
    return StoredReport(report_id=row.id, dag_id=row.dag_id, run_id=row.run_id, text=row.report,
                        plot_url=row.plot_url, report_url=row.report_url, created_at=row.created_at)


def stored_reports(dag_ids: Iterable[str] | None = None) -> list[StoredReport]:
    """Every stored report (of ``dag_ids`` only, when given), newest first."""
    query = select(T).order_by(T.c.created_at.desc())
    if dag_ids is not None:
        query = query.where(T.c.dag_id.in_(list(dag_ids)))
    with engine_for().connect() as connection:
        return [_stored(row) for row in connection.execute(query)]


def report_dag_ids() -> set[str]:
    with engine_for().connect() as connection:
        return set(connection.execute(select(T.c.dag_id).distinct()).scalars())


def stored_report(report_id: int) -> StoredReport | None:
    with engine_for().connect() as connection:
        row = connection.execute(select(T).where(T.c.id == report_id)).first()
    return _stored(row) if row else None


def report_of(dag_id: str, run_id: str) -> dict[str, Any] | None:
    """The run's report as stored (a reader that trusts the row: the CLI, tests; the page checks)."""
    with engine_for().connect() as connection:
        text = connection.execute(select(T.c.report).where(T.c.dag_id == dag_id, T.c.run_id == run_id)
                                  ).scalar()
    return json.loads(text) if text is not None else None


def last_measured_hours(exclude_run: str | None = None, scan: int = 50) -> float | None:
    """The optimized run's wall time in the newest stored report that has one (not ``exclude_run``'s)."""
    query = select(T.c.run_id, T.c.report).order_by(T.c.created_at.desc()).limit(scan)
    with engine_for().connect() as connection:
        rows = connection.execute(query).all()
    for run_id, text in rows:
        if run_id == exclude_run:
            continue
        try:
            seconds = json.loads(text)["runs"]["optimized"]["wall_time_seconds"]
            return max(float(seconds) / 3600, 1 / 60)
        except (KeyError, TypeError, ValueError):
            continue
    return None
