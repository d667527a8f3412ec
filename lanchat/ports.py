"""What the node needs of its network adapters, as typed interfaces.

Two implementations each: the real ones (``lanchat.transport`` over ZeroMQ,
``lanchat.discovery`` over zeroconf) and their in-memory twins (``lanchat.inmemory``), which
run a whole room in one process so that election, failover, consent and the help queue can
be tested in milliseconds without root. The node is written against these protocols only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from collections.abc import Callable

    from lanchat.core.advert import Advert
    from lanchat.transport import Incoming

__all__ = ["LinkSockets", "RoomDiscovery", "RoomTransport"]


class LinkSockets(Protocol):
    """A client's sockets towards one broker: a DEALER for requests, a SUB for the room.

    Connection events are libzmq's monitor event numbers (``zmq.EVENT_CONNECTED``,
    ``zmq.EVENT_DISCONNECTED``, ``zmq.EVENT_HANDSHAKE_SUCCEEDED``).
    """

    def start(
        self,
        on_messages: Callable[[list[list[bytes]]], None],
        on_events: Callable[[list[int]], None],
    ) -> None: ...

    def subscribe(
        self,
        pub_port: int,
        on_messages: Callable[[list[list[bytes]]], None],
        on_connected: Callable[[list[int]], None],
    ) -> None: ...

    def send_nowait(self, frames: list[bytes]) -> bool: ...

    def close(self) -> None: ...


class RoomTransport(Protocol):
    """This node's bound sockets (router, publisher, info port) and its outgoing links."""

    router_port: int
    pub_port: int
    info_port: int

    def start(self, info_port: int = ...) -> None: ...

    def link(self, address: str, router_port: int, server_key: bytes) -> LinkSockets: ...

    def read_router(self, on_batch: Callable[[list[Incoming]], None]) -> None: ...

    def send_router_nowait(self, rid: bytes, frames: list[bytes]) -> None: ...

    def publish_nowait(self, frames: list[bytes]) -> None: ...

    async def serve_info(self, advert: Any) -> None: ...

    async def ask_info(self, address: str, port: int, timeout_s: float) -> dict[str, Any]: ...

    def file_context(self) -> Any:
        """The zmq context for the peer-to-peer file service (real sockets in both twins)."""
        ...

    def close(self) -> None: ...


class RoomDiscovery(Protocol):
    """Browse and advertise this room's nodes; events go to the ``on_event`` it was made with."""

    async def start(self) -> None: ...

    def ask_everyone(self) -> None: ...

    def peers(self) -> dict[str, Advert]: ...

    async def find_conflict(
        self, handle: str, my_key: bytes, wait_s: float = ...
    ) -> Advert | None: ...

    async def register(self, advert: Advert, *, force: bool = False) -> None: ...

    async def update(self, advert: Advert) -> None: ...

    async def reannounce(self) -> None: ...

    def disown(self) -> None: ...

    async def close(self) -> None: ...
