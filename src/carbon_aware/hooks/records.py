"""The records database's connection: a ``postgres`` or ``sqlite`` Airflow connection as a SQLAlchemy
URL. Endpoints and passwords come only from the connection, never from params."""
from __future__ import annotations

from typing import Any

from sqlalchemy.engine import URL

from carbon_aware.compat import AirflowNotFoundException
from carbon_aware.hooks.connection import ConnectionHook


class RecordsHook(ConnectionHook):
    conn_name_attr = "conn_id"
    default_conn_name = "carbon_records"
    hook_name = "Carbon records database"

    def __init__(self, conn_id: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.conn_id = conn_id or self.default_conn_name

    def url_if_defined(self) -> str | None:
        try:
            connection = self.get_connection(self.conn_id)
        except AirflowNotFoundException:
            return None
        return sqlalchemy_url(connection, self.conn_id)

    def get_conn(self) -> str:
        return sqlalchemy_url(self.get_connection(self.conn_id), self.conn_id)


def sqlalchemy_url(connection: Any, conn_id: str) -> str:
    kind = (connection.conn_type or "").lower()
    if kind == "sqlite":
        if not connection.host:
            raise ValueError(f"connection {conn_id!r}: a sqlite connection names its file in host")
        return f"sqlite:///{connection.host}"
    if kind in ("postgres", "postgresql"):
        return URL.create("postgresql+psycopg2", username=connection.login or None,
                          password=connection.password or None, host=connection.host or None,
                          port=connection.port or None,
                          database=connection.schema or None).render_as_string(hide_password=False)
    raise ValueError(f"connection {conn_id!r}: type {kind!r} is not a records database "
                     "(expected postgres or sqlite)")
