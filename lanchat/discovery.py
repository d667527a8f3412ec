"""zeroconf (mDNS/DNS-SD) adapter: advertise this node, report peers as PeerSeen / PeerGone.

mDNS is used for discovery only. It cannot notice a crashed host quickly (its
records live for many minutes), so liveness belongs to the transport's
heartbeats; PeerGone here means "said goodbye" (or its records expired).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

# DNSOutgoing and DNSQuestion: importable from zeroconf's top level for years, just not
# listed in its __all__.
from zeroconf import (  # type: ignore[attr-defined]
    DNSOutgoing,
    DNSQuestion,
    IPVersion,
    NonUniqueNameException,
    ServiceStateChange,
)
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from lanchat.core.advert import SERVICE_TYPE, Advert, AdvertError
from lanchat.netif import choose_address, in_same_subnet

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable

    from zeroconf import Zeroconf

    from lanchat.netif import Candidate

__all__ = ["Discovery", "DiscoveryEvent", "HandleTaken", "PeerGone", "PeerSeen"]

log = logging.getLogger(__name__)

# Announcements carry SRV+TXT+A, so resolving is normally a cache hit; the
# timeout only matters when a packet was lost and we must ask.
RESOLVE_TIMEOUT_MS = 1000
# TXT key added next to the advert: a serial that makes every update and
# re-announcement a distinct TXT record. mDNS caches treat identical rdata as
# the same record, so without it a receiver ignores a flip back to an earlier
# TXT and never hears a re-announcement of a record it still caches.
SERIAL_KEY = "n"
# One digit fits the TXT budget (RESERVED_TXT_BYTES). A serial comes back
# only ten announcements later, long after receivers flushed the record that
# carried it (a superseded TXT expires one second after its successor).
SERIAL_MODULO = 10
# DNS protocol numbers (RFC 1035) for the one query we build ourselves.
_DNS_FLAGS_QUERY = 0
_DNS_TYPE_PTR = 12
_DNS_CLASS_IN = 1


@dataclass(frozen=True, slots=True)
class PeerSeen:
    """A peer appeared, changed its advert, or re-announced itself."""

    advert: Advert


@dataclass(frozen=True, slots=True)
class PeerGone:
    """A peer withdrew its advert (goodbye packet) or its records expired."""

    handle: str


@dataclass(frozen=True, slots=True)
class HandleClash:
    """Another node advertises our own handle under another key (we both started at once,
    so neither saw the other before registering)."""

    advert: Advert


DiscoveryEvent = PeerSeen | PeerGone | HandleClash


class HandleTaken(Exception):
    """Another identity key already advertises this handle."""

    def __init__(self, handle: str, holder: Advert | None = None) -> None:
        super().__init__(f"handle {handle!r} is already taken on this LAN")
        self.handle = handle
        self.holder = holder


def _instance_name(handle: str) -> str:
    return f"{handle}.{SERVICE_TYPE}"


async def wait_for_holder(
    adverts: Callable[[], Iterable[Advert]],
    waiters: set[asyncio.Future[None]],
    handle: str,
    my_key: bytes,
    wait_s: float,
    closed: Callable[[], bool] = lambda: False,
) -> Advert | None:
    """An advert of ``adverts()`` holding ``handle`` (case-insensitively) under another key,
    or None after ``wait_s``; woken early by a future the owner of ``waiters`` resolves
    whenever its view changes. Shared by the real discovery and its in-memory twin."""
    wanted = handle.casefold()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    while True:
        for advert in adverts():
            if advert.handle.casefold() == wanted and advert.id_key != my_key:
                return advert
        remaining = deadline - loop.time()
        if remaining <= 0 or closed():
            return None
        changed = loop.create_future()
        waiters.add(changed)
        try:
            async with asyncio.timeout(remaining):
                await changed
        except TimeoutError:
            return None
        finally:
            waiters.discard(changed)


class Discovery:
    """Browse and advertise `_lanchat._tcp` on one interface (asyncio; one event loop).

    `on_event` is called on the event loop for every PeerSeen / PeerGone;
    PeerSeen may repeat for an unchanged advert, so consumers are idempotent.
    Once registered, everything under our own instance name is ignored (our
    own announcements come back to us); a rival claiming it after us is the
    broker roster's business, not mDNS's.
    """

    def __init__(self, address: str, on_event: Callable[[DiscoveryEvent], None]) -> None:
        self._address = address
        self._on_event = on_event
        self._candidate: Candidate | None = None
        self._aiozc: AsyncZeroconf | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._info: AsyncServiceInfo | None = None
        self._clash_checks: set[asyncio.Task[None]] = set()
        self._advert: Advert | None = None
        self._serial = 0
        # Keyed by lower-cased service name, as mDNS names are case-insensitive.
        self._by_name: dict[str, Advert] = {}
        self._resolving: dict[str, asyncio.Task[None]] = {}
        self._announcing: Awaitable[object] | None = None
        self._waiters: set[asyncio.Future[None]] = set()
        self._closed = False
        self._malformed = 0
        self._foreign = 0

    @property
    def malformed_count(self) -> int:
        """Adverts ignored because their TXT record did not parse."""
        return self._malformed

    @property
    def foreign_count(self) -> int:
        """Adverts ignored because no address of theirs is on our subnet."""
        return self._foreign

    async def start(self) -> None:
        """Open the mDNS sockets on our address and start browsing."""
        if self._aiozc is not None or self._closed:
            raise RuntimeError("Discovery.start() may be called once")
        # Raises NetifError if the address is not on this machine; its subnet
        # is what keeps us from accepting peers beyond the LAN.
        self._candidate = choose_address(self._address)
        self._aiozc = AsyncZeroconf(interfaces=[self._address], ip_version=IPVersion.V4Only)
        await self._aiozc.zeroconf.async_wait_for_start()
        self._browser = AsyncServiceBrowser(
            self._aiozc.zeroconf, SERVICE_TYPE, handlers=[self._on_state_change]
        )
        self.ask_everyone()

    def ask_everyone(self) -> None:
        """Ask every node for its advert now, as a QU question (RFC 6762 §5.4).

        The browser's first query waits a random 20-120 ms and is answered after another
        20-120 ms (answers to a shared PTR question are delayed to avoid collisions);
        QU questions are answered at once. That is what a node starting up, or one back
        on the network, wants: everyone's adverts in one round trip.
        """
        aiozc = self._require_started()
        question = DNSQuestion(SERVICE_TYPE, _DNS_TYPE_PTR, _DNS_CLASS_IN)
        question.unicast = True
        out = DNSOutgoing(_DNS_FLAGS_QUERY)
        out.add_question(question)
        aiozc.zeroconf.async_send(out)

    def peers(self) -> dict[str, Advert]:
        """The current view of other nodes, by case-folded handle."""
        return {advert.handle.casefold(): advert for advert in self._by_name.values()}

    async def find_conflict(
        self, handle: str, my_key: bytes, wait_s: float = 0.35
    ) -> Advert | None:
        """An advert holding `handle` (case-insensitively) under another key, or None.

        Waits up to `wait_s` for answers to the browser's first query, returning
        as soon as a conflict is known.
        """
        if self._aiozc is None:
            raise RuntimeError("call start() before find_conflict()")
        return await wait_for_holder(self._by_name.values, self._waiters, handle, my_key, wait_s)

    async def register(self, advert: Advert, *, force: bool = False) -> None:
        """Advertise `advert` under its handle, without the ~1 s probe phase.

        Probing is skipped (cooperating responders); uniqueness comes from
        find_conflict() beforehand and the broker's roster. A conflict already
        in our view still raises HandleTaken, unless `force` (a handle the
        profile holds: an advert is no evidence against it).
        """
        aiozc = self._require_started()
        if self._info is not None:
            raise RuntimeError("already registered; use update()")
        self._check_own(advert)
        for other in self._by_name.values():
            if (
                other.handle.casefold() == advert.handle.casefold()
                and other.id_key != advert.id_key
                and not force
            ):
                raise HandleTaken(advert.handle, other)
        info = self._service_info(advert)
        try:
            self._announcing = await aiozc.async_register_service(info, cooperating_responders=True)
        except NonUniqueNameException as exc:
            raise HandleTaken(advert.handle) from exc
        self._info = info
        self._advert = advert
        # From now on our own name is ignored; drop what we may have heard
        # under it before (a stale advert of our previous run, same key).
        if self._by_name.pop(info.key, None) is not None:
            self._notify_waiters()

    async def update(self, advert: Advert) -> None:
        """Re-advertise with changed fields (e.g. the broker flag); the handle must not change."""
        aiozc = self._require_started()
        if self._info is None:
            raise RuntimeError("register() before update()")
        self._check_own(advert)
        if _instance_name(advert.handle).lower() != self._info.key:
            raise ValueError("the handle cannot change while registered")
        self._serial = (self._serial + 1) % SERIAL_MODULO
        info = self._service_info(advert)
        # The previous announcement task would keep re-sending the old TXT
        # for a few hundred ms, racing the new one in receivers' caches.
        self._stop_announcing()
        self._info = info
        self._advert = advert
        self._announcing = await aiozc.async_update_service(info)

    async def reannounce(self) -> None:
        """Send our records once more, as a new TXT serial so every browser reports it.

        mDNS never re-announces after a partition heals (RFC 6762 §8.3); peers
        whose caches still hold us would otherwise never hear that we are back.
        """
        aiozc = self._require_started()
        if self._advert is None:
            return
        self._serial = (self._serial + 1) % SERIAL_MODULO
        info = self._service_info(self._advert)
        self._stop_announcing()
        self._info = info
        zc = aiozc.zeroconf
        zc.registry.async_update(info)
        # One packet: the caller repeats this every few seconds anyway.
        zc.async_send(zc.generate_service_broadcast(info, None))

    def disown(self) -> None:
        """Stop answering for our name without a goodbye: another node holds it too (we
        lost a clash), and a goodbye for the name would withdraw *its* advert everywhere."""
        if self._aiozc is None or self._info is None:
            return
        self._stop_announcing()
        self._aiozc.zeroconf.registry.async_remove(self._info)
        self._info = None
        self._advert = None

    async def close(self) -> None:
        """Say goodbye (peers see PeerGone at once), then close the sockets. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._stop_announcing()
        tasks = list(self._resolving.values())
        self._resolving.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        aiozc, self._aiozc = self._aiozc, None
        if aiozc is None:
            return
        try:
            if self._info is not None:
                # Await all goodbye packets (~0.25 s): one may be lost on Wi-Fi.
                goodbyes = await aiozc.async_unregister_service(self._info)
                await goodbyes
                self._info = None
                self._advert = None
            if self._browser is not None:
                await self._browser.async_cancel()
                self._browser = None
        finally:
            await aiozc.async_close()

    # ---- internals ---------------------------------------------------------

    def _require_started(self) -> AsyncZeroconf:
        if self._aiozc is None or self._closed:
            raise RuntimeError("Discovery is not running (start() first, not after close())")
        return self._aiozc

    def _check_own(self, advert: Advert) -> None:
        if advert.address != self._address:
            raise ValueError(f"advert address {advert.address} is not ours ({self._address})")

    def _service_info(self, advert: Advert) -> AsyncServiceInfo:
        properties = {**advert.to_txt(), SERIAL_KEY: str(self._serial)}
        return AsyncServiceInfo(
            SERVICE_TYPE,
            _instance_name(advert.handle),
            port=advert.router_port,
            properties=properties,
            # Host name from the key, not the handle: stable across renames and
            # unique per identity, so two nodes never claim the same A record.
            server=f"lanchat-{advert.id_key[:5].hex()}.local.",
            parsed_addresses=[advert.address],
        )

    def _stop_announcing(self) -> None:
        if isinstance(self._announcing, asyncio.Future) and not self._announcing.done():
            self._announcing.cancel()
        self._announcing = None

    def _on_state_change(
        self,
        zeroconf: Zeroconf,
        service_type: str,
        name: str,
        state_change: ServiceStateChange,
    ) -> None:
        key = name.lower()
        if self._closed:
            return
        if self._info is not None and key == self._info.key:
            if state_change is not ServiceStateChange.Removed:
                task = asyncio.get_running_loop().create_task(self._resolve(zeroconf, name, True))
                self._clash_checks.add(task)
                task.add_done_callback(self._clash_checks.discard)
            return
        pending = self._resolving.pop(key, None)
        if pending is not None:
            pending.cancel()
        if state_change is ServiceStateChange.Removed:
            gone = self._by_name.pop(key, None)
            if gone is not None:
                self._notify_waiters()
                self._emit(PeerGone(gone.handle))
            return
        task = asyncio.get_running_loop().create_task(self._resolve(zeroconf, name))
        self._resolving[key] = task
        task.add_done_callback(lambda done: self._forget_task(key, done))

    def _forget_task(self, key: str, task: asyncio.Task[None]) -> None:
        if self._resolving.get(key) is task:
            del self._resolving[key]

    async def _resolve(self, zeroconf: Zeroconf, name: str, own_name: bool = False) -> None:
        info = AsyncServiceInfo(SERVICE_TYPE, name)
        if not await info.async_request(zeroconf, RESOLVE_TIMEOUT_MS):
            log.debug("could not resolve %s within %d ms", name, RESOLVE_TIMEOUT_MS)
            return
        assert self._candidate is not None  # set by start() before browsing
        handle = name[: -len(SERVICE_TYPE) - 1]
        addresses = info.parsed_addresses(IPVersion.V4Only)
        address = next((a for a in addresses if in_same_subnet(self._candidate, a)), None)
        if address is None:
            self._foreign += 1
            log.debug("ignoring %s: %s not on our subnet", name, addresses)
            return
        try:
            advert = Advert.from_txt(handle, address, info.properties)
        except AdvertError as exc:
            self._malformed += 1
            log.debug("ignoring %s: %s", name, exc)
            return
        if own_name:
            if self._advert is not None and advert.id_key != self._advert.id_key:
                self._emit(HandleClash(advert))
            return
        self._by_name[name.lower()] = advert
        self._notify_waiters()
        self._emit(PeerSeen(advert))

    def _notify_waiters(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _emit(self, event: DiscoveryEvent) -> None:
        try:
            self._on_event(event)
        except Exception:
            # A consumer bug must not stop discovery for everyone else.
            log.exception("discovery event handler failed on %r", event)
