"""Where multicast does not reach: a switch that drops mDNS, one that isolates clients.

The lab's bridge filters with nftables (as guest Wi-Fi does): nodes started with no options
find each other by the broadcast beacon, and ``lanchat doctor`` tells the cases apart.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import pytest
from lannode import LanNode, start_nodes, wait_connected

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from vlan import VirtualLan

pytestmark = [
    pytest.mark.lan,
    pytest.mark.skipif(shutil.which("nft") is None, reason="nftables (nft) is not installed"),
]

MDNS_MAC = "01:00:5e:00:00:fb"  # 224.0.0.251 on Ethernet


def switch_drops(lan: VirtualLan, rule: str) -> None:
    """Add a forwarding rule to the lab's switch (the bridge, in its own namespace)."""
    script = (
        "add table bridge lab\n"
        "add chain bridge lab guest { type filter hook forward priority 0; }\n"
        f"add rule bridge lab guest {rule}\n"
    )
    subprocess.run(
        ["ip", "netns", "exec", lan.switch_ns, "nft", "-f", "-"],
        input=script,
        text=True,
        check=True,
        capture_output=True,
    )


def doctor(lan: VirtualLan, host: int, listen: float = 1.5) -> tuple[int, dict[str, object]]:
    result = lan.run(
        host,
        [sys.executable, "-m", "lanchat", "doctor", "--json", "--listen", str(listen)],
        timeout=30,
    )
    return result.returncode, json.loads(result.stdout)


def test_mdns_dropped_nodes_find_each_other_by_broadcast(
    vlan: Callable[..., VirtualLan], tmp_path: Path
) -> None:
    lan = vlan(4)
    switch_drops(lan, f"ether daddr {MDNS_MAC} drop")
    began = time.monotonic()
    nodes = start_nodes(lan, tmp_path, ["ann", "ben", "cat"])
    broker = wait_connected(nodes, timeout=5.0)
    assert time.monotonic() - began < 5.0 + 1.0  # the processes' own start-up included
    ann, ben, cat = nodes
    for node in nodes:  # the address a --connect would use, for a mentor's screen
        assert node.seen("ready")[0]["connect"] == lan.ip(node.host)
    ann.send(cmd="say", text="through the filter")
    for node in (ben, cat):
        node.wait("public", lambda e: e["text"] == "through the filter")

    # The broker vanishes: the others fail over and go on chatting.
    dead = next(n for n in nodes if n.handle == broker)
    live = [n for n in nodes if n is not dead]
    dead.kill()
    for node in live:
        node.wait("broker", lambda e: e["handle"] != broker, timeout=10)
    live[0].send(cmd="say", text="after the failover")
    live[1].wait("public", lambda e: e["text"] == "after the failover")

    # The doctor (in the laptop of a node) sees the filter and says all is well.
    status, report = doctor(lan, live[0].host)
    assert report["multicast_from_others"] is False, report
    assert report["broadcast_from_others"] is True, report
    assert report["peers_reachable"] is True, report
    assert report["ok"] is True, report
    assert status == 0


def test_rooms_found_by_broadcast_merge_into_one_broker(
    vlan: Callable[..., VirtualLan], tmp_path: Path
) -> None:
    """Two rooms of one (the switch isolated them) meet once broadcast passes: one broker."""
    lan = vlan(2)
    switch_drops(lan, "drop")
    ann, ben = start_nodes(lan, tmp_path, ["ann", "ben"])
    for node in (ann, ben):
        assert node.wait("broker")["self"] is True
    # The switch now only drops mDNS (flush the isolating rule, keep the table).
    subprocess.run(
        ["ip", "netns", "exec", lan.switch_ns, "nft", "flush", "chain", "bridge", "lab", "guest"],
        check=True,
    )
    switch_drops(lan, f"ether daddr {MDNS_MAC} drop")
    # In one roster (of one broker), each sees the other come up.
    ann.wait("peer_up", lambda e: e["handle"] == "ben", timeout=15)
    ben.wait("peer_up", lambda e: e["handle"] == "ann", timeout=15)
    brokers = {node.seen("broker")[-1]["handle"] for node in (ann, ben)}
    assert len(brokers) == 1, brokers


def test_a_connect_node_and_one_with_no_options_join_one_room(
    vlan: Callable[..., VirtualLan], tmp_path: Path
) -> None:
    """The issue's report: with mDNS dropped, only the node that typed --connect joined."""
    lan = vlan(3)
    switch_drops(lan, f"ether daddr {MDNS_MAC} drop")
    ann = LanNode(lan, 1, "ann", tmp_path / "ann", ["--mentor"])
    ann.wait("status", lambda e: e["state"] == "broker")
    ben = LanNode(lan, 2, "ben", tmp_path / "ben", ["--connect", lan.ip(1)])
    cat = LanNode(lan, 3, "cat", tmp_path / "cat")
    assert wait_connected([ann, ben, cat], timeout=10, expect="ann") == "ann"


