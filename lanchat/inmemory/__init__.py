"""In-memory twins of the network adapters: a whole room in one process and one event loop.

The httpx ``MockTransport`` idea, for lanchat's two adapters. A `MemoryLan` is the medium
the nodes of one test share; each node gets a `MemoryTransport` (the twin of
``lanchat.transport.Transport``) and a `MemoryDiscovery` (the twin of
``lanchat.discovery.Discovery``, made by the factory `MemoryLan.discovery`). As far as the
node can tell (``lanchat.ports``), they behave like the real ones:

- ROUTER/DEALER: what a link sends reaches the server's router with the client's CURVE
  public key as ``Incoming.transport_key`` and a routing id per connection (a reconnect
  is a new connection, with a new id); the router answers by that id;
- PUB/SUB: what a node publishes reaches the links subscribed to its pub port, from the
  moment their subscription is connected (nothing earlier, as with PUB);
- connection events are libzmq's monitor event numbers: ``EVENT_CONNECTED`` and
  ``EVENT_HANDSHAKE_SUCCEEDED`` when a link connects, ``EVENT_DISCONNECTED`` when its
  server's transport closes or is killed, or a partition cuts it; a link whose server is
  not there keeps its messages and connects when the server appears (a DEALER queues);
- every delivery is asynchronous, from the running loop (``call_soon``, never inside the
  caller's send), and in batches of up to `READ_LIMIT`, as `transport.SocketReader` reads;
- the info port answers `ask_info` with what `serve_info` was given.

Discovery: an advert registered, updated or re-announced is heard by the discovery of
every other node of the LAN as `PeerSeen`, a clean close withdraws it (`PeerGone`), and a
node that takes a handle someone else registered meanwhile hears `HandleClash`.
`MemoryLan.kill` is SIGKILL: the node's connections drop (its links' peers see
``EVENT_DISCONNECTED``) but its advert stays in everyone's view (mDNS sends no goodbye
then), and it answers no more queries. `MemoryLan.partition` splits the LAN in groups that
cannot reach each other: adverts stop crossing, messages over a connection across wait (TCP
retransmits) until the connection drops, once heartbeats would notice
(`transport.HEARTBEAT_TIMEOUT_MS`), and are lost with it; `heal` joins the groups again
and delivers what waited on the connections still up (mDNS does not re-announce by itself
after a heal: the nodes do).
Multicast blocked (Wi-Fi client isolation, ``--connect``): give that node the discovery
of another `MemoryLan`; its sockets still reach this one.

Not modelled: bytes on a wire, CURVE cryptography (a wrong server key fails the handshake),
high-water-mark drops, advert TTLs (a record stays until withdrawn), the subnet check of
adverts. As with a real ROUTER, a server is never told that a client went away: the relay
finds out by its own timeouts. The file service uses real sockets:
`MemoryTransport.file_context` is a real zmq context (with the real ZAP handler), so a file
test needs addresses this host has (127.0.0.x on Linux).

The code: `lanchat.inmemory.lan` (the medium: listeners, partitions, kills),
`lanchat.inmemory.transport` (links and transports), `lanchat.inmemory.discovery`. Import
from ``lanchat.inmemory``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lanchat.inmemory.discovery import MemoryDiscovery
from lanchat.inmemory.lan import FIRST_RANDOM_PORT, PARTITION_DETECT_S, MemoryLan
from lanchat.inmemory.transport import (
    READ_LIMIT,
    SEND_QUEUE_LIMIT,
    MemoryLink,
    MemoryTransport,
)

__all__ = [
    "FIRST_RANDOM_PORT",
    "PARTITION_DETECT_S",
    "READ_LIMIT",
    "SEND_QUEUE_LIMIT",
    "MemoryDiscovery",
    "MemoryLan",
    "MemoryLink",
    "MemoryTransport",
]


if TYPE_CHECKING:
    from collections.abc import Callable

    from lanchat.discovery import DiscoveryEvent
    from lanchat.ports import LinkSockets, RoomDiscovery, RoomTransport

    def _conforms(
        lan: MemoryLan, transport: MemoryTransport, link: MemoryLink, found: MemoryDiscovery
    ) -> tuple[
        RoomTransport,
        LinkSockets,
        RoomDiscovery,
        Callable[[str, Callable[[DiscoveryEvent], None]], RoomDiscovery],
    ]:
        """Never called: mypy proves here that the twins fit the ports a Node takes."""
        return transport, link, found, lan.discovery
