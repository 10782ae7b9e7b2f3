"""Streaming helpers: chunks out of file objects, file objects out of chunks,
and readers that observe what passes through them."""

from __future__ import annotations

import copy
import gc
import io
import itertools
import pickle
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from django_snapshots.storage.streams import (
    CHUNK_SIZE,
    ChunkReader,
    MeteredChunks,
    MeteredReader,
    ObservedReader,
    ReadableStream,
    StickyChunks,
    iter_chunks,
)


class Trickle(io.RawIOBase):
    """A non-seekable raw stream that returns at most *step* bytes per read,
    says "nothing yet" (None) before every chunk, and records read sizes."""

    def __init__(self, data: bytes, step: int) -> None:
        super().__init__()
        self._data, self._step, self._position = data, step, 0
        self._ready = False
        self.sizes: list[int] = []

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:
        view = memoryview(buffer).cast("B")
        self.sizes.append(len(view))
        if not self._ready:
            self._ready = True
            return None
        self._ready = False
        n = min(len(view), self._step, len(self._data) - self._position)
        view[:n] = self._data[self._position : self._position + n]
        self._position += n
        return n


@given(st.binary(max_size=5000), st.integers(min_value=1, max_value=700))
def test_iter_chunks_yields_every_byte_in_bounded_non_empty_bytes(data: bytes, size: int) -> None:
    chunks = list(iter_chunks(io.BytesIO(data), size))
    assert b"".join(chunks) == data
    assert all(type(c) is bytes and 0 < len(c) <= size for c in chunks)


def test_iter_chunks_reads_chunk_size_by_default_and_does_not_close() -> None:
    stream = Trickle(b"x" * 10, step=4)
    assert b"".join(iter_chunks(stream)) == b"x" * 10
    assert set(stream.sizes) == {CHUNK_SIZE}
    assert not stream.closed


def test_iter_chunks_waits_through_non_blocking_reads() -> None:
    stream = Trickle(b"abcdefg", step=3)
    assert list(iter_chunks(stream, 5)) == [b"abc", b"def", b"g"]


def test_iter_chunks_turns_bytes_like_chunks_into_bytes() -> None:
    class Views:
        def __init__(self) -> None:
            self._parts = [bytearray(b"ab"), memoryview(b"cd")]

        def read(self, size: int) -> object:
            return self._parts.pop(0) if self._parts else b""

    assert list(iter_chunks(Views())) == [b"ab", b"cd"]  # type: ignore[arg-type]


@given(st.lists(st.binary(max_size=50), max_size=10), st.integers(min_value=1, max_value=64))
def test_chunk_reader_reads_the_concatenation_in_any_step(chunks: list[bytes], step: int) -> None:
    reader = ChunkReader(chunks)
    parts = []
    while part := reader.read(step):
        assert len(part) <= step
        parts.append(part)
    assert b"".join(parts) == b"".join(chunks)
    assert reader.readable()


def test_chunk_reader_read_without_size_reads_everything_left() -> None:
    reader = ChunkReader([b"ab", b"", b"cd"])
    assert reader.read(1) == b"a"
    assert reader.read() == b"bcd"
    assert reader.read() == b""


def test_closing_a_chunk_reader_closes_its_generator_once() -> None:
    finished: list[str] = []

    def chunks() -> Iterator[bytes]:
        try:
            yield b"a"
            yield b"b"
        finally:
            finished.append("closed")

    reader = ChunkReader(chunks())
    assert reader.read(1) == b"a"
    reader.close()
    reader.close()
    assert finished == ["closed"]
    assert reader.closed
    with pytest.raises(ValueError, match="closed"):
        reader.read(1)


def test_chunk_reader_works_under_a_buffered_reader() -> None:
    reader = io.BufferedReader(ChunkReader([b"line 1\nli", b"ne 2\n"]))
    assert reader.readlines() == [b"line 1\n", b"line 2\n"]


class Recorder(ObservedReader):
    def __init__(self, source: Any) -> None:
        super().__init__(source)
        self.events: list[object] = []

    def _on_data(self, chunk: memoryview) -> None:
        self.events.append(bytes(chunk))

    def _on_eof(self) -> None:
        self.events.append("eof")

    def _on_close(self) -> None:
        self.events.append("close")


def test_observed_reader_sees_each_chunk_then_eof_once_then_close_once() -> None:
    source = io.BytesIO(b"abcde")
    reader = Recorder(source)
    assert reader.read(2) == b"ab"
    assert reader.read() == b"cde"
    assert reader.read(3) == b""
    reader.close()
    reader.close()
    assert reader.events == [b"ab", b"cde", "eof", "close"]
    assert source.closed


