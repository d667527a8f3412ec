"""Tests for the profile store, on real files in tmp_path."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lanchat import oscompat
from lanchat.store import (
    PINS_MAX,
    HistoryRecord,
    HistoryStore,
    OutboxItem,
    Pin,
    Profile,
    ProfileCorrupt,
    ProfileError,
    ProfileLocked,
    default_profile_dir,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

REPO_ROOT = Path(__file__).resolve().parents[1]
KEY_A = "aa" * 32
KEY_B = "bb" * 32
KEY_C = "cc" * 32
KEY_D = "dd" * 32


@pytest.fixture
def profile_dir(tmp_path: Path) -> Path:
    return tmp_path / "profile"


@pytest.fixture
def profile(profile_dir: Path) -> Iterator[Profile]:
    p = Profile.open(profile_dir)
    try:
        yield p
    finally:
        p.close()


def record(
    msg_id: str, conversation: str = "public", text: str = "hi", t: float = 1.0
) -> HistoryRecord:
    return HistoryRecord(
        id=msg_id,
        conversation=conversation,
        sender="ada",
        sender_key=KEY_A,
        text=text,
        sent_t=t,
        received_t=t + 0.5,
        outgoing=False,
    )


def python_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO_ROOT)}


# profile directory


def assert_unlocked(directory: Path) -> None:
    fd = os.open(directory / "lock", os.O_RDWR | oscompat.O_BINARY)
    try:
        oscompat.lock_file(fd)  # would raise BlockingIOError if still held
    finally:
        os.close(fd)


def test_open_creates_private_directory_and_files(profile: Profile, profile_dir: Path) -> None:
    # Windows has no such bits (st_mode says read-write for everyone); see oscompat.
    private_dir, private_file = (0o700, 0o600) if oscompat.POSIX_PERMISSIONS else (0o777, 0o666)
    assert stat.S_IMODE(profile_dir.stat().st_mode) == private_dir
    for name in ("lock", "state.json", "history.sqlite3"):
        assert stat.S_IMODE((profile_dir / name).stat().st_mode) == private_file, name
    assert (profile_dir / "lock").read_text().strip() == str(os.getpid())


def test_open_is_cheap(profile_dir: Path) -> None:
    with Profile.open(profile_dir) as p:
        for i in range(200):
            p.history.append(record(f"m{i}"))
            p.state.set_setting(f"s{i % 10}", i)
    timings = []
    for _ in range(5):
        start = time.perf_counter()
        Profile.open(profile_dir).close()
        timings.append(time.perf_counter() - start)
    assert min(timings) < 0.050


def test_default_profile_dir() -> None:
    path = default_profile_dir()
    assert path.name == "default"
    assert path.parent.name == "lanchat"


def test_close_is_idempotent_and_context_manager_closes(profile_dir: Path) -> None:
    with Profile.open(profile_dir) as p:
        p.state.set_setting("x", 1)
    p.close()
    with Profile.open(profile_dir) as again:
        assert again.state.get_setting("x") == 1


# lock


def test_second_open_in_same_process_is_refused(profile: Profile, profile_dir: Path) -> None:
    with pytest.raises(ProfileLocked) as info:
        Profile.open(profile_dir)
    message = str(info.value)
    assert str(profile_dir) in message
    assert f"PID {os.getpid()}" in message
    assert "another lanchat is already running with this profile" in message
    assert "--profile DIR" in message
    assert info.value.pid == os.getpid()


def test_second_process_gets_clear_error(profile: Profile, profile_dir: Path) -> None:
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from lanchat.store import Profile, ProfileError\n"
        "try:\n"
        "    Profile.open(Path(sys.argv[1]))\n"
        "except ProfileError as exc:\n"
        "    sys.exit(f'lanchat: {exc}')\n"
    )
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", code, str(profile_dir)],
        capture_output=True,
        text=True,
        env=python_env(),
        timeout=30,
        check=False,
    )
    assert time.monotonic() - start < 10  # failed at once, did not wait for the lock
    assert result.returncode == 1
    assert str(profile_dir) in result.stderr
    assert f"PID {os.getpid()}" in result.stderr
    assert "another lanchat is already running" in result.stderr


def test_lock_released_after_close(profile_dir: Path) -> None:
    Profile.open(profile_dir).close()
    with Profile.open(profile_dir) as p:
        assert p.directory == profile_dir


def test_lock_released_when_open_fails(profile_dir: Path) -> None:
    profile_dir.mkdir()
    (profile_dir / "state.json").write_bytes(b"\x00garbage")
    with pytest.raises(ProfileCorrupt):
        Profile.open(profile_dir)
    assert_unlocked(profile_dir)


# state: settings


def test_settings_round_trip_and_persist(profile_dir: Path) -> None:
    with Profile.open(profile_dir) as p:
        assert p.state.get_setting("missing") is None
        assert p.state.get_setting("missing", 42) == 42
        p.state.set_setting("handle", "ada")
        p.state.set_setting("ports", [5670, 5671])
        p.state.set_setting("nested", {"a": {"b": None, "c": 1.5}})
        p.state.set_setting("handle", "ada2")
        assert p.state.get_setting("handle") == "ada2"
    with Profile.open(profile_dir) as p:
        assert p.state.get_setting("handle") == "ada2"
        assert p.state.get_setting("ports") == [5670, 5671]
        assert p.state.get_setting("nested") == {"a": {"b": None, "c": 1.5}}


def test_unserialisable_setting_fails_without_touching_file(
    profile: Profile, profile_dir: Path
) -> None:
    profile.state.set_setting("ok", 1)
    before = (profile_dir / "state.json").read_bytes()
    with pytest.raises(TypeError):
        profile.state.set_setting("bad", object())
    with pytest.raises(ValueError, match="JSON"):
        profile.state.set_setting("nan", float("nan"))
    assert (profile_dir / "state.json").read_bytes() == before
    assert list(profile_dir.glob(".state.json.*")) == []


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=10,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(key=st.text(max_size=20), value=json_values)
def test_setting_round_trips_any_json_value(profile: Profile, key: str, value: Any) -> None:
    profile.state.set_setting(key, value)
    assert profile.state.get_setting(key) == value


# state: friendships


def test_friendships(profile_dir: Path) -> None:
    with Profile.open(profile_dir) as p:
        assert p.state.friendship(KEY_A) == "none"
        assert p.state.friendships() == {}
        p.state.set_friendship(KEY_A, "ada", "requested")
        p.state.set_friendship(KEY_B, "bob", "friends")
        p.state.set_friendship(KEY_A, "Ada", "friends")
        assert p.state.friendship(KEY_A) == "friends"
    with Profile.open(profile_dir) as p:
        assert p.state.friendships() == {KEY_A: ("Ada", "friends"), KEY_B: ("bob", "friends")}
        p.state.set_friendship(KEY_A, "Ada", "none")
        p.state.set_friendship(KEY_C, "cy", "none")  # deleting an unknown key is a no-op
        assert p.state.friendship(KEY_A) == "none"
        assert p.state.friendships() == {KEY_B: ("bob", "friends")}


# state: pins


def test_pins_insert_update_and_case_insensitive_lookup(profile_dir: Path) -> None:
    with Profile.open(profile_dir) as p:
        assert p.state.pin_for_handle("ada") is None
        assert p.state.pin_for_key(KEY_A) is None
        p.state.set_pin("Ada", KEY_A, now=10.0)
        p.state.set_pin("bob", KEY_B, now=11.0)
        p.state.set_pin("ADA", KEY_A, now=20.0)  # same key: new spelling, later last_seen
    with Profile.open(profile_dir) as p:
        expected = Pin(handle="ADA", key=KEY_A, first_seen=10.0, last_seen=20.0)
        assert p.state.pin_for_key(KEY_A) == expected
        assert p.state.pin_for_handle("ada") == expected
        assert p.state.pin_for_handle("aDa") == expected
        assert p.state.pin_for_handle("BOB") == Pin("bob", KEY_B, 11.0, 11.0)
        assert sorted(p.state.pins(), key=lambda pin: pin.key) == [
            expected,
            Pin("bob", KEY_B, 11.0, 11.0),
        ]


def test_first_pin_for_a_handle_wins_until_removed(profile: Profile) -> None:
    profile.state.set_pin("ada", KEY_A, now=1.0)
    profile.state.set_pin("Ada", KEY_C, now=5.0)  # another key claims the handle later
    pin = profile.state.pin_for_handle("ada")
    assert pin is not None
    assert pin.key == KEY_A
    profile.state.remove_pin(KEY_A)
    pin = profile.state.pin_for_handle("ada")
    assert pin is not None
    assert pin.key == KEY_C


def test_set_pins_is_set_pin_for_many_in_one_write(
    profile: Profile, monkeypatch: pytest.MonkeyPatch
) -> None:
    profile.state.set_pin("ada", KEY_A, now=1.0)
    writes: list[int] = []
    original = oscompat.replace_durably
    monkeypatch.setattr(
        oscompat, "replace_durably", lambda a, b: (writes.append(1), original(a, b))
    )
    profile.state.set_pins([("bob", KEY_B), ("cy", KEY_C)], now=5.0)
    assert len(writes) == 1  # a roster of newcomers costs one atomic write
    profile.state.set_pins([("Ada", KEY_A), ("dee", KEY_D)], now=7.0)
    assert sorted(profile.state.pins(), key=lambda pin: pin.handle.casefold()) == [
        Pin("Ada", KEY_A, 1.0, 7.0),  # known key: new spelling, later last_seen
        Pin("bob", KEY_B, 5.0, 5.0),
        Pin("cy", KEY_C, 5.0, 5.0),
        Pin("dee", KEY_D, 7.0, 7.0),
    ]
    assert profile.state.pins_by_handle() == {p.handle.casefold(): p for p in profile.state.pins()}


def test_state_file_has_meta_and_is_plain_json(profile: Profile, profile_dir: Path) -> None:
    profile.state.set_setting("k", "v")
    data = json.loads((profile_dir / "state.json").read_text())
    assert data["_meta"] == {"1": {"format": "lanchat-state", "version": 1}}


def test_stale_temp_files_are_removed_on_open(profile_dir: Path) -> None:
    Profile.open(profile_dir).close()
    stale = profile_dir / ".state.json.abc123.tmp"
    stale.write_text('{"half": ')
    with Profile.open(profile_dir):
        assert not stale.exists()


def test_empty_state_file_starts_fresh(profile_dir: Path) -> None:
    profile_dir.mkdir()
    (profile_dir / "state.json").write_bytes(b"")
    with Profile.open(profile_dir) as p:
        assert p.state.get_setting("x") is None
        p.state.set_setting("x", 1)


# state: corrupt or foreign files


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\xff\xfe garbage", "not valid JSON"),
        (b'{"_meta": {"1": {"format": "lanchat-state", "vers', "not valid JSON"),
        (b"[1, 2, 3]", "not a lanchat state file"),
        (b'{"settings": {"x": {"key": "a"}}}', "not a lanchat state file"),
        (b'{"_default": {"1": {"name": "John"}}}', "lanchat did not write"),
        (b'{"_meta": {"1": {"format": "other-app", "version": 1}}}', "not a lanchat state file"),
        (b'{"_meta": {"1": {"format": "lanchat-state", "version": 99}}}', "newer lanchat"),
    ],
    ids=["garbage", "truncated", "list", "bad-doc-id", "foreign-tinydb", "other-format", "newer"],
)
def test_corrupt_state_is_reported_and_left_alone(
    profile_dir: Path, content: bytes, reason: str
) -> None:
    profile_dir.mkdir()
    path = profile_dir / "state.json"
    path.write_bytes(content)
    with pytest.raises(ProfileCorrupt) as info:
        Profile.open(profile_dir)
    message = str(info.value)
    assert str(path) in message
    assert reason in message
    assert f"mv {path} {path}.bad" in message
    assert "nothing was overwritten" in message
    assert path.read_bytes() == content
    assert not (profile_dir / "history.sqlite3").exists()  # failed before touching history


# history


def test_append_has_and_dedupe(profile: Profile) -> None:
    assert not profile.history.has("m1")
    assert profile.history.append(record("m1", text="first"))
    assert profile.history.has("m1")
    assert not profile.history.append(record("m1", text="impostor"))
    assert profile.history.recent(None, 10) == [record("m1", text="first")]
    assert profile.history.count() == 1


def test_recent_order_limit_and_conversation(profile_dir: Path) -> None:
    peer = f"peer:{KEY_B}"
    with Profile.open(profile_dir) as p:
        for i in range(10):
            conv = "public" if i % 2 == 0 else peer
            # Sent times run backwards: order must follow arrival, not peer clocks.
            p.history.append(record(f"m{i}", conv, text=f"t{i}", t=100.0 - i))
    with Profile.open(profile_dir) as p:
        assert [r.id for r in p.history.recent(None, 3)] == ["m7", "m8", "m9"]
        assert [r.id for r in p.history.recent(None, 100)] == [f"m{i}" for i in range(10)]
        assert [r.id for r in p.history.recent("public", 2)] == ["m6", "m8"]
        assert [r.id for r in p.history.recent(peer, 100)] == ["m1", "m3", "m5", "m7", "m9"]
        assert p.history.recent("peer:unknown", 5) == []
        assert p.history.recent(None, 0) == []
        assert p.history.recent(peer, 1)[0] == record("m9", peer, text="t9", t=91.0)


def test_record_fields_round_trip(profile_dir: Path) -> None:
    rec = HistoryRecord(
        id="k:1",
        conversation=f"peer:{KEY_C}",
        sender="Zoë <script>",
        sender_key=KEY_C,
        text="multi\nline 🙂 ' \" ;--",
        sent_t=1_700_000_000.123456,
        received_t=1_700_000_001.5,
        outgoing=True,
    )
    with Profile.open(profile_dir) as p:
        assert p.history.append(rec)
    with Profile.open(profile_dir) as p:
        assert p.history.recent(rec.conversation, 1) == [rec]


def test_counters(profile_dir: Path) -> None:
    with Profile.open(profile_dir) as p:
        assert p.history.max_seq("author") == 0
        p.history.set_seq("author", 5)
        p.history.set_seq("author", 7)
        p.history.set_seq(f"peer:{KEY_A}", 3)
    with Profile.open(profile_dir) as p:
        assert p.history.max_seq("author") == 7
        assert p.history.max_seq(f"peer:{KEY_A}") == 3


def _reader(profile_dir: Path) -> sqlite3.Connection:
    """A second connection: it sees only what the store has committed."""
    uri = (profile_dir / "history.sqlite3").resolve().as_uri()
    return sqlite3.connect(f"{uri}?mode=ro", uri=True)


def _committed(reader: sqlite3.Connection) -> tuple[int, dict[str, int]]:
    count = reader.execute("SELECT count(*) FROM messages").fetchone()[0]
    return count, dict(reader.execute("SELECT name, value FROM counters").fetchall())


def test_a_batch_commits_messages_and_counters_together(
    profile: Profile, profile_dir: Path
) -> None:
    history = profile.history
    reader = _reader(profile_dir)
    try:
        history.set_seq("public", 1)  # outside a batch: committed at once
        assert _committed(reader) == (0, {"public": 1})
        with history.batch():
            for seq in range(2, 5):
                history.set_seq("public", seq)
                assert history.max_seq("public") == seq  # read back before the commit
                assert history.append(record(f"me:{seq}"))
            with history.batch():  # re-entrant: part of the same transaction
                history.set_seq("in:peer", 7)
            assert history.max_seq("in:peer") == 7
            assert _committed(reader) == (0, {"public": 1})
        assert _committed(reader) == (3, {"public": 4, "in:peer": 7})
        assert history.max_seq("public") == 4
    finally:
        reader.close()


def test_a_failed_batch_leaves_neither_messages_nor_counters(
    profile: Profile, profile_dir: Path
) -> None:
    history = profile.history
    history.set_seq("public", 1)

    def burst() -> None:
        with history.batch():
            history.set_seq("public", 2)
            history.append(record("me:2"))
            raise RuntimeError("crash mid-burst")

    with pytest.raises(RuntimeError, match="mid-burst"):
        burst()
    assert history.max_seq("public") == 1
    assert not history.has("me:2")
    with history.batch():
        history.set_seq("other", 3)
    assert history.max_seq("public") == 1
    profile.close()
    with Profile.open(profile_dir) as again:
        assert again.history.max_seq("public") == 1
        assert again.history.max_seq("other") == 3


def test_a_batch_that_only_reads_takes_no_write_lock(profile: Profile, profile_dir: Path) -> None:
    """A receive batch that stores nothing (our own message echoed, an acknowledgement)
    must not pay for a transaction: it never takes the database's write lock."""
    history = profile.history
    history.append(record("me:1"))
    other = sqlite3.connect(profile_dir / "history.sqlite3", timeout=0)
    other.execute("BEGIN IMMEDIATE")  # another writer holds the lock
    try:
        with history.batch():
            assert history.has("me:1")
            assert history.max_seq("public") == 0
    finally:
        other.rollback()
        other.close()
    with history.batch():
        assert history.append(record("me:2"))
    assert history.has("me:2")


