"""LAN benchmarks on a virtual LAN of network namespaces (needs root and iproute2).

Prints:
- convergence: time from starting N nodes together until every node sees all others
  (peer_up) and is connected to the one broker, for N = 3, 10, 20;
- public-message latency p50/p99 at N = 10 (one message every 20 ms from one sender,
  measured from the author's send time to each receiver's event);
- sustained throughput 1 sender -> broker -> 9 receivers with no loss;
- failover: broker SIGKILL -> every node connected to the new broker, and messages lost
  while a sender keeps talking (must be 0); and the same after a clean exit.

    python3 benchmarks/bench_lan.py [--sizes 3,10,20] [--runs 3] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from lannode import LanNode
from vlan import VirtualLan, make_prefix, missing_requirements


def _handles(n: int) -> list[str]:
    return [f"n{i:02d}" for i in range(1, n + 1)]


def _start(lan: VirtualLan, tmp: Path, n: int, mentor_first: bool = False) -> list[LanNode]:
    nodes = []
    for i, handle in enumerate(_handles(n)):
        extra = ["--mentor"] if mentor_first and i == 0 else []
        nodes.append(LanNode(lan, i + 1, handle, tmp / handle, extra))
    return nodes


def _converged_at(nodes: list[LanNode], timeout: float = 30.0) -> float:
    """Wall time at which the last node saw its last peer and its broker."""
    latest = 0.0
    for node in nodes:
        want = {n.handle for n in nodes} - {node.handle}
        got: set[str] = set()
        while not want <= got:
            ev = node.wait("peer_up", timeout=timeout)
            got.add(ev["handle"])
            latest = max(latest, ev["t"])
        latest = max(
            latest,
            node.seen("broker")[-1]["t"]
            if node.seen("broker")
            else node.wait("broker", timeout=timeout)["t"],
        )
    return latest


def bench_convergence(n: int) -> tuple[float, float]:
    """(from spawning the processes, from the moment the last node began discovery).

    The first includes Python start-up: N interpreters importing zmq/zeroconf/nacl on this
    machine's 2 cores. The second is what the protocol itself costs once every node runs,
    which is what a room of laptops (one CPU each) sees.
    """
    with tempfile.TemporaryDirectory() as tmp, VirtualLan(make_prefix(), n) as lan:
        t0 = time.time()
        nodes = _start(lan, Path(tmp), n)
        done = _converged_at(nodes)
        last_start = max(n.seen("status")[0]["t"] for n in nodes)
        for node in nodes:
            node.quit()
        return done - t0, done - last_start


def _pctl(values: list[float], p: float) -> float:
    values = sorted(values)
    k = min(len(values) - 1, max(0, round(p / 100 * (len(values) - 1))))
    return values[k]


def bench_latency_throughput(n: int, count: int, burst: int) -> dict[str, float]:
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp, VirtualLan(make_prefix(), n) as lan:
        nodes = _start(lan, Path(tmp), n, mentor_first=True)
        _converged_at(nodes)
        sender, receivers = nodes[1], [x for x in nodes if x is not nodes[1]]
        # Latency: paced messages.
        for i in range(count):
            sender.send(cmd="say", text=f"lat {i}")
            time.sleep(0.02)  # pacing the load, not synchronisation
        lat = []
        for r in receivers:
            for _ in range(count):
                ev = r.wait("public", lambda e: e["text"].startswith("lat "), timeout=30)
                lat.append((ev["t"] - ev["sent_t"]) * 1000)
        out["lat_p50_ms"] = _pctl(lat, 50)
        out["lat_p99_ms"] = _pctl(lat, 99)
        # Throughput: a burst as fast as the sender can take it; all must arrive.
        t0 = time.time()
        lines = b"".join(
            f'{{"cmd":"say","text":"tp {i} {"x" * 150}"}}\n'.encode() for i in range(burst)
        )
        assert sender.proc.stdin is not None
        sender.proc.stdin.write(lines)
        sender.proc.stdin.flush()
        last = 0.0
        lost = 0
        for r in receivers:
            got = 0
            try:
                while got < burst:
                    ev = r.wait("public", lambda e: e["text"].startswith("tp "), timeout=60)
                    got += 1
                    last = max(last, ev["t"])
            except TimeoutError:
                lost += burst - got
        out["throughput_msgs_s"] = burst / (last - t0) if last > t0 else 0.0
        out["throughput_lost"] = float(lost)
        for node in nodes:
            node.quit()
    return out


def bench_failover(n: int, clean: bool) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp, VirtualLan(make_prefix(), n) as lan:
        nodes = _start(lan, Path(tmp), n, mentor_first=True)
        _converged_at(nodes)
        broker = nodes[0]
        live = nodes[1:]
        sender = live[0]
        for i in range(20):
            sender.send(cmd="say", text=f"fo {i}")
        live[1].wait("public", lambda e: e["text"] == "fo 0", timeout=10)
        t_kill = time.time()
        if clean:
            broker.quit()
        else:
            broker.kill()
        for i in range(20, 60):
            sender.send(cmd="say", text=f"fo {i}")
        connected = []
        for node in live:
            ev = node.wait("broker", lambda e: e["handle"] != broker.handle, timeout=15)
            connected.append(ev["t"])
        lost = 0
        for node in live[1:]:

            def texts(node: LanNode = node) -> set[str]:
                return {e["text"] for e in node.seen("public") if e["text"].startswith("fo ")}

            try:
                while len(texts()) < 60:
                    node.wait("public", timeout=15)
            except TimeoutError:
                lost += 60 - len(texts())
            shown = [e["text"] for e in node.seen("public") if e["text"].startswith("fo ")]
            assert len(shown) == len(set(shown)), "a message was shown twice"
        for node in live:
            node.quit()
        return {"failover_s": max(connected) - t_kill, "lost": float(lost)}


def _summary(values: list[float]) -> str:
    return f"{min(values):8.3f} {statistics.median(values):8.3f} {max(values):8.3f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="3,10,20")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="one run, smaller bursts")
    args = ap.parse_args()
    why = missing_requirements()
    if why:
        print(f"cannot run: {why}")
        return 1
    runs = 1 if args.quick else args.runs
    print(f"lanchat LAN benchmarks ({runs} run(s) each; min / median / max)")
    print(f"{'figure':44} {'min':>8} {'median':>8} {'max':>8}")
    for n in [int(x) for x in args.sizes.split(",")]:
        vals = [bench_convergence(n) for _ in range(runs)]
        spawn = [v[0] for v in vals]
        started = [v[1] for v in vals]
        print(f"{f'convergence N={n}, from process spawn (s)':44} {_summary(spawn)}")
        print(f"{f'convergence N={n}, from last node start (s)':44} {_summary(started)}")
    lt = [bench_latency_throughput(10, 100, 1000 if args.quick else 3000) for _ in range(runs)]
    for key, label in (
        ("lat_p50_ms", "public latency p50, N=10 (ms)"),
        ("lat_p99_ms", "public latency p99, N=10 (ms)"),
        ("throughput_msgs_s", "throughput 1 -> 9 via broker (msgs/s)"),
        ("throughput_lost", "throughput: messages lost"),
    ):
        print(f"{label:44} {_summary([r[key] for r in lt])}")
    for clean in (False, True):
        fo = [bench_failover(5, clean) for _ in range(runs)]
        how = "clean exit" if clean else "SIGKILL"
        print(f"{f'failover after {how}, N=5 (s)':44} {_summary([r['failover_s'] for r in fo])}")
        print(f"{f'failover after {how}: messages lost':44} {_summary([r['lost'] for r in fo])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