def test_observed_reader_reports_close_without_eof() -> None:
    reader = Recorder(io.BytesIO(b"abc"))
    reader.read(1)
    reader.close()
    assert reader.events == [b"a", "close"]


def test_observed_reader_ignores_empty_reads() -> None:
    reader = Recorder(io.BytesIO(b"abc"))
    assert reader.readinto(bytearray()) == 0
    assert reader.events == []
    assert reader.read() == b"abc"


def test_observed_reader_handles_sources_without_readinto_and_not_ready_reads() -> None:
    class ReadOnly:
        def __init__(self) -> None:
            self._answers: list[bytes | None] = [None, b"ab", None, b""]
            self.closed = False

        def read(self, size: int) -> bytes | None:
            return self._answers.pop(0)

        def close(self) -> None:
            self.closed = True

    reader = Recorder(ReadOnly())
    assert reader.read(10) == b"ab"
    assert reader.read(10) == b""
    assert reader.events == [b"ab", "eof"]
    reader = Recorder(Trickle(b"abc", step=2))
    assert reader.read(10) == b"ab"


def test_an_error_raised_at_eof_reaches_the_reader() -> None:
    class Refusing(ObservedReader):
        def _on_eof(self) -> None:
            raise ValueError("digest mismatch")

    reader = Refusing(io.BytesIO(b"abc"))
    with pytest.raises(ValueError, match="digest mismatch"):
        reader.read()


def test_readable_stream_derives_readinto_and_readall_from_read() -> None:
    class Upper(ReadableStream):
        def __init__(self, source: io.BytesIO) -> None:
            super().__init__()
            self._source = source

        def read(self, size: int | None = -1) -> bytes:
            return self._source.read(-1 if size is None else size).upper()

    stream = Upper(io.BytesIO(b"abcdef"))
    buffer = bytearray(4)
    assert stream.readable()
    assert stream.readinto(buffer) == 4
    assert bytes(buffer) == b"ABCD"
    assert stream.readall() == b"EF"
    assert stream.readinto(buffer) == 0


# A stream that raised stays failed: reading on never reports a clean end.


class _Breaks(io.RawIOBase):
    """Delivers *good* bytes, then raises ConnectionResetError once, then
    would deliver more (a source that recovered behind the reader's back)."""

    def __init__(self, good: bytes) -> None:
        super().__init__()
        self._good = io.BytesIO(good)
        self._raised = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self._good.readinto(buffer)
        if n:
            return n
        if not self._raised:
            self._raised = True
            raise ConnectionResetError("reset")
        return 0


def test_an_observed_reader_that_raised_raises_again() -> None:
    reader = ObservedReader(_Breaks(b"abc"))
    assert reader.read(10) == b"abc"
    for _ in range(3):
        with pytest.raises(ConnectionResetError):
            reader.read(10)


def test_an_observed_reader_whose_eof_hook_raised_raises_again() -> None:
    class Refusing(ObservedReader):
        def _on_eof(self) -> None:
            raise ValueError("digest mismatch")

    reader = Refusing(io.BytesIO(b"abc"))
    assert reader.read(10) == b"abc"
    for _ in range(2):
        with pytest.raises(ValueError, match="digest mismatch"):
            reader.read(10)


def _failing_chunks() -> Iterator[bytes]:
    yield b"first"
    raise ConnectionResetError("reset")


def test_a_chunk_reader_whose_chunks_raised_raises_again() -> None:
    reader = ChunkReader(_failing_chunks())
    assert reader.read(100) == b"first"
    for _ in range(2):
        with pytest.raises(ConnectionResetError):
            reader.read(100)


def test_sticky_chunks_raise_again_where_a_generator_would_end() -> None:
    plain = _failing_chunks()
    assert next(plain) == b"first"
    with pytest.raises(ConnectionResetError):
        next(plain)
    with pytest.raises(StopIteration):  # what StickyChunks exists to prevent
        next(plain)
    sticky = StickyChunks(_failing_chunks())
    assert next(sticky) == b"first"
    for _ in range(3):
        with pytest.raises(ConnectionResetError):
            next(sticky)


class Report:
    """The *finish* of a MeteredReader: every call it got."""

    def __init__(self) -> None:
        self.calls: list[tuple[str | None, int, bool]] = []

    def __call__(self, exc: BaseException | None, delivered: int, complete: bool) -> None:
        self.calls.append((None if exc is None else type(exc).__name__, delivered, complete))


