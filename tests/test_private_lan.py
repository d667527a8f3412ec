"""Private chat on a real virtual LAN: consent, encryption, pinning, persistence."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from lannode import LanNode, mentored_room, start_nodes, wait_connected

if TYPE_CHECKING:
    from collections.abc import Callable

    from vlan import VirtualLan

pytestmark = pytest.mark.lan


def befriend(a: LanNode, b: LanNode) -> None:
    a.send(cmd="request", to=b.handle)
    b.wait("request", lambda e: e["from"] == a.handle)
    b.send(cmd="accept", **{"from": a.handle})
    a.wait("accepted", lambda e: e["by"] == b.handle)


def wait_counter(node: LanNode, name: str, at_least: int, timeout: float = 10.0) -> None:
    """Ask for the node's drop counters until ``name`` reached ``at_least``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        node.send(cmd="status")
        counters = node.wait("status", lambda e: "counters" in e)["counters"]
        if counters.get(name, 0) >= at_least:
            return
        with contextlib.suppress(TimeoutError):
            node.wait("public", timeout=0.2)  # anything arriving; else ask again shortly
    raise AssertionError(f"{node.handle}: counter {name!r} never reached {at_least}")


def privates(node: LanNode, sender: str) -> list[str]:
    return [e["text"] for e in node.seen("private") if e["from"] == sender]


def wait_privates(node: LanNode, sender: str, count: int, timeout: float = 15.0) -> list[str]:
    while len(privates(node, sender)) < count:
        node.wait("private", timeout=timeout)
    return privates(node, sender)


def test_consent_cycle_request_reject_again_accept_block_unblock(
    vlan: Callable[..., VirtualLan], tmp_path: Path
) -> None:
    lan = vlan(2)
    ann, ben = start_nodes(lan, tmp_path, ["ann", "ben"])
    wait_connected([ann, ben])
    # Not friends yet: a message is refused locally and never sent.
    ann.send(cmd="msg", to="ben", text="too early")
    assert ann.wait("error")["code"] == "not_friends"
    # Request -> both see it pending -> reject -> ann may ask again.
    ann.send(cmd="request", to="ben")
    ben.wait("request", lambda e: e["from"] == "ann")
    ann.send(cmd="friends")
    assert ann.wait("friends")["friends"][0]["state"] == "pending_out"
    ben.send(cmd="friends")
    assert ben.wait("friends")["friends"][0]["state"] == "pending_in"
    ben.send(cmd="reject", **{"from": "ann"})
    ann.wait("rejected", lambda e: e["by"] == "ben")
    ann.send(cmd="request", to="ben")
    ben.wait("request", lambda e: e["from"] == "ann")
    ben.send(cmd="accept", **{"from": "ann"})
    ann.wait("accepted", lambda e: e["by"] == "ben")
    ann.send(cmd="msg", to="ben", text="hi ben")
    ben.send(cmd="msg", to="ann", text="hi ann")
    assert ben.wait("private")["text"] == "hi ben"
    assert ann.wait("private")["text"] == "hi ann"
    # Block: nothing from ann reaches ben, silently.
    ben.send(cmd="block", handle="ann")
    ben.send(cmd="friends")
    assert ben.wait("friends")["friends"][0]["state"] == "blocked"
    ann.send(cmd="msg", to="ben", text="can you hear me")
    ann.send(cmd="say", text="public while blocked")
    ann.wait("sent")
    # Both reached ben's node and were dropped there, silently.
    wait_counter(ben, "private_from_non_friend", 1)
    wait_counter(ben, "blocked", 1)
    # Unblock: ben is back to "none" with ann. Ann's next message is refused by ben's
    # node with a reject, so ann's state follows and she may ask again.
    ben.send(cmd="unblock", handle="ann")
    ben.send(cmd="friends")
    assert ben.wait("friends")["friends"] == []
    ann.send(cmd="msg", to="ben", text="are we still friends")
    ann.wait("rejected", lambda e: e["by"] == "ben")
    ann.send(cmd="request", to="ben")
    ben.wait("request", lambda e: e["from"] == "ann")
    texts = [e["text"] for e in ben.seen("private")] + [e["text"] for e in ben.seen("public")]
    assert "can you hear me" not in texts
    assert "public while blocked" not in texts
    assert "are we still friends" not in texts


