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

The sockets that carry the room's traffic (router, pub, and each link's dealer, sub and
monitor) are plain zmq sockets read by a `SocketReader`, a callback on the event loop's own
reader for the socket's file descriptor: a burst of messages costs one loop iteration. With
the asyncio wrapper's futures a single message took four (the descriptor's event, the
future, the task step, the re-check), and with ten nodes on two cores those wake-ups were
most of what a small message cost, and of its latency.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import typing
import weakref
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import zmq
import zmq.asyncio
from zmq.utils import z85
from zmq.utils.monitor import parse_monitor_message

from lanchat.core.wire import MAX_FRAMES_BYTES

__all__ = [
    "CURVE_FRAME_OVERHEAD_BYTES",
    "DEFAULT_INFO_PORT",
    "HANDSHAKE_FRAME_BYTES",
    "HEARTBEAT_TIMEOUT_MS",
    "INFO_REPLY_MAX_BYTES",
    "INFO_REQUEST",
    "ROOM_FRAME_MAX_BYTES",
    "BrokerLink",
    "SocketReader",
    "Transport",
    "ZapHandler",
]

log = logging.getLogger(__name__)

if typing.TYPE_CHECKING:
    from collections.abc import Callable

DEFAULT_INFO_PORT = 47100  # --connect HOST uses this when no port is given
_ZAP_DOMAIN = b"lanchat"
_ZAP_ENDPOINT = "inproc://zeromq.zap.01"  # where libzmq asks who may connect (RFC 27)
# ZMTP heartbeats, on every connection: answered by libzmq's own I/O thread, so a starved
# Python does not miss them; a peer silent for the timeout after a PING is dropped (a
# disconnect). Node relies on this to tell a busy broker from a vanished one.
HEARTBEAT_IVL_MS = 400
HEARTBEAT_TIMEOUT_MS = 1500
# The broker's side needs no fast detection (its relay times a silent client out after
# 2 s; libzmq does not tell it which peer went): its own PINGs only clear dead connections.
# At 0.4 s, with each client's DEALER and SUB pinging too, a hall of 1,000 cost the broker's
# I/O thread ~26 % of a core and 16 Mbit/s of air while idle (benchmarks/bench_broker.py).
SERVER_HEARTBEAT_IVL_MS = 5000
SERVER_HEARTBEAT_TIMEOUT_MS = 15000
# A client's SUB: the DEALER's heartbeats already tell a vanished broker within 1.5 s.
SUB_HEARTBEAT_IVL_MS = 2000
SUB_HEARTBEAT_TIMEOUT_MS = 6000
# Plain ints: zmq's enums cost a Python-level operator call on every use.
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)
_NOBLOCK = int(zmq.NOBLOCK)
# PUB drops silently at its high-water mark; our gap repair recovers, but a larger queue
# means fewer repairs during bursts.
_HWM = 100_000

# Frame size limits (ZMQ_MAXMSGSIZE, per frame as it is on the wire): libzmq reads a frame's
# length first and drops the connection of a peer that announces more, before allocating
# anything. Without them one 100 MB frame cost a broker 100 MB, and a few connections a
# few times that. Every socket gets the largest frame its peer may legitimately send.
# CURVE wraps each frame in a MESSAGE command: 1 + 7 ("MESSAGE") + 8 (nonce) + 16 (MAC) +
# 1 (flags) bytes more than the payload (measured: tests/test_transport.py).
CURVE_FRAME_OVERHEAD_BYTES = 33
# The limit also applies to the handshake's commands: a CURVE INITIATE is ~290 bytes plus
# its metadata (a routing id may add 255), so no socket goes below this.
HANDSHAKE_FRAME_BYTES = 1024
# The room's traffic (router, and each link's dealer and sub): no lanchat message is larger
# than wire.MAX_FRAMES_BYTES, all its frames together, whatever the room's size (a roster
# of 200 laptops is ~74 KB of it).
ROOM_FRAME_MAX_BYTES = MAX_FRAMES_BYTES + CURVE_FRAME_OVERHEAD_BYTES
# The unauthenticated info port: one fixed request in, one small advert out.
INFO_REQUEST = b"info?"
INFO_REPLY_MAX_BYTES = 4096