def _read_to_the_end(reader: MeteredReader) -> None:
    assert reader.read() == b"abc"


def _read_some(reader: MeteredReader) -> None:
    assert reader.read(2) == b"ab"


def _read_lines_to_the_end(reader: MeteredReader) -> None:
    assert list(reader) == [b"abc"]


def _read_into_past_the_end(reader: MeteredReader) -> None:
    buffer = bytearray(10)
    assert reader.readinto(buffer) == 3
    assert reader.readinto(buffer) == 0


@pytest.mark.parametrize(
    ("consume", "expected"),
    [
        (_read_to_the_end, (None, 3, True)),
        (_read_lines_to_the_end, (None, 3, True)),
        (_read_into_past_the_end, (None, 3, True)),
        (_read_some, (None, 2, False)),
        (lambda reader: None, (None, 0, False)),
    ],
    ids=["read", "lines", "readinto", "closed early", "closed unread"],
)
def test_a_metered_reader_reports_once_and_closes_its_source_once(
    consume: Any, expected: tuple[str | None, int, bool]
) -> None:
    source, report = io.BytesIO(b"abc"), Report()
    reader = MeteredReader(source, report)
    with reader:
        consume(reader)
    reader.close()
    assert report.calls == [expected]
    assert source.closed
    assert reader.closed


def test_a_metered_reader_dropped_unclosed_reports_and_closes_its_source() -> None:
    source, report = io.BytesIO(b"abc"), Report()
    reader = MeteredReader(source, report)
    assert reader.read(1) == b"a"
    del reader
    assert report.calls == [(None, 1, False)]
    assert source.closed


def test_a_metered_reader_that_raised_reports_the_error_once_and_raises_again_once_closed() -> None:
    report = Report()
    reader = MeteredReader(ObservedReader(_Breaks(b"abc")), report)
    assert reader.read(3) == b"abc"
    with pytest.raises(ConnectionResetError):
        reader.read(3)
    reader.close()
    for read in (reader.read, reader.readline, lambda: reader.readinto(bytearray(3))):
        with pytest.raises(ConnectionResetError):
            read()
    assert report.calls == [("ConnectionResetError", 3, False)]


def test_a_closed_metered_reader_never_reads_as_empty() -> None:
    reader = MeteredReader(io.BytesIO(b"a\nb\n"), Report())
    assert reader.read() == b"a\nb\n"
    reader.close()
    reads = [reader.read, reader.readline, reader.readlines, reader.flush, reader.__enter__]
    for read in [*reads, lambda: reader.readinto(bytearray(1)), lambda: next(reader)]:
        with pytest.raises(ValueError, match="closed"):
            read()


def test_a_metered_reader_reports_even_when_its_source_fails_to_close() -> None:
    class Unclosable(io.BytesIO):
        def close(self) -> None:
            raise OSError("close failed")

    report = Report()
    reader = MeteredReader(Unclosable(b"abc"), report)
    with pytest.raises(OSError, match="close failed"):
        reader.close()
    reader.close()  # closed already: neither the source nor the report again
    assert reader.closed
    assert report.calls == [(None, 0, False)]


def test_a_metered_reader_completes_short_reads() -> None:
    report = Report()
    reader = MeteredReader(ObservedReader(Trickle(b"0123456789", step=3)), report)
    assert reader.read(7) == b"0123456"
    assert reader.read(7) == b"789"
    assert reader.read(7) == b""
    assert report.calls == [(None, 10, True)]


class _ReadsBytes(ReadableStream):
    def __init__(self, data: bytes) -> None:
        super().__init__()
        self._data = io.BytesIO(data)

    def read(self, size: int | None = -1) -> bytes:
        return self._data.read(size)


