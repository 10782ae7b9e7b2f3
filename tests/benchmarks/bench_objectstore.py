"""ObjectStoreBackend against RcloneBackend and against boto3, on one S3
server (moto, on loopback) started for the run.

- **Small operations** (4 KiB objects): ``exists``, ``read`` and ``write``
  against ``RcloneBackend`` on the same bucket (a process per operation) and
  against boto3 making the same calls directly (``head_object``,
  ``get_object``, ``put_object``); ``list`` of a prefix holding 100 keys
  against both (boto3: one ``list_objects_v2`` page).  Ratios of times: how
  many times faster than rclone, and the cost over boto3.
- **Streaming** (1 GiB at scale 1.0): ``stream_write`` from a generator of
  1 MiB chunks against boto3's ``upload_fileobj`` of a stream over the same
  generator, and ``stream_read`` drained to the end against
  ``download_fileobj`` into a sink and against ``get_object`` read in 1 MiB
  chunks.  ``download_fileobj`` fetches 8 MiB ranges, four at a time, and
  moto answers each range by slicing the whole object, so against moto it
  slows down with the square of the size; ``get_object``, one ``GET`` as the
  backend makes, is the like-for-like baseline.  Ratios are throughputs
  (higher is better).
- **Memory**: peak resident memory above the baseline of a fresh process
  during a ``stream_write`` and a ``stream_read`` of the whole artifact.  An
  upload holds at most ``chunk_size * (max_concurrency + 1)`` bytes of parts
  (8 MiB x 5 = 40 MiB by default).

moto is much slower than a real S3 service, so the small-operation ratios
understate what the backend saves against rclone; they stay side by side.

Run alone with ``python -m tests.benchmarks.bench_objectstore [--quick]``.
"""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

from django_snapshots.storage.objectstore import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_MAX_CONCURRENCY,
    ObjectStoreBackend,
)
from django_snapshots.storage.rclone import RcloneBackend
from django_snapshots.storage.streams import CHUNK_SIZE
from tests.benchmarks.common import Row, artifact, interleaved

GIB = 1024**3
MIB = 1024**2
SMALL = b"\x5a" * 4096
LISTED = 100
KEY = "bench-key"
SECRET = "bench-secret"
MEMORY_BOUND = 64 * MIB


class _Server:
    """moto's S3 server in a child process, with one bucket."""

    def __init__(self) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 (closed in close())
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=self.log,
        )
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(self.url + "/moto-api/", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.close()
                    raise RuntimeError("moto server did not start") from None
                time.sleep(0.1)
        self.bucket = f"bench-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=self.bucket)

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id=KEY,
            aws_secret_access_key=SECRET,
            region_name="us-east-1",
        )

    def config(self) -> dict[str, str]:
        return {
            "endpoint": self.url,
            "access_key_id": KEY,
            "secret_access_key": SECRET,
            "region": "us-east-1",
        }

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        self.log.close()


