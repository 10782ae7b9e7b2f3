"""django-dbbackup's own commands through SnapshotFileStorage, end to end.

Each test generates a small Django project in a temporary directory (a
settings module, SQLite, media files) and runs django-dbbackup's management
commands in subprocesses, as a cron job would: ``dbbackup``, ``listbackups``,
``dbrestore --noinput``, ``mediabackup``, ``mediarestore --noinput`` and
``dbbackup --clean``.  ``STORAGES["dbbackup"]`` is a ``SnapshotFileStorage``
over ``Logging(Retry(Checksum(Prefix(LocalFileSystemBackend))))``, given as
data (whose option names django-dbbackup lower-cases), or over the object
``Compress(Encrypt(Checksum(LocalFileSystemBackend)))``.  structlog writes
the audit entries of the ``Logging`` layer to a file of JSON lines.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyrage
import pytest

import django_snapshots.exceptions
from django_snapshots.exceptions import SnapshotIntegrityError

ROOT = Path(__file__).resolve().parent.parent

SETTINGS = """
import os
from pathlib import Path

import structlog

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = "tests-only-not-secret"
USE_TZ = True
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "dbbackup"]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": BASE_DIR / "db.sqlite3"}}
MEDIA_ROOT = BASE_DIR / "media"
DBBACKUP_HOSTNAME = "testhost"
# Microseconds in the names, so that backups taken within a second differ.
DBBACKUP_DATE_FORMAT = "%Y-%m-%d-%H%M%S-%f"
DBBACKUP_CLEANUP_KEEP = 2
DBBACKUP_CLEANUP_KEEP_MEDIA = 2

structlog.configure(
    processors=[structlog.processors.add_log_level, structlog.processors.JSONRenderer()],
    logger_factory=structlog.WriteLoggerFactory(
        file=open(BASE_DIR / "audit.jsonl", "a", buffering=1)
    ),
)

if os.environ["STACK"] == "plain":
    DBBACKUP = {
        # django-dbbackup passes these on lower-cased: backend, options, wrappers.
        "BACKEND": "django_snapshots.storage.LocalFileSystemBackend",
        "OPTIONS": {"location": "backups"},
        "WRAPPERS": [
            "django_snapshots.storage.Logging",
            {"WRAPPER": "django_snapshots.storage.Retry", "OPTIONS": {"attempts": 3}},
            "django_snapshots.storage.Checksum",
            {
                "WRAPPER": "django_snapshots.storage.Prefix",
                "OPTIONS": {"prefix": os.environ["TENANT"]},
            },
        ],
    }
else:
    from django_snapshots.storage import Checksum, Compress, Encrypt, LocalFileSystemBackend

    KEY = (BASE_DIR / "backup-key.txt").read_text().strip()
    RECIPIENT = (BASE_DIR / "backup.pub").read_text().strip()
    DBBACKUP = {
        "storage": Compress(
            Encrypt(
                Checksum(LocalFileSystemBackend(BASE_DIR / "backups")),
                recipients=[RECIPIENT],
                identities=[KEY],
            )
        )
    }

STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    "dbbackup": {"BACKEND": "django_snapshots.files.SnapshotFileStorage", "OPTIONS": DBBACKUP},
}
"""

SEED = """
from django.contrib.auth.models import Group, User

for index in range({count}):
    User.objects.create(username=f"{prefix}{{index}}", email=f"{prefix}{{index}}@example.com")
    Group.objects.create(name=f"{prefix}-group-{{index}}")
"""

# Runs a management command and reports an error of django-snapshots by the
# name of its class, so that the test can check its place in the hierarchy.
RUN = """
import sys

import django
from django.core.management import call_command

django.setup()
try:
    call_command(*sys.argv[1:])
except Exception as exc:
    print(f"RAISED {type(exc).__module__}.{type(exc).__qualname__}", file=sys.stderr)
    raise
"""


@dataclass
class Project:
    """A generated Django project, its commands run in subprocesses."""

    root: Path
    stack: str
    tenant: str = "tenant-a"

    def run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "mysite.settings",
            "PYTHONPATH": os.pathsep.join([str(self.root), str(ROOT)]),
            "STACK": self.stack,
            "TENANT": self.tenant,
        }
        result = subprocess.run(
            [sys.executable, str(self.root / "run.py"), *command],
            cwd=self.root,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{' '.join(command)} failed ({result.returncode}):\n{result.stderr[-4000:]}"
            )
        return result

    def seed(self, prefix: str, count: int) -> None:
        self.run("shell", "-c", SEED.format(prefix=prefix, count=count))

    def rows(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every row of every table of the database, in rowid order."""
        with sqlite3.connect(self.root / "db.sqlite3") as db:
            tables = [
                name
                for (name,) in db.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
                )
            ]
            rows = {
                table: db.execute(f'SELECT * FROM "{table}" ORDER BY rowid').fetchall()
                for table in tables
            }
        return rows

    def media(self) -> dict[str, bytes]:
        base = self.root / "media"
        return {
            path.relative_to(base).as_posix(): path.read_bytes()
            for path in sorted(base.rglob("*"))
            if path.is_file()
        }

    def audit(self) -> list[dict[str, Any]]:
        path = self.root / "audit.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def clear_audit(self) -> None:
        (self.root / "audit.jsonl").write_text("")

    def stored(self) -> Path:
        """The directory the stack stores under (the tenant's, for the plain stack)."""
        base = self.root / "backups"
        return base / self.tenant if self.stack == "plain" else base


