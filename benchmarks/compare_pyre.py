"""lanchat against pyre (Python Zyre), head to head on the same virtual LAN (issue 7).

Both chats run as real processes, one per network namespace of a virtual LAN
(tests/vlan.py), driven the same way: JSON commands on stdin, one JSON event per
line on stdout. lanchat runs as ``lanchat --headless``; pyre runs in
benchmarks/pyre_node.py, a driver with the same shape. Every node writes its
events to a file; the harness reads those files (timestamps come from the nodes'
own ``t`` fields), so it does not compete for the 2 cores by parsing every line
live.

Figures (min / median / max over --runs runs, and the ratio of the medians):
  1. cold start, N nodes together, until each can message every other (lanchat:
     peer_up for all + one broker; pyre: ENTER + JOIN of the group for all),
     from the spawn, from the last node's own start, and the start-up between;
  2. late join into a running room of 10;
  3. vanished peer (link down at the switch, and at the host) until all others
     report it gone; 4. rejoin after link up until all others see it again;
  5. public latency p50/p99 at N=10 (one sender, 200 messages at 20/s);
  6. the highest sustained lossless rate 1 -> 9 (200-byte messages), and a burst;
  7. a receiver stopped (SIGSTOP) 5 s during a 2,000-message stream at 400/s, and
     during a 10,000-message one at 2,000/s;
  8. failover (lanchat only): broker SIGKILL, and the broker's link going down;
plus CPU and RSS per node from /proc in the N=10 room. docs/performance.md has the
definitions, the measured table and the discussion.

    python3 benchmarks/compare_pyre.py [--runs 3] [--sizes 3,10,20,40] [--only cold,room,...]
        [--chats lanchat,pyre] [--json OUT] [--keep DIR] [--min-idle 0.85]
    python3 benchmarks/compare_pyre.py --table pyre.json lanchat.json

Needs root, iproute2 and zeromq-pyre (pip install -e '.[bench]').
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import importlib.util
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from vlan import VirtualLan, make_prefix, missing_requirements

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Sequence

ROOT = Path(__file__).resolve().parent.parent
PYRE_DRIVER = Path(__file__).resolve().with_name("pyre_node.py")
GROUP = "CHAT"
CAP_S = 30.0  # how long a rejoin may take before it counts as "never"
VANISH_CAP_S = 45.0  # pyre expires a silent peer after 30 s (+ its 1 s reaper)
HOLD_S = 10.0  # a link stays down at least this long (a walk out of range, a closed lid)
POLL_S = 0.05
CLK_TCK = os.sysconf("SC_CLK_TCK")
SCENARIOS = ("cold", "room", "throughput", "burst", "slow", "failover")

Metrics = dict[str, float | None]


# ---- the two chats, driven the same way ---------------------------------------------


@dataclass(frozen=True)
class Flavor:
    name: str
    up_ev: str  # a peer is reachable (lanchat peer_up; pyre JOIN of our group)
    down_ev: str  # a peer is gone (lanchat peer_down; pyre EXIT)
    has_broker: bool

    def argv(self, handle: str, profile: Path, mentor: bool) -> list[str]:
        if self.name == "lanchat":
            extra = ["--mentor"] if mentor else []
            argv = ["-m", "lanchat", "--headless", "--handle", handle, "--profile", str(profile)]
            return [sys.executable, *argv, *extra]
        return [sys.executable, str(PYRE_DRIVER), "--handle", handle, "--group", GROUP]

    def is_started(self, ev: dict[str, Any]) -> bool:
        if self.name == "lanchat":
            return ev.get("ev") == "status" and ev.get("state") == "discovering"
        return ev.get("ev") == "started"


LANCHAT = Flavor("lanchat", "peer_up", "peer_down", has_broker=True)
PYRE = Flavor("pyre", "join", "exit", has_broker=False)
PUBLIC_MARK = b'"ev":"public"'


class Node:
    """One chat process in one host of the lab; its events go to a file."""

    def __init__(
        self, lan: VirtualLan, host: int, flavor: Flavor, handle: str, tmp: Path, mentor: bool
    ) -> None:
        self.flavor = flavor
        self.host = host
        self.handle = handle
        self.out_path = tmp / f"{flavor.name}-{handle}.out"
        argv = flavor.argv(handle, tmp / f"{flavor.name}-{handle}.profile", mentor)
        self.spawn_t = time.time()
        with self.out_path.open("wb") as out, (tmp / f"{handle}.stderr").open("ab") as err:
            self.proc = lan.spawn(
                host, argv, stdin=subprocess.PIPE, stdout=out, stderr=err, cwd=ROOT
            )
        self._file = self.out_path.open("rb")
        self._tail = b""
        self.started_t: float | None = None
        self.ups: dict[str, list[float]] = defaultdict(list)
        self.downs: dict[str, list[float]] = defaultdict(list)
        self.brokers: list[tuple[float, str]] = []
        self.public: list[bytes] = []  # raw lines: parsed only when a figure needs them

    @property
    def pid(self) -> int:
        return self.proc.pid

    def poll(self) -> Node:
        """Take in whatever the node wrote since the last call."""
        data = self._file.read()
        if not data:
            return self
        *lines, self._tail = (self._tail + data).split(b"\n")
        for line in lines:
            if PUBLIC_MARK in line:
                self.public.append(line)
                continue
            with contextlib.suppress(ValueError):
                self._take(json.loads(line))
        return self

    def _take(self, ev: dict[str, Any]) -> None:
        kind, t = ev.get("ev"), ev.get("t", 0.0)
        if self.started_t is None and self.flavor.is_started(ev):
            self.started_t = t
        elif kind == self.flavor.up_ev and ev.get("group", GROUP) == GROUP:
            self.ups[ev["handle"]].append(t)
        elif kind == self.flavor.down_ev:
            self.downs[ev["handle"]].append(t)
        elif kind == "broker":
            self.brokers.append((t, ev["handle"]))

    def first_up(self, handle: str, since: float = 0.0) -> float | None:
        return next((t for t in self.ups.get(handle, ()) if t >= since), None)

    def first_down(self, handle: str, since: float = 0.0) -> float | None:
        return next((t for t in self.downs.get(handle, ()) if t >= since), None)

    def write(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def say(self, text: str) -> None:
        self.write(_say_line(text))

    def publics(self, start: int = 0) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.public[start:]]

    def cpu_s(self) -> float:
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime

    def rss_mb(self) -> float:
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def close(self) -> None:
        self._file.close()


KEEP: Path | None = None  # --keep: leave every node's output here


@contextlib.contextmanager
def _workdir() -> Iterator[str]:
    if KEEP is None:
        with tempfile.TemporaryDirectory() as tmp:
            yield tmp
    else:
        KEEP.mkdir(parents=True, exist_ok=True)
        yield tempfile.mkdtemp(dir=KEEP)


def _say_line(text: str) -> bytes:
    return (json.dumps({"cmd": "say", "text": text}) + "\n").encode()


def _handle(i: int) -> str:
    return f"n{i:02d}"


def start_nodes(
    lan: VirtualLan, flavor: Flavor, tmp: Path, hosts: Iterable[int], mentor_first: bool = False
) -> list[Node]:
    return [Node(lan, h, flavor, _handle(h), tmp, mentor=mentor_first and h == 1) for h in hosts]


def poll_all(nodes: Iterable[Node]) -> None:
    for node in nodes:
        node.poll()


def wait_until(
    check: Callable[[], float | None], nodes: Sequence[Node], timeout: float
) -> float | None:
    """Poll the nodes' files until `check` returns a time; None after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        poll_all(nodes)
        got = check()
        if got is not None or time.monotonic() > deadline:
            return got
        time.sleep(POLL_S)


