"""ZeroMQ adapter: the sockets of one node, and nothing else.

Every node binds, on its LAN address only:
- ``router`` (CURVE server): clients' DEALERs send Hello/Public/Direct here while this node
  is the broker; the authenticated CURVE key of the sender comes with every frame;
- ``pub`` (CURVE server): relays, beats and rosters fan out here while this node is broker;
- ``info`` (no encryption): answers anyone with this node's public advert, so
  ``--connect HOST`` can learn a broker's keys where mDNS cannot reach.

Each node also keeps one client pair (DEALER + SUB, CURVE clients) connected to the current
broker - itself included, so the broker's own user goes through the same path as everyone.
Sockets are bound before the node could ever become broker, so a failover never waits for
a bind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import typing
from dataclasses import dataclass
from typing import Any

import zmq
import zmq.asyncio
import zmq.auth
from zmq.auth.asyncio import AsyncioAuthenticator
from zmq.utils import z85
from zmq.utils.monitor import parse_monitor_message

__all__ = [
    "DEFAULT_INFO_PORT",
    "HEARTBEAT_TIMEOUT_MS",
    "BrokerLink",
    "Transport",
]

DEFAULT_INFO_PORT = 47100  # --connect HOST uses this when no port is given
_ZAP_DOMAIN = b"lanchat"
# ZMTP heartbeats, on every connection: answered by libzmq's own I/O thread, so a starved
# Python does not miss them; a peer silent for the timeout after a PING is dropped (a
# disconnect). Node relies on this to tell a busy broker from a vanished one.
HEARTBEAT_IVL_MS = 400
HEARTBEAT_TIMEOUT_MS = 1500
# PUB drops silently at its high-water mark; our gap repair recovers, but a larger queue
# means fewer repairs during bursts.
_HWM = 100_000


def _z85(key: bytes) -> bytes:
    return z85.encode(key)


def curve_server_socket(
    ctx: zmq.asyncio.Context, kind: int, public: bytes, secret: bytes
) -> zmq.asyncio.Socket:
    """A CURVE server socket whose every client passes the ZAP handler (see `Transport`)."""
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    sock.curve_server = True
    sock.curve_publickey = _z85(public)
    sock.curve_secretkey = _z85(secret)
    # The ZAP handler stamps each client's CURVE key on its messages ("User-Id").
    sock.zap_domain = _ZAP_DOMAIN
    sock.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_IVL_MS)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_MS)
    return sock


def curve_client_socket(
    ctx: zmq.asyncio.Context, kind: int, server_key: bytes, public: bytes, secret: bytes
) -> zmq.asyncio.Socket:
    """A CURVE client socket for the server with `server_key` (connect it yourself)."""
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    sock.curve_serverkey = _z85(server_key)
    sock.curve_publickey = _z85(public)
    sock.curve_secretkey = _z85(secret)
    sock.setsockopt(zmq.RECONNECT_IVL, 100)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
    # A SYN lost while a link comes back (the first packets after carrier-on are
    # dropped) would wait for the kernel's 1 s retransmit: connect afresh instead.
    sock.setsockopt(zmq.CONNECT_TIMEOUT, 300)
    # Heartbeats drop a dead connection even when no data is flowing.
    sock.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_IVL_MS)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_MS)
    return sock


def authenticated_key(frame: zmq.Frame) -> bytes:
    """The CURVE key the sender of `frame` authenticated with (set by the ZAP handler)."""
    try:
        user = frame.get("User-Id")
        return z85.decode(str(user)) if user else b""
    except (ValueError, zmq.ZMQError):
        return b""


def _incoming(frames: list[zmq.Frame]) -> Incoming:
    key = authenticated_key(frames[1]) if len(frames) > 1 else b""
    return Incoming(rid=frames[0].bytes, transport_key=key, frames=[f.bytes for f in frames[1:]])


# Non-blocking calls on the asyncio sockets themselves (never on a sync shadow: the zmq
# file descriptor is edge-triggered, and only the asyncio wrapper knows to re-check it).


def drain_nowait(sock: zmq.asyncio.Socket, limit: int) -> list[list[zmq.Frame]]:
    """Whatever else is already queued on ``sock`` (up to ``limit`` messages), no waiting."""
    out: list[list[zmq.Frame]] = []
    while len(out) < limit:
        fut = typing.cast(
            "asyncio.Future[list[zmq.Frame]]", sock.recv_multipart(flags=zmq.NOBLOCK, copy=False)
        )
        exc = fut.exception()
        if exc is not None:
            if isinstance(exc, zmq.Again):
                break
            raise exc
        out.append(fut.result())
    return out


def _send_nowait(sock: zmq.asyncio.Socket, frames: list[bytes]) -> bool:
    """Queue frames without waiting; False if the socket's queue is full (HWM)."""
    fut = typing.cast("asyncio.Future[Any]", sock.send_multipart(frames, flags=zmq.NOBLOCK))
    if not fut.done():  # behind an earlier awaited send: it goes out in turn
        fut.add_done_callback(_consume)
        return True
    exc = fut.exception()
    if exc is None:
        return True
    if isinstance(exc, zmq.Again):
        return False
    raise exc


