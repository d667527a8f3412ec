"""The twin of the transport: a node's router, publisher and info port, and its links."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
from collections import deque
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

import zmq
import zmq.asyncio

from lanchat.transport import DEFAULT_INFO_PORT, Incoming, ZapHandler

if TYPE_CHECKING:
    from collections.abc import Callable

    from lanchat.inmemory.lan import MemoryLan

__all__ = ["READ_LIMIT", "SEND_QUEUE_LIMIT", "MemoryLink", "MemoryTransport"]

log = logging.getLogger(__name__)

READ_LIMIT = 500  # messages per callback at most, as transport.SocketReader hands them over
# A DEALER queues this many messages for a broker it cannot reach, then refuses more.
SEND_QUEUE_LIMIT = 100_000

_CONNECTED = int(zmq.EVENT_CONNECTED)
_HANDSHAKE_SUCCEEDED = int(zmq.EVENT_HANDSHAKE_SUCCEEDED)
_DISCONNECTED = int(zmq.EVENT_DISCONNECTED)

_M = TypeVar("_M")
_Kind = Literal["router", "pub", "info"]


class _Inbox(Generic[_M]):
    """What one socket has received, handed to its reader in batches from the event loop.

    Like `transport.SocketReader`: messages that arrive before the reader is attached wait
    for it, a batch holds at most `READ_LIMIT`, and the reader is always called from a
    callback of its own, never from inside the sender's call.
    """

    def __init__(self) -> None:
        self._items: deque[_M] = deque()
        self._reader: Callable[[list[_M]], None] | None = None
        self._due = False
        self._closed = False

    def attach(self, reader: Callable[[list[_M]], None]) -> None:
        self._reader = reader
        if self._items:
            self._schedule()

    def put(self, item: _M) -> None:
        if self._closed:
            return
        self._items.append(item)
        if self._reader is not None and not self._due:
            self._schedule()

    def close(self) -> None:
        self._closed = True
        self._items.clear()

    def _schedule(self) -> None:
        self._due = True
        asyncio.get_running_loop().call_soon(self._ready)

    def _ready(self) -> None:
        self._due = False
        if self._closed or self._reader is None:
            return
        items = self._items
        batch = [items.popleft() for _ in range(min(len(items), READ_LIMIT))]
        if batch:
            try:
                self._reader(batch)
            except Exception:  # as SocketReader: one bad batch must not stop the reading
                log.exception("error handling received messages")
        if self._items and not self._closed and not self._due:
            self._schedule()


class MemoryLink:
    """A client's DEALER (and SUB, once subscribed) towards one broker; see `LinkSockets`."""

    def __init__(
        self,
        lan: MemoryLan,
        owner: MemoryTransport,
        address: str,
        router_port: int,
        server_key: bytes,
    ) -> None:
        self.address = address
        self.router_port = router_port
        self.server_key = server_key
        self._lan = lan
        self._owner = owner
        self._replies: _Inbox[list[bytes]] = _Inbox()
        self._events: _Inbox[int] = _Inbox()
        self._room: _Inbox[list[bytes]] | None = None
        self._room_events: _Inbox[int] | None = None
        self._pub_port = 0
        self._queued: deque[list[bytes]] = deque()  # sent while not connected
        self._server: MemoryTransport | None = None  # the router we are connected to
        self._rid = b""
        self._publisher: MemoryTransport | None = None  # the pub we are subscribed to
        # Sent over a connection that a partition cuts: waiting, as TCP retransmits, until
        # the LAN heals (then delivered, in order) or the connection drops (then lost).
        self._held_up: deque[list[bytes]] = deque()  # to the server's router
        self._held_down: deque[list[bytes]] = deque()  # the router's answers
        self._held_room: deque[list[bytes]] = deque()  # what the server published
        self._closed = False
        lan._links[self] = None
        lan._wait(self)
        asyncio.get_running_loop().call_soon(self.try_connect)

    @property
    def owner_address(self) -> str:
        """The address of the node this link belongs to (the client's end)."""
        return self._owner.address

    @property
    def connected(self) -> bool:
        return self._server is not None

    @property
    def subscribed(self) -> bool:
        return self._publisher is not None

    # ---- LinkSockets --------------------------------------------------------

    def start(
        self,
        on_messages: Callable[[list[list[bytes]]], None],
        on_events: Callable[[list[int]], None],
    ) -> None:
        self._replies.attach(on_messages)
        self._events.attach(on_events)

    def subscribe(
        self,
        pub_port: int,
        on_messages: Callable[[list[list[bytes]]], None],
        on_connected: Callable[[list[int]], None],
    ) -> None:
        if self._room is not None or self._closed:
            return
        self._pub_port = pub_port
        self._room = _Inbox()
        self._room_events = _Inbox()
        self._room.attach(on_messages)
        self._room_events.attach(on_connected)
        self._lan._wait(self)
        asyncio.get_running_loop().call_soon(self.try_connect)

    def send_nowait(self, frames: list[bytes]) -> bool:
        if self._closed:
            return True  # as a closed zmq socket's send would be lost; the node never does this
        server = self._server
        if server is None:
            if len(self._queued) >= SEND_QUEUE_LIMIT:
                return False
            self._queued.append(list(frames))
        elif self._held_up or not self._can_reach(server):
            self._held_up.append(list(frames))
        else:
            server.receive(Incoming(self._rid, self._owner.curve_public, list(frames)))
        return True

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._server is not None:
            self._server.disconnected(self._rid)
        if self._publisher is not None:
            self._publisher.unsubscribe(self)
        self._server = self._publisher = None
        for held in (self._queued, self._held_up, self._held_down, self._held_room):
            held.clear()
        for inbox in (self._replies, self._events, self._room, self._room_events):
            if inbox is not None:
                inbox.close()
        self._lan._forget(self)
        self._lan._links.pop(self, None)

    # ---- the medium's side -------------------------------------------------

    def try_connect(self) -> None:
        """Connect whatever is not connected yet, if its server is there and reachable."""
        if self._closed or self._owner.closed:
            return
        lan = self._lan
        if self._server is None:
            self._connect_dealer()
        if self._room is not None and self._publisher is None:
            publisher = self._reach(self._pub_port, "pub")
            if publisher is not None:
                self._publisher = publisher
                publisher.subscribe(self)
                assert self._room_events is not None
                self._room_events.put(_HANDSHAKE_SUCCEEDED)
        if self._server is not None and (self._room is None or self._publisher is not None):
            lan._forget(self)

    def _connect_dealer(self) -> None:
        server = self._reach(self.router_port, "router")
        if server is None:
            return
        if server.curve_public != self.server_key:
            # TCP is up, the CURVE handshake fails, libzmq drops the connection.
            self._events.put(_CONNECTED)
            self._events.put(_DISCONNECTED)
            return
        self._server = server
        self._rid = self._lan._rid()
        server.connected(self._rid, self)
        self._events.put(_CONNECTED)
        self._events.put(_HANDSHAKE_SUCCEEDED)
        queued, self._queued = self._queued, deque()
        for frames in queued:
            server.receive(Incoming(self._rid, self._owner.curve_public, frames))

    def _reach(self, port: int, kind: _Kind) -> MemoryTransport | None:
        server = self._lan._listener(self.address, port, kind)
        if server is None or not self._can_reach(server):
            return None
        return server

    def _can_reach(self, server: MemoryTransport) -> bool:
        return self._lan.reachable(self._owner.address, server.address)

    def reply(self, frames: list[bytes]) -> None:
        """A message from our router's server (its ``send_router_nowait``)."""
        server = self._server
        if server is None:
            return
        if self._held_down or not self._can_reach(server):
            self._held_down.append(frames)
        else:
            self._replies.put(frames)

    def hear(self, frames: list[bytes]) -> None:
        """A message the server published."""
        publisher = self._publisher
        if self._room is None or publisher is None:
            return
        if self._held_room or not self._can_reach(publisher):
            self._held_room.append(frames)
        else:
            self._room.put(frames)

    def release(self) -> None:
        """The LAN changed: what a partition held back goes on where it can reach now."""
        server, publisher = self._server, self._publisher
        if server is not None and self._can_reach(server):
            while self._held_up:
                server.receive(
                    Incoming(self._rid, self._owner.curve_public, self._held_up.popleft())
                )
            while self._held_down:
                self._replies.put(self._held_down.popleft())
        if publisher is not None and self._room is not None and self._can_reach(publisher):
            while self._held_room:
                self._room.put(self._held_room.popleft())

    def lost(self, server: MemoryTransport) -> None:
        """``server`` closed, was killed, or a partition cut us off from it."""
        if self._closed:
            return
        if self._server is server:
            self._server = None
            self._rid = b""
            self._held_up.clear()  # lost with the connection
            self._held_down.clear()
            self._events.put(_DISCONNECTED)
        if self._publisher is server:
            self._publisher = None  # the SUB's monitor watches handshakes only
            self._held_room.clear()
        self._lan._wait(self)


