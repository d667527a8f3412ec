"""Faults on a virtual LAN, with real processes and chat from every side, and one checker
for all of them: every public message a broker accepted is shown by every node exactly
once, and every node's ``history`` of the room is the same, in the same order.

The faults: the switch cut into two halves for 20 s, into three pieces, a cut while the
broker dies, SIGSTOP of the broker and of a client, a flapping link, a profile on a tiny
filesystem that fills up, a profile that is read-only at start. (Linux refuses to remount
a filesystem read-only while a file on it is open for writing, so "made read-only while
running" is the kernel's own forced remount after disk errors; SQLite then refuses writes
as for a full disk, and tests/test_store.py covers that path.)
docs/performance.md reports the figures these print (time to reconcile, bytes exchanged).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

import pytest
from lannode import LanNode, wait_connected

from lanchat.store import Profile

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from vlan import VirtualLan

pytestmark = pytest.mark.lan

HANDLES = ("ann", "ben", "cat", "dan", "eve", "fay")  # ann: the mentor, so the broker
CHAT_PERIOD_S = 1.0  # every node says something this often, as in the issue
PARTITION_S = 20.0
CHECK_S = 60.0


class Room:
    """Six headless nodes on hosts 1-6, and what was said to each."""

    def __init__(self, lan: VirtualLan, tmp: Path, profiles: dict[str, Path] | None = None):
        profiles = profiles or {}
        self.lan = lan
        self.nodes = {
            h: LanNode(lan, i + 1, h, profiles.get(h, tmp / h), ["--mentor"] if h == "ann" else [])
            for i, h in enumerate(HANDLES)
        }
        self.gone: set[str] = set()  # killed: no longer checked
        self.said: Counter[str] = Counter()
        self._lock = threading.Lock()
        wait_connected(list(self.nodes.values()), timeout=30, expect="ann")

    def running(self) -> list[LanNode]:
        return [n for h, n in self.nodes.items() if h not in self.gone]

    def send(self, node: LanNode, **cmd: Any) -> None:
        with self._lock:  # the chat thread and the checker write to the same stdin
            node.send(**cmd)
            if cmd.get("cmd") == "say":
                self.said[node.handle] += 1

    def host(self, handle: str) -> int:
        return self.nodes[handle].host


def drain(node: LanNode) -> None:
    """Take whatever the node printed so far into ``node.seen``."""
    with contextlib.suppress(TimeoutError, EOFError):
        node.events.wait_for(lambda e: False, 0.01)


@contextlib.contextmanager
def chatting(room: Room, tag: str, quiet: set[str] | None = None) -> Iterator[set[str]]:
    """Every running node says a text every CHAT_PERIOD_S while the block runs (except
    those in ``quiet``, a set the block may change)."""
    quiet = quiet if quiet is not None else set()
    stop = threading.Event()

    def chat() -> None:
        for i in itertools.count():
            for node in room.running():
                if node.handle not in quiet and node.proc.poll() is None:
                    with contextlib.suppress(OSError):
                        room.send(node, cmd="say", text=f"{node.handle} {tag} {i}")
            if stop.wait(CHAT_PERIOD_S):
                return

    thread = threading.Thread(target=chat, daemon=True)
    thread.start()
    try:
        yield quiet
    finally:
        stop.set()
        thread.join(timeout=10)


def history(room: Room, node: LanNode) -> list[dict[str, Any]]:
    room.send(node, cmd="history", limit=10_000)
    answer: list[dict[str, Any]] = node.wait("history", timeout=15)["messages"]
    return answer


def check(room: Room, timeout: float = CHECK_S) -> float:
    """The one checker. Returns how long the room took to satisfy it (s)."""
    started = time.monotonic()
    deadline = started + timeout
    nodes = room.running()
    problem = ""
    while time.monotonic() < deadline:
        for node in nodes:
            drain(node)
        for node in room.nodes.values():
            drain(node)
        everyone = {n.handle: [e["id"] for e in n.seen("sent")] for n in room.nodes.values()}
        sent = {n.handle: everyone[n.handle] for n in nodes}
        accepted = {i for ids in everyone.values() for i in ids}
        # A killed node's last acknowledgements may not have reached its stdout.
        gone_authors = {i.split(":")[0] for h in room.gone for i in everyone[h]}
        # Every say of a running node acknowledged by a broker (the chat has stopped).
        unacked = {h: room.said[h] - len(ids) for h, ids in sent.items() if len(ids) < room.said[h]}
        if unacked:
            problem = f"not yet acknowledged: {unacked}"
            time.sleep(0.5)
            continue
        problem = ""
        for node in nodes:
            shown = Counter(e["id"] for e in node.seen("public"))
            twice = [i for i, c in shown.items() if c > 1]
            assert not twice, f"{node.handle} showed {twice} more than once"
            missing = accepted - set(sent[node.handle]) - set(shown)
            if missing:
                problem = f"{node.handle} has not shown {len(missing)}: {sorted(missing)[:5]}"
                break
        if not problem:
            lists = {n.handle: history(room, n) for n in nodes}
            orders = {h: [m["id"] for m in msgs] for h, msgs in lists.items()}
            unplaced = {
                h: [m["id"] for m in msgs if m["order"] is None] for h, msgs in lists.items()
            }
            unplaced = {h: ids for h, ids in unplaced.items() if ids}
            differ = {tuple(o) for o in orders.values()}
            if unplaced:
                problem = f"not placed yet: {unplaced}"
            elif len(differ) != 1:
                first = orders[nodes[0].handle]
                problem = "histories differ: " + "; ".join(
                    f"{h}: {len(o)} messages, first difference at {first_difference(o, first)}"
                    for h, o in orders.items()
                    if o != first
                )
            else:
                (order,) = differ
                assert len(order) == len(set(order)), "a message twice in a history"
                accepted |= {i for i in order if i.split(":")[0] in gone_authors}
                extra = set(order) - accepted
                assert not extra, f"in the history but never acknowledged: {sorted(extra)[:5]}"
                lost = accepted - set(order)
                if not lost:
                    # An honest room raised no false alarm on the way.
                    for node in nodes:
                        alarms = [e for e in node.seen("warning") if e["code"] == "withheld"]
                        assert not alarms, f"{node.handle}: {alarms}"
                    return time.monotonic() - started
                problem = f"acknowledged but in no history: {sorted(lost)[:5]}"
        time.sleep(0.5)
    raise AssertionError(f"the room did not reconcile within {timeout} s: {problem}")


def first_difference(a: list[str], b: list[str]) -> int:
    return next(
        (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b))
    )


def reconcile_bytes(room: Room) -> int:
    """Anti-entropy traffic the nodes sent (summaries, requests, carried messages)."""
    total = 0
    for node in room.running():
        room.send(node, cmd="status")
        total += node.wait("status", lambda e: "counters" in e, timeout=15)["counters"].get(
            "reconcile_bytes", 0
        )
    return total


def back_on(room: Room, broker: str | None, timeout: float = 30.0) -> None:
    """Every running node's latest broker is ``broker`` (None: the same one)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for node in room.running():
            drain(node)
        latest = {n.handle: n.seen("broker")[-1]["handle"] for n in room.running()}
        agreed = set(latest.values())
        if agreed == {broker} or (broker is None and len(agreed) == 1):
            return
        time.sleep(0.2)
    raise AssertionError(f"not all on one broker ({broker}): {latest}")


