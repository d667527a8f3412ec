"""Floods from a hostile process on a virtual LAN: the victim keeps answering, its state
file stays small, and a blocked author never shows (``pytest -s`` prints the figures)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from lannode import LanNode, start_nodes, wait_connected, wait_online
from vlan import reader_for

from lanchat.store import STATE_NAME

if TYPE_CHECKING:
    from collections.abc import Callable

    from vlan import VirtualLan

pytestmark = pytest.mark.lan
FLOOD = Path(__file__).with_name("flood_client.py")
ANSWER_MAX_S = 0.5
BROKER_ANSWER_MAX_S = 2.0
FLOOD_S_MAX = 12.0  # planned for 5 s; a rogue starved of CPU (a busy machine) takes longer
STATE_MAX_BYTES = 100_000
PROBE_EVERY_S = 0.05


def flood(
    lan: VirtualLan, lan_tmp: Path, mode: str, victim: str, count: int, seconds: float
) -> Any:
    with (lan_tmp / f"flood-{mode}.stderr").open("wb") as err:  # the child has its own copy
        return lan.spawn(
            3,
            [
                sys.executable,
                str(FLOOD),
                lan.ip(1),
                "47100",
                mode,
                victim,
                str(count),
                str(seconds),
                lan.ip(3),
            ],
            stdout=subprocess.PIPE,
            stderr=err,
            cwd=str(FLOOD.parent.parent),
        )


def probe_until_done(nodes: list[LanNode], rogue: Any, after_s: float = 2.0) -> list[list[float]]:
    """Ask each node ``friends`` again and again until ``after_s`` after the rogue is done:
    how long each answer took, as the user would wait for it; the state file's size too."""
    waits: list[list[float]] = [[] for _ in nodes]
    end = None
    while end is None or time.monotonic() < end:
        if end is None and rogue.poll() is not None:
            end = time.monotonic() + after_s
        for node, node_waits in zip(nodes, waits, strict=True):
            asked = time.monotonic()
            node.send(cmd="friends")
            node.wait("friends", timeout=10)
            node_waits.append(time.monotonic() - asked)
            assert state_bytes(node) < STATE_MAX_BYTES
        time.sleep(PROBE_EVERY_S)  # a user's pace, not a synchronisation
    return waits


def state_bytes(node: LanNode) -> int:
    return (node.profile / STATE_NAME).stat().st_size


def test_three_thousand_requests_from_throwaway_identities(
    vlan: Callable[..., VirtualLan], tmp_path: Path
) -> None:
    lan = vlan(3)
    ann, ben = start_nodes(lan, tmp_path, ["ann", "ben"], extra={"ann": ["--mentor"]})
    assert wait_connected([ann, ben], expect="ann") == "ann"
    rogue = flood(lan, tmp_path, "requests", "ben", 3_000, 5.0)
    steps = reader_for(rogue.stdout)
    assert steps.wait_for(lambda s: s["step"] == "rebind", 30)["answer"] == "identity_bound"
    steps.wait_for(lambda s: s["step"] == "flooding", 60)
    waits = probe_until_done([ben, ann], rogue)
    flooded = steps.wait_for(lambda s: s["step"] == "flooded", 10)
    assert rogue.wait(timeout=30) == 0
    ann.send(cmd="status")
    counters = ann.wait("status", lambda e: "counters" in e)["counters"]
    requests = ben.seen("request")
    print(
        f"\n{flooded['sent']} throwaway requests in {flooded['seconds']} s: victim answered "
        f"{len(waits[0])} commands, slowest {max(waits[0]) * 1000:.0f} ms (broker's node "
        f"{max(waits[1]) * 1000:.0f} ms); requests shown {len(requests)}; state "
        f"{state_bytes(ben):,} bytes; broker {counters}"
    )
    assert flooded["seconds"] <= FLOOD_S_MAX
    assert max(waits[0]) < ANSWER_MAX_S
    # The broker's process also does every CURVE handshake of 3,000 connections (libzmq's
    # I/O thread) on a shared 2-core machine: it answers, but is not held to the victim's
    # bound; a cost per newcomer that grew with the room would show here.
    assert max(waits[1]) < BROKER_ANSWER_MAX_S
    assert counters.get("hello_rebind", 0) == 1
    assert all(e["from"] != "ben" for e in requests)
    # The room still works.
    ann.send(cmd="say", text="still here")
    ben.wait("public", lambda e: e["text"] == "still here", timeout=20)


