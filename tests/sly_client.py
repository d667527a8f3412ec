"""A hostile client for tests: joins a room and hides invisible characters everywhere.

Usage: sly_client.py BROKER_IP INFO_PORT SECONDS -- prints one JSON line per step. It sends
a public text, a status text and a hand topic full of zero-width characters, direction
marks, BOMs and separators, then keeps its connection alive for SECONDS.
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

FORMAT = "\u200b\u200c\u200d\ufeff\u2060\u200e\u200f\u061c\u00ad\U000e0041\u202e"
SEPARATORS = "\u2028\u2029"


def sly(word: str) -> str:
    """Format characters between the letters, the separators at the end."""
    return FORMAT.join(word) + SEPARATORS


def main() -> int:
    host, info_port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
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
    dealer.connect(f"tcp://{broker['address']}:{broker['router_port']}")
    hello = wire.Hello(
        handle="sly",
        room=advert["room"],
        id_key=me.key,
        curve_key=me.curve_public,
        started_at=time.time(),
    )
    dealer.send_multipart(wire.encode(hello, me.sign(wire.signed_bytes(hello))))
    while not isinstance(wire.decode(dealer.recv_multipart())[0], wire.Welcome):
        pass
    print(json.dumps({"step": "joined"}), flush=True)
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
    print(json.dumps({"step": "sent"}), flush=True)
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
