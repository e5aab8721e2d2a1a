"""Files in object storage (carbon_aware.objects): through Airflow's ObjectStoragePath to a real S3 HTTP
API (moto's server, tests/s3_server.py), with the credentials and endpoint from an Airflow connection in
the environment, and to the default file:// base under the output folder."""

import pytest

from carbon_aware import objects
from tests.s3_server import S3Server

pytestmark = pytest.mark.integration

PREFIX = "carbon"


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory):
    with S3Server(log_path=tmp_path_factory.mktemp("moto") / "moto.log") as server:
        yield server


@pytest.fixture
def s3(s3_server, monkeypatch):
    """The provider's files in the S3 server, under s3://<bucket>/carbon, through an Airflow connection
    given as AIRFLOW_CONN_<ID> (its own id: Airflow caches one filesystem per connection id)."""
    for key, value in s3_server.objects_env(conn_id=f"objects_{s3_server.port}", prefix=PREFIX).items():
        monkeypatch.setenv(key, value)
    return s3_server


def test_files_round_trip_through_the_s3_api(s3, tmp_path):
    local = tmp_path / "report.json"
    local.write_bytes(b'{"saved_kg": 0.25}' * 1000)

    target = objects.run_path("carbon_training", "manual__2026-01-01") / "report.json"
    url = objects.put_file(local, target)

    key = f"{PREFIX}/carbon_training/manual__2026-01-01/report.json"
    assert url.startswith("s3://") and url.endswith(f"{s3.bucket}/{key}"), url
    assert s3.keys(PREFIX) == [key]  # seen by a plain boto3 client: it is in the store
    assert s3.read(key) == local.read_bytes()

    back = tmp_path / "back" / "report.json"
    back.parent.mkdir()
    assert objects.get_file(target, back)
    assert back.read_bytes() == local.read_bytes()
    assert not objects.get_file(target.parent / "missing.json", tmp_path / "missing.json")
    assert not (tmp_path / "missing.json").exists()

    assert objects.put_bytes(b"\x89PNG", target.parent / "plot.png").endswith("plot.png")
    assert objects.read_bytes(target.parent / "plot.png") == b"\x89PNG"
    assert objects.read_bytes(target.parent / "none.png") is None


def test_a_file_another_machine_wrote_is_found_after_this_process_listed_the_folder(s3, tmp_path):
    """s3fs remembers listings for the life of its process: without dropping them, an object written
    since by another client would be reported missing."""
    run = objects.run_path("carbon_training", "listed_before")
    objects.put_bytes(b"first", run / "first.txt")
    assert [path.name for path in objects.fresh(run).iterdir()] == ["first.txt"]

    s3.client().put_object(Bucket=s3.bucket, Key=f"{PREFIX}/carbon_training/listed_before/second.txt",
                           Body=b"second")

    assert objects.get_file(run / "second.txt", tmp_path / "second.txt")
    assert (tmp_path / "second.txt").read_bytes() == b"second"
    assert objects.read_bytes(run / "second.txt") == b"second"
    assert sorted(path.name for path in objects.fresh(run).iterdir()) == ["first.txt", "second.txt"]


@pytest.mark.parametrize("run_id", ["../escaped", "..", "a/b", "/absolute", "x/../../../../etc"])
def test_a_run_id_stays_inside_its_own_prefix(s3, run_id):
    before = set(s3.keys())
    objects.put_bytes(b"png", objects.run_path("carbon_training", run_id) / "plot.png")

    (key,) = set(s3.keys()) - before
    parts = key.split("/")  # <prefix>/<dag>/<the run id as one name>/plot.png
    assert len(parts) == 4 and parts[:2] == [PREFIX, "carbon_training"] and parts[3] == "plot.png", key
    assert parts[2] not in ("", ".", ".."), key


def test_a_bucket_that_is_not_there_is_an_error_not_made(s3):
    missing = f"no-such-bucket-{s3.port}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CARBON_OBJECTS_URL", f"s3://{missing}/carbon")
        with pytest.raises(FileNotFoundError):
            objects.put_bytes(b"x", objects.run_path("carbon_training", "r") / "x")
    assert missing not in [bucket["Name"] for bucket in s3.client().list_buckets()["Buckets"]]


def test_the_default_base_is_a_folder_in_the_output_folder(monkeypatch, tmp_path):
    monkeypatch.delenv("CARBON_OBJECTS_URL", raising=False)
    monkeypatch.delenv("CARBON_OBJECTS_CONN_ID", raising=False)
    output = tmp_path / "output"
    monkeypatch.setenv("CARBON_OUTPUT_DIR", str(output))
    assert objects.base_url() == f"file://{output / 'objects'}"  # apart from the tasks' own folders

    local = tmp_path / "plot.png"
    local.write_bytes(b"png bytes")
    url = objects.put_file(local, objects.run_path("carbon_training", "../r") / "plot.png")
    on_disk = output / "objects" / "carbon_training" / "%2E%2E%2Fr" / "plot.png"
    assert url == f"file://{on_disk}" and on_disk.read_bytes() == b"png bytes"
    assert objects.get_file(objects.run_path("carbon_training", "../r") / "plot.png", tmp_path / "b.png")
    assert (tmp_path / "b.png").read_bytes() == b"png bytes"


def test_a_file_store_never_shows_a_part_and_a_file_copied_onto_itself_is_kept(monkeypatch, tmp_path):
    monkeypatch.setenv("CARBON_OBJECTS_URL", f"file://{tmp_path}")
    target = objects.run_path("d", "r") / "big.bin"
    data = b"x" * (3 << 20)  # more than one chunk
    objects.put_bytes(data, target)
    on_disk = tmp_path / "d" / "r" / "big.bin"
    assert on_disk.read_bytes() == data and [p.name for p in on_disk.parent.iterdir()] == ["big.bin"]
    objects.put_file(on_disk, target)  # the store's own file as the source: left as it is
    assert on_disk.read_bytes() == data


def test_a_mirror_sends_settled_files_once_and_restores_what_is_missing(monkeypatch, tmp_path):
    monkeypatch.setenv("CARBON_OBJECTS_URL", f"file://{tmp_path / 'store'}")
    remote = objects.run_path("d", "r") / "job" / "checkpoints"
    here = objects.FolderMirror(tmp_path / "a", remote)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "last.pt").write_bytes(b"epoch 1")
    (tmp_path / "a" / ".last.pt.123.tmp").write_bytes(b"half")  # an atomic writer's file in progress
    assert here.sync() == ["last.pt"] and here.sync() == []  # unchanged: not sent again
    (tmp_path / "a" / "last.pt").write_bytes(b"epoch 2 and more")
    assert here.sync() == ["last.pt"]
    there = objects.FolderMirror(tmp_path / "b", remote)
    assert there.restore() == ["last.pt"]
    assert (tmp_path / "b" / "last.pt").read_bytes() == b"epoch 2 and more"
    assert there.restore() == [] and there.sync() == []  # what it fetched is not sent back
