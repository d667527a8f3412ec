"""The LAN, for real: nodes in network namespaces on a bridge, real mDNS and ZeroMQ."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from typing import TYPE_CHECKING

import pytest
from lannode import LanNode, mentored_room, start_nodes, wait_connected, wait_online

from lanchat.core.membership import SETTLE_S

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from vlan import VirtualLan

pytestmark = pytest.mark.lan


def _publics(node: LanNode) -> list[tuple[str, str]]:
    return [(e["from"], e["text"]) for e in node.seen("public")]


def _wait_publics(node: LanNode, count: int, timeout: float = 15.0) -> None:
    while len(node.seen("public")) < count:
        node.wait("public", timeout=timeout)


def _assert_all_once(node: LanNode, prefix: str, count: int, timeout: float) -> None:
    """Wait until `node` shows `count` public texts starting with `prefix`: each once."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = {e["text"] for e in node.seen("public") if e["text"].startswith(prefix)}
        if len(got) == count:
            break
        with contextlib.suppress(TimeoutError):
            node.wait("public", timeout=1)
    got_list = [e["text"] for e in node.seen("public") if e["text"].startswith(prefix)]
    assert len(set(got_list)) == count, f"got {len(set(got_list))} of {count}"
    assert len(got_list) == count  # and none twice


def test_nodes_discover_each_other_and_elect_one_broker(
    vlan: Callable[..., VirtualLan], tmp_path: Path
) -> None:
    lan = vlan(4)
    nodes = start_nodes(lan, tmp_path, ["ann", "ben", "cat", "dan"])
    broker = wait_connected(nodes)
    assert broker in {"ann", "ben", "cat", "dan"}
    selfs = [n.handle for n in nodes if n.seen("broker")[-1]["self"]]
    assert selfs == [broker]
    for node in nodes:
        ready = node.seen("ready")[0]
        assert ready["handle"] == node.handle
        assert len(ready["fingerprint"]) == 24
    nodes[0].send(cmd="who")
    who = nodes[0].wait("who")
    assert sorted(p["handle"] for p in who["peers"]) == ["ben", "cat", "dan"]
    for node in nodes:
        assert node.quit() == 0


def test_mentor_is_preferred_as_broker(vlan: Callable[..., VirtualLan], tmp_path: Path) -> None:
    lan = vlan(3)
    nodes = start_nodes(lan, tmp_path, ["s1", "s2", "teach"], extra={"teach": ["--mentor"]})
    assert wait_connected(nodes, expect="teach") == "teach"
    up = nodes[0].seen("peer_up")
    assert {"handle": "teach", "mentor": True} in [
        {"handle": e["handle"], "mentor": e["mentor"]} for e in up
    ]


def test_public_messages_reach_everyone_exactly_once(
    vlan: Callable[..., VirtualLan], tmp_path: Path
) -> None:
    lan = vlan(3)
    nodes = start_nodes(lan, tmp_path, ["ann", "ben", "cat"])
    wait_connected(nodes)
    for node in nodes:
        for i in range(15):
            node.send(cmd="say", text=f"{node.handle} {i}")
    for node in nodes:
        _wait_publics(node, 30)
        got = _publics(node)
        expected = {
            (n.handle, f"{n.handle} {i}") for n in nodes if n is not node for i in range(15)
        }
        assert len(got) == 30
        assert set(got) == expected
        ids = [e["id"] for e in node.seen("public")]
        assert len(set(ids)) == len(ids)
        # Each author's messages arrive in the order they were sent.
        for other in nodes:
            mine = [int(t.split()[1]) for f, t in got if f == other.handle]
            assert mine == sorted(mine)
    sent = nodes[0].seen("sent")
    while len(sent) < 15:
        nodes[0].wait("sent")
        sent = nodes[0].seen("sent")
    assert len(sent) == 15


