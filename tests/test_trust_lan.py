"""Roles in a room of strangers, with real processes on a virtual LAN: a late rogue mentor
with a forged reign (tests/rogue_mentor.py, the real node patched), forged adverts sent with
python-zeroconf from a lab host (tests/forge_advert.py), and a rogue broker that tries to
read a help session or learn who raised an anonymous hand."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from lannode import WAIT_S, LanNode, start_nodes, wait_connected
from vlan import reader_for

if TYPE_CHECKING:
    from collections.abc import Callable

    from vlan import VirtualLan

pytestmark = pytest.mark.lan

ROGUE = Path(__file__).with_name("rogue_mentor.py")
FORGE = Path(__file__).with_name("forge_advert.py")


def counters(node: LanNode) -> dict[str, int]:
    node.send(cmd="status")
    return dict(node.wait("status", lambda e: "counters" in e)["counters"])


def until_counted(node: LanNode, name: str, timeout: float = WAIT_S) -> None:
    """Poll a node's drop counters (no event announces them)."""
    deadline = time.monotonic() + timeout
    while counters(node).get(name, 0) < 1:
        assert time.monotonic() < deadline, f"{node.handle}: {name} never counted"
        time.sleep(0.2)


def brokers(node: LanNode) -> list[str]:
    return [e["handle"] for e in node.seen("broker")]


def forge(lan: VirtualLan, host: int, adverts: list[dict[str, Any]]) -> subprocess.Popen[Any]:
    proc = lan.spawn(
        host,
        [sys.executable, str(FORGE), lan.ip(host), "120", json.dumps(adverts)],
        stdout=subprocess.PIPE,
    )
    reader_for(proc.stdout).wait_for(lambda e: e.get("step") == "announced", WAIT_S)
    return proc


def stop(proc: subprocess.Popen[Any]) -> None:
    proc.kill()
    proc.wait(timeout=5)


def rogue(lan: VirtualLan, host: int, tmp: Path, extra: list[str]) -> LanNode:
    return LanNode(
        lan, host, "zed", tmp / "zed", ["--mentor", *extra], python=(sys.executable, str(ROGUE))
    )


def test_a_late_rogue_mentor_with_a_forged_reign_takes_over_nothing(
    vlan: Callable[..., VirtualLan], tmp_path: Path
) -> None:
    lan = vlan(5)
    ann, ben, cat = start_nodes(lan, tmp_path, ["ann", "ben", "cat"], extra={"ann": ["--mentor"]})
    assert wait_connected([ann, ben, cat], expect="ann") == "ann"
    before = {node.handle: brokers(node) for node in (ann, ben, cat)}
    code = ann.seen("authority")[0]["code"]
    zed = rogue(lan, 4, tmp_path, [])
    zed.wait("broker", lambda e: e["self"])  # its own relay, "broker since 1970"
    for student in (ben, cat):
        student.wait("warning", lambda e: e["code"] == "authority_conflict")
        student.wait("warning", lambda e: e["code"] == "mentor_unverified")
        assert [e["mentor"] for e in student.seen("peer_up") if e["handle"] == "zed"] == [False]
    # A newcomer given the room code tries zed's advert first (the best hint), finds no
    # certificate of the room's authority there, and settles with ann.
    dan = LanNode(lan, 5, "dan", tmp_path / "dan", ["--room-code", code])
    deadline = time.monotonic() + WAIT_S
    while brokers(dan)[-1:] != ["ann"]:
        assert time.monotonic() < deadline, f"dan: {brokers(dan)}"
        dan.wait("broker", timeout=WAIT_S)
    for node in (ann, ben, cat):
        assert brokers(node) == before[node.handle], f"{node.handle} moved: {brokers(node)}"
    ben.send(cmd="say", text="the room is still ann's")
    for node in (ann, cat, dan):
        node.wait("public", lambda e: e["text"] == "the room is still ann's")


def test_forged_adverts_neither_evict_a_handle_nor_move_the_room(
    vlan: Callable[..., VirtualLan], tmp_path: Path
) -> None:
    lan = vlan(3)
    ann, ben = start_nodes(lan, tmp_path, ["ann", "ben"], extra={"ann": ["--mentor"]})
    assert wait_connected([ann, ben], expect="ann") == "ann"
    before = {node.handle: brokers(node) for node in (ann, ben)}
    forger = forge(
        lan,
        3,
        [
            {"handle": "ben", "room": "lobby", "started_at": 1.0},  # ben's handle, older
            {  # a better broker than ann, at an address where nothing answers
                "handle": "ghost",
                "room": "lobby",
                "mentor": True,
                "priority": 99,
                "broker_epoch": 99,
                "broker_since": 1.0,
            },
        ],
    )
    try:
        until_counted(ben, "handle_clash")
        for node in (ann, ben):
            until_counted(node, "probe_failed")  # tried the ghost, and stayed
        assert ben.proc.poll() is None
        for node in (ann, ben):
            assert brokers(node) == before[node.handle]
        ann.send(cmd="say", text="ben, still there?")
        ben.wait("public", lambda e: e["text"] == "ben, still there?")
        # Restarted while the forged advert still stands: its profile holds the handle.
        assert ben.quit() == 0
        again = LanNode(lan, 2, "ben", tmp_path / "ben")
        again.wait("warning", lambda e: e["code"] == "handle_claimed")
        again.wait("broker", lambda e: e["handle"] == "ann")
        again.send(cmd="say", text="ben is back")
        ann.wait("public", lambda e: e["text"] == "ben is back")
    finally:
        stop(forger)


def test_a_rogue_broker_reads_no_help_session_and_learns_no_anonymous_handle(
    vlan: Callable[..., VirtualLan], tmp_path: Path
) -> None:
    lan = vlan(3)
    # ann's authority exists (her profile keeps it); she is away when the rogue starts.
    first = LanNode(lan, 1, "ann", tmp_path / "ann", ["--mentor"])
    code = first.wait("authority")["code"]
    assert first.quit() == 0
    zed = rogue(lan, 2, tmp_path, [])
    zed.wait("broker", lambda e: e["self"])
    stu = LanNode(lan, 3, "stu", tmp_path / "stu", ["--room-code", code])
    stu.wait("broker", lambda e: e["handle"] == "zed")
    ann = LanNode(lan, 1, "ann", tmp_path / "ann", ["--mentor"])
    ann.wait("broker", lambda e: e["handle"] == "zed")
    stu.wait("peer_up", lambda e: e["handle"] == "ann" and e["mentor"])
    stu.send(cmd="hand", topic="shy question", anon=True)
    stu.send(cmd="hand", topic="my code")
    shown = stu.wait("hand", lambda e: e["topic"] == "my code")
    stu.wait("hand", lambda e: e["id"] == shown["id"] and e["state"] == "waiting")
    # The rogue claims the hand itself: the student seals nothing to it.
    zed.send(cmd="claim", n=1)
    zed.wait("claimed")
    until_counted(stu, "claim_unverified")
    stu.send(cmd="msg", to="zed", text="my password is hunter2")
    assert stu.wait("error")["code"] == "not_friends"  # no session with zed: a stranger
    assert not [e for e in stu.seen("hand") if e.get("mentor") == "zed"]
    assert counters(stu).get("anon_hand_held", 0) >= 1
    assert zed.quit() == 0
    leaks = [json.loads(line) for line in zed.stderr().splitlines() if line.startswith('{"rogue"')]
    assert [e for e in leaks if e["rogue"] == "hand" and e["anon"]] == []
    assert [e for e in leaks if e["rogue"] == "help_msg"] == []
    assert "hunter2" not in zed.stderr()
