"""System checks: each misconfiguration is an Error with its id and a hint,
reported without any I/O; the deploy check probes the storage."""

from __future__ import annotations

import io
import select
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.apps import apps
from django.core.checks import ERROR, WARNING, run_checks
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

from django_snapshots.checks import check_storage_round_trip, check_storage_setting
from django_snapshots.storage import (
    Checksum,
    Compress,
    Encrypt,
    LocalFileSystemBackend,
    MemoryBackend,
)
from django_snapshots.testing import Chaos
from tests.conftest import S3Bucket
from tests.test_conf import (
    COMPRESS,
    ENCRYPT,
    MISCONFIGURATIONS,
    RECIPIENT,
    SECRET,
    WRAPPERS,
    assert_no_secret,
    fresh_storage_cache,
)

pytestmark = pytest.mark.usefixtures(fresh_storage_cache.__name__)

MEMORY = "django_snapshots.storage.MemoryBackend"


@pytest.mark.parametrize(("snapshots", "check_id", "fragments"), MISCONFIGURATIONS)
def test_each_misconfiguration_is_an_error_with_its_id_and_a_hint(
    snapshots: Any, check_id: str, fragments: list[str]
) -> None:
    with override_settings(SNAPSHOTS=snapshots):
        messages = check_storage_setting()
    assert [(m.level, m.id) for m in messages] == [(ERROR, check_id)]
    assert fragments[-1] in messages[0].msg
    assert messages[0].hint


def test_an_option_name_that_is_not_a_string_is_an_error_saying_so() -> None:
    bad = {"STORAGE": {"BACKEND": MEMORY, "OPTIONS": {1: "s3cr3t"}}}
    with override_settings(SNAPSHOTS=bad):
        messages = check_storage_setting()
    assert [(m.level, m.id) for m in messages] == [(ERROR, "snapshots.E003")]
    assert messages[0].msg == (
        'SNAPSHOTS["STORAGE"]["OPTIONS"] has an option name of type int (entry 1); option '
        "names are keyword argument names and must be strings"
    )
    assert "s3cr3t" not in messages[0].msg + str(messages[0].hint)


def test_manage_py_check_reports_the_misconfiguration() -> None:
    bad = {"STORAGE": {"BACKEND": "django_snapshots.storage.NoSuchBackend"}}
    with override_settings(SNAPSHOTS=bad), pytest.raises(SystemCheckError) as raised:
        call_command("check", stdout=io.StringIO(), stderr=io.StringIO())
    assert "(snapshots.E004)" in str(raised.value)
    assert "HINT: Give the full dotted path" in str(raised.value)


def test_the_checks_are_registered_under_the_snapshots_tag() -> None:
    bad = {"STORAGE": object()}
    with override_settings(SNAPSHOTS=bad):
        messages = run_checks(tags=["snapshots"])
    assert [m.id for m in messages] == ["snapshots.E002"]


def test_a_valid_stack_with_checksums_passes(tmp_path: Any) -> None:
    storage = Checksum(LocalFileSystemBackend(tmp_path))
    with override_settings(SNAPSHOTS={"STORAGE": storage}):
        assert check_storage_setting() == []
        call_command("check", stdout=io.StringIO())


def test_a_stack_without_checksum_layer_gets_a_warning() -> None:
    with override_settings(SNAPSHOTS={"STORAGE": {"BACKEND": MEMORY}}):
        messages = check_storage_setting()
    assert [(m.level, m.id) for m in messages] == [(WARNING, "snapshots.W001")]
    assert "Checksum" in messages[0].hint


def test_the_default_storage_passes(tmp_path: Any, settings: Any) -> None:
    settings.BASE_DIR = tmp_path
    assert check_storage_setting() == []


def test_checks_of_other_apps_do_not_run_the_snapshots_checks() -> None:
    with override_settings(SNAPSHOTS={"STORAGE": object()}):
        assert check_storage_setting(app_configs=[apps.get_app_config("auth")]) == []
        assert check_storage_round_trip(app_configs=[apps.get_app_config("auth")]) == []
        snapshots = [apps.get_app_config("django_snapshots")]
        assert [m.id for m in check_storage_setting(app_configs=snapshots)] == ["snapshots.E002"]