def test_broker_killed_mid_stream_loses_nothing(
    vlan: Callable[..., VirtualLan], tmp_path: Path
) -> None:
    lan = vlan(4)
    nodes = start_nodes(lan, tmp_path, ["ann", "ben", "cat", "dan"])
    broker_handle = wait_connected(nodes)
    broker = next(n for n in nodes if n.handle == broker_handle)
    live = [n for n in nodes if n is not broker]
    senders = live[:2]
    for i in range(10):
        for s in senders:
            s.send(cmd="say", text=f"{s.handle} {i}")
    # Let some of the first burst through, then pull the plug on the broker.
    live[2].wait("public")
    broker.kill()
    for i in range(10, 30):
        for s in senders:
            s.send(cmd="say", text=f"{s.handle} {i}")
    new_brokers = set()
    for node in live:
        ev = node.wait("broker", lambda e: e["handle"] != broker_handle, timeout=10)
        new_brokers.add(ev["handle"])
    assert len(new_brokers) == 1
    for node in live:
        expected = {
            (s.handle, f"{s.handle} {i}") for s in senders if s is not node for i in range(30)
        }
        _wait_publics(node, len(expected))
        got = _publics(node)
        assert len(got) == len(expected), "a message was shown twice"
        assert set(got) == expected
        node.wait("peer_down", lambda e: e["handle"] == broker_handle)


def test_vanished_peer_is_noticed_and_seen_again_when_its_link_returns(
    vlan: Callable[..., VirtualLan], tmp_path: Path
) -> None:
    lan = vlan(3)
    nodes = start_nodes(lan, tmp_path, ["ann", "ben", "cat"], extra={"ann": ["--mentor"]})
    assert wait_connected(nodes, expect="ann") == "ann"
    lan.link_down(3, side="switch")
    nodes[0].wait("peer_down", lambda e: e["handle"] == "cat", timeout=6)
    nodes[1].wait("peer_down", lambda e: e["handle"] == "cat", timeout=6)
    lan.link_up(3, side="switch")
    nodes[0].wait("peer_up", lambda e: e["handle"] == "cat", timeout=10)
    nodes[2].wait("broker", lambda e: e["handle"] == "ann", timeout=10)
    nodes[2].send(cmd="say", text="back again")
    nodes[1].wait("public", lambda e: e["text"] == "back again")


def test_host_side_link_down_and_up(vlan: Callable[..., VirtualLan], tmp_path: Path) -> None:
    lan = vlan(3)
    nodes = start_nodes(lan, tmp_path, ["ann", "ben", "cat"], extra={"ann": ["--mentor"]})
    assert wait_connected(nodes, expect="ann") == "ann"
    lan.link_down(2, side="host")
    # Ben is told plainly that his network is down, not that he became a broker.
    offline = nodes[1].wait("status", lambda e: e["state"] == "offline", timeout=5)
    assert "network is down" in offline["text"]
    nodes[0].wait("peer_down", lambda e: e["handle"] == "ben", timeout=6)
    lan.link_up(2, side="host")
    nodes[1].wait("status", lambda e: "network is back" in e["text"], timeout=5)
    nodes[0].wait("peer_up", lambda e: e["handle"] == "ben", timeout=10)
    nodes[1].send(cmd="say", text="ben is back")
    nodes[2].wait("public", lambda e: e["text"] == "ben is back")


def _switch(lan: VirtualLan, *args: str) -> None:
    subprocess.run(["ip", "-n", lan.switch_ns, *args], check=True, capture_output=True)


def test_two_partitions_with_a_broker_each_merge_into_one(
    vlan: Callable[..., VirtualLan], tmp_path: Path
) -> None:
    lan = vlan(4)
    # A second switch for hosts 3 and 4: two LANs that cannot hear each other.
    _switch(lan, "link", "add", "br1", "type", "bridge", "mcast_snooping", "0")
    _switch(lan, "link", "set", "br1", "up")
    for port in ("p3", "p4"):
        _switch(lan, "link", "set", port, "master", "br1")
    nodes = start_nodes(lan, tmp_path, ["ann", "ben", "cat", "dan"])
    left, right = nodes[:2], nodes[2:]
    assert wait_connected(left) in {"ann", "ben"}
    assert wait_connected(right) in {"cat", "dan"}
    # Plug the two switches back into one.
    for port in ("p3", "p4"):
        _switch(lan, "link", "set", port, "master", "br0")
    finals = set()
    for node in nodes:
        wait_online(node, {n.handle for n in nodes} - {node.handle}, timeout=15)
        finals.add(node.seen("broker")[-1]["handle"])
    assert len(finals) == 1
    nodes[0].send(cmd="say", text="merged")
    for node in nodes[1:]:
        node.wait("public", lambda e: e["text"] == "merged")


