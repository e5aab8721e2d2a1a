"""The hook every grid-data service's connection type shares: it owns the connection (its id, type and
form), turns it into the core's ``ConnectionSettings``, builds the core's API client from them and tests
the connection with one cheap real request."""
from __future__ import annotations

from typing import Any, ClassVar

from carbon_aware.grid.clients.base import ConnectionSettings, Provider, http_session, provider_connection
from carbon_aware.grid.forecast import ForecastError
from carbon_aware.hooks import connection_form_widgets, ui_field_behaviour
from carbon_aware.hooks.connection import ConnectionHook


class GridHook(ConnectionHook):
    """A grid-data service's connection: ``settings()`` (base URL from host, or host + schema + port;
    login; password, masked in logs), ``client(**spec_options)`` and ``test_connection()``.
    A connection of another type is refused before anything in it is used."""

    conn_name_attr: ClassVar[str] = "conn_id"
    default_conn_name: ClassVar[str]
    conn_type: ClassVar[str]
    hook_name: ClassVar[str]
    provider_name: ClassVar[str]  # the client's name in provider specs (grid.clients)
    default_base_url: ClassVar[str]  # the service's public API, when the connection has no host

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Airflow 3.1 reads a hook's form only from methods in the class's own __dict__: each service's
        # hook gets its pair, derived from CONNECTION_TYPES (which Airflow 3.2+ reads directly).
        if "conn_type" in cls.__dict__:
            cls.get_ui_field_behaviour = classmethod(lambda c: ui_field_behaviour(c.conn_type))
            cls.get_connection_form_widgets = classmethod(lambda c: connection_form_widgets(c.conn_type))

    def __init__(self, conn_id: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.conn_id = conn_id or self.default_conn_name

    def settings(self) -> ConnectionSettings:
        """The connection as the core's clients take it; the type's default id may be undefined (the
        public API, no credentials); any other id must exist and have this hook's type."""
        return provider_connection(self.conn_id, self.conn_type, self.default_conn_name,
                                   read=self.get_connection)

    def get_conn(self) -> ConnectionSettings:
        return self.settings()

    def client(self, session: Any = None, settings: ConnectionSettings | None = None,
               **spec_options: Any) -> Provider:
        """The core's client for this service (``grid.clients``) on this connection (or on ``settings``
        already read from it); ``spec_options`` are a provider spec's (a zone, a region, a location)."""
        from carbon_aware.grid.clients import provider_class

        return provider_class(self.provider_name)(settings=settings or self.settings(), session=session,
                                                  **spec_options)

    def test_options(self, settings: ConnectionSettings) -> dict[str, Any]:
        """The spec options the connection test builds its client with."""
        return {}

    def test_connection(self) -> tuple[bool, str]:
        """One cheap real request to the service (no retries past one). The message names the
        connection and what went wrong, never a secret."""
        where = f"{self.hook_name} connection {self.conn_id!r}"
        try:
            settings = self.settings()
            session = http_session(retries=1, backoff_s=0.1)
            summary = self.client(session, settings, **self.test_options(settings)).probe()
        except (ForecastError, ValueError, OSError) as error:
            return False, f"{where}: {error}"
        url = settings.base_url or self.default_base_url
        return True, f"{where} works ({url}): {summary}"