def test_ten_thousand_hands_and_file_offers_from_one_node(
    vlan: Callable[..., VirtualLan], tmp_path: Path
) -> None:
    lan = vlan(3)
    ann, ben = start_nodes(lan, tmp_path, ["ann", "ben"], extra={"ann": ["--mentor"]})
    assert wait_connected([ann, ben], expect="ann") == "ann"
    rogue = flood(lan, tmp_path, "hands", "ann", 10_000, 5.0)
    steps = reader_for(rogue.stdout)
    steps.wait_for(lambda s: s["step"] == "flooding", 60)
    waits = probe_until_done([ann, ben], rogue)
    flooded = steps.wait_for(lambda s: s["step"] == "flooded", 10)
    assert rogue.wait(timeout=30) == 0
    # The most hands the mentor's queue showed at any time during the flood.
    queued = max((len(e["entries"]) for e in ann.seen("queue")), default=0)
    ann.send(cmd="status")
    counters = ann.wait("status", lambda e: "counters" in e)["counters"]
    offers = ben.seen("file_offer")
    print(
        f"\n{flooded['sent']} hands + {flooded['sent']} shared offers in "
        f"{flooded['seconds']} s: slowest answer mentor {max(waits[0]) * 1000:.0f} ms, "
        f"student {max(waits[1]) * 1000:.0f} ms; hands queued {queued} at most, "
        f"offers shown {len(offers)}; state {state_bytes(ann):,} / {state_bytes(ben):,} "
        f"bytes; broker {counters}"
    )
    assert flooded["seconds"] <= FLOOD_S_MAX
    assert max(waits[0]) < ANSWER_MAX_S
    assert max(waits[1]) < ANSWER_MAX_S
    assert 1 <= queued <= 3
    assert len(offers) <= 20
    assert counters.get("hand_budget", 0) > 9_000
    assert counters.get("offer_budget", 0) > 9_000


def test_a_blocked_users_message_never_shows_after_restart_either(
    vlan: Callable[..., VirtualLan], tmp_path: Path
) -> None:
    lan = vlan(3)
    ann, ben, cat = start_nodes(lan, tmp_path, ["ann", "ben", "cat"], extra={"ann": ["--mentor"]})
    assert wait_connected([ann, ben, cat], expect="ann") == "ann"
    ben.send(cmd="block", handle="cat")
    ben.send(cmd="friends")
    ben.wait("friends", lambda e: any(f["state"] == "blocked" for f in e["friends"]))
    cat.send(cmd="say", text="said while blocked")
    ann.wait("public", lambda e: e["text"] == "said while blocked", timeout=20)
    ann.send(cmd="say", text="after it")
    ben.wait("public", lambda e: e["text"] == "after it", timeout=20)
    ben.send(cmd="unblock", handle="cat")
    ben.send(cmd="friends")
    ben.wait("friends", lambda e: not any(f["state"] == "blocked" for f in e["friends"]))
    assert ben.quit() == 0
    again = LanNode(lan, 2, "ben", tmp_path / "ben")
    again.wait("broker", timeout=20)
    wait_online(again, {"ann", "cat"}, timeout=20)
    cat.send(cmd="say", text="after the unblock")
    again.wait("public", lambda e: e["text"] == "after the unblock", timeout=20)
    again.send(cmd="history", limit=50)
    history = {m["text"] for m in again.wait("history")["messages"]}
    assert {"after it", "after the unblock"} <= history
    for node in (ben, again):
        assert "said while blocked" not in {e["text"] for e in node.seen("public")}
    assert "said while blocked" not in history
