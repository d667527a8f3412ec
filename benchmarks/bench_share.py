"""A mentor shares a file with the room: 1 -> 10 full nodes on a virtual LAN.

Every receiver accepts at once and fetches peer to peer from the mentor's node. Prints the
total time until all ten have the file verified, the aggregate rate, and the bytes that
went through the broker (a student's laptop here, so the mentor's uploads do not count).

    python3 benchmarks/bench_share.py [--mb 50] [--receivers 10]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from lannode import LanNode, wait_connected
from vlan import VirtualLan, make_prefix, missing_requirements


def _bytes(lan: VirtualLan, host: int) -> int:
    out = lan.run(
        host,
        [
            "cat",
            "/sys/class/net/eth0/statistics/rx_bytes",
            "/sys/class/net/eth0/statistics/tx_bytes",
        ],
    ).stdout.split()
    return int(out[0]) + int(out[1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mb", type=int, default=50)
    ap.add_argument("--receivers", type=int, default=10)
    args = ap.parse_args()
    why = missing_requirements()
    if why:
        print(f"cannot run: {why}")
        return 1
    n = args.receivers + 2  # the broker (a student), the mentor, the receivers
    with tempfile.TemporaryDirectory() as tmp_s, VirtualLan(make_prefix(), n) as lan:
        tmp = Path(tmp_s)
        broker = LanNode(lan, 1, "broker", tmp / "broker")
        broker.wait("status", lambda e: e["state"] == "broker")
        time.sleep(3.5)  # past the settling window: the mentor must not take over the relay
        mentor = LanNode(lan, 2, "mentor", tmp / "mentor", ["--mentor"])
        receivers = [LanNode(lan, i + 3, f"r{i:02d}", tmp / f"r{i:02d}") for i in range(n - 2)]
        assert wait_connected([broker, mentor, *receivers]) == "broker"
        src = tmp / "material.bin"
        src.write_bytes(os.urandom(args.mb * 1024 * 1024))
        before = _bytes(lan, 1)
        t0 = time.time()
        mentor.send(cmd="share", path=str(src))
        offers = [r.wait("file_offer", timeout=60) for r in receivers]
        for r, offer in zip(receivers, offers, strict=True):
            r.send(cmd="accept_file", id=offer["id"])
        done = [r.wait("file_done", timeout=300)["t"] for r in receivers]
        total = max(done) - t0
        through_broker = _bytes(lan, 1) - before
        size = src.stat().st_size
        print(
            f"room share 1 -> {len(receivers)}: {args.mb} MB each, all verified after "
            f"{total:.2f} s ({len(receivers) * size / total / 1e6:.0f} MB/s aggregate)"
        )
        print(
            f"bytes through the broker's interface meanwhile: {through_broker:,} "
            f"({through_broker / (len(receivers) * size) * 100:.3f} % of what was delivered)"
        )
        for node in [broker, mentor, *receivers]:
            node.quit()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
