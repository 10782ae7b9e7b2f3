"""The conformance kit passes honest storages of both tiers, skips nothing,
and names the broken contract point of every lying storage."""

from __future__ import annotations

import textwrap

import pytest

from tests.test_docs import DOCS, page_examples

pytest_plugins = ["pytester"]

_HEADER = '''
import io

import pytest

from django_snapshots.storage import MemoryBackend
from django_snapshots.storage.keys import validate_sync_prefixes
from django_snapshots.storage.streams import iter_chunks
from django_snapshots.testing import StorageConformance


class BasicMemory:
    """A basic-tier storage: the five basic methods and nothing else."""

    def __init__(self):
        self._inner = MemoryBackend()

    def read(self, path):
        return self._inner.read(path)

    def write(self, path, content):
        self._inner.write(path, content)

    def list(self, prefix):
        return self._inner.list(prefix)

    def delete(self, path):
        self._inner.delete(path)

    def exists(self, path):
        return self._inner.exists(path)


class Unvalidated(MemoryBackend):
    """Correct in every way except that it never checks keys."""

    def _store(self, path, data):
        with self._lock:
            self._objects[path] = data

    def read(self, path):
        with self._lock:
            if path not in self._objects:
                raise FileNotFoundError(path)
            return io.BytesIO(self._objects[path])

    def write(self, path, content):
        self._store(path, b"".join(iter_chunks(content)))

    def stream_write(self, path, chunks):
        self._store(path, b"".join(chunks))

    def stream_read(self, path):
        return iter_chunks(self.read(path))

    def exists(self, path):
        with self._lock:
            return path in self._objects

    def delete(self, path):
        with self._lock:
            self._objects.pop(path, None)

    def atomic_move(self, src, dst):
        with self._lock:
            if src not in self._objects:
                raise FileNotFoundError(src)
            self._objects[dst] = self._objects.pop(src)


'''

_KIT = """

class Test{name}(StorageConformance):
    @pytest.fixture
    def storage(self):
        return {name}()
"""

