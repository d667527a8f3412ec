"""Discovery where multicast does not reach: mDNS plus a signed UDP broadcast beacon.

`LanDiscovery` is the node's discovery (``lanchat.ports.RoomDiscovery``): the mDNS adapter
(``lanchat.discovery``) with a second source merged in, the beacon of
``lanchat.core.beacon``, broadcast on the chosen interface to its subnet's broadcast address
(never 255.255.255.255, never another interface). A node heard by beacon is reported as
`PeerSeen`, exactly as an mDNS advert would be, and is part of `peers()`, so membership and
advertising need not know which source told them. Where mDNS works and shows every node,
a node sends nothing but a keep-alive a minute (``BeaconPlan``; docs/performance.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import random
import socket
import sys
import time
from typing import TYPE_CHECKING, Any, Final

from lanchat import identity as ident
from lanchat.core import beacon as bc
from lanchat.discovery import Discovery, HandleClash, PeerGone, PeerSeen
from lanchat.netif import Candidate, choose_address, in_same_subnet

if TYPE_CHECKING:
    from collections.abc import Callable

    from lanchat.core.advert import Advert
    from lanchat.discovery import DiscoveryEvent
    from lanchat.ports import RoomDiscovery

__all__ = ["BEACON_PORT", "BeaconSocket", "LanDiscovery", "broadcast_address"]

log = logging.getLogger(__name__)

# UDP; the info port (``--connect``) is TCP 47100: one number to allow in a firewall.
BEACON_PORT: Final = 47100
TICK_S: Final = 0.25
JITTER: Final = 0.1  # +-10 % on each interval: nodes started together drift apart
# Signature checks are ~60 us each: a flood of forged packets costs at most this many a second.
VERIFY_PER_S: Final = 400
REPLAY_MEMORY: Final = 4096  # keys whose last beacon time we remember (replays are older)


def broadcast_address(candidate: Candidate) -> str | None:
    """The subnet's broadcast address, or None where there is none (/31, /32, loopback)."""
    try:
        net = ipaddress.IPv4Network(f"{candidate.address}/{candidate.prefixlen}", strict=False)
    except ValueError:
        return None
    if net.prefixlen >= 31 or net.is_loopback:
        return None
    return str(net.broadcast_address)


class _Receiver(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Callable[[bytes, str], None]) -> None:
        self._on_datagram = on_datagram

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self._on_datagram(data, str(addr[0]))

    def error_received(self, exc: Exception) -> None:
        log.debug("beacon socket: %s", exc)


