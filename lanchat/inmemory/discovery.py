"""The twin of the discovery: browse and advertise on a `MemoryLan`."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from lanchat.discovery import HandleClash, HandleTaken, PeerGone, PeerSeen, wait_for_holder

if TYPE_CHECKING:
    from collections.abc import Callable

    from lanchat.core.advert import Advert
    from lanchat.discovery import DiscoveryEvent
    from lanchat.inmemory.lan import MemoryLan

__all__ = ["MemoryDiscovery"]

log = logging.getLogger(__name__)


class MemoryDiscovery:
    """Browse and advertise on a `MemoryLan`; see `RoomDiscovery` and `discovery.Discovery`.

    Events reach ``on_event`` from the loop, never inside the call that caused them.
    """

    def __init__(
        self, lan: MemoryLan, address: str, on_event: Callable[[DiscoveryEvent], None]
    ) -> None:
        self.address = address
        self.killed = False
        self._lan = lan
        self._on_event = on_event
        self._started = False
        self._closed = False
        self._advert: Advert | None = None
        self._view: dict[str, Advert] = {}  # by lower-cased handle (mDNS names)
        self._waiters: set[asyncio.Future[None]] = set()

    # ---- RoomDiscovery -----------------------------------------------------

    async def start(self) -> None:
        if self._started or self._closed:
            raise RuntimeError("Discovery.start() may be called once")
        self._started = True
        self._lan._discoveries.append(self)
        self.ask_everyone()

    def ask_everyone(self) -> None:
        """Every node that can hear us answers with its advert (PeerSeen, again or not)."""
        self._require_started()
        loop = asyncio.get_running_loop()
        for other in self._lan._answering(self):
            if other._advert is not None:
                loop.call_soon(self._heard, other._advert)

    def peers(self) -> dict[str, Advert]:
        return {advert.handle.casefold(): advert for advert in self._view.values()}

    async def find_conflict(
        self, handle: str, my_key: bytes, wait_s: float = 0.35
    ) -> Advert | None:
        """As the real one: an advert of ``handle`` under another key, waiting up to
        ``wait_s`` for the answers to our start-up query."""
        if not self._started:
            raise RuntimeError("call start() before find_conflict()")
        return await wait_for_holder(
            self._view.values,
            self._waiters,
            handle,
            my_key,
            wait_s,
            closed=lambda: self._closed,
        )

    async def register(self, advert: Advert, *, force: bool = False) -> None:
        if self.killed:
            return
        self._require_started()
        if self._advert is not None:
            raise RuntimeError("already registered; use update()")
        self._check_own(advert)
        name = _name(advert.handle)
        for other in self._view.values():
            if _name(other.handle) == name and other.id_key != advert.id_key and not force:
                raise HandleTaken(advert.handle, other)
        self._advert = advert
        if self._view.pop(name, None) is not None:
            self._notify_waiters()
        self._announce()

    async def update(self, advert: Advert) -> None:
        if self.killed:
            return
        self._require_started()
        if self._advert is None:
            raise RuntimeError("register() before update()")
        self._check_own(advert)
        if _name(advert.handle) != _name(self._advert.handle):
            raise ValueError("the handle cannot change while registered")
        self._advert = advert
        self._announce()

    async def reannounce(self) -> None:
        if self.killed:
            return
        self._require_started()
        if self._advert is not None:
            self._announce()

    def disown(self) -> None:
        """Stop answering for our name without a goodbye (we lost a clash)."""
        self._advert = None

    async def close(self) -> None:
        """Say goodbye (every node that hears us sees PeerGone), then stop. Idempotent."""
        if self._closed:
            return
        if not self.killed and self._advert is not None:
            loop = asyncio.get_running_loop()
            name = _name(self._advert.handle)
            for other in self._lan._answering(self):
                loop.call_soon(other._goodbye, name)
        self._stop()

    # ---- the medium's side -------------------------------------------------

    def kill(self) -> None:
        """SIGKILL: no goodbye; our advert stays in every cache, nobody answers for it."""
        self.killed = True
        self._stop()

    def _stop(self) -> None:
        self._closed = True
        self._advert = None
        if self in self._lan._discoveries:
            self._lan._discoveries.remove(self)
        self._notify_waiters()

    def _announce(self) -> None:
        advert = self._advert
        assert advert is not None
        loop = asyncio.get_running_loop()
        for other in self._lan._answering(self):
            loop.call_soon(other._heard, advert)

    def _heard(self, advert: Advert) -> None:
        if self._closed:
            return
        name = _name(advert.handle)
        own = self._advert
        if own is not None and _name(own.handle) == name:
            if advert.id_key != own.id_key:
                self._emit(HandleClash(advert))
            return  # our own name: never a peer
        self._view[name] = advert
        self._notify_waiters()
        self._emit(PeerSeen(advert))

    def _goodbye(self, name: str) -> None:
        if self._closed:
            return
        own = self._advert
        if own is not None and _name(own.handle) == name:
            return
        gone = self._view.pop(name, None)
        if gone is not None:
            self._notify_waiters()
            self._emit(PeerGone(gone.handle))

    def _require_started(self) -> None:
        if not self._started or self._closed:
            raise RuntimeError("Discovery is not running (start() first, not after close())")

    def _check_own(self, advert: Advert) -> None:
        if advert.address != self.address:
            raise ValueError(f"advert address {advert.address} is not ours ({self.address})")

    def _notify_waiters(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _emit(self, event: DiscoveryEvent) -> None:
        try:
            self._on_event(event)
        except Exception:  # as the real one: a consumer bug must not stop discovery
            log.exception("discovery event handler failed on %r", event)


def _name(handle: str) -> str:
    """The key of an advert's mDNS instance name (case-insensitive, as mDNS names are)."""
    return handle.lower()
