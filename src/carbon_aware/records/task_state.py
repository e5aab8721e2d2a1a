"""A task's state between its runs that Airflow does not carry: a rescheduled sensor's pokes are
separate task runs, each on whichever worker takes it, so what one poke decided (a re-plan) is kept
here, per try, for the next."""
from __future__ import annotations

import json
import time
from typing import Any, NamedTuple

from sqlalchemy import select

from carbon_aware.records import engine_for, tables
from carbon_aware.records.upsert import upsert

T = tables.task_state


class TaskKey(NamedTuple):
    dag_id: str
    run_id: str
    task_id: str
    try_number: int


def keep(key: TaskKey, state: dict[str, Any]) -> None:
    values = {**key._asdict(), "state": json.dumps(state, default=str), "updated_at": time.time()}
    with engine_for().begin() as connection:
        upsert(connection, T, values, keys=TaskKey._fields)


def kept(key: TaskKey) -> dict[str, Any] | None:
    where = [T.c[name] == value for name, value in key._asdict().items()]
    with engine_for().connect() as connection:
        text = connection.execute(select(T.c.state).where(*where)).scalar()
    return json.loads(text) if text is not None else None