def limit_frames(sock: zmq.Socket[Any], payload_bytes: int, curve: bool = True) -> None:
    """Drop the connection of any peer that sends ``sock`` a frame over ``payload_bytes``."""
    wire_bytes = payload_bytes + (CURVE_FRAME_OVERHEAD_BYTES if curve else 0)
    sock.setsockopt(zmq.MAXMSGSIZE, max(HANDSHAKE_FRAME_BYTES, wire_bytes))


def _z85(key: bytes) -> bytes:
    return z85.encode(key)


_S = TypeVar("_S", bound="zmq.Socket[Any]")
_M = TypeVar("_M")


def curve_server_socket(ctx: zmq.Context[_S], kind: int, public: bytes, secret: bytes) -> _S:
    """A CURVE server socket whose every client passes the ZAP handler (see `Transport`)."""
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    sock.curve_server = True
    sock.curve_publickey = _z85(public)
    sock.curve_secretkey = _z85(secret)
    # The ZAP handler stamps each client's CURVE key on its messages ("User-Id").
    sock.zap_domain = _ZAP_DOMAIN
    sock.setsockopt(zmq.HEARTBEAT_IVL, SERVER_HEARTBEAT_IVL_MS)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, SERVER_HEARTBEAT_TIMEOUT_MS)
    return sock


def curve_client_socket(
    ctx: zmq.Context[_S], kind: int, server_key: bytes, public: bytes, secret: bytes
) -> _S:
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


# On the asyncio sockets (the file service's) non-blocking calls go through the asyncio
# wrapper itself, never a sync shadow: the zmq file descriptor is edge-triggered, and only
# the wrapper knows to re-check it.


def drain_nowait(sock: zmq.asyncio.Socket, limit: int) -> list[list[zmq.Frame]]:
    """Whatever else is already queued on ``sock`` (up to ``limit`` messages), no waiting."""
    out: list[list[zmq.Frame]] = []
    while len(out) < limit:
        fut = typing.cast(
            "asyncio.Future[list[zmq.Frame]]", sock.recv_multipart(flags=_NOBLOCK, copy=False)
        )
        exc = fut.exception()
        if exc is not None:
            if isinstance(exc, zmq.Again):
                break
            raise exc
        out.append(fut.result())
    return out


def _waiting(sock: zmq.Socket[Any]) -> bool:
    """Whether a message is queued on ``sock`` (this consumes the descriptor's signal)."""
    return bool(typing.cast("int", sock.getsockopt(_EVENTS)) & _POLLIN)


class SocketReader(Generic[_M]):
    """Hands every message queued on ``sock`` to ``on_batch``, from the loop's reader callback.

    A zmq socket's file descriptor is edge-triggered: it signals that the socket's state
    may have changed, and any recv, send or EVENTS query on the socket may consume that
    signal. So the reader drains the socket until it is empty, and looks again after each
    batch and after each send on the socket (`after_send`), scheduling another read when a
    message is waiting; otherwise one could wait for the next unrelated signal.
    """

    def __init__(
        self,
        sock: zmq.Socket[Any],
        receive: Callable[[], _M],
        on_batch: Callable[[list[_M]], None],
        limit: int = 500,
    ) -> None:
        self._sock = sock
        self._receive = receive  # one message, non-blocking: raises zmq.Again when empty
        self._on_batch = on_batch
        self._limit = limit  # then the loop's other work gets a turn
        self._loop = asyncio.get_running_loop()
        self._fd = typing.cast("int", sock.getsockopt(zmq.FD))
        self._closed = False
        self._due = False
        try:
            self._loop.add_reader(self._fd, self._ready)
        except NotImplementedError as exc:  # Windows' default (proactor) loop
            raise RuntimeError(
                "this asyncio event loop cannot watch sockets (no add_reader); run lanchat "
                "with lanchat.oscompat.run, which picks the selector loop on Windows"
            ) from exc
        self._schedule()  # whatever arrived before we were watching

    def after_send(self) -> None:
        """A send on the socket may have consumed the signal of a waiting message."""
        if not self._closed and not self._due and _waiting(self._sock):
            self._schedule()

    def _schedule(self) -> None:
        self._due = True
        self._loop.call_soon(self._ready)

    def _ready(self) -> None:
        self._due = False
        if self._closed:
            return
        batch: list[_M] = []
        try:
            while len(batch) < self._limit:
                batch.append(self._receive())
        except zmq.Again:
            pass
        except zmq.ZMQError as exc:  # the socket or its context is going away
            log.debug("socket error while reading: %s", exc)
            self.close()
            return
        if batch:
            try:
                self._on_batch(batch)
            except Exception:  # one bad batch (or one bug) must not stop the reading
                log.exception("error handling received messages")
        if self._closed or self._due:
            return
        try:
            waiting = _waiting(self._sock)
        except zmq.ZMQError:
            return
        if waiting:
            self._schedule()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            with contextlib.suppress(Exception):  # the loop may be closed already
                self._loop.remove_reader(self._fd)