def _project(root: Path, stack: str) -> Project:
    (root / "mysite").mkdir(parents=True)
    (root / "mysite" / "__init__.py").write_text("")
    (root / "mysite" / "settings.py").write_text(textwrap.dedent(SETTINGS))
    (root / "run.py").write_text(textwrap.dedent(RUN))
    if stack == "confidential":
        identity = pyrage.x25519.Identity.generate()
        (root / "backup-key.txt").write_text(str(identity) + "\n")
        (root / "backup.pub").write_text(str(identity.to_public()) + "\n")
    media = root / "media"
    (media / "avatars").mkdir(parents=True)
    (media / "reports" / "2026").mkdir(parents=True)
    (media / "avatars" / "ada.png").write_bytes(bytes(range(256)) * 300)
    (media / "reports" / "2026" / "q1.pdf").write_bytes(os.urandom(200_000))
    (media / "notes.txt").write_text("héllo\n")
    project = Project(root, stack)
    project.run("migrate", "--noinput", "-v", "0")
    return project


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Project:
    return _project(tmp_path_factory.mktemp("plain"), "plain")


@pytest.fixture(scope="module")
def confidential(tmp_path_factory: pytest.TempPathFactory) -> Project:
    return _project(tmp_path_factory.mktemp("confidential"), "confidential")


def _ops(entries: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(entry["op"], entry.get("path", entry.get("prefix", ""))) for entry in entries]


def _backups(project: Project, suffix: str) -> list[str]:
    return sorted(
        path.name
        for path in project.stored().iterdir()
        if path.is_file() and path.name.endswith(suffix)
    )


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _raised(result: subprocess.CompletedProcess[str]) -> type[BaseException]:
    line = next(line for line in result.stderr.splitlines() if line.startswith("RAISED "))
    module, _, name = line.removeprefix("RAISED ").rpartition(".")
    assert module == "django_snapshots.exceptions", line
    error = getattr(django_snapshots.exceptions, name)
    assert isinstance(error, type)
    return error


def _database_file(project: Project) -> str:
    return hashlib.sha256((project.root / "db.sqlite3").read_bytes()).hexdigest()


@pytest.mark.parametrize("stack", ["plain", "confidential"])
def test_a_database_backup_restores_row_for_row(stack: str, request: pytest.FixtureRequest) -> None:
    project: Project = request.getfixturevalue(stack)
    project.seed("before", 25)
    original = project.rows()
    project.run("dbbackup", "--noinput")
    project.seed("after", 5)  # changes made after the backup
    assert project.rows() != original
    project.run("dbrestore", "--noinput")
    assert project.rows() == original
    # What was stored went through the stack: a sidecar beside the dump, and
    # for the confidential stack an age file, not SQLite's header.
    [dump] = _backups(project, ".sqlite3")
    assert (project.stored() / f"{dump}.sha256").exists()
    header = (project.stored() / dump).read_bytes()[:22]
    if stack == "plain":
        assert header.startswith(b"SQLite format 3")
    else:
        assert header == b"age-encryption.org/v1\n"


@pytest.mark.parametrize("stack", ["plain", "confidential"])
def test_a_media_backup_restores_byte_for_byte(stack: str, request: pytest.FixtureRequest) -> None:
    project: Project = request.getfixturevalue(stack)
    original = project.media()
    project.run("mediabackup", "--noinput")
    for path in (project.root / "media").rglob("*"):
        if path.is_file():
            path.unlink()
    assert project.media() == {}
    project.run("mediarestore", "--noinput")
    assert project.media() == original