def test_the_ordinary_check_does_no_io_on_the_storage() -> None:
    # Every operation of this storage fails: only a check that touches it
    # could notice.
    broken = Checksum(Chaos(MemoryBackend(), failure_rate=1.0))
    with override_settings(SNAPSHOTS={"STORAGE": broken}):
        call_command("check", stdout=io.StringIO())
        assert check_storage_setting() == []


def test_the_deploy_check_probes_the_storage_and_reports_a_failure() -> None:
    broken = Checksum(Chaos(MemoryBackend(), failure_rate=1.0, seed=1))
    with override_settings(SNAPSHOTS={"STORAGE": broken}):
        messages = check_storage_round_trip()
        with pytest.raises(SystemCheckError) as raised:
            call_command("check", "--deploy", stdout=io.StringIO(), stderr=io.StringIO())
    assert [(m.level, m.id) for m in messages] == [(ERROR, "snapshots.E101")]
    assert "round trip at write" in messages[0].msg
    assert "ConnectionError" in messages[0].msg
    assert "(snapshots.E101)" in str(raised.value)


def test_the_deploy_check_passes_and_leaves_nothing_behind() -> None:
    backend = MemoryBackend()
    with override_settings(SNAPSHOTS={"STORAGE": Checksum(backend)}):
        assert check_storage_round_trip() == []
    assert backend.list("") == []


def test_the_deploy_check_catches_a_storage_that_loses_data_and_cleans_up() -> None:
    class Truncating(MemoryBackend):
        def write(self, path: str, content: Any) -> None:
            super().write(path, io.BytesIO(content.read()[:-1]))

    storage = Truncating()
    with override_settings(SNAPSHOTS={"STORAGE": storage}):
        messages = check_storage_round_trip()
    assert [m.id for m in messages] == ["snapshots.E101"]
    assert "round trip at read: ValueError: the bytes read back differ" in messages[0].msg
    assert storage.list("") == []


def test_the_deploy_check_leaves_a_misconfiguration_to_the_setting_check() -> None:
    with override_settings(SNAPSHOTS={"STORAGE": object()}):
        assert check_storage_round_trip() == []


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A TCP port on loopback that records whether anything connected."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        yield server


def _was_contacted(server: socket.socket) -> bool:
    readable, _, _ = select.select([server], [], [], 0)
    return bool(readable)


