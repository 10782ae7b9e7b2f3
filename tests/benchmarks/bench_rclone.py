"""RcloneBackend against the same rclone commands run directly.

Everything runs on rclone's local remote in a temporary directory, so the
figures measure this library's side (process start-up, pipes, checks) and
not a network.

- **Small operations** (4 KiB objects): each backend call against the very
  rclone commands it runs (same arguments, same flags, same order) started
  with :func:`subprocess.run`; the ratio is the Python-side overhead.
- **Streaming** (1 GiB at scale 1.0): ``stream_write`` from a generator of
  1 MiB chunks against ``rclone copyto`` of a file of the same size, and
  against the same ``rcat`` + ``moveto`` fed from the same generator (rclone
  hashes a stream it uploads to check the stored object, which makes
  ``rcat`` slower than ``copyto``; a row without that check shows its cost);
  ``stream_read`` drained to the end against ``rclone cat <path>`` and
  against the same ``cat`` the backend runs, each drained through a pipe in
  1 MiB reads.  Ratios are throughputs (higher is better).
- **Memory**: peak resident memory of this process (in a forked child)
  during a ``stream_write`` and a ``stream_read`` of the whole artifact.

Run alone with ``python -m tests.benchmarks.bench_rclone [--quick]``.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from django_snapshots.storage.rclone import _COMMON_FLAGS, RcloneBackend, _find_rclone
from django_snapshots.storage.streams import CHUNK_SIZE
from tests.benchmarks.common import Row, artifact, interleaved, peak_rss_delta, remove_and_sync

GIB = 1024**3
MIB = 1024**2
SMALL = b"\x5a" * 4096
BATCH = 5  # operations per timed batch: each one starts rclone, ~10-50 ms
LISTED = 100  # keys below the listed prefix
STAT = ("--stat", "--no-mimetype", "--no-modtime")
LIST = ("-R", "--files-only", "--fast-list", "--no-mimetype", "--no-modtime")


class Direct:
    """The rclone commands RcloneBackend runs, started directly."""

    def __init__(self, root: Path) -> None:
        self.binary = _find_rclone(None)
        self.root = f"{root}/"

    def argv(self, command: str, *paths: str, options: tuple[str, ...] = ()) -> list[str]:
        return [self.binary, command, *_COMMON_FLAGS, *options, "--", *paths]

    def run(
        self, command: str, *paths: str, options: tuple[str, ...] = (), data: bytes = b""
    ) -> bytes:
        result = subprocess.run(
            self.argv(command, *(self.root + p for p in paths), options=options),
            input=data,
            capture_output=True,
            check=False,
        )
        return result.stdout

    def exists(self, key: str) -> None:
        self.run("lsjson", key, options=STAT)

    def read(self, key: str) -> None:
        self.cat(key)

    def write(self, key: str) -> None:
        temporary = f"\\{uuid.uuid4().hex}"
        self.run("rcat", temporary, data=SMALL)
        self.run("moveto", temporary, key, options=("--partial-suffix=\\partial",))

    def list(self, directory: str) -> None:
        self.run("lsjson", directory, options=LIST)

    def stream_write(self, key: str, chunks: Iterator[bytes]) -> None:
        temporary = f"\\{uuid.uuid4().hex}"
        process = subprocess.Popen(
            self.argv("rcat", self.root + temporary),
            stdin=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert process.stdin is not None
        for chunk in chunks:
            process.stdin.write(chunk)
        process.stdin.close()
        process.wait()
        self.run("moveto", temporary, key, options=("--partial-suffix=\\partial",))

    def copyto(self, source: Path, key: str) -> None:
        subprocess.run(
            # --ignore-times: copy again even though the last round left
            # an identical file there.
            self.argv("copyto", str(source), self.root + key, options=("--ignore-times",)),
            check=True,
            capture_output=True,
        )

    def plain_cat(self, key: str) -> int:
        process = subprocess.Popen(
            self.argv("cat", self.root + key), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
        assert process.stdout is not None
        received = 0
        while chunk := process.stdout.read(CHUNK_SIZE):
            received += len(chunk)
        process.wait()
        return received

    def cat(self, key: str) -> int:
        directory, _, name = key.rpartition("/")
        process = subprocess.Popen(
            self.argv(
                "cat",
                self.root + (directory + "/" if directory else ""),
                options=("--no-traverse", "--files-from-raw", "-"),
            ),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert process.stdin is not None
        assert process.stdout is not None
        process.stdin.write(name.encode() + b"\n")
        process.stdin.close()
        received = 0
        while chunk := process.stdout.read(CHUNK_SIZE):
            received += len(chunk)
        process.wait()
        return received


def small_operations(storage: RcloneBackend, direct: Direct, rounds: int) -> list[Row]:
    for i in range(LISTED):
        storage.write(f"listed/{i:03d}", io.BytesIO(SMALL))
    storage.write("small", io.BytesIO(SMALL))

    def batch(fn: Callable[[], object]) -> Callable[[], None]:
        def run() -> None:
            for _ in range(BATCH):
                fn()

        return run

    def read_through_backend() -> None:
        with storage.read("small") as file:
            file.read()

    cases: dict[str, tuple[Callable[[], object], Callable[[], object], str]] = {
        "exists": (
            lambda: storage.exists("small"),
            lambda: direct.exists("small"),
            "lsjson --stat",
        ),
        "read 4 KiB": (
            read_through_backend,
            lambda: direct.read("small"),
            "cat",
        ),
        "write 4 KiB": (
            lambda: storage.write("written", io.BytesIO(SMALL)),
            lambda: direct.write("written-direct"),
            "rcat + moveto",
        ),
        f"list {LISTED} keys": (
            lambda: storage.list("listed/"),
            lambda: direct.list("listed/"),
            "lsjson -R",
        ),
    }
    rows = []
    for name, (ours, theirs, commands) in cases.items():
        times = interleaved({"backend": batch(ours), "direct": batch(theirs)}, rounds=rounds)
        per_call = times["direct"] / BATCH * 1e3
        added = (times["backend"] - times["direct"]) / BATCH * 1e3
        rows.append(
            Row(
                f"RcloneBackend {name} (local remote)",
                f"same rclone commands ({commands}) via subprocess",
                times["backend"] / times["direct"],
                "<= 1.1x",
                detail=f"{added:+.1f} ms/op over {per_call:.0f} ms",
            )
        )
    return rows


def streaming(
    storage: RcloneBackend, direct: Direct, scratch: Path, size: int, shown: str
) -> list[Row]:
    source = scratch / "source.bin"
    with open(source, "wb") as file:
        for chunk in artifact(size):
            file.write(chunk)
    rounds = 3
    remote = Path(direct.root)
    written = {name: f"big-{name}" for name in ("copyto", "rcat", "unverified")}
    written["backend"] = "big"
    # rclone checks a streamed upload against a hash of the stream; this
    # variant turns that off, as a user of the Checksum wrapper may.
    unverified = RcloneBackend(storage.remote, flags=("--ignore-checksum",))
    writes = interleaved(
        {
            "backend": lambda: storage.stream_write("big", artifact(size)),
            "copyto": lambda: direct.copyto(source, "big-copyto"),
            "rcat": lambda: direct.stream_write("big-rcat", artifact(size)),
            "unverified": lambda: unverified.stream_write("big-unverified", artifact(size)),
        },
        rounds=rounds,
        # Each write finds no copy of its own to replace (remove_and_sync).
        before=lambda name: remove_and_sync(remote / written[name]),
    )

    def drain() -> None:
        received = sum(len(chunk) for chunk in storage.stream_read("big"))
        assert received == size, received

    reads = interleaved(
        {
            "backend": drain,
            "cat": lambda: direct.cat("big"),
            "plain cat": lambda: direct.plain_cat("big"),
        },
        rounds=rounds,
    )
    mib_per_s = {name: size / MIB / seconds for name, seconds in {**writes, **reads}.items()}
    return [
        Row(
            f"RcloneBackend stream_write {shown} (local remote)",
            "rclone copyto of a file",
            writes["copyto"] / writes["backend"],
            ">= 0.9x",
            detail=f"{size / MIB / writes['backend']:.0f} vs {mib_per_s['copyto']:.0f} MiB/s",
        ),
        Row(
            f"RcloneBackend(flags=('--ignore-checksum',)) stream_write {shown} (local remote)",
            "rclone copyto of a file",
            writes["copyto"] / writes["unverified"],
            "",
            detail=f"{mib_per_s['unverified']:.0f} vs {mib_per_s['copyto']:.0f} MiB/s",
        ),
        Row(
            f"RcloneBackend stream_write {shown} (local remote)",
            "same rcat + moveto fed directly",
            writes["rcat"] / writes["backend"],
            ">= 0.9x",
            detail=f"{size / MIB / writes['backend']:.0f} vs {mib_per_s['rcat']:.0f} MiB/s",
        ),
        Row(
            f"RcloneBackend stream_read {shown} (local remote)",
            "rclone cat <path> drained in 1 MiB reads",
            reads["plain cat"] / reads["backend"],
            ">= 0.9x",
            detail=f"{size / MIB / reads['backend']:.0f} vs {mib_per_s['plain cat']:.0f} MiB/s",
        ),
        Row(
            f"RcloneBackend stream_read {shown} (local remote)",
            "same rclone cat drained in 1 MiB reads",
            reads["cat"] / reads["backend"],
            ">= 0.9x",
            detail=f"{size / MIB / reads['backend']:.0f} vs {mib_per_s['cat']:.0f} MiB/s",
        ),
    ]


def memory(storage: RcloneBackend, size: int, shown: str) -> Row:
    def round_trip() -> None:
        storage.stream_write("memory", artifact(size))
        received = sum(len(chunk) for chunk in storage.stream_read("memory"))
        assert received == size, received

    delta = peak_rss_delta(round_trip)
    return Row(
        f"peak RSS, {shown} stream_write + stream_read: RcloneBackend",
        "RSS before the transfer",
        None,
        "<= 64 MiB above",
        detail=f"+{delta / MIB:.1f} MiB (rclone's own processes not counted)",
        met=delta <= 64 * MIB,
    )


def measure(*, scale: float = 1.0) -> list[Row]:
    """Measure RcloneBackend's overhead over rclone run directly."""
    size = max(CHUNK_SIZE, int(GIB * scale))
    shown = f"{size / GIB:g} GiB" if size >= GIB else f"{size // MIB} MiB"
    rounds = 5 if scale < 0.5 else 11
    scratch = Path(tempfile.mkdtemp(prefix="bench-rclone-"))
    try:
        root = scratch / "remote"
        storage = RcloneBackend(str(root))
        direct = Direct(root)
        rows = small_operations(storage, direct, rounds)
        rows += streaming(storage, direct, scratch, size, shown)
        rows.append(memory(storage, size, shown))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return rows


if __name__ == "__main__":
    from tests.benchmarks.__main__ import render

    print(render(measure(scale=1 / 64 if "--quick" in sys.argv else 1.0), rst=False))
