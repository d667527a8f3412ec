"""The medium of the in-memory twins: who listens where, partitions, kills."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from lanchat.inmemory.discovery import MemoryDiscovery
from lanchat.inmemory.transport import MemoryTransport
from lanchat.transport import HEARTBEAT_TIMEOUT_MS

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from lanchat.discovery import DiscoveryEvent
    from lanchat.inmemory.transport import MemoryLink, _Kind

__all__ = ["FIRST_RANDOM_PORT", "PARTITION_DETECT_S", "MemoryLan"]

# Ports handed out when the preferred one is taken or none is asked for (the kernel's
# ephemeral range, as bind_to_random_port would pick).
FIRST_RANDOM_PORT = 49152
# A partition is noticed by ZMTP heartbeats: the connections across it drop this much later.
PARTITION_DETECT_S = HEARTBEAT_TIMEOUT_MS / 1000


class MemoryLan:
    """The medium of one test: every twin made with it can reach every other one.

    Use one per test; it needs a running event loop from the first delivery on.
    """

    def __init__(self) -> None:
        self._listeners: dict[tuple[str, int], tuple[MemoryTransport, _Kind]] = {}
        self._transports: list[MemoryTransport] = []
        self._discoveries: list[MemoryDiscovery] = []  # started, and answering
        self._links: dict[MemoryLink, None] = {}  # every open link
        self._waiting: dict[MemoryLink, None] = {}  # links with a socket not connected
        self._group: dict[str, int] = {}  # address -> partition group (none: one LAN)
        self._next_port = FIRST_RANDOM_PORT
        self._next_rid = 0
        self._cut_timer: asyncio.TimerHandle | None = None

    # ---- factories --------------------------------------------------------

    def transport(self, address: str, curve_public: bytes) -> MemoryTransport:
        return MemoryTransport(self, address, curve_public)

    def discovery(
        self, address: str, on_event: Callable[[DiscoveryEvent], None]
    ) -> MemoryDiscovery:
        """The discovery factory a `Node` takes (``discovery=lan.discovery``)."""
        return MemoryDiscovery(self, address, on_event)

    # ---- faults -----------------------------------------------------------

    def kill(self, address: str) -> None:
        """SIGKILL the node(s) at ``address``: connections drop, adverts stay.

        Their transports close (whoever was connected to them sees EVENT_DISCONNECTED) and
        their discoveries fall silent without a goodbye. Stop the node's task as well
        (cancel it): a killed process runs no more code, and its shutdown only meets
        dead twins.
        """
        for disc in [d for d in self._discoveries if d.address == address]:
            disc.kill()
        for transport in [t for t in self._transports if t.address == address]:
            transport.kill()

    def partition(self, *groups: Iterable[str], detect_s: float = PARTITION_DETECT_S) -> None:
        """Split the LAN: nodes of different groups cannot reach each other.

        Addresses named in no group form one more group together. Adverts stop crossing
        at once (multicast is lost); messages over a connection across wait, as TCP
        retransmits, and the connection drops with EVENT_DISCONNECTED ``detect_s`` later,
        when heartbeats would have noticed, losing what waited. A heal before then
        delivers it, late and in order.
        """
        self._group = {addr: i for i, group in enumerate(groups) for addr in group}
        if self._cut_timer is not None:
            self._cut_timer.cancel()
        self._cut_timer = asyncio.get_running_loop().call_later(detect_s, self._cut)
        self._release()  # a new split may join what the previous one kept apart

    def heal(self) -> None:
        """One LAN again: waiting links connect. Adverts cross again from the next
        announcement on (mDNS does not re-announce after a heal, RFC 6762 §8.3)."""
        self._group = {}
        if self._cut_timer is not None:
            self._cut_timer.cancel()
            self._cut_timer = None
        self._release()
        self._retry()

    def reachable(self, a: str, b: str) -> bool:
        return a == b or self._group.get(a, -1) == self._group.get(b, -1)

    # ---- internals --------------------------------------------------------

    def _release(self) -> None:
        for link in list(self._links):
            link.release()

    def _cut(self) -> None:
        self._cut_timer = None
        for transport in list(self._transports):
            transport.drop_unreachable()

    def _bind(self, transport: MemoryTransport, kind: _Kind, preferred: int) -> int:
        address = transport.address
        if preferred and (address, preferred) not in self._listeners:
            port = preferred
        else:
            while (address, self._next_port) in self._listeners:
                self._next_port += 1
            port = self._next_port
            self._next_port += 1
        self._listeners[(address, port)] = (transport, kind)
        return port

    def _unbind(self, transport: MemoryTransport) -> None:
        for key in [k for k, (t, _kind) in self._listeners.items() if t is transport]:
            del self._listeners[key]
        if transport in self._transports:
            self._transports.remove(transport)

    def _listener(self, address: str, port: int, kind: _Kind) -> MemoryTransport | None:
        found = self._listeners.get((address, port))
        if found is None or found[1] != kind:
            return None
        return found[0]

    def _rid(self) -> bytes:
        # libzmq's ROUTER names a connection 0x00 + a 32-bit counter.
        self._next_rid += 1
        return b"\x00" + self._next_rid.to_bytes(4, "big")

    def _wait(self, link: MemoryLink) -> None:
        self._waiting[link] = None

    def _forget(self, link: MemoryLink) -> None:
        self._waiting.pop(link, None)

    def _retry(self) -> None:
        """A server appeared or the LAN healed: links still waiting try again (soon)."""
        if self._waiting:
            loop = asyncio.get_running_loop()
            for link in list(self._waiting):
                loop.call_soon(link.try_connect)

    def _answering(self, besides: MemoryDiscovery) -> list[MemoryDiscovery]:
        """The discoveries ``besides`` can hear and ask now."""
        return [
            d
            for d in self._discoveries
            if d is not besides and self.reachable(d.address, besides.address)
        ]