def test_manage_py_check_never_contacts_an_rclone_remote(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    setting = {
        "BACKEND": "django_snapshots.storage.RcloneBackend",
        "OPTIONS": {
            "remote": "backups:bucket/base",
            "config": {
                "type": "s3",
                "provider": "Other",
                "endpoint": f"http://127.0.0.1:{port}",
                "access_key_id": "test-access-key",
                "secret_access_key": "test-secret-key",
            },
        },
        "WRAPPERS": ["django_snapshots.storage.Retry", "django_snapshots.storage.Checksum"],
    }
    with override_settings(SNAPSHOTS={"STORAGE": setting}):
        call_command("check", stdout=io.StringIO())
        assert check_storage_setting() == []
    assert not _was_contacted(listener)


def test_the_listener_notices_a_connection(listener: socket.socket) -> None:
    # The control for the test above: a contact would not go unnoticed.
    with socket.create_connection(listener.getsockname(), timeout=5):
        assert _was_contacted(listener)


def test_the_deploy_check_round_trips_through_rclone_on_a_real_s3_server(
    s3_bucket: S3Bucket,
) -> None:
    server = s3_bucket.server
    setting = {
        "BACKEND": "django_snapshots.storage.RcloneBackend",
        "OPTIONS": {
            "remote": f"s3:{s3_bucket.name}/backups",
            "config": {
                "type": "s3",
                "provider": "Other",
                "endpoint": server.endpoint_url,
                "access_key_id": server.access_key_id,
                "secret_access_key": server.secret_access_key,
                "region": server.region,
            },
        },
        "WRAPPERS": ["django_snapshots.storage.Checksum"],
    }
    with override_settings(SNAPSHOTS={"STORAGE": setting}):
        assert check_storage_setting() == []
        assert check_storage_round_trip() == []
    listing = server.client().list_objects_v2(Bucket=s3_bucket.name)
    assert listing["KeyCount"] == 0


# A storage that cannot be reached is a warning that creates nothing.


def _local(location: Any, *wrappers: str) -> dict[str, Any]:
    return {
        "STORAGE": {
            "BACKEND": "django_snapshots.storage.LocalFileSystemBackend",
            "OPTIONS": {"location": str(location)},
            "WRAPPERS": ["django_snapshots.storage.Checksum", *wrappers],
        }
    }


def test_manage_py_check_creates_nothing_for_an_unmounted_location(tmp_path: Any) -> None:
    # The mount point's parent is there, the disk is not: no directory may
    # appear where the disk would be mounted.
    location = tmp_path / "mnt" / "nas" / "snapshots"
    with override_settings(SNAPSHOTS=_local(location)):
        call_command("check", stdout=io.StringIO(), stderr=io.StringIO())
        messages = check_storage_setting()
    assert list(tmp_path.iterdir()) == []
    assert [(m.level, m.id) for m in messages] == [(WARNING, "snapshots.W002")]
    assert str(location) in messages[0].msg
    assert "neither does its parent" in messages[0].msg
    assert "mounted" in str(messages[0].hint)
    assert "OPTIONS" not in str(messages[0].hint)


def test_a_location_below_a_file_is_a_warning_not_an_error(tmp_path: Any) -> None:
    (tmp_path / "file").write_bytes(b"data")
    with override_settings(SNAPSHOTS=_local(tmp_path / "file" / "snapshots")):
        messages = check_storage_setting()
        output = io.StringIO()
        call_command("check", stdout=output, stderr=output)
    assert [(m.level, m.id) for m in messages] == [(WARNING, "snapshots.W002")]
    assert "is not a directory" in messages[0].msg
    assert "snapshots.W002" in output.getvalue()
    assert (tmp_path / "file").read_bytes() == b"data"


def test_a_location_that_is_a_file_is_a_warning(tmp_path: Any) -> None:
    (tmp_path / "file").write_bytes(b"data")
    with override_settings(SNAPSHOTS=_local(tmp_path / "file")):
        messages = check_storage_setting()
    assert [(m.level, m.id) for m in messages] == [(WARNING, "snapshots.W002")]
    assert "it exists but is not a directory" in messages[0].msg


def test_a_location_to_be_created_in_an_existing_directory_passes(tmp_path: Any) -> None:
    with override_settings(SNAPSHOTS=_local(tmp_path / "snapshots")):
        assert check_storage_setting() == []
    assert list(tmp_path.iterdir()) == []


@pytest.mark.django_db
def test_an_unreachable_location_does_not_block_migrate(tmp_path: Any) -> None:
    (tmp_path / "file").write_bytes(b"data")
    with override_settings(SNAPSHOTS=_local(tmp_path / "file" / "snapshots")):
        call_command("migrate", verbosity=0, skip_checks=False, stdout=io.StringIO())


def test_a_backend_that_cannot_reach_its_storage_when_built_is_a_warning() -> None:
    setting = {"STORAGE": {"BACKEND": "tests.test_checks.UnreachableBackend"}}
    with override_settings(SNAPSHOTS=setting):
        messages = check_storage_setting()
    assert [(m.level, m.id) for m in messages] == [(WARNING, "snapshots.W002")]
    assert "cannot reach its storage now" in messages[0].msg
    assert "Connection refused" in messages[0].msg


class UnreachableBackend(MemoryBackend):
    """A backend that connects when built, to a server that is down."""

    def __init__(self) -> None:
        raise ConnectionRefusedError(111, "Connection refused")


# DjangoStorageBackend aliases are checked against settings.STORAGES.


def _django(alias: str) -> dict[str, Any]:
    return {
        "STORAGE": {
            "BACKEND": "django_snapshots.storage.DjangoStorageBackend",
            "OPTIONS": {"storage": alias},
            "WRAPPERS": ["django_snapshots.storage.Checksum"],
        }
    }


def test_a_mistyped_storages_alias_is_an_error_naming_it() -> None:
    with override_settings(SNAPSHOTS=_django("bakups")):
        messages = check_storage_setting()
        with pytest.raises(SystemCheckError) as raised:
            call_command("check", stdout=io.StringIO(), stderr=io.StringIO())
    assert [(m.level, m.id) for m in messages] == [(ERROR, "snapshots.E012")]
    assert "no storage alias 'bakups' in settings.STORAGES" in messages[0].msg
    assert "'default'" in messages[0].msg
    assert "STORAGES" in str(messages[0].hint)
    assert "(snapshots.E012)" in str(raised.value)


def test_a_defined_storages_alias_passes_without_building_the_storage() -> None:
    storages = {"backups": {"BACKEND": "tests.test_checks.NeverBuiltStorage"}}
    with override_settings(SNAPSHOTS=_django("backups"), STORAGES=storages):
        assert check_storage_setting() == []


class NeverBuiltStorage:
    def __init__(self) -> None:
        raise AssertionError("a system check built the storage")


# Misconfigurations say what is wrong, not "fix OPTIONS".


def test_a_wrapper_given_as_backend_is_named_as_a_wrapper() -> None:
    setting = {"STORAGE": {"BACKEND": "django_snapshots.storage.Checksum"}}
    with override_settings(SNAPSHOTS=setting):
        messages = check_storage_setting()
    assert [(m.level, m.id) for m in messages] == [(ERROR, "snapshots.E005")]
    assert "is a wrapper class, not a backend" in messages[0].msg
    assert '"WRAPPERS": ["django_snapshots.storage.Checksum"]' in str(messages[0].hint)
    assert "OPTIONS" not in str(messages[0].hint)


def test_a_backend_given_as_wrapper_is_named_as_a_backend() -> None:
    setting = {"STORAGE": {"BACKEND": MEMORY, "WRAPPERS": [MEMORY]}}
    with override_settings(SNAPSHOTS=setting):
        messages = check_storage_setting()
    assert [(m.level, m.id) for m in messages] == [(ERROR, "snapshots.E009")]
    assert "is a backend class, not a wrapper" in messages[0].msg


def test_two_checksum_layers_are_an_error_about_the_stack() -> None:
    checksum = "django_snapshots.storage.Checksum"
    wrappers = [checksum, "django_snapshots.storage.Logging", checksum]
    setting = {"STORAGE": {"BACKEND": MEMORY, "WRAPPERS": wrappers}}
    with override_settings(SNAPSHOTS=setting):
        messages = check_storage_setting()
    assert [(m.level, m.id) for m in messages] == [(ERROR, "snapshots.E010")]
    assert messages[0].msg.startswith(
        'SNAPSHOTS["STORAGE"]["WRAPPERS"][0]: \'django_snapshots.storage.Checksum\' refused '
        "the stack below it: TypeError: Checksum() over "
    )
    assert "already has a Checksum layer" in messages[0].msg
    assert "WRAPPERS" in str(messages[0].hint)
    assert "keyword arguments" not in str(messages[0].hint)


def test_a_bad_option_value_of_a_wrapper_is_not_blamed_on_the_stack() -> None:
    retry = {"WRAPPER": "django_snapshots.storage.Retry", "OPTIONS": {"attempts": 0}}
    wrappers = [retry, "django_snapshots.storage.Checksum"]
    setting = {"STORAGE": {"BACKEND": MEMORY, "WRAPPERS": wrappers}}
    with override_settings(SNAPSHOTS=setting):
        messages = check_storage_setting()
    assert [(m.level, m.id) for m in messages] == [(ERROR, "snapshots.E010")]
    assert "rejected a value in its OPTIONS" in messages[0].msg
    assert "attempts" in messages[0].msg


# Encrypt and Compress.


def _messages(snapshots: Any) -> list[tuple[int, str, str, str]]:
    with override_settings(SNAPSHOTS=snapshots):
        return [(m.level, m.id or "", m.msg, m.hint or "") for m in check_storage_setting()]


def _encrypt(*above: Any, below: Any = (), **options: Any) -> dict[str, Any]:
    wrappers = [*above, {"WRAPPER": ENCRYPT, "OPTIONS": options}, *below]
    return {"STORAGE": {"BACKEND": MEMORY, "WRAPPERS": wrappers}}


CHECKSUM = ["django_snapshots.storage.Checksum"]


@pytest.fixture
def identity_file(tmp_path: Path, settings: Any) -> Path:
    settings.BASE_DIR = tmp_path
    path = tmp_path / "backup-key.txt"
    path.write_text(f"# public key: {RECIPIENT}\n{SECRET}\n")
    path.chmod(0o600)
    return path


def test_encrypt_with_recipients_and_a_private_identity_file_passes(identity_file: Path) -> None:
    snapshots = _encrypt(below=CHECKSUM, recipients=[RECIPIENT], identities_file=identity_file.name)
    assert _messages(snapshots) == []


def test_encrypt_without_any_key_is_an_error() -> None:
    assert _messages(_encrypt(below=CHECKSUM)) == [
        (
            ERROR,
            "snapshots.E013",
            f"{WRAPPERS}[0]: Encrypt has neither recipients nor identities, so it could "
            "neither write nor read",
            'Give "recipients" (public keys, age1...) or "recipients_file" to write, and '
            '"identities" (secret keys) or "identities_file" where backups are restored; '
            "`snapshots keygen -o FILE` makes a key.",
        )
    ]


def test_encrypt_with_identities_only_is_a_warning_that_it_cannot_write() -> None:
    messages = _messages(_encrypt(below=CHECKSUM, identities=[SECRET]))
    assert messages == [
        (
            WARNING,
            "snapshots.W003",
            "the Encrypt layer Encrypt(Checksum(MemoryBackend(), algorithm='sha256'), "
            "recipients=0, identities=1) holds identities only: the stack can read and restore "
            "backups, but every write fails",
            'Give it "recipients" (the public keys, age1...) or "recipients_file" to write '
            "backups; on a machine that only restores, silence snapshots.W003.",
        )
    ]


def test_a_malformed_recipient_is_an_error_naming_its_position() -> None:
    messages = _messages(_encrypt(below=CHECKSUM, recipients=[RECIPIENT, RECIPIENT[:-2]]))
    assert [(level, id) for level, id, _, _ in messages] == [(ERROR, "snapshots.E014")]
    assert messages[0][2] == (
        f"{WRAPPERS}[0]: Encrypt rejected a key in its OPTIONS: recipients[1] is not a valid "
        "age X25519 recipient (invalid Bech32 encoding); plugin recipients are not supported"
    )
    assert messages[0][3] == (
        'Give "recipients" as a list of public keys (age1..., ssh-ed25519 ..., ssh-rsa ...) '
        'and "identities" as a list of secret keys (AGE-SECRET-KEY-1...), and files as '
        '"recipients_file" and "identities_file".'
    )


def test_a_missing_identity_file_is_an_error(tmp_path: Path, settings: Any) -> None:
    settings.BASE_DIR = tmp_path
    messages = _messages(_encrypt(recipients=[RECIPIENT], identities_file="keys/backup-key.txt"))
    assert messages == [
        (
            ERROR,
            "snapshots.E015",
            f"{WRAPPERS}[0]: Encrypt cannot read its identity file "
            f"{str(tmp_path / 'keys' / 'backup-key.txt')!r}: No such file or directory",
            "Check the path (a relative one is resolved against BASE_DIR) and that the user "
            "running Django may read the file; `snapshots keygen -o FILE` makes an identity file.",
        )
    ]


def test_an_unreadable_identity_file_is_an_error(tmp_path: Path) -> None:
    # A directory: a file without read permission is readable by root anyway.
    messages = _messages(_encrypt(recipients=[RECIPIENT], identities_file=str(tmp_path)))
    assert [(level, id) for level, id, _, _ in messages] == [(ERROR, "snapshots.E015")]
    assert messages[0][2].endswith(f"identity file {str(tmp_path)!r}: Is a directory")


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620, 0o644, 0o666], ids="{:04o}".format)
def test_an_identity_file_others_may_read_or_change_is_a_warning(
    identity_file: Path, mode: int
) -> None:
    identity_file.chmod(mode)
    snapshots = _encrypt(below=CHECKSUM, recipients=[RECIPIENT], identities_file=[identity_file])
    assert _messages(snapshots) == [
        (
            WARNING,
            "snapshots.W004",
            f'{WRAPPERS}[0]["OPTIONS"]["identities_file"][0]: the identity file '
            f"{str(identity_file)!r} holds a secret key, and users other than its owner may "
            f"read or change it (mode {mode:04o})",
            f"Restrict it to its owner: chmod 600 {identity_file}",
        )
    ]


