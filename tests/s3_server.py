"""An S3-compatible object store for the tests: moto in server mode, a real HTTP server on 127.0.0.1
(its own process), reached through the real client stack (boto3, or s3fs and aiobotocore under Airflow's
``ObjectStoragePath``), with one bucket and the Airflow connection that reaches it.

The connection is an ``aws`` connection: the access key in ``login``, the secret in ``password``, and in
the extra ``endpoint_url`` (the store, read by the Amazon provider for every service, s3 included) and
``region_name``; the Amazon provider's s3 filesystem (``airflow/providers/amazon/aws/fs/s3.py``) builds
``s3fs.S3FileSystem`` from it."""
from __future__ import annotations

import secrets
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote, urlencode

import requests

from tests.stack.services import free_port, stop_process, wait_until

REGION = "us-east-1"


class S3Server:
    """``python -m moto.server`` on a free port; ``start()`` waits for it and creates ``bucket`` unless
    ``create_bucket`` is False (a deployment's init step makes it)."""

    def __init__(self, bucket: str = "carbon-objects", log_path: Path | None = None,
                 create_bucket: bool = True):
        self.bucket = bucket
        self.create_bucket = create_bucket
        self.log_path = log_path
        self.port = free_port()
        # moto accepts any keys; random ones show that they travel through the connection.
        self.access_key = f"AKIA{secrets.token_hex(8).upper()}"
        self.secret_key = secrets.token_urlsafe(30)
        self.process: subprocess.Popen | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "S3Server":
        log = open(self.log_path, "a") if self.log_path else subprocess.DEVNULL
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_until(self._answers, 60, f"the S3 server on {self.endpoint_url}")
        if self.create_bucket:
            self.client().create_bucket(Bucket=self.bucket)
        return self

    def _answers(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"moto server exited with {self.process.returncode} (log: {self.log_path})")
        try:
            return requests.get(f"{self.endpoint_url}/moto-api/", timeout=2).ok
        except requests.RequestException:
            return False

    def stop(self) -> None:
        if self.process:
            stop_process(self.process, grace=10)

    def __enter__(self) -> "S3Server":
        return self.start()

    def __exit__(self, *_exc) -> None:
        self.stop()

    def client(self):
        """A plain boto3 client for the store, to check what the code under test wrote."""
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint_url, region_name=REGION,
                            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key)

    def keys(self, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))

    def read(self, key: str) -> bytes:
        return self.client().get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def connection_uri(self) -> str:
        """The ``aws`` connection as an Airflow connection URI (``AIRFLOW_CONN_<ID>``)."""
        extra = urlencode({"endpoint_url": self.endpoint_url, "region_name": REGION})
        return f"aws://{quote(self.access_key, safe='')}:{quote(self.secret_key, safe='')}@/?{extra}"

    def objects_env(self, conn_id: str = "carbon_objects", prefix: str = "carbon") -> dict[str, str]:
        """What a process sets to keep the provider's files in this store, under ``<bucket>/<prefix>``."""
        return {"CARBON_OBJECTS_URL": f"s3://{self.bucket}/{prefix}", "CARBON_OBJECTS_CONN_ID": conn_id,
                f"AIRFLOW_CONN_{conn_id.upper()}": self.connection_uri()}