class _ChunkStream(io.RawIOBase):
    """A readable stream over chunks, for boto3's upload_fileobj."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            self._pending = next(self._chunks, b"")
            if not self._pending:
                return 0
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


class _Sink(io.RawIOBase):
    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        return len(data)


def _drain(chunks: Iterator[bytes]) -> int:
    return sum(len(chunk) for chunk in chunks)


def small_operations(server: _Server, rounds: int) -> list[Row]:
    objects = ObjectStoreBackend(
        f"s3://{server.bucket}/obstore",
        config=server.config(),
        client_options={"allow_http": True},
    )
    rclone_config = {"type": "s3", "provider": "Other", **server.config()}
    del rclone_config["endpoint"]
    rclone = RcloneBackend(
        f"s3:{server.bucket}/rclone", config={**rclone_config, "endpoint": server.url}
    )
    client = server.client()
    for storage in (objects, rclone):
        storage.write("small", io.BytesIO(SMALL))
        for index in range(LISTED):
            storage.write(f"listed/{index:03}", io.BytesIO(b"x"))
    client.put_object(Bucket=server.bucket, Key="boto3/small", Body=SMALL)

    def boto3_read() -> None:
        client.get_object(Bucket=server.bucket, Key="boto3/small")["Body"].read()

    def read(storage: Any) -> None:
        with storage.read("small") as file:
            file.read()

    operations = {
        "exists": (
            lambda: objects.exists("small"),
            lambda: rclone.exists("small"),
            lambda: client.head_object(Bucket=server.bucket, Key="boto3/small"),
        ),
        "read": (lambda: read(objects), lambda: read(rclone), boto3_read),
        "write": (
            lambda: objects.write("small", io.BytesIO(SMALL)),
            lambda: rclone.write("small", io.BytesIO(SMALL)),
            lambda: client.put_object(Bucket=server.bucket, Key="boto3/small", Body=SMALL),
        ),
    }
    rows = []
    for name, (ours, theirs, direct) in operations.items():
        fast = interleaved({"ours": ours, "direct": direct}, rounds=rounds, number=20)
        slow = interleaved({"ours": ours, "rclone": theirs}, rounds=rounds, number=2)
        rows.append(
            Row(
                f"ObjectStoreBackend.{name} 4 KiB on S3",
                "RcloneBackend (same bucket)",
                slow["rclone"] / slow["ours"],
                ">= 10x",
                f"{slow['ours'] * 1e3:.2f} ms vs {slow['rclone'] * 1e3:.1f} ms (times faster)",
            )
        )
        rows.append(
            Row(
                f"ObjectStoreBackend.{name} 4 KiB on S3",
                "boto3, the same call directly",
                fast["ours"] / fast["direct"],
                "<= 1.2x",
                f"{fast['ours'] * 1e3:.2f} ms vs {fast['direct'] * 1e3:.2f} ms",
            )
        )

    def boto3_list() -> None:
        client.list_objects_v2(Bucket=server.bucket, Prefix="obstore/listed/")["Contents"]

    listed = interleaved(
        {"ours": lambda: objects.list("listed/"), "rclone": lambda: rclone.list("listed/")},
        rounds=rounds,
        number=2,
    )
    fast = interleaved(
        {"ours": lambda: objects.list("listed/"), "direct": boto3_list}, rounds=rounds, number=5
    )
    rows.append(
        Row(
            f"ObjectStoreBackend.list of {LISTED} keys on S3",
            "RcloneBackend (same bucket)",
            listed["rclone"] / listed["ours"],
            ">= 5x",
            f"{listed['ours'] * 1e3:.1f} ms vs {listed['rclone'] * 1e3:.1f} ms (times faster)",
        )
    )
    rows.append(
        Row(
            f"ObjectStoreBackend.list of {LISTED} keys on S3",
            "boto3 list_objects_v2, one page",
            fast["ours"] / fast["direct"],
            "<= 1.2x",
            f"{fast['ours'] * 1e3:.1f} ms vs {fast['direct'] * 1e3:.1f} ms",
        )
    )
    return rows


def streaming(server: _Server, size: int, shown: str, rounds: int) -> list[Row]:
    from boto3.s3.transfer import TransferConfig

    storage = ObjectStoreBackend(
        f"s3://{server.bucket}/obstore",
        config=server.config(),
        client_options={"allow_http": True},
    )
    client = server.client()
    transfer = TransferConfig(
        multipart_chunksize=DEFAULT_CHUNK_SIZE, max_concurrency=DEFAULT_MAX_CONCURRENCY
    )

    def boto3_upload() -> None:
        client.upload_fileobj(
            _ChunkStream(artifact(size)), server.bucket, "boto3/big", Config=transfer
        )

    def boto3_download() -> None:
        client.download_fileobj(server.bucket, "boto3/big", _Sink(), Config=transfer)

    def boto3_get() -> None:
        body = client.get_object(Bucket=server.bucket, Key="boto3/big")["Body"]
        _drain(body.iter_chunks(CHUNK_SIZE))

    writes = interleaved(
        {"ours": lambda: storage.stream_write("big", artifact(size)), "boto3": boto3_upload},
        rounds=rounds,
    )
    reads = interleaved(
        {
            "ours": lambda: _drain(storage.stream_read("big")),
            "boto3": boto3_download,
            "boto3 get": boto3_get,
        },
        rounds=rounds,
    )
    return [
        Row(
            f"stream_write {shown} on S3",
            "boto3 upload_fileobj",
            writes["boto3"] / writes["ours"],
            ">= 0.9x",
            f"{size / writes['ours'] / MIB:.0f} vs {size / writes['boto3'] / MIB:.0f} MiB/s",
        ),
        Row(
            f"stream_read {shown} on S3",
            "boto3 download_fileobj",
            reads["boto3"] / reads["ours"],
            ">= 0.9x",
            f"{size / reads['ours'] / MIB:.0f} vs {size / reads['boto3'] / MIB:.0f} MiB/s",
        ),
        Row(
            f"stream_read {shown} on S3",
            "boto3 get_object, one GET in 1 MiB reads",
            reads["boto3 get"] / reads["ours"],
            ">= 0.9x",
            f"{size / reads['ours'] / MIB:.0f} vs {size / reads['boto3 get'] / MIB:.0f} MiB/s",
        ),
    ]


_MEMORY_PROBE = """
import json, sys
from django_snapshots.storage.objectstore import ObjectStoreBackend
from tests.benchmarks.common import artifact, _status_kib
url, endpoint, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
storage = ObjectStoreBackend(url, config={"endpoint": endpoint, "access_key_id": "k",
    "secret_access_key": "s", "region": "us-east-1"}, client_options={"allow_http": True})
