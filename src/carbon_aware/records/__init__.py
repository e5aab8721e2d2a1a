"""The records: what many writers on many machines append to, in one SQL database that is neither
Airflow's nor a shared folder (grid store, energy readings, job summaries, reports, baselines).

The database is the Airflow connection ``carbon_records`` (``CARBON_RECORDS_CONN_ID`` names another):
a ``postgres`` connection in a multi-machine deployment, a ``sqlite`` one (its host is the file) on one
machine. Without that connection the records are the SQLite file ``carbon_records.db`` in the output
folder, so that one machine needs no set-up. ``CARBON_RECORDS_URL`` (a SQLAlchemy URL) overrides both
where no Airflow is installed (the benchmark, the CLI on a laptop).

The first use of a database in a process brings its tables up to date (:mod:`.migrations`).
"""
from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from typing import Iterator

from sqlalchemy import Connection, Engine, create_engine, event

log = logging.getLogger(__name__)

CONN_ID_ENV = "CARBON_RECORDS_CONN_ID"
URL_ENV = "CARBON_RECORDS_URL"
DEFAULT_CONN_ID = "carbon_records"
DEFAULT_FILE = "carbon_records.db"

_engines: dict[str, Engine] = {}
_lock = threading.Lock()


def records_url() -> str:
    """``CARBON_RECORDS_URL``, else the records connection's URL, else the default SQLite file."""
    if os.environ.get(URL_ENV):
        return os.environ[URL_ENV]
    try:
        from carbon_aware.hooks.records import RecordsHook
    except ImportError:  # no Airflow here
        url = None
    else:
        url = RecordsHook(os.environ.get(CONN_ID_ENV) or DEFAULT_CONN_ID).url_if_defined()
    if url:
        return url
    from carbon_aware.settings import output_root

    path = output_root() / DEFAULT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def engine_for(url: str | None = None) -> Engine:
    """One engine per database per process, its tables migrated on first use."""
    url = url or records_url()
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            engine = new_engine(url)
            from carbon_aware.records.migrations import upgrade

            applied = upgrade(engine)
            if applied:
                log.info("records database %s: applied migrations %s", engine.url.render_as_string(),
                         applied)
            _engines[url] = engine
    return engine


def new_engine(url: str) -> Engine:
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True, pool_size=2, max_overflow=4)
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_SECONDS})

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # SQLAlchemy, not the driver, begins transactions
        _use_wal(dbapi_connection)
        dbapi_connection.execute("PRAGMA synchronous=NORMAL")

    @event.listens_for(engine, "begin")
    def _begin(connection):
        # WAL: readers never wait for the writer. A transaction that reads before it writes asks for the
        # write lock at its start (``IMMEDIATE``, see :func:`write_first`): taking it later, after
        # another writer committed, fails at once instead of waiting out the busy timeout.
        immediate = connection.get_execution_options().get(IMMEDIATE)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


IMMEDIATE = "carbon_sqlite_immediate"
SQLITE_BUSY_SECONDS = 60


def _use_wal(dbapi_connection: sqlite3.Connection) -> None:
    """Switch the file to WAL (it stays so). On a new file several processes switch it at once, and
    SQLite answers the losers "database is locked" at once, without waiting out the busy timeout: so
    try again until the winner has switched it or the busy timeout has passed."""
    deadline = time.monotonic() + SQLITE_BUSY_SECONDS
    while True:
        try:
            dbapi_connection.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@contextmanager
def write_first(engine: Engine) -> Iterator[Connection]:
    """A transaction that reads, then writes (migrations): on SQLite it holds the write lock from its
    start; elsewhere it is a plain transaction."""
    with engine.connect() as connection:
        connection.execution_options(**{IMMEDIATE: True})
        with connection.begin():
            yield connection


def dispose_all() -> None:
    """Forget every engine (tests that switch databases; a forked process)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
