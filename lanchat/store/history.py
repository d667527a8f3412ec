"""Message history, sequence counters, the outbox and public envelopes (SQLite, WAL)."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from lanchat import oscompat
from lanchat.store.errors import ProfileCorrupt, _plain_disk_error

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

__all__ = [
    "HISTORY_APPLICATION_ID",
    "HISTORY_SCHEMA_VERSION",
    "HistoryRecord",
    "HistoryStore",
    "OutboxItem",
]

# Marks the SQLite file as ours ("LNCH"), so a foreign database is refused, not migrated.
HISTORY_APPLICATION_ID = 0x4C4E4348
HISTORY_SCHEMA_VERSION = 2

# Version 2 added the order of the room (place, seq) and the signed public envelopes, so
# that any node can hand any message it holds to a node that lacks it (anti-entropy), for
# as long as it keeps its history.
_ENVELOPES_SCHEMA = """
CREATE TABLE envelopes (
    author TEXT NOT NULL,           -- hex identity key
    seq INTEGER NOT NULL,           -- the author's number of its first text
    count INTEGER NOT NULL,
    place INTEGER,                  -- NULL: ours, not yet placed by a broker
    frames BLOB NOT NULL,           -- header (4) + signature (64) + body
    PRIMARY KEY (author, seq)
) WITHOUT ROWID;
CREATE INDEX messages_by_place ON messages (conversation, place);
"""

_HISTORY_SCHEMA = (
    """
CREATE TABLE messages (
    n INTEGER PRIMARY KEY,          -- arrival order
    id TEXT NOT NULL UNIQUE,        -- the UNIQUE index is the dedupe
    conversation TEXT NOT NULL,
    sender TEXT NOT NULL,
    sender_key TEXT NOT NULL,
    text TEXT NOT NULL,
    sent_t REAL NOT NULL,
    received_t REAL NOT NULL,
    outgoing INTEGER NOT NULL,
    place INTEGER,                  -- public: the room's order (lanchat.core.antientropy)
    seq INTEGER NOT NULL DEFAULT 0  -- public: the author's number
);
CREATE INDEX messages_by_conversation ON messages (conversation);
CREATE TABLE counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE outbox (
    peer_key TEXT NOT NULL,
    cseq INTEGER NOT NULL,
    payload BLOB NOT NULL,
    created_t REAL NOT NULL,
    PRIMARY KEY (peer_key, cseq)
) WITHOUT ROWID;
"""
    + _ENVELOPES_SCHEMA
)

# From version 1: the messages stored before keep their arrival order, ahead of any
# message placed by a broker (negative places, in arrival order).
_MIGRATE_1_TO_2 = (
    """