@dataclass(frozen=True, slots=True)
class Incoming:
    rid: bytes
    transport_key: bytes
    frames: list[bytes]


class ZapHandler:
    """Answers libzmq's authentication requests (ZAP) for every socket of the context.

    Any CURVE key may connect: who may *speak* is decided per Hello by the relay, which
    checks that the Hello's keys match the key authenticated here. The reply's User-Id is
    the client's key (z85), and every message from that connection carries it. NULL (the
    unencrypted info socket) is let in; other mechanisms are refused.

    pyzmq's asyncio authenticator answered one request per poll cycle, through futures
    and debug logging; a new broker after a failover of 100 laptops authenticates 200
    connections at once, on a CPU shared with all their reconnects. This answers a burst
    in one loop callback.
    """

    def __init__(self, ctx: zmq.Context[zmq.Socket[Any]]) -> None:
        sock = self._sock = ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.bind(_ZAP_ENDPOINT)
        self._reader = _read_messages(sock, self._answer)

    def _answer(self, batch: list[list[bytes]]) -> None:
        for request in batch:
            reply = zap_reply(request)
            if reply is not None:
                with contextlib.suppress(zmq.Again):
                    self._sock.send_multipart(reply, _NOBLOCK)

    def close(self) -> None:
        self._reader.close()
        self._sock.close(linger=0)


def zap_reply(request: list[bytes]) -> list[bytes] | None:
    """The reply to one ZAP request as a ROUTER receives it; None if it has no envelope."""
    # peer, delimiter, version, request id, domain, address, identity, mechanism, credentials
    if len(request) < 8 or request[1]:
        return None
    peer, _, version, request_id, _domain, _address, _identity, mechanism, *credentials = request
    user_id = b""
    if version != b"1.0":
        status, text = b"400", b"unsupported ZAP version"
    elif mechanism == b"CURVE" and len(credentials) == 1 and len(credentials[0]) == 32:
        status, text, user_id = b"200", b"OK", z85.encode(credentials[0])
    elif mechanism == b"NULL":
        status, text = b"200", b"OK"
    else:
        status, text = b"400", b"mechanism not allowed"
    return [peer, b"", b"1.0", request_id, status, text, user_id, b""]


def _read_messages(
    sock: zmq.Socket[Any], on_messages: Callable[[list[list[bytes]]], None]
) -> SocketReader[list[bytes]]:
    return SocketReader(sock, lambda: sock.recv_multipart(_NOBLOCK), on_messages)


def _read_events(
    monitor: zmq.Socket[Any], on_events: Callable[[list[int]], None]
) -> SocketReader[int]:
    """The event number of each message of a monitor socket."""

    def event() -> int:
        return int(parse_monitor_message(monitor.recv_multipart(_NOBLOCK))["event"])

    return SocketReader(monitor, event, on_events)


def _router_message(sock: zmq.Socket[Any]) -> Incoming:
    return _incoming(sock.recv_multipart(_NOBLOCK, copy=False))


