"""A real S3 API for tests: moto's server, started on 127.0.0.1 and stopped by the tests.

Use the `s3` fixture (re-exported in conftest): it yields the endpoint URL with AWS_ENDPOINT_URL
and dummy credentials set, and a fresh bucket name per test.
"""

from __future__ import annotations

import socket
import uuid

import pytest

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing-key-id", "AWS_SECRET_ACCESS_KEY": "testing-secret-key-do-not-log",
               "AWS_DEFAULT_REGION": "us-east-1"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint():
    pytest.importorskip("moto.server", reason="pip install '.[test]' brings moto[server]")
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3(s3_endpoint, monkeypatch):
    """(endpoint, bucket): a new empty bucket on the moto server, env set for boto3/s3fs/fsspec."""
    import boto3

    for key, value in {**CREDENTIALS, "AWS_ENDPOINT_URL": s3_endpoint}.items():
        monkeypatch.setenv(key, value)
    bucket = f"vlmaudit-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    yield s3_endpoint, bucket
