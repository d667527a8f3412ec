#!/usr/bin/env python3
"""Export a mentor's help-queue log to CSV. Two modes.

(a) From a profile: every message of every help session stored in it.

    python3 examples/help_log_to_csv.py --profile ~/.local/share/lanchat/default --out log.csv

    Reads the profile's history.sqlite3 read-only (SQLite URI ``mode=ro``); lanchat may be
    running meanwhile (the database is in WAL mode, readers never block it). Help-session
    messages are those of conversations ``hand:<hand id>``. One row per message, in arrival
    order::

        hand_id, time, from, outgoing, text

    ``time`` is the author's send time in ISO 8601 with the local UTC offset; ``from`` is
    the author's handle (a pseudonym such as anon-1a2b for an anonymous student);
    ``outgoing`` is 1 for messages written with this profile, else 0. ``--profile`` defaults
    to lanchat's default profile.

(b) Live: join the room as a (passive) mentor for N seconds and log the help queue.

    python3 examples/help_log_to_csv.py --live --handle mentorX --seconds 600 --out queue.csv

    Runs ``lanchat --headless --mentor`` ([--room R] [--profile DIR] [--interface IP]
    [--connect HOST[:PORT]] are passed on; without --profile a throw-away profile is used,
    so pick a handle nobody else uses). It claims nothing; it records every hand seen in
    `queue`, `claimed` and `hand` events, and after N seconds (or Ctrl-C / SIGTERM, or when
    the node exits) writes one row per hand::

        hand_id, who, topic, anon, first_seen, claimed_by, claimed_at, done_at,
        waiting_s, outcome

    ``who`` is the student's handle, or its pseudonym for an anonymous hand. Times are
    ISO 8601 as seen by this node (``claimed_at``: when it first saw the hand claimed).
    ``waiting_s``: seconds from raising the hand until it was claimed, left the queue, or
    the end of the run. ``outcome``: ``waiting`` (still unclaimed at the end), ``claimed``,
    ``done``, or ``gone`` (left the queue unseen: another mentor claimed it, whose claims
    are not shown to us, or the student lowered it).

``--out -`` (the default) writes to stdout. Only the standard library and lanchat are used;
the live mode talks to lanchat through its headless JSON-lines contract (docs/headless.md).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import queue
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from lanchat.store import HISTORY_APPLICATION_ID, HISTORY_NAME, default_profile_dir

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

PROFILE_COLUMNS = ["hand_id", "time", "from", "outgoing", "text"]
LIVE_COLUMNS = [
    "hand_id",
    "who",
    "topic",
    "anon",
    "first_seen",
    "claimed_by",
    "claimed_at",
    "done_at",
    "waiting_s",
    "outcome",
]
QUIT_GRACE_S = 10.0


def log(message: str) -> None:
    print(f"help_log_to_csv: {message}", file=sys.stderr, flush=True)


def iso(t: float | None) -> str:
    if t is None:
        return ""
    return datetime.fromtimestamp(t).astimezone().isoformat(timespec="seconds")


@contextlib.contextmanager
def open_out(path: str) -> Iterator[IO[str]]:
    if path == "-":
        yield sys.stdout
        return
    with open(path, "w", newline="", encoding="utf-8") as f:
        yield f


def write_csv(path: str, columns: list[str], rows: Iterable[list[Any]]) -> int:
    count = 0
    with open_out(path) as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for row in rows:
            writer.writerow(row)
            count += 1
    return count


# ---- (a) from a profile -----------------------------------------------------


def profile_rows(profile: Path) -> list[list[Any]]:
    """The help-session messages stored in ``profile``, oldest first."""
    db_path = profile / HISTORY_NAME
    if not db_path.is_file():
        raise SystemExit(f"help_log_to_csv: no {HISTORY_NAME} in {profile}")
    # Read-only: never creates, migrates or locks anything the running lanchat needs.
    db = sqlite3.connect(f"{db_path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        if db.execute("PRAGMA application_id").fetchone()[0] != HISTORY_APPLICATION_ID:
            raise SystemExit(f"help_log_to_csv: {db_path} is not a lanchat history")
        cur = db.execute(
            "SELECT conversation, sent_t, sender, outgoing, text FROM messages"
            " WHERE conversation LIKE 'hand:%' ORDER BY n"
        )
        return [
            [conv.removeprefix("hand:"), iso(sent_t), sender, int(outgoing), text]
            for conv, sent_t, sender, outgoing, text in cur
        ]
    except sqlite3.DatabaseError as exc:
        raise SystemExit(f"help_log_to_csv: cannot read {db_path}: {exc}") from exc
    finally:
        db.close()


# ---- (b) live ---------------------------------------------------------------


@dataclass
class HandRecord:
    hand_id: str
    who: str = ""
    topic: str = ""
    anon: bool = False
    first_seen: float | None = None
    raised_at: float | None = None  # estimated: first `queue` time minus its waiting_s
    claimed_by: str = ""
    claimed_at: float | None = None
    done_at: float | None = None
    gone_at: float | None = None

    def row(self, end: float) -> list[Any]:
        if self.done_at is not None:
            outcome = "done"
        elif self.claimed_at is not None:
            outcome = "claimed"
        elif self.gone_at is not None:
            outcome = "gone"
        else:
            outcome = "waiting"
        stop = self.claimed_at or self.gone_at or self.done_at or end
        start = self.raised_at if self.raised_at is not None else self.first_seen
        waiting = "" if start is None else f"{max(0.0, stop - start):.1f}"
        return [
            self.hand_id,
            self.who,
            self.topic,
            int(self.anon),
            iso(self.first_seen),
            self.claimed_by,
            iso(self.claimed_at),
            iso(self.done_at),
            waiting,
            outcome,
        ]


class QueueLog:
    """Folds `queue`, `claimed` and `hand` events into one record per hand."""

    def __init__(self, handle: str) -> None:
        self.handle = handle
        self.hands: dict[str, HandRecord] = {}

    def _hand(self, hand_id: str, t: float) -> HandRecord:
        rec = self.hands.get(hand_id)
        if rec is None:
            rec = self.hands[hand_id] = HandRecord(hand_id, first_seen=t)
            log(f"new hand {hand_id}")
        return rec

    def feed(self, event: dict[str, Any]) -> None:
        kind, t = event.get("ev"), float(event.get("t") or time.time())
        if kind == "ready":
            self.handle = str(event.get("handle") or self.handle)
        elif kind == "queue":
            listed = set()
            for entry in event.get("entries", []):
                hand_id = str(entry.get("id", ""))
                if not hand_id:
                    continue
                listed.add(hand_id)
                rec = self._hand(hand_id, t)
                rec.who, rec.topic = str(entry.get("who", "")), str(entry.get("topic", ""))
                rec.anon = bool(entry.get("anon"))
                rec.gone_at = None
                if rec.raised_at is None:
                    rec.raised_at = t - float(entry.get("waiting_s") or 0.0)
                if entry.get("claimed_by") and rec.claimed_at is None:
                    rec.claimed_by, rec.claimed_at = str(entry["claimed_by"]), t
            for rec in self.hands.values():
                if rec.hand_id not in listed and rec.done_at is None and rec.gone_at is None:
                    rec.gone_at = t
        elif kind == "claimed":
            rec = self._hand(str(event.get("id", "")), t)
            rec.who = str(event.get("who", rec.who))
            rec.topic = str(event.get("topic", rec.topic))
            rec.anon = bool(event.get("anon", rec.anon))
            if rec.claimed_at is None:
                rec.claimed_by, rec.claimed_at = self.handle, t
        elif kind == "hand" and event.get("state") == "done":
            rec = self._hand(str(event.get("id", "")), t)
            rec.done_at = rec.done_at or t

    def rows(self, end: float) -> list[list[Any]]:
        return [rec.row(end) for rec in self.hands.values()]


class Stop(Exception):
    """Raised in the main thread by SIGTERM/SIGINT."""


def _raise_stop(signum: int, frame: object) -> None:
    raise Stop(signal.Signals(signum).name)


def _pump(stream: IO[bytes], events: queue.Queue[dict[str, Any] | None]) -> None:
    try:
        for raw in stream:
            with contextlib.suppress(ValueError):
                event = json.loads(raw)
                if isinstance(event, dict):
                    events.put(event)
    finally:
        events.put(None)  # EOF: the node exited


def live(args: argparse.Namespace) -> int:
    if args.profile is not None:
        return run_live(live_argv(args, args.profile), args)
    with tempfile.TemporaryDirectory(prefix="lanchat-log-") as tmp:
        return run_live(live_argv(args, Path(tmp) / "profile"), args)


def live_argv(args: argparse.Namespace, profile: Path) -> list[str]:
    argv = [sys.executable, "-m", "lanchat", "--headless", "--mentor"]
    argv += ["--handle", args.handle, "--profile", str(profile)]
    for flag in ("room", "interface", "connect"):
        if getattr(args, flag):
            argv += [f"--{flag}", getattr(args, flag)]
    return argv


def run_live(argv: list[str], args: argparse.Namespace) -> int:
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, _raise_stop)
    # Own session: a Ctrl-C in the terminal reaches only us, and we tell the node.
    proc = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0, start_new_session=True
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    events: queue.Queue[dict[str, Any] | None] = queue.Queue()
    threading.Thread(target=_pump, args=(proc.stdout, events), daemon=True).start()
    qlog = QueueLog(args.handle)
    deadline = time.monotonic() + args.seconds
    log(f"logging the help queue as mentor {args.handle} for {args.seconds:g} s")
    try:
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                event = events.get(timeout=remaining)
            except queue.Empty:
                break
            if event is None:
                log("the node exited")
                break
            if event.get("ev") in ("error", "warning"):
                log(f"{event['ev']} {event.get('code')}: {event.get('message')}")
            qlog.feed(event)
    except Stop as why:
        log(f"{why}: stopping early")
    # From here on a second signal ends us at once; the node then sees EOF and quits too.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    end = time.time()
    with contextlib.suppress(BrokenPipeError, OSError):
        proc.stdin.write(b'{"cmd":"quit"}\n')
    try:
        status = proc.wait(timeout=QUIT_GRACE_S)
    except subprocess.TimeoutExpired:
        log("the node did not quit in time; killing it")
        proc.kill()
        status = proc.wait()
    count = write_csv(args.out, LIVE_COLUMNS, qlog.rows(end))
    log(f"wrote {count} hands to {args.out}; the node exited with status {status}")
    return status


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description="Export a mentor's help-queue log to CSV (from a profile, or --live).",
        epilog="See the module docstring for the columns.",
    )
    p.add_argument("--profile", type=Path, help="profile directory (default: lanchat's)")
    p.add_argument("--out", default="-", help="CSV file to write (default: - for stdout)")
    p.add_argument("--live", action="store_true", help="log the queue as a mentor node")
    p.add_argument("--handle", help="--live: the mentor handle to join as")
    p.add_argument("--room", help="--live: join this room instead of the default one")
    p.add_argument("--interface", metavar="IP", help="--live: the network interface to use")
    p.add_argument("--connect", metavar="HOST[:PORT]", help="--live: connect to this broker")
    p.add_argument("--seconds", type=float, default=60.0, help="--live: how long (default 60)")
    args = p.parse_args(argv)
    if args.live:
        if not args.handle:
            p.error("--live needs --handle")
        if args.seconds <= 0:
            p.error("--seconds must be positive")
        return live(args)
    for flag in ("handle", "room", "interface", "connect"):
        if getattr(args, flag):
            p.error(f"--{flag} only applies with --live")
    profile = args.profile if args.profile is not None else default_profile_dir()
    count = write_csv(args.out, PROFILE_COLUMNS, profile_rows(profile))
    log(f"wrote {count} help-session messages from {profile} to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