def heal(room: Room) -> tuple[float, set[str]]:
    """Heal the switch: the moment, and what brokers had acknowledged until then."""
    room.lan.heal()
    healed_at = time.monotonic()
    return healed_at, acknowledged(room)


def acknowledged(room: Room) -> set[str]:
    for node in room.nodes.values():
        drain(node)
    return {e["id"] for n in room.nodes.values() for e in n.seen("sent")}


def reconciled_after(room: Room, healed_at: float, before: set[str], timeout: float = 60) -> float:
    """Seconds from the heal until every running node shows every message acknowledged
    before it (while the chat goes on)."""
    deadline = healed_at + timeout
    while time.monotonic() < deadline:
        missing = 0
        for node in room.running():
            drain(node)
            have = {e["id"] for e in node.seen("public")} | {e["id"] for e in node.seen("sent")}
            missing += len(before - have)
        if not missing:
            return time.monotonic() - healed_at
        time.sleep(0.05)
    raise AssertionError(f"{missing} messages still missing {timeout} s after the heal")


def report(name: str, room: Room, reconciled_s: float, took: float) -> None:
    total = sum(room.said.values())
    print(
        f"\n{name}: {total} messages said; every message from before the heal everywhere "
        f"{reconciled_s:.1f} s after it; the checker passed in {took:.1f} s; anti-entropy sent "
        f"{reconcile_bytes(room):,} bytes in all"
    )


