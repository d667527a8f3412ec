"""What the hostile test clients share, built from the real wire code.

The clients run as their own processes on a virtual LAN (``rogue_client.py``,
``sly_client.py``, ``flood_client.py``) or in the test's process over the in-memory LAN
(``memroom.Rogue``). Each reaches a broker as a node would and sends the frames a node
would send; what they do with them (forge, flood, hide characters) stays in each client.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any, TypeVar

import zmq
from zmq.utils import z85

from lanchat.core import wire
from lanchat.core.files import MIN_CHUNK_BYTES, FileOffer

if TYPE_CHECKING:
    from lanchat.identity import Identity

_M = TypeVar("_M")


def say(step: str, **extra: object) -> None:
    """One JSON line per step on stdout, which the test reads."""
    print(json.dumps({"step": step, **extra}), flush=True)


# ---- reaching a broker (a client in its own process) ----------------------------------


def ask_advert(ctx: zmq.Context[Any], host: str, info_port: int) -> dict[str, Any]:
    """The advert a node's info port answers with (``broker`` names its broker, if any)."""
    info = ctx.socket(zmq.DEALER)
    info.connect(f"tcp://{host}:{info_port}")
    info.send(b"info?")
    advert: dict[str, Any] = json.loads(info.recv())
    info.close(linger=0)
    return advert


def broker_dealer(
    ctx: zmq.Context[Any],
    broker: dict[str, Any],
    curve: Identity,
    *,
    sndhwm: int | None = None,
    linger: int | None = None,
) -> zmq.Socket[bytes]:
    """A DEALER connected to ``broker`` (an advert) over CURVE, with ``curve``'s keys."""
    dealer: zmq.Socket[bytes] = ctx.socket(zmq.DEALER)
    dealer.curve_serverkey = z85.encode(bytes.fromhex(broker["curve"]))
    dealer.curve_publickey = curve.curve_public_z85
    dealer.curve_secretkey = curve.curve_secret_z85
    if sndhwm is not None:
        dealer.setsockopt(zmq.SNDHWM, sndhwm)
    if linger is not None:
        dealer.setsockopt(zmq.LINGER, linger)
    dealer.connect(f"tcp://{broker['address']}:{broker['router_port']}")
    return dealer


def receive_until(dealer: zmq.Socket[bytes], kind: type[_M]) -> _M:
    """Read (and drop) what the broker sends until a message of ``kind``; that message."""
    while True:
        msg, _ = wire.decode(dealer.recv_multipart())
        if isinstance(msg, kind):
            return msg


# ---- the frames a node would send -----------------------------------------------------


def hello(ident: Identity, handle: str, room: str, curve_key: bytes, **fields: Any) -> list[bytes]:
    """A Hello of ``ident``'s own, signed by it (``fields``: more of wire.Hello's fields)."""
    msg = wire.Hello(
        handle=handle,
        room=room,
        id_key=ident.key,
        curve_key=curve_key,
        started_at=time.time(),
        **fields,
    )
    return wire.encode(msg, ident.sign(wire.signed_bytes(msg)))


def request(ident: Identity, to: bytes, handle: str, cseq: int = 1) -> list[bytes]:
    """A sealed, signed chat request from ``ident`` (claiming ``handle``) to ``to``."""
    private = wire.Private(item="request", cseq=cseq, handle=handle, sent_t=time.time())
    box = ident.seal_to(to, wire.encode_inner(private))
    direct = wire.Direct(sender=ident.key, recipient=to, box=box)
    return wire.encode(direct, ident.sign(wire.signed_bytes(direct)))


def shared_offer(
    ident: Identity,
    handle: str,
    room: str,
    seq: int,
    *,
    offer_id: str,
    name: str,
    address: str,
    server_key: bytes,
) -> list[bytes]:
    """A public message sharing a file (of 10 bytes) that ``server_key`` claims to serve."""
    offer = FileOffer(
        offer_id=offer_id,
        name=name,
        size=10,
        sha256="0" * 64,
        address=address,
        port=1,
        server_key=server_key,
        chunk_size=MIN_CHUNK_BYTES,
        shared=True,
    )
    pub = wire.Public(
        author=ident.key,
        handle=handle,
        room=room,
        seq=seq,
        text=f"shares the file {offer.name}",
        sent_t=time.time(),
        offer=offer.to_json(),
    )
    return wire.encode(pub, ident.sign(wire.signed_bytes(pub)))
