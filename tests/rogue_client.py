"""A hostile client for tests: connects to a broker like a node would, then misbehaves.

Usage: rogue_client.py BROKER_IP INFO_PORT  -- prints one JSON line per step.
"""

from __future__ import annotations

import os
import sys
import time

import zmq
from hostile import ask_advert, broker_dealer, hello, receive_until, say

from lanchat.core import wire
from lanchat.identity import Identity


def main() -> int:
    host, info_port = sys.argv[1], int(sys.argv[2])
    ctx = zmq.Context()
    advert = ask_advert(ctx, host, info_port)
    broker = advert["broker"] or advert
    me = Identity.generate()
    dealer = broker_dealer(ctx, broker, me, sndhwm=100_000)
    # An oversized frame: the broker drops the connection before reading it (its socket's
    # maximum message size), so it goes on a connection of its own.
    oversized = broker_dealer(ctx, broker, me)
    oversized.send_multipart([b"LC\x01\x07", b"x" * 400_000, b""])
    oversized.close(linger=2000)
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
    dealer.send_multipart(hello(me, "rogue", advert["room"], me.curve_public))
    receive_until(dealer, wire.Welcome)
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
