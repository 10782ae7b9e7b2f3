"""Tests for the Encrypt wrapper."""

from __future__ import annotations

import base64
import gc
import hashlib
import hmac
import io
import itertools
import os
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pyrage
import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa, x25519
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from django_snapshots.exceptions import (
    SnapshotEncryptionError,
    SnapshotError,
    SnapshotIntegrityError,
    SnapshotStoragePathError,
)
from django_snapshots.storage import (
    AdvancedSnapshotStorage,
    Checksum,
    LocalFileSystemBackend,
    Logging,
    MemoryBackend,
    Retry,
)
from django_snapshots.storage.keys import MAX_KEY_BYTES
from django_snapshots.storage.wrappers.encrypt import AdvancedEncrypt, Encrypt
from django_snapshots.storage.wrappers.retry import is_transient
from django_snapshots.testing import StorageConformance, assert_intercepts_every_method
from tests.test_retry import INSTANT, AdvancedScripted, BasicMemory, Fault, Scripted, noise

CHUNK = 64 * 1024  # age's plaintext chunk
TAG = 16
BOUNDARY_SIZES = [
    0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK - 1, 2 * CHUNK, 2 * CHUNK + 1,
    3 * CHUNK - 1, 3 * CHUNK, 3 * CHUNK + 1,
]  # fmt: skip


# An independent implementation of the age v1 format, written from its
# specification (https://age-encryption.org/v1) with cryptography's
# primitives: X25519 recipients, HKDF-SHA256, HMAC-SHA256, ChaCha20-Poly1305.

_BECH32 = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"


def _bech32_polymod(values: list[int]) -> int:
    generator = [0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3]
    check = 1
    for value in values:
        top = check >> 25
        check = (check & 0x1FFFFFF) << 5 ^ value
        for i in range(5):
            check ^= generator[i] if (top >> i) & 1 else 0
    return check


