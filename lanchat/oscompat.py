"""What differs between Linux, macOS and Windows, in one place.

Everything else in lanchat calls these functions instead of asking ``sys.platform``:
file locks, binary and positional file I/O, durable renames, the event loop, stop signals
and closed pipes. Windows facts here were checked against Windows CPython (3.12 under Wine
in CI, and the documented Win32 behaviour); docs/platforms.md says what each OS lacks.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
import socket
import subprocess
import sys
import threading
from typing import TYPE_CHECKING, Any, Final, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine
    from pathlib import Path

__all__ = [
    "O_BINARY",
    "POSIX_PERMISSIONS",
    "WINDOWS",
    "detached",
    "fsync_directory",
    "install_stop_handlers",
    "is_closed_pipe",
    "lock_file",
    "pread",
    "pwrite",
    "replace_durably",
    "run",
    "set_mode",
    "stop_signal_names",
    "unlock_file",
]

WINDOWS: Final = sys.platform == "win32"
# Owner/group/other permission bits: Windows has only a read-only flag (st_mode reads
# 0o666 or 0o777 there), and a profile is private by living in the user's own folder.
POSIX_PERMISSIONS: Final = not WINDOWS

# Windows opens with os.open in text mode unless told otherwise: writes turn "\n" into
# "\r\n" and reads stop at the first 0x1A byte. Every binary os.open needs this flag.
O_BINARY: Final[int] = getattr(os, "O_BINARY", 0)

_T = TypeVar("_T")

# Windows byte-range locks are mandatory: a lock over the PID would stop the next process
# from reading who holds the profile. So the lock covers one byte far past anything we write.
_LOCK_OFFSET: Final = 1 << 20


# ---- locks ------------------------------------------------------------------------------


def lock_file(fd: int) -> None:
    """Take an exclusive lock on the open file ``fd`` without waiting.

    Raises BlockingIOError if another open file (in this process or another) holds it. The
    lock belongs to this open file: closing ``fd`` (or :func:`unlock_file`) releases it.
    """
    if sys.platform == "win32":
        import msvcrt

        position = os.lseek(fd, 0, os.SEEK_CUR)
        os.lseek(fd, _LOCK_OFFSET, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError as exc:  # EACCES on Windows, errno 0 under Wine: held either way
            raise BlockingIOError(errno.EAGAIN, "file is locked") from exc
        finally:
            os.lseek(fd, position, os.SEEK_SET)
    else:
        import fcntl

        # flock, not lockf: flock locks belong to the open file, so a second open in the
        # same process conflicts too (POSIX record locks would silently succeed there).
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def unlock_file(fd: int) -> None:
    """Release :func:`lock_file`'s lock (closing the file does too)."""
    if sys.platform == "win32":
        import msvcrt

        # Windows frees a closed handle's locks "when resources allow": free it now.
        position = os.lseek(fd, 0, os.SEEK_CUR)
        os.lseek(fd, _LOCK_OFFSET, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        finally:
            os.lseek(fd, position, os.SEEK_SET)
    else:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_UN)


def set_mode(fd: int, path: Path, mode: int) -> None:
    """Set the permission bits of the open file ``fd`` at ``path``.

    Windows has no fchmod and no owner/group/other bits (only read-only, from the owner
    write bit): there the path is used, and a profile is private by its place in the
    user's own folder.
    """
    if sys.platform == "win32":
        os.chmod(path, mode)
    else:
        os.fchmod(fd, mode)


# ---- positional I/O ---------------------------------------------------------------------

# Windows has no pread: seek-then-read must not interleave with another thread's on the
# same descriptor (the file service reads one file from several worker threads).
_seek_lock = threading.Lock()


def pread(fd: int, length: int, offset: int) -> bytes:
    """``length`` bytes at ``offset`` (fewer at the end of the file), like os.pread."""
    if sys.platform != "win32":
        return os.pread(fd, length, offset)
    with _seek_lock:
        os.lseek(fd, offset, os.SEEK_SET)
        parts: list[bytes] = []
        while length > 0:  # os.pread returns short reads only at EOF; so does this
            data = os.read(fd, length)
            if not data:
                break
            parts.append(data)
            length -= len(data)
        return b"".join(parts)


def pwrite(fd: int, data: bytes, offset: int) -> int:
    """Write ``data`` at ``offset``, like os.pwrite; returns the bytes written."""
    if sys.platform != "win32":
        return os.pwrite(fd, data, offset)
    with _seek_lock:
        os.lseek(fd, offset, os.SEEK_SET)
        return os.write(fd, data)