def converged_at(nodes: Sequence[Node]) -> float | None:
    """When the last node could reach its last peer (and, for lanchat, its broker)."""
    latest = 0.0
    for node in nodes:
        for other in nodes:
            if other is not node:
                t = node.first_up(other.handle)
                if t is None:
                    return None
                latest = max(latest, t)
    if nodes[0].flavor.has_broker:
        if any(not n.brokers for n in nodes):
            return None
        if len({n.brokers[-1][1] for n in nodes}) != 1:
            return None  # two brokers still being merged
        latest = max(latest, *(n.brokers[-1][0] for n in nodes))
    return latest


def wait_converged(nodes: Sequence[Node], timeout: float = 60.0) -> float:
    done = wait_until(lambda: converged_at(nodes), nodes, timeout)
    if done is None:
        raise RuntimeError(f"{nodes[0].flavor.name}: {len(nodes)} nodes did not converge")
    return done


def wait_quiet(
    nodes: Sequence[Node], done: Callable[[], bool], idle_s: float, cap_s: float = 120.0
) -> bool:
    """Poll until `done()`, or until none of `nodes` wrote a public message for `idle_s`."""
    deadline = time.monotonic() + cap_s
    last, last_change = -1, time.monotonic()
    while time.monotonic() < deadline:
        poll_all(nodes)
        if done():
            return True
        total = sum(len(x.public) for x in nodes)
        if total != last:
            last, last_change = total, time.monotonic()
        elif time.monotonic() - last_change > idle_s:
            return False
        time.sleep(0.25)
    return False


