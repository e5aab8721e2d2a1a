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

import contextlib
import os
import re
import threading
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple

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


Stamp = tuple[int, int, int]  # a local file's (size, mtime_ns, inode): an atomic rename changes the inode


class _Synced(NamedTuple):
    """A file as this machine last synced it: its local stamp and the store's version."""

    local: Stamp
    remote: str


def _settled(relative: str) -> bool:
    """Not a file being written: no part of its path starts with ``.`` or ``tmp-`` or holds ``.tmp``,
    as atomic writers name a file or folder until they rename it into place."""
    return not any(part.startswith((".", "tmp-")) or ".tmp" in part for part in relative.split("/"))


def _stamp(path: Path) -> Stamp:
    info = path.stat()
    return info.st_size, info.st_mtime_ns, info.st_ino


def _version(info: dict[str, Any]) -> str:
    """Changes whenever the object is written again: its ETag (S3, GCS), else its modification time."""
    for key in ("ETag", "etag", "md5Hash", "mtime", "LastModified", "updated", "last_modified"):
        if info.get(key) is not None:
            return f"{info.get('size')}:{info[key]}"
    return str(info.get("size"))


class FolderMirror:
    """A job's checkpoint folder kept in the object store, so that a retry on another machine resumes
    where the killed attempt left off. :meth:`restore` before an attempt brings the folder to what the
    store holds; :meth:`watching` while it runs sends each file that changed (from a thread, every
    ``every_seconds``, so a slow upload never holds up the job's supervision) and, when it ends, what
    is left. Subfolders are mirrored too; files being written (see :func:`_settled`) wait until they
    are renamed into place, a file the job renames over an older one is sent at each change, a file
    written in place once it stayed the same for one look (see :meth:`_complete`), and
    a file the job deletes (an older checkpoint it rotates out) is deleted from the store.

    What this machine last synced is kept beside the folder (``.<folder>.mirror.json``), so that a
    retry that lands back here after another machine went further fetches the newer checkpoint instead
    of resuming from (and sending back) its own older one."""

    def __init__(self, local: Path, remote: Any, every_seconds: float = 2.0):
        self.local, self.remote, self.every_seconds = local, remote, every_seconds
        self._manifest = local.parent / f".{local.name}.mirror.json"
        self._synced = self._load()
        self._seen: dict[str, Stamp] = {}  # local stamps at the previous look
        self._renamed: set[str] = set()  # files the job writes by renaming a whole file into place

    def _load(self) -> dict[str, _Synced]:
        import json

        try:
            rows = json.loads(self._manifest.read_text())
            return {name: _Synced((int(size), int(mtime), int(inode)), str(version))
                    for name, (size, mtime, inode, version) in rows.items()}
        except (OSError, ValueError, TypeError):
            return {}

    def _save(self) -> None:
        from carbon_aware.files import atomic_write_json

        atomic_write_json(self._manifest, {name: [*synced.local, synced.remote]
                                           for name, synced in self._synced.items()})

    def _remote_files(self) -> dict[str, str]:
        """Every settled file in the store's folder (relative path -> version)."""
        remote = fresh(self.remote)
        if not remote.exists():
            return {}
        prefix = remote.path.rstrip("/") + "/"
        files = {}
        for item in remote.rglob("*"):
            relative = item.path[len(prefix):]
            if item.path.startswith(prefix) and _settled(relative) and item.is_file():
                files[relative] = _version(item.stat())
        return files

    def _local_files(self) -> dict[str, Stamp]:
        files = {}
        for path in self.local.rglob("*") if self.local.is_dir() else []:
            relative = path.relative_to(self.local).as_posix()
            try:
                if _settled(relative) and path.is_file():
                    files[relative] = _stamp(path)
            except FileNotFoundError:  # replaced between the listing and the look: the next look sees it
                continue
        return files

    def restore(self) -> list[str]:
        """Fetch each file the store holds that this folder lacks, or holds as this machine last synced
        it while the store has a newer one (an attempt elsewhere went on); returns the fetched paths.
        Nothing here is deleted: a file the store no longer has stays, and is not sent back."""
        remote = self._remote_files()
        fetched = []
        for relative, version in sorted(remote.items()):
            target, known = self.local / relative, self._synced.get(relative)
            if known is not None and known.remote == version and target.is_file():
                continue  # the store has what this machine sent or fetched: the local copy is as new
            get_file(self.remote / relative, target)
            self._synced[relative] = _Synced(_stamp(target), version)
            fetched.append(relative)
        if fetched:
            self._save()
        return fetched

    def sync(self, final: bool = True) -> list[str]:
        """Send every settled file that changed since this machine last synced it and delete from the
        store what the job deleted here; returns the paths sent. Unless ``final`` (the job has exited),
        a changed file waits until it looks the same twice."""
        present = self._local_files()
        sent = []
        for relative, stamp in sorted(present.items()):
            known = self._synced.get(relative)
            if known is not None and known.local == stamp:
                continue
            if (final or self._complete(relative, stamp, known)) and self._send(relative, stamp):
                sent.append(relative)
        self._seen = present
        # A folder gone as a whole was removed from outside the job (a clean-up): the store keeps it.
        gone = [name for name in self._synced if name not in present] if self.local.is_dir() else []
        for relative in gone:
            (self.remote / relative).unlink(missing_ok=True)
            del self._synced[relative]
        if sent or gone:
            self._save()
        return sent

    def _complete(self, relative: str, stamp: Stamp, known: _Synced | None) -> bool:
        """Whether a changed file can be sent while the job still runs. A file the job renames into
        place (another inode than at the previous look or the last copy) is whole whenever it is seen:
        once seen so, it is sent at every change, since a job that checkpoints more often than the
        mirror looks never leaves it the same twice. Any other file waits until it stayed the same for
        one look (written in place, it may be half written)."""
        seen = self._seen.get(relative)
        if any(old is not None and old[2] != stamp[2] for old in (seen, known and known.local)):
            self._renamed.add(relative)
        return relative in self._renamed or seen == stamp

    def _send(self, relative: str, stamp: Stamp) -> bool:
        """One file to the store; False when it changed while it was copied (sent again later)."""
        path, target = self.local / relative, self.remote / relative
        try:
            put_file(path, target)
            if _stamp(path) != stamp:
                return False
        except FileNotFoundError:  # replaced or deleted since the look: the next look sees what is there
            return False
        self._synced[relative] = _Synced(stamp, _version(fresh(target).stat()))
        return True

    @contextlib.contextmanager
    def watching(self, warn: Callable[[str], None]) -> Iterator["FolderMirror"]:
        """While the block runs (the job's attempt), a thread sends what changed; a store that fails is
        tried again at the next look and never stops the job. When the block ends the job has exited:
        everything left is sent (a failure then raises, unless the block is failing already)."""
        stop = threading.Event()
        thread = threading.Thread(target=self._watch, args=(stop, warn), name="checkpoint-mirror",
                                  daemon=True)
        thread.start()
        failed = False
        try:
            yield self
        except BaseException:
            failed = True
            raise
        finally:
            stop.set()
            thread.join()
            self._last_sync(warn if failed else None)

    def _watch(self, stop: threading.Event, warn: Callable[[str], None]) -> None:
        while not stop.wait(self.every_seconds):
            try:
                self.sync(final=False)
            except Exception as error:  # the store is down a moment: the job goes on, the next look retries
                warn(f"checkpoints not copied to {url(self.remote)} yet: {error!r}")

    def _last_sync(self, warn: Callable[[str], None] | None) -> None:
        if warn is None:
            self.sync()
            return
        try:
            self.sync()
        except Exception as error:
            warn(f"checkpoints not copied to {url(self.remote)}: {error!r}")