def test_bad_private_commands_get_clear_errors(
    vlan: Callable[..., VirtualLan], tmp_path: Path
) -> None:
    lan = vlan(2)
    ann, ben = start_nodes(lan, tmp_path, ["ann", "ben"])
    wait_connected([ann, ben])
    cases = [
        ({"cmd": "request", "to": "nobody_here"}, "unknown_handle"),
        ({"cmd": "request", "to": "ann"}, "bad_command"),
        ({"cmd": "request", "to": "bad handle!"}, "bad_command"),
        ({"cmd": "accept", "from": "ben"}, "bad_command"),
        ({"cmd": "msg", "to": "ben", "text": ""}, "bad_command"),
    ]
    for cmd, code in cases:
        ann.send(**cmd)
        err = ann.wait("error")
        assert err["code"] == code, (cmd, err)
    ann.send(cmd="request", to="ben")
    ann.send(cmd="request", to="ben")
    assert ann.wait("error")["code"] == "rate_limited"
    ben.wait("request")
    ann.send(cmd="who")
    assert [p["handle"] for p in ann.wait("who")["peers"]] == ["ben"]


def test_no_plaintext_on_the_wire(vlan: Callable[..., VirtualLan], tmp_path: Path) -> None:
    if shutil.which("tcpdump") is None:
        pytest.skip("tcpdump is not installed (CI installs it)")
    lan = vlan(3)
    pcap = tmp_path / "lan.pcap"
    cap = subprocess.Popen(
        # Every switch port ("any"): a capture on the bridge device itself would miss
        # the unicast frames the bridge forwards between ports.
        [
            "ip",
            "netns",
            "exec",
            lan.switch_ns,
            "tcpdump",
            "-Z",
            "root",
            "--immediate-mode",
            "-i",
            "any",
            "-U",
            "-w",
            str(pcap),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert cap.stderr is not None
        for line in cap.stderr:  # "listening on any ..." once the capture runs
            if b"listening on" in line:
                break
        nodes = start_nodes(lan, tmp_path, ["alice", "bob", "carol"])
        wait_connected(nodes)
        alice, bob, _carol = nodes
        befriend(alice, bob)
        alice.send(cmd="msg", to="bob", text="SECRET-PRIVATE-4711")
        bob.wait("private", lambda e: e["text"] == "SECRET-PRIVATE-4711")
        bob.send(cmd="msg", to="alice", text="SECRET-REPLY-0815")
        alice.wait("private", lambda e: e["text"] == "SECRET-REPLY-0815")
        alice.send(cmd="say", text="PUBLIC-BUT-ENCRYPTED-42")
        bob.wait("public", lambda e: e["text"] == "PUBLIC-BUT-ENCRYPTED-42")
    finally:
        cap.send_signal(signal.SIGINT)
        cap.wait(timeout=10)
        if cap.stderr is not None:
            cap.stderr.close()
    data = pcap.read_bytes()
    # The capture did see the LAN: mDNS (plaintext by design) carries the handles, and
    # the ZeroMQ greetings name their security mechanism in the clear.
    assert b"alice" in data
    assert b"CURVE" in data
    assert len(data) > 10_000
    for secret in (b"SECRET-PRIVATE-4711", b"SECRET-REPLY-0815", b"PUBLIC-BUT-ENCRYPTED-42"):
        assert secret not in data


def test_changed_key_for_a_known_handle_is_flagged_and_messages_held_back(
    vlan: Callable[..., VirtualLan], tmp_path: Path
) -> None:
    lan = vlan(3)
    ann, ben = LanNode(lan, 1, "ann", tmp_path / "ann", ["--mentor"]), None
    ben = LanNode(lan, 2, "ben", tmp_path / "ben")
    wait_connected([ann, ben])
    befriend(ann, ben)
    assert ben.quit() == 0
    # Someone else takes the handle "ben" with a new key.
    fake = LanNode(lan, 3, "ben", tmp_path / "fake-ben")
    warn = ann.wait("warning", lambda e: e["code"] == "key_changed")
    assert warn["handle"] == "ben"
    ann.send(cmd="msg", to="ben", text="for the real ben only")
    fake.wait("broker")
    ann.send(cmd="friends")
    friends = ann.wait("friends")["friends"]
    assert friends[0]["handle"] == "ben"
    assert friends[0]["online"] is False  # the friend's key is not the one online
    with pytest.raises(TimeoutError):
        fake.wait("private", timeout=3)
    with pytest.raises(TimeoutError):
        fake.wait("request", timeout=0.1)


def test_a_new_key_trusted_by_fingerprint_starts_as_a_stranger(
    vlan: Callable[..., VirtualLan], tmp_path: Path
) -> None:
    lan = vlan(3)
    ann = LanNode(lan, 1, "ann", tmp_path / "ann", ["--mentor"])
    ben = LanNode(lan, 2, "ben", tmp_path / "ben")
    wait_connected([ann, ben])
    befriend(ann, ben)
    assert ben.quit() == 0
    # ben reinstalled: same handle, new key. ann holds a message for the old key.
    ben2 = LanNode(lan, 3, "ben", tmp_path / "ben-reinstalled")
    new_fingerprint = ben2.wait("ready")["fingerprint"]
    ann.wait("warning", lambda e: e["code"] == "key_changed")
    ann.send(cmd="msg", to="ben", text="sealed for the old key")
    ann.send(cmd="trust", handle="ben", fingerprint="0000-0000-0000-0000-0000")
    assert ann.wait("error")["code"] == "fingerprint_mismatch"
    ann.send(cmd="trust", handle="ben", fingerprint=new_fingerprint.upper())
    trusted = ann.wait("trusted")
    assert (trusted["handle"], trusted["fingerprint"]) == ("ben", new_fingerprint)
    # Not a friend yet: the old friendship stays with the old key.
    ann.send(cmd="msg", to="ben", text="too early")
    assert ann.wait("error")["code"] == "not_friends"
    befriend(ann, ben2)
    ann.send(cmd="msg", to="ben", text="hello new ben")
    got = ben2.wait("private")
    assert got["text"] == "hello new ben"
    with pytest.raises(TimeoutError):
        ben2.wait("private", lambda e: e["text"] == "sealed for the old key", timeout=2)


def test_offline_request_and_message_are_delivered_later_and_survive_restart(
    vlan: Callable[..., VirtualLan], tmp_path: Path
) -> None:
    lan = vlan(3)
    ann, ben, cat = mentored_room(lan, tmp_path)
    befriend(ann, ben)
    ann.send(cmd="msg", to="ben", text="before restart")
    ben.wait("private", lambda e: e["text"] == "before restart")
    assert ben.quit() == 0
    assert cat.quit() == 0
    ann.wait("peer_down", lambda e: e["handle"] == "cat")
    # Both targets offline: the request and the messages wait at ann, durably.
    ann.send(cmd="request", to="cat")
    for i in range(5):
        ann.send(cmd="msg", to="ben", text=f"offline {i}")
    ann.send(cmd="history", limit=10, **{"with": "ben"})
    assert len(ann.wait("history")["messages"]) == 6
    ben2 = LanNode(lan, 2, "ben", tmp_path / "ben")
    cat2 = LanNode(lan, 3, "cat", tmp_path / "cat")
    cat2.wait("request", lambda e: e["from"] == "ann")
    assert wait_privates(ben2, "ann", 5) == [f"offline {i}" for i in range(5)]
    # Friends and history came back from the profile.
    ben2.send(cmd="friends")
    friends = ben2.wait("friends")["friends"]
    assert [(f["handle"], f["state"]) for f in friends] == [("ann", "friend")]
    ben2.send(cmd="history", limit=50, **{"with": "ann"})
    texts = [m["text"] for m in ben2.wait("history")["messages"]]
    assert texts == ["before restart"] + [f"offline {i}" for i in range(5)]


def test_broker_killed_during_a_private_exchange_loses_nothing(
    vlan: Callable[..., VirtualLan], tmp_path: Path
) -> None:
    lan = vlan(3)
    nodes = start_nodes(lan, tmp_path, ["boss", "ann", "ben"], extra={"boss": ["--mentor"]})
    boss, ann, ben = nodes
    assert wait_connected(nodes, expect="boss") == "boss"
    befriend(ann, ben)
    for i in range(10):
        ann.send(cmd="msg", to="ben", text=f"a{i}")
        ben.send(cmd="msg", to="ann", text=f"b{i}")
    ben.wait("private")
    boss.kill()
    for i in range(10, 25):
        ann.send(cmd="msg", to="ben", text=f"a{i}")
        ben.send(cmd="msg", to="ann", text=f"b{i}")
    assert wait_privates(ben, "ann", 25) == [f"a{i}" for i in range(25)]
    assert wait_privates(ann, "ben", 25) == [f"b{i}" for i in range(25)]
    ann.send(cmd="say", text="still here")
    ben.wait("public", lambda e: e["text"] == "still here")


def test_status_receipts_and_typing_flow_end_to_end(
    vlan: Callable[..., VirtualLan], tmp_path: Path
) -> None:
    lan = vlan(2)
    ann, ben = start_nodes(lan, tmp_path, ["ann", "ben"])
    wait_connected([ann, ben])
    befriend(ann, ben)
    ann.send(cmd="msg", to="ben", text="did you get this")
    got = ben.wait("private", lambda e: e["text"] == "did you get this")
    assert ann.wait("delivered")["id"] == got["id"]
    # A headless client has "shown" what it printed: a read receipt comes back.
    read = ann.wait("read")
    assert read["id"] == got["id"]
    assert read["by"] == "ben"
    # Privacy: ben stops telling what he read.
    ben.send(cmd="set", receipts=False)
    ben.wait("settings", lambda e: e["receipts"] is False)
    ann.send(cmd="msg", to="ben", text="second")
    second = ben.wait("private", lambda e: e["text"] == "second")
    assert ann.wait("delivered", lambda e: e["id"] == second["id"])
    with pytest.raises(TimeoutError):
        ann.wait("read", timeout=1.5)
    ann.send(cmd="typing", to="ben")
    assert ben.wait("typing")["from"] == "ann"
    ben.send(cmd="status", set="away", text="lunch")
    change = ann.wait("peer_status", lambda e: e["handle"] == "ben")
    assert (change["status"], change["text"]) == ("away", "lunch")
    ann.send(cmd="who")
    (peer,) = ann.wait("who")["peers"]
    assert (peer["status"], peer["status_text"]) == ("away", "lunch")


def test_files_go_peer_to_peer_intact_and_a_room_share_reaches_everyone(
    vlan: Callable[..., VirtualLan], tmp_path: Path
) -> None:
    lan = vlan(3)
    ann, ben, cat = mentored_room(lan, tmp_path)
    befriend(ben, cat)
    data = os.urandom(50 * 1024 * 1024 + 17)
    src = tmp_path / "dataset.bin"
    src.write_bytes(data)
    # Private: ben -> cat (a friend); the offer names file, size and sender.
    broker_bytes_before = _interface_bytes(lan, 1)
    ben.send(cmd="send", to="cat", path=str(src))
    offer = cat.wait("file_offer", timeout=30)
    assert (offer["from"], offer["name"], offer["size"], offer["shared"]) == (
        "ben",
        "dataset.bin",
        len(data),
        False,
    )
    cat.send(cmd="accept_file", id=offer["id"])
    done = cat.wait("file_done", lambda e: e["id"] == offer["id"], timeout=60)
    # Peer to peer: the broker (ann) carried only the offer, not the 50 MB.
    broker_bytes = _interface_bytes(lan, 1) - broker_bytes_before
    assert broker_bytes < len(data) // 50, broker_bytes
    landed = tmp_path / "cat" / "downloads" / "dataset.bin"
    assert done["path"] == str(landed)
    assert hashlib.sha256(landed.read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest()
    # Not a friend of ann: a private send to her is refused before anything happens.
    ben.send(cmd="send", to="ann", path=str(src))
    assert ben.wait("error")["code"] == "not_friends"
    # A room share reaches everyone; declining leaves nothing on disk.
    slides = tmp_path / "slides.pdf"
    slides.write_bytes(b"%PDF-1.4 not really" * 1000)
    ann.send(cmd="share", path=str(slides))
    for node in (ben, cat):
        got = node.wait("file_offer", lambda e: e["name"] == "slides.pdf")
        assert got["shared"] is True
    ben_offer = ben.seen("file_offer")[-1]
    ben.send(cmd="accept_file", id=ben_offer["id"])
    ben.wait("file_done", lambda e: e["id"] == ben_offer["id"], timeout=30)
    assert (tmp_path / "ben" / "downloads" / "slides.pdf").read_bytes() == slides.read_bytes()
    cat_offer = cat.seen("file_offer")[-1]
    cat.send(cmd="decline_file", id=cat_offer["id"])
    cat.wait("file_failed", lambda e: e["id"] == cat_offer["id"])
    assert sorted(p.name for p in (tmp_path / "cat" / "downloads").iterdir()) == ["dataset.bin"]


def _interface_bytes(lan: VirtualLan, host: int) -> int:
    """Bytes received plus sent on a host's LAN interface so far."""
    out = lan.run(
        host,
        [
            "cat",
            "/sys/class/net/eth0/statistics/rx_bytes",
            "/sys/class/net/eth0/statistics/tx_bytes",
        ],
    ).stdout.split()
    return int(out[0]) + int(out[1])


def test_an_interrupted_transfer_resumes_after_the_link_returns(
    vlan: Callable[..., VirtualLan], tmp_path: Path
) -> None:
    lan = vlan(3)
    _ann, ben, cat = mentored_room(lan, tmp_path)
    befriend(ben, cat)
    # A 200 Mbit/s port towards cat (a Wi-Fi-like link), so the transfer takes seconds.
    subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            lan.switch_ns,
            "tc",
            "qdisc",
            "add",
            "dev",
            "p3",
            "root",
            "tbf",
            "rate",
            "200mbit",
            "burst",
            "256kb",
            "latency",
            "50ms",
        ],
        check=True,
    )
    data = os.urandom(60 * 1024 * 1024)
    src = tmp_path / "big.bin"
    src.write_bytes(data)
    ben.send(cmd="send", to="cat", path=str(src))
    offer = cat.wait("file_offer", timeout=60)
    cat.send(cmd="accept_file", id=offer["id"])
    cat.wait("file_progress", lambda e: 0 < e["done"] < len(data), timeout=30)
    lan.link_down(3, side="switch")
    cat.wait("peer_down", timeout=10)  # the link is really gone for a while
    assert not cat.seen("file_done"), "finished before the link went down: nothing to resume"
    lan.link_up(3, side="switch")
    done = cat.wait("file_done", lambda e: e["id"] == offer["id"], timeout=90)
    landed = Path(done["path"])
    assert hashlib.sha256(landed.read_bytes()).digest() == hashlib.sha256(data).digest()