def pace(node: Node, lines: Sequence[bytes], rate: float) -> tuple[float, float]:
    """Write `lines` to the node's stdin at `rate` per second; returns (start, end)."""
    t0 = time.time()
    i = 0
    while i < len(lines):
        due = min(len(lines), int((time.time() - t0) * rate) + 1)
        if due > i:
            node.write(b"".join(lines[i:due]))
            i = due
        gap = t0 + i / rate - time.time()
        if gap > 0 and i < len(lines):
            time.sleep(max(gap, 0.005))  # at high rates: a batch every 5 ms, not a busy loop
    return t0, time.time()


def _count(node: Node, start: int, marker: bytes) -> int:
    return sum(1 for line in node.public[start:] if marker in line)


def _pctl(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


# ---- 1. cold start ---------------------------------------------------------------------


def bench_cold(flavor: Flavor, n: int) -> Metrics:
    with _workdir() as tmp, VirtualLan(make_prefix(), n) as lan:
        t0 = time.time()
        nodes = start_nodes(lan, flavor, Path(tmp), range(1, n + 1))
        done = wait_converged(nodes, timeout=30.0 + 2.0 * n)
        started = [node.started_t for node in nodes]
        assert all(s is not None for s in started)
        last_started = max(s for s in started if s is not None)
        startup = max((node.started_t or 0.0) - node.spawn_t for node in nodes)
        for node in nodes:
            node.close()
    return {
        f"cold{n}_spawn": done - t0,
        f"cold{n}_startup": startup,
        f"cold{n}_started": done - last_started,
    }


# ---- 2-5. a room of ten: resources, latency, late join, vanish, rejoin ------------------


def bench_room(flavor: Flavor, resources: list[dict[str, Any]] | None = None) -> Metrics:
    n = 10
    out: Metrics = {}
    with _workdir() as tmp, VirtualLan(make_prefix(), n + 1) as lan:
        nodes = start_nodes(lan, flavor, Path(tmp), range(1, n + 1), mentor_first=True)
        wait_converged(nodes)
        cpu_conv = [node.cpu_s() for node in nodes]
        time.sleep(5.0)
        cpu_idle = [node.cpu_s() for node in nodes]
        out["idle_cpu_pct"] = statistics.mean(
            (b - a) / 5.0 * 100 for a, b in zip(cpu_conv, cpu_idle, strict=True)
        )
        out["startup_cpu_s"] = statistics.mean(cpu_conv)
        out.update(_latency(nodes))
        cpu_lat = [node.cpu_s() for node in nodes]
        rss = [node.rss_mb() for node in nodes]
        out["rss_mb"] = statistics.mean(rss)
        out["lat_cpu_s"] = statistics.mean(b - a for a, b in zip(cpu_idle, cpu_lat, strict=True))
        if resources is not None:
            for i, node in enumerate(nodes):
                role = "broker" if flavor.has_broker and i == 0 else ""
                role = "sender" if i == 1 else role
                resources.append(
                    {
                        "flavor": flavor.name,
                        "node": node.handle,
                        "role": role,
                        "cpu_to_converge_s": cpu_conv[i],
                        "idle_cpu_pct": (cpu_idle[i] - cpu_conv[i]) / 5.0 * 100,
                        "latency_phase_cpu_s": cpu_lat[i] - cpu_idle[i],
                        "rss_mb": rss[i],
                    }
                )
        late, newcomer = _late_join(lan, flavor, Path(tmp), nodes)
        out.update(late)
        nodes.append(newcomer)
        out.update(_vanish_rejoin(lan, nodes, host=n, side="switch"))
        out.update(_vanish_rejoin(lan, nodes, host=n - 1, side="host"))
        for node in nodes:
            node.close()
    return out


def _latency(nodes: Sequence[Node], count: int = 200, rate: float = 20.0) -> Metrics:
    sender = nodes[1]
    receivers = [node for node in nodes if node is not sender]
    poll_all(receivers)
    starts = [len(r.public) for r in receivers]
    lines = [_say_line(f"lat {i}") for i in range(count)]
    pace(sender, lines, rate)
    want = count * len(receivers)

    def all_in() -> float | None:
        got = sum(_count(r, s, b'"lat ') for r, s in zip(receivers, starts, strict=True))
        return time.time() if got >= want else None

    wait_until(all_in, receivers, 15.0)
    lat = [
        (ev["t"] - ev["sent_t"]) * 1000
        for r, s in zip(receivers, starts, strict=True)
        for ev in r.publics(s)
        if ev["text"].startswith("lat ")
    ]
    return {
        "lat_p50_ms": _pctl(lat, 50) if lat else None,
        "lat_p99_ms": _pctl(lat, 99) if lat else None,
        "lat_lost": float(want - len(lat)),
    }


def _late_join(
    lan: VirtualLan, flavor: Flavor, tmp: Path, room: Sequence[Node]
) -> tuple[Metrics, Node]:
    host = len(room) + 1
    newcomer = Node(lan, host, flavor, _handle(host), tmp, mentor=False)
    everyone = [*room, newcomer]

    def joined() -> float | None:
        times = [node.first_up(newcomer.handle) for node in room]
        times += [newcomer.first_up(node.handle) for node in room]
        if flavor.has_broker:
            times.append(newcomer.brokers[-1][0] if newcomer.brokers else None)
        return None if None in times else max(t for t in times if t is not None)

    done = wait_until(joined, everyone, CAP_S)
    if done is None or newcomer.started_t is None:
        return {"late_spawn": None, "late_started": None}, newcomer
    return {
        "late_spawn": done - newcomer.spawn_t,
        "late_started": done - newcomer.started_t,
    }, newcomer


def _vanish_rejoin(
    lan: VirtualLan, nodes: Sequence[Node], host: int, side: str, hold_s: float = HOLD_S
) -> Metrics:
    """Link of `host` down until all others report it gone (and at least `hold_s`); then up
    until they see it again."""
    gone = next(node for node in nodes if node.host == host)
    others = [node for node in nodes if node is not gone]
    poll_all(nodes)
    t_down = time.time()
    lan.link_down(host, side=side)  # type: ignore[arg-type]

    def all_report_gone() -> float | None:
        times = [node.first_down(gone.handle, t_down) for node in others]
        return None if None in times else max(t for t in times if t is not None)

    seen_gone = wait_until(all_report_gone, nodes, VANISH_CAP_S)
    time.sleep(max(0.0, t_down + hold_s - time.time()))
    t_up = time.time()
    lan.link_up(host, side=side)  # type: ignore[arg-type]

    def they_see_it() -> float | None:
        times = [node.first_up(gone.handle, t_up) for node in others]
        return None if None in times else max(t for t in times if t is not None)

    def it_sees_them() -> float | None:
        # A peer it dropped meanwhile must come back; one it never dropped still counts
        # (lanchat keeps its roster while it looks for a broker), but then the node must be
        # connected again: lanchat reports a broker after the link came up.
        times: list[float | None] = [
            gone.first_up(node.handle, t_up)
            if gone.first_down(node.handle, t_down) is not None
            else t_up
            for node in others
        ]
        if gone.flavor.has_broker:
            times.append(next((t for t, _ in gone.brokers if t >= t_up), None))
        return None if None in times else max(t for t in times if t is not None)

    back = wait_until(they_see_it, nodes, CAP_S)
    back_self = wait_until(it_sees_them, nodes, max(1.0, t_up + CAP_S - time.time()))
    return {
        f"vanish_{side}": None if seen_gone is None else seen_gone - t_down,
        f"rejoin_{side}": None if back is None else back - t_up,
        f"rejoin_{side}_self": None if back_self is None else back_self - t_up,
    }


# ---- 6. throughput -------------------------------------------------------------------

RATES = (200, 500, 1000, 1500, 2000, 2500, 3000, 3500, 4000, 5000, 6000, 7000, 8000, 10000)
TEXT_BYTES = 200


def _stream(
    sender: Node, receivers: Sequence[Node], tag: str, count: int, rate: float | None
) -> dict[str, float]:
    """Send `count` 200-byte messages (paced at `rate`, or all at once); wait; count."""
    poll_all(receivers)
    starts = [len(r.public) for r in receivers]
    lines = [_say_line(f"{tag}:{i}:".ljust(TEXT_BYTES, "x")) for i in range(count)]
    if rate is None:
        t0 = time.time()
        sender.write(b"".join(lines))
    else:
        t0, _ = pace(sender, lines, rate)
    marker = f'"{tag}:'.encode()
    want = count * len(receivers)
    wait_quiet(
        receivers,
        lambda: sum(len(r.public) - s for r, s in zip(receivers, starts, strict=True)) >= want,
        idle_s=5.0,
    )
    lost, last_t = 0, t0
    for r, s in zip(receivers, starts, strict=True):
        mine = [line for line in r.public[s:] if marker in line]
        lost += count - len({json.loads(line)["text"] for line in mine})
        if mine:
            last_t = max(last_t, json.loads(mine[-1])["t"])
    return {"lost": float(lost), "rate": count / (last_t - t0) if last_t > t0 else 0.0}


def bench_throughput(flavor: Flavor, step_s: float = 5.0) -> Metrics:
    n = 10
    best = 0.0
    with _workdir() as tmp, VirtualLan(make_prefix(), n) as lan:
        nodes = start_nodes(lan, flavor, Path(tmp), range(1, n + 1), mentor_first=True)
        wait_converged(nodes)
        sender, receivers = nodes[1], [x for i, x in enumerate(nodes) if i != 1]
        misses, peak, missed_once = 0, 0.0, False
        for k, rate in enumerate(RATES):
            got = _stream(sender, receivers, f"tp{k}", max(400, int(rate * step_s)), rate)
            kept_up = got["rate"] >= 0.9 * rate
            ok = got["lost"] == 0 and kept_up
            print(
                f"    {flavor.name} {rate:>6}/s offered: delivered {got['rate']:8.0f}/s,"
                f" lost {got['lost']:.0f} -> {'ok' if ok else 'FAIL'}",
                file=sys.stderr,
            )
            if got["lost"] == 0:
                peak = max(peak, got["rate"])
            if got["lost"]:
                break  # pyre cuts a peer off for good after a loss: nothing more to learn
            misses = 0 if ok else misses + 1
            missed_once = missed_once or not ok
            if ok and not missed_once:
                best = float(rate)  # kept up at this rate and every lower one
            if misses == 2:
                break  # fell behind twice in a row: past the limit, not a hiccup
        for node in nodes:
            node.close()
    return {"tp_sustained": best, "tp_peak": peak}


def bench_burst(flavor: Flavor, count: int = 3000) -> Metrics:
    n = 10
    with _workdir() as tmp, VirtualLan(make_prefix(), n) as lan:
        nodes = start_nodes(lan, flavor, Path(tmp), range(1, n + 1), mentor_first=True)
        wait_converged(nodes)
        sender, receivers = nodes[1], [x for i, x in enumerate(nodes) if i != 1]
        got = _stream(sender, receivers, "burst", count, None)
        for node in nodes:
            node.close()
    return {"burst_rate": got["rate"], "burst_lost": got["lost"]}


# ---- 7. a receiver that stops for 5 s -------------------------------------------------


def bench_slow(flavor: Flavor, key: str, count: int, rate: float) -> Metrics:
    """Stream `count` messages at `rate`; one receiver is stopped from 0.5 s to 5.5 s."""
    n = 10
    with _workdir() as tmp, VirtualLan(make_prefix(), n) as lan:
        nodes = start_nodes(lan, flavor, Path(tmp), range(1, n + 1), mentor_first=True)
        wait_converged(nodes)
        sender, slow = nodes[1], nodes[4]
        others = [x for x in nodes if x not in (sender, slow)]
        poll_all(nodes)
        start = len(slow.public)
        lines = [_say_line(f"{key}:{i}:".ljust(TEXT_BYTES, "x")) for i in range(count)]
        # Timers, not the pacing loop: a sender that stops reading its stdin must not
        # stretch the pause.
        stop = threading.Timer(0.5, os.kill, (slow.pid, signal.SIGSTOP))
        cont = threading.Timer(5.5, os.kill, (slow.pid, signal.SIGCONT))
        stop.start()
        cont.start()
        try:
            pace(sender, lines, rate)
        finally:
            cont.join()
        marker = f'"{key}:'.encode()
        wait_quiet([slow], lambda: _count(slow, start, marker) >= count, idle_s=8.0)
        got = len({ev["text"] for ev in slow.publics(start) if ev["text"].startswith(key)})
        # Is it still in the room? 20 more messages, paced.
        mark = len(slow.public)
        pace(sender, [_say_line(f"after {i}") for i in range(20)], 20.0)
        wait_quiet([slow], lambda: _count(slow, mark, b'"after ') >= 20, idle_s=5.0)
        after = _count(slow, mark, b'"after ')
        # Shown as present by the others at the end (never gone, or back)?
        poll_all(others)
        present = sum(
            1 for x in others if len(x.ups.get(slow.handle, ())) > len(x.downs.get(slow.handle, ()))
        )
        for node in nodes:
            node.close()
    return {f"{key}_got": float(got), f"{key}_after": float(after), f"{key}_shown": float(present)}


# ---- 8. failover (lanchat only) -------------------------------------------------------


def bench_failover(flavor: Flavor, how: str = "kill") -> Metrics:
    """The broker dies (`how`="kill": SIGKILL, its sockets close at once) or vanishes
    ("link": its switch port goes down, only heartbeats can tell); a sender keeps talking."""
    n = 10
    with _workdir() as tmp, VirtualLan(make_prefix(), n) as lan:
        nodes = start_nodes(lan, flavor, Path(tmp), range(1, n + 1), mentor_first=True)
        wait_converged(nodes)
        broker, live = nodes[0], nodes[1:]
        assert broker.brokers[-1][1] == broker.handle
        sender, receivers = live[0], live[1:]
        poll_all(nodes)
        starts = [len(r.public) for r in receivers]
        pace(sender, [_say_line(f"fo {i}") for i in range(20)], 20.0)
        t_kill = time.time()
        if how == "kill":
            lan.kill(broker.host)
        else:
            lan.link_down(broker.host, side="switch")
        pace(sender, [_say_line(f"fo {i}") for i in range(20, 60)], 20.0)

        def new_broker() -> float | None:
            times = [
                next((t for t, h in x.brokers if t >= t_kill and h != broker.handle), None)
                for x in live
            ]
            return None if None in times else max(t for t in times if t is not None)

        moved = wait_until(new_broker, live, CAP_S)

        def all_in() -> float | None:
            got = sum(_count(r, s, b'"fo ') for r, s in zip(receivers, starts, strict=True))
            return time.time() if got >= 60 * len(receivers) else None

        wait_until(all_in, receivers, 20.0)
        lost = 0
        for r, s in zip(receivers, starts, strict=True):
            texts = [ev["text"] for ev in r.publics(s) if ev["text"].startswith("fo ")]
            assert len(texts) == len(set(texts)), "a message was shown twice"
            lost += 60 - len(texts)
        for node in nodes:
            node.close()
    key = "failover" if how == "kill" else "failover_link"
    return {key + "_s": None if moved is None else moved - t_kill, key + "_lost": float(lost)}


# ---- the table ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    key: str
    label: str
    higher_better: bool = False
    cap: str = "never (>30 s)"


def _rows(sizes: Sequence[int]) -> list[Row]:
    rows = []
    for n in sizes:
        rows += [
            Row(f"cold{n}_spawn", f"cold start N={n}, from spawn (s)"),
            Row(f"cold{n}_startup", "  start-up: spawn -> started, slowest (s)"),
            Row(f"cold{n}_started", "  from the last node started (s)"),
        ]
    return [
        *rows,
        Row("late_spawn", "late join into 10, from spawn (s)"),
        Row("late_started", "  from the newcomer started (s)"),
        Row("vanish_switch", "vanished peer noticed, switch side (s)", cap="never (>45 s)"),
        Row("rejoin_switch", "rejoin after link up, switch side (s)"),
        Row("rejoin_switch_self", "  and it sees all again (s)"),
        Row("vanish_host", "vanished peer noticed, host side (s)", cap="never (>45 s)"),
        Row("rejoin_host", "rejoin after link up, host side (s)"),
        Row("rejoin_host_self", "  and it sees all again (s)"),
        Row("lat_p50_ms", "public latency p50, N=10 (ms)"),
        Row("lat_p99_ms", "public latency p99, N=10 (ms)"),
        Row("lat_lost", "  messages lost (of 9 x 200)"),
        Row("tp_sustained", "sustained lossless 1->9, 200 B (msgs/s)", higher_better=True),
        Row("tp_peak", "  peak delivered rate with zero loss (msgs/s)", higher_better=True),
        Row("burst_rate", "burst of 3,000 at once: delivered (msgs/s)", higher_better=True),
        Row("burst_lost", "  burst: messages lost (of 9 x 3,000)"),
        Row("slow_got", "receiver stopped 5 s in 2,000 @400/s: got", higher_better=True),
        Row("slow_after", "  then 20 more: got", higher_better=True),
        Row("slow_shown", "  others showing it present (of 8)", higher_better=True),
        Row("heavy_got", "receiver stopped 5 s in 10,000 @2,000/s: got", higher_better=True),
        Row("heavy_after", "  then 20 more: got", higher_better=True),
        Row("heavy_shown", "  others showing it present (of 8)", higher_better=True),
        Row("failover_s", "failover after broker SIGKILL, N=10 (s)"),
        Row("failover_lost", "  messages lost (of 8 x 60)"),
        Row("failover_link_s", "failover after broker link down, N=10 (s)"),
        Row("failover_link_lost", "  messages lost (of 8 x 60)"),
        Row("startup_cpu_s", "CPU per node, spawn -> converged, N=10 (s)"),
        Row("idle_cpu_pct", "idle CPU per node, N=10 (%)"),
        Row("lat_cpu_s", "CPU per node for the 200-msg latency phase (s)"),
        Row("rss_mb", "RSS per node, N=10 (MB)"),
    ]


def _cell(values: list[float | None], cap: str) -> str:
    real = [v for v in values if v is not None]
    if not values:
        return "-"
    if not real:
        return cap
    fmt = "{:.0f}" if max(abs(v) for v in real) >= 100 else "{:.3g}"
    text = "/".join(fmt.format(v) for v in (min(real), statistics.median(real), max(real)))
    if len(real) < len(values):
        text += f" ({len(values) - len(real)}x never)"
    return text


def _ratio(a: list[float | None], b: list[float | None]) -> str:
    ra = [v for v in a if v is not None]
    rb = [v for v in b if v is not None]
    if not ra or not rb or len(ra) < len(a) or len(rb) < len(b):
        return "-"
    ma, mb = statistics.median(ra), statistics.median(rb)
    if mb == 0:
        return "-" if ma else "="
    return f"{ma / mb:.2f}"


def print_table(results: dict[str, dict[str, list[float | None]]], sizes: Sequence[int]) -> None:
    lw, cw = 47, 26
    print()
    print(f"{'figure (min/median/max)':{lw}} {'lanchat':>{cw}} {'pyre':>{cw}} {'ratio':>6}")
    print("-" * (lw + 2 * cw + 9))
    for row in _rows(sizes):
        a = results["lanchat"].get(row.key, [])
        b = results["pyre"].get(row.key, [])
        if not a and not b:
            continue
        print(
            f"{row.label:{lw}} {_cell(a, row.cap):>{cw}} {_cell(b, row.cap):>{cw}}"
            f" {_ratio(a, b):>6}"
        )
    print("ratio = lanchat median / pyre median")


def print_resources(resources: list[dict[str, Any]]) -> None:
    if not resources:
        return
    print()
    print("per node, N=10 room (first run):")
    print(
        f"{'chat':8} {'node':5} {'role':7} {'CPU to converge s':>18} {'idle CPU %':>11}"
        f" {'latency-phase CPU s':>20} {'RSS MB':>7}"
    )
    for r in resources:
        print(
            f"{r['flavor']:8} {r['node']:5} {r['role']:7} {r['cpu_to_converge_s']:18.2f}"
            f" {r['idle_cpu_pct']:11.1f} {r['latency_phase_cpu_s']:20.2f} {r['rss_mb']:7.1f}"
        )


def table_from_files(paths: Sequence[Path]) -> int:
    """Print the table (and the per-node figures) from saved --json files."""
    results: dict[str, dict[str, list[float | None]]] = {"lanchat": {}, "pyre": {}}
    machines: dict[str, str] = {}
    resources: dict[str, list[dict[str, Any]]] = {}
    for path in paths:
        data = json.loads(path.read_text())
        for chat, values in data["results"].items():
            if values:
                results[chat] = values
                machine = data["machine"]
                machines[chat] = machine if isinstance(machine, str) else machine[chat]
                resources[chat] = [r for r in data["resources"] if r["flavor"] == chat]
    keys = set(results["lanchat"]) | set(results["pyre"])
    sizes = sorted(int(k[4:].split("_")[0]) for k in keys if k.endswith("_spawn") and "cold" in k)
    runs = max((len(v) for chat in results.values() for v in chat.values()), default=0)
    for chat, machine in machines.items():
        print(f"{chat}: {machine}")
    print(f"up to {runs} run(s) per figure")
    print_table(results, sizes)
    print_resources([r for chat in ("lanchat", "pyre") for r in resources.get(chat, [])])
    return 0


# ---- a quiet machine ------------------------------------------------------------------


def _cpu_idle_share(window_s: float) -> float:
    """Share of all CPUs' time spent idle over the next `window_s` seconds."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        return values[3] + values[4], sum(values)  # idle + iowait, total

    idle0, total0 = sample()
    time.sleep(window_s)
    idle1, total1 = sample()
    return (idle1 - idle0) / max(1, total1 - total0)


def wait_for_quiet(min_idle: float, max_wait_s: float = 900.0) -> None:
    """Wait until the machine is mostly idle: other work on 2 cores distorts every figure."""
    if min_idle <= 0:
        return
    deadline = time.monotonic() + max_wait_s
    told = False
    while (idle := _cpu_idle_share(2.0)) < min_idle:
        if time.monotonic() > deadline:
            print(f"  (still busy: {idle:.0%} idle; measuring anyway)", file=sys.stderr)
            return
        if not told:
            print(f"  (waiting for a quiet machine: {idle:.0%} idle)", file=sys.stderr)
            told = True


# ---- main ---------------------------------------------------------------------------------


def _revision() -> str:
    """The lanchat commit measured, and whether lanchat/ had local changes."""
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "lanchat"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" + local changes in lanchat/" if dirty else "")


def _why_not() -> str | None:
    why = missing_requirements()
    if why:
        return why
    if importlib.util.find_spec("pyre") is None:
        return "pyre is not installed (pip install zeromq-pyre==0.3.4, or the `bench` extra)"
    if importlib.util.find_spec("zmq") is None or importlib.util.find_spec("zeroconf") is None:
        return "lanchat's dependencies are not installed (pip install -e .)"
    return None


def _compile_lanchat() -> None:
    """Write lanchat's bytecode before any node starts, as ``pip install`` would.

    pyre runs from a wheel with its .pyc files. lanchat runs from this checkout: with
    PYTHONDONTWRITEBYTECODE=1, or sources edited since the last run, every node would
    compile its modules at start (~+50 % CPU until ready, bench_startup.py --as-is).
    compileall writes the files even under PYTHONDONTWRITEBYTECODE.
    """
    import compileall

    compileall.compile_dir(ROOT / "lanchat", quiet=1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--sizes", default="3,10,20,40", help="cold-start sizes (default 3,10,20,40)")
    ap.add_argument("--only", default=",".join(SCENARIOS), help=f"subset of {','.join(SCENARIOS)}")
    ap.add_argument("--json", type=Path, help="also write every measured value to this file")
    ap.add_argument(
        "--min-idle",
        type=float,
        default=0.85,
        help="before each figure, wait until this share of CPU time is idle (0: never wait)",
    )
    ap.add_argument("--keep", type=Path, help="keep every node's output under this directory")
    ap.add_argument("--chats", default="lanchat,pyre", help="measure only these (lanchat,pyre)")
    ap.add_argument(
        "--table",
        type=Path,
        nargs="+",
        metavar="JSON",
        help="measure nothing: print the table from --json files (for each chat, the last"
        " file that has it wins)",
    )
    args = ap.parse_args()
    if args.table:
        return table_from_files(args.table)
    global KEEP
    KEEP = args.keep
    chats = [f for f in (LANCHAT, PYRE) if f.name in args.chats.split(",")]
    if not chats:
        ap.error("--chats: lanchat, pyre or both")
    why = _why_not()
    if why:
        print(f"compare_pyre: cannot run: {why}", file=sys.stderr)
        return 2
    if LANCHAT in chats:
        _compile_lanchat()
    sizes = [int(x) for x in args.sizes.split(",") if x]
    only = set(args.only.split(","))
    unknown = only - set(SCENARIOS)
    if unknown:
        ap.error(f"unknown scenarios: {sorted(unknown)}")
    results: dict[str, dict[str, list[float | None]]] = {
        "lanchat": defaultdict(list),
        "pyre": defaultdict(list),
    }
    resources: list[dict[str, Any]] = []

    def record(flavor: Flavor, what: str, fn: Callable[[], Metrics]) -> None:
        wait_for_quiet(args.min_idle)
        t = time.monotonic()
        try:
            got = fn()
        except Exception:
            print(f"  {flavor.name} {what}: FAILED", file=sys.stderr)
            traceback.print_exc()
            return
        for key, value in got.items():
            results[flavor.name][key].append(value)
        shown = ", ".join(f"{k}={'never' if v is None else f'{v:.3g}'}" for k, v in got.items())
        print(f"  {flavor.name} {what} ({time.monotonic() - t:.0f} s): {shown}", file=sys.stderr)

    machine = (
        f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}, lanchat {_revision()},"
        f" pyre {importlib.metadata.version('zeromq-pyre')}"
    )
    print(f"lanchat vs pyre on a virtual LAN; {args.runs} run(s); {machine}", file=sys.stderr)
    for run in range(args.runs):
        print(f"run {run + 1}/{args.runs}", file=sys.stderr)
        for flavor in chats:
            if "cold" in only:
                for n in sizes:
                    record(flavor, f"cold N={n}", lambda f=flavor, n=n: bench_cold(f, n))
            if "room" in only:
                res = resources if run == 0 else None
                record(flavor, "room of 10", lambda f=flavor, r=res: bench_room(f, r))
            if "throughput" in only:
                record(flavor, "throughput", lambda f=flavor: bench_throughput(f))
            if "burst" in only:
                record(flavor, "burst", lambda f=flavor: bench_burst(f))
            if "slow" in only:
                record(flavor, "slow receiver", lambda f=flavor: bench_slow(f, "slow", 2000, 400.0))
                record(
                    flavor,
                    "slow receiver, heavy",
                    lambda f=flavor: bench_slow(f, "heavy", 10_000, 2000.0),
                )
            if "failover" in only and flavor.has_broker:
                record(flavor, "failover", lambda f=flavor: bench_failover(f, "kill"))
                record(flavor, "failover, link", lambda f=flavor: bench_failover(f, "link"))
    print(f"\n{machine}; {args.runs} run(s)")
    print_table(results, sizes)
    print_resources(resources)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "machine": {f.name: machine for f in chats},
                    "results": {f.name: results[f.name] for f in chats},
                    "resources": resources,
                },
                indent=1,
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