def test_the_audit_log_holds_one_entry_per_storage_operation(plain: Project) -> None:
    plain.run("dbbackup", "--noinput")  # a backup for the list below
    plain.clear_audit()

    plain.run("dbbackup", "--noinput")
    backup = plain.audit()
    dump = backup[1]["path"]
    # save() asks whether the name is free, then writes; the same for the
    # metadata file django-dbbackup stores beside each dump.
    assert _ops(backup) == [
        ("exists", dump),
        ("write", dump),
        ("exists", f"{dump}.metadata"),
        ("write", f"{dump}.metadata"),
    ]
    assert all(entry["outcome"] == "ok" for entry in backup)
    assert backup[1]["bytes"] == (plain.stored() / dump).stat().st_size
    assert backup[1]["storage"].startswith("Retry(Checksum(Prefix(LocalFileSystemBackend(")

    plain.clear_audit()
    listed = plain.run("listbackups").stdout
    assert dump in listed
    assert _ops(plain.audit()) == [("list", "")]
    stored = [path for path in plain.stored().iterdir() if not path.name.endswith(".sha256")]
    assert plain.audit()[0]["count"] == len(stored)  # sidecars are not listed

    plain.clear_audit()
    plain.run("dbrestore", "--noinput")
    restore = plain.audit()
    # The latest backup is found by listing; its metadata is read to the end
    # (entry logged then), the dump when django-dbbackup closes it after
    # copying it whole.
    assert _ops(restore) == [("list", ""), ("read", f"{dump}.metadata"), ("read", dump)]
    assert restore[2]["bytes"] == (plain.stored() / dump).stat().st_size
    assert all(entry["complete"] for entry in restore[1:])

    plain.clear_audit()
    plain.run("mediabackup", "--noinput")
    media = plain.audit()
    archive = media[1]["path"]
    assert _ops(media) == [("exists", archive), ("write", archive)]

    plain.clear_audit()
    plain.run("mediarestore", "--noinput")
    # One read for the size django-dbbackup logs (the protocol has no size
    # query), one for tarfile.
    assert _ops(plain.audit()) == [("list", ""), ("read", archive), ("read", archive)]


def test_clean_keeps_the_newest_backups_and_deletes_the_rest(plain: Project) -> None:
    for _ in range(3):
        plain.run("dbbackup", "--noinput")
    before = _backups(plain, ".sqlite3")
    assert len(before) >= 3
    plain.clear_audit()
    plain.run("dbbackup", "--noinput", "--clean")
    after = _backups(plain, ".sqlite3")
    assert len(after) == 2  # DBBACKUP_CLEANUP_KEEP
    newest = after[-1]
    assert newest not in before
    assert after[0] == before[-1]
    assert _backups(plain, ".metadata") == [f"{name}.metadata" for name in after]
    assert [name for name in _backups(plain, ".sha256") if name.startswith("default-")] == sorted(
        [f"{name}.sha256" for name in after] + [f"{name}.metadata.sha256" for name in after]
    )
    deleted = before[:-1]
    expected = [
        ("exists", newest),
        ("write", newest),
        ("exists", f"{newest}.metadata"),
        ("write", f"{newest}.metadata"),
        ("list", ""),
    ]
    for name in sorted(deleted, reverse=True):  # oldest last, as django-dbbackup sorts
        expected += [
            ("delete", name),
            ("exists", f"{name}.metadata"),
            ("delete", f"{name}.metadata"),
        ]
    assert _ops(plain.audit()) == expected


@pytest.mark.parametrize("stack", ["plain", "confidential"])
def test_a_corrupt_dump_fails_the_restore_and_leaves_the_database(
    stack: str, request: pytest.FixtureRequest
) -> None:
    project: Project = request.getfixturevalue(stack)
    project.run("dbbackup", "--noinput")
    good = _backups(project, ".sqlite3")[-1]
    project.run("dbbackup", "--noinput")
    newest = _backups(project, ".sqlite3")[-1]
    _flip_a_byte(project.stored() / newest)
    project.seed("kept", 3)
    rows, database = project.rows(), _database_file(project)

    result = project.run("dbrestore", "--noinput", "-i", newest, check=False)

    assert result.returncode != 0
    error = _raised(result)
    assert issubclass(error, SnapshotIntegrityError)
    if stack == "plain":
        assert error is SnapshotIntegrityError  # the checksum caught it
    assert project.rows() == rows
    assert _database_file(project) == database
    # Restoring a good backup still works afterwards.
    project.run("dbrestore", "--noinput", "-i", good)


def test_each_tenant_lists_only_its_own_backups(plain: Project) -> None:
    acme = Project(plain.root, "plain", tenant="acme")
    globex = Project(plain.root, "plain", tenant="globex")
    acme.run("dbbackup", "--noinput")
    globex.run("dbbackup", "--noinput")
    globex.run("dbbackup", "--noinput")
    [acme_dump] = _backups(acme, ".sqlite3")
    globex_dumps = _backups(globex, ".sqlite3")
    assert len(globex_dumps) == 2

    acme_listed = _listed(acme.run("listbackups", "-q").stdout)
    globex_listed = _listed(globex.run("listbackups", "-q").stdout)
    assert acme_listed == [acme_dump]
    assert globex_listed == globex_dumps


def _listed(output: str) -> list[str]:
    return sorted(word for word in output.split() if word.startswith("default-testhost-"))
