"""A hostile client for tests: joins a room and hides invisible characters everywhere.

Usage: sly_client.py BROKER_IP INFO_PORT SECONDS -- prints one JSON line per step. It sends
a public text, a status text and a hand topic full of zero-width characters, direction
marks, BOMs and separators, then keeps its connection alive for SECONDS.
"""

from __future__ import annotations

import os
import sys
import time

import zmq
from hostile import ask_advert, broker_dealer, hello, receive_until, say

from lanchat.core import wire
from lanchat.identity import Identity

FORMAT = "\u200b\u200c\u200d\ufeff\u2060\u200e\u200f\u061c\u00ad\U000e0041\u202e"
SEPARATORS = "\u2028\u2029"


def sly(word: str) -> str:
    """Format characters between the letters, the separators at the end."""
    return FORMAT.join(word) + SEPARATORS


def main() -> int:
    host, info_port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    ctx = zmq.Context()
    advert = ask_advert(ctx, host, info_port)
    broker = advert["broker"] or advert
    me = Identity.generate()
    dealer = broker_dealer(ctx, broker, me)
    dealer.send_multipart(hello(me, "sly", advert["room"], me.curve_public))
    receive_until(dealer, wire.Welcome)
    say("joined")
    status = "busy:" + sly("lunch")
    dealer.send_multipart(wire.encode(wire.Heartbeat(t=time.time(), status=status)))
    pub = wire.Public(
        author=me.key,
        handle="sly",
        room=advert["room"],
        seq=1,
        text=sly("hello"),
        sent_t=time.time(),
    )
    dealer.send_multipart(wire.encode(pub, me.sign(wire.signed_bytes(pub))))
    hand = wire.Hand(
        hand_id=os.urandom(8).hex(),
        topic=sly("loops"),
        eph_key=os.urandom(32),
        raised_at=time.time(),
    )
    dealer.send_multipart(wire.encode(hand))
    say("sent")
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        dealer.send_multipart(wire.encode(wire.Heartbeat(t=time.time(), status=status)))
        time.sleep(0.3)  # a client's heartbeat interval, not a synchronisation
    dealer.send_multipart(wire.encode(wire.Goodbye(reason="done")))
    dealer.close(linger=1000)
    ctx.term()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
