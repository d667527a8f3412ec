"""The JSON-lines front end: one command object per stdin line, one event per stdout line.

This is the interface for bots, scripts and tests; docs/headless.md is its contract.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import threading
import time
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lanchat.node import Node

__all__ = ["EventWriter", "run_headless"]

MAX_LINE_BYTES = 64 * 1024


# One encoder for every event: json.dumps with options builds a new one per call.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


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
        line = _ENCODER.encode(event)
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
            except (BrokenPipeError, ValueError):
                pass  # the reader went away; the node keeps running until stdin closes


def parse_command(line: str) -> dict[str, Any] | str:
    """The command object on ``line``, or an error message for ``bad_command``."""
    if len(line.encode("utf-8", "surrogatepass")) > MAX_LINE_BYTES:
        return f"command line longer than {MAX_LINE_BYTES} bytes"
    try:
        cmd = json.loads(line)
    except ValueError as exc:
        return f"not valid JSON: {exc}"
    if not isinstance(cmd, dict) or not isinstance(cmd.get("cmd"), str):
        return 'each line must be a JSON object with a "cmd" string'
    return cmd


def _read_stdin(
    loop: asyncio.AbstractEventLoop,
    queue: asyncio.Queue[dict[str, Any] | None],
    emit: EventWriter,
    fd: int,
) -> None:
    # A thread, not loop.connect_read_pipe: it works the same for pipes, files and ttys.
    # Raw os.read, not sys.stdin: a daemon thread blocked inside a buffered reader would
    # abort the interpreter at exit.
    pending = b""
    try:
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            if len(pending) > MAX_LINE_BYTES:
                pending = b""
                loop.call_soon_threadsafe(_emit_error, emit, "command line too long")
            for raw in lines:
                _dispatch(raw, loop, queue, emit)
        if pending:
            _dispatch(pending, loop, queue, emit)
    except (OSError, ValueError, RuntimeError):
        pass
    finally:
        # EOF = quit cleanly (the loop may already be closed).
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(queue.put_nowait, None)


def _dispatch(
    raw: bytes,
    loop: asyncio.AbstractEventLoop,
    queue: asyncio.Queue[dict[str, Any] | None],
    emit: EventWriter,
) -> None:
    text = raw.decode("utf-8", "replace").strip()
    if not text:
        return
    parsed = parse_command(text)
    if isinstance(parsed, str):
        loop.call_soon_threadsafe(_emit_error, emit, parsed)
    else:
        loop.call_soon_threadsafe(queue.put_nowait, parsed)


def _emit_error(emit: EventWriter, message: str) -> None:
    emit({"ev": "error", "t": round(time.time(), 6), "code": "bad_command", "message": message})


async def run_headless(node: Node, emit: EventWriter) -> int:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, node.stop)
    reader = threading.Thread(
        target=_read_stdin, args=(loop, queue, emit, sys.stdin.fileno()), daemon=True
    )
    reader.start()
    try:
        return await node.run(queue)
    finally:
        emit.flush()  # the last events (an error before a non-zero exit) go out now
