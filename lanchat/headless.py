"""The JSON-lines front end: one command object per stdin line, one event per stdout line.

This is the interface for bots, scripts and tests; docs/headless.md is its contract.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import threading
import time
from json.encoder import encode_basestring as _json_str
from typing import IO, TYPE_CHECKING, Any

from lanchat import oscompat

if TYPE_CHECKING:
    from lanchat.node import Node

__all__ = ["EventWriter", "LineSplitter", "encode_event", "run_headless"]

MAX_LINE_BYTES = 64 * 1024
_TOO_LONG = f"command line longer than {MAX_LINE_BYTES} bytes: discarded"


# One encoder for every event: json.dumps with options builds a new one per call.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_PUBLIC_SHAPE = ("ev", "t", "id", "from", "text", "sent_t")
_SENT_SHAPE = ("ev", "t", "id")
_FINITE = 1e300  # json writes NaN and Infinity as words, repr() does not: those take the slow path


def encode_event(event: dict[str, Any]) -> str:
    """The event as one line of compact JSON, exactly as ``_ENCODER`` writes it.

    Public messages are most of what a node in a busy room writes (and ``sent`` most of
    what a bot that talks writes), and the generic encoder costs more than twice what
    formatting their fixed shapes directly does.
    """
    shape = tuple(event)
    if shape == _SENT_SHAPE and event["ev"] == "sent":  # one per message a bot sends
        t, msg_id = event["t"], event["id"]
        if type(t) is float and -_FINITE < t < _FINITE and type(msg_id) is str:
            return f'{{"ev":"sent","t":{t!r},"id":{_json_str(msg_id)}}}'
    elif shape == _PUBLIC_SHAPE and event["ev"] == "public":
        t, msg_id, sender, text, sent_t = (
            event["t"], event["id"], event["from"], event["text"], event["sent_t"]
        )  # fmt: skip
        if (
            type(t) is float
            and type(sent_t) is float
            and -_FINITE < t < _FINITE
            and -_FINITE < sent_t < _FINITE
            and type(msg_id) is str
            and type(sender) is str
            and type(text) is str
        ):
            return (
                f'{{"ev":"public","t":{t!r},"id":{_json_str(msg_id)},"from":{_json_str(sender)},'
                f'"text":{_json_str(text)},"sent_t":{sent_t!r}}}'
            )
    return _ENCODER.encode(event)


class EventWriter:
    """Writes events as JSON lines; safe to call from the loop and the stdin thread.

    Called in a running event loop, it keeps the line and writes all the lines kept during
    that loop iteration at the start of the next one, with one write and one flush: a burst
    of events (a receive batch) costs one syscall, whatever the stream's own buffering
    (``PYTHONUNBUFFERED`` makes each write a syscall), and no event waits longer than the
    callbacks already due. Anywhere else (before the loop starts, in another thread) each
    event is written and flushed at once. :meth:`flush` writes what is kept now.
    """

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self._lock = threading.Lock()
        self._lines: list[str] = []  # kept for the flush the loop will run next
        self._flush_due = False

    def __call__(self, event: dict[str, Any]) -> None:
        line = encode_event(event)
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        with self._lock:
            self._lines.append(line)
            if loop is not None:
                if not self._flush_due:
                    self._flush_due = True
                    loop.call_soon(self.flush)
                return
        self.flush()

    def flush(self) -> None:
        """Write and flush the lines kept so far, in order; run_headless calls it at the end."""
        with self._lock:
            self._flush_due = False
            if not self._lines:
                return
            lines, self._lines = self._lines, []
            try:
                try:
                    self._stream.write("\n".join(lines) + "\n")
                except UnicodeEncodeError:
                    # A lone surrogate cannot be written: lose that event, not its neighbours.
                    for line in lines:
                        with contextlib.suppress(UnicodeEncodeError):
                            self._stream.write(line + "\n")
                self._stream.flush()
            except ValueError:
                pass  # the stream is closed
            except OSError as exc:
                if not oscompat.is_closed_pipe(exc):
                    raise
                # The reader went away; the node keeps running until stdin closes.


def parse_command(line: str) -> dict[str, Any] | str:
    """The command object on ``line``, or an error message for ``bad_command``."""
    if len(line.encode("utf-8", "surrogatepass")) > MAX_LINE_BYTES:
        return _TOO_LONG
    try:
        cmd = json.loads(line)
    except ValueError as exc:
        return f"not valid JSON: {exc}"
    if not isinstance(cmd, dict) or not isinstance(cmd.get("cmd"), str):
        return 'each line must be a JSON object with a "cmd" string'
    return cmd


class LineSplitter:
    """Cuts stdin's bytes into lines, with no line longer than ``limit`` bytes.

    A longer line is discarded whole: it is reported once (as None, where a line would be)
    when it passes the limit, its bytes are dropped as they come, and whatever follows up to
    its newline is never taken for a command of its own. Memory stays within ``limit`` plus
    one read, however long the line.
    """

    def __init__(self, limit: int = MAX_LINE_BYTES) -> None:
        self._limit = limit
        self._pending = bytearray()
        self._discarding = False  # inside a line already reported as too long

    def feed(self, chunk: bytes) -> list[bytes | None]:
        """The lines ``chunk`` completes (None for one too long), in order."""
        out: list[bytes | None] = []
        start = 0
        while (end := chunk.find(b"\n", start)) >= 0:
            if not self._pending and not self._discarding:
                # A whole line in this read (a bot's burst): no copy through the buffer.
                out.append(chunk[start:end] if end - start <= self._limit else None)
                start = end + 1
                continue
            self._take(chunk[start:end], out)
            if self._discarding:
                self._discarding = False  # the too-long line ends here, already reported
            else:
                out.append(bytes(self._pending))
            self._pending.clear()
            start = end + 1
        self._take(chunk[start:], out)
        return out

    def end(self) -> list[bytes | None]:
        """What is left at end of input: an unterminated last line, if any."""
        rest = b"" if self._discarding else bytes(self._pending)
        self._pending.clear()
        return [rest] if rest else []

    def _take(self, piece: bytes, out: list[bytes | None]) -> None:
        if self._discarding:
            return
        if len(self._pending) + len(piece) > self._limit:
            out.append(None)
            self._pending.clear()
            self._discarding = True
            return
        self._pending += piece


def _read_stdin(
    loop: asyncio.AbstractEventLoop,
    queue: asyncio.Queue[dict[str, Any] | None],
    emit: EventWriter,
    fd: int,
) -> None:
    # A thread, not loop.connect_read_pipe: it works the same for pipes, files and ttys.
    # Raw os.read, not sys.stdin: a daemon thread blocked inside a buffered reader would
    # abort the interpreter at exit.
    lines = LineSplitter()
    try:
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            parsed = [_parse(raw) for raw in lines.feed(chunk)]
            # One wake-up of the loop per read, not per line: a bot's burst of commands
            # would otherwise cost the loop a self-pipe write and read for each.
            if any(p is not None for p in parsed):
                loop.call_soon_threadsafe(_deliver, parsed, queue, emit)
        parsed = [_parse(raw) for raw in lines.end()]
        if parsed:
            loop.call_soon_threadsafe(_deliver, parsed, queue, emit)
    except (OSError, ValueError, RuntimeError):
        pass
    finally:
        # EOF = quit cleanly (the loop may already be closed).
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(queue.put_nowait, None)


def _parse(raw: bytes | None) -> dict[str, Any] | str | None:
    """A command, an error message for ``bad_command``, or None for a blank line.

    ``raw`` None: a line over the limit, discarded by `LineSplitter`.
    """
    if raw is None:
        return _TOO_LONG
    text = raw.decode("utf-8", "replace").strip()
    return parse_command(text) if text else None


def _deliver(
    parsed: list[dict[str, Any] | str | None],
    queue: asyncio.Queue[dict[str, Any] | None],
    emit: EventWriter,
) -> None:
    for item in parsed:
        if isinstance(item, str):
            _emit_error(emit, item)
        elif item is not None:
            queue.put_nowait(item)


def _emit_error(emit: EventWriter, message: str) -> None:
    emit({"ev": "error", "t": round(time.time(), 6), "code": "bad_command", "message": message})


async def run_headless(node: Node, emit: EventWriter) -> int:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
    running = [node]  # the node of the current room (a `room` command moves us)

    def stop_current() -> None:
        running[-1].stop()

    undo = oscompat.install_stop_handlers(loop, stop_current, oscompat.stop_signal_names())
    reader = threading.Thread(
        target=_read_stdin, args=(loop, queue, emit, sys.stdin.fileno()), daemon=True
    )
    reader.start()
    try:
        while True:
            status = await running[-1].run(queue)
            moved = running[-1]
            next_room = getattr(moved, "next_room", None)  # front-end test doubles have none
            if status != 0 or next_room is None:
                return status
            emit({"ev": "room", "t": round(time.time(), 6), "name": next_room})
            running.append(moved.moved_to_room())
    finally:
        undo()
        emit.flush()  # the last events (an error before a non-zero exit) go out now
