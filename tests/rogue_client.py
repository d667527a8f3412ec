"""A hostile client for tests: connects to a broker like a node would, then misbehaves.

Usage: rogue_client.py BROKER_IP INFO_PORT  -- prints one JSON line per step.
"""

from __future__ import annotations

import json
import os
import sys
import time

import zmq
from zmq.utils import z85

from lanchat.core import wire
from lanchat.identity import Identity


def main() -> int:
    host, info_port = sys.argv[1], int(sys.argv[2])
    ctx = zmq.Context()
    info = ctx.socket(zmq.DEALER)
    info.connect(f"tcp://{host}:{info_port}")
    info.send(b"info?")
    advert = json.loads(info.recv())
    info.close(linger=0)
    broker = advert["broker"] or advert
    me = Identity.generate()
    dealer = ctx.socket(zmq.DEALER)
    dealer.curve_serverkey = z85.encode(bytes.fromhex(broker["curve"]))
    dealer.curve_publickey = me.curve_public_z85
    dealer.curve_secretkey = me.curve_secret_z85
    dealer.setsockopt(zmq.SNDHWM, 100_000)
    dealer.connect(f"tcp://{broker['address']}:{broker['router_port']}")
    # An oversized frame: the broker drops the connection before reading it (its socket's
    # maximum message size), so it goes on a connection of its own.
    oversized = ctx.socket(zmq.DEALER)
    oversized.curve_serverkey = z85.encode(bytes.fromhex(broker["curve"]))
    oversized.curve_publickey = me.curve_public_z85
    oversized.curve_secretkey = me.curve_secret_z85
    oversized.connect(f"tcp://{broker['address']}:{broker['router_port']}")
    oversized.send_multipart([b"LC\x01\x07", b"x" * 400_000, b""])
    oversized.close(linger=2000)

    def say(step: str, **extra: object) -> None:
        print(json.dumps({"step": step, **extra}), flush=True)

    # 1. Garbage, binary and truncated frames.
    dealer.send_multipart([b"\x00\xff garbage"])
    dealer.send_multipart([b"LC\x01\x07", b"{not json", b""])
    dealer.send_multipart([b"LC\x09\x01", b"{}", b""])  # another protocol version
    say("garbage")
    # 2. A Hello that claims someone else's keys (signed by us: the broker must refuse).
    victim = bytes.fromhex(advert["key"])
    forged = wire.Hello(
        handle="victim", room=advert["room"], id_key=victim, curve_key=me.curve_public
    )
    dealer.send_multipart(wire.encode(forged, me.sign(wire.signed_bytes(forged))))
    say("forged_hello", answer=wire.decode(dealer.recv_multipart())[0].code)
    # 3. A proper Hello of our own, then an unsigned-looking (wrong signature) Public and a
    # Public in the name of the victim.
    hello = wire.Hello(
        handle="rogue",
        room=advert["room"],
        id_key=me.key,
        curve_key=me.curve_public,
        started_at=time.time(),
    )
    dealer.send_multipart(wire.encode(hello, me.sign(wire.signed_bytes(hello))))
    welcome = None
    while welcome is None:
        msg, _ = wire.decode(dealer.recv_multipart())
        if isinstance(msg, wire.Welcome):
            welcome = msg
    say("joined")
    pub = wire.Public(
        author=me.key,
        handle="rogue",
        room=advert["room"],
        seq=1,
        text="bad sig",
        sent_t=time.time(),
    )
    dealer.send_multipart(wire.encode(pub, os.urandom(64)))
    theirs = wire.Public(
        author=victim,
        handle="victim",
        room=advert["room"],
        seq=99,
        text="I am the victim",
        sent_t=time.time(),
    )
    dealer.send_multipart(wire.encode(theirs, me.sign(wire.signed_bytes(theirs))))
    say("forged_public")
    # 4. A flood of valid messages of our own, as fast as the socket takes them.
    say("flooding")
    t0 = time.time()
    sent = 0
    while time.time() - t0 < 4.0:
        for _ in range(200):
            sent += 1
            flood = wire.Public(
                author=me.key,
                handle="rogue",
                room=advert["room"],
                seq=1000 + sent,
                text="flood",
                sent_t=time.time(),
            )
            dealer.send_multipart(wire.encode(flood, me.sign(wire.signed_bytes(flood))))
    say("flooded", sent=sent)
    dealer.close(linger=2000)
    ctx.term()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
