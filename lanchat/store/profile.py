"""A profile directory: created 0700, locked while a lanchat runs with it, holding both stores."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

from lanchat import oscompat
from lanchat.store.errors import ProfileError, ProfileLocked
from lanchat.store.history import HistoryStore
from lanchat.store.state import StateStore

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ["HISTORY_NAME", "LOCK_NAME", "STATE_NAME", "Profile", "default_profile_dir"]

LOCK_NAME = "lock"
STATE_NAME = "state.json"
HISTORY_NAME = "history.sqlite3"


def default_profile_dir() -> Path:
    """The profile used when no --profile is given."""
    import platformdirs  # only without --profile: scripted starts pass one and skip it

    return platformdirs.user_data_path("lanchat") / "default"


def _acquire_lock(directory: Path) -> int:
    """Lock the profile and record our PID; returns the fd that holds the lock."""
    path = directory / LOCK_NAME
    # Python opens descriptors non-inheritable on every OS (PEP 446): no O_CLOEXEC needed.
    fd = os.open(path, os.O_RDWR | os.O_CREAT | oscompat.O_BINARY, 0o600)
    try:
        oscompat.lock_file(fd)  # held by the open file: a second open in-process conflicts
    except BlockingIOError:
        holder = oscompat.pread(fd, 32, 0).decode(errors="replace").strip()
        os.close(fd)
        raise ProfileLocked(directory, int(holder) if holder.isdigit() else None) from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    oscompat.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _release_lock(fd: int) -> None:
    # The file stays: unlinking a lock file lets two processes lock different inodes.
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
    with contextlib.suppress(OSError):
        oscompat.unlock_file(fd)  # closing does it too, but on Windows only eventually
    os.close(fd)


def _unwritable(directory: Path, exc: BaseException) -> ProfileError:
    return ProfileError(
        f"profile {directory} cannot be used: {exc}. lanchat needs a profile it can write "
        "(is the disk full or read-only?); free some space or pass --profile DIR"
    )


class Profile:
    """An open, locked profile directory with its two stores."""

    def __init__(
        self, directory: Path, lock_fd: int, state: StateStore, history: HistoryStore
    ) -> None:
        self.directory = directory
        self.state = state
        self.history = history
        self._lock_fd: int | None = lock_fd

    @classmethod
    def open(cls, directory: Path) -> Profile:
        """Create (0700) and lock the directory, then open both stores."""
        directory = Path(directory)
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            lock_fd = _acquire_lock(directory)
        except OSError as exc:
            raise _unwritable(directory, exc) from exc
        state: StateStore | None = None
        try:
            state = StateStore(directory / STATE_NAME)
            history = HistoryStore(directory / HISTORY_NAME)
        except (OSError, sqlite3.OperationalError) as exc:
            if state is not None:
                state.close()
            _release_lock(lock_fd)
            raise _unwritable(directory, exc) from exc
        except BaseException:
            if state is not None:
                state.close()
            _release_lock(lock_fd)
            raise
        return cls(directory, lock_fd, state, history)

    def retry(self) -> bool:
        """Save what the disk refused before (history, state); True once nothing waits."""
        history = self.history.retry()
        return self.state.retry() and history

    def close(self) -> None:
        """Close both stores and release the lock; safe to call twice."""
        if self._lock_fd is None:
            return
        try:
            self.history.close()
            self.state.close()
        finally:
            _release_lock(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> Profile:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
