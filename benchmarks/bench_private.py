"""Private messages: the cost of end-to-end crypto, and the round trip through the broker.

Prints:
- per message, on this machine: sealing (NaCl Box) + signing (Ed25519) the sender does,
  and verifying + opening the receiver does (µs, median of 2,000);
- round trip between two friends through the broker with 10 nodes online: from sending a
  private message to receiving the recipient node's end-to-end acknowledgement
  (`delivered`), p50/p99 over 200 messages (needs root and iproute2 for the virtual LAN).

    python3 benchmarks/bench_private.py [--skip-lan]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from lannode import LanNode, wait_connected
from vlan import VirtualLan, make_prefix, missing_requirements

from lanchat.core import wire
from lanchat.identity import Identity, verify


def crypto_costs(rounds: int = 2000) -> tuple[float, float]:
    alice, bob = Identity.generate(), Identity.generate()
    item = wire.encode_inner(
        wire.Private(item="text", cseq=1, base=1, handle="alice", text="x" * 200, sent_t=1.0)
    )
    send, recv = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        direct = wire.Direct(sender=alice.key, recipient=bob.key, box=alice.seal_to(bob.key, item))
        sig = alice.sign(wire.signed_bytes(direct))
        t1 = time.perf_counter()
        assert verify(alice.key, wire.signed_bytes(direct), sig)
        bob.open_from(alice.key, direct.box)
        t2 = time.perf_counter()
        send.append((t1 - t0) * 1e6)
        recv.append((t2 - t1) * 1e6)
    return statistics.median(send), statistics.median(recv)


def round_trip(n: int = 10, count: int = 200) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp, VirtualLan(make_prefix(), n) as lan:
        nodes = [
            LanNode(
                lan, i + 1, f"p{i:02d}", Path(tmp) / f"p{i:02d}", ["--mentor"] if i == 0 else []
            )
            for i in range(n)
        ]
        wait_connected(nodes)
        ann, ben = nodes[1], nodes[2]  # two students; the broker is the mentor p00
        ann.send(cmd="request", to=ben.handle)
        ben.wait("request")
        ben.send(cmd="accept", **{"from": ann.handle})
        ann.wait("accepted")
        rtts = []
        for i in range(count):
            t0 = time.time()
            ann.send(cmd="msg", to=ben.handle, text=f"rtt {i}")
            ev = ann.wait("delivered", timeout=10)
            rtts.append((ev["t"] - t0) * 1000)
        for node in nodes:
            node.quit()
    rtts.sort()
    return rtts[len(rtts) // 2], rtts[int(len(rtts) * 0.99)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--skip-lan", action="store_true")
    args = ap.parse_args()
    seal, open_ = crypto_costs()
    print(f"sender: seal (Box) + sign (Ed25519), 200-char message: {seal:.1f} µs")
    print(f"receiver: verify + open:                              {open_:.1f} µs")
    if args.skip_lan:
        return 0
    why = missing_requirements()
    if why:
        print(f"round trip skipped: {why}")
        return 0
    p50, p99 = round_trip()
    print(f"private round trip via the broker, 10 nodes online: p50 {p50:.2f} ms, p99 {p99:.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