class BeaconSocket:
    """Send to and hear from the subnet's broadcast address on one interface (UDP).

    Two sockets: one bound to our address that sends (SO_BROADCAST), one that receives:
    bound to the subnet's broadcast address on Linux and macOS (which deliver that
    subnet's broadcasts there and nothing from other interfaces), to our address on
    Windows (which delivers broadcasts to it and binds no broadcast address). Never the
    wildcard address. SO_REUSEADDR (SO_REUSEPORT on BSD): several nodes on one machine all
    hear every beacon.
    """

    def __init__(self, candidate: Candidate, port: int = BEACON_PORT) -> None:
        self.candidate = candidate
        self.port = port
        self.broadcast = broadcast_address(candidate)
        self._transports: list[asyncio.DatagramTransport] = []
        self._sender: socket.socket | None = None

    async def open(self, on_datagram: Callable[[bytes, str], None]) -> None:
        """Bind both sockets; OSError if the port or the address cannot be used."""
        if self.broadcast is None:
            raise OSError(f"{self.candidate.address}/{self.candidate.prefixlen} has no broadcast")
        loop = asyncio.get_running_loop()
        receiver = self._receiving_socket()
        try:
            sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                sender.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
                sender.bind((self.candidate.address, 0))
                sender.setblocking(False)
            except OSError:
                sender.close()
                raise
        except OSError:
            receiver.close()
            raise
        self._sender = sender
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Receiver(on_datagram), sock=receiver
        )
        self._transports.append(transport)

    def _receiving_socket(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if sys.platform == "win32":
                host = self.candidate.address  # Windows binds no broadcast address
            else:
                if sys.platform != "linux":  # BSD: SO_REUSEADDR alone does not share a port
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                host = self.broadcast or self.candidate.address
            sock.bind((host, self.port))
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        return sock

    def send(self, data: bytes) -> bool:
        """One datagram to the subnet's broadcast address; False if it could not leave."""
        if self._sender is None or self.broadcast is None:
            return False
        try:
            self._sender.sendto(data, (self.broadcast, self.port))
        except OSError as exc:  # link down, buffer full: the next beacon goes later
            log.debug("beacon not sent: %s", exc)
            return False
        return True

    def close(self) -> None:
        for transport in self._transports:
            transport.close()
        self._transports.clear()
        if self._sender is not None:
            self._sender.close()
            self._sender = None


class _Heard:
    __slots__ = ("advert", "until")

    def __init__(self, advert: Advert, until: float) -> None:
        self.advert = advert
        self.until = until


class LanDiscovery:
    """mDNS discovery with the broadcast beacon merged in (a ``RoomDiscovery``).

    ``primary`` (a factory like ``Discovery``) browses and advertises by mDNS; its events
    pass through unchanged. The beacon source adds the nodes mDNS does not show: its
    adverts fill `peers()` for handles mDNS lacks, and a newly heard one is `PeerSeen`.
    """

    def __init__(
        self,
        address: str,
        on_event: Callable[[DiscoveryEvent], None],
        *,
        identity: ident.Identity,
        primary: Callable[[str, Callable[[DiscoveryEvent], None]], RoomDiscovery] = Discovery,
        beacon_socket: Callable[[Candidate], BeaconSocket] = BeaconSocket,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._address = address
        self._on_event = on_event
        self._me = identity
        self._primary = primary(address, self._from_primary)
        self._make_socket = beacon_socket
        self._clock = clock
        self._wall = wall
        self._socket: BeaconSocket | None = None
        self._candidate: Candidate | None = None
        self._advert: Advert | None = None
        self._plan = bc.BeaconPlan()
        self._heard: dict[bytes, _Heard] = {}
        self._last_t: dict[bytes, float] = {}
        self._task: asyncio.Task[None] | None = None
        self._jitter = 1.0
        self._verify_window = (0.0, 0)
        self._last_sent_at = 0.0
        self._owe_query = False  # a query is answered even where mDNS works
        self._fast_until = -1.0  # our last beacon sent while fast is held by others until
        self.counters: dict[str, int] = {
            "beacons_sent": 0,
            "beacons_heard": 0,
            "beacons_refused": 0,
            "queries_heard": 0,
        }

    # ---- RoomDiscovery

    async def start(self) -> None:
        await self._primary.start()
        self._candidate = choose_address(self._address)
        sock = self._make_socket(self._candidate)
        try:
            await sock.open(self._on_datagram)
        except Exception as exc:  # OSError mostly; nothing here may stop the node
            # mDNS alone still works; doctor explains what is missing.
            log.warning("no broadcast discovery on %s: %s", self._address, exc)
            return
        self._socket = sock
        self._task = asyncio.get_running_loop().create_task(self._run())

    def ask_everyone(self) -> None:
        self._primary.ask_everyone()
        if self._fast():
            self._plan.urgent = True  # back on the network: tell the room, hear answers

    def peers(self) -> dict[str, Advert]:
        merged = {h.advert.handle.casefold(): h.advert for h in self._heard.values()}
        merged.update(self._primary.peers())  # mDNS first, as it was before beacons
        return merged

    async def find_conflict(
        self, handle: str, my_key: bytes, wait_s: float = 0.35
    ) -> Advert | None:
        found = await self._primary.find_conflict(handle, my_key, wait_s)
        if found is not None:
            return found
        wanted = handle.casefold()
        return next(
            (
                h.advert
                for h in self._heard.values()
                if h.advert.handle.casefold() == wanted and h.advert.id_key != my_key
            ),
            None,
        )

    async def register(self, advert: Advert, *, force: bool = False) -> None:
        await self._primary.register(advert, force=force)
        self._advert = advert
        if self._fast():
            self._plan.urgent = True
            self._tick_safely()  # at once: the election waits only ELECTION_WAIT_S
        else:
            self._plan.last_sent = self._clock()  # mDNS shows us the room: a keep-alive later

    async def update(self, advert: Advert) -> None:
        await self._primary.update(advert)
        self._advert = advert
        if self._fast():
            self._plan.urgent = True
            self._tick_safely()

    async def reannounce(self) -> None:
        await self._primary.reannounce()

    def disown(self) -> None:
        self._primary.disown()
        self._advert = None

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._socket is not None:
            if self._advert is not None and self._clock() < self._fast_until:
                with contextlib.suppress(Exception):  # peers may know us only by beacon
                    self._send(self._clock(), bye=True)
            self._socket.close()
            self._socket = None
        await self._primary.close()

    # ---- the beacon source

    def _fast(self) -> bool:
        return bc.BeaconPlan.fast(len(self._mdns_others()), self._beacon_only())

    def _mdns_others(self) -> dict[str, Advert]:
        me = self._me.key
        return {h: a for h, a in self._primary.peers().items() if a.id_key != me}

    def _beacon_only(self) -> int:
        mdns = self._primary.peers()
        return sum(1 for h in self._heard.values() if h.advert.handle.casefold() not in mdns)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            self._tick_safely()

    def _tick_safely(self) -> None:
        try:
            self._tick(self._clock())
        except Exception:  # the beacon is a fallback: a bug in it must not stop the node
            log.exception("beacon tick failed")

    def _tick(self, now: float) -> None:
        for key in [k for k, h in self._heard.items() if h.until <= now]:
            gone = self._heard.pop(key).advert
            if gone.handle.casefold() not in self._primary.peers():
                self._emit(PeerGone(gone.handle))
        if self._advert is None or self._socket is None:
            return
        fast, known = self._fast(), len(self.peers())
        if not fast and not self._owe_query:
            self._plan.urgent = False  # mDNS has told everyone meanwhile
        # The jitter stretches the interval only: never sooner than the budget allows.
        if self._plan.due(now, fast, known) and (
            self._plan.urgent
            or now - self._plan.last_sent >= self._jitter * self._plan.interval(fast, known)
        ):
            self._send(now)

    def _send(self, now: float, *, bye: bool = False) -> None:
        assert self._advert is not None
        assert self._socket is not None
        fast, known = self._fast(), len(self.peers())
        # Strictly increasing per key even if the wall clock steps back: receivers drop
        # beacons no newer than the last one (replays).
        sent_at = max(round(self._wall(), 3), round(self._last_sent_at + 0.001, 3))
        self._last_sent_at = sent_at
        packet = bc.encode(
            self._advert, sent_at, self._plan.ttl(fast, known), self._me.sign, bye=bye
        )
        log.debug(
            "beacon%s: fast=%s urgent=%s mdns=%d beacon-only=%d",
            " (bye)" if bye else "",
            fast,
            self._plan.urgent,
            len(self._mdns_others()),
            self._beacon_only(),
        )
        self._plan.sent(now)
        self._owe_query = False
        if fast and not bye:
            self._fast_until = now + self._plan.ttl(fast, known)
        self._jitter = 1.0 + random.uniform(0.0, 2 * JITTER)
        if self._socket.send(packet):
            self.counters["beacons_sent"] += 1

    def _verify_allowed(self, now: float) -> bool:
        start, count = self._verify_window
        if now - start >= 1.0:
            self._verify_window = (now, 1)
            return True
        self._verify_window = (start, count + 1)
        return count < VERIFY_PER_S

    def _on_datagram(self, data: bytes, source: str) -> None:
        now = self._clock()
        if bc.is_query(data):
            self.counters["queries_heard"] += 1
            if source != self._address:
                self._plan.urgent = self._owe_query = True
            return
        if source == self._address or not data.startswith(bc.MAGIC):
            return  # our own beacon came back (or someone else's protocol)
        assert self._candidate is not None
        if not in_same_subnet(self._candidate, source) or not self._verify_allowed(now):
            self.counters["beacons_refused"] += 1
            return
        try:
            beacon = bc.decode(data, source, ident.verify)
        except bc.BeaconError as exc:
            self.counters["beacons_refused"] += 1
            log.debug("beacon from %s refused: %s", source, exc)
            return
        self._heard_beacon(beacon, now)

    def _heard_beacon(self, beacon: bc.Beacon, now: float) -> None:
        adv = beacon.advert
        if adv.id_key == self._me.key:
            return  # our own, from a second address of ours
        last = self._last_t.get(adv.id_key)
        if last is not None and beacon.sent_at <= last:
            self.counters["beacons_refused"] += 1
            return  # a replay, or an older packet overtaken by a newer one
        self._last_t[adv.id_key] = beacon.sent_at
        if len(self._last_t) > REPLAY_MEMORY:
            del self._last_t[next(iter(self._last_t))]
        self.counters["beacons_heard"] += 1
        in_mdns = adv.handle.casefold() in self._primary.peers()
        if beacon.bye:
            if self._heard.pop(adv.id_key, None) is not None and not in_mdns:
                self._emit(PeerGone(adv.handle))
            return
        if (
            self._advert is not None
            and adv.handle.casefold() == self._advert.handle.casefold()
            and adv.id_key != self._advert.id_key
        ):
            self._emit(HandleClash(adv))
            return
        new = adv.id_key not in self._heard
        self._heard[adv.id_key] = _Heard(adv, now + beacon.ttl_s)
        if new and not in_mdns:
            self._plan.urgent = True  # a newcomer mDNS does not show us: it needs our facts
        self._emit(PeerSeen(adv))

    def _from_primary(self, event: DiscoveryEvent) -> None:
        self._emit(event)

    def _emit(self, event: DiscoveryEvent) -> None:
        try:
            self._on_event(event)
        except Exception:
            log.exception("discovery event handler failed on %r", event)