class MemoryTransport:
    """This node's router, publisher and info port on a `MemoryLan`; see `RoomTransport`."""

    def __init__(self, lan: MemoryLan, address: str, curve_public: bytes) -> None:
        self.address = address
        self.curve_public = curve_public
        self.router_port = 0
        self.pub_port = 0
        self.info_port = 0
        self.closed = False
        self.killed = False
        self._lan = lan
        self._router: _Inbox[Incoming] = _Inbox()
        self._clients: dict[bytes, MemoryLink] = {}  # routing id -> the client's link
        self._subscribers: dict[MemoryLink, None] = {}
        self._links: list[MemoryLink] = []
        self._info: Callable[[], Any] | None = None
        self._serving = asyncio.Event()
        self._closing = asyncio.Event()
        self._file_ctx: zmq.asyncio.Context | None = None
        self._zap: ZapHandler | None = None
        lan._transports.append(self)

    # ---- RoomTransport -----------------------------------------------------

    def start(self, info_port: int = DEFAULT_INFO_PORT) -> None:
        if self.closed:
            raise RuntimeError("this transport is closed")
        if self.info_port:
            raise RuntimeError("this transport is started already")
        lan = self._lan
        # The real transport's port choice: the preferred three in a row, else any.
        self.info_port = lan._bind(self, "info", info_port)
        self.router_port = lan._bind(self, "router", self.info_port + 1 if info_port else 0)
        self.pub_port = lan._bind(self, "pub", self.router_port + 1 if info_port else 0)
        lan._retry()

    def link(self, address: str, router_port: int, server_key: bytes) -> MemoryLink:
        if self.closed and not self.killed:
            # As the real one, whose context is gone: a socket cannot be made any more.
            raise zmq.ZMQError(errno.EFAULT, "the transport is closed")
        link = MemoryLink(self._lan, self, address, router_port, server_key)
        if self.closed:
            link.close()  # killed: the node's code runs on in this process, to no effect
        else:
            self._links.append(link)
        return link

    def read_router(self, on_batch: Callable[[list[Incoming]], None]) -> None:
        self._router.attach(on_batch)

    def send_router_nowait(self, rid: bytes, frames: list[bytes]) -> None:
        client = self._clients.get(rid)  # a ROUTER drops what is for an unknown peer
        if client is not None:
            client.reply(list(frames))

    def publish_nowait(self, frames: list[bytes]) -> None:
        for link in self._subscribers:
            link.hear(list(frames))

    async def serve_info(self, advert: Any) -> None:
        """Answer `ask_info` with ``advert()`` until the transport closes."""
        if self.closed:
            return
        self._info = advert
        self._serving.set()
        await self._closing.wait()

    async def ask_info(self, address: str, port: int, timeout_s: float) -> dict[str, Any]:
        """The advert of the node at address:port (raises TimeoutError, as the real one)."""
        server = self._lan._listener(address, port, "info")
        if server is None or not self._lan.reachable(self.address, address):
            await asyncio.sleep(timeout_s)  # nobody answers: the real one waits as long
            raise TimeoutError(f"no answer from {address}:{port}")
        async with asyncio.timeout(timeout_s):
            await server._serving.wait()
        answer = server._info
        assert answer is not None  # set before _serving
        # Through JSON, as on the wire: the caller gets its own copy, in JSON's types.
        data = json.loads(json.dumps(answer()))
        if not isinstance(data, dict):
            raise ValueError("info reply is not an object")
        return data

    def file_context(self) -> zmq.asyncio.Context:
        """A real zmq context: the file service runs on real sockets in both twins.

        With the real transport's ZAP handler, which tells the file server the CURVE key
        of each client (who may fetch an offer is decided by that key).
        """
        if self._file_ctx is None:
            self._file_ctx = zmq.asyncio.Context()
            self._zap = ZapHandler(zmq.Context.shadow(self._file_ctx))
        return self._file_ctx

    def close(self) -> None:
        """Close like a process that exits: every connection to us drops."""
        if self.closed:
            return
        self.closed = True
        self._closing.set()
        self._router.close()
        for link in self._links:
            link.close()
        self._links.clear()
        self._lan._unbind(self)
        clients = list(self._clients.values())
        subscribers = list(self._subscribers)
        self._clients.clear()
        self._subscribers.clear()
        for link in dict.fromkeys([*clients, *subscribers]):
            link.lost(self)
        if self._zap is not None:
            self._zap.close()
        if self._file_ctx is not None:
            self._file_ctx.destroy(linger=0)

    # ---- the medium's side -------------------------------------------------

    def kill(self) -> None:
        """SIGKILL: the kernel closes our connections; nothing of ours runs any more."""
        self.killed = True
        self.close()

    def receive(self, incoming: Incoming) -> None:
        self._router.put(incoming)

    def connected(self, rid: bytes, link: MemoryLink) -> None:
        self._clients[rid] = link

    def disconnected(self, rid: bytes) -> None:
        self._clients.pop(rid, None)

    def subscribe(self, link: MemoryLink) -> None:
        self._subscribers[link] = None

    def unsubscribe(self, link: MemoryLink) -> None:
        self._subscribers.pop(link, None)

    def drop_unreachable(self) -> None:
        """Heartbeats noticed a partition: drop the connections that cross it."""
        reachable = self._lan.reachable
        cut = [
            (rid, link)
            for rid, link in self._clients.items()
            if not reachable(self.address, link.owner_address)
        ]
        for rid, link in cut:
            del self._clients[rid]
            link.lost(self)
        for link in [s for s in self._subscribers if not reachable(self.address, s.owner_address)]:
            del self._subscribers[link]
            link.lost(self)
