"""SNAPSHOTS["STORAGE"] -> a storage stack: both styles, the default, caching
and rebuilds, and an error naming the entry at fault for each misconfiguration."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyrage
import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.test import override_settings

from django_snapshots import SnapshotError, get_storage
from django_snapshots.conf import (
    DEFAULT_DIRECTORY,
    InvalidStorageSettingError,
    build_storage,
    identity_files,
)
from django_snapshots.storage import (
    AdvancedSnapshotStorage,
    Checksum,
    Compress,
    Encrypt,
    LocalFileSystemBackend,
    Logging,
    MemoryBackend,
    Prefix,
    Retry,
)

ROOT = Path(__file__).resolve().parent.parent
MEMORY = "django_snapshots.storage.MemoryBackend"
STORAGE = 'SNAPSHOTS["STORAGE"]'


class CountingBackend(MemoryBackend):
    """A MemoryBackend that counts how many were built, slowly enough for
    concurrent first calls to overlap."""

    built = 0

    def __init__(self) -> None:
        super().__init__()
        type(self).built += 1
        time.sleep(0.05)


class NotAStorage:
    def __init__(self, **options: Any) -> None:
        self.options = options


LOCAL = "django_snapshots.storage.LocalFileSystemBackend"
PREFIX = "django_snapshots.storage.Prefix"
WRAPPERS = f'{STORAGE}["WRAPPERS"]'


def _case(snapshots: Any, check_id: str, *fragments: str, name: str) -> Any:
    return pytest.param(snapshots, check_id, list(fragments), id=name)


def _stack(*wrappers: Any, backend: Any = MEMORY) -> dict[str, Any]:
    return {"STORAGE": {"BACKEND": backend, "WRAPPERS": list(wrappers)}}


ENCRYPT = "django_snapshots.storage.Encrypt"
COMPRESS = "django_snapshots.storage.Compress"
# Real keys, so that the messages that must not quote them are tested on
# what an operator would paste.
IDENTITY = pyrage.x25519.Identity.generate()
SECRET = str(IDENTITY)
RECIPIENT = str(IDENTITY.to_public())


def _encrypt(**options: Any) -> dict[str, Any]:
    return _stack({"WRAPPER": ENCRYPT, "OPTIONS": options}, "django_snapshots.storage.Checksum")


def secret_fragments(secret: str = SECRET) -> list[str]:
    """Every 8 characters of *secret* after its fixed ``AGE-SECRET-KEY-1``:
    a message holding none of them quotes no part of the key."""
    body = secret.removeprefix("AGE-SECRET-KEY-1")
    return [body[start : start + 8] for start in range(len(body) - 7)]


def assert_no_secret(text: str, secret: str = SECRET) -> None:
    leaked = [part for part in secret_fragments(secret) if part in text.upper()]
    assert not leaked, f"a message quotes part of the secret key: {text}"


# (SNAPSHOTS setting, check id, fragments the message must contain)
MISCONFIGURATIONS: list[Any] = [
    _case(["STORAGE"], "snapshots.E001", "SNAPSHOTS must be a dict", name="not-a-dict"),
    _case({"STORAGES": {"BACKEND": MEMORY}}, "snapshots.E001", "unknown key", "'STORAGES'",
          name="unknown-top-level-key"),
    _case({"STORAGE": object()}, "snapshots.E002", STORAGE, "must be a storage",
          "'object' object", name="non-storage-object"),
    _case({"STORAGE": MEMORY}, "snapshots.E002", STORAGE, "'str' object",
          name="bare-dotted-path"),
    _case({"STORAGE": MemoryBackend}, "snapshots.E002", STORAGE,
          "is the class MemoryBackend, not a storage object", name="class-not-instance"),
    _case({"STORAGE": {"BACKEND": MEMORY, "WRAPPER": []}}, "snapshots.E003", STORAGE,
          "unknown key", "'WRAPPER'", name="unknown-storage-key"),
    _case({"STORAGE": {"OPTIONS": {}}}, "snapshots.E003", f'{STORAGE}["BACKEND"]', "None",
          name="missing-backend"),
    _case({"STORAGE": {"BACKEND": MemoryBackend}}, "snapshots.E003", f'{STORAGE}["BACKEND"]',
          "dotted path", name="backend-not-a-string"),
    _case({"STORAGE": {"BACKEND": MEMORY, "OPTIONS": ["x"]}}, "snapshots.E003",
          f'{STORAGE}["OPTIONS"]', "dict of keyword arguments", name="options-not-a-dict"),
    _case({"STORAGE": {"BACKEND": MEMORY, "OPTIONS": {1: "x"}}}, "snapshots.E003",
          f'{STORAGE}["OPTIONS"]', "option name of type int (entry 1)", "must be strings",
          name="options-name-not-a-string"),
    _case({"STORAGE": {"BACKEND": {"location": "/srv"}}}, "snapshots.E003",
          f'{STORAGE}["BACKEND"]', "dotted path", "not a 'dict' object",
          name="backend-a-dict"),
    _case({"STORAGE": {"BACKEND": MEMORY, "WRAPPERS": "django_snapshots.storage.Logging"}},
          "snapshots.E003", WRAPPERS, "must be a list", name="wrappers-not-a-list"),
    _case({"STORAGE": {"BACKEND": "django_snapshots.storage.NoSuchBackend"}},
          "snapshots.E004", f'{STORAGE}["BACKEND"]', "cannot import", "NoSuchBackend",
          name="unknown-backend-class"),
    _case({"STORAGE": {"BACKEND": "no_such_package.Backend"}}, "snapshots.E004",
          f'{STORAGE}["BACKEND"]', "cannot import", "no_such_package",
          name="unknown-backend-module"),
    _case({"STORAGE": {"BACKEND": "django_snapshots.storage.keys.MAX_KEY_BYTES"}},
          "snapshots.E005", f'{STORAGE}["BACKEND"]', "'int' object, not a backend class",
          name="backend-not-callable"),
    _case({"STORAGE": {"BACKEND": "tests.test_conf.NotAStorage"}}, "snapshots.E005",
          f'{STORAGE}["BACKEND"]', "built a NotAStorage, which is not a storage",
          name="backend-not-a-storage"),
    _case({"STORAGE": {"BACKEND": LOCAL, "OPTIONS": {"locaton": "x"}}}, "snapshots.E006",
          f'{STORAGE}["BACKEND"]', "TypeError", "locaton", name="backend-unknown-option"),
    _case({"STORAGE": {"BACKEND": LOCAL, "OPTIONS": {"location": ""}}}, "snapshots.E006",
          f'{STORAGE}["BACKEND"]', "ValueError", "location", name="backend-bad-option-value"),
    _case(_stack("django_snapshots.storage.Logging", 42), "snapshots.E007", f"{WRAPPERS}[1]",
          "'int' object", name="wrapper-not-str-or-dict"),
    _case(_stack({"OPTIONS": {"prefix": "a"}}), "snapshots.E007", f"{WRAPPERS}[0]",
          'needs "WRAPPER"', name="wrapper-dict-without-wrapper"),
    _case(_stack({"WRAPPER": PREFIX, "OPTION": {"prefix": "a"}}), "snapshots.E007",
          f"{WRAPPERS}[0]", "unknown key", "'OPTION'", name="wrapper-dict-unknown-key"),
    _case(_stack({"WRAPPER": PREFIX, "OPTIONS": {"prefix": "a", b"x": 1}}), "snapshots.E007",
          f'{WRAPPERS}[0]["OPTIONS"]', "option name of type bytes (entry 2)",
          name="wrapper-options-name-not-a-string"),
    _case(_stack("django_snapshots.storage.Logging", ""), "snapshots.E007", f"{WRAPPERS}[1]",
          "is an empty string", name="wrapper-empty-string"),
    _case(_stack({"WRAPPER": 42}), "snapshots.E007", f"{WRAPPERS}[0]", 'needs "WRAPPER"',
          "not a 'int' object", name="wrapper-path-not-a-string"),
    _case(_stack({"WRAPPER": PREFIX, "OPTIONS": "tenant-a"}), "snapshots.E007",
          f'{WRAPPERS}[0]["OPTIONS"]', "dict of keyword arguments",
          name="wrapper-options-not-a-dict"),
    _case(_stack("django_snapshots.storage.Logging", "django_snapshots.storage.Checksumm"),
          "snapshots.E008", f"{WRAPPERS}[1]", "cannot import", "Checksumm",
          name="unknown-wrapper"),
    _case(_stack("django_snapshots.storage.keys.MAX_KEY_BYTES"), "snapshots.E009",
          f"{WRAPPERS}[0]", "'int' object, not a wrapper class", name="wrapper-not-callable"),
    _case(_stack("builtins.repr"), "snapshots.E009", f"{WRAPPERS}[0]",
          "built a str, which is not a storage", name="wrapper-not-a-storage"),
    _case(_stack(PREFIX), "snapshots.E010", f"{WRAPPERS}[0]", "TypeError", "prefix",
          name="wrapper-missing-option"),
    _case(_stack({"WRAPPER": "django_snapshots.storage.Retry", "OPTIONS": {"attempt": 3}}),
          "snapshots.E010", f"{WRAPPERS}[0]", "TypeError", "attempt",
          name="wrapper-unknown-option"),
    _case(_stack("django_snapshots.storage.Logging",
                 {"WRAPPER": PREFIX, "OPTIONS": {"prefix": "../tenant"}}),
          "snapshots.E011", f"{WRAPPERS}[1]", "'..'", name="invalid-prefix"),
    _case(_stack({"WRAPPER": PREFIX, "OPTIONS": {"prefix": "/abs"}}), "snapshots.E011",
          f"{WRAPPERS}[0]", "'/abs'", name="absolute-prefix"),
    _case(_encrypt(), "snapshots.E013", f"{WRAPPERS}[0]: Encrypt has neither recipients nor "
          "identities", name="encrypt-without-keys"),
    _case(_encrypt(recipients=[], identities=()), "snapshots.E013", f"{WRAPPERS}[0]",
          "neither recipients nor identities", name="encrypt-with-empty-keys"),
    _case(_encrypt(recipients=[RECIPIENT, "age1notakey"]), "snapshots.E014",
          f"{WRAPPERS}[0]: Encrypt rejected a key", "recipients[1] is not a valid",
          name="malformed-recipient"),
    _case(_encrypt(recipients=[SECRET]), "snapshots.E014", "recipients[0] is a secret key",
          name="secret-key-as-recipient"),
    _case(_encrypt(identities=SECRET), "snapshots.E014", "must be a list",
          name="identities-not-a-list"),
    _case(_encrypt(recipients=[RECIPIENT], identities_file="/nonexistent/backup-key.txt"),
          "snapshots.E015", f"{WRAPPERS}[0]: Encrypt cannot read its identity file "
          "'/nonexistent/backup-key.txt': No such file or directory", name="missing-identity-file"),
    _case(_encrypt(recipients_file=["/nonexistent/backup.pub"]), "snapshots.E015",
          "cannot read its recipients file '/nonexistent/backup.pub'",
          name="missing-recipients-file"),
    _case(_encrypt(recipients=[RECIPIENT], identities_file=3), "snapshots.E010",
          f'{WRAPPERS}[0]["OPTIONS"]["identities_file"] must be the path of a file',
          name="identities-file-not-a-path"),
    _case(_encrypt(recipients=[RECIPIENT], identities_file=[SECRET]), "snapshots.E010",
          f'{WRAPPERS}[0]["OPTIONS"]["identities_file"][0] is a key, not the path of a file',
          name="secret-key-as-identities-file"),
]  # fmt: skip


@pytest.fixture(autouse=True)
def fresh_storage_cache() -> Iterator[None]:
    """Start and end each test without a cached stack, whatever earlier
    tests left (a stack built from the test settings, for instance)."""
    forget_storage()
    yield
    forget_storage()


def forget_storage() -> None:
    # What a change of the setting does: the stack is built again on demand.
    setting_changed.send(sender=None, setting="SNAPSHOTS", value=None, enter=False)


def test_a_storage_object_is_used_as_given() -> None:
    storage = Logging(MemoryBackend())
    with override_settings(SNAPSHOTS={"STORAGE": storage}):
        assert get_storage() is storage


def test_data_builds_the_backend_with_its_options(tmp_path: Path) -> None:
    setting = {
        "BACKEND": "django_snapshots.storage.LocalFileSystemBackend",
        "OPTIONS": {"location": str(tmp_path / "store")},
    }
    with override_settings(SNAPSHOTS={"STORAGE": setting}):
        storage = get_storage()
    assert isinstance(storage, LocalFileSystemBackend)
    assert storage.location == str(tmp_path / "store")


def test_wrappers_are_listed_outermost_first_as_the_stack_reads() -> None:
    setting = {
        "BACKEND": MEMORY,
        "WRAPPERS": [
            "django_snapshots.storage.Logging",
            {"WRAPPER": "django_snapshots.storage.Retry", "OPTIONS": {"attempts": 2}},
            "django_snapshots.storage.Checksum",
            {"WRAPPER": "django_snapshots.storage.Prefix", "OPTIONS": {"prefix": "tenant-a"}},
        ],
    }
    with override_settings(SNAPSHOTS={"STORAGE": setting}):
        storage = get_storage()
    layers = []
    layer: Any = storage
    while layer is not None:
        layers.append(layer)
        layer = getattr(layer, "__wrapped__", None)
    assert [type(layer) for layer in layers[-1:]] == [MemoryBackend]
    assert isinstance(layers[0], Logging)
    assert isinstance(layers[1], Retry)
    assert isinstance(layers[2], Checksum)
    assert isinstance(layers[3], Prefix)
    assert "attempts=2" in repr(layers[1])
    assert isinstance(storage, AdvancedSnapshotStorage)


def test_wrappers_may_be_a_tuple_and_options_may_be_omitted() -> None:
    setting = {"BACKEND": MEMORY, "WRAPPERS": ("django_snapshots.storage.Logging",)}
    with override_settings(SNAPSHOTS={"STORAGE": setting}):
        assert repr(get_storage()) == "Logging(MemoryBackend())"


def test_a_stack_built_from_data_works_end_to_end() -> None:
    setting = {
        "BACKEND": MEMORY,
        "WRAPPERS": [{"WRAPPER": "django_snapshots.storage.Prefix", "OPTIONS": {"prefix": "t"}}],
    }
    with override_settings(SNAPSHOTS={"STORAGE": setting}):
        storage = get_storage()
    storage.write("db.dump", io.BytesIO(b"dump"))
    assert storage.__wrapped__.list("") == ["t/db.dump"]


def test_without_the_setting_the_default_is_checksummed_local_storage_under_base_dir(
    tmp_path: Path, settings: Any
) -> None:
    settings.BASE_DIR = tmp_path
    storage = get_storage()
    assert isinstance(storage, Checksum)
    backend = storage.__wrapped__
    assert isinstance(backend, LocalFileSystemBackend)
    assert backend.location == str(tmp_path / DEFAULT_DIRECTORY)


def test_without_base_dir_the_default_lives_in_the_current_directory(
    tmp_path: Path, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    if hasattr(settings, "BASE_DIR"):
        del settings.BASE_DIR
    storage = get_storage()
    assert storage.__wrapped__.location == str(tmp_path / DEFAULT_DIRECTORY)  # type: ignore[attr-defined]


def test_a_snapshots_dict_without_storage_means_the_default(tmp_path: Path, settings: Any) -> None:
    settings.BASE_DIR = tmp_path
    settings.SNAPSHOTS = {}
    assert repr(get_storage()) == repr(
        Checksum(LocalFileSystemBackend(tmp_path / DEFAULT_DIRECTORY))
    )


def test_the_stack_is_built_once_and_shared() -> None:
    with override_settings(SNAPSHOTS={"STORAGE": {"BACKEND": MEMORY}}):
        assert get_storage() is get_storage()


def test_concurrent_first_calls_build_one_stack() -> None:
    CountingBackend.built = 0
    results: list[Any] = []
    barrier = threading.Barrier(16)

    def call() -> None:
        barrier.wait()
        results.append(get_storage())

    with override_settings(SNAPSHOTS={"STORAGE": {"BACKEND": "tests.test_conf.CountingBackend"}}):
        threads = [threading.Thread(target=call) for _ in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert CountingBackend.built == 1
    assert len(results) == 16
    assert all(result is results[0] for result in results)


def test_the_stack_is_rebuilt_when_the_setting_changes() -> None:
    first, second = MemoryBackend(), MemoryBackend()
    with override_settings(SNAPSHOTS={"STORAGE": first}):
        assert get_storage() is first
        with override_settings(SNAPSHOTS={"STORAGE": second}):
            assert get_storage() is second
        assert get_storage() is first


def test_a_data_stack_is_rebuilt_not_reused_after_a_setting_change() -> None:
    setting = {"SNAPSHOTS": {"STORAGE": {"BACKEND": MEMORY}}}
    with override_settings(**setting):
        before = get_storage()
    with override_settings(**setting):
        after = get_storage()
    assert before is not after


def test_the_default_follows_a_change_of_base_dir(tmp_path: Path, settings: Any) -> None:
    settings.BASE_DIR = tmp_path / "one"
    assert get_storage().__wrapped__.location.endswith(f"one/{DEFAULT_DIRECTORY}")  # type: ignore[attr-defined]
    settings.BASE_DIR = tmp_path / "two"
    assert get_storage().__wrapped__.location.endswith(f"two/{DEFAULT_DIRECTORY}")  # type: ignore[attr-defined]


@pytest.mark.parametrize(("snapshots", "check_id", "fragments"), MISCONFIGURATIONS)
def test_a_misconfiguration_raises_improperly_configured_naming_the_entry(
    snapshots: Any, check_id: str, fragments: list[str]
) -> None:
    with override_settings(SNAPSHOTS=snapshots), pytest.raises(ImproperlyConfigured) as raised:
        get_storage()
    error = raised.value
    assert isinstance(error, InvalidStorageSettingError)
    assert isinstance(error, SnapshotError)
    assert error.id == check_id
    for fragment in fragments:
        assert fragment in str(error)
    assert error.hint
    assert str(error).endswith(error.hint)


def test_a_misconfiguration_is_raised_again_until_it_is_fixed() -> None:
    bad = {"STORAGE": {"BACKEND": "django_snapshots.storage.NoSuchBackend"}}
    with override_settings(SNAPSHOTS=bad):
        for _ in range(2):
            with pytest.raises(InvalidStorageSettingError):
                get_storage()
        with override_settings(SNAPSHOTS={"STORAGE": {"BACKEND": MEMORY}}):
            assert isinstance(get_storage(), MemoryBackend)


def test_an_error_never_echoes_option_values() -> None:
    secret = "s3cr3t-value-never-shown"
    bad = {"STORAGE": {"BACKEND": MEMORY, "OPTIONS": {"secret_access_key": secret}}}
    with override_settings(SNAPSHOTS=bad), pytest.raises(InvalidStorageSettingError) as raised:
        get_storage()
    assert "secret_access_key" in str(raised.value)
    assert secret not in str(raised.value)
    assert secret not in repr(raised.value.args)


def test_an_option_name_that_is_not_a_string_is_named_by_its_type_only() -> None:
    secret = b"s3cr3t-value-never-shown"
    bad = {"STORAGE": {"BACKEND": MEMORY, "OPTIONS": {"location": "x", secret: "y"}}}
    with override_settings(SNAPSHOTS=bad), pytest.raises(InvalidStorageSettingError) as raised:
        get_storage()
    assert raised.value.message == (
        f'{STORAGE}["OPTIONS"] has an option name of type bytes (entry 2); option names are '
        "keyword argument names and must be strings"
    )
    assert "s3cr3t" not in str(raised.value)


def test_a_misplaced_value_is_never_echoed_as_a_backend_or_wrapper() -> None:
    secret = "s3cr3t-value-never-shown"
    for bad in (
        {"STORAGE": {"BACKEND": {"secret_access_key": secret}}},
        _stack({"WRAPPER": {"secret_access_key": secret}}),
    ):
        with override_settings(SNAPSHOTS=bad), pytest.raises(InvalidStorageSettingError) as raised:
            get_storage()
        assert "'dict' object" in str(raised.value)
        assert secret not in str(raised.value)


def test_importing_the_package_needs_no_django_settings(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env["PYTHONPATH"] = str(ROOT)
    code = "import django_snapshots; print(django_snapshots.get_storage.__name__)"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "get_storage"


# A relative location follows BASE_DIR, never the current directory.


def test_a_relative_location_is_resolved_against_base_dir(
    tmp_path: Path, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir("/")
    settings.BASE_DIR = tmp_path / "project"
    settings.SNAPSHOTS = {"STORAGE": {"BACKEND": LOCAL, "OPTIONS": {"location": "relative-snaps"}}}
    storage = get_storage()
    assert isinstance(storage, LocalFileSystemBackend)
    assert storage.location == str(tmp_path / "project" / "relative-snaps")
    storage.write("k", io.BytesIO(b"x"))
    assert (tmp_path / "project" / "relative-snaps" / "k").read_bytes() == b"x"


def test_a_relative_location_follows_a_change_of_base_dir(tmp_path: Path, settings: Any) -> None:
    settings.SNAPSHOTS = {"STORAGE": {"BACKEND": LOCAL, "OPTIONS": {"location": "a/b"}}}
    settings.BASE_DIR = str(tmp_path / "one")
    assert get_storage().location == str(tmp_path / "one" / "a" / "b")  # type: ignore[attr-defined]
    settings.BASE_DIR = str(tmp_path / "two")
    assert get_storage().location == str(tmp_path / "two" / "a" / "b")  # type: ignore[attr-defined]


def test_an_absolute_location_ignores_base_dir(tmp_path: Path, settings: Any) -> None:
    settings.BASE_DIR = tmp_path / "project"
    settings.SNAPSHOTS = {"STORAGE": {"BACKEND": LOCAL, "OPTIONS": {"location": str(tmp_path)}}}
    assert get_storage().location == str(tmp_path)  # type: ignore[attr-defined]


def test_without_base_dir_a_relative_location_is_resolved_once_in_the_current_directory(
    tmp_path: Path, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    if hasattr(settings, "BASE_DIR"):
        del settings.BASE_DIR
    settings.SNAPSHOTS = {"STORAGE": {"BACKEND": LOCAL, "OPTIONS": {"location": "snaps"}}}
    storage = get_storage()
    monkeypatch.chdir("/")
    assert storage.location == str(tmp_path / "snaps")  # type: ignore[attr-defined]


def test_building_the_default_stack_creates_nothing(tmp_path: Path, settings: Any) -> None:
    settings.BASE_DIR = tmp_path
    get_storage()
    assert list(tmp_path.iterdir()) == []


# Wrapper classes may be given as classes.


def test_wrappers_may_be_given_as_classes() -> None:
    setting = {
        "BACKEND": MEMORY,
        "WRAPPERS": [Logging, {"WRAPPER": Prefix, "OPTIONS": {"prefix": "t"}}, Checksum],
    }
    with override_settings(SNAPSHOTS={"STORAGE": setting}):
        storage = get_storage()
    assert repr(storage) == "Logging(Prefix(Checksum(MemoryBackend(), algorithm='sha256'), 't'))"


def test_a_wrapper_class_that_is_refused_is_named_by_its_dotted_path() -> None:
    setting = {"BACKEND": MEMORY, "WRAPPERS": [Prefix]}
    with (
        override_settings(SNAPSHOTS={"STORAGE": setting}),
        pytest.raises(InvalidStorageSettingError) as raised,
    ):
        get_storage()
    assert raised.value.id == "snapshots.E010"
    assert f"{WRAPPERS}[0]: 'django_snapshots.storage.wrappers.prefix.Prefix'" in str(raised.value)


def test_a_wrapper_instance_is_not_a_wrapper_entry() -> None:
    setting = {"BACKEND": MEMORY, "WRAPPERS": [Logging(MemoryBackend())]}
    with (
        override_settings(SNAPSHOTS={"STORAGE": setting}),
        pytest.raises(
            InvalidStorageSettingError, match="must be a dotted path, a wrapper class or a dict"
        ),
    ):
        get_storage()


# Encrypt and Compress in settings data.


@pytest.fixture
def key_files(tmp_path: Path) -> Path:
    """A BASE_DIR holding an identity file and a recipients file, as
    ``snapshots keygen`` and ``age-keygen -y`` write them."""
    (tmp_path / "keys").mkdir()
    identity = tmp_path / "keys" / "backup-key.txt"
    identity.write_text(f"# public key: {RECIPIENT}\n{SECRET}\n")
    identity.chmod(0o600)
    (tmp_path / "keys" / "backup.pub").write_text(f"# the ops team\n{RECIPIENT}\n")
    return tmp_path


def test_encrypt_reads_its_key_files_relative_to_base_dir(key_files: Path, settings: Any) -> None:
    settings.BASE_DIR = key_files
    setting = _encrypt(recipients_file="keys/backup.pub", identities_file=["keys/backup-key.txt"])
    with override_settings(SNAPSHOTS=setting):
        storage = get_storage()
        files = identity_files()
    assert repr(storage) == (
        "Encrypt(Checksum(MemoryBackend(), algorithm='sha256'), recipients=1, identities=1)"
    )
    storage.write("db/a.dump", io.BytesIO(b"dump"))
    assert storage.__wrapped__.read("db/a.dump").read(22) == b"age-encryption.org/v1\n"
    assert storage.read("db/a.dump").read() == b"dump"
    assert [(file.where, file.path) for file in files] == [
        (f'{WRAPPERS}[0]["OPTIONS"]["identities_file"][0]', key_files / "keys" / "backup-key.txt")
    ]


def test_encrypt_reads_its_key_files_when_the_stack_is_built(
    key_files: Path, settings: Any
) -> None:
    settings.BASE_DIR = key_files
    with override_settings(SNAPSHOTS=_encrypt(identities_file="keys/backup-key.txt")):
        storage = get_storage()
        (key_files / "keys" / "backup-key.txt").unlink()
        assert get_storage() is storage
    writer = Encrypt(MemoryBackend(), recipients=[RECIPIENT])
    writer.write("k", io.BytesIO(b"x"))
    assert Encrypt(writer.__wrapped__, identities=list(storage._self_identities)).read("k").read()


def test_encrypt_strings_are_keys_and_path_objects_files_relative_to_base_dir(
    key_files: Path, settings: Any
) -> None:
    settings.BASE_DIR = key_files
    setting = _encrypt(recipients=[RECIPIENT], identities=[Path("keys/backup-key.txt")])
    with override_settings(SNAPSHOTS=setting):
        storage = get_storage()
        files = identity_files()
    storage.write("k", io.BytesIO(b"both ways"))
    assert storage.read("k").read() == b"both ways"
    assert [file.path for file in files] == [key_files / "keys" / "backup-key.txt"]
    assert files[0].where == f'{WRAPPERS}[0]["OPTIONS"]["identities"][0]'


def test_encrypt_key_files_are_added_after_the_keys_given_as_strings(
    key_files: Path, settings: Any
) -> None:
    other = pyrage.x25519.Identity.generate()
    settings.BASE_DIR = key_files
    setting = _encrypt(recipients=[str(other.to_public())], recipients_file="keys/backup.pub")
    with override_settings(SNAPSHOTS=setting):
        storage = get_storage()
    storage.write("k", io.BytesIO(b"for both"))
    for identity in (IDENTITY, other):
        assert Encrypt(storage.__wrapped__, identities=[str(identity)]).read("k").read() == (
            b"for both"
        )


def test_a_relative_key_file_without_base_dir_is_read_from_the_current_directory(
    key_files: Path, monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    del settings.BASE_DIR
    monkeypatch.chdir(key_files / "keys")
    with override_settings(SNAPSHOTS=_encrypt(identities_file="backup-key.txt")):
        files = identity_files()
    assert [file.path for file in files] == [key_files / "keys" / "backup-key.txt"]


def test_a_directory_as_identity_file_is_an_error_not_an_unreachable_storage(
    tmp_path: Path,
) -> None:
    setting = _encrypt(recipients=[RECIPIENT], identities_file=str(tmp_path))
    with override_settings(SNAPSHOTS=setting), pytest.raises(InvalidStorageSettingError) as raised:
        get_storage()
    assert raised.value.id == "snapshots.E015"
    assert raised.value.message == (
        f"{WRAPPERS}[0]: Encrypt cannot read its identity file {str(tmp_path)!r}: Is a directory"
    )


def test_a_misspelt_encrypt_option_is_named_rather_than_reported_as_no_key() -> None:
    with (
        override_settings(SNAPSHOTS=_encrypt(recipient=[RECIPIENT])),
        pytest.raises(InvalidStorageSettingError) as raised,
    ):
        get_storage()
    assert raised.value.id == "snapshots.E010"
    assert "unexpected keyword argument 'recipient'" in raised.value.message


def test_encrypt_without_pyrage_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyrage", None)
    with (
        override_settings(SNAPSHOTS=_encrypt(recipients=[RECIPIENT])),
        pytest.raises(InvalidStorageSettingError) as raised,
    ):
        get_storage()
    assert raised.value.id == "snapshots.E008"
    assert raised.value.message == (
        f"{WRAPPERS}[0]: 'django_snapshots.storage.Encrypt' needs a package that is not "
        "installed: Encrypt needs pyrage: pip install 'django-snapshots[encrypt]'"
    )


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"recipients": [SECRET]}, id="secret-as-recipient"),
        pytest.param({"identities": SECRET}, id="secret-not-in-a-list"),
        pytest.param({"identities": [SECRET[:-3] + "QQQ"]}, id="secret-with-a-typo"),
        pytest.param({"identities": [SECRET.replace("AGE-", "AEG-")]}, id="misspelt-prefix"),
        pytest.param({"identities_file": SECRET}, id="secret-as-identities-file"),
        pytest.param({"recipients_file": [SECRET]}, id="secret-as-recipients-file"),
        pytest.param({"identities_file": f"{SECRET}\n"}, id="secret-line-as-file"),
        pytest.param({"recipients": [RECIPIENT], SECRET: 1}, id="secret-as-option-name"),
    ],
)
def test_no_message_quotes_any_part_of_a_secret_key(options: dict[str, Any]) -> None:
    with (
        override_settings(SNAPSHOTS=_encrypt(**options)),
        pytest.raises(InvalidStorageSettingError) as raised,
    ):
        get_storage()
    assert_no_secret(str(raised.value))
    assert_no_secret(repr(raised.value.__cause__))


def test_compress_takes_its_options_from_settings() -> None:
    setting = _stack({"WRAPPER": COMPRESS, "OPTIONS": {"level": 19}}, Checksum)
    with override_settings(SNAPSHOTS=setting):
        storage = get_storage()
    assert isinstance(storage, Compress)
    assert repr(storage) == "Compress(Checksum(MemoryBackend(), algorithm='sha256'), level=19)"
    storage.write("k", io.BytesIO(b"[]" * 10_000))
    assert storage.__wrapped__.read("k").read(4) == b"(\xb5/\xfd"
    assert storage.read("k").read() == b"[]" * 10_000


def test_compress_rejects_a_bad_level_as_a_wrapper_option() -> None:
    setting = _stack({"WRAPPER": COMPRESS, "OPTIONS": {"level": 99}})
    with override_settings(SNAPSHOTS=setting), pytest.raises(InvalidStorageSettingError) as raised:
        get_storage()
    assert raised.value.id == "snapshots.E010"
    assert "level" in raised.value.message


def test_compress_over_encrypt_in_settings_compresses_then_encrypts(
    key_files: Path, settings: Any
) -> None:
    settings.BASE_DIR = key_files
    setting = _stack(
        COMPRESS,
        {"WRAPPER": ENCRYPT, "OPTIONS": {"recipients": [RECIPIENT], "identities": [SECRET]}},
        "django_snapshots.storage.Checksum",
    )
    with override_settings(SNAPSHOTS=setting):
        storage = get_storage()
    data = b"0123456789" * 100_000
    storage.write("k", io.BytesIO(data))
    stored = storage.__wrapped__.__wrapped__.read("k").read()
    assert stored.startswith(b"age-encryption.org/v1\n")
    assert len(stored) < len(data) // 10
    assert storage.read("k").read() == data


def test_build_storage_builds_a_new_stack_from_data_each_time() -> None:
    data = {
        "BACKEND": "django_snapshots.storage.MemoryBackend",
        "WRAPPERS": ["django_snapshots.storage.Checksum"],
    }
    first, second = build_storage(data), build_storage(data)
    assert repr(first) == "Checksum(MemoryBackend(), algorithm='sha256')"
    assert first is not second


def test_build_storage_names_the_setting_it_was_given_in_its_errors() -> None:
    with pytest.raises(InvalidStorageSettingError) as raised:
        build_storage({"BACKEND": "nowhere.Backend"}, setting='MYAPP["ARCHIVE"]')
    assert str(raised.value).startswith('MYAPP["ARCHIVE"]["BACKEND"]: cannot import')
    assert raised.value.id == "snapshots.E004"