storage.exists("warm-up")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
baseline = _status_kib("VmRSS")
if sys.argv[4] == "write":
    storage.stream_write("memory", artifact(size))
else:
    assert sum(len(c) for c in storage.stream_read("memory")) == size
print(json.dumps((_status_kib("VmHWM") - baseline) * 1024))
"""


def memory(server: _Server, size: int, shown: str) -> list[Row]:
    rows = []
    for operation in ("write", "read"):
        output = subprocess.run(
            [
                sys.executable,
                "-c",
                _MEMORY_PROBE,
                f"s3://{server.bucket}/obstore",
                server.url,
                str(size),
                operation,
            ],
            check=True,
            capture_output=True,
        ).stdout
        peak = int(json.loads(output))
        rows.append(
            Row(
                f"peak memory, stream_{operation} {shown} on S3",
                "64 MiB above baseline",
                None,
                "<= 64 MiB",
                f"{peak / MIB:.1f} MiB (parts: {DEFAULT_CHUNK_SIZE // MIB} MiB x "
                f"{DEFAULT_MAX_CONCURRENCY} in flight + 1 filling)",
                met=peak <= MEMORY_BOUND,
            )
        )
    return rows


def measure(*, scale: float = 1.0) -> list[Row]:
    """Measure ObjectStoreBackend against RcloneBackend and boto3 on one S3 server."""
    size = max(2 * DEFAULT_CHUNK_SIZE + CHUNK_SIZE, int(GIB * scale))
    shown = f"{size / GIB:g} GiB" if size >= GIB else f"{size // MIB} MiB"
    rounds = 5 if scale < 0.5 else 9
    server = _Server()
    try:
        rows = small_operations(server, rounds)
        rows += streaming(server, size, shown, 3 if scale < 0.5 else 5)
        rows += memory(server, size, shown)
    finally:
        server.close()
    return rows


if __name__ == "__main__":
    from tests.benchmarks.__main__ import render

    print(render(measure(scale=1 / 64 if "--quick" in sys.argv else 1.0), rst=False))