# ---------------------------------------------------------------- the network


def test_two_halves_for_20_s_then_healed(vlan: Callable[..., VirtualLan], tmp_path: Path) -> None:
    lan = vlan(len(HANDLES))
    room = Room(lan, tmp_path)
    with chatting(room, "halves"):
        time.sleep(2)
        lan.partition([1, 2, 3], [4, 5, 6])
        time.sleep(PARTITION_S)
        healed_at, before = heal(room)
        reconciled_s = reconciled_after(room, healed_at, before)
        back_on(room, "ann")
        time.sleep(2)
    took = check(room)
    report("two halves, 20 s", room, reconciled_s, took)


def test_three_pieces_then_healed(vlan: Callable[..., VirtualLan], tmp_path: Path) -> None:
    lan = vlan(len(HANDLES))
    room = Room(lan, tmp_path)
    with chatting(room, "pieces"):
        time.sleep(1)
        lan.partition([1, 2], [3, 4], [5, 6])
        time.sleep(10)
        healed_at, before = heal(room)
        reconciled_s = reconciled_after(room, healed_at, before)
        back_on(room, "ann")
        time.sleep(2)
    took = check(room)
    report("three pieces, 10 s", room, reconciled_s, took)


def test_a_cut_while_the_broker_dies(vlan: Callable[..., VirtualLan], tmp_path: Path) -> None:
    lan = vlan(len(HANDLES))
    room = Room(lan, tmp_path)
    with chatting(room, "failover") as quiet:
        time.sleep(2)
        # What ann's own relay acknowledged an instant before SIGKILL may have reached
        # nobody: no node could ever hand it on. She stops talking a moment before.
        quiet.add("ann")
        time.sleep(1.5)
        lan.kill(room.host("ann"))
        room.gone.add("ann")
        lan.partition([1, 2, 3], [4, 5, 6])
        time.sleep(10)
        healed_at, before = heal(room)
        reconciled_s = reconciled_after(room, healed_at, before)
        time.sleep(3)
    back_on(room, None)
    took = check(room)
    report("cut during a failover", room, reconciled_s, took)


def test_sigstop_of_the_broker_and_of_a_client(
    vlan: Callable[..., VirtualLan], tmp_path: Path
) -> None:
    lan = vlan(len(HANDLES))
    room = Room(lan, tmp_path)
    with chatting(room, "stopped"):
        time.sleep(1)
        lan.kill(room.host("ann"), signal.SIGSTOP)
        time.sleep(5)
        lan.kill(room.host("ann"), signal.SIGCONT)
        healed_at = time.monotonic()
        before = acknowledged(room)
        reconciled_s = reconciled_after(room, healed_at, before)
        time.sleep(2)
        back_on(room, "ann")
        marks = {n.handle: len(n.seen("peer_down")) for n in room.running()}
        lan.kill(room.host("dan"), signal.SIGSTOP)
        time.sleep(5)
        lan.kill(room.host("dan"), signal.SIGCONT)
        time.sleep(3)
    back_on(room, "ann")
    # Presence does not lie: dan's node answered the broker's probe (its kernel does, for
    # a stopped process), so nobody was told dan left.
    for node in room.running():
        drain(node)
        downs = [e["handle"] for e in node.seen("peer_down")[marks.get(node.handle, 0) :]]
        assert "dan" not in downs, f"{node.handle} saw dan leave"
    took = check(room)
    report("SIGSTOP of the broker, 5 s (then of a client)", room, reconciled_s, took)


