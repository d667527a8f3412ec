"""lanchat.oscompat on the OS the tests run on (CI runs them on Linux and under Windows CPython)."""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import socket
import subprocess
import sys
import threading
from typing import TYPE_CHECKING

import pytest

from lanchat import oscompat

if TYPE_CHECKING:
    from pathlib import Path

WAIT_S = 5.0


def _open(path: Path) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT | oscompat.O_BINARY, 0o600)


def test_a_lock_is_exclusive_per_open_file_and_leaves_the_pid_readable(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    holder, other = _open(path), _open(path)
    try:
        oscompat.lock_file(holder)
        oscompat.pwrite(holder, b"4242\n", 0)
        with pytest.raises(BlockingIOError):
            oscompat.lock_file(other)  # the same process, another open file: refused
        assert oscompat.pread(other, 32, 0) == b"4242\n"  # who holds it stays readable
        oscompat.unlock_file(holder)
        oscompat.lock_file(other)  # free again
    finally:
        os.close(holder)
        os.close(other)


def test_positional_io_is_binary_and_short_only_at_the_end(tmp_path: Path) -> None:
    fd = _open(tmp_path / "data")
    try:
        payload = b"a\nb\r\n\x1ac" * 1000  # LF, CRLF and Ctrl-Z: what text mode would mangle
        assert oscompat.pwrite(fd, payload, 0) == len(payload)
        assert oscompat.pread(fd, 5, 2) == payload[2:7]
        assert oscompat.pread(fd, 100, len(payload) - 3) == payload[-3:]
        assert oscompat.pread(fd, 10, len(payload) + 5) == b""
        assert os.fstat(fd).st_size == len(payload)
    finally:
        os.close(fd)


def test_positional_reads_from_many_threads_do_not_mix(tmp_path: Path) -> None:
    # The file service reads one file from several worker threads at once.
    blocks = [bytes([n]) * 4096 for n in range(64)]
    (tmp_path / "blocks").write_bytes(b"".join(blocks))
    fd = os.open(tmp_path / "blocks", os.O_RDONLY | oscompat.O_BINARY)
    wrong: list[int] = []

    def reader(offset: int) -> None:
        for _ in range(50):
            for n in range(offset, 64, 4):
                if oscompat.pread(fd, 4096, n * 4096) != blocks[n]:
                    wrong.append(n)

    threads = [threading.Thread(target=reader, args=(k,)) for k in range(4)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
    finally:
        os.close(fd)
    assert wrong == []


def test_replace_durably_replaces_an_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    target.write_bytes(b"old")
    temp = tmp_path / "state.json.tmp"
    temp.write_bytes(b"new")
    oscompat.replace_durably(temp, target)
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]
    oscompat.fsync_directory(tmp_path)  # a no-op on Windows, an fsync elsewhere: no error


def test_a_stop_signal_from_another_thread_reaches_the_loop_at_once() -> None:
    # Ctrl-C (SIGINT) is a stop signal on every OS; raised from a thread, the loop must
    # wake up for it (Windows: through the wake-up socket) while it waits for nothing else.
    assert "SIGINT" in oscompat.stop_signal_names()
    before = signal.getsignal(signal.SIGINT)

    async def main() -> float:
        loop = asyncio.get_running_loop()
        stopped = asyncio.Event()
        undo = oscompat.install_stop_handlers(loop, stopped.set, ("SIGINT",))
        try:
            started = loop.time()
            threading.Timer(0.1, signal.raise_signal, (signal.SIGINT,)).start()
            await asyncio.wait_for(stopped.wait(), WAIT_S)
            return loop.time() - started
        finally:
            undo()

    assert oscompat.run(main()) < WAIT_S / 2
    assert signal.getsignal(signal.SIGINT) == before  # undone


def test_the_loop_can_watch_sockets() -> None:
    # What the transport's reader and zmq.asyncio need (Windows: the selector loop).
    async def main() -> bytes:
        loop = asyncio.get_running_loop()
        left, right = socket.socketpair()
        got: asyncio.Future[bytes] = loop.create_future()
        loop.add_reader(right.fileno(), lambda: got.set_result(right.recv(16)))
        try:
            left.send(b"ping")
            return await asyncio.wait_for(got, WAIT_S)
        finally:
            loop.remove_reader(right.fileno())
            left.close()
            right.close()

    assert oscompat.run(main()) == b"ping"


def test_closed_pipes_are_recognised_as_each_os_reports_them() -> None:
    assert oscompat.is_closed_pipe(BrokenPipeError())
    assert oscompat.is_closed_pipe(OSError(errno.EINVAL, "Invalid argument")) == oscompat.WINDOWS
    assert not oscompat.is_closed_pipe(OSError(errno.ENOSPC, "No space left on device"))
    assert not oscompat.is_closed_pipe(ValueError("I/O operation on closed file"))


def test_a_write_to_a_pipe_without_reader_is_a_closed_pipe() -> None:
    read_fd, write_fd = os.pipe()
    os.close(read_fd)
    try:
        try:
            os.write(write_fd, b"x")
        except OSError as exc:
            assert oscompat.is_closed_pipe(exc), exc  # noqa: PT017 (the point of the test)
        else:
            pytest.fail("a write without reader succeeded")
    finally:
        os.close(write_fd)


def test_a_detached_helper_runs() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "print('ok')"],
        capture_output=True,
        timeout=30,
        check=True,
        **oscompat.detached(),
    )
    assert done.stdout.strip() == b"ok"
