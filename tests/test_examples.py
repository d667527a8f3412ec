"""The runnable examples in examples/: their logic alone, then for real on a virtual LAN."""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import json
import os
import queue
import signal
import subprocess
import sys
import threading
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import pytest
from lannode import LanNode, wait_connected

from lanchat.store import HistoryRecord, Profile

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import ModuleType

    from vlan import VirtualLan

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
ENV = {**os.environ, "PYTHONPATH": str(REPO)}
WAIT_S = 20.0


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


faq_bot = load_example("faq_bot")
help_log = load_example("help_log_to_csv")


class TextLines:
    """Lines of a text stream, read by a thread; awaited with a timeout."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream: IO[bytes]) -> None:
        with contextlib.suppress(OSError, ValueError):
            for raw in stream:
                self._queue.put(raw.decode(errors="replace").rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, needle: str, timeout: float = WAIT_S) -> str:
        for line in self.lines:
            if needle in line:
                return line
        while True:
            try:
                line = self._queue.get(timeout=timeout)
            except queue.Empty:
                raise TimeoutError(f"no {needle!r} within {timeout} s: {self.lines}") from None
            if line is None:
                raise EOFError(f"stream ended without {needle!r}: {self.lines}")
            self.lines.append(line)
            if needle in line:
                return line

    def text(self) -> str:
        with contextlib.suppress(queue.Empty):
            while (line := self._queue.get_nowait()) is not None:
                self.lines.append(line)
        return "\n".join(self.lines)


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def run_exporter(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / "help_log_to_csv.py"), *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=ENV,
        timeout=60,
        check=False,
    )


# ---- the logic, without a network --------------------------------------------


def builtin_bot() -> Any:
    entries = [faq_bot.make_entry(raw, "built-in") for raw in faq_bot.BUILTIN_FAQ]
    return faq_bot.FaqBot("faqbot", entries)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("what is the wifi password?", "Wi-Fi password"),
        ("WHAT'S THE WI-FI PASSWORD", "Wi-Fi password"),
        ("Where are the slides?", "slides"),
        ("when is lunch", "Lunch is at"),
        ("how do I ask privately?", "/hand --anon"),
        ("can I ask something anonymously?", "/request"),
        ("I love the wifi here", None),  # a statement, not a question
        ("anyone up for a walk?", None),  # a question nobody listed
        ("is the password in the slides?", "slides"),  # "wifi" missing: not the Wi-Fi entry
    ],
)
def test_faq_matching(text: str, expected: str | None) -> None:
    answer = builtin_bot().answer_for("ann", text, 0.0)
    if expected is None:
        assert answer is None
    else:
        assert answer is not None
        assert expected in answer


def test_faq_never_answers_itself_and_rate_limits_per_question() -> None:
    bot = builtin_bot()
    assert bot.answer_for("FaqBot", "when is lunch?", 0.0) is None
    assert bot.answer_for("ann", "when is lunch?", 0.0) is not None
    assert bot.answer_for("bob", "When is lunch ?!", 10.0) is None  # the same question text
    assert bot.answer_for("bob", "where are the slides?", 10.0) is not None
    assert bot.answer_for("bob", "when is lunch?", 30.5) is not None


def test_faq_file_entries_come_first_and_bad_files_are_refused(tmp_path: Path) -> None:
    good = tmp_path / "faq.json"
    good.write_text(json.dumps([{"keywords": ["wifi", "password"], "answer": "hunter2"}]))
    single = tmp_path / "one.json"
    single.write_text(json.dumps({"keywords": ["exam|test"], "answer": "Friday at 10"}))
    entries = faq_bot.load_faq(good) + faq_bot.load_faq(single)
    entries += [faq_bot.make_entry(raw, "built-in") for raw in faq_bot.BUILTIN_FAQ]
    bot = faq_bot.FaqBot("faqbot", entries)
    assert bot.answer_for("ann", "wifi password?", 0.0) == "hunter2"
    assert bot.answer_for("ann", "when is the Exam?", 0.0) == "Friday at 10"
    for bad in ({"keywords": [], "answer": "x"}, {"keywords": ["a"]}, ["not an object"], "{"):
        path = tmp_path / "bad.json"
        path.write_text(bad if isinstance(bad, str) else json.dumps(bad))
        with pytest.raises(ValueError, match=r"bad\.json"):
            faq_bot.load_faq(path)
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "faq_bot.py"), "--faq", str(tmp_path / "bad.json")],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert "bad.json" in done.stderr


def test_queue_log_folds_events_into_one_record_per_hand() -> None:
    qlog = help_log.QueueLog("mentorX")
    T0 = 1_700_000_000.0  # a real date: Windows cannot show times near 1970 in local time
    entry = {"n": 1, "id": "h1", "who": "stu", "topic": "loop", "anon": False, "claimed_by": ""}
    anon = {**entry, "n": 2, "id": "h2", "who": "anon-1a2b", "topic": "pointer", "anon": True}
    qlog.feed({"ev": "queue", "t": T0 + 100.0, "entries": [{**entry, "waiting_s": 5.0}]})
    qlog.feed({"ev": "queue", "t": T0 + 110.0, "entries": [{**entry, "waiting_s": 15.0}, anon]})
    qlog.feed({"ev": "claimed", "t": T0 + 120.0, "id": "h1", "who": "stu", "anon": False})
    qlog.feed({"ev": "queue", "t": T0 + 120.0, "entries": [{**entry, "claimed_by": "mentorX"}]})
    qlog.feed({"ev": "hand", "t": T0 + 130.0, "id": "h1", "state": "done", "who": "stu"})
    qlog.feed({"ev": "queue", "t": T0 + 130.0, "entries": []})
    rows = {r[0]: dict(zip(help_log.LIVE_COLUMNS, r, strict=True)) for r in qlog.rows(T0 + 200.0)}
    assert rows["h1"]["claimed_by"] == "mentorX"
    assert rows["h1"]["waiting_s"] == "25.0"  # raised at 95, claimed at 120
    assert rows["h1"]["outcome"] == "done"
    assert rows["h1"]["done_at"]
    assert rows["h2"]["who"] == "anon-1a2b"
    assert rows["h2"]["anon"] == 1
    assert rows["h2"]["outcome"] == "gone"  # left the queue: another mentor, or lowered
    assert rows["h2"]["waiting_s"] == "10.0"


def test_profile_export_reads_a_locked_profile_without_touching_it(tmp_path: Path) -> None:
    profile_dir = tmp_path / "mentor"

    def rec(n: int, conversation: str, sender: str, text: str, outgoing: bool) -> HistoryRecord:
        return HistoryRecord(
            f"m{n}", conversation, sender, "", text, 1.7e9 + n, 1.7e9 + n, outgoing
        )

    with Profile.open(profile_dir) as profile:  # held open and locked, like a running lanchat
        profile.history.append(rec(1, "public", "ann", "hello room", False))
        profile.history.append(rec(2, "hand:abc", "mentor1", "show me, please", True))
        profile.history.append(rec(3, "peer:00ff", "bob", "a private chat", False))
        profile.history.append(rec(4, "hand:abc", "anon-1a2b", 'it says "x, y"\nthen stops', False))
        db = profile_dir / "history.sqlite3"
        before = db.read_bytes()
        out = tmp_path / "log.csv"
        done = run_exporter("--profile", str(profile_dir), "--out", str(out))
        assert done.returncode == 0, done.stderr
        assert db.read_bytes() == before
    rows = read_csv(out)
    assert [(r["hand_id"], r["from"], r["outgoing"]) for r in rows] == [
        ("abc", "mentor1", "1"),
        ("abc", "anon-1a2b", "0"),
    ]
    assert rows[1]["text"] == 'it says "x, y"\nthen stops'
    sent = datetime.fromisoformat(rows[0]["time"])  # ISO 8601 with the local UTC offset
    assert sent.utcoffset() is not None
    assert sent.timestamp() == 1.7e9 + 2
    assert run_exporter("--profile", str(tmp_path / "nothing")).returncode == 1


# ---- on a virtual LAN ---------------------------------------------------------


def spawn_example(lan: VirtualLan, host: int, argv: list[str]) -> tuple[Any, TextLines]:
    proc = lan.spawn(
        host,
        [sys.executable, *argv],
        cwd=REPO,
        env=ENV,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    return proc, TextLines(proc.stdout)


def first_broker(lan: VirtualLan, tmp_path: Path, handle: str, extra: list[str]) -> LanNode:
    """A node alone on the LAN until it is the broker: later nodes join it, no merge."""
    node = LanNode(lan, 2, handle, tmp_path / handle, extra)
    node.wait("status", lambda e: e["state"] == "broker")
    return node


@pytest.mark.lan
def test_faq_bot_answers_in_the_public_room(
    vlan: Callable[..., VirtualLan], tmp_path: Path
) -> None:
    lan = vlan(2)
    ann = first_broker(lan, tmp_path, "ann", [])
    extra = tmp_path / "extra.json"
    extra.write_text(json.dumps([{"keywords": ["exam"], "answer": "The exam is on Friday."}]))
    argv = ["examples/faq_bot.py", "--handle", "faqbot", "--profile", str(tmp_path / "bot")]
    bot, log = spawn_example(lan, 1, [*argv, "--faq", str(extra)])
    ann.wait("peer_up", lambda e: e["handle"] == "faqbot")

    def from_bot(e: dict[str, Any]) -> bool:
        return e["from"] == "faqbot"

    ann.send(cmd="say", text="what is the wifi password?")
    answer = ann.wait("public", from_bot)
    assert answer["text"].startswith("@ann ")
    assert "Wi-Fi password" in answer["text"]
    # Chatter, a repeat within 30 s, then a question from --faq: the bot answers in order,
    # so the next answer being the exam one proves it said nothing to the others.
    for text in ("I love the wifi here", "anyone up for pizza?", "what is the wifi password?"):
        ann.send(cmd="say", text=text)
    ann.send(cmd="say", text="When is the exam?")
    assert ann.wait("public", from_bot)["text"] == "@ann The exam is on Friday."
    ann.send(cmd="say", text="nice weather today")
    with pytest.raises(TimeoutError):
        ann.wait("public", from_bot, timeout=2.0)
    assert len([e for e in ann.seen("public") if from_bot(e)]) == 2
    # SIGTERM: the bot tells its node to quit, which says goodbye at once.
    bot.send_signal(signal.SIGTERM)
    assert bot.wait(timeout=WAIT_S) == 0, log.text()
    ann.wait("peer_down", lambda e: e["handle"] == "faqbot", timeout=5.0)
    output = log.text()
    assert "answering ann: 'what is the wifi password?'" in output
    assert "not answering 'what is the wifi password?' again so soon" in output
    assert "SIGTERM: quitting" in output
    assert "exited with status 0" in output


@pytest.mark.lan
def test_faq_bot_exits_when_its_node_does(vlan: Callable[..., VirtualLan], tmp_path: Path) -> None:
    lan = vlan(1)
    argv = ["examples/faq_bot.py", "--handle", "faqbot", "--profile", str(tmp_path / "bot")]
    bot, log = spawn_example(lan, 1, argv)
    log.wait_for("ready as faqbot")
    children = Path(f"/proc/{bot.pid}/task/{bot.pid}/children").read_text().split()
    assert len(children) == 1
    os.kill(int(children[0]), signal.SIGTERM)  # the node quits (status 0) on its own
    assert bot.wait(timeout=WAIT_S) == 0, log.text()
    assert "the node exited with status 0" in log.text()


@pytest.mark.lan
def test_help_log_live_records_the_queue(vlan: Callable[..., VirtualLan], tmp_path: Path) -> None:
    lan = vlan(2)
    stu = first_broker(lan, tmp_path, "stu", [])
    stu.send(cmd="hand", topic="my loop never ends")
    before = stu.wait("hand", lambda e: e["state"] == "raised")["id"]
    out = tmp_path / "queue.csv"
    argv = ["examples/help_log_to_csv.py", "--live", "--handle", "mentorX"]
    argv += ["--profile", str(tmp_path / "mx"), "--seconds", "10", "--out", str(out)]
    exporter, log = spawn_example(lan, 1, argv)
    stu.wait("peer_up", lambda e: e["handle"] == "mentorX" and e["mentor"])
    stu.send(cmd="hand", topic="what is a pointer", anon=True)
    after = stu.wait("hand", lambda e: e["state"] == "raised" and e["id"] != before)["id"]
    stu.send(cmd="hand", topic="never mind")
    lowered = stu.wait("hand", lambda e: e["state"] == "raised" and e["id"] not in (before, after))
    stu.wait("hand", lambda e: e["id"] == lowered["id"] and e["state"] == "waiting")
    stu.send(cmd="done", id=lowered["id"])
    stu.wait("hand", lambda e: e["id"] == lowered["id"] and e["state"] == "done")
    assert exporter.wait(timeout=40) == 0, log.text()
    rows = {r["hand_id"]: r for r in read_csv(out)}
    assert set(rows) == {before, after, lowered["id"]}, log.text()
    assert rows[before]["topic"] == "my loop never ends"
    assert rows[before]["who"] == "stu"
    assert rows[before]["anon"] == "0"
    assert rows[before]["outcome"] == "waiting"
    assert rows[before]["claimed_by"] == rows[before]["claimed_at"] == ""
    assert float(rows[before]["waiting_s"]) >= 5.0  # it was up for (nearly) the whole run
    assert rows[after]["topic"] == "what is a pointer"
    assert rows[after]["who"].startswith("anon-")
    assert rows[after]["anon"] == "1"
    assert rows[lowered["id"]]["outcome"] == "gone"
    assert "stu" not in rows[after]["who"]
    assert rows[before]["first_seen"]


@pytest.mark.lan
def test_help_log_from_the_profile_of_a_mentor(
    vlan: Callable[..., VirtualLan], tmp_path: Path
) -> None:
    lan = vlan(2)
    mentor = LanNode(lan, 1, "mentor1", tmp_path / "mentor1", ["--mentor"])
    mentor.wait("status", lambda e: e["state"] == "broker")
    stu = LanNode(lan, 2, "stu", tmp_path / "stu")
    wait_connected([mentor, stu])
    stu.send(cmd="say", text="hello room")  # public: not part of the help log
    mentor.wait("public", lambda e: e["text"] == "hello room")
    stu.send(cmd="hand", topic="merge conflict", anon=True)
    hand_id = stu.wait("hand", lambda e: e["state"] == "raised")["id"]
    mentor.wait("queue", lambda e: len(e["entries"]) == 1)
    mentor.send(cmd="claim", id=hand_id)
    who = mentor.wait("claimed")["who"]
    stu.wait("hand", lambda e: e["state"] == "claimed")
    mentor.send(cmd="msg", to=who, text="what does git say?")
    stu.wait("private", lambda e: e["text"] == "what does git say?")
    stu.send(cmd="msg", to="mentor1", text="CONFLICT (content): Merge conflict in a.py")
    mentor.wait("private", lambda e: e["text"].startswith("CONFLICT"))
    out = tmp_path / "log.csv"
    # While the mentor's lanchat runs (profile locked, history in WAL mode).
    done = run_exporter("--profile", str(tmp_path / "mentor1"), "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert len(read_csv(out)) == 2
    mentor.send(cmd="done", id=hand_id)
    stu.wait("hand", lambda e: e["state"] == "done")
    mentor.wait("hand", lambda e: e["state"] == "done")
    assert mentor.quit() == 0
    done = run_exporter("--profile", str(tmp_path / "mentor1"), "--out", str(out))
    assert done.returncode == 0, done.stderr
    rows = read_csv(out)
    assert [(r["hand_id"], r["from"], r["outgoing"], r["text"]) for r in rows] == [
        (hand_id, "mentor1", "1", "what does git say?"),
        (hand_id, who, "0", "CONFLICT (content): Merge conflict in a.py"),
    ]
    assert who.startswith("anon-")
    assert all("T" in r["time"] for r in rows)
    assert "wrote 2 help-session messages" in done.stderr
