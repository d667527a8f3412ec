"""Discovery with real zeroconf between hosts of a virtual LAN (network namespaces)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from discovery_driver import advert_to_json
from vlan import reader_for, wait_for_line

from lanchat.core.advert import SERVICE_TYPE, Advert
from lanchat.discovery import Discovery
from lanchat.netif import NetifError

if TYPE_CHECKING:
    from collections.abc import Callable

    from vlan import VirtualLan

pytestmark = pytest.mark.lan

DRIVER = Path(__file__).with_name("discovery_driver.py")
REPO = Path(__file__).resolve().parents[1]
WAIT_S = 5.0  # generous: CI machines are slow; the figures we expect are ~0.1 s
STARTED_AT = 1_760_000_000.25


def key(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


def make_advert(lab: VirtualLan, i: int, handle: str | None = None, **changes: Any) -> Advert:
    fields: dict[str, Any] = {
        "handle": handle or f"user{i}",
        "room": "lobby",
        "address": lab.ip(i),
        "id_key": key(f"id{i}"),
        "curve_key": key(f"ck{i}"),
        "router_port": 5550 + i,
        "pub_port": 5650 + i,
        "mentor": i == 1,
        "priority": i,
        "started_at": STARTED_AT + i,
    }
    return Advert(**(fields | changes))


class Node:
    """One discovery_driver process on one host of the lab."""

    def __init__(self, lab: VirtualLan, i: int, advert: Advert, *, register: bool) -> None:
        self.advert = advert
        argv = [sys.executable, str(DRIVER), "--advert", json.dumps(advert_to_json(advert))]
        self.proc = lab.spawn(
            i,
            [*argv, *(["--register"] if register else [])],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,  # tracebacks show up in wait_for_line's errors
            text=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        self.started = self.wait("started")
        self.registered = self.wait("registered") if register else None

    def send(self, **command: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()

    def wait(
        self, event: str, timeout: float = WAIT_S, where: Callable[[dict[str, Any]], bool] = bool
    ) -> dict[str, Any]:
        return wait_for_line(
            self.proc.stdout, lambda line: line["ev"] == event and where(line), timeout
        )

    def wait_seen(self, advert: Advert, timeout: float = WAIT_S) -> dict[str, Any]:
        expected = advert_to_json(advert)
        return self.wait("seen", timeout, lambda line: line["advert"] == expected)

    def wait_gone(self, handle: str, timeout: float = WAIT_S) -> dict[str, Any]:
        return self.wait("gone", timeout, lambda line: line["handle"] == handle)

    def request(self, event: str, **command: Any) -> dict[str, Any]:
        self.send(**command)
        return self.wait(event)

    def close(self) -> dict[str, Any]:
        self.send(cmd="close")
        closing = self.wait("closing")
        self.wait("closed")
        assert self.proc.wait(timeout=WAIT_S) == 0
        return closing


def test_three_hosts_see_each_other_with_correct_adverts(
    vlan: Callable[[int], VirtualLan],
) -> None:
    lab = vlan(3)
    adverts = {i: make_advert(lab, i) for i in (1, 2, 3)}
    nodes = {i: Node(lab, i, adverts[i], register=True) for i in (1, 2, 3)}

    for i, node in nodes.items():
        for j in (1, 2, 3):
            if j != i:
                node.wait_seen(adverts[j])
        peers = node.request("peers", cmd="peers")["peers"]
        assert peers == {f"user{j}": advert_to_json(adverts[j]) for j in (1, 2, 3) if j != i}
        own = adverts[i].handle
        assert all(line["advert"]["handle"] != own for line in _seen_lines(node))


def test_clean_close_is_promptly_gone_elsewhere(vlan: Callable[[int], VirtualLan]) -> None:
    lab = vlan(3)
    adverts = {i: make_advert(lab, i) for i in (1, 2, 3)}
    nodes = {i: Node(lab, i, adverts[i], register=True) for i in (1, 2, 3)}
    for i in (1, 2):
        nodes[i].wait_seen(adverts[3])

    closing = nodes[3].close()
    for i in (1, 2):
        gone = nodes[i].wait_gone("user3", timeout=1.0)
        assert gone["t"] - closing["t"] < 1.0
        assert "user3" not in nodes[i].request("peers", cmd="peers")["peers"]


def test_a_disowned_name_gets_no_goodbye(vlan: Callable[[int], VirtualLan]) -> None:
    # The loser of a handle clash must not withdraw the name: the winner holds it too.
    lab = vlan(2)
    adverts = {i: make_advert(lab, i) for i in (1, 2)}
    nodes = {i: Node(lab, i, adverts[i], register=True) for i in (1, 2)}
    nodes[1].wait_seen(adverts[2])
    nodes[2].request("disowned", cmd="disown")
    nodes[2].close()
    with pytest.raises(TimeoutError):
        nodes[1].wait_gone("user2", timeout=1.5)  # a goodbye arrives in ~0.1 s (above)
    assert "user2" in nodes[1].request("peers", cmd="peers")["peers"]


def test_find_conflict_detects_taken_handle_only(vlan: Callable[[int], VirtualLan]) -> None:
    lab = vlan(2)
    holder = make_advert(lab, 1, handle="Ann")
    Node(lab, 1, holder, register=True)
    newcomer = Node(lab, 2, make_advert(lab, 2), register=False)

    # Another key under the same handle, case-insensitively: found, and early.
    found = newcomer.request(
        "conflict", cmd="find_conflict", handle="aNN", key=key("id2").hex(), wait_s=3.0
    )
    assert found["advert"] == advert_to_json(holder)
    assert found["elapsed"] < 1.0
    # The holder's own key (a restart of the same identity) is no conflict.
    same_key = newcomer.request(
        "conflict", cmd="find_conflict", handle="ann", key=key("id1").hex(), wait_s=0.35
    )
    assert same_key["advert"] is None
    free = newcomer.request(
        "conflict", cmd="find_conflict", handle="bob", key=key("id2").hex(), wait_s=0.35
    )
    assert free["advert"] is None
    assert free["elapsed"] < 1.0


def test_find_conflict_on_a_fresh_browser(vlan: Callable[[int], VirtualLan]) -> None:
    """The real start-up sequence: start(), then find_conflict() before any event arrived."""
    lab = vlan(2)
    holder = make_advert(lab, 1, handle="ann")
    Node(lab, 1, holder, register=True)
    advert = make_advert(lab, 2, handle="ann")
    proc_argv = ["--advert", json.dumps(advert_to_json(advert))]
    script = (
        "import asyncio, json, sys\n"
        "from lanchat.discovery import Discovery\n"
        "from discovery_driver import advert_from_json\n"
        "async def main():\n"
        "    a = advert_from_json(json.loads(sys.argv[2]))\n"
        "    d = Discovery(a.address, lambda e: None)\n"
        "    await d.start()\n"
        "    found = await d.find_conflict(a.handle, a.id_key)\n"
        "    await d.close()\n"
        "    print(json.dumps({'ev': 'conflict', 'handle': found and found.handle}))\n"
        "asyncio.run(main())\n"
    )
    proc = lab.spawn(
        2,
        [sys.executable, "-c", script, *proc_argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{DRIVER.parent}"},
    )
    result = wait_for_line(proc.stdout, lambda line: line["ev"] == "conflict", WAIT_S)
    assert result["handle"] == "ann"


def test_txt_updates_are_seen_including_a_flip_back(vlan: Callable[[int], VirtualLan]) -> None:
    lab = vlan(3)
    adverts = {i: make_advert(lab, i) for i in (1, 2, 3)}
    nodes = {i: Node(lab, i, adverts[i], register=True) for i in (1, 2, 3)}
    for i in (2, 3):
        nodes[i].wait_seen(adverts[1])

    broker = make_advert(lab, 1, broker_epoch=1, broker_since=STARTED_AT + 10)
    nodes[1].request(
        "updated", cmd="update", changes={"broker_epoch": 1, "broker_since": broker.broker_since}
    )
    for i in (2, 3):
        nodes[i].wait_seen(broker)
    # Back to exactly the first TXT: mDNS caches would hide it without the serial.
    nodes[1].request("updated", cmd="update", changes={"broker_epoch": 0, "broker_since": 0.0})
    for i in (2, 3):
        nodes[i].wait_seen(adverts[1])


def test_reannounce_is_reported_again(vlan: Callable[[int], VirtualLan]) -> None:
    lab = vlan(2)
    adverts = {i: make_advert(lab, i) for i in (1, 2)}
    nodes = {i: Node(lab, i, adverts[i], register=True) for i in (1, 2)}
    first = nodes[2].wait_seen(adverts[1])
    nodes[1].request("reannounced", cmd="reannounce")
    again = nodes[2].wait_seen(adverts[1])
    assert again["t"] > first["t"]


def test_malformed_adverts_are_ignored(vlan: Callable[[int], VirtualLan]) -> None:
    lab = vlan(3)
    observer = Node(lab, 1, make_advert(lab, 1), register=True)
    script = (
        "import asyncio, sys\n"
        "from zeroconf import IPVersion\n"
        "from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf\n"
        "async def main():\n"
        "    zc = AsyncZeroconf(interfaces=[sys.argv[1]], ip_version=IPVersion.V4Only)\n"
        f"    info = AsyncServiceInfo({SERVICE_TYPE!r}, 'junk.' + {SERVICE_TYPE!r}, port=1,\n"
        "        properties={'v': '1', 'id': 'not-a-key'}, server='junk.local.',\n"
        "        parsed_addresses=[sys.argv[1]])\n"
        "    await (await zc.async_register_service(info, cooperating_responders=True))\n"
        '    print(\'{"ev": "registered"}\', flush=True)\n'
        "    await asyncio.Event().wait()\n"
        "asyncio.run(main())\n"
    )
    junk = lab.spawn(
        2,
        [sys.executable, "-c", script, lab.ip(2)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    wait_for_line(junk.stdout, lambda line: line["ev"] == "registered", WAIT_S)
    # A good advert announced after the junk one: once it is seen, the junk was handled.
    good = make_advert(lab, 3)
    Node(lab, 3, good, register=True)
    observer.wait_seen(good)
    peers = observer.request("peers", cmd="peers")
    assert set(peers["peers"]) == {"user3"}
    assert peers["malformed"] >= 1
    assert all(line["advert"]["handle"] != "junk" for line in _seen_lines(observer))


def test_timing_figures(
    vlan: Callable[[int], VirtualLan], capsys: pytest.CaptureFixture[str]
) -> None:
    """PeerSeen after register(), for browsers running and late; PeerGone after close()."""
    lab = vlan(4)
    observers = [Node(lab, i, make_advert(lab, i), register=True) for i in (2, 3)]
    newcomer_advert = make_advert(lab, 1)
    newcomer = Node(lab, 1, newcomer_advert, register=True)
    assert newcomer.registered is not None
    seen = [o.wait_seen(newcomer_advert)["t"] - newcomer.registered["t0"] for o in observers]
    late = Node(lab, 4, make_advert(lab, 4), register=False)
    late_seen = late.wait_seen(newcomer_advert)["t"] - late.started["t"]
    closing = newcomer.close()
    gone = [o.wait_gone("user1")["t"] - closing["t"] for o in observers]
    with capsys.disabled():
        print(f"\nregister -> PeerSeen:        {[round(s * 1000, 1) for s in seen]} ms")
        print(f"late browser start -> seen: {round(late_seen * 1000, 1)} ms")
        print(f"close -> PeerGone:          {[round(g * 1000, 1) for g in gone]} ms")
    assert max(seen) < 1.0
    assert late_seen < 1.0
    assert max(gone) < 1.0


def _seen_lines(node: Node) -> list[dict[str, Any]]:
    assert node.proc.stdout is not None
    return [line for line in reader_for(node.proc.stdout).seen if line["ev"] == "seen"]


def test_close_is_idempotent_and_safe_when_start_failed() -> None:
    """No sockets are opened: the address is not on this machine (TEST-NET-3)."""

    async def scenario() -> None:
        never_started = Discovery("203.0.113.9", lambda event: None)
        await never_started.close()
        failed = Discovery("203.0.113.9", lambda event: None)
        with pytest.raises(NetifError, match=r"203\.0\.113\.9"):
            await failed.start()
        await failed.close()
        await failed.close()
        with pytest.raises(RuntimeError):
            await failed.register(make_advert_for("203.0.113.9"))

    asyncio.run(scenario())


def make_advert_for(address: str) -> Advert:
    return Advert("ann", "lobby", address, key("a"), key("b"), 1, 2, False, 0, STARTED_AT)