def test_outbox(profile_dir: Path) -> None:
    with Profile.open(profile_dir) as p:
        assert p.history.outbox_peers() == []
        for cseq in (3, 1, 2):
            p.history.outbox_add(OutboxItem(KEY_B, cseq, f"b{cseq}".encode(), float(cseq)))
        p.history.outbox_add(OutboxItem(KEY_A, 1, b"\x00\xff", 9.0))
        with pytest.raises(ValueError, match="cseq 1"):
            p.history.outbox_add(OutboxItem(KEY_A, 1, b"again", 10.0))
    with Profile.open(profile_dir) as p:
        assert p.history.outbox_peers() == [KEY_A, KEY_B]
        assert p.history.outbox_for(KEY_B) == [
            OutboxItem(KEY_B, 1, b"b1", 1.0),
            OutboxItem(KEY_B, 2, b"b2", 2.0),
            OutboxItem(KEY_B, 3, b"b3", 3.0),
        ]
        assert p.history.outbox_for(KEY_A) == [OutboxItem(KEY_A, 1, b"\x00\xff", 9.0)]
        assert p.history.outbox_for(KEY_C) == []
        assert p.history.outbox_remove_upto(KEY_B, 2) == 2
        assert p.history.outbox_remove_upto(KEY_B, 2) == 0
        assert [i.cseq for i in p.history.outbox_for(KEY_B)] == [3]
        assert p.history.outbox_remove_upto(KEY_A, 100) == 1
        assert p.history.outbox_peers() == [KEY_B]


