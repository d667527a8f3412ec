"""A hostile client for tests: floods a room through its broker, built from the real code.

Usage: flood_client.py BROKER_IP INFO_PORT MODE VICTIM COUNT SECONDS OWN_IP -- one JSON line
per step.

MODE ``requests``: COUNT throwaway identities over SECONDS, one connection each (the broker
binds one identity per connection: a second Hello with another key on the scout's
connection is tried first and must be refused), each sending a chat request to VICTIM
once the room has seen it join. MODE ``hands``: one identity raises COUNT hands and shares
COUNT files over SECONDS.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import zmq
from hostile import ask_advert, broker_dealer, hello, receive_until, request, say, shared_offer

from lanchat.core import wire
from lanchat.identity import Identity

HEARTBEAT_AFTER_S = 1.0  # a throwaway identity's heartbeat keeps it in the roster...
REQUEST_AFTER_S = 1.5  # ...until its request, sent once the room has seen it


class Flooder:
    def __init__(self, host: str, info_port: int, own_ip: str) -> None:
        self.ctx = zmq.Context()
        self.ctx.set(zmq.MAX_SOCKETS, 8192)  # a connection per identity, ~1,000 at once
        self.advert: dict[str, Any] = ask_advert(self.ctx, host, info_port)
        self.broker = self.advert["broker"] or self.advert
        self.curve = Identity.generate()  # one transport key for every identity
        self.address = own_ip

    def connect(self) -> zmq.Socket[bytes]:
        return broker_dealer(self.ctx, self.broker, self.curve, sndhwm=100_000, linger=2000)

    def hello(self, ident: Identity, handle: str) -> list[bytes]:
        return hello(
            ident,
            handle,
            self.advert["room"],
            self.curve.curve_public,
            address=self.address,
            router_port=1,
            info_port=1,
        )

    def join(self, ident: Identity, handle: str) -> tuple[zmq.Socket[bytes], wire.Roster]:
        """A connection that the broker welcomed, and the first roster it sent."""
        dealer = self.connect()
        dealer.send_multipart(self.hello(ident, handle))
        return dealer, receive_until(dealer, wire.Roster)


def requests(flood: Flooder, victim: str, count: int, seconds: float) -> None:
    scout = Identity.generate()
    dealer, roster = flood.join(scout, "scout")
    victim_key = next(p.id_key for p in roster.peers if p.handle == victim)
    # One connection, another identity: refused.
    dealer.send_multipart(flood.hello(Identity.generate(), "second"))
    answer = None
    while answer is None:
        msg, _ = wire.decode(dealer.recv_multipart())
        if isinstance(msg, wire.Refused):
            answer = msg.code
    say("rebind", answer=answer)
    # Everything prepared first: the flood itself is only sending.
    plan: list[tuple[float, int, str, list[bytes]]] = []
    for i in range(count):
        ident = Identity.generate()
        at = seconds * i / count
        frames = request(ident, victim_key, victim)
        plan.append((at, i, "hello", flood.hello(ident, f"t{i}")))
        plan.append((at + HEARTBEAT_AFTER_S, i, "beat", wire.encode(wire.Heartbeat(t=0.0))))
        plan.append((at + REQUEST_AFTER_S, i, "request", frames))
    plan.sort(key=lambda p: p[0])
    say("flooding")
    sockets: dict[int, zmq.Socket[bytes]] = {}
    start = time.monotonic()
    sent = 0
    first = last = 0.0
    for at, i, what, frames in plan:
        delay = start + at - time.monotonic()
        if delay > 0:
            time.sleep(delay)  # the flood's own schedule
        if what == "hello":
            sockets[i] = flood.connect()
        sockets[i].send_multipart(frames)
        if what == "request":
            sent += 1
            last = time.monotonic()
            first = first or last
            sockets.pop(i).close()  # lingers until sent
    say("flooded", sent=sent, seconds=round(last - first, 2))
    dealer.close()


def hands(flood: Flooder, count: int, seconds: float) -> None:
    ident = Identity.generate()
    dealer, _roster = flood.join(ident, "rogue")
    say("flooding")
    start = time.monotonic()
    for i in range(count):
        delay = start + seconds * i / count - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        if i % 200 == 0:
            dealer.send_multipart(wire.encode(wire.Heartbeat(t=time.time())))
        hand = wire.Hand(hand_id=os.urandom(8).hex(), topic=f"help {i}", eph_key=bytes(32))
        dealer.send_multipart(wire.encode(hand))
        shared = shared_offer(
            ident,
            "rogue",
            flood.advert["room"],
            i + 1,
            offer_id=os.urandom(16).hex(),
            name=f"f{i}.txt",
            address=flood.address,
            server_key=flood.curve.curve_public,
        )
        dealer.send_multipart(shared)
    say("flooded", sent=count, seconds=round(time.monotonic() - start, 2))
    dealer.send_multipart(wire.encode(wire.Goodbye(reason="done")))
    dealer.close()


def main() -> int:
    host, info_port, mode, victim = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    count, seconds = int(sys.argv[5]), float(sys.argv[6])
    flood = Flooder(host, info_port, sys.argv[7])
    if mode == "requests":
        requests(flood, victim, count, seconds)
    else:
        hands(flood, count, seconds)
    flood.ctx.term()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