def test_duplicate_handle_is_refused(vlan: Callable[..., VirtualLan], tmp_path: Path) -> None:
    lan = vlan(2)
    first = LanNode(lan, 1, "ann", tmp_path / "ann")
    first.wait("broker")
    second = LanNode(lan, 2, "Ann", tmp_path / "ann2")
    err = second.wait("error", lambda e: e["code"] == "handle_taken")
    assert "ann" in err["message"].lower()
    assert second.proc.wait(timeout=10) == 2
    assert first.proc.poll() is None


def test_connect_fallback_joins_a_broker_directly(
    vlan: Callable[..., VirtualLan], tmp_path: Path
) -> None:
    lan = vlan(2)
    ann = LanNode(lan, 1, "ann", tmp_path / "ann", ["--room", "annex"])
    ann.wait("broker")
    ben = LanNode(lan, 2, "ben", tmp_path / "ben", ["--room", "annex", "--connect", lan.ip(1)])
    ev = ben.wait("broker")
    assert ev["handle"] == "ann"
    assert ev["self"] is False
    status = ben.wait("status", lambda e: e["state"] == "connected")
    assert "--connect" in status["text"]
    ben.send(cmd="say", text="via connect")
    ann.wait("public", lambda e: e["text"] == "via connect")


def test_bad_commands_get_errors_and_the_node_keeps_running(
    vlan: Callable[..., VirtualLan], tmp_path: Path
) -> None:
    lan = vlan(1)
    ann = LanNode(lan, 1, "ann", tmp_path / "ann")
    ann.wait("broker")
    ann.send_raw(b"this is not json\n")
    ann.send_raw(b'{"cmd": "dance"}\n')
    ann.send_raw(b'{"cmd": "say"}\n')
    ann.send_raw(b'{"cmd": "say", "text": "' + b"x" * 5000 + b'"}\n')
    ann.send_raw(b"\xff\xfe binary\n")
    ann.send_raw(b"[1, 2]\n")
    for _ in range(6):
        assert ann.wait("error")["code"] == "bad_command"
    ann.send(cmd="who")
    assert ann.wait("who")["peers"] == []
    assert ann.quit() == 0


def test_second_instance_on_the_same_profile_fails_clearly(
    vlan: Callable[..., VirtualLan], tmp_path: Path
) -> None:
    lan = vlan(1)
    ann = LanNode(lan, 1, "ann", tmp_path / "ann")
    ann.wait("ready")
    again = LanNode(lan, 1, "ann", tmp_path / "ann")
    err = again.wait("error")
    assert err["code"] == "profile_locked"
    assert again.proc.wait(timeout=10) == 2
    assert ann.proc.poll() is None


def test_a_mentor_arriving_while_the_broker_settles_takes_over_without_loss(
    vlan: Callable[..., VirtualLan], tmp_path: Path
) -> None:
    lan = vlan(3)
    students = start_nodes(lan, tmp_path, ["s1", "s2"])
    first = wait_connected(students)
    teach = LanNode(lan, 3, "teach", tmp_path / "teach", ["--mentor"])
    for node in students:
        node.send(cmd="say", text=f"{node.handle} during handover")
    for node in [*students, teach]:
        node.wait("broker", lambda e: e["handle"] == "teach")
    assert first != "teach"
    for node in students:
        other = next(n for n in students if n is not node)
        node.wait("public", lambda e, o=other: e["text"] == f"{o.handle} during handover")