# ---- durable renames --------------------------------------------------------------------


def fsync_directory(directory: Path) -> None:
    """Make renames and new names in ``directory`` durable.

    POSIX: fsync the directory itself, or a power cut can bring back the old name. Windows
    cannot open a directory to fsync it; NTFS journals directory entries, and
    :func:`replace_durably` asks for a write-through rename instead. A no-op there.
    """
    if sys.platform == "win32":
        return
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_durably(source: Path | str, target: Path) -> None:
    """``os.replace(source, target)``, durable when this returns."""
    if sys.platform == "win32":
        import ctypes

        kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
        # MOVEFILE_WRITE_THROUGH: returns only once the rename is flushed to disk, what
        # the directory fsync does on POSIX.
        flags = 0x1 | 0x8  # MOVEFILE_REPLACE_EXISTING | MOVEFILE_WRITE_THROUGH
        if not kernel32.MoveFileExW(str(source), str(target), flags):
            raise ctypes.WinError(ctypes.get_last_error())
        return
    os.replace(source, target)
    fsync_directory(target.parent)


# ---- event loop and signals -------------------------------------------------------------


def run(main: Coroutine[Any, Any, _T]) -> _T:
    """asyncio.run with the loop lanchat needs.

    On Windows that is the selector loop: the default proactor loop has no add_reader, which
    the transport's reader and zmq.asyncio both need.
    """
    if sys.platform == "win32":
        with asyncio.Runner(loop_factory=asyncio.SelectorEventLoop) as runner:
            return runner.run(main)
    return asyncio.run(main)


def stop_signal_names(*, hangup: bool = False) -> tuple[str, ...]:
    """Names of the signals that ask this process to stop, as this OS delivers them.

    Windows delivers Ctrl-C as SIGINT and Ctrl-Break as SIGBREAK, and has no SIGHUP (a
    closed terminal) or SIGTERM from other processes (they end it with TerminateProcess).
    """
    if sys.platform == "win32":
        return ("SIGINT", "SIGBREAK")
    return ("SIGTERM", "SIGINT", *(("SIGHUP",) if hangup else ()))


def install_stop_handlers(
    loop: asyncio.AbstractEventLoop, stop: Callable[[], None], names: tuple[str, ...]
) -> Callable[[], None]:
    """Call ``stop`` in ``loop`` when one of the named signals arrives; returns an undo.

    POSIX loops do this themselves (add_signal_handler). Windows loops do not: there a
    plain signal handler hands ``stop`` to the loop, and a wake-up socket makes the loop's
    select() return so that the handler runs at once, not at the next network event.
    """
    wanted = [getattr(signal, name) for name in names if hasattr(signal, name)]
    if sys.platform != "win32":
        for sig in wanted:
            loop.add_signal_handler(sig, stop)

        def undo_posix() -> None:
            for sig in wanted:
                with contextlib.suppress(Exception):
                    loop.remove_signal_handler(sig)

        return undo_posix

    wake_r, wake_w = socket.socketpair()
    for end in (wake_r, wake_w):
        end.setblocking(False)

    def drain() -> None:
        with contextlib.suppress(OSError):
            while wake_r.recv(4096):
                pass

    loop.add_reader(wake_r.fileno(), drain)
    old_wakeup = signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)

    def on_signal(signum: int, frame: object) -> None:
        loop.call_soon_threadsafe(stop)

    old = {sig: signal.signal(sig, on_signal) for sig in wanted}

    def undo_windows() -> None:
        for sig, handler in old.items():
            with contextlib.suppress(Exception):
                signal.signal(sig, handler)
        with contextlib.suppress(Exception):
            signal.set_wakeup_fd(old_wakeup)
        with contextlib.suppress(Exception):
            loop.remove_reader(wake_r.fileno())
        wake_r.close()
        wake_w.close()

    return undo_windows


# ---- processes --------------------------------------------------------------------------


def detached() -> dict[str, Any]:
    """subprocess keyword arguments for a helper that Ctrl-C in our terminal must not reach
    (and that opens no console window of its own on Windows)."""
    if sys.platform == "win32":
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW}
    return {"start_new_session": True}


# ---- pipes ------------------------------------------------------------------------------


def is_closed_pipe(exc: BaseException) -> bool:
    """Whether ``exc`` (from a write or flush) means the reader closed the pipe.

    POSIX raises BrokenPipeError; Windows raises OSError(EINVAL) for the same thing.
    """
    if isinstance(exc, BrokenPipeError):
        return True
    return WINDOWS and isinstance(exc, OSError) and exc.errno == errno.EINVAL
