"""What the room hears about us: our mDNS advert (kept current as we take or leave the
broker role), its re-announcements, and the info port's answer for ``--connect``."""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any, Final

from lanchat.core import election
from lanchat.core.advert import Advert
from lanchat.transport import DEFAULT_INFO_PORT

if TYPE_CHECKING:
    from lanchat.ports import RoomDiscovery, RoomTransport
    from lanchat.room.context import RoomContext
    from lanchat.room.hosting import Hosting
    from lanchat.room.link import Link

__all__ = ["Advertising", "candidate_of", "claim_of"]

log = logging.getLogger("lanchat.node")

REANNOUNCE_S: Final = 2.0  # brokers repeat their mDNS announcement (healed partitions)
# Just cut off from the room (its broker timed out, our link went down): announce more
# often for a while, so the room hears us the moment the link is back.
LOST_REANNOUNCE_S: Final = 0.5
LOST_FAST_FOR_S: Final = 120.0
ANSWER_REANNOUNCE_S: Final = 0.25  # at most this often, a broker answers a worse broker


def claim_of(adv: Advert) -> election.BrokerClaim:
    return election.BrokerClaim(
        key=adv.id_key, mentor=adv.mentor, since=adv.broker_since, epoch=adv.broker_epoch
    )


def candidate_of(adv: Advert) -> election.Candidate:
    return election.Candidate(adv.id_key, adv.mentor, adv.priority, adv.started_at)


class Advertising:
    def __init__(
        self,
        ctx: RoomContext,
        transport: RoomTransport,
        discovery: RoomDiscovery,
        hosting: Hosting,
    ) -> None:
        self._ctx = ctx
        self._transport = transport
        self.discovery = discovery
        self._hosting = hosting
        self.advert: Advert | None = None
        self.started_at = ctx.wall()
        self.lost_room_at = -1e9  # when we were last cut off from a room we were in
        self._last_reannounce = 0.0
        self._last_answer = -1e9

    def make_advert(self) -> Advert:
        cfg, me = self._ctx.cfg, self._ctx.me
        return Advert(
            handle=cfg.handle,
            room=cfg.room,
            address=cfg.address,
            id_key=me.key,
            curve_key=me.curve_public,
            router_port=self._transport.router_port,
            pub_port=self._transport.pub_port,
            mentor=cfg.mentor,
            priority=cfg.priority,
            started_at=round(self.started_at, 3),
            broker_epoch=self._hosting.epoch,
            broker_since=round(self._hosting.since, 3),
        )

    async def register(self, *, force: bool = False) -> None:
        self.advert = self.make_advert()
        await self.discovery.register(self.advert, force=force)

    def changed(self) -> None:
        """We took or left the broker role: tell the room."""
        self.advert = self.make_advert()
        self._ctx.spawn(self._update(self.advert))

    async def _update(self, advert: Advert) -> None:
        try:
            await self.discovery.update(advert)
        except Exception:  # the advert is best-effort; the broker works without it
            log.exception("could not update the mDNS advert")

    def reannounce(self) -> None:
        self._ctx.spawn(self._reannounce())

    async def _reannounce(self) -> None:
        with contextlib.suppress(Exception):
            await self.discovery.reannounce()

    def tick(self, now: float) -> None:
        """A broker repeats its announcement: mDNS never re-announces after a partition
        heals (RFC 6762 §8.3); more often while alone after losing the room."""
        if self._hosting.relay is None:
            return
        lost_lately = now - self.lost_room_at < LOST_FAST_FOR_S
        alone = self._hosting.client_count() <= 1
        every = LOST_REANNOUNCE_S if lost_lately and alone else REANNOUNCE_S
        if now - self._last_reannounce >= every:
            self._last_reannounce = now
            self.reannounce()

    def network_back(self, now: float) -> None:
        """Our link is back: tell the room at once, and ask everyone for their adverts."""
        self.lost_room_at = now
        self._last_reannounce = now
        self.reannounce()
        with contextlib.suppress(Exception):  # best effort, like every announcement
            self.discovery.ask_everyone()

    def answer_worse_broker(self, adv: Advert) -> None:
        """A second broker in our room announced itself (a laptop back from a walk, the
        other half of a healed partition): if we are the better one, announce ourselves
        now, so it moves to us at once instead of at our next periodic announcement."""
        relay, now = self._hosting.relay, self._ctx.clock()
        if relay is None or adv.room != self._ctx.cfg.room or adv.broker_epoch <= 0:
            return
        if now - self._last_answer < ANSWER_REANNOUNCE_S:
            return
        # A hint only (which broker ends up better is checked by connecting to it), so our
        # claimed role is enough here.
        ours = election.BrokerClaim(
            self._ctx.me.key, self._ctx.cfg.mentor, relay.since, relay.epoch
        )
        if election.better_broker(ours, claim_of(adv)) is ours:
            self._last_answer = now
            self.reannounce()

    def room_adverts(self) -> list[Advert]:
        """Every other node of our room, as its advert says."""
        me, room = self._ctx.me.key, self._ctx.cfg.room
        return [a for a in self.discovery.peers().values() if a.room == room and a.id_key != me]

    def advert_of(self, key: bytes) -> Advert | None:
        return next((a for a in self.room_adverts() if a.id_key == key), None)

    def connect_address(self) -> str:
        """What others type after ``--connect`` to join through us, where discovery does not
        reach them (our info port answers with the broker we use)."""
        address, port = self._ctx.cfg.address, self._transport.info_port
        return address if port == DEFAULT_INFO_PORT else f"{address}:{port}"

    def info(self, link: Link | None) -> dict[str, Any]:
        """What the info port answers (``--connect`` asks it which broker we use)."""
        cfg, me = self._ctx.cfg, self._ctx.me
        broker: dict[str, Any] | None = None
        if link is not None and link.welcome is not None:
            broker = {
                "key": link.target.key.hex(),
                "curve": link.target.curve_key.hex(),
                "address": link.target.address,
                "router_port": link.target.router_port,
            }
        return {
            "app": "lanchat",
            "handle": cfg.handle,
            "room": cfg.room,
            "key": me.key_hex,
            "curve": me.curve_public.hex(),
            "address": cfg.address,
            "router_port": self._transport.router_port,
            "broker": broker,
        }
