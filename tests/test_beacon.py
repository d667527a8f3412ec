"""The broadcast beacon: its signed format, its budget, and the discovery that merges it."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from lanchat import identity as ident
from lanchat.beacon import LanDiscovery, broadcast_address
from lanchat.core import beacon as bc
from lanchat.core.advert import Advert
from lanchat.discovery import HandleClash, PeerGone, PeerSeen
from lanchat.netif import Candidate

if TYPE_CHECKING:
    from collections.abc import Callable

    from lanchat.discovery import DiscoveryEvent


def advert_of(me: ident.Identity, handle: str, address: str, epoch: int = 0) -> Advert:
    return Advert(
        handle=handle,
        room="lobby",
        address=address,
        id_key=me.key,
        curve_key=me.curve_public,
        router_port=47101,
        pub_port=47102,
        mentor=False,
        priority=5,
        started_at=1764130000.25,
        broker_epoch=epoch,
        broker_since=1764130001.5 if epoch else 0.0,
    )


def test_a_beacon_round_trips_and_keeps_unknown_fields() -> None:
    me = ident.Identity.generate()
    adv = advert_of(me, "ann", "10.77.0.1", epoch=3)
    packet = bc.encode(adv, 1764130002.5, 10.0, me.sign, extra={"cert": "abc"})
    assert len(packet) <= 400
    got = bc.decode(packet, "10.77.0.1", ident.verify)
    assert got.advert == adv
    assert (got.sent_at, got.ttl_s, got.bye, got.extra) == (
        1764130002.5,
        10.0,
        False,
        {"cert": "abc"},
    )


def test_a_beacon_is_refused_from_another_address_or_with_another_key() -> None:
    me, other = ident.Identity.generate(), ident.Identity.generate()
    packet = bc.encode(advert_of(me, "ann", "10.77.0.1"), 1.0, 10.0, me.sign)
    with pytest.raises(bc.BeaconError, match="came from"):
        bc.decode(packet, "10.77.0.9", ident.verify)
    forged = bc.encode(advert_of(me, "ann", "10.77.0.1"), 1.0, 10.0, other.sign)
    with pytest.raises(bc.BeaconError, match="signature"):
        bc.decode(forged, "10.77.0.1", ident.verify)
    # One byte changed anywhere (here: the mentor flag) breaks the signature.
    tampered = packet.replace(b"m=0", b"m=1")
    assert tampered != packet
    with pytest.raises(bc.BeaconError, match="signature"):
        bc.decode(tampered, "10.77.0.1", ident.verify)
    for junk in (b"", b"LCB1", b"LCB1" + b"\xff" * 70, bc.QUERY, b"x" * 2000):
        with pytest.raises(bc.BeaconError):
            bc.decode(junk, "10.77.0.1", ident.verify)


def test_the_budget() -> None:
    plan = bc.BeaconPlan()
    assert plan.fast(mdns_peers=0, beacon_only=0)  # alone, or mDNS filtered
    assert plan.fast(mdns_peers=3, beacon_only=1)  # someone mDNS does not show
    assert not plan.fast(mdns_peers=3, beacon_only=0)
    assert plan.interval(True, 2) == bc.FAST_S
    assert plan.interval(True, 200) == pytest.approx(20.0)  # a big room: under 10 packets/s
    assert plan.interval(False, 2) == bc.KEEPALIVE_S
    assert plan.due(0.0, True, 2)
    plan.sent(0.0)
    assert not plan.due(bc.FAST_S - 0.01, True, 2)
    assert plan.due(bc.FAST_S, True, 2)
    assert not plan.due(bc.FAST_S, False, 2)  # mDNS works: only the keep-alive
    plan.urgent = True
    assert not plan.due(bc.MIN_GAP_S - 0.01, False, 2)  # never two within MIN_GAP_S
    assert plan.due(bc.MIN_GAP_S, False, 2)


def test_broadcast_address_is_the_subnets_own() -> None:
    assert broadcast_address(Candidate("eth0", "10.77.0.3", 24, True)) == "10.77.0.255"
    assert broadcast_address(Candidate("wlan0", "192.168.1.20", 22, True)) == "192.168.3.255"
    assert broadcast_address(Candidate("eth0", "10.0.0.1", 32, True)) is None
    assert broadcast_address(Candidate("lo", "127.0.0.1", 8, False, "loopback")) is None


# ---- LanDiscovery with a fake mDNS source and a fake broadcast medium


class FakeMdns:
    def __init__(self, address: str, on_event: Callable[[DiscoveryEvent], None]) -> None:
        self.view: dict[str, Advert] = {}
        self.on_event = on_event

    async def start(self) -> None:
        pass

    def ask_everyone(self) -> None:
        pass

    def peers(self) -> dict[str, Advert]:
        return dict(self.view)

    async def find_conflict(self, handle: str, my_key: bytes, wait_s: float = 0.0) -> None:
        return None

    async def register(self, advert: Advert, *, force: bool = False) -> None:
        pass

    async def update(self, advert: Advert) -> None:
        pass

    async def reannounce(self) -> None:
        pass

    def disown(self) -> None:
        pass

    async def close(self) -> None:
        pass


class FakeAir:
    """A broadcast domain: what one socket sends, every socket hears (its own too)."""

    def __init__(self) -> None:
        self.sockets: list[FakeSocket] = []
        self.sent: list[tuple[str, bytes]] = []


class FakeSocket:
    def __init__(self, air: FakeAir, candidate: Candidate) -> None:
        self.air, self.candidate = air, candidate
        self.on_datagram: Callable[[bytes, str], None] | None = None

    async def open(self, on_datagram: Callable[[bytes, str], None]) -> None:
        self.on_datagram = on_datagram
        self.air.sockets.append(self)

    def send(self, data: bytes) -> bool:
        self.air.sent.append((self.candidate.address, data))
        for sock in self.air.sockets:
            assert sock.on_datagram is not None
            sock.on_datagram(data, self.candidate.address)
        return True

    def close(self) -> None:
        self.air.sockets.remove(self)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make(
    air: FakeAir, clock: Clock, address: str, events: list[DiscoveryEvent]
) -> tuple[LanDiscovery, ident.Identity]:
    me = ident.Identity.generate()
    cand = Candidate("eth0", address, 24, True)
    disc = LanDiscovery(
        address,
        events.append,
        identity=me,
        primary=FakeMdns,
        beacon_socket=lambda _c: FakeSocket(air, cand),  # type: ignore[arg-type,return-value]
        clock=clock,
        wall=lambda: 1764130000.0 + clock.now,
    )
    return disc, me


@pytest.fixture
def no_interfaces(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("lanchat.beacon.choose_address", lambda a: Candidate("eth0", a, 24, True))


def test_nodes_hear_each_other_by_beacon_and_answer_newcomers(no_interfaces: None) -> None:
    async def main() -> None:
        air, clock = FakeAir(), Clock()
        ev_a: list[DiscoveryEvent] = []
        ev_b: list[DiscoveryEvent] = []
        a, ka = make(air, clock, "10.77.0.1", ev_a)
        b, kb = make(air, clock, "10.77.0.2", ev_b)
        await a.start()
        await b.start()
        await a.register(advert_of(ka, "ann", "10.77.0.1"))
        assert len(air.sent) == 1  # alone as far as mDNS can tell: at once
        clock.now += 0.2
        await b.register(advert_of(kb, "ben", "10.77.0.2"))
        # ben heard ann's first beacon? No: ben was not registered, but its socket was open.
        assert [e.advert.handle for e in ev_b if isinstance(e, PeerSeen)] == ["ann"]
        assert [e.advert.handle for e in ev_a if isinstance(e, PeerSeen)] == ["ben"]
        assert set(a.peers()) == {"ben"}
        # ann owes ben an answer (a newcomer), but not within MIN_GAP_S of its last beacon.
        before = len(air.sent)
        a._tick(clock.now)
        assert len(air.sent) == before
        clock.now += bc.MIN_GAP_S
        a._tick(clock.now)
        assert len(air.sent) == before + 1
        # A replay of an old beacon of ann's is refused.
        old = air.sent[0][1]
        refused = b.counters["beacons_refused"]
        assert b._socket is not None
        b._on_datagram(old, "10.77.0.1")
        assert b.counters["beacons_refused"] == refused + 1
        # Once mDNS shows ben to ann, ann only keeps alive.
        assert isinstance(a._primary, FakeMdns)
        a._primary.view["ben"] = advert_of(kb, "ben", "10.77.0.2")
        sent = len(air.sent)
        for _ in range(int(bc.KEEPALIVE_S / 0.25) - 8):
            clock.now += 0.25
            a._tick(clock.now)
        assert len(air.sent) == sent
        # ben quits: ann (which knows ben by mDNS too) keeps its mDNS view.
        await b.close()
        assert set(a.peers()) == {"ben"}
        await a.close()

    asyncio.run(main())


def test_beacon_facts_expire_and_a_bye_withdraws_them(no_interfaces: None) -> None:
    async def main() -> None:
        air, clock = FakeAir(), Clock()
        ev_a: list[DiscoveryEvent] = []
        a, ka = make(air, clock, "10.77.0.1", ev_a)
        b, kb = make(air, clock, "10.77.0.2", [])
        c, kc = make(air, clock, "10.77.0.3", [])
        for d in (a, b, c):
            await d.start()
        await a.register(advert_of(ka, "ann", "10.77.0.1"))
        await b.register(advert_of(kb, "ben", "10.77.0.2"))
        await c.register(advert_of(kc, "cat", "10.77.0.3"))
        assert set(a.peers()) == {"ben", "cat"}
        await b.close()  # a bye: gone at once
        assert set(a.peers()) == {"cat"}
        assert [e.handle for e in ev_a if isinstance(e, PeerGone)] == ["ben"]
        # cat falls silent (SIGKILL): its facts expire after their ttl.
        assert c._task is not None
        c._task.cancel()
        c._socket = None
        clock.now += bc.TTL_FACTOR * bc.FAST_S + 1.5
        a._tick(clock.now)
        assert a.peers() == {}
        assert [e.handle for e in ev_a if isinstance(e, PeerGone)] == ["ben", "cat"]
        await a.close()

    asyncio.run(main())


def test_a_beacon_claiming_our_handle_is_a_clash(no_interfaces: None) -> None:
    async def main() -> None:
        air, clock = FakeAir(), Clock()
        ev_a: list[DiscoveryEvent] = []
        a, ka = make(air, clock, "10.77.0.1", ev_a)
        b, kb = make(air, clock, "10.77.0.2", [])
        await a.start()
        await b.start()
        await a.register(advert_of(ka, "ann", "10.77.0.1"))
        assert await b.find_conflict("ANN", kb.key) is not None
        await b.register(advert_of(kb, "ann", "10.77.0.2"))
        assert [type(e) for e in ev_a] == [HandleClash]
        await a.close()
        await b.close()

    asyncio.run(main())
