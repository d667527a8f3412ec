"""Friendship state per identity key: the pure machine (core.friendship) over the profile's
state file, cached in memory because every incoming message reads it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lanchat.core import friendship as fs

if TYPE_CHECKING:
    from lanchat.store import StateStore

__all__ = ["Friendships"]


class Friendships:
    def __init__(self, state: StateStore) -> None:
        self._state = state
        # The profile lock makes this process the file's only writer: the cache cannot go
        # stale. Read on first use (most start-ups never look).
        self._cache: dict[bytes, fs.Friendship] | None = None

    def of(self, key: bytes) -> fs.Friendship:
        if self._cache is None:
            self._cache = {
                bytes.fromhex(k): fs.Friendship(state)
                for k, (_handle, state) in self._state.friendships().items()
            }
        return self._cache.get(key, fs.Friendship.NONE)

    def blocked(self, key: bytes) -> bool:
        return fs.is_silenced(self.of(key))

    def can_message(self, key: bytes) -> bool:
        return fs.can_message(self.of(key))

    def set(self, key: bytes, handle: str, state: fs.Friendship) -> None:
        self._state.set_friendship(key.hex(), handle, state.value)
        if self._cache is not None:
            self._cache[key] = state