def _consume(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


@dataclass(frozen=True, slots=True)
class Incoming:
    rid: bytes
    transport_key: bytes
    frames: list[bytes]


class BrokerLink:
    """This node's client sockets towards one broker."""

    def __init__(
        self,
        ctx: zmq.asyncio.Context,
        address: str,
        router_port: int,
        server_key: bytes,
        public: bytes,
        secret: bytes,
    ) -> None:
        self.address = address
        self.server_key = server_key
        self._ctx = ctx
        self._public = public
        self._secret = secret
        self.dealer = self._client_socket(zmq.DEALER)
        self.dealer.setsockopt(zmq.SNDHWM, _HWM)
        self.dealer.setsockopt(zmq.RCVHWM, _HWM)
        self.monitor = self.dealer.get_monitor_socket(
            zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED
        )
        self.dealer.connect(f"tcp://{address}:{router_port}")
        self.sub: zmq.asyncio.Socket | None = None

    def _client_socket(self, kind: int) -> zmq.asyncio.Socket:
        return curve_client_socket(self._ctx, kind, self.server_key, self._public, self._secret)

    def subscribe(self, pub_port: int) -> None:
        if self.sub is not None:
            return
        self.sub = self._client_socket(zmq.SUB)
        self.sub.setsockopt(zmq.RCVHWM, _HWM)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.sub.connect(f"tcp://{self.address}:{pub_port}")

    async def send(self, frames: list[bytes]) -> None:
        await self.dealer.send_multipart(frames)

    def send_nowait(self, frames: list[bytes]) -> bool:
        """Queue frames for the broker without waiting; False if the queue is full."""
        return _send_nowait(self.dealer, frames)

    async def recv_dealer_batch(self, limit: int = 500) -> list[list[bytes]]:
        first = await self.dealer.recv_multipart()
        return [first, *[[f.bytes for f in m] for m in drain_nowait(self.dealer, limit)]]

    async def recv_sub_batch(self, limit: int = 500) -> list[list[bytes]]:
        assert self.sub is not None
        first = await self.sub.recv_multipart()
        return [first, *[[f.bytes for f in m] for m in drain_nowait(self.sub, limit)]]

    async def next_event(self) -> int:
        msg = parse_monitor_message(await self.monitor.recv_multipart())
        return int(msg["event"])

    def close(self) -> None:
        with contextlib.suppress(zmq.ZMQError):
            self.dealer.disable_monitor()
        for sock in (self.dealer, self.sub, self.monitor):
            if sock is not None:
                sock.close(linger=0)


class Transport:
    """The zmq context, the ZAP authenticator and this node's bound sockets."""

    def __init__(self, address: str, curve_public: bytes, curve_secret: bytes) -> None:
        self.address = address
        self.curve_public = curve_public
        self._curve_secret = curve_secret
        self.ctx = zmq.asyncio.Context()
        self._auth = AsyncioAuthenticator(self.ctx)
        self.router: zmq.asyncio.Socket
        self.pub: zmq.asyncio.Socket
        self.info: zmq.asyncio.Socket
        self.router_port = 0
        self.pub_port = 0
        self.info_port = 0

    def start(self, info_port: int = DEFAULT_INFO_PORT) -> None:
        self._auth.start()
        # Any CURVE key may connect: who may *speak* is decided per Hello by the relay,
        # which checks that the Hello's keys match the key authenticated here.
        self._auth.configure_curve(domain="*", location=zmq.auth.CURVE_ALLOW_ANY)
        self.router = self._server_socket(zmq.ROUTER)
        self.router.setsockopt(zmq.RCVHWM, _HWM)
        self.router.setsockopt(zmq.SNDHWM, _HWM)
        self.pub = self._server_socket(zmq.PUB)
        self.pub.setsockopt(zmq.SNDHWM, _HWM)
        self.info = self.ctx.socket(zmq.ROUTER)
        self.info.setsockopt(zmq.LINGER, 0)
        self.info_port = self._bind(self.info, info_port)
        self.router_port = self._bind(self.router, self.info_port + 1 if info_port else 0)
        self.pub_port = self._bind(self.pub, self.router_port + 1 if info_port else 0)

    def _server_socket(self, kind: int) -> zmq.asyncio.Socket:
        return curve_server_socket(self.ctx, kind, self.curve_public, self._curve_secret)

    def _bind(self, sock: zmq.asyncio.Socket, preferred: int) -> int:
        """Bind on the LAN address only (never 0.0.0.0); the preferred port if it is free."""
        if preferred:
            try:
                sock.bind(f"tcp://{self.address}:{preferred}")
                return preferred
            except zmq.ZMQError:
                pass
        return int(sock.bind_to_random_port(f"tcp://{self.address}"))

    def link(self, address: str, router_port: int, server_key: bytes) -> BrokerLink:
        return BrokerLink(
            self.ctx, address, router_port, server_key, self.curve_public, self._curve_secret
        )

    async def recv_router_batch(self, limit: int = 500) -> list[Incoming]:
        """The next incoming message, plus whatever else is already queued."""
        batch = [await self.recv_router()]
        batch.extend(_incoming(frames) for frames in drain_nowait(self.router, limit))
        return batch

    def send_router_nowait(self, rid: bytes, frames: list[bytes]) -> None:
        # ROUTER drops frames for unknown or full peers instead of blocking: the relay's
        # senders recover by their own resend rules.
        _send_nowait(self.router, [rid, *frames])

    def publish_nowait(self, frames: list[bytes]) -> None:
        # PUB never blocks: at its high-water mark it drops, and receivers repair gaps.
        _send_nowait(self.pub, frames)

    async def recv_router(self) -> Incoming:
        frames = await self.router.recv_multipart(copy=False)
        return _incoming(frames)

    async def send_router(self, rid: bytes, frames: list[bytes]) -> None:
        # ROUTER drops frames for unknown or full peers instead of blocking: the relay's
        # senders recover by their own resend rules.
        await self.router.send_multipart([rid, *frames])

    async def publish(self, frames: list[bytes]) -> None:
        await self.pub.send_multipart(frames)

    async def serve_info(self, advert: Any) -> None:
        """Answer every info request with ``advert()`` (a JSON-able dict)."""
        while True:
            frames = await self.info.recv_multipart()
            if len(frames) < 2:
                continue
            reply = json.dumps(advert()).encode()
            await self.info.send_multipart([frames[0], reply])

    async def ask_info(self, address: str, port: int, timeout_s: float) -> dict[str, Any]:
        """The advert of the node at address:port (raises TimeoutError)."""
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        try:
            sock.connect(f"tcp://{address}:{port}")
            await sock.send(b"info?")
            reply = await asyncio.wait_for(sock.recv(), timeout_s)
            data = json.loads(reply)
            if not isinstance(data, dict):
                raise ValueError("info reply is not an object")
            return data
        finally:
            sock.close(linger=0)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._auth.stop()
        self.ctx.destroy(linger=0)
