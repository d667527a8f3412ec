"""Friendship state per identity key: the pure machine (core.friendship) over the profile's
state file, cached in memory because every incoming message reads it."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Final

from lanchat.core import friendship as fs

if TYPE_CHECKING:
    from collections.abc import Callable

    from lanchat.store import StateStore

__all__ = ["Friendships"]

# When each key was blocked, kept after an unblock (in the settings), so that what it said
# meanwhile and reaches us only later (the broker's catch-up) is not shown either.
BLOCKED_SINCE: Final = "blocked_since"  # {key hex: wall time}
BLOCK_WINDOWS: Final = "block_windows"  # {key hex: [[from, to], ...]}
WINDOWS_PER_KEY: Final = 5
WINDOW_KEYS_MAX: Final = 200
# A window opens this much before the block: the sender's clock may be behind ours (and
# what it said just before we blocked it need not show after the unblock either).
BLOCK_MARGIN_S: Final = 2.0
SENT_T_ROUNDING_S: Final = 0.001


class Friendships:
    def __init__(self, state: StateStore, wall: Callable[[], float] = time.time) -> None:
        self._state = state
        self._wall = wall
        self._windows: dict[str, list[list[float]]] | None = None
        # The profile lock makes this process the file's only writer: the cache cannot go
        # stale. Read on first use (most start-ups never look).
        self._cache: dict[bytes, fs.Friendship] | None = None
        self._handles: dict[bytes, str] = {}

    def of(self, key: bytes) -> fs.Friendship:
        return self._load().get(key, fs.Friendship.NONE)

    def _load(self) -> dict[bytes, fs.Friendship]:
        if self._cache is None:
            stored = self._state.friendships().items()
            self._cache = {bytes.fromhex(k): fs.Friendship(state) for k, (_h, state) in stored}
            self._handles = {bytes.fromhex(k): handle for k, (handle, _s) in stored}
        return self._cache

    def pending_in(self) -> list[bytes]:
        """Keys whose chat request waits for our answer, oldest request first."""
        # In insertion order (the store's too): a request that is repeated keeps its place.
        return [k for k, state in self._load().items() if state is fs.Friendship.PENDING_IN]

    def blocked(self, key: bytes) -> bool:
        return fs.is_silenced(self.of(key))

    def can_message(self, key: bytes) -> bool:
        return fs.can_message(self.of(key))

    def set(self, key: bytes, handle: str, state: fs.Friendship) -> None:
        cache = self._load()
        if cache.get(key, fs.Friendship.NONE) is state and self._handles.get(key) == handle:
            return  # nothing changed (a stranger repeating a request): no write
        was_blocked = fs.is_silenced(cache.get(key, fs.Friendship.NONE))
        self._state.set_friendship(key.hex(), handle, state.value)
        if fs.is_silenced(state) != was_blocked:
            self._block_changed(key.hex(), now_blocked=not was_blocked)
        if state is fs.Friendship.NONE:
            cache.pop(key, None)
            self._handles.pop(key, None)
        else:
            cache[key] = state
            self._handles[key] = handle

    def was_blocked(self, key: bytes, t: float) -> bool:
        """Whether ``key`` was blocked at ``t`` (a sender's clock: a message sent while we
        blocked it and delivered after the unblock is not shown)."""
        if self._windows is None:
            stored: Any = self._state.get_setting(BLOCK_WINDOWS, {})
            self._windows = stored if isinstance(stored, dict) else {}
        windows = self._windows.get(key.hex(), ())
        # A sender rounds its clock to the millisecond: what it said just after the unblock
        # may carry a time a little before it.
        return any(start - BLOCK_MARGIN_S <= t < end - SENT_T_ROUNDING_S for start, end in windows)

    def _block_changed(self, key_hex: str, *, now_blocked: bool) -> None:
        now = self._wall()
        since: dict[str, float] = dict(self._state.get_setting(BLOCKED_SINCE, {}))
        if now_blocked:
            since[key_hex] = now
            self._state.set_setting(BLOCKED_SINCE, dict(list(since.items())[-WINDOW_KEYS_MAX:]))
            return
        start = since.pop(key_hex, None)
        self._state.set_setting(BLOCKED_SINCE, since)
        if start is None:
            return
        windows: dict[str, list[list[float]]] = dict(self._state.get_setting(BLOCK_WINDOWS, {}))
        mine = [*windows.pop(key_hex, []), [start, now]][-WINDOWS_PER_KEY:]
        windows[key_hex] = mine  # last: the most recently unblocked keys are kept
        windows = dict(list(windows.items())[-WINDOW_KEYS_MAX:])
        self._state.set_setting(BLOCK_WINDOWS, windows)
        self._windows = windows