def test_an_identity_file_given_as_a_path_object_is_checked_too(identity_file: Path) -> None:
    identity_file.chmod(0o644)
    snapshots = _encrypt(below=CHECKSUM, identities=[Path(identity_file.name)])
    assert [id for _, id, _, _ in _messages(snapshots)] == ["snapshots.W003", "snapshots.W004"]


def test_the_permission_check_only_looks_at_the_file(identity_file: Path) -> None:
    identity_file.chmod(0o644)
    snapshots = _encrypt(below=CHECKSUM, recipients=[RECIPIENT], identities_file=identity_file.name)
    before = identity_file.stat()
    _messages(snapshots)
    after = identity_file.stat()
    assert (after.st_mode, after.st_mtime_ns) == (before.st_mode, before.st_mtime_ns)


def test_compress_below_encrypt_is_a_warning() -> None:
    snapshots = _encrypt(below=[COMPRESS, *CHECKSUM], recipients=[RECIPIENT])
    assert _messages(snapshots) == [
        (
            WARNING,
            "snapshots.W005",
            "Compress sits below Encrypt in the storage stack, so it compresses ciphertext, "
            "which does not compress: objects are stored as large as without it, and the time "
            "is spent for nothing",
            "List Compress above Encrypt in WRAPPERS (outermost first), so that the stack is "
            "Compress(Encrypt(...)): data is compressed, then encrypted.",
        )
    ]