class BrokerLink:
    """This node's client sockets towards one broker.

    Messages from the broker (DEALER: answers to us; SUB: what the room hears) and the
    DEALER's connection events reach the callbacks given to `start` and `subscribe`.
    """

    def __init__(
        self,
        ctx: zmq.Context[zmq.Socket[Any]],
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
        limit_frames(self.dealer, MAX_FRAMES_BYTES)
        self.monitor: zmq.Socket[Any] = self.dealer.get_monitor_socket(
            zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED
        )
        self.dealer.connect(f"tcp://{address}:{router_port}")
        self.sub: zmq.Socket[Any] | None = None
        self.sub_monitor: zmq.Socket[Any] | None = None
        self._readers: list[SocketReader[Any]] = []
        self._dealer_reader: SocketReader[list[bytes]] | None = None

    def _client_socket(self, kind: int) -> zmq.Socket[Any]:
        return curve_client_socket(self._ctx, kind, self.server_key, self._public, self._secret)

    def start(
        self,
        on_messages: Callable[[list[list[bytes]]], None],
        on_events: Callable[[list[int]], None],
    ) -> None:
        """Read the broker's answers and our connection's events (in a running loop)."""
        self._dealer_reader = _read_messages(self.dealer, on_messages)
        self._readers += [self._dealer_reader, _read_events(self.monitor, on_events)]

    def subscribe(
        self,
        pub_port: int,
        on_messages: Callable[[list[list[bytes]]], None],
        on_connected: Callable[[list[int]], None],
    ) -> None:
        """Hear the room; ``on_connected`` each time the SUB connection is (re)established.

        What the broker published before then did not reach us: the caller asks again.
        """
        if self.sub is not None:
            return
        sub = self.sub = self._client_socket(zmq.SUB)
        sub.setsockopt(zmq.HEARTBEAT_IVL, SUB_HEARTBEAT_IVL_MS)
        sub.setsockopt(zmq.HEARTBEAT_TIMEOUT, SUB_HEARTBEAT_TIMEOUT_MS)
        sub.setsockopt(zmq.RCVHWM, _HWM)
        limit_frames(sub, MAX_FRAMES_BYTES)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        monitor = self.sub_monitor = sub.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
        sub.connect(f"tcp://{self.address}:{pub_port}")
        self._readers += [_read_messages(sub, on_messages), _read_events(monitor, on_connected)]

    def send_nowait(self, frames: list[bytes]) -> bool:
        """Queue frames for the broker without waiting; False if the queue is full."""
        try:
            self.dealer.send_multipart(frames, _NOBLOCK)
        except zmq.Again:
            return False
        finally:
            if self._dealer_reader is not None:
                self._dealer_reader.after_send()
        return True

    def close(self) -> None:
        for reader in self._readers:
            reader.close()
        for watched in (self.dealer, self.sub):
            if watched is not None:
                with contextlib.suppress(zmq.ZMQError):
                    watched.disable_monitor()
        for sock in (self.dealer, self.sub, self.monitor, self.sub_monitor):
            if sock is not None:
                sock.close(linger=0)


class Transport:
    """The zmq context, the ZAP authenticator and this node's bound sockets."""

    def __init__(self, address: str, curve_public: bytes, curve_secret: bytes) -> None:
        self.address = address
        self.curve_public = curve_public
        self._curve_secret = curve_secret
        self.ctx = zmq.asyncio.Context()
        # The same libzmq context, for the plain sockets that SocketReaders read. They are
        # closed by us: a shadow must not terminate the context it shares.
        self.sync_ctx: zmq.Context[zmq.Socket[Any]] = zmq.Context.shadow(self.ctx)
        self._links: weakref.WeakSet[BrokerLink] = weakref.WeakSet()
        self._zap: ZapHandler | None = None
        self.router: zmq.Socket[Any]
        self.pub: zmq.Socket[Any]
        self.info: zmq.asyncio.Socket
        self.router_port = 0
        self.pub_port = 0
        self.info_port = 0
        self._router_reader: SocketReader[Incoming] | None = None

    def start(self, info_port: int = DEFAULT_INFO_PORT) -> None:
        self._zap = ZapHandler(self.sync_ctx)
        self.router = self._server_socket(zmq.ROUTER)
        self.router.setsockopt(zmq.RCVHWM, _HWM)
        self.router.setsockopt(zmq.SNDHWM, _HWM)
        limit_frames(self.router, MAX_FRAMES_BYTES)
        self.pub = self._server_socket(zmq.PUB)
        self.pub.setsockopt(zmq.SNDHWM, _HWM)
        limit_frames(self.pub, 0)  # subscribers only ever send their (empty) subscription
        self.info = self.ctx.socket(zmq.ROUTER)
        self.info.setsockopt(zmq.LINGER, 0)
        limit_frames(self.info, len(INFO_REQUEST), curve=False)
        self.info_port = self._bind(self.info, info_port)
        self.router_port = self._bind(self.router, self.info_port + 1 if info_port else 0)
        self.pub_port = self._bind(self.pub, self.router_port + 1 if info_port else 0)

    def _server_socket(self, kind: int) -> zmq.Socket[Any]:
        return curve_server_socket(self.sync_ctx, kind, self.curve_public, self._curve_secret)

    def _bind(self, sock: zmq.Socket[Any], preferred: int) -> int:
        """Bind on the LAN address only (never 0.0.0.0); the preferred port if it is free."""
        if preferred:
            try:
                sock.bind(f"tcp://{self.address}:{preferred}")
                return preferred
            except zmq.ZMQError:
                pass
        return int(sock.bind_to_random_port(f"tcp://{self.address}"))

    def link(self, address: str, router_port: int, server_key: bytes) -> BrokerLink:
        link = BrokerLink(
            self.sync_ctx, address, router_port, server_key, self.curve_public, self._curve_secret
        )
        self._links.add(link)
        return link

    def read_router(self, on_batch: Callable[[list[Incoming]], None]) -> None:
        """Hand every message clients send to our router to ``on_batch`` (in a running loop)."""
        router = self.router
        self._router_reader = SocketReader(router, lambda: _router_message(router), on_batch)

    def send_router_nowait(self, rid: bytes, frames: list[bytes]) -> None:
        # ROUTER drops frames for unknown or full peers instead of blocking: the relay's
        # senders recover by their own resend rules.
        with contextlib.suppress(zmq.Again):
            self.router.send_multipart([rid, *frames], _NOBLOCK)
        if self._router_reader is not None:
            self._router_reader.after_send()

    def publish_nowait(self, frames: list[bytes]) -> None:
        # PUB never blocks: at its high-water mark it drops, and receivers repair gaps.
        with contextlib.suppress(zmq.Again):
            self.pub.send_multipart(frames, _NOBLOCK)

    async def serve_info(self, advert: Any) -> None:
        """Answer every info request with ``advert()`` (a JSON-able dict).

        Anyone may ask, unauthenticated: only the one fixed request is answered, and
        anything else is dropped unanswered.
        """
        while True:
            frames = await self.info.recv_multipart()
            if len(frames) != 2 or frames[1] != INFO_REQUEST:
                continue
            reply = json.dumps(advert()).encode()
            # A ROUTER drops what a peer does not read (at its high-water mark): never blocks.
            await self.info.send_multipart([frames[0], reply])

    async def ask_info(self, address: str, port: int, timeout_s: float) -> dict[str, Any]:
        """The advert of the node at address:port (raises TimeoutError)."""
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        limit_frames(sock, INFO_REPLY_MAX_BYTES, curve=False)
        try:
            sock.connect(f"tcp://{address}:{port}")
            await sock.send(INFO_REQUEST)
            reply = await asyncio.wait_for(sock.recv(), timeout_s)
            data = json.loads(reply)
            if not isinstance(data, dict):
                raise ValueError("info reply is not an object")
            return data
        finally:
            sock.close(linger=0)

    def file_context(self) -> zmq.asyncio.Context:
        return self.ctx

    def close(self) -> None:
        if self._router_reader is not None:
            self._router_reader.close()
        if self._zap is not None:
            self._zap.close()
        for link in list(self._links):
            link.close()
        for name in ("router", "pub"):
            sock: zmq.Socket[Any] | None = getattr(self, name, None)  # None: start() failed
            if sock is not None:
                sock.close(linger=0)
        self.ctx.destroy(linger=0)