def test_history_uses_wal(profile: Profile, profile_dir: Path) -> None:
    with sqlite3.connect(profile_dir / "history.sqlite3") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


# history: corrupt or foreign files


def _foreign_sqlite(path: Path) -> None:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE notes (body TEXT)")
    db.execute("INSERT INTO notes VALUES ('someone else''s data')")
    db.commit()
    db.close()


def _lanchat_sqlite_with_version(path: Path, version: int) -> None:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE messages (id TEXT)")
    db.execute(f"PRAGMA application_id={0x4C4E4348}")
    db.execute(f"PRAGMA user_version={version}")
    db.commit()
    db.close()


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda p: p.write_bytes(os.urandom(8192)), "not a readable SQLite database"),
        (lambda p: p.write_bytes(b"SQLite format 3\x00" + b"\x00" * 84), "not a readable SQLite"),
        (_foreign_sqlite, "lanchat did not write"),
        (lambda p: _lanchat_sqlite_with_version(p, 99), "newer lanchat"),
    ],
    ids=["random-bytes", "bad-header", "foreign-db", "newer"],
)
def test_corrupt_history_is_reported_and_left_alone(
    profile_dir: Path, make: Any, reason: str
) -> None:
    profile_dir.mkdir()
    path = profile_dir / "history.sqlite3"
    make(path)
    content = path.read_bytes()
    with pytest.raises(ProfileCorrupt) as info:
        Profile.open(profile_dir)
    message = str(info.value)
    assert str(path) in message
    assert reason in message
    assert "nothing was overwritten" in message
    assert path.read_bytes() == content
    assert not (profile_dir / "history.sqlite3-wal").exists()
    assert_unlocked(profile_dir)  # the failed open released the lock


