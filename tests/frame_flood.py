"""A hostile client for tests: oversized frames at a node's router and info port.

Usage: frame_flood.py HOST INFO_PORT CONNECTIONS FRAMES MEGABYTES
Prints one JSON line per phase: ``{"step": "router"|"info", "frames", "cut", "seconds"}``.
Each of CONNECTIONS parallel connections sends FRAMES frames of MEGABYTES MB, each on a new
socket (a refused frame costs the connection). ``cut`` counts the frames whose connection
the node dropped; the others went out whole (or were still going when the wait ran out).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any

import zmq
from zmq.utils import z85
from zmq.utils.monitor import recv_monitor_message

WAIT_S = 60.0
# After the frame left our hands, how long its connection's drop may take to be reported:
# on a loaded machine the monitor's event comes seconds after (a 2-s wait missed 1 in 15).
TAKEN_GRACE_S = 10.0


def send_one(ctx: zmq.Context[Any], endpoint: str, big: bytes, curve: bytes | None) -> bool:
    """Send ``big`` on a fresh DEALER; True if the peer dropped the connection."""
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if curve is not None:
        public, secret = zmq.curve_keypair()
        sock.curve_serverkey = z85.encode(curve)
        sock.curve_publickey = public
        sock.curve_secretkey = secret
    monitor = sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
    try:
        sock.connect(endpoint)
        tracker = sock.send(big, copy=False, track=True)
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            if monitor.poll(100):
                return bool(recv_monitor_message(monitor)["event"] == zmq.EVENT_DISCONNECTED)
            if tracker.done:
                # Out of our hands: written whole, or dropped with the connection (whose
                # event follows at once). A peer that took it whole keeps the connection.
                deadline = min(deadline, time.monotonic() + TAKEN_GRACE_S)
        return False
    finally:
        sock.disable_monitor()
        monitor.close(linger=0)
        sock.close(linger=0)


def flood(
    ctx: zmq.Context[Any], endpoint: str, curve: bytes | None, conns: int, frames: int, big: bytes
) -> tuple[int, float]:
    cut = [0] * conns
    t0 = time.monotonic()

    def one_connection(i: int) -> None:
        for _ in range(frames):
            cut[i] += send_one(ctx, endpoint, big, curve)

    threads = [threading.Thread(target=one_connection, args=(i,)) for i in range(conns)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(cut), time.monotonic() - t0


def main() -> int:
    host, info_port, conns, frames, megabytes = sys.argv[1], *map(int, sys.argv[2:6])
    ctx: zmq.Context[Any] = zmq.Context()
    info = ctx.socket(zmq.DEALER)
    info.setsockopt(zmq.LINGER, 0)
    info.connect(f"tcp://{host}:{info_port}")
    info.send(b"info?")
    if not info.poll(20_000):
        return 2
    advert = json.loads(info.recv())
    info.close(linger=0)
    big = bytes(megabytes * 1024 * 1024)
    targets = [
        ("router", f"tcp://{host}:{advert['router_port']}", bytes.fromhex(advert["curve"])),
        ("info", f"tcp://{host}:{info_port}", None),
    ]
    for step, endpoint, curve in targets:
        cut, seconds = flood(ctx, endpoint, curve, conns, frames, big)
        line = {"step": step, "frames": conns * frames, "cut": cut, "seconds": round(seconds, 2)}
        print(json.dumps(line), flush=True)
    ctx.term()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
