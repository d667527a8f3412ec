"""Hostile input at the sockets: the broker drops and counts it, and the room keeps talking."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from lannode import start_nodes, wait_connected, wait_online
from vlan import reader_for

if TYPE_CHECKING:
    from collections.abc import Callable

    from vlan import VirtualLan

pytestmark = pytest.mark.lan
ROGUE = Path(__file__).with_name("rogue_client.py")


def test_malformed_forged_and_flooding_clients_do_not_hurt_the_room(
    vlan: Callable[..., VirtualLan], tmp_path: Path
) -> None:
    lan = vlan(3)
    ann, ben = start_nodes(lan, tmp_path, ["ann", "ben"], extra={"ann": ["--mentor"]})
    assert wait_connected([ann, ben], expect="ann") == "ann"
    rogue = lan.spawn(
        3,
        [sys.executable, str(ROGUE), lan.ip(1), "47100"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=str(ROGUE.parent.parent),
    )
    steps = reader_for(rogue.stdout)
    assert steps.wait_for(lambda s: s["step"] == "forged_hello", 20)["answer"] == "bad_hello"
    steps.wait_for(lambda s: s["step"] == "flooding", 20)
    # While the flood runs, the others still get through.
    ann.send(cmd="say", text="still standing")
    ben.wait("public", lambda e: e["text"] == "still standing", timeout=20)
    assert steps.wait_for(lambda s: s["step"] == "flooded", 30)["sent"] > 1000
    assert rogue.wait(timeout=30) == 0
    wait_online(ann, {"ben"}, timeout=20)
    for node in (ann, ben):
        texts = [e["text"] for e in node.seen("public")]
        assert "I am the victim" not in texts
        assert "bad sig" not in texts
    ann.send(cmd="status")
    counters = ann.wait("status", lambda e: "counters" in e)["counters"]
    assert counters.get("malformed", 0) >= 3
    assert counters.get("bad_signature", 0) >= 1
    assert counters.get("public_not_own", 0) >= 1
    assert counters.get("hello_key_mismatch", 0) + counters.get("bad_signature", 0) >= 1
    assert ann.proc.poll() is None
    assert ben.proc.poll() is None