def test_deferred_writes_cost_one_atomic_write_per_flush(
    profile_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes: list[int] = []
    original = oscompat.replace_durably
    monkeypatch.setattr(
        oscompat, "replace_durably", lambda a, b: (writes.append(1), original(a, b))
    )
    profile = Profile.open(profile_dir)
    state = profile.state
    state.defer_writes()
    before = (profile_dir / "state.json").read_bytes()
    writes.clear()
    for i in range(1_000):  # a flood of changes, as strangers' requests would make
        state.set_friendship(f"{i:064x}", f"s{i}", "pending_in")
    assert writes == []
    assert (profile_dir / "state.json").read_bytes() == before  # nothing written yet...
    assert state.friendship(f"{999:064x}") == "pending_in"  # ...but read back from memory
    state.flush()
    state.flush()  # nothing changed since: no write
    assert len(writes) == 1
    state.set_setting("k", "v")
    profile.close()  # the last change is written on close
    assert len(writes) == 2
    with Profile.open(profile_dir) as again:
        assert again.state.get_setting("k") == "v"
        assert len(again.state.friendships()) == 1_000


def test_pins_of_strangers_are_bounded_and_a_friends_pin_stays(profile: Profile) -> None:
    state = profile.state
    state.set_pin("friend", KEY_A, now=0.0)
    state.set_friendship(KEY_A, "friend", "friend")
    for start in range(0, PINS_MAX + 100, 50):
        batch = [(f"s{i}", f"{i + 1:064x}") for i in range(start, start + 50)]
        state.set_pins(batch, now=float(start + 1))
    pins = {p.key for p in state.pins()}
    assert len(pins) == PINS_MAX + 1
    assert KEY_A in pins  # the oldest of all, but a friend's
    assert f"{1:064x}" not in pins  # the least recently seen strangers went first
    assert state.pinned_key("S349") == f"{350:064x}"


# the disk refusing writes (full, read-only): kept in memory, written later, never lost


def fill_disk(history: HistoryStore) -> None:
    """The database may not grow: SQLite answers "database or disk is full", as on a full
    filesystem (tests/test_faults_lan.py fills a real one)."""
    pages = history._db.execute("PRAGMA page_count").fetchone()[0]
    history._db.execute(f"PRAGMA max_page_count={pages}")


def free_disk(history: HistoryStore) -> None:
    history._db.execute("PRAGMA max_page_count=1073741823")


def test_a_full_disk_keeps_messages_in_memory_says_so_once_and_writes_them_later(
    profile: Profile, profile_dir: Path
) -> None:
    history = profile.history
    faults: list[str] = []
    saved: list[int] = []
    history.on_fault, history.on_recovered = faults.append, saved.append
    history.append(record("m:0"))
    fill_disk(history)
    big = "x" * 3000  # more than a page each: the first one already needs a new page
    for i in range(1, 30):
        with history.batch():
            assert history.append(record(f"m:{i}", text=big, t=i))
            history.set_seq("public", i)
    assert not history.append(record("m:5"))  # still one of each
    assert len(faults) == 1
    assert "disk is full" in faults[0]
    waiting = history.waiting()
    assert waiting >= 25  # all but what fitted in the free pages
    assert history.count() == 30
    assert [r.id for r in history.recent("public", 100)] == [f"m:{i}" for i in range(30)]
    assert history.max_seq("public") == 29
    assert not history.retry()  # still full
    free_disk(history)
    assert history.retry()
    assert saved == [waiting]
    assert history.waiting() == 0
    assert history.fault is None
    profile.close()
    with Profile.open(profile_dir) as again:
        assert again.history.count() == 30
        assert again.history.max_seq("public") == 29


# Permissions stop only a user that is not root, and Windows has no such directory mode: as
# root (CI) and on Windows, tests/test_faults_lan.py proves it with a read-only mount.
if sys.platform != "win32" and os.geteuid() != 0:

    def test_a_read_only_profile_at_start_is_a_profile_error(tmp_path: Path) -> None:
        directory = tmp_path / "ro"
        Profile.open(directory).close()
        for path in [directory, *directory.iterdir()]:
            path.chmod(0o500 if path.is_dir() else 0o400)
        try:
            with pytest.raises(ProfileError, match="cannot be used"):
                Profile.open(directory)
        finally:
            for path in [directory, *directory.iterdir()]:
                path.chmod(0o700 if path.is_dir() else 0o600)


def test_a_database_turned_read_only_is_the_same_fault_with_its_own_words(
    profile: Profile,
) -> None:
    history = profile.history
    faults: list[str] = []
    history.on_fault = faults.append
    history._db.execute("PRAGMA query_only=1")  # "attempt to write a readonly database"
    assert history.append(record("m:1"))
    assert faults
    assert "read-only" in faults[0]
    assert [r.id for r in history.recent("public", 10)] == ["m:1"]
    history._db.execute("PRAGMA query_only=0")
    assert history.retry()
    assert history.waiting() == 0


_V1_SCHEMA = """
CREATE TABLE messages (n INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE,
    conversation TEXT NOT NULL, sender TEXT NOT NULL, sender_key TEXT NOT NULL,
    text TEXT NOT NULL, sent_t REAL NOT NULL, received_t REAL NOT NULL, outgoing INTEGER NOT NULL);
CREATE INDEX messages_by_conversation ON messages (conversation);
CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE outbox (peer_key TEXT NOT NULL, cseq INTEGER NOT NULL, payload BLOB NOT NULL,
    created_t REAL NOT NULL, PRIMARY KEY (peer_key, cseq)) WITHOUT ROWID;
PRAGMA application_id=1280197448;
PRAGMA user_version=1;
"""


def test_a_version_1_history_is_migrated_keeping_its_order_ahead_of_placed_messages(
    profile_dir: Path,
) -> None:
    import sqlite3

    profile_dir.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(profile_dir / "history.sqlite3")
    db.executescript(_V1_SCHEMA)
    for i, text in enumerate(["first", "second", "third"]):
        db.execute(
            "INSERT INTO messages (id, conversation, sender, sender_key, text, sent_t,"
            " received_t, outgoing) VALUES (?, 'public', 'ada', ?, ?, ?, ?, 0)",
            (f"old:{i}", KEY_A, text, 10 - i, 10 - i),  # clocks disagree: arrival wins
        )
    db.commit()
    db.close()
    with Profile.open(profile_dir) as p:
        p.history.append(record("new:1")._replace(place=1, seq=1))
        got = [r.text for r in p.history.recent("public", 10)]
        assert got == ["first", "second", "third", "hi"]
        assert p.history.holdings() == []
