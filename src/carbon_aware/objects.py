"""Files in object storage: plots, copies of reports for download and jobs' checkpoints, under one
configured base URL, through Airflow's ``ObjectStoragePath``, so that a task on any machine (a retry on
another worker, the API server) finds what another wrote.

- ``CARBON_OBJECTS_URL``: the base, e.g. ``s3://bucket/carbon`` (any S3-compatible store) or
  ``file:///mnt/carbon``. Default: ``file://<output folder>/objects`` (one machine).
- ``CARBON_OBJECTS_CONN_ID``: the Airflow connection holding the store's credentials (an ``aws``
  connection; its extra may set ``endpoint_url`` for an S3-compatible store). Default: none (the
  filesystem's own default credentials).

Keys are ``<dag>/<run>/<name>``, each part escaped as a file name (``outputs.run_dir_name``): a run id
never reaches outside its own prefix.

An S3 filesystem caches the listings it has seen for as long as its process lives, so a long-lived
process (the API server, a worker) would not see what another machine wrote since: every read here
starts from :func:`fresh`.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from carbon_aware.outputs import run_dir_name

URL_ENV = "CARBON_OBJECTS_URL"
DEFAULT_FOLDER = "objects"  # under the output folder: apart from the tasks' own folders beside it
CONN_ENV = "CARBON_OBJECTS_CONN_ID"


def base_url() -> str:
    if os.environ.get(URL_ENV):
        return os.environ[URL_ENV].rstrip("/")
    from carbon_aware.settings import output_root

    return f"file://{output_root() / DEFAULT_FOLDER}"


def base_path() -> Any:
    """The base as an ``ObjectStoragePath`` (Airflow's), with the configured connection."""
    from airflow.sdk import ObjectStoragePath

    return ObjectStoragePath(base_url(), conn_id=os.environ.get(CONN_ENV) or None)


def url(path: Any) -> str:
    """The object's URL as people and other tools write it: ``ObjectStoragePath`` puts its connection id
    in front of the bucket (``s3://conn@bucket/key``), which no S3 client reads."""
    return re.sub(r"^([a-z0-9+.-]+://)[^/@]*@", r"\1", str(path))


def run_path(dag_id: str, run_id: str) -> Any:
    """Where one DAG run's files live: ``<base>/<dag>/<run>``."""
    return base_path() / run_dir_name(dag_id) / run_dir_name(run_id)


def fresh(path: Any) -> Any:
    """``path``, its filesystem's cached listings dropped: what it then lists or finds is what the store
    holds now, whoever wrote it."""
    path.fs.invalidate_cache()
    # Without a connection, the operations go through the path's own filesystem, not Airflow's.
    wrapped = getattr(path, "__wrapped__", None)
    if wrapped is not None:
        wrapped.fs.invalidate_cache()
    return path


def read_bytes(source: Any) -> bytes | None:
    """The object's bytes, or None when there is none."""
    try:
        return fresh(source).read_bytes()
    except FileNotFoundError:
        return None


def _local(target: Any) -> Path | None:
    return Path(target.path) if target.protocol in ("", "file", "local") else None


def put_file(local: Path, target: Any) -> str:
    """Copy a local file to ``target`` (an ``ObjectStoragePath``); returns its URL. Readers see the old
    object or the new one, never a part: an object store publishes an upload when it completes; a
    ``file://`` target is written beside and renamed into place (and left alone when it is the file
    itself)."""
    with open(local, "rb") as source:
        return _put(source.read, target, same=local)


def put_bytes(data: bytes, target: Any) -> str:
    import io

    return _put(io.BytesIO(data).read, target)


def _put(read: Any, target: Any, same: Path | None = None) -> str:
    from carbon_aware.files import atomic_write

    def copy(sink: Any) -> None:
        while chunk := read(1 << 20):
            sink.write(chunk)

    path = _local(target)
    if path is None:
        with target.open("wb") as sink:
            copy(sink)
    elif same is None or path.resolve() != same.resolve():
        def write(tmp: Path) -> None:
            with open(tmp, "wb") as sink:
                copy(sink)

        atomic_write(path, write)
    return url(target)


def get_file(source: Any, local: Path) -> bool:
    """Copy ``source`` to ``local`` through a temporary file (atomic); False when there is none."""
    from carbon_aware.files import atomic_write

    if not fresh(source).exists():
        return False

    def write(tmp: Path) -> None:
        with source.open("rb") as handle, open(tmp, "wb") as sink:
            while chunk := handle.read(1 << 20):
                sink.write(chunk)

    atomic_write(local, write)
    return True


CHECKPOINTS = "checkpoints"  # the folder of a job's that follows it from machine to machine


class FolderMirror:
    """A job's checkpoint folder kept in the object store, so that a retry on another machine resumes
    where the killed attempt left off: :meth:`restore` before an attempt fetches what the store has and
    the local folder lacks; :meth:`sync` while it runs (at most every ``every_seconds``) and after it
    uploads each file that changed. Files being written (a name starting with ``.`` or holding
    ``.tmp``, as atomic writers name them) are left until they are renamed into place."""

    def __init__(self, local: Path, remote: Any, every_seconds: float = 2.0):
        self.local, self.remote, self.every_seconds = local, remote, every_seconds
        self._sent: dict[str, tuple[int, int]] = {}
        self._last = 0.0

    @staticmethod
    def _settled(name: str) -> bool:
        return not name.startswith(".") and ".tmp" not in name

    def restore(self) -> list[str]:
        """The store's files missing here, fetched; returns their names."""
        remote = fresh(self.remote)
        if not remote.exists():
            return []
        fetched = []
        for item in remote.iterdir():
            target = self.local / item.name
            if self._settled(item.name) and item.is_file() and not target.exists():
                get_file(item, target)
                self._sent[item.name] = self._stamp(target)
                fetched.append(item.name)
        return fetched

    def sync(self, force: bool = True) -> list[str]:
        """Upload every settled file that changed since the last upload; returns their names."""
        import time

        if not force and time.monotonic() - self._last < self.every_seconds:
            return []
        self._last = time.monotonic()
        sent = []
        for path in sorted(self.local.glob("*")) if self.local.is_dir() else []:
            if not (path.is_file() and self._settled(path.name)):
                continue
            try:
                stamp = self._stamp(path)
                if self._sent.get(path.name) != stamp:
                    put_file(path, self.remote / path.name)
                    self._sent[path.name] = stamp
                    sent.append(path.name)
            except FileNotFoundError:  # replaced between the listing and the copy: the next sync sends it
                continue
        return sent

    def tick(self) -> None:
        self.sync(force=False)

    @staticmethod
    def _stamp(path: Path) -> tuple[int, int]:
        info = path.stat()
        return info.st_size, info.st_mtime_ns