ALTER TABLE messages ADD COLUMN place INTEGER;
ALTER TABLE messages ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;
UPDATE messages SET place = n - (SELECT max(n) + 1 FROM messages) WHERE conversation = 'public';
"""
    + _ENVELOPES_SCHEMA
)

_SET_SEQ = (
    "INSERT INTO counters (name, value) VALUES (?, ?)"
    " ON CONFLICT (name) DO UPDATE SET value = excluded.value"
)


class HistoryRecord(NamedTuple):
    """One stored chat message.

    A named tuple: it is built for every message a node receives, and binds to the INSERT
    as it is (a frozen dataclass took 0.65 µs more to build, then a tuple of its fields).
    """

    id: str  # globally unique message id
    conversation: str  # "public" for the room, else "peer:<hex identity key>"
    sender: str  # handle of the author as shown when stored
    sender_key: str  # hex identity key of the author
    text: str
    sent_t: float  # author's clock (Unix s)
    received_t: float  # our clock
    outgoing: bool
    place: int | None = None  # public: the room's order (lanchat.core.antientropy)
    seq: int = 0  # public: the author's number


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """A private item not yet acknowledged by its recipient."""

    peer_key: str  # hex identity key of the recipient
    cseq: int  # per-recipient sequence, 1,2,3...
    payload: bytes  # opaque (already encoded) item
    created_t: float


class HistoryStore:
    """Message history, sequence counters, the outbox and public envelopes in SQLite.

    WAL mode: a commit appends pages to the log instead of rewriting the file, so the cost
    of one message does not grow with the history, and a crash never leaves a torn file.
    synchronous=NORMAL: in WAL mode it never corrupts the database; a power loss can at
    worst drop the last few commits (a killed process loses nothing committed), and it
    saves an fsync per message.

    Inside a :meth:`batch`, counters are written once, just before the batch commits: in the
    same transaction as the messages that used them, so they are exactly as durable. A batch
    opens its transaction at its first write: most receive batches of a sender (its own
    messages coming back, the broker's acknowledgements) write nothing, and an empty
    BEGIN/COMMIT pair cost more than the one INSERT of a message.

    A write the disk refuses (full, read-only, I/O error) is not lost and not an exception:
    it waits in memory, in order, with everything written after it, and :meth:`retry` writes
    it all once the disk takes it again. Meanwhile reads include what waits, and
    ``on_fault`` / ``on_recovered`` tell the node (an ``error`` event, not a traceback).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        with contextlib.suppress(FileExistsError):
            # Create it 0600 ourselves; SQLite would use 0644, and gives -wal/-shm our mode.
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | oscompat.O_BINARY, 0o600))
        # Autocommit mode: we issue BEGIN/COMMIT ourselves so each call is one transaction.
        self._db = sqlite3.connect(path, isolation_level=None)
        self._seqs_due: dict[str, int] = {}  # set_seq inside the open batch
        self._batching = False
        # Writes of the open transaction, to keep them if its COMMIT is refused.
        self._journal: list[_Write] = []
        # Writes the disk refused, in order; while any waits, new ones queue behind.
        self._pending: list[_Write] = []
        self._pending_records: dict[str, HistoryRecord] = {}
        self._pending_envelopes: dict[tuple[str, int], tuple[int, int | None, bytes]] = {}
        self._pending_places: dict[tuple[str, int], int] = {}  # (author, seq) -> place
        self._counter_cache: dict[str, int] = {}
        self.fault: str | None = None  # what the disk said, while writes wait in memory
        self.on_fault: Callable[[str], None] = lambda _message: None
        self.on_recovered: Callable[[int], None] = lambda _count: None
        try:
            self._open_checked()
        except BaseException:
            self._db.close()
            raise

    def _open_checked(self) -> None:
        # Only read until we know the file is ours: even setting WAL would modify it.
        try:
            app_id = self._db.execute("PRAGMA application_id").fetchone()[0]
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            has_tables = self._db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise self._corrupt(f"not a readable SQLite database ({exc})") from exc
        fresh = app_id == 0 and version == 0 and has_tables == 0
        if not fresh:
            if app_id != HISTORY_APPLICATION_ID:
                raise self._corrupt("an SQLite database that lanchat did not write")
            if version > HISTORY_SCHEMA_VERSION:
                raise self._corrupt(f"written by a newer lanchat (schema version {version})")
            if version not in (1, HISTORY_SCHEMA_VERSION):
                raise self._corrupt(f"unknown lanchat schema version {version}")
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        if fresh or version == 1:
            # One transaction: a crash leaves either no schema or all of it, marker included.
            with self._transaction():
                script = _HISTORY_SCHEMA if fresh else _MIGRATE_1_TO_2
                for statement in script.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                self._db.execute(f"PRAGMA application_id={HISTORY_APPLICATION_ID}")
                self._db.execute(f"PRAGMA user_version={HISTORY_SCHEMA_VERSION}")

    def _corrupt(self, reason: str) -> ProfileCorrupt:
        return ProfileCorrupt(self.path, reason, " and any -wal/-shm files beside it")

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.retry()  # a last chance for what waits in memory
        self._db.close()

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Group many writes into one transaction: one commit (and WAL frame) per burst.

        Re-entrant: inside an open batch it just runs the body.
        """
        if self._batching or self._db.in_transaction:
            yield
            return
        self._batching = True
        try:
            yield
            if self._seqs_due:
                self._write(_SET_SEQ, list(self._seqs_due.items()), many=True)
                self._counter_cache.update(self._seqs_due)
        except BaseException:
            self._seqs_due.clear()
            self._journal.clear()
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise
        finally:
            self._batching = False
        self._seqs_due.clear()
        if self._db.in_transaction:
            try:
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._refused(exc)
        self._journal.clear()

    def _begin(self) -> None:
        """Before a write: inside a batch, open its transaction if this is its first write."""
        if self._batching and not self._db.in_transaction:
            self._db.execute("BEGIN IMMEDIATE")

    def _write(self, sql: str, params: Any, *, many: bool = False) -> sqlite3.Cursor | None:
        """Run one write; None if the disk refused it (it then waits in memory)."""
        write = _Write(sql, params, many)
        if self._pending:
            self._pending.append(write)  # behind what waits: the order is kept
            return None
        try:
            self._begin()
            cur = self._db.executemany(sql, params) if many else self._db.execute(sql, params)
        except sqlite3.OperationalError as exc:
            if not _is_disk_refusal(exc):
                raise
            self._refused(exc, write)
            return None
        if self._db.in_transaction:
            self._journal.append(write)
        return cur

    def _refused(self, exc: sqlite3.Error, write: _Write | None = None) -> None:
        """The disk refused a write: keep it, and the open transaction's, in memory."""
        if self._db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")
        self._pending[:0] = self._journal
        self._journal = []
        if write is not None:
            self._pending.append(write)
        if self.fault is None:
            self.fault = _plain_disk_error(exc, self.path.parent)
            self.on_fault(self.fault)

    def retry(self) -> bool:
        """Write what waits in memory, if the disk takes it now; True once nothing waits."""
        if not self._pending:
            return True
        if self._batching or self._db.in_transaction:
            return False
        waiting = self._pending
        try:
            self._db.execute("BEGIN IMMEDIATE")
            for write in waiting:
                if write.many:
                    self._db.executemany(write.sql, write.params)
                else:
                    self._db.execute(write.sql, write.params)
            self._db.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            if self._db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
            if not _is_disk_refusal(exc):
                raise
            return False
        written = len(self._pending_records)
        self._pending = []
        self._pending_records.clear()
        self._pending_envelopes.clear()
        self._pending_places.clear()
        self.fault = None
        self.on_recovered(written)
        return True

    def waiting(self) -> int:
        """Messages kept in memory because the disk refused them."""
        return len(self._pending_records)

    # messages

    def append(self, rec: HistoryRecord) -> bool:
        """Store rec; False (and no change) if a message with this id is already stored."""
        if rec.id in self._pending_records:
            return False
        # The record's fields are the columns, in order (a bool binds as 0 or 1).
        cur = self._write(
            "INSERT OR IGNORE INTO messages (id, conversation, sender, sender_key, text,"
            " sent_t, received_t, outgoing, place, seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rec,
        )  # outside a batch, the INSERT is its own committed transaction
        if cur is not None:
            return cur.rowcount == 1
        if self.has(rec.id):
            self._pending.pop()  # a duplicate: nothing to write later either
            return False
        self._pending_records[rec.id] = rec
        return True

    def has(self, msg_id: str) -> bool:
        if msg_id in self._pending_records:
            return True
        row = self._db.execute("SELECT 1 FROM messages WHERE id = ?", (msg_id,)).fetchone()
        return row is not None

    def recent(self, conversation: str | None, limit: int) -> list[HistoryRecord]:
        """The last ``limit`` messages, oldest first; None = all conversations.

        The public room in the room's order (lanchat.core.antientropy.order_key: our own
        messages not yet placed by a broker last); everything else in arrival order.
        """
        if limit <= 0:
            return []
        columns = (
            "id, conversation, sender, sender_key, text, sent_t, received_t, outgoing, place, seq"
        )
        if conversation is None:
            rows = self._db.execute(
                f"SELECT {columns} FROM messages ORDER BY n DESC LIMIT ?", (limit,)
            ).fetchall()
        elif conversation == "public":
            rows = self._db.execute(
                f"SELECT {columns} FROM messages WHERE conversation = ?"
                " ORDER BY place IS NOT NULL, place DESC, substr(sender_key, 1, 16) DESC,"
                " seq DESC, n DESC LIMIT ?",
                (conversation, limit),
            ).fetchall()
        else:
            rows = self._db.execute(
                f"SELECT {columns} FROM messages WHERE conversation = ? ORDER BY n DESC LIMIT ?",
                (conversation, limit),
            ).fetchall()
        records = [_record(r) for r in reversed(rows)]
        if self._pending_places:
            places = self._pending_places
            records = [
                r._replace(place=places.get((r.sender_key, r.seq), r.place)) for r in records
            ]
        extra = [
            r
            for r in self._pending_records.values()
            if conversation is None or r.conversation == conversation
        ]
        if extra:
            records = [r for r in records if r.id not in self._pending_records] + extra
            if conversation == "public":
                records.sort(key=_public_order)
            records = records[-limit:]
        return records

    def count(self) -> int:
        """Number of stored messages (and kept in memory for the disk)."""
        stored = int(self._db.execute("SELECT count(*) FROM messages").fetchone()[0])
        return stored + len(self._pending_records)

    # public envelopes (anti-entropy)

    def envelope_add(
        self, author: str, seq: int, count: int, place: int | None, frames: bytes
    ) -> None:
        """A signed public envelope, to hand to nodes that lack it; kept once."""
        cur = self._write(
            "INSERT OR IGNORE INTO envelopes (author, seq, count, place, frames)"
            " VALUES (?, ?, ?, ?, ?)",
            (author, seq, count, place, frames),
        )
        if cur is None:
            self._pending_envelopes.setdefault((author, seq), (count, place, frames))

    def set_place(self, author: str, seq: int, count: int, place: int) -> None:
        """An envelope's place in the room's order (first given, or a smaller one)."""
        self._write(
            "UPDATE envelopes SET place = ? WHERE author = ? AND seq = ?", (place, author, seq)
        )
        ids = [f"{author[:16]}:{n}" for n in range(seq, seq + count)]
        self._write(
            "UPDATE messages SET place = ? WHERE id = ?", [(place, i) for i in ids], many=True
        )
        if self._pending:  # the updates wait too: reads must see them meanwhile
            for n in range(seq, seq + count):
                self._pending_places[(author, n)] = place
        env = self._pending_envelopes.get((author, seq))
        if env is not None:
            self._pending_envelopes[(author, seq)] = (env[0], place, env[2])
        for msg_id in ids:
            rec = self._pending_records.get(msg_id)
            if rec is not None:
                self._pending_records[msg_id] = rec._replace(place=place)

    def envelopes(self, author: str, first: int, last: int) -> list[tuple[int, int, int, bytes]]:
        """``(seq, count, place, frames)`` of the placed envelopes holding any of first..last."""
        rows = self._db.execute(
            "SELECT seq, count, place, frames FROM envelopes WHERE author = ? AND seq <= ?"
            " AND seq + count - 1 >= ? ORDER BY seq",
            (author, last, first),
        ).fetchall()
        found = []
        for a, b, c, d in rows:
            place = self._pending_places.get((author, a), c)
            if place is not None:
                found.append((int(a), int(b), int(place), bytes(d)))
        for (who, seq), (count, place, frames) in self._pending_envelopes.items():
            if who == author and place is not None and seq <= last and seq + count - 1 >= first:
                found.append((seq, count, place, frames))
        return sorted(set(found))

    def holdings(self) -> list[tuple[str, int, int, int | None]]:
        """``(author, seq, count, place)`` of every envelope held."""
        rows = self._db.execute("SELECT author, seq, count, place FROM envelopes").fetchall()
        return [(str(a), int(b), int(c), None if d is None else int(d)) for a, b, c, d in rows]

    def unplaced(self, author: str) -> list[tuple[int, int, bytes]]:
        """``(seq, count, frames)`` of our envelopes no broker has placed yet, oldest first."""
        rows = self._db.execute(
            "SELECT seq, count, frames FROM envelopes WHERE author = ? AND place IS NULL"
            " ORDER BY seq",
            (author,),
        ).fetchall()
        return [(int(a), int(b), bytes(c)) for a, b, c in rows]

    # counters

    def max_seq(self, name: str) -> int:
        due = self._seqs_due.get(name)
        if due is not None:
            return due
        cached = self._counter_cache.get(name)
        if cached is not None:
            return cached
        row = self._db.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
        return 0 if row is None else int(row[0])

    def set_seq(self, name: str, value: int) -> None:
        """Store a counter; inside a batch, with the batch (a sender sets one per message)."""
        if self._batching:
            self._seqs_due[name] = value
        else:
            self._counter_cache[name] = value
            self._write(_SET_SEQ, (name, value))

    # outbox

    def outbox_add(self, item: OutboxItem) -> None:
        """Queue item; ValueError if (peer_key, cseq) is already queued."""
        try:
            self._write(
                "INSERT INTO outbox (peer_key, cseq, payload, created_t) VALUES (?, ?, ?, ?)",
                (item.peer_key, item.cseq, item.payload, item.created_t),
            )
        except sqlite3.IntegrityError as exc:
            raise ValueError(
                f"outbox already holds cseq {item.cseq} for peer {item.peer_key}"
            ) from exc

    def outbox_for(self, peer_key: str) -> list[OutboxItem]:
        rows = self._db.execute(
            "SELECT cseq, payload, created_t FROM outbox WHERE peer_key = ? ORDER BY cseq",
            (peer_key,),
        ).fetchall()
        return [OutboxItem(peer_key, cseq, bytes(payload), t) for cseq, payload, t in rows]

    def outbox_remove_upto(self, peer_key: str, cseq: int) -> int:
        cur = self._write("DELETE FROM outbox WHERE peer_key = ? AND cseq <= ?", (peer_key, cseq))
        return 0 if cur is None else cur.rowcount

    def outbox_peers(self) -> list[str]:
        rows = self._db.execute("SELECT DISTINCT peer_key FROM outbox ORDER BY peer_key")
        return [r[0] for r in rows]


class _Write(NamedTuple):
    sql: str
    params: Any
    many: bool


def _record(r: Any) -> HistoryRecord:
    return HistoryRecord(
        id=r[0],
        conversation=r[1],
        sender=r[2],
        sender_key=r[3],
        text=r[4],
        sent_t=r[5],
        received_t=r[6],
        outgoing=bool(r[7]),
        place=r[8],
        seq=r[9],
    )


def _public_order(r: HistoryRecord) -> tuple[int, int, str, int]:
    if r.place is None:
        return (1, 0, "", 0)  # ours, not placed yet: last, in the order we wrote them
    return (0, r.place, r.sender_key[:16], r.seq)


def _is_disk_refusal(exc: sqlite3.OperationalError) -> bool:
    """Full, read-only, I/O error: the disk's doing, not a bug in a statement."""
    text = str(exc).lower()
    return any(w in text for w in ("full", "readonly", "read-only", "i/o", "disk"))
