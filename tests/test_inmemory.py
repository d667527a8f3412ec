"""The in-memory twins of the transport and discovery, on their own (lanchat.inmemory)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import pytest
import zmq

from lanchat.core.advert import Advert
from lanchat.discovery import HandleClash, HandleTaken, PeerGone, PeerSeen
from lanchat.identity import Identity
from lanchat.inmemory import READ_LIMIT, MemoryDiscovery, MemoryLan, MemoryTransport

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

    from lanchat.discovery import DiscoveryEvent
    from lanchat.ports import LinkSockets, RoomDiscovery, RoomTransport
    from lanchat.transport import Incoming

_T = TypeVar("_T")
WAIT_S = 2.0
CONNECTED = int(zmq.EVENT_CONNECTED)
HANDSHAKE = int(zmq.EVENT_HANDSHAKE_SUCCEEDED)
DISCONNECTED = int(zmq.EVENT_DISCONNECTED)
KEY_A, KEY_B, KEY_C = (bytes([n]) * 32 for n in (1, 2, 3))


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 10))


def ignore(_batch: list[Any]) -> None:
    """A reader for what a test does not look at."""


class Recorder(Generic[_T]):
    """Collects what a twin hands over (batch by batch), and lets a test await it."""

    def __init__(self) -> None:
        self.batches: list[list[_T]] = []
        self._changed = asyncio.Event()

    def __call__(self, batch: list[_T]) -> None:
        self.batches.append(list(batch))
        self._changed.set()

    @property
    def items(self) -> list[_T]:
        return [item for batch in self.batches for item in batch]

    async def until(self, predicate: Callable[[list[_T]], bool]) -> list[_T]:
        async with asyncio.timeout(WAIT_S):
            while not predicate(self.items):
                self._changed.clear()
                await self._changed.wait()
        return self.items

    async def count(self, n: int) -> list[_T]:
        return await self.until(lambda items: len(items) >= n)


def started(lan: MemoryLan, address: str, key: bytes) -> tuple[MemoryTransport, Recorder[Incoming]]:
    transport = lan.transport(address, key)
    transport.start(0)
    router: Recorder[Incoming] = Recorder()
    transport.read_router(router)
    return transport, router


def test_the_twins_fit_the_ports_the_node_takes() -> None:
    """Checked by mypy (lanchat/inmemory/__init__.py proves it too); here at run time as well."""

    async def main() -> None:
        lan = MemoryLan()
        transport: RoomTransport = lan.transport("10.0.0.1", KEY_A)
        link: LinkSockets = transport.link("10.0.0.2", 1, KEY_B)
        factory: Callable[[str, Callable[[DiscoveryEvent], None]], RoomDiscovery] = lan.discovery
        found = factory("10.0.0.1", lambda _event: None)
        assert isinstance(found, MemoryDiscovery)
        link.close()
        transport.close()

    run(main())


def test_a_dealer_reaches_the_router_with_its_key_and_a_routing_id_per_connection() -> None:
    async def main() -> None:
        lan = MemoryLan()
        server, router = started(lan, "10.0.0.1", KEY_A)
        client = lan.transport("10.0.0.2", KEY_B)
        client.start(0)
        link = client.link("10.0.0.1", server.router_port, KEY_A)
        replies: Recorder[list[bytes]] = Recorder()
        events: Recorder[int] = Recorder()
        link.start(replies, events)
        assert link.send_nowait([b"hello", b"sig"])
        assert router.items == []  # never inside the sender's call
        (first,) = await router.count(1)
        assert first.transport_key == KEY_B
        assert first.frames == [b"hello", b"sig"]
        assert await events.count(2) == [CONNECTED, HANDSHAKE]
        server.send_router_nowait(first.rid, [b"welcome"])
        server.send_router_nowait(b"\x00nobody", [b"dropped"])
        assert await replies.count(1) == [[b"welcome"]]
        # A second link of the same node is a second connection: its own routing id.
        other = client.link("10.0.0.1", server.router_port, KEY_A)
        other.start(ignore, ignore)
        other.send_nowait([b"again"])
        second = (await router.count(2))[1]
        assert second.rid != first.rid
        assert second.transport_key == KEY_B
        client.close()
        server.close()

    run(main())


def test_a_link_waits_for_its_server_then_delivers_what_it_queued() -> None:
    """A DEALER connected to a port nobody binds yet keeps its messages, in order."""

    async def main() -> None:
        lan = MemoryLan()
        client = lan.transport("10.0.0.2", KEY_B)
        link = client.link("10.0.0.1", 47101, KEY_A)
        events: Recorder[int] = Recorder()
        link.start(ignore, events)
        for n in range(3):
            assert link.send_nowait([str(n).encode()])
        await asyncio.sleep(0)  # a loop turn: nothing to connect to yet
        assert not link.connected
        server = lan.transport("10.0.0.1", KEY_A)
        server.start(47100)
        assert (server.info_port, server.router_port, server.pub_port) == (47100, 47101, 47102)
        router: Recorder[Incoming] = Recorder()
        server.read_router(router)  # what arrived before the reader waits for it
        received = await router.count(3)
        assert [m.frames for m in received] == [[b"0"], [b"1"], [b"2"]]
        assert await events.count(2) == [CONNECTED, HANDSHAKE]
        client.close()
        server.close()

    run(main())


def test_a_closed_or_killed_server_disconnects_its_clients_who_reconnect_with_a_new_id() -> None:
    async def main() -> None:
        lan = MemoryLan()
        server, router = started(lan, "10.0.0.1", KEY_A)
        port = server.router_port
        client = lan.transport("10.0.0.2", KEY_B)
        link = client.link("10.0.0.1", port, KEY_A)
        events: Recorder[int] = Recorder()
        link.start(ignore, events)
        link.send_nowait([b"one"])
        (first,) = await router.count(1)
        lan.kill("10.0.0.1")
        assert await events.count(3) == [CONNECTED, HANDSHAKE, DISCONNECTED]
        assert server.killed
        link.send_nowait([b"while down"])  # queued, as a DEALER does
        again = lan.transport("10.0.0.1", KEY_A)
        again.start(port - 1)
        assert again.router_port == port
        router2: Recorder[Incoming] = Recorder()
        again.read_router(router2)
        (second,) = await router2.count(1)
        assert second.frames == [b"while down"]
        assert second.rid != first.rid
        assert await events.count(5) == [CONNECTED, HANDSHAKE, DISCONNECTED, CONNECTED, HANDSHAKE]
        again.close()  # a clean close drops connections just the same
        assert (await events.count(6))[-1] == DISCONNECTED
        client.close()

    run(main())


def test_a_wrong_server_key_fails_the_handshake() -> None:
    async def main() -> None:
        lan = MemoryLan()
        server, router = started(lan, "10.0.0.1", KEY_A)
        client = lan.transport("10.0.0.2", KEY_B)
        link = client.link("10.0.0.1", server.router_port, KEY_C)
        events: Recorder[int] = Recorder()
        link.start(ignore, events)
        link.send_nowait([b"secret"])
        assert await events.count(2) == [CONNECTED, DISCONNECTED]
        assert router.items == []
        assert not link.connected
        client.close()
        server.close()

    run(main())


def test_publish_reaches_subscribers_once_their_subscription_is_up() -> None:
    async def main() -> None:
        lan = MemoryLan()
        server, _router = started(lan, "10.0.0.1", KEY_A)
        server.publish_nowait([b"before anyone"])
        heard: list[Recorder[list[bytes]]] = []
        ups: list[Recorder[int]] = []
        clients = []
        for n, key in ((2, KEY_B), (3, KEY_C)):
            client = lan.transport(f"10.0.0.{n}", key)
            clients.append(client)
            link = client.link("10.0.0.1", server.router_port, KEY_A)
            link.start(ignore, ignore)
            room: Recorder[list[bytes]] = Recorder()
            up: Recorder[int] = Recorder()
            link.subscribe(server.pub_port, room, up)
            heard.append(room)
            ups.append(up)
        for up in ups:
            assert await up.count(1) == [HANDSHAKE]
        server.publish_nowait([b"beat"])
        for room in heard:
            assert await room.count(1) == [[b"beat"]]
        for client in clients:
            client.close()
        server.close()

    run(main())


def test_deliveries_come_in_batches_like_the_socket_reader() -> None:
    async def main() -> None:
        lan = MemoryLan()
        server, router = started(lan, "10.0.0.1", KEY_A)
        client = lan.transport("10.0.0.2", KEY_B)
        link = client.link("10.0.0.1", server.router_port, KEY_A)
        link.start(ignore, ignore)
        total = 2 * READ_LIMIT + 7
        for n in range(total):
            link.send_nowait([n.to_bytes(4, "big")])
        received = await router.count(total)
        assert [len(b) for b in router.batches] == [READ_LIMIT, READ_LIMIT, 7]
        assert [int.from_bytes(m.frames[0], "big") for m in received] == list(range(total))
        client.close()
        server.close()

    run(main())


def test_the_info_port_answers_with_the_served_advert() -> None:
    async def main() -> None:
        lan = MemoryLan()
        server, _router = started(lan, "10.0.0.1", KEY_A)
        asker = lan.transport("10.0.0.2", KEY_B)
        serving = asyncio.create_task(server.serve_info(lambda: {"handle": "ann", "n": 1}))
        info = await asker.ask_info("10.0.0.1", server.info_port, timeout_s=1.0)
        assert info == {"handle": "ann", "n": 1}
        with pytest.raises(TimeoutError):
            await asker.ask_info("10.0.0.1", server.router_port, timeout_s=0.01)
        server.close()
        await asyncio.wait_for(serving, WAIT_S)  # closing ends the service
        asker.close()

    run(main())


# ---- discovery -------------------------------------------------------------------


def advert(handle: str, address: str, key: bytes | None = None, epoch: int = 0) -> Advert:
    return Advert(
        handle=handle,
        room="workshop",
        address=address,
        id_key=key or Identity.generate().key,
        curve_key=KEY_A,
        router_port=47101,
        pub_port=47102,
        mentor=False,
        priority=0,
        started_at=1.0,
        broker_epoch=epoch,
        broker_since=1.0 if epoch else 0.0,
    )


async def browsing(lan: MemoryLan, address: str) -> tuple[MemoryDiscovery, Recorder[Any]]:
    seen: Recorder[DiscoveryEvent] = Recorder()
    found = lan.discovery(address, lambda event: seen([event]))
    await found.start()
    return found, seen


def test_adverts_are_seen_updated_and_withdrawn_by_every_other_node() -> None:
    async def main() -> None:
        lan = MemoryLan()
        ann, ann_heard = await browsing(lan, "10.0.0.1")
        bob, bob_heard = await browsing(lan, "10.0.0.2")
        mine = advert("Ann", "10.0.0.1")
        await ann.register(mine)
        assert await bob_heard.count(1) == [PeerSeen(mine)]
        assert bob.peers() == {"ann": mine}
        broker = advert("Ann", "10.0.0.1", key=mine.id_key, epoch=1)
        await ann.update(broker)
        await ann.reannounce()
        assert await bob_heard.count(3) == [PeerSeen(mine), PeerSeen(broker), PeerSeen(broker)]
        # A latecomer's start-up query is answered by everyone registered.
        cat, cat_heard = await browsing(lan, "10.0.0.3")
        assert await cat_heard.count(1) == [PeerSeen(broker)]
        await ann.close()
        assert (await bob_heard.count(4))[-1] == PeerGone("Ann")
        assert (await cat_heard.count(2))[-1] == PeerGone("Ann")
        assert bob.peers() == {}
        assert ann_heard.items == []  # our own adverts never come back to us
        with pytest.raises(ValueError, match="not ours"):
            await bob.register(advert("bob", "10.0.0.9"))
        await bob.close()
        await cat.close()

    run(main())


def test_a_killed_node_leaves_its_advert_and_answers_nobody_new() -> None:
    async def main() -> None:
        lan = MemoryLan()
        ann, _ = await browsing(lan, "10.0.0.1")
        bob, bob_heard = await browsing(lan, "10.0.0.2")
        mine = advert("ann", "10.0.0.1", epoch=1)
        await ann.register(mine)
        await bob_heard.count(1)
        lan.kill("10.0.0.1")
        await ann.close()  # its node's shutdown meets a dead twin: no goodbye
        await bob.reannounce()  # a turn of everyone's loop
        cat, cat_heard = await browsing(lan, "10.0.0.3")
        await bob.register(advert("bob", "10.0.0.2"))
        await cat_heard.count(1)
        assert [type(e) for e in bob_heard.items] == [PeerSeen]
        assert bob.peers() == {"ann": mine}
        assert "ann" not in cat.peers()
        await bob.close()
        await cat.close()

    run(main())


def test_handle_conflicts_are_found_refused_and_clashed_as_by_mdns() -> None:
    async def main() -> None:
        lan = MemoryLan()
        ann, _ = await browsing(lan, "10.0.0.1")
        holder = advert("Ann", "10.0.0.1")
        await ann.register(holder)
        rival, rival_heard = await browsing(lan, "10.0.0.2")
        other_key = Identity.generate().key
        assert await rival.find_conflict("ann", other_key, wait_s=1.0) == holder
        assert await rival.find_conflict("ann", holder.id_key, wait_s=0.0) is None
        with pytest.raises(HandleTaken) as taken:
            await rival.register(advert("ANN", "10.0.0.2", key=other_key))
        assert taken.value.holder == holder
        await rival_heard.count(1)

        # Two that register the same handle at the same moment each hear the other's.
        lan2 = MemoryLan()
        one, one_heard = await browsing(lan2, "10.0.0.1")
        two, two_heard = await browsing(lan2, "10.0.0.2")
        first, second = advert("dan", "10.0.0.1"), advert("Dan", "10.0.0.2")
        await one.register(first)
        await two.register(second)  # before the first advert arrived
        assert await one_heard.count(1) == [HandleClash(second)]
        assert await two_heard.count(1) == [HandleClash(first)]
        # The loser disowns its name: no goodbye that would withdraw the winner's advert.
        third, third_heard = await browsing(lan2, "10.0.0.3")
        await third_heard.count(2)
        two.disown()
        await two.close()
        await one.reannounce()
        await third_heard.count(3)
        assert not any(isinstance(e, PeerGone) for e in third_heard.items)
        for found in (ann, rival, one, third):
            await found.close()

    run(main())


# ---- partitions --------------------------------------------------------------------


def test_a_partition_cuts_messages_and_adverts_and_heal_reconnects() -> None:
    async def main() -> None:
        lan = MemoryLan()
        server, router = started(lan, "10.0.0.1", KEY_A)
        client = lan.transport("10.0.0.2", KEY_B)
        link = client.link("10.0.0.1", server.router_port, KEY_A)
        events: Recorder[int] = Recorder()
        replies: Recorder[list[bytes]] = Recorder()
        link.start(replies, events)
        room: Recorder[list[bytes]] = Recorder()
        link.subscribe(server.pub_port, room, ignore)
        link.send_nowait([b"before"])
        (first,) = await router.count(1)
        ann, _ = await browsing(lan, "10.0.0.1")
        bob, bob_heard = await browsing(lan, "10.0.0.2")

        lan.partition(["10.0.0.1"], ["10.0.0.2"], detect_s=0.05)
        assert not lan.reachable("10.0.0.1", "10.0.0.2")
        link.send_nowait([b"lost"])
        server.publish_nowait([b"lost too"])
        server.send_router_nowait(first.rid, [b"and this"])
        await ann.register(advert("ann", "10.0.0.1"))
        assert await events.count(3) == [CONNECTED, HANDSHAKE, DISCONNECTED]
        link.send_nowait([b"after the cut"])  # queued until the LAN heals
        assert bob.peers() == {}

        lan.heal()
        second = (await router.count(2))[1]
        assert second.frames == [b"after the cut"]
        assert second.rid != first.rid
        assert [m.frames for m in router.items] == [[b"before"], [b"after the cut"]]
        assert replies.items == []
        assert room.items == []
        await ann.reannounce()  # mDNS does not re-announce by itself after a heal
        assert isinstance((await bob_heard.count(1))[0], PeerSeen)
        await ann.close()
        await bob.close()
        client.close()
        server.close()

    run(main())


def test_a_cut_healed_before_heartbeats_notice_delays_but_loses_nothing() -> None:
    """As TCP: what crosses a short cut is retransmitted once the way is back, in order."""

    async def main() -> None:
        lan = MemoryLan()
        server, router = started(lan, "10.0.0.1", KEY_A)
        client = lan.transport("10.0.0.2", KEY_B)
        link = client.link("10.0.0.1", server.router_port, KEY_A)
        events: Recorder[int] = Recorder()
        replies: Recorder[list[bytes]] = Recorder()
        link.start(replies, events)
        room: Recorder[list[bytes]] = Recorder()
        link.subscribe(server.pub_port, room, ignore)
        link.send_nowait([b"1"])
        (first,) = await router.count(1)

        neighbour = lan.transport("10.0.0.3", KEY_C)  # on the server's side of the cut
        barrier = neighbour.link("10.0.0.1", server.router_port, KEY_A)
        barrier.start(ignore, ignore)
        lan.partition(["10.0.0.1", "10.0.0.3"], ["10.0.0.2"], detect_s=60.0)
        link.send_nowait([b"2"])
        server.send_router_nowait(first.rid, [b"answer"])
        server.publish_nowait([b"news"])
        barrier.send_nowait([b"barrier"])
        # Deliveries keep their order: once the neighbour's message is in, "2" would be.
        assert [m.frames for m in await router.count(2)] == [[b"1"], [b"barrier"]]
        assert (replies.items, room.items) == ([], [])
        lan.heal()
        link.send_nowait([b"3"])
        received = [m for m in await router.count(4) if m.transport_key == KEY_B]
        assert [m.frames for m in received] == [[b"1"], [b"2"], [b"3"]]
        assert {m.rid for m in received} == {first.rid}  # the same connection throughout
        assert await replies.count(1) == [[b"answer"]]
        assert await room.count(1) == [[b"news"]]
        assert events.items == [CONNECTED, HANDSHAKE]
        neighbour.close()
        client.close()
        server.close()

    run(main())
