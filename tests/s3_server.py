"""A real S3-compatible server on 127.0.0.1 for the streaming tests: moto's server mode in a thread of the test
process (training subprocesses reach it over HTTP like any S3 endpoint). Tests skip without moto."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

#: Dummy credentials the server accepts; the tests check that they never reach logs or configs.
ACCESS_KEY = "AKIAloopbacktestkey"
SECRET_KEY = "loopback-secret-never-logged-7f3a"


@dataclass(frozen=True)
class LoopbackS3:
    """A running server: its endpoint, a bucket on it, and the AWS settings (``env``) that point clients at it."""

    endpoint: str
    bucket: str
    env: dict[str, str]

    def url(self, prefix: str) -> str:
        return f"s3://{self.bucket}/{prefix}"

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name="us-east-1",
        )

    def keys(self, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))

    def apply(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Point this process's AWS clients (and the subprocesses it starts) at the server, for one test."""
        for key, value in self.env.items():
            monkeypatch.setenv(key, value)
        for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
            monkeypatch.delenv(key, raising=False)


@contextmanager
def loopback_s3(home: Path, bucket: str = "photos") -> Iterator[LoopbackS3]:
    """Start the server on a free port of 127.0.0.1 with ``bucket`` created. Its ``env`` also points AWS's
    config files at empty ones in ``home``, so that no AWS setting of this machine's user can interfere."""
    moto_server = pytest.importorskip("moto.server", reason="moto[server] is not installed (dev extra)")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        (home / "aws").mkdir(parents=True, exist_ok=True)
        for name in ("config", "credentials"):
            (home / "aws" / name).write_text("")
        env = {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": f"http://{host}:{port}",
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": str(home / "aws" / "config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(home / "aws" / "credentials"),
        }
        s3 = LoopbackS3(env["AWS_ENDPOINT_URL"], bucket, env)
        s3.client().create_bucket(Bucket=bucket)
        yield s3
    finally:
        server.stop()
