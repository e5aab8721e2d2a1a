"""The base of this provider's hooks: reading a connection wherever Airflow runs the hook."""
from __future__ import annotations

from typing import Any

from carbon_aware.compat import BaseHook


class ConnectionHook(BaseHook):
    """A hook that reads its connection wherever Airflow runs it: in a task, in ``airflow connections
    test``, in the API server."""

    @classmethod
    def get_connection(cls, conn_id: str) -> Any:
        """The Task SDK's read; outside a task on Airflow 3.1.0 (``airflow connections test``, the API
        server's Test button) that read fails to import the task runner's channel, and the connection
        is read as Airflow's own commands read it there, from the secrets backends and the database."""
        try:
            return super().get_connection(conn_id)
        except ImportError:
            from airflow.models.connection import Connection

            return Connection.get_connection_from_secrets(conn_id)
