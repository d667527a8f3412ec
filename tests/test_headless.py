"""EventWriter: one JSON line per event, in order, flushed before the loop waits again."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import sys
import threading
from typing import TYPE_CHECKING, Any

from hypothesis import given
from hypothesis import strategies as st

from lanchat.headless import (
    EventWriter,
    LineSplitter,
    encode_event,
    parse_command,
    run_headless,
)

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    import pytest

    from lanchat.node import Node


class FlushLog(io.StringIO):
    """A text stream that remembers what had reached the reader at each flush."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = self.flushes = 0
        self.flushed = ""

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)

    def flush(self) -> None:
        super().flush()
        self.flushes += 1
        self.flushed = self.getvalue()


def lines(text: str) -> list[dict[str, Any]]:
    assert text.endswith("\n") or not text
    return [json.loads(line) for line in text.splitlines()]


def event(n: int, text: str = "hi") -> dict[str, Any]:
    return {"ev": "public", "n": n, "text": text}


def test_outside_a_loop_every_event_is_flushed_at_once() -> None:
    stream = FlushLog()
    emit = EventWriter(stream)
    emit(event(1))
    assert lines(stream.flushed) == [event(1)]
    emit(event(2))
    assert lines(stream.flushed) == [event(1), event(2)]
    assert stream.flushes == 2


def test_one_line_per_event_compact_and_not_ascii_escaped() -> None:
    stream = FlushLog()
    EventWriter(stream)(event(1, "caf\u00e9 \U0001f600\nsecond line"))
    assert stream.flushed == ('{"ev":"public","n":1,"text":"caf\u00e9 \U0001f600\\nsecond line"}\n')


_GENERIC = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_ANY_FLOAT = st.one_of(st.floats(), st.integers(), st.none())


@given(
    t=_ANY_FLOAT,
    msg_id=st.text(),
    sender=st.one_of(st.text(), st.integers()),
    text=st.text(),
    sent_t=_ANY_FLOAT,
    ev=st.sampled_from(["public", "private"]),
)
def test_the_public_event_fast_path_writes_what_the_generic_encoder_writes(
    t: Any, msg_id: str, sender: Any, text: str, sent_t: Any, ev: str
) -> None:
    event = {"ev": ev, "t": t, "id": msg_id, "from": sender, "text": text, "sent_t": sent_t}
    assert encode_event(event) == _GENERIC.encode(event)
    # Another shape (a field more, or in another order) is never taken for a public event.
    assert encode_event({**event, "x": 1}) == _GENERIC.encode({**event, "x": 1})
    reordered = {"t": t, "ev": ev, "id": msg_id, "from": sender, "text": text, "sent_t": sent_t}
    assert encode_event(reordered) == _GENERIC.encode(reordered)


@given(t=_ANY_FLOAT, msg_id=st.one_of(st.text(), st.integers()), ev=st.sampled_from(["sent", "x"]))
def test_the_sent_event_fast_path_writes_what_the_generic_encoder_writes(
    t: Any, msg_id: Any, ev: str
) -> None:
    event = {"ev": ev, "t": t, "id": msg_id}
    assert encode_event(event) == _GENERIC.encode(event)
    assert encode_event({"t": t, "ev": ev, "id": msg_id}) == _GENERIC.encode(
        {"t": t, "ev": ev, "id": msg_id}
    )


def test_a_burst_in_one_loop_iteration_is_flushed_once_in_order() -> None:
    stream = FlushLog()

    async def main() -> None:
        emit = EventWriter(stream)
        for n in range(100):
            emit(event(n))
        assert stream.flushes == 0  # not yet: the rest of this iteration may add more
        await asyncio.sleep(0)  # the loop runs its next callbacks: the flush is one
        assert (stream.writes, stream.flushes) == (1, 1)  # even for a write-through stream
        assert lines(stream.flushed) == [event(n) for n in range(100)]
        emit(event(100))
        await asyncio.sleep(0)
        assert stream.flushes == 2
        assert lines(stream.flushed)[-1] == event(100)

    asyncio.run(main())