def test_a_flapping_link(vlan: Callable[..., VirtualLan], tmp_path: Path) -> None:
    lan = vlan(len(HANDLES))
    room = Room(lan, tmp_path)
    with chatting(room, "flaps"):
        for _ in range(3):
            lan.link_down(room.host("cat"), "switch")
            time.sleep(1.5)
            lan.link_up(room.host("cat"), "switch")
            time.sleep(1.5)
        lan.link_down(room.host("ann"), "silent")
        time.sleep(3)
        lan.link_up(room.host("ann"), "silent")
        healed_at = time.monotonic()
        before = acknowledged(room)
        reconciled_s = reconciled_after(room, healed_at, before)
        time.sleep(3)
    back_on(room, "ann")
    took = check(room)
    report("link flaps (the broker's last)", room, reconciled_s, took)


# ---------------------------------------------------------------- the disk


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def remount(path: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(path)], check=True)


def test_a_profile_on_a_tiny_disk_that_fills_up(
    vlan: Callable[..., VirtualLan], tmp_path: Path
) -> None:
    lan = vlan(len(HANDLES))
    # The profile is the mount point itself (its stderr log stays outside).
    with tmpfs(tmp_path / "dan-disk", "8m") as disk:
        room = Room(lan, tmp_path, profiles={"dan": disk})
        dan = room.nodes["dan"]
        filler = disk / "filler"
        with filler.open("wb", buffering=0) as out, contextlib.suppress(OSError):
            while True:
                out.write(b"\0" * 4096)
                out.flush()
        os.truncate(filler, max(0, filler.stat().st_size - 60_000))  # about 60 KB free
        big = "z" * 1500
        with chatting(room, "disk"):
            for i in range(60):
                room.send(room.nodes["eve"], cmd="say", text=f"eve big {i} {big}")
            error = dan.wait("error", lambda e: e.get("code") == "storage", timeout=30)
            assert "full" in error["message"]
            time.sleep(2)
            filler.unlink()  # space returns
            ok = dan.wait("storage", timeout=15)
            assert ok["state"] == "ok"
            took = check(room)
            print(
                f"\ndisk full: {ok['saved']} messages kept in memory, then saved; "
                f"checker {took:.1f} s"
            )
        drain(dan)
        assert len([e for e in dan.seen("error") if e.get("code") == "storage"]) == 1
        assert "Traceback" not in dan.stderr()
        # What dan stored is what dan showed: after a restart, the same history.
        before = [m["id"] for m in history(room, dan)]
        assert dan.quit() == 0
        again = LanNode(lan, dan.host, "dan", disk)
        room.nodes["dan"] = again
        again.wait("broker", timeout=30)
        after = [m["id"] for m in history(room, again)]
        assert after[: len(before)] == before
        assert again.quit() == 0


def test_a_read_only_profile_at_start_is_profile_error_with_status_2(tmp_path: Path) -> None:
    if sys.platform != "linux":
        pytest.skip("mounts a tmpfs")
    with tmpfs(tmp_path / "ro", "1m") as disk:
        Profile.open(disk / "p").close()
        remount(disk, "ro")
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "lanchat",
                "--headless",
                "--handle",
                "ro",
                "--profile",
                str(disk / "p"),
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert done.returncode == 2, done.stderr
    assert [e["code"] for e in events if e["ev"] == "error"] == ["profile_error"]
    assert "Traceback" not in done.stderr