def test_once_settled_a_running_broker_is_not_preempted(
    vlan: Callable[..., VirtualLan], tmp_path: Path
) -> None:
    lan = vlan(2)
    s1 = LanNode(lan, 1, "s1", tmp_path / "s1")
    s1.wait("broker")
    time.sleep(SETTLE_S + 0.2)  # the rule under test is about elapsed time
    teach = LanNode(lan, 2, "teach", tmp_path / "teach", ["--mentor"])
    assert teach.wait("broker")["handle"] == "s1"
    with pytest.raises(TimeoutError):
        teach.wait("broker", timeout=1.5)


def test_the_same_handle_taken_at_the_same_moment_leaves_exactly_one(
    vlan: Callable[..., VirtualLan], tmp_path: Path
) -> None:
    lan = vlan(2)
    twins = [LanNode(lan, i, "ann", tmp_path / f"ann{i}") for i in (1, 2)]
    # Neither saw the other before registering; whichever gives way says so and exits 2.
    deadline = time.monotonic() + 15
    losers: list[LanNode] = []
    while not losers and time.monotonic() < deadline:
        for twin in twins:
            with contextlib.suppress(TimeoutError):
                twin.wait("error", lambda e: e["code"] == "handle_taken", timeout=0.5)
                losers.append(twin)
    assert len(losers) == 1, f"both kept the same handle: {[t.events.seen for t in twins]}"
    assert losers[0].proc.wait(timeout=10) == 2
    winner = next(t for t in twins if t is not losers[0])
    assert winner.proc.poll() is None


def test_a_late_joiner_sees_recent_public_messages_once(
    vlan: Callable[..., VirtualLan], tmp_path: Path
) -> None:
    lan = vlan(3)
    early = start_nodes(lan, tmp_path, ["ann", "ben"])
    wait_connected(early)
    for i in range(5):
        early[0].send(cmd="say", text=f"before you came {i}")
    early[1].wait("public", lambda e: e["text"] == "before you came 4")
    late = LanNode(lan, 3, "cat", tmp_path / "cat")
    for i in range(5):
        late.wait("public", lambda e, i=i: e["text"] == f"before you came {i}")
    early[0].send(cmd="say", text="welcome cat")
    late.wait("public", lambda e: e["text"] == "welcome cat")
    texts = [e["text"] for e in late.seen("public")]
    assert len(texts) == len(set(texts)) == 6


def test_a_receiver_stopped_for_seconds_catches_up_on_everything(
    vlan: Callable[..., VirtualLan], tmp_path: Path
) -> None:
    lan = vlan(3)
    ann, ben, cat = mentored_room(lan, tmp_path)
    cat.proc.send_signal(signal.SIGSTOP)  # a frozen laptop, a process that falls behind
    try:
        for i in range(1500):
            ben.send(cmd="say", text=f"while you slept {i}")
        ann.wait("public", lambda e: e["text"] == "while you slept 1499", timeout=30)
        time.sleep(3)  # the rule under test: away longer than the heartbeat timeout
    finally:
        cat.proc.send_signal(signal.SIGCONT)
    _assert_all_once(cat, "while you slept", 1500, timeout=30)


def test_a_node_cut_off_silently_rejoins_and_catches_up_on_what_it_missed(
    vlan: Callable[..., VirtualLan], tmp_path: Path
) -> None:
    lan = vlan(3)
    ann, ben, cat = mentored_room(lan, tmp_path)
    # Its packets vanish and its carrier stays up: only heartbeats can tell.
    lan.link_down(3, side="silent")
    cat.wait("broker", lambda e: e["self"])  # alone: the broker of a room of one
    ann.wait("peer_down", lambda e: e["handle"] == "cat")
    # More relays than a newcomer asks for (one each: every text waits for the one
    # before it to be acknowledged), so only an exact catch-up gets them all.
    missed = 250
    for i in range(missed):
        ben.send(cmd="say", text=f"while you were away {i}")
        ben.wait("sent")
    ann.wait("public", lambda e: e["text"] == f"while you were away {missed - 1}", timeout=30)
    lan.link_up(3, side="silent")
    cat.wait("broker", lambda e: e["handle"] == "ann")
    ann.wait("peer_up", lambda e: e["handle"] == "cat")
    _assert_all_once(cat, "while you were away", missed, timeout=20)