def test_no_event_waits_while_the_loop_sleeps() -> None:
    # A receiver that goes back to waiting for the network has already sent its events.
    stream = FlushLog()

    async def main() -> None:
        emit = EventWriter(stream)
        loop = asyncio.get_running_loop()
        emitted = loop.create_future()

        def later() -> None:
            emit(event(2))
            emitted.set_result(None)

        loop.call_soon(emit, event(1))
        loop.call_later(0.5, later)  # far beyond the two iterations below, on any OS
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert lines(stream.flushed) == [event(1)]
        await emitted  # the loop had nothing due for a long while after this callback...
        await asyncio.sleep(0)
        assert lines(stream.flushed) == [event(1), event(2)]  # ...and flushed at once

    asyncio.run(main())


def test_events_from_other_callbacks_of_the_iteration_go_out_together() -> None:
    stream = FlushLog()

    async def main() -> None:
        emit = EventWriter(stream)
        loop = asyncio.get_running_loop()
        for n in range(5):
            loop.call_soon(emit, event(n))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert lines(stream.flushed) == [event(n) for n in range(5)]
        assert stream.flushes == 1

    asyncio.run(main())


def test_an_event_from_another_thread_is_flushed_at_once_after_the_loops_own() -> None:
    stream = FlushLog()

    async def main() -> None:
        emit = EventWriter(stream)
        emit(event(1))  # buffered until the loop's next iteration
        worker = threading.Thread(target=emit, args=(event(2),))
        worker.start()
        worker.join()
        assert lines(stream.flushed) == [event(1), event(2)]

    asyncio.run(main())


def drained(read_fd: int) -> Callable[[], bytes]:
    """Read the pipe to its end in a thread (a pipe holds 4 KiB on Windows, less than a test
    writes); the returned function waits for the end and gives what was read."""
    chunks: list[bytes] = []

    def pump() -> None:
        with open(read_fd, "rb", buffering=0) as reader:
            while chunk := reader.read(65536):
                chunks.append(chunk)

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()

    def result() -> bytes:
        thread.join(timeout=10)
        assert not thread.is_alive(), "the pipe was not closed"
        return b"".join(chunks)

    return result


def test_a_real_pipe_gets_whole_lines_in_order() -> None:
    read_fd, write_fd = os.pipe()
    received = drained(read_fd)
    with open(write_fd, "w", encoding="utf-8") as stream:

        async def main() -> None:
            emit = EventWriter(stream)
            for n in range(50):
                emit(event(n, "x" * 200))
            await asyncio.sleep(0)

        asyncio.run(main())
    data = received()
    assert [json.loads(line) for line in data.splitlines()] == [
        event(n, "x" * 200) for n in range(50)
    ]


def test_a_reader_that_went_away_does_not_stop_the_writer() -> None:
    read_fd, write_fd = os.pipe()
    os.close(read_fd)
    stream = open(write_fd, "w", encoding="utf-8")  # noqa: SIM115
    try:
        emit = EventWriter(stream)
        emit(event(1))

        async def main() -> None:
            emit(event(2))
            await asyncio.sleep(0)

        asyncio.run(main())
        emit.flush()
    finally:
        # What is left in the buffer cannot go anywhere (BrokenPipeError; on Windows EINVAL).
        with contextlib.suppress(OSError):
            stream.close()


def test_an_event_that_cannot_be_encoded_loses_only_itself() -> None:
    read_fd, write_fd = os.pipe()
    received = drained(read_fd)
    with open(write_fd, "w", encoding="utf-8") as stream:

        async def main() -> None:
            emit = EventWriter(stream)
            emit(event(1))
            emit(event(2, "lone \ud800 surrogate"))
            emit(event(3))
            await asyncio.sleep(0)

        asyncio.run(main())
    data = received()
    assert [json.loads(line) for line in data.splitlines()] == [event(1), event(3)]


def test_a_closed_stream_is_ignored() -> None:
    stream = FlushLog()
    emit = EventWriter(stream)
    stream.close()
    emit(event(1))
    emit.flush()


