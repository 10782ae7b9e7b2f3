"""Tests for the django-health-check check of the snapshot storage, through
django-health-check's own view."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import IO, Any

import pytest
from django.test import Client, override_settings

from django_snapshots._inspect import probe_storage
from django_snapshots.storage import Checksum, MemoryBackend, Prefix, RcloneBackend
from tests.conftest import S3Bucket, S3Server
from tests.test_rclone import s3_config

SECRET = "hunter2-do-not-show"
PROBE = ".snapshots-probe/"


@pytest.fixture
def serve() -> Iterator[Any]:
    """Serve the health page with SNAPSHOTS["STORAGE"] set to a storage."""
    applied: list[override_settings] = []

    def serve(storage: Any) -> None:
        settings = override_settings(
            ROOT_URLCONF="tests.health_urls",
            INSTALLED_APPS=[
                "django.contrib.contenttypes",
                "django.contrib.auth",
                "django_snapshots",
                "health_check",
            ],
            TEMPLATES=[
                {"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True}
            ],
            SNAPSHOTS={"STORAGE": storage},
        )
        settings.enable()
        applied.append(settings)

    yield serve
    for settings in reversed(applied):
        settings.disable()


def get(url: str, accept: str = "application/json") -> Any:
    return Client().get(url, HTTP_ACCEPT=accept)


def test_a_working_storage_is_healthy_and_left_clean(serve: Any) -> None:
    storage = Checksum(Prefix(MemoryBackend(), "acme"))
    serve(storage)
    response = get("/ht/")
    assert response.status_code == 200
    assert response.json() == {"SnapshotStorageCheck()": "OK"}
    assert storage.list("") == []  # the probe object is gone
    assert storage.__wrapped__.__wrapped__.list("") == []


def test_the_html_page_shows_the_check(serve: Any) -> None:
    serve(MemoryBackend())
    response = get("/ht/", accept="text/html")
    assert response.status_code == 200
    assert "SnapshotStorageCheck" in response.content.decode()


def test_the_probe_goes_through_the_configured_stack(serve: Any) -> None:
    seen: list[str] = []

    class Watching(MemoryBackend):
        def write(self, path: str, content: IO[bytes]) -> None:
            seen.append(path)
            super().write(path, content)

    watching = Watching()
    serve(Prefix(watching, "tenant"))
    assert get("/ht/").status_code == 200
    [key] = seen
    assert key.startswith(f"tenant/{PROBE}")
    assert watching.list("") == []


class Refusing(MemoryBackend):
    """Writes fail with a message that quotes a credential."""

    def __repr__(self) -> str:
        return "Refusing()"

    def write(self, path: str, content: IO[bytes]) -> None:
        raise PermissionError(f"403 for https://backup:{SECRET}@storage.example/bucket")


def test_a_failing_storage_is_unhealthy_with_the_step_and_the_stack(serve: Any) -> None:
    serve(Prefix(Refusing(), "acme"))
    response = get("/ht/")
    assert response.status_code == 500
    [message] = response.json().values()
    assert message.startswith("Unavailable: ")
    assert "Prefix(Refusing(), 'acme')" in message
    assert "at write (PermissionError)" in message
    for accept in ("application/json", "text/plain", "text/html", "application/rss+xml"):
        body = get("/ht/", accept=accept).content.decode()
        assert "PermissionError" in body
        assert SECRET not in body
        assert "storage.example" not in body


def test_each_probe_step_names_the_class_of_its_error_apart_from_the_message() -> None:
    failed = list(probe_storage(Prefix(Refusing(), "acme")))
    assert [(step.name, step.error_type) for step in failed] == [("write", "PermissionError")]
    assert failed[0].error is not None
    assert failed[0].error.startswith("PermissionError: 403 for https://")
    passed = list(probe_storage(MemoryBackend()))
    assert [step.name for step in passed] == ["write", "read", "verify", "list", "delete"]
    assert [step.error_type for step in passed] == [None] * 5  # verify is skipped: no Checksum
    assert [step.skipped for step in passed] == [False, False, True, False, False]


def test_a_read_back_that_fails_is_reported_and_the_probe_removed(serve: Any) -> None:
    class Unreadable(MemoryBackend):
        def read(self, path: str) -> IO[bytes]:
            raise ConnectionResetError(SECRET)

    storage = Unreadable()
    serve(storage)
    response = get("/ht/", accept="text/plain")
    assert response.status_code == 500
    assert "failed a round trip at read (ConnectionResetError)" in response.content.decode()
    assert SECRET not in response.content.decode()
    assert storage.list("") == []


class Hanging(MemoryBackend):
    """Writes block until released."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.writes = 0

    def __repr__(self) -> str:
        return "Hanging()"

    def write(self, path: str, content: IO[bytes]) -> None:
        self.writes += 1
        self.release.wait(30)
        super().write(path, content)


def test_a_storage_that_hangs_fails_within_the_time_limit(serve: Any) -> None:
    storage = Hanging()
    serve(storage)
    try:
        started = time.monotonic()
        response = get("/ht/short/")
        took = time.monotonic() - started
        assert response.status_code == 500
        [message] = response.json().values()
        assert "Hanging()" in message
        assert "has not finished a round trip within 0.5 s" in message
        assert "at its first step" in message
        assert took < 5  # django-health-check's own limit would be 1.5 s
        # A second request while the first round trip still hangs starts
        # no other one.
        assert get("/ht/short/").status_code == 500
        assert storage.writes == 1
    finally:
        storage.release.set()
    deadline = time.monotonic() + 10
    while storage.list(PROBE) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert storage.list(PROBE) == []  # the round trip finished and cleaned up
    # The hung round trip's thread ends just after its clean-up: until then a
    # new check still reports it.  Once it has ended, the storage is healthy.
    deadline = time.monotonic() + 10
    while get("/ht/short/").status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert get("/ht/short/").status_code == 200


def test_an_invalid_setting_is_unhealthy_without_touching_any_storage(serve: Any) -> None:
    serve({"BACKEND": "no.such.Backend", "OPTIONS": {"token": SECRET}})
    response = get("/ht/")
    assert response.status_code == 500
    [message] = response.json().values()
    assert "SNAPSHOTS setting is invalid (snapshots.E004)" in message
    assert SECRET not in message


def test_an_rclone_remote_that_cannot_be_reached_shows_no_credential(
    serve: Any, s3_server: S3Server
) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{closed.getsockname()[1]}"
    storage = RcloneBackend(
        "store:bucket/backups",
        config=s3_config(s3_server, endpoint=endpoint),
        flags=("--low-level-retries=1",),
    )
    serve(storage)
    response = get("/ht/", accept="text/plain")
    assert response.status_code == 500
    body = response.content.decode()
    assert "RcloneBackend('store:bucket/backups'" in body
    assert "failed a round trip at write (SnapshotStorageError)" in body
    for secret in (s3_server.secret_access_key, s3_server.access_key_id):
        assert secret not in body


def test_an_rclone_remote_that_works_is_healthy(serve: Any, s3_bucket: S3Bucket) -> None:
    storage = RcloneBackend(f"store:{s3_bucket.name}/backups", config=s3_config(s3_bucket.server))
    serve(storage)
    assert get("/ht/").status_code == 200
    assert storage.list("") == []