class _NoReadinto:
    """A source with read() alone: a reader copies what it returns into the buffer."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def read(self, size: int = -1) -> bytes:
        return self._data.read(size)

    def close(self) -> None:
        self._data.close()


READERS = {
    "ReadableStream": lambda data, report: _ReadsBytes(data),
    "ObservedReader": lambda data, report: ObservedReader(_NoReadinto(data)),  # type: ignore[arg-type]
    "MeteredReader": lambda data, report: MeteredReader(_NoReadinto(data), report),  # type: ignore[arg-type]
}


@pytest.mark.parametrize("make", READERS.values(), ids=READERS.keys())
@pytest.mark.parametrize("buffer", [b"xyz", memoryview(b"xyz")], ids=["bytes", "memoryview"])
def test_readinto_a_read_only_buffer_is_refused_before_any_byte_is_taken(
    make: Any, buffer: Any
) -> None:
    report = Report()
    reader = make(b"abcdef", report)
    with pytest.raises(TypeError, match="read-write"):
        reader.readinto(buffer)
    # The caller's mistake: neither bytes lost, nor a failed stream, nor an end.
    assert reader.read() == b"abcdef"
    reader.close()
    assert report.calls in ([], [(None, 6, True)])


@pytest.mark.parametrize("size", [2.5, "3"], ids=["float", "str"])
def test_a_metered_reader_refuses_a_size_that_is_not_an_int_before_any_io(size: Any) -> None:
    report = Report()
    reader = MeteredReader(io.BytesIO(b"ab\ncd\n"), report)
    for read in (reader.read, reader.readline):
        with pytest.raises(TypeError):
            read(size)
    assert report.calls == []  # no failure reported: the stream reads on
    assert reader.readline() == b"ab\n"
    assert reader.read() == b"cd\n"
    assert report.calls == [(None, 6, True)]


@pytest.mark.parametrize("how", ["copy", "pickle"])
def test_a_metered_reader_can_be_neither_copied_nor_pickled(how: str) -> None:
    report = Report()
    reader = MeteredReader(io.BytesIO(b"abc"), report)
    with pytest.raises(TypeError, match="cannot pickle or copy a MeteredReader"):
        copy.copy(reader) if how == "copy" else pickle.dumps(reader)
    assert reader.read() == b"abc"
    reader.close()
    gc.collect()
    # A copy, dropped, reported the same read a second time.
    assert report.calls == [(None, 3, True)]


class _Refusing:
    """A report that fails, as a log processor that raises would."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, exc: BaseException | None, delivered: int, complete: bool) -> None:
        self.calls += 1
        raise RuntimeError("the report failed")


@pytest.mark.parametrize("size", [-1, 100], ids=["read all", "read past the end"])
def test_a_metered_reader_whose_report_failed_at_the_end_keeps_raising(size: int) -> None:
    report = _Refusing()
    reader = MeteredReader(ObservedReader(Trickle(b"abc", step=3)), report)
    with pytest.raises(RuntimeError, match="report failed"):
        reader.read(size)
    # The bytes of that read never reached the caller: reading on must not
    # find the end of the stream.
    for read in (reader.read, reader.readline, lambda: reader.readinto(bytearray(3))):
        with pytest.raises(RuntimeError, match="report failed"):
            read()
    reader.close()
    assert report.calls == 1


def test_metered_chunks_whose_report_failed_keep_raising() -> None:
    report = _Refusing()
    chunks = MeteredChunks(iter([b"ab", b"c"]), report)
    assert list(itertools.islice(chunks, 2)) == [b"ab", b"c"]
    for _ in range(2):
        with pytest.raises(RuntimeError, match="report failed"):
            next(chunks)
    assert report.calls == 1


class _Hesitant(io.RawIOBase):
    """A non-blocking raw stream: every other read finds nothing ready (None)."""

    def __init__(self, data: bytes) -> None:
        super().__init__()
        self._data = io.BytesIO(data)
        self._calls = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:
        self._calls += 1
        if self._calls % 2:
            return None
        return self._data.readinto(memoryview(buffer).cast("B")[:5])


def test_a_metered_reader_reads_whole_lines_of_a_buffered_non_blocking_source() -> None:
    lines = [b"first line\n", b"\n", b"third, and the longest line\n", b"last"]
    report = Report()
    reader = MeteredReader(io.BufferedReader(_Hesitant(b"".join(lines))), report)
    # The buffer's readline gave b"" where nothing was ready yet: the lines
    # ended there, and the read was reported complete.
    assert list(reader) == lines
    reader.close()
    assert report.calls == [(None, sum(map(len, lines)), True)]


@pytest.mark.parametrize("limit", [-1, 1, 3, 100])
def test_a_metered_reader_s_lines_stop_at_the_newline_the_limit_or_the_end(limit: int) -> None:
    data = b"ab\ncdefg\n\nhij"
    expected = io.BytesIO(data)
    reader = MeteredReader(io.BufferedReader(_Hesitant(data)), Report())
    while True:
        line = reader.readline(limit)
        assert line == expected.readline(limit)
        if not line:
            break
