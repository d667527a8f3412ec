"""A 100-laptop workshop on one 2-core machine: N full headless nodes on a virtual LAN.

Each node is a real `lanchat --headless` process in its own network namespace. Their
events go to files (parsing 100 live streams in the harness would cost more CPU than the
nodes). Prints: start-up convergence (every node sees all others), RSS per node, broker
and average node CPU while idle, public-message latency to all N-1 receivers, and
failover (broker SIGKILL until every node reports the new broker, messages lost).

    python3 benchmarks/bench_scale.py [--nodes 100] [--keep DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from vlan import VirtualLan, make_prefix, missing_requirements

CLK_TCK = os.sysconf("SC_CLK_TCK")


class FileNode:
    def __init__(self, lan: VirtualLan, host: int, handle: str, tmp: Path, mentor: bool) -> None:
        self.handle = handle
        self.out = tmp / f"{handle}.jsonl"
        argv = [sys.executable, "-m", "lanchat", "--headless", "--handle", handle]
        argv += ["--profile", str(tmp / handle)] + (["--mentor"] if mentor else [])
        with self.out.open("wb") as out:
            self.proc = lan.spawn(
                host, argv, stdin=subprocess.PIPE, stdout=out, stderr=subprocess.DEVNULL
            )
        self._offset = 0
        self.events: list[dict[str, Any]] = []

    def poll(self) -> list[dict[str, Any]]:
        with self.out.open("rb") as f:
            f.seek(self._offset)
            data = f.read()
        complete = data[: data.rfind(b"\n") + 1]
        self._offset += len(complete)
        new = [json.loads(line) for line in complete.splitlines() if line.strip()]
        self.events += new
        return new

    def send(self, **cmd: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        self.proc.stdin.flush()

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0


def _wait(pred: Any, timeout: float, nodes: list[FileNode], step: float = 0.25) -> float:
    deadline = time.time() + timeout
    while time.time() < deadline:
        for node in nodes:
            node.poll()
        if pred():
            return time.time()
        time.sleep(step)  # a survey of N files: polling, not synchronisation
    raise TimeoutError("condition not reached")


def _online(node: FileNode) -> set[str]:
    up: set[str] = set()
    for e in node.events:
        if e["ev"] == "peer_up":
            up.add(e["handle"])
        elif e["ev"] == "peer_down":
            up.discard(e["handle"])
    return up


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=100)
    ap.add_argument("--keep", type=Path, help="leave every node's event log and profile here")
    args = ap.parse_args()
    why = missing_requirements()
    if why:
        print(f"cannot run: {why}")
        return 1
    n = args.nodes
    with tempfile.TemporaryDirectory() as tmp_s, VirtualLan(make_prefix(), n) as lan:
        tmp = Path(tmp_s)
        if args.keep is not None:
            args.keep.mkdir(parents=True, exist_ok=True)
            tmp = args.keep
        t0 = time.time()
        nodes = [FileNode(lan, i + 1, f"n{i:03d}", tmp, mentor=i == 0) for i in range(n)]
        everyone = {x.handle for x in nodes}
        done = _wait(
            lambda: all(_online(x) == everyone - {x.handle} for x in nodes), 240, nodes, 0.5
        )
        last_start = max(next(e["t"] for e in x.events if e["ev"] == "status") for x in nodes)
        print(f"nodes: {n} full headless nodes, one per network namespace, 2 cores")
        print(
            f"convergence from spawn: {done - t0:.2f} s; after the last node started: "
            f"{done - last_start:.2f} s"
        )
        broker = next(x for x in nodes if any(e["ev"] == "broker" and e["self"] for e in x.events))
        print(f"broker: {broker.handle}")
        # Nobody left during the start: every peer_down is a node reported gone that was not.
        downs = sum(1 for x in nodes for e in x.events if e["ev"] == "peer_down")
        print(f"peer_down events during the start (nobody left): {downs}")
        rss = [x.rss_mib() for x in nodes]
        print(f"RSS per node: median {statistics.median(rss):.1f} MiB, max {max(rss):.1f} MiB")
        cpu0 = {x.handle: x.cpu_s() for x in nodes}
        time.sleep(10.0)  # an idle room: heartbeats and beats only
        cpu1 = {x.handle: x.cpu_s() for x in nodes}
        idle = [(cpu1[h] - cpu0[h]) / 10.0 * 100 for h in cpu0]
        print(
            f"idle CPU: broker {(cpu1[broker.handle] - cpu0[broker.handle]) * 10:.1f} % of a "
            f"core, median node {statistics.median(idle):.2f} %"
        )
        # Latency: 30 paced public messages from one student to the other N-1.
        sender = nodes[-1]
        for i in range(30):
            sender.send(cmd="say", text=f"scale {i}")
            time.sleep(0.05)  # pacing the load
        receivers = [x for x in nodes if x is not sender]

        def all_got(count: int) -> bool:
            return all(
                sum(1 for e in x.events if e["ev"] == "public" and e["text"].startswith("scale "))
                >= count
                for x in receivers
            )

        _wait(lambda: all_got(30), 60, nodes)
        lat = sorted(
            (e["t"] - e["sent_t"]) * 1000
            for x in receivers
            for e in x.events
            if e["ev"] == "public" and e["text"].startswith("scale ")
        )
        print(
            f"public latency to {len(receivers)} receivers: p50 {lat[len(lat) // 2]:.1f} ms, "
            f"p99 {lat[int(len(lat) * 0.99)]:.1f} ms"
        )
        # Failover under load.
        t_kill = time.time()
        broker.proc.send_signal(signal.SIGKILL)
        broker.proc.wait()
        live = [x for x in nodes if x is not broker]
        for i in range(20):
            sender.send(cmd="say", text=f"fo {i}")

        def moved() -> bool:
            return all(
                any(
                    e["ev"] == "broker" and e["handle"] != broker.handle and e["t"] > t_kill
                    for e in x.events
                )
                for x in live
            )

        t_moved = _wait(moved, 60, live)
        first_ok = [
            min(
                e["t"]
                for e in x.events
                if e["ev"] == "broker" and e["handle"] != broker.handle and e["t"] > t_kill
            )
            for x in live
        ]
        with contextlib.suppress(TimeoutError):  # what is still missing then counts as lost
            _wait(
                lambda: all(
                    sum(1 for e in x.events if e["ev"] == "public" and e["text"].startswith("fo "))
                    >= 20
                    for x in live
                    if x is not sender
                ),
                60,
                live,
            )
        for x in live:
            if x is sender:
                continue
            got = {
                e["text"] for e in x.events if e["ev"] == "public" and e["text"].startswith("fo ")
            }
            if len(got) < 20:
                missing = sorted({f"fo {i}" for i in range(20)} - got, key=lambda t: int(t[3:]))
                print(f"  {x.handle} is missing {', '.join(missing)}", file=sys.stderr)
        lost = sum(
            20
            - len(
                {e["text"] for e in x.events if e["ev"] == "public" and e["text"].startswith("fo ")}
            )
            for x in live
            if x is not sender
        )
        print(
            f"failover after SIGKILL: every node on the new broker after "
            f"{max(first_ok) - t_kill:.2f} s (seen by the harness at {t_moved - t_kill:.2f} s), "
            f"messages lost: {lost}"
        )
        for x in nodes:
            if x.proc.poll() is None:
                x.send(cmd="quit")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
