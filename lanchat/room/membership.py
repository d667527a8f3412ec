"""Membership glue: which broker we are with, carried out.

The rules are pure functions of ``lanchat.core.membership``; this part feeds them what
discovery, rosters and our link say, and acts on their decisions: it owns our link to the
broker, our mDNS advert, and the switch into and out of the broker role (``Hosting``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Final

import zmq

from lanchat.core import election, membership, wire
from lanchat.core.handles import handle_key
from lanchat.core.membership import Phase
from lanchat.core.text import safe_label
from lanchat.discovery import HandleClash, PeerSeen
from lanchat.room.advertising import Advertising, candidate_of, claim_of
from lanchat.room.context import NodeExit
from lanchat.room.link import (
    Link,
    Target,
    target_of_advert,
    target_of_entry,
    target_of_redirect,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from lanchat.core.advert import Advert
    from lanchat.discovery import DiscoveryEvent
    from lanchat.ports import RoomDiscovery, RoomTransport
    from lanchat.room.context import RoomContext
    from lanchat.room.hosting import Hosting
    from lanchat.room.peers import Peers
    from lanchat.room.status import NodeStatus, Presence
    from lanchat.room.trust import Trust

__all__ = ["Membership"]

log = logging.getLogger("lanchat.node")

HEARTBEAT_S: Final = 0.4
HELLO_AGAIN_S: Final = 0.15  # a successor that refused us has not noticed its turn yet
# A broker whose advert looked better than ours, but that did not welcome us or was not
# better once we knew it (a forged advert, a late node claiming a long reign): not probed
# again before this, unless its advert changes.
PROBE_RETRY_S: Final = 10.0
# ...or this long, if it did not answer or refused (a broker busy or settling in a cold
# start, or nothing there): one failed connection per few seconds is all that costs.
PROBE_RETRY_FAILED_S: Final = 2.0
# The handle a broker last welcomed us under: a node keeps it against adverts (node.py).
HELD_HANDLE_SETTING: Final = "held_handle"
HELD_WRITE_DELAY_S: Final = 1.0
# Two fresh nodes that took the same handle at the same moment each elect themselves (an
# advert under our own name is a clash, never a candidate). For this long after start, a
# node whose only claim is its own relay's welcome probes a clashing broker like a better
# one, and the worse of the two gives way when that broker holds the handle.
FRESH_CLAIM_S: Final = 15.0
CLASHES_KEPT: Final = 4


@dataclass(slots=True, eq=False)
class _Probe:
    """Make before break: a connection to a broker we may move to, to learn its verified
    facts (its Welcome, its certificate in its roster) before we leave ours."""

    link: Link
    advertised: tuple[bytes, int, float]  # the advert's (key, epoch, since) that looked better
    entry: wire.PeerEntry | None = None
    promoted: bool = False  # it proved better: its connection is now our link


BUSY_AGAIN_S: Final = 1.0  # a broker admitting newcomers at its pace (core/relay.py budgets)


class Membership:
    def __init__(
        self,
        ctx: RoomContext,
        transport: RoomTransport,
        discovery_factory: Callable[[str, Callable[[DiscoveryEvent], None]], RoomDiscovery],
        hosting: Hosting,
        peers: Peers,
        status: NodeStatus,
        presence: Presence,
        on_frames: Callable[[Link, bool, list[list[bytes]]], None],
        on_joined: Callable[[Link, wire.Welcome, float], None],
        trust: Trust,
    ) -> None:
        self._ctx = ctx
        self._trust = trust
        self._transport = transport
        self.discovery: RoomDiscovery = discovery_factory(ctx.cfg.address, self.on_discovery)
        self._adv = self.advertising = Advertising(ctx, transport, self.discovery, hosting)
        self._hosting = hosting
        self._peers = peers
        self._status = status
        self._presence = presence
        self._on_frames = on_frames  # a burst from the broker (DEALER or SUB)
        self._on_joined = on_joined  # a broker welcomed us: what the other parts resume
        # Whether a queue refusal now is expected (set by the root: the help desk settling).
        self.quiet_queue_refusals: Callable[[], bool] = lambda: False
        self.link: Link | None = None
        self.last_epoch = 0
        self.announced_broker: tuple[bytes, int] | None = None
        self._election_from = 0.0
        self._last_tick = ctx.clock()
        self._woke_at = -1e9
        self._last_heartbeat = 0.0
        self._probe: _Probe | None = None
        self._held: str | None = None  # the handle a broker welcomed us under, once
        # Our claim to the handle before this run (the profile) or from another broker.
        self._claim_proven = ctx.profile.state.get_setting(HELD_HANDLE_SETTING) == handle_key(
            ctx.cfg.handle
        )
        self._gave_way = False
        self._clashes: dict[bytes, Advert] = {}  # brokers announcing our handle, while fresh
        self._probed: dict[tuple[bytes, int, float], float] = {}  # advert -> not before

    # ================================================================ what we tell

    def _hello(self) -> list[bytes]:
        cfg, me = self._ctx.cfg, self._ctx.me
        hello = wire.Hello(
            handle=cfg.handle,
            room=cfg.room,
            mentor=cfg.mentor,
            id_key=me.key,
            curve_key=me.curve_public,
            started_at=round(self._adv.started_at, 3),
            priority=cfg.priority,
            address=cfg.address,
            router_port=self._transport.router_port,
            info_port=self._transport.info_port,
            cert=self._trust.cert,
        )
        return wire.encode(hello, me.sign(wire.signed_bytes(hello)))

    async def _remember_handle(self) -> None:
        await asyncio.sleep(HELD_WRITE_DELAY_S)
        self._save_held()

    def _save_held(self) -> None:
        state = self._ctx.profile.state
        if self._gave_way or self._held is None:
            return
        if state.get_setting(HELD_HANDLE_SETTING) != self._held:
            state.set_setting(HELD_HANDLE_SETTING, self._held)

    def _forget_held(self) -> None:
        """We gave the handle way: the profile must not claim it next time."""
        self._held = None
        self._gave_way = True  # a welcome still on its way must not claim it again
        state = self._ctx.profile.state
        if state.get_setting(HELD_HANDLE_SETTING) == handle_key(self._ctx.cfg.handle):
            state.set_setting(HELD_HANDLE_SETTING, None)

    def hello_again(self) -> None:
        """Our Hello changed (a mentor certificate): the broker learns the new one."""
        if self.link is not None:
            self.link.sockets.send_nowait(self._hello())

    async def register(self, *, force: bool = False) -> None:
        """Announce ourselves; the election starts from now. ``force``: even if another
        advert holds our handle (ours by the profile's record)."""
        await self._adv.register(force=force)
        self._election_from = self._ctx.clock()

    # ================================================================ discovery

    def on_discovery(self, event: DiscoveryEvent) -> None:
        ctx = self._ctx
        if isinstance(event, HandleClash):
            # Someone announces our handle under another key. An advert is one forgeable
            # packet: it never makes us give up the handle. The broker decides, by the
            # authenticated connections it holds (Refused handle_taken); we re-announce, as
            # our announcement is what theirs overwrote in everyone's cache.
            ctx.count("handle_clash")
            self._adv.reannounce()
            if self._claim_is_fresh():
                if len(self._clashes) >= CLASHES_KEPT:
                    self._clashes.clear()
                self._clashes[event.advert.id_key] = event.advert
            return
        if isinstance(event, PeerSeen):
            adv = event.advert
            if adv.id_key == ctx.me.key:
                return
            # A fresh advert is a sign of life: give that node another chance.
            self._peers.gone.discard(adv.id_key)
            self._adv.answer_worse_broker(adv)
            if (
                self._adv.advert is not None
                and self.link is None
                and ctx.cfg.connect is None
                and adv.broker_epoch
            ):
                self.choose_target(ctx.clock())  # a broker turned up: join it now

    def _claim_is_fresh(self) -> bool:
        """Our claim to the handle is new: the profile did not hold it before this run, no
        other broker has welcomed us under it, and we started moments ago."""
        return not self._claim_proven and self._ctx.wall() - self._adv.started_at < FRESH_CLAIM_S

    # ================================================================ election

    def _hint(self, adv: Advert) -> Advert:
        """An advert as a hint: a node the roster showed claiming the mentor role without a
        certificate does not rank as a mentor, whatever its advert says."""
        if adv.mentor and adv.id_key in self._peers.unverified:
            return _as_student(adv)
        return adv

    def choose_target(self, now: float) -> None:
        """No broker link: join a running broker, the successor, or elect one."""
        ctx, peers = self._ctx, self._peers
        adverts = self._adv.room_adverts()
        hints = [self._hint(a) for a in adverts]
        decision = membership.choose_broker(
            me=election.Candidate(
                ctx.me.key, ctx.cfg.mentor, ctx.cfg.priority, round(self._adv.started_at, 3)
            ),
            hosting=self._hosting.relay is not None,
            advertised=[claim_of(a) for a in hints],
            succession=peers.succession(),
            candidates=[candidate_of(a) for a in hints],
            gone=peers.gone,
            election_from=self._election_from,
            now=now,
        )
        if isinstance(decision, membership.HostOwn):
            self._open_link(self._self_target(), now)
        elif isinstance(decision, membership.BecomeBroker):
            self._become_broker(now)
        elif isinstance(decision, membership.WaitUntil):
            ctx.tick_at(decision.when)
        elif decision.why == "successor":
            entry = next(e for e in peers.roster if e.id_key == decision.key)
            self._open_link(target_of_entry(entry), now)
        else:
            adv = next(a for a in adverts if a.id_key == decision.key)
            self._open_link(target_of_advert(adv), now)

    def _self_target(self) -> Target:
        cfg, me = self._ctx.cfg, self._ctx.me
        return Target(me.key, me.curve_public, cfg.address, self._transport.router_port, cfg.handle)

    def _become_broker(self, now: float) -> None:
        self._hosting.start(self.last_epoch + 1)
        self._status.set(Phase.BROKER, "you are the broker for this room")
        self._adv.changed()
        self._open_link(self._self_target(), now)

    def _leave_broker_role(self, redirect: wire.Redirect) -> None:
        self._hosting.stop(redirect)
        self._adv.changed()

    def _maybe_hand_over(self) -> None:
        """A student broker gives way to a mentor who turned up while it was settling."""
        relay = self._hosting.relay
        if relay is None:
            return
        peers = self._peers
        mentors = {
            e.id_key: e
            for e in peers.online.values()
            if e.id_key in peers.mentors and e.id_key not in peers.gone
        }
        best = membership.handover_target(
            i_am_mentor=self._trust.i_am_mentor,
            reign_s=self._ctx.wall() - relay.since,
            mentors=[
                election.Candidate(k, True, e.priority, e.started_at) for k, e in mentors.items()
            ],
        )
        if best is None:
            return
        entry = mentors[best.key]
        redirect = wire.Redirect(
            broker_key=entry.id_key,
            curve_key=entry.curve_key,
            address=entry.address,
            router_port=entry.router_port,
            epoch=relay.epoch + 1,
        )
        self.last_epoch = max(self.last_epoch, relay.epoch)
        self._leave_broker_role(redirect)
        self._open_link(target_of_redirect(redirect, entry.handle), self._ctx.clock())

    def check_merge(self) -> None:
        """Two brokers in one room (a healed partition): move to the better one, once we
        have connected to it and know its facts first hand (make before break)."""
        link = self.link
        if link is None or link.welcome is None:
            return
        now = self._ctx.clock()
        probe = self._probe
        if probe is not None:
            if membership.link_verdict(probe.link.facts(), now) is not None:
                self._end_probe(probe, now, retry=True)  # nothing there (a forged advert)
            return
        current = self._current_claim(link)
        if self._clashes and not self._claim_is_fresh():
            self._clashes.clear()
        adverts = {
            a.id_key: a
            for a in [*self._adv.room_adverts(), *self._clashes.values()]
            if self._probed.get((a.id_key, a.broker_epoch, a.broker_since), -1.0) <= now
        }
        better = membership.merge_into(
            current, [claim_of(self._hint(a)) for a in adverts.values()], self._peers.gone
        )
        if better is not None:
            self._start_probe(adverts[better.key], now)

    def _current_claim(self, link: Link) -> election.BrokerClaim:
        assert link.welcome is not None
        return election.BrokerClaim(
            key=link.target.key,
            mentor=self._peers.is_mentor(link.target.key),
            since=link.welcome.since,
            epoch=link.welcome.epoch,
        )

    def _start_probe(self, adv: Advert, now: float) -> None:
        target = target_of_advert(adv)
        sockets = self._transport.link(target.address, target.router_port, target.curve_key)
        probe = _Probe(
            link=Link(target=target, sockets=sockets, started=now),
            advertised=(adv.id_key, adv.broker_epoch, adv.broker_since),
        )
        self._probe = probe
        sockets.start(
            functools.partial(self._on_probe_frames, probe),
            functools.partial(self._on_probe_events, probe),
        )
        sockets.send_nowait(self._hello())

    def _on_probe_events(self, probe: _Probe, events: list[int]) -> None:
        if probe.promoted:
            self._on_link_events(probe.link, events)
            return
        for event in events:
            probe.link.reached = event != zmq.EVENT_DISCONNECTED

    def _on_probe_frames(self, probe: _Probe, batch: list[list[bytes]]) -> None:
        if probe.promoted:
            self._on_frames(probe.link, False, batch)
            return
        if probe is not self._probe:
            return
        now = self._ctx.clock()
        key = probe.link.target.key
        for i, frames in enumerate(batch):
            try:
                msg, _sig = wire.decode(frames)
            except wire.DecodeError:
                self._ctx.count("malformed_from_broker")
                continue
            if isinstance(msg, wire.Welcome) and msg.broker_key == key:
                probe.link.welcome = msg
            elif isinstance(msg, wire.Roster) and msg.broker_key == key:
                probe.entry = self._peers.verified_entry(msg, key)
            elif isinstance(msg, wire.Refused) and msg.code == "handle_taken":
                # The broker we would merge into holds our handle for another key. A fresh
                # claim (only our own relay's welcome, moments ago) gives way to it: the same
                # handle taken at the same moment. An older claim is not taken away by one
                # broker's word, which a modified node can send: we stay, and say so.
                if self._claim_is_fresh():
                    self._end_probe(probe, now, retry=False)
                    self._forget_held()
                    self.on_refused(probe.link, msg, now)
                else:
                    self._end_probe(probe, now, retry=True)
                    self._ctx.count("handle_claimed_by_broker")
                return
            elif isinstance(msg, wire.Refused | wire.Redirect):
                self._end_probe(probe, now, retry=True)  # not a broker after all
                return
            if probe.link.welcome is not None and probe.entry is not None:
                self._decide_probe(probe, now)
                if probe.promoted and batch[i + 1 :]:
                    self._on_frames(probe.link, False, batch[i + 1 :])  # a mentor's queue
                return

    def _decide_probe(self, probe: _Probe, now: float) -> None:
        link, welcome, entry = self.link, probe.link.welcome, probe.entry
        assert welcome is not None
        assert entry is not None
        if link is None or link.welcome is None:
            self._end_probe(probe, now, retry=False)
            return
        # What it proved counts as a sight of the room (a room code may pin its authority).
        self._trust.observe([entry], entry.id_key)
        current = self._current_claim(link)
        verified = election.BrokerClaim(
            key=entry.id_key,
            mentor=self._trust.is_mentor(entry.handle, entry.id_key, entry.cert, entry.mentor),
            since=welcome.since,
            epoch=welcome.epoch,
        )
        if verified.key == current.key or election.better_broker(current, verified) is current:
            self._ctx.count("merge_refused")
            self._end_probe(probe, now, retry=True)
            return
        # It is better, by what it proved: move, on the connection it welcomed us on.
        self._probe = None
        target = probe.link.target
        if self._hosting.relay is not None:
            self._leave_broker_role(
                wire.Redirect(
                    broker_key=target.key,
                    curve_key=target.curve_key,
                    address=target.address,
                    router_port=target.router_port,
                    epoch=welcome.epoch,
                )
            )
        self.last_epoch = max(self.last_epoch, welcome.epoch)
        self.drop_link()
        link = probe.link
        link.welcome = None  # on_welcome takes it as a first Welcome (subscribes, announces)
        probe.promoted = True
        self.link = link
        self._peers.version = -1  # roster versions are per broker
        self.on_welcome(link, welcome, now)

    def _end_probe(self, probe: _Probe, now: float, *, retry: bool) -> None:
        if probe is self._probe:
            self._probe = None
        if retry:
            failed = probe.link.welcome is None
            if failed:
                self._ctx.count("probe_failed")
            self._probed[probe.advertised] = now + (
                PROBE_RETRY_FAILED_S if failed else PROBE_RETRY_S
            )
            if len(self._probed) > 1000:  # stale verdicts of adverts long changed
                self._probed = {k: t for k, t in self._probed.items() if t > now}
        if probe.link.welcome is not None:
            probe.link.sockets.send_nowait(wire.encode(wire.Goodbye(reason="probe")))
        probe.link.sockets.close()

    # ================================================================ the link

    def _open_link(self, target: Target, now: float) -> None:
        self.drop_link()
        sockets = self._transport.link(target.address, target.router_port, target.curve_key)
        link = Link(target=target, sockets=sockets, started=now)
        self.link = link
        self._peers.version = -1  # roster versions are per broker
        if target.key != self._ctx.me.key:
            self._status.set(
                Phase.CONNECTING, f"connecting to broker {target.handle or target.address}"
            )
        sockets.start(
            functools.partial(self._on_frames, link, False),
            functools.partial(self._on_link_events, link),
        )
        sockets.send_nowait(self._hello())

    def drop_link(self) -> None:
        link, self.link = self.link, None
        if link is not None:
            link.sockets.close()

    def send(self, frames: list[bytes]) -> bool:
        """To our broker, once it has welcomed us; False otherwise."""
        link = self.link
        return link is not None and link.send(frames)

    def welcomed(self) -> bool:
        return self.link is not None and self.link.welcome is not None

    def link_is_self(self) -> bool:
        return self.link is not None and self.link.target.key == self._ctx.me.key

    def broker_lost(self, why: str) -> None:
        link = self.link
        if link is None:
            return
        ctx, now = self._ctx, self._ctx.clock()
        is_self = link.target.key == ctx.me.key
        if membership.back_to_same_broker(
            why=why, now=now, last_tick=self._last_tick, woke_at=self._woke_at, broker_is_us=is_self
        ):
            self._open_link(link.target, now)
            return
        log.info("broker %s lost: %s", link.target.handle, why)
        if not is_self:
            self._peers.gone.add(link.target.key)
            if why != "broker left":
                self._adv.lost_room_at = now
        if link.welcome is not None:
            self.last_epoch = max(self.last_epoch, link.welcome.epoch)
        self.announced_broker = None  # reconnecting, even to the same broker, is news
        self.drop_link()
        self._status.set(Phase.ELECTING, f"broker lost ({why}); finding the next one")
        self.choose_target(ctx.clock())

    def _on_link_events(self, link: Link, events: list[int]) -> None:
        for event in events:
            link.reached = event != zmq.EVENT_DISCONNECTED
            if event == zmq.EVENT_DISCONNECTED and link is self.link and link.welcome is not None:
                if link.target.key == self._ctx.me.key:
                    continue  # our own relay: a disconnect here is a local hiccup
                self.broker_lost("connection closed")
                return

    def on_welcome(self, link: Link, msg: wire.Welcome, now: float) -> None:
        ctx = self._ctx
        if msg.broker_key != link.target.key:
            ctx.count("welcome_wrong_key")
            return
        again = link.welcome is not None  # the broker had forgotten us (we were silent)
        self._trust.refused = False  # until this broker says otherwise
        if link.target.key != ctx.me.key:
            self._claim_proven = True  # another broker's roster holds it for us
        if not again and self._held is None:
            self._held = handle_key(ctx.cfg.handle)
            # Written later, not on the way into the room (a cold start is busy enough).
            if ctx.spawn(self._remember_handle()) is None:
                self._save_held()
        link.welcome = msg
        link.last_beat = now
        if not again:
            link.sockets.subscribe(
                msg.pub_port,
                functools.partial(self._on_frames, link, True),
                functools.partial(self._on_subscribed, link),
            )
        self.last_epoch = max(self.last_epoch, msg.epoch)
        is_self = link.target.key == ctx.me.key
        handle = (
            ctx.cfg.handle if is_self else (link.target.handle or safe_label(msg.broker_handle))
        )
        if self.announced_broker != (msg.broker_key, msg.epoch):
            self.announced_broker = (msg.broker_key, msg.epoch)
            ctx.emit("broker", handle=handle, self=is_self, epoch=msg.epoch)
        if is_self:
            self._status.set(Phase.BROKER, "you are the broker for this room")
        else:
            via = f" (via --connect {ctx.cfg.connect[0]})" if ctx.cfg.connect else ""
            self._status.set(Phase.CONNECTED, f"connected to broker {handle}{via}")
        self._on_joined(link, msg, now)

    def _on_subscribed(self, link: Link, _events: list[int]) -> None:
        # Rosters published before our SUB connection was up did not reach us: in a cold
        # start, the whole room joins in those moments. Ask now, not at the next Beat.
        if link is self.link:
            self.send(wire.encode(wire.Sync(roster_version=self._peers.version)))

    def on_refused(self, link: Link, msg: wire.Refused, now: float) -> None:
        ctx = self._ctx
        if msg.code == "handle_taken":
            # The broker holds the handle for another authenticated connection: that is
            # evidence. No goodbye for the name: it would withdraw the holder's advert.
            self.discovery.disown()
            ctx.fatal(NodeExit("handle_taken", safe_label(msg.message)))
        elif msg.code == "hello_first":
            # The broker dropped us (we were silent too long): joining again is news.
            self.announced_broker = None
            self.send(self._hello())
        elif msg.code == "queue":
            if self.quiet_queue_refusals():
                # A claim re-sent to a new broker that has not heard of its hand yet.
                ctx.count("queue_refused_settling")
            else:
                ctx.error("queue", safe_label(msg.message))
        elif msg.code == "mentor_unverified":
            # The broker does not take our certificate (another authority's, or none):
            # we are a student to the room (the queue command says so).
            self._trust.refused = True
        elif msg.code == "not_broker":
            self._not_the_broker(link, now)
        elif msg.code in ("busy", "room_full"):
            # The broker is there and answering: wait our turn rather than elect another.
            ctx.count("broker_busy")
            link.started = now
            self._ctx.spawn(self._busy_again(link))
        else:
            ctx.error(safe_label(msg.code), f"broker refused us: {safe_label(msg.message)}")

    def on_redirect(self, link: Link, msg: wire.Redirect, now: float) -> None:
        """Our broker (or the node we took for it) sends us elsewhere."""
        if link.welcome is None:
            # The node we took for the broker is the client of another: go there (in a
            # cold start, the node we elected may have joined a broker meanwhile).
            if not membership.follow_redirect(
                msg.broker_key, me=self._ctx.me.key, asked=link.target.key, gone=self._peers.gone
            ):
                self._not_the_broker(link, now)
                return
            self.last_epoch = max(self.last_epoch, msg.epoch)
            adv = self._adv.advert_of(msg.broker_key)
            self._open_link(target_of_redirect(msg, adv.handle if adv else ""), now)
            return
        self.drop_link()
        if msg.broker_key == self._ctx.me.key and self._hosting.relay is None:
            # A handover to us (we are the mentor a settling broker gives way to).
            self.last_epoch = max(self.last_epoch, msg.epoch - 1)
            self._become_broker(now)
            return
        self.last_epoch = max(self.last_epoch, msg.epoch)
        self._open_link(target_of_redirect(msg), now)

    def _not_the_broker(self, link: Link, now: float) -> None:
        """The node we took for the broker is not (yet) the broker."""
        link.refused_not_broker += 1
        if not self._to_advertised_broker(link, now):
            # The successor has not noticed yet that it is its turn: ask again shortly.
            self._ctx.spawn(self._hello_again(link))

    def _to_advertised_broker(self, link: Link, now: float) -> bool:
        """Leave a node that says it is not the broker for one the room advertises."""
        best = membership.best_advertised(
            [claim_of(a) for a in self._adv.room_adverts()],
            self._peers.gone,
            besides=link.target.key,
        )
        adv = self._adv.advert_of(best.key) if best is not None else None
        if adv is None:
            return False
        self._open_link(target_of_advert(adv), now)
        return True

    async def _hello_again(self, link: Link) -> None:
        await asyncio.sleep(HELLO_AGAIN_S)
        if link is self.link and link.welcome is None:
            if self._to_advertised_broker(link, self._ctx.clock()):
                return
            link.sockets.send_nowait(self._hello())

    async def _busy_again(self, link: Link) -> None:
        await asyncio.sleep(BUSY_AGAIN_S)
        if link is self.link and link.welcome is None:
            link.sockets.send_nowait(self._hello())

    def not_broker_answer(self) -> wire.Redirect | wire.Refused:
        """The answer to a client that took us for the broker: where ours is, if we know."""
        link = self.link
        if link is None or link.welcome is None or link.target.key == self._ctx.me.key:
            return wire.Refused(code="not_broker", message="not the broker")
        return wire.Redirect(
            broker_key=link.target.key,
            curve_key=link.target.curve_key,
            address=link.target.address,
            router_port=link.target.router_port,
            epoch=link.welcome.epoch,
        )

    # ================================================================ time

    def tick(self, now: float) -> None:
        """Timeouts, heartbeats, announcements, handover and merge; the link part of a tick."""
        ctx = self._ctx
        # A laptop lid, SIGSTOP or a starved CPU: we did not run for a while. Whatever is
        # queued in our sockets is still to be read; no timeout may fire on our account.
        asleep = now - self._last_tick > membership.ASLEEP_S
        self._last_tick = now
        if asleep:
            self._woke_at = now
        if self._hosting.relay is not None:
            self._hosting.tick(now)
            self._adv.tick(now)
            self._maybe_hand_over()
        link = self.link
        if link is None:
            if ctx.cfg.connect is None or self._peers.roster:
                self.choose_target(now)
            return
        if asleep and link.welcome is not None:
            link.last_beat = now  # we were not running: the broker is not to blame
        why = membership.link_verdict(link.facts(), now)
        if why is not None:
            self.broker_lost(why)
            return
        if link.welcome is None:
            return
        self._presence.tick(now)
        if self._presence.changed or now - self._last_heartbeat >= HEARTBEAT_S:
            self._presence.changed = False
            self._last_heartbeat = now
            self.send(
                wire.encode(wire.Heartbeat(t=round(ctx.wall(), 3), status=self._presence.value))
            )

    def network_down(self, now: float) -> None:
        self._adv.lost_room_at = now

    def network_back(self, now: float) -> None:
        # Nobody we lost while our own link was down is to blame: try them again (a cached
        # advert is enough to find the broker), and tell the room we are back.
        self._peers.gone.clear()
        self._adv.network_back(now)
        if self.link is not None and self.link.welcome is None:
            # A connection attempt made while cut off (to a successor from the old roster,
            # most likely) would only time out: choose again with what we know now.
            self.drop_link()
            self.choose_target(now)
        elif self._hosting.relay is not None:
            self.check_merge()

    def connect_to(self, target: Target) -> None:
        """``--connect``: the broker the node at the given address uses."""
        if not self.welcomed():
            self._open_link(target, self._ctx.clock())

    def say_goodbye(self) -> None:
        """Leaving: tell our broker, so nobody waits for a heartbeat timeout."""
        self._save_held()  # if we leave before it was written
        if self.link is not None and self.link.welcome is not None:
            self.link.sockets.send_nowait(wire.encode(wire.Goodbye(reason="quit")))


def _as_student(adv: Advert) -> Advert:
    return replace(adv, mentor=False)