def test_compress_above_encrypt_passes() -> None:
    assert _messages(_encrypt(COMPRESS, below=CHECKSUM, recipients=[RECIPIENT])) == []


def test_compress_below_encrypt_in_a_stack_built_in_python_is_a_warning() -> None:
    stack = Checksum(Encrypt(Compress(MemoryBackend()), recipients=[RECIPIENT]))
    assert [id for _, id, _, _ in _messages({"STORAGE": stack})] == ["snapshots.W005"]


def test_no_check_message_quotes_any_part_of_a_secret_key(
    identity_file: Path, tmp_path: Path
) -> None:
    identity_file.chmod(0o644)
    settings_with_problems = [
        _encrypt(below=[COMPRESS], identities=[SECRET], identities_file=identity_file.name),
        _encrypt(recipients=[SECRET]),
        _encrypt(identities=[SECRET[:-1] + "Q"]),
        _encrypt(identities=SECRET),
        _encrypt(identities_file=SECRET),
        _encrypt(recipients=[RECIPIENT], identities_file=[f"{SECRET}\n"]),
        _encrypt(recipients=[RECIPIENT], **{SECRET: 1}),
        {"STORAGE": {"BACKEND": MEMORY, "OPTIONS": {SECRET: 1}}},
    ]
    seen = set()
    for snapshots in settings_with_problems:
        for _level, id, msg, hint in _messages(snapshots):
            seen.add(id)
            assert_no_secret(msg + hint)
    assert seen >= {"snapshots.W003", "snapshots.W004", "snapshots.W005", "snapshots.E014"}