# Each lie: the storage's class body, and the check that must catch it.
_LIARS = {
    "ExistsAlwaysTrue": (
        """
        def exists(self, path):
            super().exists(path)
            return True
        """,
        "test_exists_reports_truthfully",
    ),
    "UnsortedList": (
        """
        def list(self, prefix):
            return sorted(super().list(prefix), reverse=True)
        """,
        "test_list_is_sorted_and_plain_string_prefix",
    ),
    "DirectoryPrefixList": (
        """
        def list(self, prefix):
            keys = super().list(prefix)
            if prefix and not prefix.endswith("/"):
                keys = [k for k in keys if k == prefix or k.startswith(prefix + "/")]
            return keys
        """,
        "test_list_is_sorted_and_plain_string_prefix",
    ),
    "ShallowList": (
        """
        def list(self, prefix):
            return [k for k in super().list(prefix) if "/" not in k[len(prefix):]]
        """,
        "test_list_returns_objects_at_every_depth",
    ),
    "WholeStreamWrite": (
        """
        def write(self, path, content):
            self.stream_write(path, iter([content.read()]))
        """,
        "test_write_reads_in_chunks_not_all_at_once",
    ),
    "ReadNotAtOffsetZero": (
        """
        def read(self, path):
            file = super().read(path)
            file.seek(1)
            return file
        """,
        "test_read_starts_at_offset_zero",
    ),
    "DeleteMissingRaises": (
        """
        def delete(self, path):
            if not self.exists(path):
                raise FileNotFoundError(path)
            super().delete(path)
        """,
        "test_delete_missing_is_not_an_error",
    ),
    "ClosesContent": (
        """
        def write(self, path, content):
            super().write(path, content)
            content.close()
        """,
        "test_write_does_not_close_content",
    ),
    "RewindsContent": (
        """
        def write(self, path, content):
            content.seek(0)
            super().write(path, content)
        """,
        "test_write_stores_bytes_from_current_position",
    ),
    "EmptyChunks": (
        """
        def stream_read(self, path):
            chunks = super().stream_read(path)
            yield b""
            yield from chunks
        """,
        "test_stream_read_yields_non_empty_bytes_chunks",
    ),
    "MoveKeepsSource": (
        """
        def atomic_move(self, src, dst):
            self.write(dst, self.read(src))
        """,
        "test_atomic_move_replaces_destination_and_removes_source",
    ),
    "SyncKeepsStale": (
        """
        def sync(self, src_prefix, dst_prefix):
            validate_sync_prefixes(src_prefix, dst_prefix)
            for key in self.list(src_prefix):
                self.write(dst_prefix + key[len(src_prefix):], self.read(key))
        """,
        "test_sync_deletes_stale_destination_keys",
    ),
    "NormalizingKeys": (
        """
        def write(self, path, content):
            import unicodedata
            super().write(unicodedata.normalize("NFC", path), content)
        def read(self, path):
            import unicodedata
            return super().read(unicodedata.normalize("NFC", path))
        """,
        "test_distinct_keys_never_share_an_object",
    ),
    "QuoteFolding": (
        # rclone's name encoding once stored "db\u201b\u201b" as "db\u201b".
        """
        def write(self, path, content):
            super().write(path.replace("\u201b\u201b", "\u201b"), content)
        """,
        "test_distinct_keys_never_share_an_object",
    ),
    "ReadsEmptyWhenClosed": (
        """
        def read(self, path):
            class Lenient(io.BytesIO):
                def read(self, size=-1):
                    return b"" if self.closed else super().read(size)
            return Lenient(super().read(path).read())
        """,
        "test_a_closed_stream_never_reads_as_complete",
    ),
    "SyncMergesNormalForms": (
        """
        def sync(self, src_prefix, dst_prefix):
            import unicodedata
            super().sync(src_prefix, dst_prefix)
            for key in self.list(dst_prefix):
                folded = unicodedata.normalize("NFC", key)
                if folded != key:
                    self.atomic_move(key, folded)
        """,
        "test_distinct_keys_never_share_an_object",
    ),
    "SyncAcceptsOverlap": (
        """
        def sync(self, src_prefix, dst_prefix):
            if src_prefix == dst_prefix:
                return
            super().sync(src_prefix, dst_prefix)
        """,
        "test_sync_rejects_invalid_or_overlapping_prefixes['a/'-'a/']",
    ),
}


def _run_kit(
    pytester: pytest.Pytester, name: str, base: str, body: str, *args: str
) -> pytest.HookRecorder:
    source = (
        _HEADER
        + f"class {name}({base}):\n"
        + textwrap.indent(textwrap.dedent(body).strip("\n"), "    ")
        + _KIT.format(name=name)
    )
    pytester.makepyfile(test_kit=source)
    # The storages need no Django: keep the outer session's test environment
    # out of the inner one.
    return pytester.inline_run("-p", "no:cacheprovider", "-p", "no:django", *args)


def _failed_tests(recorder: pytest.HookRecorder) -> set[str]:
    """Return the checks that ran and failed; fail if any could not run."""
    reports = recorder.getreports("pytest_runtest_logreport")
    broken = [r.nodeid for r in reports if r.failed and r.when != "call"]
    assert not broken, f"checks that could not run: {broken}"
    return {r.nodeid.split("::")[-1] for r in reports if r.failed and r.when == "call"}


def _test_names(reports: object) -> set[str]:
    return {report.nodeid.split("::")[-1].split("[")[0] for report in reports}  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", sorted(_LIARS))
def test_kit_fails_the_check_that_a_lying_storage_breaks(
    pytester: pytest.Pytester, name: str
) -> None:
    body, caught_by = _LIARS[name]
    # Only the check in question runs: the full kit is exercised below.
    check = caught_by.split("[")[0]
    failed = _failed_tests(_run_kit(pytester, name, "MemoryBackend", body, "-k", check))
    assert caught_by in failed, f"{name} was not caught by {caught_by}; failed: {sorted(failed)}"


