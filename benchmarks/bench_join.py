"""What one late join costs the broker on the air: full nodes on a virtual LAN.

N full `lanchat --headless` nodes (the mentor is the broker), one per network namespace;
once the room has formed and settled, one more node joins. The broker's egress (its
namespace's transmitted bytes) from the newcomer's spawn until every node shows it
online plus 1.5 s (the coalesced publish), minus the idle rate over as long, is the
join's cost. Whole rosters to everyone grow with N^2; deltas with N.

    sudo python3 benchmarks/bench_join.py [--sizes 10,30] [--runs 3]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_scale import FileNode, _online, _wait
from vlan import VirtualLan, make_prefix, missing_requirements

SETTLE_S = 1.5


def _tx(pid: int) -> int:
    total = 0
    for line in Path(f"/proc/{pid}/net/dev").read_text().splitlines()[2:]:
        name, rest = line.split(":", 1)
        if name.strip() != "lo":
            total += int(rest.split()[8])
    return total


def one_join(n: int) -> float:
    with tempfile.TemporaryDirectory() as tmp_s, VirtualLan(make_prefix(), n + 1) as lan:
        tmp = Path(tmp_s)
        nodes = [FileNode(lan, i + 1, f"n{i:03d}", tmp, mentor=i == 0) for i in range(n)]
        everyone = {x.handle for x in nodes}
        _wait(lambda: all(_online(x) == everyone - {x.handle} for x in nodes), 120, nodes, 0.25)
        time.sleep(3.0)  # the start-up's last publishes and Syncs
        broker = nodes[0].proc.pid
        b0, t0 = _tx(broker), time.time()
        time.sleep(3.0)
        idle_rate = (_tx(broker) - b0) / (time.time() - t0)
        b0, t0 = _tx(broker), time.time()
        late = FileNode(lan, n + 1, "late", tmp, mentor=False)
        _wait(lambda: all("late" in _online(x) for x in nodes), 60, [*nodes, late], 0.05)
        time.sleep(SETTLE_S)
        cost = _tx(broker) - b0 - idle_rate * (time.time() - t0)
        for node in [*nodes, late]:
            node.proc.terminate()
        return cost


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10,30")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    why = missing_requirements()
    if why:
        print(f"cannot run: {why}")
        return 1
    medians: dict[int, float] = {}
    for n in (int(x) for x in args.sizes.split(",")):
        costs = [one_join(n) for _ in range(args.runs)]
        medians[n] = statistics.median(costs)
        shown = ", ".join(f"{c / 1000:.1f}" for c in costs)
        print(f"one late join into {n}: broker egress {shown} KB (median {medians[n] / 1000:.1f})")
    sizes = sorted(medians)
    for a, b in itertools.pairwise(sizes):
        print(f"join into {b} / join into {a}: {medians[b] / medians[a]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