class _QuitsWithAnError:
    """Stands in for Node.run: emits its last events, like a NodeExit, and returns 2."""

    def __init__(self, emit: EventWriter) -> None:
        self.emit = emit

    async def run(self, commands: asyncio.Queue[dict[str, Any] | None]) -> int:
        del commands
        self.emit({"ev": "status", "state": "discovering"})
        self.emit({"ev": "error", "code": "handle_taken", "message": "choose another"})
        return 2

    def stop(self) -> None:
        pass


def test_run_headless_flushes_the_last_events_before_it_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = FlushLog()
    emit = EventWriter(stream)
    node: Node = _QuitsWithAnError(emit)  # type: ignore[assignment]
    with (tmp_path / "stdin").open("w+") as stdin:
        monkeypatch.setattr(sys, "stdin", stdin)

        async def main() -> int:
            status = await run_headless(node, emit)
            # Returned without another loop iteration: the error must be out already.
            assert [e["ev"] for e in lines(stream.flushed)] == ["status", "error"]
            return status

        assert asyncio.run(main()) == 2


def test_parse_command() -> None:
    assert parse_command('{"cmd":"say","text":"hi"}') == {"cmd": "say", "text": "hi"}
    assert isinstance(parse_command("[1]"), str)
    assert isinstance(parse_command("not json"), str)


# ---------------------------------------------------------------- stdin lines


_LINE = st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"."))


@given(st.lists(_LINE, max_size=12), st.lists(st.integers(1, 50), min_size=1), st.booleans())
def test_the_splitter_gives_every_line_once_and_a_long_one_as_one_none(
    lines_in: list[bytes], cuts: list[int], terminated: bool
) -> None:
    limit = 20
    data = b"\n".join(lines_in) + (b"\n" if terminated and lines_in else b"")
    splitter = LineSplitter(limit)
    out: list[bytes | None] = []
    start, i = 0, 0
    while start < len(data):  # the same bytes in reads of any size
        size = cuts[i % len(cuts)]
        out += splitter.feed(data[start : start + size])
        start, i = start + size, i + 1
    out += splitter.end()
    expected: list[bytes | None] = [line if len(line) <= limit else None for line in lines_in]
    if lines_in and not terminated and lines_in[-1] == b"":
        expected.pop()  # an empty unterminated last line is no line
    assert out == expected


class _RecordsCommands:
    """Stands in for Node.run: keeps every command until stdin ends."""

    def __init__(self) -> None:
        self.commands: list[dict[str, Any]] = []

    async def run(self, commands: asyncio.Queue[dict[str, Any] | None]) -> int:
        while (cmd := await commands.get()) is not None:
            self.commands.append(cmd)
        return 0

    def stop(self) -> None:
        pass


def test_a_10_mb_line_is_discarded_whole_with_one_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Spaces, then something that parses: a reader that cut the line up at its limit took
    # the tail for a command of its own.
    hostile = b" " * (10 * 1024 * 1024) + b'{"cmd":"say","text":"tail"}\n'
    read_fd, write_fd = os.pipe()

    def feed() -> None:
        with os.fdopen(write_fd, "wb") as pipe:
            pipe.write(b'{"cmd":"who"}\n' + hostile + b'{"cmd":"friends"}\n')

    stream = FlushLog()
    emit = EventWriter(stream)
    node = _RecordsCommands()
    with os.fdopen(read_fd, "rb") as stdin:
        monkeypatch.setattr(sys, "stdin", stdin)
        writer = threading.Thread(target=feed)
        writer.start()
        assert asyncio.run(run_headless(node, emit)) == 0  # type: ignore[arg-type]
        writer.join(10)
    assert node.commands == [{"cmd": "who"}, {"cmd": "friends"}]
    errors = [e for e in lines(stream.getvalue()) if e["ev"] == "error"]
    assert [e["code"] for e in errors] == ["bad_command"]
    assert "longer than 65536 bytes" in errors[0]["message"]