def test_client_isolation_is_named(vlan: Callable[..., VirtualLan], tmp_path: Path) -> None:
    lan = vlan(2)
    switch_drops(lan, "drop")
    ann = LanNode(lan, 1, "ann", tmp_path / "ann")
    ann.wait("broker")
    status, report = doctor(lan, 2)
    assert status == 1, report
    assert report["multicast_from_others"] is False
    assert report["broadcast_from_others"] is False
    assert report["peers_reachable"] is False
    assert report["multicast"] is True  # our own laptop is fine: the network is not
    assert any("client isolation" in str(a) for a in report["advice"]), report  # type: ignore[union-attr]


def test_a_firewall_on_this_laptop_is_named_as_such(
    vlan: Callable[..., VirtualLan], tmp_path: Path
) -> None:
    lan = vlan(2)
    ann = LanNode(lan, 1, "ann", tmp_path / "ann")
    ann.wait("broker")
    # Host 2 drops inbound mDNS and beacons (its own included), as a laptop's firewall does.
    subprocess.run(
        ["ip", "netns", "exec", lan.ns(2), "nft", "-f", "-"],
        input=(
            "add table inet fw\n"
            "add chain inet fw in { type filter hook input priority 0; }\n"
            "add rule inet fw in udp dport { 5353, 47100 } drop\n"
        ),
        text=True,
        check=True,
        capture_output=True,
    )
    status, report = doctor(lan, 2)
    assert status == 1, report
    assert report["multicast"] is False
    assert report["broadcast"] is False
    advice = " ".join(str(a) for a in report["advice"])  # type: ignore[union-attr]
    assert "on this machine" in advice
    assert "firewall on this laptop" in advice
    assert "client isolation" not in advice  # not the network's fault


def _count_on_switch(lan: VirtualLan) -> None:
    """Count every frame a port hands the switch, by kind (once per frame, not per copy)."""
    script = (
        "add table bridge tally\n"
        "add chain bridge tally seen { type filter hook prerouting priority 0; }\n"
        "add rule bridge tally seen udp dport 47100 counter\n"
        "add rule bridge tally seen udp dport 5353 counter\n"
    )
    subprocess.run(
        ["ip", "netns", "exec", lan.switch_ns, "nft", "-f", "-"],
        input=script,
        text=True,
        check=True,
        capture_output=True,
    )


def _counted(lan: VirtualLan) -> dict[str, int]:
    listing = subprocess.run(
        ["ip", "netns", "exec", lan.switch_ns, "nft", "-j", "list", "table", "bridge", "tally"],
        text=True,
        check=True,
        capture_output=True,
    ).stdout
    counts: dict[str, int] = {}
    for item in json.loads(listing)["nftables"]:
        rule = item.get("rule")
        if not rule:
            continue
        port = next(e["match"]["right"] for e in rule["expr"] if "match" in e)
        packets = next(e["counter"]["packets"] for e in rule["expr"] if "counter" in e)
        counts["beacon" if port == 47100 else "mdns"] = packets
    return counts


@pytest.mark.parametrize("switch", ["unfiltered", "mdns_dropped"])
def test_beacons_stay_within_the_budget(
    vlan: Callable[..., VirtualLan], tmp_path: Path, switch: str
) -> None:
    """Where mDNS works, a room of five sends almost no beacon: at most one per node while
    it starts alone, then one keep-alive per node and KEEPALIVE_S; where mDNS is dropped,
    one per node and FAST_S (docs/performance.md)."""
    from lanchat.core.beacon import FAST_S, KEEPALIVE_S, MIN_GAP_S

    hosts, window_s = 5, 20.0
    lan = vlan(hosts)
    if switch == "mdns_dropped":
        switch_drops(lan, f"ether daddr {MDNS_MAC} drop")
    _count_on_switch(lan)
    began = time.monotonic()
    nodes = start_nodes(lan, tmp_path, [f"n{i}" for i in range(1, hosts + 1)])
    wait_connected(nodes, timeout=10)
    formed_s = time.monotonic() - began
    start = _counted(lan)
    time.sleep(window_s)  # a measurement window, not a synchronisation
    steady = _counted(lan)
    beacons = steady["beacon"] - start["beacon"]
    mdns = steady["mdns"] - start["mdns"]
    print(
        f"\n{hosts} nodes, {switch}: room formed in {formed_s:.2f} s with "
        f"{start['beacon']} beacons and {start['mdns']} mDNS packets; then in {window_s:.0f} s: "
        f"{beacons} beacons, {mdns} mDNS packets"
    )
    # Starting: a node beacons while mDNS shows it nobody, at most once per MIN_GAP_S.
    assert start["beacon"] <= hosts * (formed_s / MIN_GAP_S + 1)
    every = KEEPALIVE_S if switch == "unfiltered" else FAST_S
    assert beacons <= hosts * (window_s / every + 1)
    if switch == "mdns_dropped":
        assert beacons >= hosts * (window_s / every / 2)  # they do keep announcing
