"""Our connection to a broker: where it goes, what we know of it, and sends on it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from lanchat.core.membership import LinkFacts

if TYPE_CHECKING:
    from lanchat.core import wire
    from lanchat.core.advert import Advert
    from lanchat.ports import LinkSockets

__all__ = ["Link", "Target", "target_of_advert", "target_of_entry", "target_of_redirect"]


# eq=False: never compared (a link is checked with `is`), and each generated __eq__ costs
# start-up time.
@dataclass(slots=True, eq=False)
class Target:
    key: bytes
    curve_key: bytes
    address: str
    router_port: int
    handle: str = ""


@dataclass(slots=True, eq=False)
class Link:
    target: Target
    sockets: LinkSockets
    started: float
    welcome: wire.Welcome | None = None
    reached: bool = False  # connected (TCP, then CURVE): the broker's host is there
    last_beat: float = 0.0
    refused_not_broker: int = 0

    def facts(self) -> LinkFacts:
        return LinkFacts(
            started=self.started,
            welcomed=self.welcome is not None,
            reached=self.reached,
            refused_not_broker=self.refused_not_broker,
            last_beat=self.last_beat,
        )

    def send(self, frames: list[bytes]) -> bool:
        """Send to a broker that welcomed us; False if not (yet), or its queue is full."""
        if self.welcome is None:
            return False
        return self.sockets.send_nowait(frames)


def target_of_advert(adv: Advert) -> Target:
    return Target(adv.id_key, adv.curve_key, adv.address, adv.router_port, adv.handle)


def target_of_redirect(msg: wire.Redirect, handle: str = "") -> Target:
    return Target(msg.broker_key, msg.curve_key, msg.address, msg.router_port, handle)


def target_of_entry(entry: wire.PeerEntry) -> Target:
    return Target(entry.id_key, entry.curve_key, entry.address, entry.router_port, entry.handle)
