"""Small state (TinyDB): settings, friendships and handle->key pins, written atomically.

A running node writes behind (`StateStore.defer_writes`): at most one rewrite per tick.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tinydb import Query, TinyDB
from tinydb.storages import Storage
from tinydb.table import Document

from lanchat import oscompat
from lanchat.store.errors import ProfileCorrupt, _plain_disk_error

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from tinydb.table import Table

__all__ = [
    "META_TABLE",
    "PINS_MAX",
    "STATE_FORMAT",
    "STATE_VERSION",
    "AtomicJSONStorage",
    "Pin",
    "StateStore",
]

# Pins of keys we are not friends with, at most (the least recently seen go first): a
# stream of throwaway identities must not grow the state file without end. A room of
# 200 laptops needs 200.
PINS_MAX = 300

STATE_FORMAT = "lanchat-state"
STATE_VERSION = 1
META_TABLE = "_meta"


@dataclass(frozen=True, slots=True)
class Pin:
    """A handle bound to an identity key on first sight (trust on first use)."""

    handle: str  # as the peer spells it
    key: str  # hex identity key
    first_seen: float
    last_seen: float


def _is_tinydb_layout(data: object) -> bool:
    """True if data looks like ``{table: {doc_id: {..}}}`` with integer doc ids."""
    if not isinstance(data, dict):
        return False
    for table in data.values():
        if not isinstance(table, dict):
            return False
        for doc_id, doc in table.items():
            if not (isinstance(doc_id, str) and doc_id.isdigit() and isinstance(doc, dict)):
                return False
    return True


class AtomicJSONStorage(Storage):
    """TinyDB storage that replaces the whole file atomically on every write.

    TinyDB's own JSONStorage rewrites the file in place, so a crash mid-write leaves
    truncated JSON. Here a write goes to a temp file that is fsynced and renamed over the
    original: a reader sees either the old or the new file, never a mix.
    """

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self._tmp_prefix = f".{path.name}."
        # Write-behind (see defer_writes): the data as TinyDB last wrote it, and whether
        # the file is behind it.
        self._deferred = False
        self._data: dict[str, dict[str, Any]] | None = None
        self._dirty = False
        # What the disk refused to take: kept (and read back) until :meth:`retry` saves it.
        self.unsaved: dict[str, dict[str, Any]] | None = None
        self.on_fault: Callable[[str], None] = lambda _message: None

    def defer_writes(self) -> None:
        """From now on a write only updates memory; :meth:`flush` writes the file.

        TinyDB rewrites the whole file on every change: a burst of changes (a flood of
        chat requests, a roster of newcomers) would cost O(n) each, O(n^2) in all. The
        caller flushes once per tick and on close; a killed process loses what changed
        since the last flush (at most one tick).
        """
        if not self._deferred:
            self._data = self.read()
            self._deferred = True

    def flush(self) -> None:
        if self._dirty and self._data is not None:
            self._write_file(self._data)
        self._dirty = False

    def close(self) -> None:
        self.flush()

    def remove_stale_temp_files(self) -> None:
        """Delete temp files left by a writer that was killed; call only under the lock."""
        for tmp in self.path.parent.glob(f"{self._tmp_prefix}*.tmp"):
            tmp.unlink(missing_ok=True)

    def read(self) -> dict[str, dict[str, Any]] | None:
        if self._deferred:
            return self._data  # we are the only writer (the profile lock)
        if self.unsaved is not None:
            return self.unsaved
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        if not raw.strip():
            return None
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ProfileCorrupt(self.path, f"not valid JSON ({exc})") from exc
        if not _is_tinydb_layout(data):
            raise ProfileCorrupt(
                self.path, "valid JSON but not a lanchat state file ({table: {id: document}})"
            )
        result: dict[str, dict[str, Any]] = data
        return result

    def write(self, data: dict[str, dict[str, Any]]) -> None:
        if self._deferred:
            # Not serialised here (that is O(n) again): the setters store plain JSON types.
            self._data, self._dirty = data, True
            return
        self._write_file(data)

    def _write_file(self, data: dict[str, dict[str, Any]]) -> None:
        """Replace the file; if the disk refuses (full, read-only), keep ``data`` in memory."""
        # Serialise first: an unserialisable value must fail before any file is touched.
        payload = json.dumps(data, ensure_ascii=False, allow_nan=False).encode()
        try:
            self._replace(payload)
        except OSError as exc:
            first = self.unsaved is None
            self.unsaved = data
            if first:
                self.on_fault(_plain_disk_error(exc, self.path.parent))
            return
        self.unsaved = None

    def retry(self) -> bool:
        """Save what the disk refused before; True once nothing waits."""
        if self.unsaved is not None:
            self._write_file(self.unsaved)
        return self.unsaved is None

    def _replace(self, payload: bytes) -> None:
        fd, tmp_name = tempfile.mkstemp(
            dir=self.path.parent, prefix=self._tmp_prefix, suffix=".tmp"
        )  # mkstemp creates the file 0600, which os.replace carries over
        try:
            with os.fdopen(fd, "wb") as tmp:
                tmp.write(payload)
                tmp.flush()
                os.fsync(tmp.fileno())
            # Durable: without it a power cut can bring back the old file.
            oscompat.replace_durably(tmp_name, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
            raise


class StateStore:
    """Small, rarely written state in TinyDB; each setter is exactly one atomic file write,
    or, after :meth:`defer_writes`, a change in memory that the next :meth:`flush` writes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._storage = AtomicJSONStorage(path)
        self._storage.remove_stale_temp_files()
        self._check_or_init_meta()
        self._db = TinyDB(storage=_StorageFactory(self._storage))
        self._settings: Table = self._db.table("settings")
        self._friends: Table = self._db.table("friendships")
        self._pins: Table = self._db.table("pins")
        self._pins_cache: dict[str, Pin] | None = None  # pins_by_handle, until a pin changes

    def defer_writes(self) -> None:
        """Write behind: see `AtomicJSONStorage.defer_writes` (a running node's choice)."""
        self._storage.defer_writes()

    def flush(self) -> None:
        """Write what changed since the last flush, in one atomic write (if anything did)."""
        self._storage.flush()

    def _check_or_init_meta(self) -> None:
        data = self._storage.read()  # raises ProfileCorrupt on unreadable files
        meta_docs = (data or {}).get(META_TABLE, {})
        meta = meta_docs.get("1") if isinstance(meta_docs, dict) else None
        if meta is None:
            if data and any(data.values()):
                # Valid TinyDB JSON with documents but no marker: someone else's file.
                raise ProfileCorrupt(
                    self.path, "a TinyDB file that lanchat did not write (no _meta table)"
                )
            self._storage.write({META_TABLE: {"1": _meta_doc()}})
            return
        if meta.get("format") != STATE_FORMAT:
            raise ProfileCorrupt(self.path, f"not a lanchat state file (format {meta!r})")
        version = meta.get("version")
        if not isinstance(version, int) or version > STATE_VERSION:
            raise ProfileCorrupt(
                self.path, f"written by a newer lanchat (state version {version!r})"
            )

    def close(self) -> None:
        self._storage.retry()
        self._db.close()

    def retry(self) -> bool:
        """Save state the disk refused before; True once nothing waits."""
        return self._storage.retry()

    def set_fault_handler(self, on_fault: Callable[[str], None]) -> None:
        self._storage.on_fault = on_fault

    # settings

    def get_setting(self, key: str, default: Any = None) -> Any:
        doc = self._settings.get(Query().key == key)
        if doc is None:
            return default
        return _one(doc)["value"]

    def set_setting(self, key: str, value: Any) -> None:
        _put(self._settings, Query().key == key, {"key": key, "value": value})

    # friendships

    def friendship(self, key: str) -> str:
        doc = self._friends.get(Query().key == key)
        if doc is None:
            return "none"
        return str(_one(doc)["state"])

    def set_friendship(self, key: str, handle: str, state: str) -> None:
        cond = Query().key == key
        if state == "none":
            doc = self._friends.get(cond)
            if doc is not None:
                self._friends.remove(doc_ids=[_one(doc).doc_id])
            return
        _put(self._friends, cond, {"key": key, "handle": handle, "state": state})

    def friendships(self) -> dict[str, tuple[str, str]]:
        return {d["key"]: (d["handle"], d["state"]) for d in self._friends.all()}

    # pins

    def pin_for_handle(self, handle: str) -> Pin | None:
        """The pin for this handle (case-insensitive); if several keys used it, the first one."""
        return self.pins_by_handle().get(handle.casefold())

    def pins_by_handle(self) -> dict[str, Pin]:
        """Every pinned handle (casefolded) with its pin, as :meth:`pin_for_handle` finds it."""
        if self._pins_cache is None:
            found: dict[str, Pin] = {}
            # Trust on first use: a later key claiming the same handle must not displace it.
            for pin in sorted(self.pins(), key=lambda p: p.first_seen):
                found.setdefault(pin.handle.casefold(), pin)
            # Read for every message shown (is its author the handle's pinned key?).
            self._pins_cache = found
        return dict(self._pins_cache)

    def pinned_key(self, handle: str) -> str | None:
        """The hex key pinned for ``handle`` (case-insensitive), if any; cheap (cached)."""
        if self._pins_cache is None:
            self.pins_by_handle()
        assert self._pins_cache is not None
        pin = self._pins_cache.get(handle.casefold())
        return None if pin is None else pin.key

    def pin_for_key(self, key: str) -> Pin | None:
        doc = self._pins.get(Query().key == key)
        return None if doc is None else _pin(_one(doc))

    def set_pin(self, handle: str, key: str, now: float) -> None:
        self._pins_cache = None
        doc = self._pins.get(Query().key == key)
        if doc is None:
            self._pins.insert({"handle": handle, "key": key, "first_seen": now, "last_seen": now})
        else:
            self._pins.update({"handle": handle, "last_seen": now}, doc_ids=[_one(doc).doc_id])

    def set_pins(self, pins: list[tuple[str, str]], now: float) -> None:
        """:meth:`set_pin` for many ``(handle, key)`` at once: a whole roster of newcomers
        costs one file write (and fsync), not one each."""
        self._pins_cache = None
        known = {d["key"] for d in self._pins.all()}
        fresh = {k: h for h, k in pins if k not in known}  # a key twice: its last handle
        if fresh:
            self._pins.insert_multiple(
                {"handle": h, "key": k, "first_seen": now, "last_seen": now}
                for k, h in fresh.items()
            )
        seen = [({"handle": h, "last_seen": now}, Query().key == k) for h, k in pins if k in known]
        if seen:
            self._pins.update_multiple(seen)
        if fresh:
            self._prune_pins()

    def _prune_pins(self) -> None:
        """Keep PINS_MAX pins of strangers at most; a friend's pin always stays."""
        friends = {d["key"] for d in self._friends.all()}
        strangers = [d for d in self._pins.all() if d["key"] not in friends]
        extra = len(strangers) - PINS_MAX
        if extra > 0:
            strangers.sort(key=lambda d: d["last_seen"])
            self._pins.remove(doc_ids=[_one(d).doc_id for d in strangers[:extra]])

    def remove_pin(self, key: str) -> None:
        """Forget the pin of this key (e.g. the user accepted a peer's new key)."""
        self._pins_cache = None
        self._pins.remove(Query().key == key)

    def pins(self) -> list[Pin]:
        return [_pin(d) for d in self._pins.all()]


class _StorageFactory:
    """TinyDB insists on constructing its storage; hand it the one we already validated."""

    def __init__(self, storage: AtomicJSONStorage) -> None:
        self._storage = storage

    def __call__(self) -> AtomicJSONStorage:
        return self._storage


def _meta_doc() -> dict[str, Any]:
    return {"format": STATE_FORMAT, "version": STATE_VERSION}


def _one(doc: Document | list[Document]) -> Document:
    # Table.get() is typed as possibly returning a list (only when called with doc_ids).
    assert isinstance(doc, Document)
    return doc


def _put(table: Table, cond: Any, fields: dict[str, Any]) -> None:
    """Insert or update one document with a single write (TinyDB's upsert may write twice)."""
    doc = table.get(cond)
    if doc is None:
        table.insert(fields)
    else:
        table.update(fields, doc_ids=[_one(doc).doc_id])


def _pin(doc: dict[str, Any]) -> Pin:
    return Pin(
        handle=doc["handle"],
        key=doc["key"],
        first_seen=doc["first_seen"],
        last_seen=doc["last_seen"],
    )
