"""Workshop features on a real virtual LAN: the help queue, rooms, doctor."""

from __future__ import annotations

import json
import sys
import time
from typing import TYPE_CHECKING

import pytest
from lannode import LanNode, wait_connected, wait_online

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from vlan import VirtualLan

pytestmark = pytest.mark.lan


def queue_ids(node: LanNode, pred: Callable[[list[dict[str, object]]], bool]) -> list[dict]:
    return node.wait("queue", lambda e: pred(e["entries"]))["entries"]


def mentors_seen(student: LanNode) -> dict[str, bool]:
    student.send(cmd="who")
    peers = student.wait("who")["peers"]
    return {p["handle"]: p["mentor"] for p in peers if p["handle"].startswith(("mentor", "boss"))}


def add_second_mentor(a: LanNode, b: LanNode, student: LanNode) -> None:
    """Two mentors on fresh profiles: one authority is the room's (the other mentor gave
    its own up on seeing the room); its holder adds the other one as a mentor."""
    seen = mentors_seen(student)
    holder, other = (a, b) if seen[a.handle] else (b, a)
    assert seen == {holder.handle: True, other.handle: False}
    holder.send(cmd="add_mentor", handle=other.handle)
    other.wait("mentor_added", lambda e: e["handle"] == other.handle)
    deadline = time.monotonic() + 15
    while mentors_seen(student) != {a.handle: True, b.handle: True}:
        assert time.monotonic() < deadline, "the student never saw the second mentor verified"
        time.sleep(0.1)  # polling `who`: no event says "nothing else changed"


def test_help_queue_claim_chat_done_with_two_mentors(
    vlan: Callable[..., VirtualLan], tmp_path: Path
) -> None:
    lan = vlan(3)
    m1 = LanNode(lan, 1, "mentor1", tmp_path / "m1", ["--mentor"])
    # The room's first mentor starts first (its authority is the room's), as in a workshop.
    m1.wait("status", lambda e: e["state"] == "broker")
    m2 = LanNode(lan, 2, "mentor2", tmp_path / "m2", ["--mentor"])
    stu = LanNode(lan, 3, "stu", tmp_path / "stu")
    wait_connected([m1, m2, stu])
    add_second_mentor(m1, m2, stu)
    stu.send(cmd="hand", topic="my loop never ends")
    raised = stu.wait("hand", lambda e: e["state"] == "raised")
    stu.wait("hand", lambda e: e["state"] == "waiting" and e["position"] == 1)
    for mentor in (m1, m2):
        entries = queue_ids(mentor, lambda es: len(es) == 1)
        assert entries[0]["who"] == "stu"
        assert entries[0]["topic"] == "my loop never ends"
        assert entries[0]["id"] == raised["id"]
        assert entries[0]["claimed_by"] == ""
    m1.send(cmd="claim", n=1)
    m1.wait("claimed", lambda e: e["who"] == "stu")
    # Claimed by mentor1: it leaves mentor2's queue.
    queue_ids(m2, lambda es: es == [])
    assert stu.wait("hand", lambda e: e["state"] == "claimed")["mentor"] == "mentor1"
    m2.send(cmd="claim", id=raised["id"])
    assert m2.wait("error")["code"] == "queue"
    # The claim opens a private conversation, both ways.
    m1.send(cmd="msg", to="stu", text="show me the loop")
    got = stu.wait("private", lambda e: e["text"] == "show me the loop")
    assert got["from"] == "mentor1"
    assert got["hand"] == raised["id"]
    stu.send(cmd="msg", to="mentor1", text="while True: pass")
    got = m1.wait("private", lambda e: e["text"] == "while True: pass")
    assert got["from"] == "stu"
    m1.send(cmd="done")
    stu.wait("hand", lambda e: e["state"] == "done")
    m1.wait("hand", lambda e: e["state"] == "done")
    queue_ids(m1, lambda es: es == [])


def test_anonymous_hand_never_reveals_the_student(
    vlan: Callable[..., VirtualLan], tmp_path: Path
) -> None:
    lan = vlan(3)
    m1 = LanNode(lan, 1, "mentor1", tmp_path / "m1", ["--mentor"])
    # The room's first mentor starts first (its authority is the room's), as in a workshop.
    m1.wait("status", lambda e: e["state"] == "broker")
    m2 = LanNode(lan, 2, "mentor2", tmp_path / "m2", ["--mentor"])
    shy = LanNode(lan, 3, "shystudent", tmp_path / "shy")
    wait_connected([m1, m2, shy])
    add_second_mentor(m1, m2, shy)
    shy.send(cmd="hand", topic="what is a pointer", anon=True)
    entry = queue_ids(m2, lambda es: len(es) == 1)[0]
    assert entry["anon"] is True
    assert entry["who"].startswith("anon-")
    m2.send(cmd="claim", id=entry["id"])
    m2.wait("claimed")
    assert shy.wait("hand", lambda e: e["state"] == "claimed")["mentor"] == "mentor2"
    m2.send(cmd="msg", to=entry["who"], text="no question is silly")
    shy.wait("private", lambda e: e["text"] == "no question is silly")
    shy.send(cmd="msg", to="mentor2", text="thanks, I was too shy")
    got = m2.wait("private", lambda e: e["text"] == "thanks, I was too shy")
    assert got["from"] == entry["who"]
    # Nothing either mentor was told names the student or its key fingerprint.
    shy_fp = shy.seen("ready")[0]["fingerprint"]
    for mentor in (m1, m2):
        everything = [
            e for e in mentor.events.seen if e["ev"] not in ("peer_up", "who", "peer_down")
        ]
        dump = json.dumps(everything)
        assert "shystudent" not in dump
        assert shy_fp not in dump