def bech32(hrp: str, data: bytes) -> str:
    bits = "".join(f"{byte:08b}" for byte in data)
    bits += "0" * (-len(bits) % 5)
    words = [int(bits[i : i + 5], 2) for i in range(0, len(bits), 5)]
    expanded = [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]
    polymod = _bech32_polymod(expanded + words + [0] * 6) ^ 1
    checksum = [(polymod >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(_BECH32[w] for w in words + checksum)


def bech32_decode(text: str) -> tuple[str, bytes]:
    """The human-readable part and the data of a Bech32 string, checksum checked."""
    text = text.lower()
    hrp, _, rest = text.rpartition("1")
    words = [_BECH32.index(c) for c in rest]
    expanded = [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]
    if _bech32_polymod(expanded + words) != 1:
        raise ValueError("bad Bech32 checksum")
    bits = "".join(f"{word:05b}" for word in words[:-6])
    return hrp, bytes(int(bits[i : i + 8], 2) for i in range(0, len(bits) - 7, 8))


class SpecKey:
    """An X25519 key pair, with its age encodings."""

    @classmethod
    def from_identity(cls, identity: str) -> SpecKey:
        """The key pair of an ``AGE-SECRET-KEY-1...`` identity."""
        hrp, secret = bech32_decode(identity)
        assert hrp == "age-secret-key-"
        return cls(x25519.X25519PrivateKey.from_private_bytes(secret))

    def __init__(self, private: x25519.X25519PrivateKey | None = None) -> None:
        self.private = private or x25519.X25519PrivateKey.generate()
        raw = serialization.Encoding.Raw
        self.secret_bytes = self.private.private_bytes(
            raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        self.public_bytes = self.private.public_key().public_bytes(
            raw, serialization.PublicFormat.Raw
        )
        self.recipient = bech32("age", self.public_bytes)
        self.identity = bech32("age-secret-key-", self.secret_bytes).upper()


def _b64(data: bytes) -> bytes:
    return base64.b64encode(data).rstrip(b"=")


def _unb64(text: bytes) -> bytes:
    return base64.b64decode(text + b"=" * (-len(text) % 4), validate=True)


def _hkdf(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=SHA256(), length=32, salt=salt, info=info).derive(ikm)


def _chunk_nonce(counter: int, last: bool) -> bytes:
    return counter.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


def spec_encrypt(plaintext: bytes, recipient_public: bytes) -> bytes:
    file_key = os.urandom(16)
    ephemeral = x25519.X25519PrivateKey.generate()
    share = ephemeral.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    shared = ephemeral.exchange(x25519.X25519PublicKey.from_public_bytes(recipient_public))
    wrap_key = _hkdf(shared, share + recipient_public, b"age-encryption.org/v1/X25519")
    body = ChaCha20Poly1305(wrap_key).encrypt(b"\x00" * 12, file_key, None)
    header = b"age-encryption.org/v1\n-> X25519 " + _b64(share) + b"\n" + _b64(body) + b"\n---"
    mac = hmac.new(_hkdf(file_key, b"", b"header"), header, "sha256").digest()
    nonce = os.urandom(16)
    aead = ChaCha20Poly1305(_hkdf(file_key, nonce, b"payload"))
    pieces = [plaintext[i : i + CHUNK] for i in range(0, len(plaintext), CHUNK)] or [b""]
    payload = b"".join(
        aead.encrypt(_chunk_nonce(n, n == len(pieces) - 1), piece, None)
        for n, piece in enumerate(pieces)
    )
    return header + b" " + _b64(mac) + b"\n" + nonce + payload


def spec_decrypt(data: bytes, key: SpecKey) -> bytes:
    stream = io.BytesIO(data)
    assert stream.readline() == b"age-encryption.org/v1\n"
    stanzas: list[tuple[list[bytes], bytes]] = []
    while True:
        line = stream.readline()
        assert line.endswith(b"\n")
        if line.startswith(b"--- "):
            mac_line = line
            break
        assert line.startswith(b"-> ")
        body = b""
        while True:  # body lines: full lines of 64 columns, then a shorter one
            body_line = stream.readline()[:-1]
            body += body_line
            if len(body_line) < 64:
                break
        stanzas.append((line[3:-1].split(b" "), _unb64(body)))
    header = data[: stream.tell() - len(mac_line)] + b"---"
    file_key = None
    for args, body in stanzas:
        if args[0] != b"X25519":
            continue  # another type, or rage's grease
        share = _unb64(args[1])
        shared = key.private.exchange(x25519.X25519PublicKey.from_public_bytes(share))
        wrap_key = _hkdf(shared, share + key.public_bytes, b"age-encryption.org/v1/X25519")
        try:
            file_key = ChaCha20Poly1305(wrap_key).decrypt(b"\x00" * 12, body, None)
        except InvalidTag:
            continue  # a stanza for another recipient
    assert file_key is not None, "no X25519 stanza for this key"
    expected = hmac.new(_hkdf(file_key, b"", b"header"), header, "sha256").digest()
    assert hmac.compare_digest(_unb64(mac_line[4:-1]), expected), "header MAC mismatch"
    nonce = stream.read(16)
    aead = ChaCha20Poly1305(_hkdf(file_key, nonce, b"payload"))
    payload = stream.read()
    sealed = [payload[i : i + CHUNK + TAG] for i in range(0, len(payload), CHUNK + TAG)]
    assert sealed, "no payload chunk"
    plaintext = [
        aead.decrypt(_chunk_nonce(n, n == len(sealed) - 1), piece, None)
        for n, piece in enumerate(sealed)
    ]
    assert all(plaintext[:-1]), "an empty chunk before the last"
    assert plaintext[-1] or len(plaintext) == 1, "an empty last chunk after others"
    return b"".join(plaintext)


# Fixtures and helpers.


@pytest.fixture(scope="module")
def key() -> SpecKey:
    return SpecKey()


def encrypting(storage: Any, key: SpecKey, **options: Any) -> Any:
    return Encrypt(storage, recipients=[key.recipient], identities=[key.identity], **options)


def ciphertext_size(size: int) -> int:
    """Payload bytes of an age file of *size* plaintext bytes (nonce included)."""
    chunks = max(1, -(-size // CHUNK))
    return 16 + size + TAG * chunks


def header_size(data: bytes) -> int:
    return data.index(b"\n---") + len(b"\n--- ") + 43 + 1


def read_all(storage: Any, path: str) -> bytes:
    with storage.read(path) as stream:
        return bytes(stream.read())


def secret_free(text: str, *secrets: str) -> bool:
    """Tell whether *text* quotes none of *secrets*, and no age secret key at all."""
    real_key = re.search(r"AGE-SECRET-KEY-1[0-9A-Z]{8}", text.upper())
    return real_key is None and not any(s and s in text for s in secrets)


def worker_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("django-snapshots-")]


def no_worker_left(timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while worker_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    return not worker_threads()


def ssh_ed25519() -> tuple[str, str]:
    private = ed25519.Ed25519PrivateKey.generate()
    return _ssh_pair(private)


def ssh_rsa() -> tuple[str, str]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return _ssh_pair(private)


def _ssh_pair(private: Any) -> tuple[str, str]:
    secret = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    ).decode()
    public = (
        private.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    return public + " backup@example", secret


# Shape.


def test_encrypt_keeps_the_tier_and_intercepts_every_method(key: SpecKey) -> None:
    advanced = encrypting(MemoryBackend(), key)
    basic = encrypting(BasicMemory(), key)
    assert isinstance(advanced, AdvancedEncrypt)
    assert isinstance(advanced, AdvancedSnapshotStorage)
    assert not isinstance(basic, AdvancedSnapshotStorage)
    assert_intercepts_every_method(advanced)
    assert_intercepts_every_method(basic)


def test_repr_counts_keys_and_never_shows_an_identity(key: SpecKey) -> None:
    public, secret = ssh_ed25519()
    storage = Encrypt(
        MemoryBackend(), recipients=[key.recipient, public], identities=[key.identity, secret]
    )
    assert repr(storage) == "Encrypt(MemoryBackend(), recipients=2, identities=2)"
    assert str(storage) == repr(storage) == f"{storage}"
    assert secret_free(repr(storage), key.identity, secret.splitlines()[1])


def test_objects_are_binary_age_files_under_the_same_key(key: SpecKey) -> None:
    inner = MemoryBackend()
    storage = encrypting(inner, key)
    data = noise(CHUNK + 5)
    storage.write("db/latest.dump", io.BytesIO(data))
    assert inner.list("") == ["db/latest.dump"]
    stored = read_all(inner, "db/latest.dump")
    assert stored.startswith(b"age-encryption.org/v1\n")
    assert data not in stored
    assert spec_decrypt(stored, key) == data


# Round trips.


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    data=st.binary(max_size=3 * CHUNK + 100) | st.integers(0, 5 * CHUNK).map(noise),
    cuts=st.lists(st.integers(0, 5 * CHUNK), max_size=6),
    reads=st.lists(st.integers(1, 3 * CHUNK), min_size=1, max_size=4),
)
def test_any_bytes_in_any_chunking_round_trip(
    key: SpecKey, data: bytes, cuts: list[int], reads: list[int]
) -> None:
    storage = encrypting(MemoryBackend(), key)
    bounds = sorted({0, len(data), *(c for c in cuts if c <= len(data))})
    chunks = [data[a:b] for a, b in itertools.pairwise(bounds)]
    storage.stream_write("k", iter(chunks))
    assert b"".join(storage.stream_read("k")) == data
    with storage.read("k") as stream:
        got = bytearray()
        for n in range(len(data) + 1):
            piece = stream.read(reads[n % len(reads)])
            if not piece:
                break
            got += piece
    assert bytes(got) == data


@pytest.mark.parametrize("size", BOUNDARY_SIZES)
def test_every_chunk_boundary_round_trips_and_reads_with_the_spec(key: SpecKey, size: int) -> None:
    inner = MemoryBackend()
    storage = encrypting(inner, key)
    data = noise(size, seed=size)
    storage.write("w", io.BytesIO(data))
    storage.stream_write("s", iter([data[: size // 3], data[size // 3 :]]))
    for name in ("w", "s"):
        stored = read_all(inner, name)
        assert len(stored) - header_size(stored) == ciphertext_size(size)
        assert spec_decrypt(stored, key) == data
        assert read_all(storage, name) == data
        assert b"".join(storage.stream_read(name)) == data


@pytest.mark.parametrize("size", BOUNDARY_SIZES)
def test_a_file_written_from_the_spec_reads_back(key: SpecKey, size: int) -> None:
    inner = MemoryBackend()
    storage = encrypting(inner, key)
    data = noise(size, seed=size)
    inner.write("k", io.BytesIO(spec_encrypt(data, key.public_bytes)))
    assert read_all(storage, "k") == data
    assert b"".join(storage.stream_read("k")) == data


@pytest.mark.parametrize("size", [1, CHUNK, 2 * CHUNK + 7])
def test_files_of_the_python_age_package_read_back(size: int) -> None:
    # The "age" package (pure Python) is a second independent writer.  Only
    # for X25519 and a non-empty payload: it writes no chunk at all for an
    # empty one, derives ssh-ed25519 stanzas that rage refuses, and its
    # reader re-serialises headers (breaking the MAC of rage's grease
    # stanzas), so the spec implementation above covers the rest.
    from age.file import Encryptor
    from age.keys.agekey import AgePrivateKey

    x_key = AgePrivateKey.generate()
    inner = MemoryBackend()
    data = noise(size, seed=size)
    out = io.BytesIO()
    encryptor = Encryptor([x_key.public_key()], out)
    encryptor.write(data)
    encryptor.close()
    inner.write("k", io.BytesIO(out.getvalue()))
    assert read_all(Encrypt(inner, identities=[x_key.private_string()]), "k") == data


@pytest.mark.parametrize("kind", ["ed25519", "rsa"])
def test_ssh_keys_encrypt_and_decrypt_from_strings_and_files(kind: str, tmp_path: Path) -> None:
    public, secret = ssh_ed25519() if kind == "ed25519" else ssh_rsa()
    (tmp_path / "id").write_text(secret)
    (tmp_path / "id.pub").write_text(f"# the backup key\n\n{public}\n")
    inner = MemoryBackend()
    writer = Encrypt(inner, recipients=[tmp_path / "id.pub"])
    data = noise(CHUNK + 1)
    writer.write("k", io.BytesIO(data))
    assert f"-> ssh-{kind}".encode() in read_all(inner, "k")[:200]
    assert read_all(Encrypt(inner, identities=[secret]), "k") == data
    assert read_all(Encrypt(inner, identities=[tmp_path / "id"]), "k") == data
    assert pyrage.decrypt(read_all(inner, "k"), [pyrage.ssh.Identity.from_buffer(secret.encode())])


def test_identity_and_recipients_files_read_as_age_reads_them(tmp_path: Path) -> None:
    first, second = SpecKey(), SpecKey()
    recipients = tmp_path / "recipients.txt"
    recipients.write_text(f"# ops\n{first.recipient}\n\n  {second.recipient}  \n")
    identity = tmp_path / "key.txt"
    identity.write_text(
        f"# created: 2024-01-01\n# public key: {second.recipient}\n{second.identity}\n"
    )
    inner = MemoryBackend()
    storage = Encrypt(inner, recipients=[recipients], identities=[identity])
    assert repr(storage).endswith("recipients=2, identities=1)")
    storage.write("k", io.BytesIO(b"for both"))
    assert read_all(storage, "k") == b"for both"
    assert read_all(Encrypt(inner, identities=[first.identity]), "k") == b"for both"
    assert spec_decrypt(read_all(inner, "k"), first) == b"for both"


def test_pyrage_key_objects_are_accepted() -> None:
    identity = pyrage.x25519.Identity.generate()
    storage = Encrypt(MemoryBackend(), recipients=[identity.to_public()], identities=[identity])
    storage.write("k", io.BytesIO(b"x"))
    assert read_all(storage, "k") == b"x"


# Bad objects.


def _stored(key: SpecKey, size: int = 3 * CHUNK + 100) -> tuple[MemoryBackend, Any, bytes]:
    inner = MemoryBackend()
    storage = encrypting(inner, key)
    data = noise(size, seed=7)
    storage.write("k", io.BytesIO(data))
    return inner, storage, data


def _replace(inner: MemoryBackend, stored: bytes) -> None:
    inner.write("k", io.BytesIO(stored))


def assert_refused(storage: Any, data: bytes, error: type[Exception]) -> None:
    """Both readers raise *error* naming the key before the end of the
    stream, having delivered an authentic prefix of *data* at most."""
    for how in ("read", "stream_read"):
        got = bytearray()

        def consume(how: str = how, got: bytearray = got) -> None:
            if how == "read":
                with storage.read("k") as stream:
                    while piece := stream.read(10_000):
                        got += piece
            else:
                for chunk in storage.stream_read("k"):
                    got += chunk

        with pytest.raises(error, match="'k'") as excinfo:
            consume()
        assert len(got) < len(data), how
        assert data.startswith(bytes(got)), how
        assert isinstance(excinfo.value, SnapshotIntegrityError)
        assert not is_transient(excinfo.value)


def _positions(stored: bytes) -> dict[str, int]:
    header = header_size(stored)
    return {
        "magic": 3,
        "stanza": stored.index(b"-> X25519") + 12,
        "header mac": header - 5,
        "payload nonce": header + 3,
        "first chunk": header + 16 + 100,
        "first tag": header + 16 + CHUNK + 3,
        "last chunk": len(stored) - 40,
        "last tag": len(stored) - 1,
    }


@pytest.mark.parametrize(
    "where",
    ["magic", "stanza", "header mac", "payload nonce", "first chunk", "first tag", "last chunk",
     "last tag"],
)  # fmt: skip
def test_a_flipped_byte_anywhere_raises_before_the_end(key: SpecKey, where: str) -> None:
    inner, storage, data = _stored(key)
    stored = bytearray(read_all(inner, "k"))
    stored[_positions(bytes(stored))[where]] ^= 0x01
    _replace(inner, bytes(stored))
    assert_refused(storage, data, SnapshotIntegrityError)


@pytest.mark.parametrize(
    "cut",
    ["in the magic", "in the header", "after the header", "in the nonce", "in the first chunk",
     "after the first chunk", "after the third chunk", "in the last tag", "by one byte"],
)  # fmt: skip
def test_a_truncated_object_raises_before_the_end(key: SpecKey, cut: str) -> None:
    inner, storage, data = _stored(key)
    stored = read_all(inner, "k")
    header = header_size(stored)
    sealed = CHUNK + TAG
    length = {
        "in the magic": 10,
        "in the header": header - 20,
        "after the header": header,
        "in the nonce": header + 8,
        "in the first chunk": header + 16 + 1000,
        "after the first chunk": header + 16 + sealed,
        "after the third chunk": header + 16 + 3 * sealed,
        "in the last tag": len(stored) - 8,
        "by one byte": len(stored) - 1,
    }[cut]
    _replace(inner, stored[:length])
    assert_refused(storage, data, SnapshotIntegrityError)


def test_reordered_dropped_and_spliced_chunks_raise(key: SpecKey) -> None:
    inner, storage, data = _stored(key)
    stored = read_all(inner, "k")
    start = header_size(stored) + 16
    sealed = [stored[i : i + CHUNK + TAG] for i in range(start, len(stored), CHUNK + TAG)]
    head = stored[:start]
    other = read_all(_stored(key)[0], "k")
    for variant in (
        head + sealed[1] + sealed[0] + b"".join(sealed[2:]),
        head + sealed[0] + b"".join(sealed[2:]),
        head + b"".join(sealed) + b"trailing bytes",
        stored[: header_size(stored)] + other[header_size(other) :],
    ):
        _replace(inner, variant)
        assert_refused(storage, data, SnapshotIntegrityError)


@pytest.mark.parametrize(
    ("stored", "message"),
    [
        (b"", "is empty, not an age file"),
        (b"plain database dump\n" * 100, "is not an age file"),
        (b"age-encryption.org/v1\n", "has a corrupt age header"),
    ],
)
def test_objects_that_are_not_age_files_raise_an_encryption_error(
    key: SpecKey, stored: bytes, message: str
) -> None:
    inner = MemoryBackend()
    inner.write("k", io.BytesIO(stored))
    storage = encrypting(inner, key)
    for read in (lambda: storage.read("k").read(), lambda: b"".join(storage.stream_read("k"))):
        with pytest.raises(SnapshotEncryptionError, match=f"'k' {message}"):
            read()


def test_an_object_for_other_recipients_raises_at_open_and_is_never_retried(
    key: SpecKey,
) -> None:
    inner = MemoryBackend()
    encrypting(inner, SpecKey()).write("k", io.BytesIO(b"someone else's"))
    scripted = AdvancedScripted(inner)
    storage = Retry(encrypting(scripted, key), attempts=5, **INSTANT)
    with pytest.raises(SnapshotEncryptionError, match="'k' was encrypted for other recipients"):
        storage.read("k")
    with pytest.raises(SnapshotEncryptionError, match="none of the 1 identities"):
        storage.stream_read("k")
    assert scripted.calls["read"] == 1
    assert scripted.calls["stream_read"] == 1


def test_a_passphrase_file_is_refused_clearly(key: SpecKey) -> None:
    inner = MemoryBackend()
    inner.write("k", io.BytesIO(pyrage.passphrase.encrypt(b"secret", "hunter2")))
    with pytest.raises(SnapshotEncryptionError, match=r"'k' is encrypted with a passphrase"):
        encrypting(inner, key).read("k")


def test_an_armored_age_file_reads_back(key: SpecKey) -> None:
    inner = MemoryBackend()
    recipient = pyrage.x25519.Recipient.from_str(key.recipient)
    inner.write("k", io.BytesIO(pyrage.encrypt(b"armored", [recipient], armored=True)))
    assert read_all(encrypting(inner, key), "k") == b"armored"


# Keys given to the wrapper.


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({}, ValueError, "needs recipients .* or identities"),
        ({"recipients": [], "identities": []}, ValueError, "needs recipients"),
        ({"recipients": "age1abc"}, TypeError, "not one str: write recipients=\\[...\\]"),
        ({"identities": Path("key.txt")}, TypeError, "identities=\\[...\\]"),
        ({"recipients": 3}, TypeError, "recipients must be a list"),
        (
            {"recipients": ["age1notbech32"]},
            ValueError,
            r"recipients\[0\] is not a valid age X25519",
        ),
        ({"recipients": ["ssh-ed25519 AAAAbogus"]}, ValueError, "not a valid SSH public key"),
        ({"recipients": ["ssh-dss AAAA"]}, ValueError, r"recipients\[0\] is not an age recipient"),
        ({"recipients": ["backup.pub"]}, ValueError, "pass a pathlib.Path"),
        ({"recipients": [b"age1"]}, TypeError, r"recipients\[0\] must be a str"),
        ({"recipients": [""]}, ValueError, r"recipients\[0\] is empty"),
        ({"identities": ["key.txt"]}, ValueError, r"identities\[0\], line 1 is not an age secret"),
        ({"identities": ["AGE-SECRET-KEY-1QQQQ"]}, ValueError, "not a valid age secret key"),
        ({"identities": ["AGE-PLUGIN-YUBIKEY-1QQ"]}, ValueError, "plugins are not supported"),
        ({"identities": [None]}, TypeError, r"identities\[0\] must be a str"),
        ({"identities": ["# only a comment\n"]}, ValueError, r"identities\[0\] holds no identity"),
    ],
)
def test_bad_keys_are_refused_when_the_wrapper_is_built(
    options: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        Encrypt(MemoryBackend(), **options)


def test_secrets_in_the_wrong_place_are_refused_without_quoting_them(
    key: SpecKey, tmp_path: Path
) -> None:
    _, secret = ssh_ed25519()
    secret_body = secret.splitlines()[1]
    mangled = secret.replace(secret_body, secret_body[:10] + "!" + secret_body[11:])
    encrypted_key = (
        ed25519.Ed25519PrivateKey.generate()
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
        .decode()
    )
    (tmp_path / "keys.txt").write_text(f"{key.identity}\n{key.identity[:-3]}xyz\n")
    (tmp_path / "encrypted.age").write_bytes(pyrage.passphrase.encrypt(key.identity.encode(), "pw"))
    cases: list[tuple[dict[str, Any], str]] = [
        ({"recipients": [key.identity]}, r"recipients\[0\] is a secret key"),
        ({"recipients": [secret]}, r"recipients\[0\] is a secret key"),
        ({"recipients": [pyrage.x25519.Identity.from_str(key.identity)]}, "is an identity"),
        ({"recipients": [key.recipient, f"{key.recipient}\n{key.identity}"]}, r"\[1\], line 2"),
        ({"identities": [mangled]}, r"identities\[0\] is not an SSH private key that age"),
        ({"identities": [encrypted_key]}, "passphrase-protected keys are not supported"),
        ({"identities": [tmp_path / "keys.txt"]}, r"keys.txt\), line 2 is not a valid age"),
        ({"identities": [tmp_path / "encrypted.age"]}, "is not a text file of keys"),
        ({"identities": [key.recipient]}, r"identities\[0\], line 1 is not an age secret key"),
    ]
    for options, message in cases:
        with pytest.raises((ValueError, TypeError), match=message) as excinfo:
            Encrypt(MemoryBackend(), **options)
        text = str(excinfo.value)
        assert secret_free(text, key.identity, key.identity[:-3], secret_body[:20]), text


# Write-only and read-only stacks.


def test_a_stack_with_recipients_only_writes_moves_and_syncs_but_never_reads(
    key: SpecKey,
) -> None:
    inner = MemoryBackend()
    scripted = AdvancedScripted(inner)
    server = Encrypt(scripted, recipients=[key.recipient])
    server.write("a/k", io.BytesIO(b"one"))
    server.stream_write("a/j", iter([b"two"]))
    server.atomic_move("a/j", "a/m")
    server.sync("a/", "b/")
    assert server.list("") == server.recursive_list("") == ["a/k", "a/m", "b/k", "b/m"]
    assert server.exists("b/m")
    server.delete("a/k")
    calls = sum(scripted.calls.values())
    for read in (server.read, server.stream_read):
        with pytest.raises(SnapshotEncryptionError, match=r"cannot read 'b/m'.* holds no identity"):
            read("b/m")
    assert sum(scripted.calls.values()) == calls
    reader = encrypting(inner, key)
    assert [read_all(reader, k) for k in ("a/m", "b/k", "b/m")] == [b"two", b"one", b"two"]
    assert read_all(inner, "b/m") == read_all(inner, "a/m")  # ciphertext moved as it is


def test_a_stack_with_identities_only_reads_but_never_writes(key: SpecKey) -> None:
    inner = MemoryBackend()
    encrypting(inner, key).write("k", io.BytesIO(b"dump"))
    scripted = AdvancedScripted(inner)
    restorer = Encrypt(scripted, identities=[key.identity])
    assert read_all(restorer, "k") == b"dump"
    content = io.BytesIO(b"never read")
    with pytest.raises(SnapshotEncryptionError, match=r"cannot write 'k'.* holds no recipient"):
        restorer.write("k", content)
    with pytest.raises(SnapshotEncryptionError, match="holds no recipient"):
        restorer.stream_write("k", iter([b"never read"]))
    assert content.tell() == 0
    assert scripted.calls["write"] == scripted.calls["stream_write"] == 0


def test_bad_keys_and_bad_content_are_refused_before_any_io(key: SpecKey) -> None:
    scripted = AdvancedScripted(MemoryBackend())
    storage = encrypting(scripted, key)
    content = io.BytesIO(b"data")
    with pytest.raises(SnapshotStoragePathError):
        storage.write("../escape", content)
    for bad in (b"data", "text", io.StringIO("text")):
        with pytest.raises(TypeError, match="binary file object"):
            storage.write("k", bad)
    with pytest.raises(SnapshotStoragePathError):
        storage.read("/abs")
    assert content.tell() == 0
    assert sum(scripted.calls.values()) == 0


def test_non_bytes_chunks_and_reads_raise_type_errors_and_keep_the_old_object(
    key: SpecKey,
) -> None:
    storage = encrypting(MemoryBackend(), key)
    storage.write("k", io.BytesIO(b"good"))

    class TextReads(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def read(self, size: int = -1) -> Any:
            return "text"

    with pytest.raises(TypeError, match=r"stream_write\(\) chunks must be bytes, not str"):
        storage.stream_write("k", iter([b"ok", "text"]))
    with pytest.raises(TypeError, match=r"content.read\(\) returned str"):
        storage.write("k", TextReads())
    assert read_all(storage, "k") == b"good"
    assert no_worker_left()


# Failures of the caller and of the storage keep their own exceptions.


class FailingContent(io.RawIOBase):
    """Delivers *after* bytes of *data*, then raises *error* (once, if *once*)."""

    def __init__(self, data: bytes, after: int, error: BaseException) -> None:
        super().__init__()
        self._data = io.BytesIO(data)
        self._after = after
        self.error = error

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._data.seek(offset, whence)

    def tell(self) -> int:
        return self._data.tell()

    def readinto(self, buffer: Any) -> int:
        if self._data.tell() >= self._after:
            raise self.error
        view = memoryview(buffer).cast("B")
        data = self._data.read(min(len(view), self._after - self._data.tell()))
        view[: len(data)] = data
        return len(data)


@pytest.mark.parametrize("after", [0, 100, 3 * CHUNK])
def test_the_callers_failing_content_raises_its_own_exception_and_keeps_the_old_object(
    key: SpecKey, after: int
) -> None:
    for below in (MemoryBackend(), BasicMemory()):
        storage = encrypting(below, key)
        storage.write("k", io.BytesIO(b"previous"))
        error = ConnectionError("the pipe broke")
        content = FailingContent(noise(4 * CHUNK), after, error)
        with pytest.raises(ConnectionError) as excinfo:
            storage.write("k", content)
        assert excinfo.value is error
        if isinstance(storage, AdvancedSnapshotStorage):

            def failing(error: BaseException = error) -> Iterator[bytes]:
                yield from [b"x" * CHUNK, b"y"]
                raise error

            with pytest.raises(ConnectionError) as excinfo:
                storage.stream_write("k", failing())
            assert excinfo.value is error
        assert read_all(storage, "k") == b"previous"
    assert no_worker_left()


def test_retry_above_never_retries_the_callers_failing_content(key: SpecKey) -> None:
    scripted = Scripted(MemoryBackend())
    storage = Retry(encrypting(scripted, key), attempts=5, **INSTANT)
    error = ConnectionResetError("the caller's socket")
    with pytest.raises(ConnectionResetError) as excinfo:
        storage.write("k", FailingContent(noise(2 * CHUNK), CHUNK, error))
    assert excinfo.value is error
    assert scripted.calls["write"] == 1


@pytest.mark.parametrize("tier", ["basic", "advanced"])
def test_retry_above_rewrites_whole_after_the_storage_failed_mid_write(
    key: SpecKey, tier: str
) -> None:
    inner = MemoryBackend()
    faults = [Fault(ConnectionResetError("reset"), after=CHUNK + 3)]
    scripted = (
        AdvancedScripted(inner, stream_write=faults)
        if tier == "advanced"
        else Scripted(inner, write=list(faults))
    )
    if tier == "advanced":
        scripted.faults["write"] = list(faults)
    storage = Retry(encrypting(scripted, key), attempts=3, **INSTANT)
    data = noise(3 * CHUNK + 11)
    for n, write in enumerate(
        [
            lambda: storage.write("k", io.BytesIO(data)),
            lambda: (
                storage.stream_write("k", iter([data[:5000], data[5000:]]))
                if tier == "advanced"
                else storage.write("k", _NonSeekable(data))
            ),
        ]
    ):
        write()
        stored = read_all(inner, "k")
        assert len(stored) - header_size(stored) == ciphertext_size(len(data)), n
        assert spec_decrypt(stored, key) == data
    assert scripted.calls["write"] + scripted.calls["stream_write"] == (
        4 if tier == "advanced" else 3
    )
    assert no_worker_left()


class _NonSeekable(io.RawIOBase):
    def __init__(self, data: bytes) -> None:
        super().__init__()
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        return self._data.readinto(buffer)


@pytest.mark.parametrize("after", [10, CHUNK + 500])
def test_a_storage_failing_mid_read_raises_its_own_exception_and_retry_resumes(
    key: SpecKey, after: int
) -> None:
    inner = MemoryBackend()
    data = noise(3 * CHUNK + 1)
    encrypting(inner, key).write("k", io.BytesIO(data))
    error = ConnectionResetError("reset mid-read")
    scripted = AdvancedScripted(inner, read=[Fault(error, after=after)])
    scripted.faults["stream_read"] = [Fault(error, after=after)]
    bare = encrypting(scripted, key)
    for read in (lambda: read_all(bare, "k"), lambda: b"".join(bare.stream_read("k"))):
        with pytest.raises(ConnectionResetError) as excinfo:
            read()
        assert excinfo.value is error
    scripted.faults = {
        "read": [Fault(ConnectionResetError("again"), after=after)],
        "stream_read": [Fault(ConnectionResetError("again"), after=after)],
    }
    storage = Retry(encrypting(scripted, key), attempts=3, **INSTANT)
    assert read_all(storage, "k") == data
    assert b"".join(storage.stream_read("k")) == data
    assert no_worker_left()


# The worker thread.


class ClosingWatch(MemoryBackend):
    """A MemoryBackend that records whether the streams it handed out were closed."""

    def __init__(self) -> None:
        super().__init__()
        self.opened: list[Any] = []

    def read(self, path: str) -> IO[bytes]:
        stream = super().read(path)
        self.opened.append(stream)
        return stream

    def stream_read(self, path: str) -> Iterator[bytes]:
        chunks = iter(super().stream_read(path))
        self.opened.append(chunks)
        return chunks


def _released(watch: ClosingWatch) -> bool:
    return all(
        getattr(s, "closed", None) or getattr(s, "gi_frame", 1) is None for s in watch.opened
    )


@pytest.mark.parametrize("how", ["read", "stream_read"])
def test_closing_a_reader_early_stops_the_worker_and_releases_the_source(
    key: SpecKey, how: str
) -> None:
    watch = ClosingWatch()
    storage = encrypting(watch, key)
    data = noise(64 * CHUNK)
    storage.write("k", io.BytesIO(data))
    before = threading.active_count()
    for _ in range(5):
        if how == "read":
            stream = storage.read("k")
            assert stream.read(10) == data[:10]
            assert worker_threads()
            stream.close()
            with pytest.raises(ValueError, match="closed"):
                stream.read(10)
        else:
            chunks = storage.stream_read("k")
            first = next(chunks)
            assert first
            assert data.startswith(first)
            chunks.close()  # type: ignore[attr-defined]
        assert not worker_threads()
    assert threading.active_count() == before
    assert _released(watch)


def test_dropping_a_reader_unclosed_stops_the_worker(key: SpecKey) -> None:
    storage = encrypting(MemoryBackend(), key)
    storage.write("k", io.BytesIO(noise(64 * CHUNK)))
    stream = storage.read("k")
    stream.read(10)
    chunks = storage.stream_read("k")
    next(chunks)
    assert len(worker_threads()) == 2
    del stream, chunks
    gc.collect()
    assert no_worker_left()


def test_a_storage_that_stops_reading_the_ciphertext_stops_the_worker(key: SpecKey) -> None:
    faults = [Fault(ConnectionResetError("gone"), after=10)]
    scripted = AdvancedScripted(MemoryBackend(), stream_write=faults)
    scripted.faults["write"] = [Fault(ConnectionResetError("gone"), after=10)]
    storage = encrypting(scripted, key)
    for write in (
        lambda: storage.write("k", io.BytesIO(noise(64 * CHUNK))),
        lambda: storage.stream_write("k", iter([noise(64 * CHUNK)])),
    ):
        with pytest.raises(ConnectionResetError, match="gone"):
            write()
        assert not worker_threads()


# Secrets never show.


def test_no_secret_reaches_repr_errors_or_logs(key: SpecKey) -> None:
    public, secret = ssh_ed25519()
    secret_body = secret.splitlines()[1]
    inner = MemoryBackend()
    inner.write("plain", io.BytesIO(b"not encrypted"))
    encrypting(inner, SpecKey()).write("foreign", io.BytesIO(b"x"))
    stack = Logging(
        Retry(
            Encrypt(inner, recipients=[key.recipient, public], identities=[key.identity, secret]),
            attempts=2,
            **INSTANT,
        )
    )
    texts = [repr(stack), str(stack)]
    with capture_logs() as entries:
        stack.write("k", io.BytesIO(b"data"))
        assert read_all(stack, "k") == b"data"
        for path in ("plain", "foreign", "missing"):
            with pytest.raises((SnapshotError, FileNotFoundError)) as excinfo:
                stack.read(path)
            texts += [str(excinfo.value), repr(excinfo.value)]
    texts += [repr(entry) for entry in entries]
    assert len(entries) == 5
    for text in texts:
        assert secret_free(text, key.identity, secret_body[:20]), text


# Where Checksum goes.


def test_checksum_below_encrypt_digests_the_ciphertext_for_sha256sum(
    key: SpecKey, tmp_path: Path
) -> None:
    storage = encrypting(Checksum(LocalFileSystemBackend(tmp_path)), key)
    storage.write("db/latest.dump", io.BytesIO(b"dump"))
    stored = (tmp_path / "db" / "latest.dump").read_bytes()
    sidecar = (tmp_path / "db" / "latest.dump.sha256").read_text()
    assert sidecar.split()[0] == hashlib.sha256(stored).hexdigest()
    subprocess.run(["sha256sum", "-c", "latest.dump.sha256"], cwd=tmp_path / "db", check=True)
    assert read_all(storage, "db/latest.dump") == b"dump"


def test_checksum_above_encrypt_digests_the_plaintext(key: SpecKey) -> None:
    inner = MemoryBackend()
    storage = Checksum(encrypting(inner, key))
    storage.write("k", io.BytesIO(b"dump"))
    assert read_all(storage, "k") == b"dump"
    sidecar = spec_decrypt(read_all(inner, "k.sha256"), key).decode()
    assert sidecar == f"{hashlib.sha256(b'dump').hexdigest()}  k\n"


# The storage contract holds through the wrapper.

_CONFORMANCE_KEY = SpecKey()


class _EncryptConformance(StorageConformance):
    def stack_over(self, storage: Any) -> Any:
        return encrypting(storage, _CONFORMANCE_KEY)


class TestEncryptOverMemoryBackend(_EncryptConformance):
    @pytest.fixture
    def storage(self) -> Any:
        return encrypting(MemoryBackend(), _CONFORMANCE_KEY)


class TestEncryptOverLocalFileSystemBackend(_EncryptConformance):
    max_segment_bytes = 255

    @pytest.fixture
    def storage(self, tmp_path: Path) -> Any:
        return encrypting(LocalFileSystemBackend(tmp_path), _CONFORMANCE_KEY)


class TestEncryptOverABasicStorage(_EncryptConformance):
    @pytest.fixture
    def storage(self) -> Any:
        return encrypting(BasicMemory(), _CONFORMANCE_KEY)


class TestLoggingOverRetryOverChecksumOverEncrypt(_EncryptConformance):
    max_key_bytes = MAX_KEY_BYTES - len(".sha256")

    @pytest.fixture
    def storage(self, tmp_path: Path) -> Any:
        return self.stack_over(LocalFileSystemBackend(tmp_path))

    def stack_over(self, storage: Any) -> Any:
        encrypted = encrypting(storage, _CONFORMANCE_KEY)
        return Logging(Retry(Checksum(encrypted), attempts=3, **INSTANT))


# A planted header: pyrage parses headers in time that grows with the square
# of their size, so an object whose header goes on and on is refused early.


@pytest.mark.parametrize(
    "stanzas",
    [
        [b"-> X25519 " + b"A" * 43 + b"\n" + (b"A" * 64 + b"\n") * 50_000],
        [b"-> X25519 " + b"A" * 43 + b"\n" + b"A" * 43 + b"\n"] * 40_000,
    ],
    ids=["one long stanza", "thousands of stanzas"],
)
def test_a_planted_oversized_header_is_refused_without_being_parsed(
    stanzas: list[bytes],
) -> None:
    key = pyrage.x25519.Identity.generate()
    inner = MemoryBackend()
    planted = (
        b"age-encryption.org/v1\n" + b"".join(stanzas) + b"--- " + b"A" * 43 + b"\n" + b"x" * 64
    )
    assert len(planted) > 3 * 1024 * 1024
    inner.write("evil", io.BytesIO(planted))
    storage = Encrypt(inner, recipients=[str(key.to_public())], identities=[key])
    with pytest.raises(SnapshotEncryptionError, match="header longer than"):
        storage.read("evil").read()
    with pytest.raises(SnapshotEncryptionError, match="header longer than"):
        list(storage.stream_read("evil"))


def test_a_file_for_hundreds_of_recipients_still_reads_back() -> None:
    keys = [pyrage.x25519.Identity.generate() for _ in range(600)]
    inner = MemoryBackend()
    storage = Encrypt(inner, recipients=[str(k.to_public()) for k in keys], identities=[keys[-1]])
    data = noise(3 * CHUNK + 5)
    storage.write("k", io.BytesIO(data))
    assert len(inner.read("k").read()) > len(data) + 50_000  # a 50 KiB header
    assert storage.read("k").read() == data
    assert b"".join(storage.stream_read("k")) == data


def test_verify_through_a_write_only_stack_checks_the_ciphertext_without_a_key() -> None:
    key = pyrage.x25519.Identity.generate()
    inner = MemoryBackend()
    writer = Encrypt(Checksum(inner), recipients=[str(key.to_public())])
    writer.write("k", io.BytesIO(noise(3 * CHUNK)))
    stored = inner.read("k").read()
    with capture_logs() as entries:
        digest = Logging(writer).verify("k")
    assert digest == hashlib.sha256(stored).hexdigest()
    (entry,) = [e for e in entries if e["op"] == "read"]
    assert (entry["bytes"], entry["complete"]) == (len(stored), True)
    inner.write("k", io.BytesIO(stored[:-1] + bytes([stored[-1] ^ 1])))
    with pytest.raises(SnapshotIntegrityError):
        writer.verify("k")


def test_the_documented_restore_pipeline_opens_a_compressed_encrypted_object(
    tmp_path: Path,
) -> None:
    # Compress(Encrypt(Checksum(Local))) stores an age file of a zstd frame;
    # "age -d | zstd -d" is done here by independent implementations: the
    # age decoder written from the specification, and zstandard.
    import zstandard

    from django_snapshots.storage import Compress

    key = SpecKey()
    data = noise(3 * CHUNK + 11) + b"\n" * 70_000
    stack = Compress(
        Encrypt(Checksum(LocalFileSystemBackend(tmp_path)), recipients=[key.recipient])
    )
    stack.write("db/latest.dump", io.BytesIO(data))
    stored = (tmp_path / "db" / "latest.dump").read_bytes()
    frame = spec_decrypt(stored, key)
    assert zstandard.ZstdDecompressor().decompressobj().decompress(frame) == data
    check = subprocess.run(
        ["sha256sum", "-c", "latest.dump.sha256"], cwd=tmp_path / "db", capture_output=True
    )
    assert check.returncode == 0, check.stdout
