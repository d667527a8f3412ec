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
        self._state.set_friendship(key.hex(), handle, state.value)
        if state is fs.Friendship.NONE:
            cache.pop(key, None)
            self._handles.pop(key, None)
        else:
            cache[key] = state
            self._handles[key] = handle
