"""The S3 server the suite starts is a real HTTP server on loopback."""

from __future__ import annotations

import io


def test_s3_server_stores_and_returns_objects_over_http(s3_bucket):
    client = s3_bucket.server.client()
    client.upload_fileobj(io.BytesIO(b"payload"), s3_bucket.name, "a/b.bin")
    body = client.get_object(Bucket=s3_bucket.name, Key="a/b.bin")["Body"].read()
    assert body == b"payload"
    assert s3_bucket.server.endpoint_url.startswith("http://127.0.0.1:")
