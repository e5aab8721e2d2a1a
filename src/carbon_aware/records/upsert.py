"""Insert or update by a unique key, in the dialect's own words (SQLite and PostgreSQL both say
``INSERT ... ON CONFLICT (...) DO UPDATE``)."""
from __future__ import annotations

from typing import Any, Sequence

from sqlalchemy import Connection, Table


def insert_for(connection: Connection):
    if connection.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif connection.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:
        raise ValueError(f"records database: {connection.dialect.name} is not supported "
                         "(PostgreSQL or SQLite)")
    return insert


def upsert(connection: Connection, table: Table, values: dict[str, Any], keys: Sequence[str]) -> None:
    """One row: inserted, or its other columns replaced where a row with the same ``keys`` exists."""
    statement = insert_for(connection)(table).values(**values)
    updates = {name: statement.excluded[name] for name in values if name not in keys}
    connection.execute(statement.on_conflict_do_update(index_elements=list(keys), set_=updates))