def test_kit_fails_a_storage_that_accepts_traversal_keys(pytester: pytest.Pytester) -> None:
    failed = _failed_tests(_run_kit(pytester, "Naive", "Unvalidated", "pass"))
    assert "test_invalid_keys_are_rejected_before_any_io['../x']" in failed
    assert "test_invalid_keys_are_rejected_before_any_io['/abs']" in failed
    # Only the key checks fail: the rest of the storage is honest.
    assert {name.split("[")[0] for name in failed} == {
        "test_invalid_keys_are_rejected_before_any_io",
        "test_keys_longer_than_the_storage_accepts_are_refused_before_any_io",
    }


def test_kit_passes_an_honest_advanced_storage_with_many_distinct_checks(
    pytester: pytest.Pytester,
) -> None:
    recorder = _run_kit(pytester, "Honest", "MemoryBackend", "pass")
    passed, skipped, failed = recorder.listoutcomes()
    assert (len(skipped), len(failed)) == (0, 0)
    assert len(_test_names(passed)) >= 30


def test_kit_passes_an_honest_basic_storage_and_skips_nothing(pytester: pytest.Pytester) -> None:
    basic = _run_kit(pytester, "Plain", "BasicMemory", "pass")
    passed, skipped, failed = basic.listoutcomes()
    assert (len(skipped), len(failed)) == (0, 0)
    advanced = _run_kit(pytester, "Honest", "MemoryBackend", "pass")
    assert _test_names(passed) == _test_names(advanced.listoutcomes()[0])


def test_kit_fails_a_basic_storage_that_claims_the_advanced_tier(
    pytester: pytest.Pytester,
) -> None:
    body = """
    def stream_read(self, path): raise NotImplementedError
    def stream_write(self, path, chunks): raise NotImplementedError
    def atomic_move(self, src, dst): raise NotImplementedError
    def recursive_list(self, prefix): raise NotImplementedError
    def sync(self, src_prefix, dst_prefix): raise NotImplementedError
    """
    failed = _failed_tests(_run_kit(pytester, "Pretender", "BasicMemory", body))
    assert {
        "test_stream_read_yields_non_empty_bytes_chunks",
        "test_atomic_move_replaces_destination_and_removes_source",
        "test_sync_mirrors_source_under_destination",
        "test_recursive_list_equals_list",
    } <= failed


def test_the_backend_of_the_how_to_passes_the_kit_it_shows(pytester: pytest.Pytester) -> None:
    examples, _ = page_examples(DOCS / "howto" / "third-party-backend.rst")
    # The page's Python blocks, in order, are a test module: the backend, its
    # use, and the kit subclass the page tells readers to write.
    pytester.makepyfile(test_howto="\n\n".join(e.source for e in examples if not e.doctest))
    recorder = pytester.inline_run("-p", "no:cacheprovider", "-p", "no:django")
    passed, skipped, failed = recorder.listoutcomes()
    assert (len(skipped), len(failed)) == (0, 0)
    assert {r.nodeid.split("::")[1] for r in passed} == {"TestSQLiteBackend"}
    assert len(passed) >= 80


def test_kit_fails_a_wrapper_whose_stream_reads_on_after_it_raised(
    pytester: pytest.Pytester,
) -> None:
    source = _HEADER + textwrap.dedent(
        """
        from django_snapshots.storage import Prefix


        class Forgiving(io.RawIOBase):
            # Swallows the failure of the stream below and reports the end.
            def __init__(self, source):
                self._source = source
            def readable(self):
                return True
            def readinto(self, buffer):
                try:
                    return self._source.readinto(buffer)
                except ConnectionError:
                    return 0


        class ForgivingPrefix(Prefix):
            def read(self, path):
                return Forgiving(super().read(path))


        class TestForgiving(StorageConformance):
            @pytest.fixture
            def storage(self):
                return ForgivingPrefix(MemoryBackend(), "t")

            def stack_over(self, storage):
                return ForgivingPrefix(storage, "t")

            max_key_bytes = 1022
        """
    )
    pytester.makepyfile(test_kit=source)
    failed = _failed_tests(pytester.inline_run("-p", "no:cacheprovider", "-p", "no:django"))
    # It also reads on after close, since it never closes the stream below.
    assert failed == {
        "test_a_stream_that_raised_stays_failed",
        "test_a_closed_stream_never_reads_as_complete",
    }
