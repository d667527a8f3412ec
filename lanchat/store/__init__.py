"""Per-user profile: a locked directory holding small state (TinyDB) and message history (SQLite).

Layout of a profile directory (mode 0700):

- ``lock``             flock held while a lanchat runs with this profile; holds the PID.
- ``state.json``       TinyDB: settings, friendships, handle->key pins. Rewritten atomically
                       (a running node writes behind: at most one rewrite per tick).
- ``history.sqlite3``  SQLite (WAL): messages, sequence counters, per-peer outbox.

Neither store ever deletes or overwrites a file it cannot read; it raises ``ProfileCorrupt``
with the path and what to do instead.

The code: `lanchat.store.profile` (the directory and its lock), `lanchat.store.state` (TinyDB),
`lanchat.store.history` (SQLite), `lanchat.store.errors`. Import from ``lanchat.store``.
"""

from __future__ import annotations

from lanchat.store.errors import ProfileCorrupt, ProfileError, ProfileLocked
from lanchat.store.history import (
    HISTORY_APPLICATION_ID,
    HISTORY_SCHEMA_VERSION,
    HistoryRecord,
    HistoryStore,
    OutboxItem,
)
from lanchat.store.profile import (
    HISTORY_NAME,
    LOCK_NAME,
    STATE_NAME,
    Profile,
    default_profile_dir,
)
from lanchat.store.state import (
    META_TABLE,
    PINS_MAX,
    STATE_FORMAT,
    STATE_VERSION,
    AtomicJSONStorage,
    Pin,
    StateStore,
)

__all__ = [
    "HISTORY_APPLICATION_ID",
    "HISTORY_NAME",
    "HISTORY_SCHEMA_VERSION",
    "LOCK_NAME",
    "META_TABLE",
    "PINS_MAX",
    "STATE_FORMAT",
    "STATE_NAME",
    "STATE_VERSION",
    "AtomicJSONStorage",
    "HistoryRecord",
    "HistoryStore",
    "OutboxItem",
    "Pin",
    "Profile",
    "ProfileCorrupt",
    "ProfileError",
    "ProfileLocked",
    "StateStore",
    "default_profile_dir",
]
