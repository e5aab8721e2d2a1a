"""A job's checkpoint folder mirrored to the object store (objects.FolderMirror): subfolders, files
written in place, deletions, a retry that lands back on a machine after another went further, a store
that fails while the job runs; through file:// and through an S3 API."""

from __future__ import annotations

import os
import threading
import time

import pytest

from carbon_aware import objects


@pytest.fixture
def remote(tmp_path, monkeypatch):
    monkeypatch.setenv("CARBON_OBJECTS_URL", f"file://{tmp_path / 'store'}")
    return objects.run_path("d", "r") / "job" / "checkpoints"


def _write(path, data: bytes) -> None:
    """As an atomic writer does: a hidden temporary name, then a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _stored(remote, relative: str) -> bytes | None:
    return objects.read_bytes(remote / relative)


def test_subfolders_are_mirrored_and_folders_being_written_wait(tmp_path, remote):
    here = tmp_path / "a" / "checkpoints"
    _write(here / "checkpoint-500" / "model.bin", b"weights 500")
    _write(here / "checkpoint-500" / "optimizer.bin", b"optimizer 500")
    _write(here / "tmp-checkpoint-1000" / "model.bin", b"not renamed into place yet")
    mirror = objects.FolderMirror(here, remote)
    assert mirror.sync() == ["checkpoint-500/model.bin", "checkpoint-500/optimizer.bin"]
    assert mirror.sync() == []  # unchanged: not sent again
    there = tmp_path / "b" / "checkpoints"
    assert objects.FolderMirror(there, remote).restore() == [
        "checkpoint-500/model.bin", "checkpoint-500/optimizer.bin"]
    assert (there / "checkpoint-500" / "optimizer.bin").read_bytes() == b"optimizer 500"
    assert not (there / "tmp-checkpoint-1000").exists()


def test_a_retry_back_on_a_machine_fetches_what_another_machine_wrote_since(tmp_path, remote):
    a, b = tmp_path / "a" / "checkpoints", tmp_path / "b" / "checkpoints"
    _write(a / "last.pt", b"step 100")
    objects.FolderMirror(a, remote).sync()  # machine A's attempt, killed after this
    assert objects.FolderMirror(b, remote).restore() == ["last.pt"]
    _write(b / "last.pt", b"step 900")
    objects.FolderMirror(b, remote).sync()  # machine B's attempt went on, then was killed too
    back = objects.FolderMirror(a, remote)  # the next retry lands on machine A again
    assert back.restore() == ["last.pt"] and (a / "last.pt").read_bytes() == b"step 900"
    assert back.sync() == [] and _stored(remote, "last.pt") == b"step 900"  # nothing older sent back


def test_a_checkpoint_written_after_the_last_copy_is_kept_and_sent(tmp_path, remote):
    here = tmp_path / "a" / "checkpoints"
    _write(here / "last.pt", b"step 100")
    objects.FolderMirror(here, remote).sync()
    _write(here / "last.pt", b"step 150")  # the worker died before this one was copied
    retry = objects.FolderMirror(here, remote)  # its retry on the same machine
    assert retry.restore() == [] and (here / "last.pt").read_bytes() == b"step 150"
    assert retry.sync() == ["last.pt"] and _stored(remote, "last.pt") == b"step 150"


def test_a_checkpoint_renamed_into_place_at_every_look_is_sent_while_the_job_runs(tmp_path, remote):
    """A job that checkpoints more often than the mirror looks never leaves its file the same twice: once
    the mirror has seen it replaced by a rename (a whole file), each new version is sent at once."""
    here = tmp_path / "a" / "checkpoints"
    mirror = objects.FolderMirror(here, remote)
    _write(here / "checkpoint.pt", b"step 50")
    assert mirror.sync(final=False) == []  # a name seen for the first time waits one look
    for step in (100, 150, 200):
        _write(here / "checkpoint.pt", f"step {step}".encode())
        assert mirror.sync(final=False) == ["checkpoint.pt"]
        assert _stored(remote, "checkpoint.pt") == f"step {step}".encode()
    (here / "checkpoint.pt").write_bytes(b"step 250")  # rewritten in place now: still sent, as the job
    assert mirror.sync(final=False) == ["checkpoint.pt"]  # writes whole files under this name


def test_a_file_written_in_place_is_sent_once_it_stays_the_same(tmp_path, remote):
    here = tmp_path / "a" / "checkpoints"
    here.mkdir(parents=True)
    mirror = objects.FolderMirror(here, remote)
    (here / "state.json").write_text('{"step": 1')  # half written, in place
    assert mirror.sync(final=False) == []
    (here / "state.json").write_text('{"step": 1}')
    assert mirror.sync(final=False) == []  # changed since the last look: still being written?
    assert mirror.sync(final=False) == ["state.json"] and _stored(remote, "state.json") == b'{"step": 1}'
    (here / "state.json").write_text('{"step": 20}')
    assert mirror.sync() == ["state.json"]  # the job has exited: sent as it is
    assert _stored(remote, "state.json") == b'{"step": 20}'


def test_what_the_job_deletes_is_deleted_from_the_store_unless_the_whole_folder_went(tmp_path, remote):
    here = tmp_path / "a" / "checkpoints"
    _write(here / "checkpoint-500" / "model.bin", b"500")
    _write(here / "checkpoint-1000" / "model.bin", b"1000")
    mirror = objects.FolderMirror(here, remote)
    mirror.sync()
    (here / "checkpoint-500" / "model.bin").unlink()  # the job keeps its newest checkpoint only
    assert mirror.sync() == [] and _stored(remote, "checkpoint-500/model.bin") is None
    assert _stored(remote, "checkpoint-1000/model.bin") == b"1000"
    (here / "checkpoint-1000" / "model.bin").unlink()
    (here / "checkpoint-1000").rmdir()
    (here / "checkpoint-500").rmdir()
    here.rmdir()  # cleaned up from outside: the store keeps the job's checkpoint
    mirror.sync()
    assert _stored(remote, "checkpoint-1000/model.bin") == b"1000"


def test_while_watching_a_failing_store_never_stops_the_job_and_the_last_copy_is_made(
        tmp_path, remote, monkeypatch):
    here = tmp_path / "a" / "checkpoints"
    failures, warnings = [], []
    real_put = objects.put_file

    def flaky_put(local, target):
        if len(failures) < 2:
            failures.append(target)
            raise OSError("the store is down a moment")
        return real_put(local, target)

    monkeypatch.setattr(objects, "put_file", flaky_put)
    mirror = objects.FolderMirror(here, remote, every_seconds=0.05)
    with mirror.watching(warnings.append):
        _write(here / "last.pt", b"step 50")
        deadline = time.monotonic() + 20
        while _stored(remote, "last.pt") is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _stored(remote, "last.pt") == b"step 50"  # sent while the job runs, once the store is back
        _write(here / "last.pt", b"step 60")  # written just before the job exits
    assert _stored(remote, "last.pt") == b"step 60"
    assert len(failures) == 2 and len(warnings) == 2 and "the store is down" in warnings[0]
    assert not any(t.name == "checkpoint-mirror" for t in threading.enumerate())


def test_when_the_last_copy_fails_the_attempt_fails_unless_it_is_failing_already(tmp_path, remote,
                                                                                 monkeypatch):
    here = tmp_path / "a" / "checkpoints"
    monkeypatch.setattr(objects, "put_file", lambda local, target: (_ for _ in ()).throw(OSError("down")))
    warnings = []
    with pytest.raises(OSError, match="down"):
        with objects.FolderMirror(here, remote, every_seconds=60).watching(warnings.append):
            _write(here / "last.pt", b"step 50")
    with pytest.raises(KeyboardInterrupt):  # the task being stopped: that, not the store, is raised
        with objects.FolderMirror(here, remote, every_seconds=60).watching(warnings.append):
            raise KeyboardInterrupt
    assert len(warnings) == 1 and "down" in warnings[0]


@pytest.mark.integration
def test_a_mirror_through_the_s3_api(s3_server, tmp_path, monkeypatch):
    for key, value in s3_server.objects_env(conn_id=f"mirror_{s3_server.port}", prefix="carbon").items():
        monkeypatch.setenv(key, value)
    remote = objects.run_path("d", "r") / "job" / "checkpoints"
    a, b = tmp_path / "a" / "checkpoints", tmp_path / "b" / "checkpoints"
    _write(a / "step-2" / "model.bin", b"weights")
    _write(a / "last.pt", b"step 100")
    assert objects.FolderMirror(a, remote).sync() == ["last.pt", "step-2/model.bin"]
    there = objects.FolderMirror(b, remote)
    assert there.restore() == ["last.pt", "step-2/model.bin"] and there.sync() == []
    _write(b / "last.pt", b"step 900")
    there.sync()
    assert objects.FolderMirror(a, remote).restore() == ["last.pt"]
    assert (a / "last.pt").read_bytes() == b"step 900"


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory):
    from tests.s3_server import S3Server

    with S3Server(log_path=tmp_path_factory.mktemp("moto") / "moto.log") as server:
        yield server