def test_help_queue_survives_broker_sigkill(
    vlan: Callable[..., VirtualLan], tmp_path: Path
) -> None:
    lan = vlan(3)
    boss = LanNode(lan, 1, "boss", tmp_path / "boss", ["--mentor", "--room", "q"])
    boss.wait("status", lambda e: e["state"] == "broker")
    m2 = LanNode(lan, 2, "mentor2", tmp_path / "m2", ["--mentor", "--room", "q"])
    stu = LanNode(lan, 3, "stu", tmp_path / "stu", ["--room", "q"])
    assert wait_connected([boss, m2, stu], expect="boss") == "boss"
    add_second_mentor(boss, m2, stu)
    stu.send(cmd="hand", topic="segfault")
    stu.send(cmd="hand", topic="merge conflict", anon=True)
    queue_ids(m2, lambda es: len(es) == 2)
    boss.kill()
    m2.wait("broker", lambda e: e["handle"] != "boss")
    # The new broker rebuilt the queue: no hand silently dropped.
    entries = queue_ids(m2, lambda es: len(es) == 2)
    assert sorted(e["topic"] for e in entries) == ["merge conflict", "segfault"]
    m2.send(cmd="claim", n=1)
    m2.wait("claimed")


def test_two_rooms_on_one_lan_do_not_see_each_other(
    vlan: Callable[..., VirtualLan], tmp_path: Path
) -> None:
    lan = vlan(4)
    a1 = LanNode(lan, 1, "a1", tmp_path / "a1", ["--room", "alpha"])
    a2 = LanNode(lan, 2, "a2", tmp_path / "a2", ["--room", "alpha"])
    b1 = LanNode(lan, 3, "b1", tmp_path / "b1", ["--room", "beta"])
    b2 = LanNode(lan, 4, "b2", tmp_path / "b2", ["--room", "beta"])
    broker_a = wait_connected([a1, a2])
    broker_b = wait_connected([b1, b2])
    assert broker_a in {"a1", "a2"}
    assert broker_b in {"b1", "b2"}
    a1.send(cmd="say", text="alpha only")
    a2.wait("public", lambda e: e["text"] == "alpha only")
    b1.send(cmd="say", text="beta only")
    b2.wait("public", lambda e: e["text"] == "beta only")
    wait_online(a1, {"a2"})
    wait_online(b2, {"b1"})
    for node in (a1, a2):
        assert all(e["handle"] in {"a1", "a2"} for e in node.seen("peer_up"))
        assert "beta only" not in [e["text"] for e in node.seen("public")]
    for node in (b1, b2):
        assert all(e["handle"] in {"b1", "b2"} for e in node.seen("peer_up"))
        assert "alpha only" not in [e["text"] for e in node.seen("public")]


def _doctor(lan: VirtualLan, host: int) -> tuple[int, dict[str, object]]:
    result = lan.run(
        host, [sys.executable, "-m", "lanchat", "doctor", "--json", "--listen", "1.0"], timeout=30
    )
    return result.returncode, json.loads(result.stdout)


def test_doctor_verdicts_working_lan_and_link_down(
    vlan: Callable[..., VirtualLan], tmp_path: Path
) -> None:
    lan = vlan(3)
    ann = LanNode(lan, 1, "ann", tmp_path / "ann")
    ann.wait("broker")
    status, report = _doctor(lan, 2)
    assert status == 0, report
    assert report["multicast"] is True
    assert report["nodes"] == ["ann"]
    lan.link_down(3)
    status, report = _doctor(lan, 3)
    assert status == 1
    assert any("connection is off" in a for a in report["advice"])  # type: ignore[union-attr]


def test_doctor_alone_on_the_lan_says_nobody_is_visible(vlan: Callable[..., VirtualLan]) -> None:
    lan = vlan(1)
    status, report = _doctor(lan, 1)
    assert status == 1
    assert report["multicast"] is True
    assert any("--connect" in a for a in report["advice"])  # type: ignore[union-attr]
