"""The composition root: the only place that knows every layer and owns every task.

Inputs arrive from three sides - discovery (zeroconf), the sockets (ZeroMQ) and the user
(commands from a front end) - and go through the pure core (wire codec, election, relay,
friendship, reliability). Effects leave as socket sends, store writes and *events*: plain
dicts in the vocabulary of the headless JSON-lines contract (docs/headless.md), which every
front end consumes.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import secrets
import time
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import zmq

from lanchat import identity as ident
from lanchat import netif
from lanchat.core import election, wire
from lanchat.core import friendship as fs
from lanchat.core.advert import Advert
from lanchat.core.handles import HandleError, handle_key, validate_handle
from lanchat.core.reliability import GapTracker, InboundChannel, PublicOutbox
from lanchat.core.text import TextError, check_text, clean_text, safe_label
from lanchat.discovery import Discovery, HandleClash, HandleTaken, PeerGone, PeerSeen
from lanchat.store import HistoryRecord, OutboxItem, Pin, Profile
from lanchat.transport import Incoming, Transport

if TYPE_CHECKING:
    from collections.abc import Callable

    from lanchat.core.files import FileOffer
    from lanchat.core.relay import BrokerRelay, Publish, ToClient
    from lanchat.discovery import DiscoveryEvent
    from lanchat.files import FileService
    from lanchat.ports import LinkSockets, RoomDiscovery, RoomTransport

__all__ = ["Node", "NodeConfig", "NodeExit"]

log = logging.getLogger("lanchat.node")

TICK_S = 0.1
HEARTBEAT_S = 0.4
BROKER_TIMEOUT_S = 2.0  # no Beat for this long: the broker is gone
BROKER_HUNG_S = 8.0  # ...or this long while its connection is up (see _tick)
CONNECT_TIMEOUT_S = 2.0  # no Welcome for this long: try the next candidate
WELCOME_WAIT_S = 8.0  # ...unless its host took our connection: then this long
# Browsing finds existing nodes in 25-120 ms (DESIGN.md): listen this long for a node that
# already holds our handle, then this long after registering before electing a broker.
# Listening for a node that already holds our handle before we announce it. Everyone
# answers our start-up query at once (discovery.ask_everyone), so on a wired LAN the
# holder is heard within milliseconds; the margin is for Wi-Fi, where multicast waits for
# the next beacon. A holder heard too late still wins: see HandleClash, and the broker
# refuses a second Hello for a handle.
HANDLE_CHECK_S = 0.15
ELECTION_WAIT_S = 0.15
REANNOUNCE_S = 2.0  # brokers repeat their mDNS announcement (healed partitions)
# Just cut off from the room (its broker timed out, our link went down): announce more
# often for a while, so the room hears us the moment the link is back.
LOST_REANNOUNCE_S = 0.5
LOST_FAST_FOR_S = 120.0
ANSWER_REANNOUNCE_S = 0.25  # at most this often, a broker answers a worse broker's advert
BACKLOG_REQUEST = 200  # a newcomer asks for this many recent public messages
BACKLOG_KEPT = 2000  # the broker's backlog (lanchat.core.relay.BACKLOG_SIZE)
RESEND_CHUNK = 500  # the relay answers at most this many per Resend
PRIVATE_RESEND_S = 2.0
RECENT_RELAYS = 2000  # kept to seed our relay if we become broker
POSITIONS_KEPT = 8
PUBLIC = "public"
REQUEST_GAP_S = 3.0
SETTLE_S = 3.0
ASLEEP_S = 1.0
WOKE_GRACE_S = 2.0
ROOM_CONTACT_S = 5.0
LINK_CHECK_S = 0.25  # how often we read our interface's state (a file in /sys)
AUTO_AWAY_S = 600.0  # no command for this long: shown as away (until the next command)
PRESENCE_STATES = ("online", "away", "busy")
BACKGROUND_COMMANDS = frozenset({"read", "history", "friends", "who", "queue", "status"})
REQUESTS_PER_MIN = 20
STREAM_GAP_S = 0.005  # texts closer than this to the previous pack are a stream...
PACK_DELAY_S = 0.002  # ...and wait this long to be packed with the next ones


class NodeExit(Exception):
    """The node cannot run: ``code`` is the error code, ``status`` the exit status."""

    def __init__(self, code: str, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


@dataclass(frozen=True, slots=True)
class NodeConfig:
    handle: str
    room: str
    address: str
    mentor: bool = False
    priority: int = 0
    connect: tuple[str, int] | None = None
    info_port: int = 47100
    # Headless clients count a message as read once it is printed; the TUI says so itself
    # when the conversation is on screen.
    auto_read: bool = True


# eq=False on the private records below: never compared (a link is checked with `is`), and
# each generated __eq__ costs start-up time.
@dataclass(slots=True, eq=False)
class _Target:
    key: bytes
    curve_key: bytes
    address: str
    router_port: int
    handle: str = ""


@dataclass(slots=True, eq=False)
class _Peer:
    entry: wire.PeerEntry

    @property
    def key(self) -> bytes:
        return self.entry.id_key


@dataclass(slots=True, eq=False)
class _Link:
    target: _Target
    sockets: LinkSockets
    started: float
    welcome: wire.Welcome | None = None
    reached: bool = False  # connected (TCP, then CURVE): the broker's host is there
    last_beat: float = 0.0
    refused_not_broker: int = 0


@dataclass(slots=True, eq=False)
class _HelpSession:
    """One side of a hand's conversation: numbered items, acked, re-sent until acked."""

    box: ident.SessionBox | None = None
    next_cseq: int = 1
    unacked: dict[int, bytes] = field(default_factory=dict)
    inbound: InboundChannel = field(default_factory=InboundChannel)


@dataclass(slots=True, eq=False)
class _MyHand:
    hand_id: str
    topic: str
    anon: bool
    eph: ident.EphemeralKey
    raised_at: float
    state: str = "raised"
    mentor: str = ""
    mentor_key: bytes = b""
    position: int = 0
    session: _HelpSession = field(default_factory=_HelpSession)


@dataclass(slots=True, eq=False)
class _Claimed:
    entry: wire.QueueEntry
    session: _HelpSession = field(default_factory=_HelpSession)


def _conv(key: bytes) -> str:
    return f"peer:{key.hex()}"


class Node:
    def __init__(
        self,
        config: NodeConfig,
        profile: Profile,
        identity: ident.Identity,
        emit: Callable[[dict[str, Any]], None],
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        transport: RoomTransport | None = None,
        discovery: Callable[[str, Callable[[DiscoveryEvent], None]], RoomDiscovery] = Discovery,
    ) -> None:
        """``transport`` and ``discovery`` (a factory: address, on_event) are the real
        ZeroMQ and zeroconf adapters unless a caller passes their in-memory twins."""
        self.cfg = config
        self.profile = profile
        self.me = identity
        self._emit_raw = emit
        self.clock = clock
        self.wall = wall
        self.transport: RoomTransport = transport or Transport(
            config.address, identity.curve_public, identity.curve_secret
        )
        self.discovery: RoomDiscovery = discovery(config.address, self._on_discovery)
        # Made on first use (_file_service): most sessions never move a file.
        self._files: FileService | None = None
        self._offers_out: dict[str, tuple[FileOffer, bytes | None]] = {}  # id -> (offer, to)
        self._offers_in: dict[str, tuple[FileOffer, bytes]] = {}  # id -> (offer, sender)
        self._identity_of_curve: dict[bytes, bytes] = {}  # transport key -> identity key
        self.started_at = wall()
        self.relay: BrokerRelay | None = None
        self.link: _Link | None = None
        self.roster: list[wire.PeerEntry] = []
        self.roster_version = -1
        self.online: dict[bytes, wire.PeerEntry] = {}
        self.gone: set[bytes] = set()
        self.outbox = PublicOutbox(next_seq=profile.history.max_seq("public") + 1)
        self.gap = GapTracker()
        self.inbound: dict[bytes, InboundChannel] = {}
        self.recent_relays: deque[tuple[wire.Public | wire.PublicBatch, bytes]] = deque(
            maxlen=RECENT_RELAYS
        )
        self._unpacked: list[tuple[int, str, float]] = []  # said, not yet signed and queued
        self._pump_scheduled = False
        self._last_pack = -1e9
        self.counters: dict[str, int] = {}
        self.hello_ok: dict[bytes, bool] = {}
        self.last_epoch = 0
        self.announced_broker: tuple[bytes, int] | None = None
        self._advert: Advert | None = None
        self._stop = asyncio.Event()
        self._exit: NodeExit | None = None
        self._election_from = 0.0
        self._last_tick = clock()
        self._numbering: tuple[bytes, int] | None = None  # (broker, epoch) of our relay count
        # Where we were in the numbering of brokers we left: on return, catch up exactly.
        self._positions: dict[tuple[bytes, int], int] = {}
        self._last_room_contact = -1e9  # last relay or beat while others were online
        self._last_heartbeat = 0.0
        self._last_reannounce = 0.0
        self._lost_room_at = -1e9  # when we were last cut off from a room we were in
        self._woke_at = -1e9
        self._last_answer = -1e9
        self._last_private_resend = 0.0
        self._tg: asyncio.TaskGroup | None = None
        self._last_request: dict[bytes, float] = {}
        self._friends: dict[bytes, fs.Friendship] | None = None
        self.presence = "online"  # what our heartbeats tell: state[:text]
        self._auto_away = False
        self._last_activity = clock()
        self.my_hands: dict[str, _MyHand] = {}  # as a student
        self.my_claims: dict[str, _Claimed] = {}  # as a mentor
        # Hands (ours or claimed) we asked to resolve; the broker's answer removes them
        # from my_hands / my_claims. Asked again of each new broker until then: the ask
        # may have gone nowhere (no broker at that moment) or to a broker that died.
        self._done_asked: set[str] = set()
        self.queue: wire.Queue | None = None
        self._request_times: list[float] = []
        self.status = "starting"
        self._iface = netif.interface_of(config.address)
        self._offline = False
        self._after_offline = ("starting", "")
        self._last_link_check = 0.0
        self._wake: asyncio.TimerHandle | None = None
        self._wake_at = float("inf")

    # ================================================================ life cycle

    async def run(self, commands: asyncio.Queue[dict[str, Any] | None]) -> int:
        """Run until quit; returns the process exit status."""
        try:
            self.transport.start(self.cfg.info_port)
        except zmq.ZMQError as exc:
            self._error("network", f"cannot open sockets on {self.cfg.address}: {exc}")
            return 1
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                tg.create_task(self._startup(commands))
                await self._stop.wait()
                raise _Stopped
        except* _Stopped:
            pass
        except* NodeExit as group:
            first = group.exceptions[0]
            assert isinstance(first, NodeExit)
            self._exit = first
        finally:
            await self._shutdown()
        if self._exit is not None:
            self._error(self._exit.code, str(self._exit))
            return self._exit.status
        return 0

    async def _startup(self, commands: asyncio.Queue[dict[str, Any] | None]) -> None:
        assert self._tg is not None
        self._set_status("discovering", "looking for other lanchat users on the network")
        await self.discovery.start()
        conflict = await self.discovery.find_conflict(
            self.cfg.handle, self.me.key, wait_s=HANDLE_CHECK_S
        )
        if conflict is not None:
            raise self._handle_taken(conflict)
        self._advert = self._make_advert()
        try:
            await self.discovery.register(self._advert)
        except HandleTaken as exc:
            # Its holder announced itself between our check and our announcement.
            raise self._handle_taken(exc.holder) from exc
        self._emit("ready", handle=self.cfg.handle, fingerprint=self.me.fingerprint)
        # Nodes started at the same moment register within a few ms of us: hear them
        # before electing, so a cold start settles on one broker without a merge.
        self._election_from = self.clock()
        self._set_status("electing", "finding the broker")
        self.transport.read_router(self._on_router_batch)
        self._tg.create_task(self.transport.serve_info(self._info))
        self._tg.create_task(self._tick_loop())
        self._tg.create_task(self._command_loop(commands))
        if self.cfg.connect is not None:
            self._tg.create_task(self._connect_direct())
        # What start-up built (modules, classes, caches) lives as long as we do: keep it out
        # of the cyclic collector's full passes, which would otherwise stall a busy relay.
        gc.freeze()
        gc.enable()  # the command line turned it off for the start-up

    def _handle_taken(self, holder: Advert | None) -> NodeExit:
        where = (
            f" ({holder.address}, key {ident.fingerprint(holder.id_key)})"
            if holder is not None
            else ""
        )
        return NodeExit(
            "handle_taken",
            f"the handle {self.cfg.handle!r} is already used on this network by another "
            f"person{where}; choose another with --handle",
        )

    async def _shutdown(self) -> None:
        if self._wake is not None:
            self._wake.cancel()
        # Say goodbye first so nobody waits for a heartbeat timeout.
        with contextlib.suppress(Exception):
            if self.link is not None and self.link.welcome is not None:
                self.link.sockets.send_nowait(wire.encode(wire.Goodbye(reason="quit")))
            if self.relay is not None:
                for eff in self.relay.close():
                    self._apply(eff)
                # Give the goodbye a moment to leave the socket before it is closed.
                await asyncio.sleep(0.05)
        self._drop_link()
        if self._files is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._files.close(), 2.0)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.discovery.close(), 2.0)
        self.transport.close()

    def stop(self) -> None:
        self._stop.set()

    # ================================================================ adverts

    def _make_advert(self) -> Advert:
        epoch = self.relay.epoch if self.relay else 0
        since = self.relay.since if self.relay else 0.0
        return Advert(
            handle=self.cfg.handle,
            room=self.cfg.room,
            address=self.cfg.address,
            id_key=self.me.key,
            curve_key=self.me.curve_public,
            router_port=self.transport.router_port,
            pub_port=self.transport.pub_port,
            mentor=self.cfg.mentor,
            priority=self.cfg.priority,
            started_at=round(self.started_at, 3),
            broker_epoch=epoch,
            broker_since=round(since, 3),
        )

    def _info(self) -> dict[str, Any]:
        broker: dict[str, Any] | None = None
        link = self.link
        if link is not None and link.welcome is not None:
            broker = {
                "key": link.target.key.hex(),
                "curve": link.target.curve_key.hex(),
                "address": link.target.address,
                "router_port": link.target.router_port,
            }
        return {
            "app": "lanchat",
            "handle": self.cfg.handle,
            "room": self.cfg.room,
            "key": self.me.key_hex,
            "curve": self.me.curve_public.hex(),
            "address": self.cfg.address,
            "router_port": self.transport.router_port,
            "broker": broker,
        }

    def _hello(self) -> tuple[wire.Hello, bytes]:
        hello = wire.Hello(
            handle=self.cfg.handle,
            room=self.cfg.room,
            mentor=self.cfg.mentor,
            id_key=self.me.key,
            curve_key=self.me.curve_public,
            started_at=round(self.started_at, 3),
            priority=self.cfg.priority,
            address=self.cfg.address,
            router_port=self.transport.router_port,
            info_port=self.transport.info_port,
        )
        return hello, self.me.sign(wire.signed_bytes(hello))

    # ================================================================ discovery

    def _on_discovery(self, event: PeerSeen | PeerGone | HandleClash) -> None:
        if isinstance(event, HandleClash):
            # Two of us took the same handle at the same moment: the one that started
            # later (then the larger key) gives way, and both sides reach that verdict.
            other = event.advert
            mine = (round(self.started_at, 3), self.me.key)
            if (other.started_at, other.id_key) < mine:
                self.discovery.disown()  # a goodbye for the name would withdraw theirs
                self._fatal(
                    NodeExit(
                        "handle_taken",
                        f"the handle {self.cfg.handle!r} was taken at the same moment by "
                        f"another person ({other.address}, key "
                        f"{ident.fingerprint(other.id_key)}); choose another with --handle",
                    )
                )
            else:
                # Our announcement is what the newcomer's overwrote in everyone's cache.
                self._spawn(self._reannounce())
            return
        if isinstance(event, PeerSeen):
            adv = event.advert
            if adv.id_key == self.me.key:
                return
            # A fresh advert is a sign of life: give that node another chance.
            self.gone.discard(adv.id_key)
            self._answer_worse_broker(adv)
            registered = self._advert is not None
            if registered and self.link is None and self.cfg.connect is None and adv.broker_epoch:
                self._choose_target(self.clock())  # a broker turned up: join it now

    def _answer_worse_broker(self, adv: Advert) -> None:
        """A second broker in our room announced itself (a laptop back from a walk, the
        other half of a healed partition): if we are the better one, announce ourselves
        now, so it moves to us at once instead of at our next periodic announcement."""
        relay, now = self.relay, self.clock()
        if relay is None or adv.room != self.cfg.room or adv.broker_epoch <= 0:
            return
        if now - self._last_answer < ANSWER_REANNOUNCE_S:
            return
        ours = election.BrokerClaim(self.me.key, self.cfg.mentor, relay.since, relay.epoch)
        if election.better_broker(ours, _claim(adv)) is ours:
            self._last_answer = now
            self._spawn(self._reannounce())

    def _room_adverts(self) -> list[Advert]:
        return [
            a
            for a in self.discovery.peers().values()
            if a.room == self.cfg.room and a.id_key != self.me.key
        ]

    # ================================================================ election

    def _choose_target(self, now: float) -> None:
        """No broker link: join a running broker, the successor, or elect one."""
        if self.relay is not None:
            self._open_link(self._self_target(), now)
            return
        best = self._advertised_broker()
        if best is not None:
            self._open_link(_target_of_advert(best), now)
            return
        alive = [e for e in self.roster if e.id_key not in self.gone]
        if alive:
            succ = alive[0]
            if succ.id_key == self.me.key:
                self._become_broker(now)
            else:
                self._open_link(_target_of_entry(succ), now)
            return
        if now - self._election_from < ELECTION_WAIT_S:
            self._tick_at(self._election_from + ELECTION_WAIT_S)
            return
        cands = [_candidate_of_advert(a) for a in self._room_adverts() if a.id_key not in self.gone]
        mine = election.Candidate(
            self.me.key, self.cfg.mentor, self.cfg.priority, round(self.started_at, 3)
        )
        winner = election.best_candidate([*cands, mine])
        if winner is None or winner.key == self.me.key:
            self._become_broker(now)
            return
        adv = next(a for a in self._room_adverts() if a.id_key == winner.key)
        self._open_link(_target_of_advert(adv), now)

    def _advertised_broker(self, besides: bytes = b"") -> Advert | None:
        """The best broker the room's adverts name (not ``besides``), if any."""
        brokers = [
            a
            for a in self._room_adverts()
            if a.broker_epoch > 0 and a.id_key not in self.gone and a.id_key != besides
        ]
        return min(brokers, key=lambda a: _claim(a).rank()) if brokers else None

    def _self_target(self) -> _Target:
        return _Target(
            key=self.me.key,
            curve_key=self.me.curve_public,
            address=self.cfg.address,
            router_port=self.transport.router_port,
            handle=self.cfg.handle,
        )

    def _become_broker(self, now: float) -> None:
        # Imported here, not at start-up: most nodes of a room are never its broker.
        from lanchat.core.relay import BrokerRelay

        epoch = self.last_epoch + 1
        self.relay = BrokerRelay(
            key=self.me.key,
            handle=self.cfg.handle,
            room=self.cfg.room,
            epoch=epoch,
            since=round(self.wall(), 3),
            pub_port=self.transport.pub_port,
            verify=ident.verify,
        )
        self.relay.seed(self.recent_relays)
        self._set_status("broker", "you are the broker for this room")
        self._advert_changed()
        self._open_link(self._self_target(), now)

    def _stop_broker(self) -> None:
        self.relay = None
        self._advert_changed()

    def _advert_changed(self) -> None:
        if self._tg is None:
            return
        self._advert = self._make_advert()
        self._tg.create_task(self._update_advert(self._advert))

    async def _update_advert(self, advert: Advert) -> None:
        try:
            await self.discovery.update(advert)
        except Exception:  # the advert is best-effort; the broker works without it
            log.exception("could not update the mDNS advert")

    def _maybe_hand_over(self) -> None:
        """A student broker gives way to a mentor who turned up while it was settling.

        Laptops started together do not all see each other before electing; a mentor
        among them should still end up as broker. Only in the first SETTLE_S of a reign,
        and only student -> mentor, so a running room never changes broker because a
        better laptop arrived (no preemption), and the handover is as clean as a goodbye.
        """
        relay = self.relay
        if relay is None or self.cfg.mentor or self.wall() - relay.since > SETTLE_S:
            return
        mentors = [e for e in self.online.values() if e.mentor and e.id_key not in self.gone]
        if not mentors:
            return
        best = min(
            mentors,
            key=lambda e: election.Candidate(e.id_key, True, e.priority, e.started_at).rank(),
        )
        redirect = wire.Redirect(
            broker_key=best.id_key,
            curve_key=best.curve_key,
            address=best.address,
            router_port=best.router_port,
            epoch=relay.epoch + 1,
        )
        for eff in relay.redirect(redirect):
            self._apply(eff)
        self.last_epoch = max(self.last_epoch, relay.epoch)
        self._stop_broker()
        self._drop_link()
        self._open_link(_target_of_entry(best), self.clock())

    def _check_merge(self) -> None:
        """Two brokers in one room (a healed partition): move to the better one."""
        link = self.link
        if link is None or link.welcome is None:
            return
        current = election.BrokerClaim(
            key=link.target.key,
            mentor=self._is_mentor(link.target.key),
            since=link.welcome.since,
            epoch=link.welcome.epoch,
        )
        for adv in self._room_adverts():
            if adv.broker_epoch <= 0 or adv.id_key == current.key or adv.id_key in self.gone:
                continue
            if election.better_broker(current, _claim(adv)) is current:
                continue
            now = self.clock()
            if self.relay is not None:
                redirect = wire.Redirect(
                    broker_key=adv.id_key,
                    curve_key=adv.curve_key,
                    address=adv.address,
                    router_port=adv.router_port,
                    epoch=adv.broker_epoch,
                )
                for eff in self.relay.redirect(redirect):
                    self._apply(eff)
                self._stop_broker()
            self.last_epoch = max(self.last_epoch, adv.broker_epoch)
            self._drop_link()
            self._open_link(_target_of_advert(adv), now)
            return

    def _link_is_self(self) -> bool:
        return self.link is not None and self.link.target.key == self.me.key

    def _is_mentor(self, key: bytes) -> bool:
        if key == self.me.key:
            return self.cfg.mentor
        entry = self.online.get(key)
        return bool(entry and entry.mentor)

    # ================================================================ broker link

    def _open_link(self, target: _Target, now: float) -> None:
        self._drop_link()
        sockets = self.transport.link(target.address, target.router_port, target.curve_key)
        link = _Link(target=target, sockets=sockets, started=now)
        self.link = link
        self.roster_version = -1  # versions are per broker
        if target.key != self.me.key:
            self._set_status(
                "connecting", f"connecting to broker {target.handle or target.address}"
            )
        sockets.start(
            functools.partial(self._handle_batch, link, via_pub=False),
            functools.partial(self._on_link_events, link),
        )
        hello, sig = self._hello()
        sockets.send_nowait(wire.encode(hello, sig))

    def _drop_link(self) -> None:
        link, self.link = self.link, None
        if link is None:
            return
        link.sockets.close()

    def _broker_lost(self, why: str) -> None:
        link = self.link
        if link is None:
            return
        now = self.clock()
        just_woke = now - self._last_tick > ASLEEP_S or now - self._woke_at < WOKE_GRACE_S
        if why == "connection closed" and just_woke and link.target.key != self.me.key:
            # We were not running (lid, SIGSTOP, starved CPU) and the broker dropped our
            # connection meanwhile: it is most likely still there, so go back to it
            # rather than elect ourselves (a failed reconnect times out as usual).
            self._open_link(link.target, now)
            return
        log.info("broker %s lost: %s", link.target.handle, why)
        if link.target.key != self.me.key:
            self.gone.add(link.target.key)
            if why != "broker left":
                self._lost_room_at = now
        if link.welcome is not None:
            self.last_epoch = max(self.last_epoch, link.welcome.epoch)
        self.announced_broker = None  # reconnecting, even to the same broker, is news
        self._drop_link()
        self._set_status("electing", f"broker lost ({why}); finding the next one")
        self._choose_target(self.clock())

    def _handle_batch(self, link: _Link, batch: list[list[bytes]], via_pub: bool) -> None:
        # One history transaction per burst: the per-message cost of a commit is paid once.
        with self.profile.history.batch():
            for frames in batch:
                if link is not self.link:
                    return
                self._handle_safely(link, frames, via_pub)
        self._pump_public()

    def _on_link_events(self, link: _Link, events: list[int]) -> None:
        for event in events:
            link.reached = event != zmq.EVENT_DISCONNECTED
            if event == zmq.EVENT_DISCONNECTED and link is self.link and link.welcome is not None:
                if link.target.key == self.me.key:
                    continue  # our own relay: a disconnect here is a local hiccup
                self._broker_lost("connection closed")
                return

    def _handle_safely(self, link: _Link, frames: list[bytes], via_pub: bool) -> None:
        # One bad frame (or one bug) must not stop the receive loop.
        try:
            self._on_from_broker(link, frames, via_pub)
        except Exception:
            self._count("handler_error")
            log.exception("error handling a frame from the broker")

    def _on_from_broker(self, link: _Link, frames: list[bytes], via_pub: bool) -> None:
        try:
            msg, _sig = wire.decode(frames)
        except wire.DecodeError:
            self._count("malformed_from_broker")
            return
        now = self.clock()
        if isinstance(msg, wire.Welcome):
            self._on_welcome(link, msg, now)
            return
        if isinstance(msg, wire.Refused):
            self._on_refused(link, msg, now)
            return
        if link.welcome is None:
            if isinstance(msg, wire.Roster):
                self._on_roster(msg)
            elif isinstance(msg, wire.Redirect):
                self._on_redirect_before_welcome(link, msg, now)
            return
        if isinstance(msg, wire.Relay | wire.Beat) and self.online:
            self._last_room_contact = now
        if isinstance(msg, wire.Relay):
            link.last_beat = now
            self._on_relay(msg, now)
        elif isinstance(msg, wire.Beat):
            link.last_beat = now
            gap = self.gap.tail_gap(msg.epoch, msg.bseq)
            if gap:
                self._send_to_broker(
                    wire.encode(wire.Resend(epoch=msg.epoch, first=gap[0], last=gap[1]))
                )
            if msg.roster_version != self.roster_version:
                self._send_to_broker(wire.encode(wire.Sync(roster_version=self.roster_version)))
        elif isinstance(msg, wire.Roster):
            self._on_roster(msg)
        elif isinstance(msg, wire.Ack):
            if self.outbox.ack(msg.seq, now):
                prefix = self.me.key_hex[:16]
                for seq in range(msg.seq, msg.seq + max(1, min(msg.count, wire.MAX_BATCH))):
                    self._emit("sent", id=f"{prefix}:{seq}")
        elif isinstance(msg, wire.Direct):
            self._on_direct(msg, _sig)
        elif isinstance(msg, wire.Goodbye):
            if via_pub:
                self._broker_lost("broker left")
        elif isinstance(msg, wire.Queue):
            self._on_queue(msg)
        elif isinstance(msg, wire.HandStatus):
            self._on_hand_status(msg)
        elif isinstance(msg, wire.HelpMsg):
            self._on_help_msg(msg)
        elif isinstance(msg, wire.Redirect):
            self._drop_link()
            if msg.broker_key == self.me.key and self.relay is None:
                # A handover to us (we are the mentor a settling broker gives way to).
                self.last_epoch = max(self.last_epoch, msg.epoch - 1)
                self._become_broker(now)
                return
            self.last_epoch = max(self.last_epoch, msg.epoch)
            self._open_link(_target_of_redirect(msg), now)
        else:
            self._count("unexpected_from_broker")

    def _on_welcome(self, link: _Link, msg: wire.Welcome, now: float) -> None:
        if msg.broker_key != link.target.key:
            self._count("welcome_wrong_key")
            return
        again = link.welcome is not None  # the broker had forgotten us (we were silent)
        link.welcome = msg
        link.last_beat = now
        if not again:
            link.sockets.subscribe(
                msg.pub_port,
                functools.partial(self._handle_batch, link, via_pub=True),
                functools.partial(self._on_subscribed, link),
            )
        self.last_epoch = max(self.last_epoch, msg.epoch)
        numbering = (msg.broker_key, msg.epoch)
        if numbering != self._numbering:
            if self._numbering is not None and self.gap.epoch == self._numbering[1]:
                self._positions[self._numbering] = self.gap.next_bseq
                while len(self._positions) > POSITIONS_KEPT:
                    del self._positions[next(iter(self._positions))]
            self._numbering = numbering
            back_at = self._positions.pop(numbering, None)
            if back_at is None:
                self._welcome_backlog(msg, now)
            else:
                self.gap.reset(msg.epoch, back_at - 1)
        if self.gap.epoch == msg.epoch and self.gap.next_bseq <= msg.bseq:
            # A broker we were with before (we were away a moment: asleep, stopped, cut
            # off and our own broker meanwhile): ask for exactly what we missed, as far
            # as it keeps.
            self._request_relays(msg.epoch, self.gap.next_bseq, msg.bseq)
            self.gap.next_bseq = msg.bseq + 1
        for frames in self.outbox.for_new_broker(now):
            self._send_to_broker(frames)
        self._pump_public()
        is_self = link.target.key == self.me.key
        handle = self.cfg.handle if is_self else (link.target.handle or msg.broker_handle)
        if self.announced_broker != (msg.broker_key, msg.epoch):
            self.announced_broker = (msg.broker_key, msg.epoch)
            self._emit("broker", handle=handle, self=is_self, epoch=msg.epoch)
        if is_self:
            self._set_status("broker", "you are the broker for this room")
        else:
            via = f" (via --connect {self.cfg.connect[0]})" if self.cfg.connect else ""
            self._set_status("connected", f"connected to broker {handle}{via}")
        self._flush_private_all()
        for hand in self.my_hands.values():
            self._send_hand(hand)
        for hand_id in self.my_claims:
            self._send_to_broker(wire.encode(wire.Claim(hand_id=hand_id)))
        self._done_asked &= self.my_hands.keys() | self.my_claims.keys()
        for hand_id in self._done_asked:
            self._send_to_broker(wire.encode(wire.HandDone(hand_id=hand_id)))

    def _on_subscribed(self, link: _Link, _events: list[int]) -> None:
        # Rosters published before our SUB connection was up did not reach us: in a cold
        # start, the whole room joins in those moments. Ask now, not at the next Beat.
        if link is self.link:
            self._send_to_broker(wire.encode(wire.Sync(roster_version=self.roster_version)))

    def _welcome_backlog(self, msg: wire.Welcome, now: float) -> None:
        self.gap.reset(msg.epoch, msg.bseq)
        # Recent public messages, for a newcomer or a node back from being away. Right after
        # a failover we already have them (the new broker's backlog is what its node
        # received, like ours), and a whole room asking at once would flood the new
        # broker just when it is busiest.
        with_the_room_just_now = now - self._last_room_contact < ROOM_CONTACT_S
        first = max(1, msg.bseq - BACKLOG_REQUEST + 1)
        if with_the_room_just_now:
            # Only what the new broker relayed before we got to it.
            first = max(first, msg.first_live)
        self._request_relays(msg.epoch, first, msg.bseq)

    def _request_relays(self, epoch: int, first: int, last: int) -> None:
        """Ask the broker again for relays first..last, in pieces it will answer."""
        first = max(first, last - BACKLOG_KEPT + 1, 1)
        while first <= last:
            upto = min(last, first + RESEND_CHUNK - 1)
            self._send_to_broker(wire.encode(wire.Resend(epoch=epoch, first=first, last=upto)))
            first = upto + 1

    def _on_refused(self, link: _Link, msg: wire.Refused, now: float) -> None:
        if msg.code == "handle_taken":
            self._fatal(NodeExit("handle_taken", msg.message))
        elif msg.code == "hello_first":
            # The broker dropped us (we were silent too long): joining again is news.
            self.announced_broker = None
            hello, sig = self._hello()
            self._send_to_broker(wire.encode(hello, sig))
        elif msg.code == "queue":
            self._error("queue", msg.message)
        elif msg.code == "not_broker":
            self._not_the_broker(link, now)
        else:
            self._error(msg.code, f"broker refused us: {msg.message}")

    def _on_redirect_before_welcome(self, link: _Link, msg: wire.Redirect, now: float) -> None:
        """The node we took for the broker is the client of another: go there.

        In a cold start, nodes elect from the adverts heard so far, and the one they pick
        may have joined a broker meanwhile. Not to a broker we lost, though: a successor
        that has not noticed the loss yet still names it (ask the successor again), nor to
        ourselves or back to the same node.
        """
        if msg.broker_key in self.gone or msg.broker_key in (self.me.key, link.target.key):
            self._not_the_broker(link, now)
            return
        self.last_epoch = max(self.last_epoch, msg.epoch)
        handle = next((a.handle for a in self._room_adverts() if a.id_key == msg.broker_key), "")
        self._drop_link()
        self._open_link(_target_of_redirect(msg, handle), now)

    def _not_the_broker(self, link: _Link, now: float) -> None:
        """The node we took for the broker is not (yet) the broker."""
        link.refused_not_broker += 1
        if not self._to_advertised_broker(link, now):
            # The successor has not noticed yet that it is its turn: ask again shortly.
            self._spawn(self._hello_again(link))

    def _to_advertised_broker(self, link: _Link, now: float) -> bool:
        """Leave a node that says it is not the broker for one the room advertises.

        In a cold start, a node elects from the adverts it has heard so far; the winner
        may have joined another broker meanwhile. Its refusals would keep us asking it
        until the connect timeout, while the room's broker is advertised already.
        """
        best = self._advertised_broker(besides=link.target.key)
        if best is None:
            return False
        self._drop_link()
        self._open_link(_target_of_advert(best), now)
        return True

    async def _hello_again(self, link: _Link) -> None:
        await asyncio.sleep(0.15)
        if link is self.link and link.welcome is None:
            if self._to_advertised_broker(link, self.clock()):
                return
            hello, sig = self._hello()
            link.sockets.send_nowait(wire.encode(hello, sig))

    def _send_to_broker(self, frames: list[bytes]) -> bool:
        link = self.link
        if link is None or link.welcome is None:
            return False
        return link.sockets.send_nowait(frames)

    def _pump_public(self) -> None:
        """Send queued public messages as far as the outbox window allows."""
        self._pump_scheduled = False
        if self._unpacked:
            self._pack_public()
        link = self.link
        if link is None or link.welcome is None:
            return
        for frames in self.outbox.sendable(self.clock()):
            if not link.sockets.send_nowait(frames):
                break  # the socket queue is full: the stall timer puts them back in line

    # ================================================================ relay (broker role)

    def _on_router_batch(self, batch: list[Incoming]) -> None:
        for incoming in batch:
            self._on_router(incoming)
        if self.relay is not None:
            self._tick_at(self.relay.next_due())

    def _on_router(self, incoming: Incoming) -> None:
        relay = self.relay
        if relay is None:
            self.transport.send_router_nowait(incoming.rid, wire.encode(self._not_broker()))
            return
        try:
            effects = relay.receive(
                incoming.rid, incoming.transport_key, incoming.frames, self.clock()
            )
        except Exception:  # a bug must not take the room's relay down
            self._count("relay_error")
            log.exception("relay failed on a frame")
            return
        for eff in effects:
            self._apply(eff)

    def _not_broker(self) -> wire.Redirect | wire.Refused:
        """The answer to a client that took us for the broker: where ours is, if we know."""
        link = self.link
        if link is None or link.welcome is None or link.target.key == self.me.key:
            return wire.Refused(code="not_broker", message="not the broker")
        target = link.target
        return wire.Redirect(
            broker_key=target.key,
            curve_key=target.curve_key,
            address=target.address,
            router_port=target.router_port,
            epoch=link.welcome.epoch,
        )

    def _apply(self, eff: ToClient | Publish) -> None:
        from lanchat.core.relay import ToClient  # loaded: only a relay makes effects

        if isinstance(eff, ToClient):
            self.transport.send_router_nowait(eff.rid, eff.frames)
        else:
            self.transport.publish_nowait(eff.frames)

    # ================================================================ public room

    def _on_relay(self, msg: wire.Relay, now: float) -> None:
        _is_new, missing = self.gap.observe(msg.epoch, msg.bseq)
        if missing:
            self._send_to_broker(
                wire.encode(wire.Resend(epoch=msg.epoch, first=missing[0], last=missing[1]))
            )
        pub = msg.inner
        if pub.author == self.me.key:
            return  # our own, already in our history
        if pub.room != self.cfg.room:
            self._count("wrong_room")
            return
        # Our own relay verified every signature before relaying it: no need to do it twice.
        from_own_relay = self.relay is not None and self._link_is_self()
        if not from_own_relay and not ident.verify(
            pub.author, wire.signed_bytes(pub), msg.inner_sig
        ):
            self._count("bad_signature")
            return
        if self._blocked(pub.author):
            self._count("blocked")
            return
        self.recent_relays.append((pub, msg.inner_sig))
        handle = self._display_handle(pub.author, pub.handle)
        received = self.wall()
        shown_t = 0.0  # taken once, at the first text shown: a batch's texts show together
        author_hex = pub.author.hex()
        append, sent_t = self.profile.history.append, pub.sent_t
        for msg_id, text in pub.texts_by_id():
            record = HistoryRecord(
                msg_id, PUBLIC, handle, author_hex, text, sent_t, received, False
            )
            if not append(record):
                continue  # seen before: at-least-once below, exactly-once here
            if isinstance(pub, wire.Public) and pub.offer:
                self._on_offer(pub.author, handle, pub.offer, shared=True)
            if not shown_t:
                shown_t = round(self.wall(), 6)
            # What _emit("public", ...) writes, without its per-event clock and merge.
            self._emit_raw(
                {
                    "ev": "public",
                    "t": shown_t,
                    "id": msg_id,
                    "from": handle,
                    "text": safe_text(text),
                    "sent_t": sent_t,
                }
            )

    def say(self, text: str) -> str:
        text = check_text(text)
        seq = self.outbox.allocate()
        sent_t = round(self.wall(), 3)
        msg_id = f"{self.me.key_hex[:16]}:{seq}"
        # One transaction for the counter and the text (the TUI calls us outside the
        # command loop's batch; inside it, this adds nothing).
        with self.profile.history.batch():
            self.profile.history.set_seq("public", seq)
            self._store_outgoing(msg_id, PUBLIC, text, sent_t)
        # Packed and sent once the current burst of commands is done (see _pack_public).
        self._unpacked.append((seq, text, sent_t))
        if not self._pump_scheduled:
            self._pump_scheduled = True
            loop = asyncio.get_running_loop()
            if self.clock() - self._last_pack < STREAM_GAP_S:
                # A stream of texts (a bot, a paste): wait a moment for the next ones, so
                # they go out packed under one signature. A lone text goes at once.
                loop.call_later(PACK_DELAY_S, self._pump_public)
            else:
                loop.call_soon(self._pump_public)
        return msg_id

    def _store_outgoing(self, msg_id: str, conversation: str, text: str, sent_t: float) -> None:
        """A text of ours in the history of `conversation` (public, private or a hand's)."""
        self.profile.history.append(
            HistoryRecord(
                id=msg_id,
                conversation=conversation,
                sender=self.cfg.handle,
                sender_key=self.me.key_hex,
                text=text,
                sent_t=sent_t,
                received_t=sent_t,
                outgoing=True,
            )
        )

    def _pack_public(self) -> None:
        """Turn queued texts into signed messages: one per text, or a batch for a burst."""
        now = self.clock()
        self._last_pack = now
        pending, self._unpacked = self._unpacked, []
        while pending:
            chunk = [pending.pop(0)]
            chars = len(chunk[0][1])
            while (
                pending
                and len(chunk) < wire.MAX_BATCH
                and pending[0][0] == chunk[-1][0] + 1
                and chars + len(pending[0][1]) <= wire.MAX_BATCH_CHARS
            ):
                chars += len(pending[0][1])
                chunk.append(pending.pop(0))
            seq, text, sent_t = chunk[0]
            msg: wire.Public | wire.PublicBatch
            if len(chunk) == 1:
                msg = wire.Public(
                    author=self.me.key,
                    handle=self.cfg.handle,
                    room=self.cfg.room,
                    seq=seq,
                    text=text,
                    sent_t=sent_t,
                )
            else:
                msg = wire.PublicBatch(
                    author=self.me.key,
                    handle=self.cfg.handle,
                    room=self.cfg.room,
                    seq=seq,
                    texts=tuple(t for _, t, _ in chunk),
                    sent_t=sent_t,
                )
            sig = self.me.sign(wire.signed_bytes(msg))
            self.outbox.add(seq, wire.encode(msg, sig), now)
            self.recent_relays.append((msg, sig))

    # ================================================================ roster & peers

    def _on_roster(self, roster: wire.Roster) -> None:
        link = self.link
        if link is None or roster.broker_key != link.target.key:
            return
        if roster.version <= self.roster_version and link.welcome is not None:
            return
        peers = [e for e in roster.peers if self._entry_ok(e)]
        self.roster = peers
        for e in peers:
            self._identity_of_curve[e.curve_key] = e.id_key
            # In a live broker's roster, so alive: a node that once failed us (a broker we
            # could not reach in a start-up storm) must count again in the succession, or
            # we would pick another successor than the rest of the room.
            self.gone.discard(e.id_key)
        self.roster_version = roster.version
        now_online = {e.id_key: e for e in peers if e.id_key != self.me.key}
        arrived = [key for key in now_online if key not in self.online]
        pins = self.profile.state.pins_by_handle() if arrived else {}
        to_pin: list[tuple[str, str]] = []
        for key, entry in now_online.items():
            if key not in self.online:
                self._peer_up(entry, pins, to_pin)
            elif self.online[key].status != entry.status:
                state, _, text = entry.status.partition(":")
                self._emit("peer_status", handle=entry.handle, status=state, text=safe_label(text))
        for key, entry in list(self.online.items()):
            if key not in now_online:
                self._emit("peer_down", handle=entry.handle)
        self.online = now_online
        if to_pin:
            self.profile.state.set_pins(to_pin, self.wall())
        for key in arrived:
            self._flush_private(key)  # what we queued for them while they were away

    def _entry_ok(self, entry: wire.PeerEntry) -> bool:
        ok = self.hello_ok.get(entry.hello_sig)
        if ok is None:
            ok = entry.room == self.cfg.room and ident.verify(
                entry.id_key, wire.signed_bytes(wire.hello_of(entry)), entry.hello_sig
            )
            if len(self.hello_ok) > 10_000:
                self.hello_ok.clear()
            self.hello_ok[entry.hello_sig] = ok
        if not ok:
            self._count("roster_bad_entry")
        return ok

    def _peer_up(
        self, entry: wire.PeerEntry, pins: dict[str, Pin], to_pin: list[tuple[str, str]]
    ) -> None:
        """A newcomer in the roster; ``pins`` by handle, as the store has them, and
        ``to_pin``, the pins the roster adds: written at once when it is done."""
        key_hex = entry.id_key.hex()
        pin = pins.get(entry.handle.casefold())
        if pin is not None and pin.key != key_hex:
            self._emit(
                "warning",
                code="key_changed",
                handle=entry.handle,
                message=(
                    f"{entry.handle!r} is now using a different key "
                    f"({ident.fingerprint(entry.id_key)}, pinned "
                    f"{ident.fingerprint(bytes.fromhex(pin.key))}). "
                    "It may be someone else: private messages to this handle are held back."
                ),
            )
        elif pin is None:
            now = self.wall()
            pins[entry.handle.casefold()] = Pin(entry.handle, key_hex, now, now)
            to_pin.append((entry.handle, key_hex))
        presence, _, text = entry.status.partition(":")
        self._emit(
            "peer_up",
            handle=entry.handle,
            mentor=entry.mentor,
            status=presence,
            status_text=safe_label(text),
        )

    def _display_handle(self, key: bytes, claimed: str) -> str:
        entry = self.online.get(key)
        if entry is not None:
            return entry.handle
        pin = self.profile.state.pin_for_key(key.hex())
        return pin.handle if pin is not None else safe_label(claimed)

    def who(self) -> list[dict[str, Any]]:
        out = []
        for entry in sorted(
            self.online.values(), key=lambda e: (not e.mentor, handle_key(e.handle))
        ):
            state = self.profile.state.friendship(entry.id_key.hex())
            out.append(
                {
                    "handle": entry.handle,
                    "mentor": entry.mentor,
                    "friend": state == fs.Friendship.FRIEND,
                    "state": state,
                    "status": entry.status.partition(":")[0],
                    "status_text": safe_label(entry.status.partition(":")[2]),
                    "fingerprint": ident.fingerprint(entry.id_key),
                }
            )
        return out

    # ================================================================ private chat

    def _check_other_handle(self, handle: str) -> None:
        """A command's handle argument: a valid handle, and not our own."""
        try:
            validate_handle(handle)
        except HandleError as exc:
            raise CommandError("bad_command", str(exc)) from None
        if handle_key(handle) == handle_key(self.cfg.handle):
            raise CommandError("bad_command", "that is your own handle")

    def _online_key(self, handle: str) -> bytes | None:
        """The key that `handle` is online with now, if it is."""
        wanted = handle_key(handle)
        return next(
            (e.id_key for e in self.online.values() if handle_key(e.handle) == wanted), None
        )

    def _key_for_handle(self, handle: str) -> bytes:
        """The identity key a handle stands for: the pinned one (trust on first use)."""
        self._check_other_handle(handle)
        pin = self.profile.state.pin_for_handle(handle)
        if pin is not None:
            return bytes.fromhex(pin.key)
        key = self._online_key(handle)
        if key is None:
            raise CommandError(
                "unknown_handle", f"nobody called {handle!r} has been seen on this network"
            )
        return key

    def _friendship(self, key: bytes) -> fs.Friendship:
        # Read on every incoming message: served from memory (the profile lock makes this
        # process the file's only writer, so the cache cannot go stale).
        if self._friends is None:
            self._friends = {
                bytes.fromhex(k): fs.Friendship(state)
                for k, (_handle, state) in self.profile.state.friendships().items()
            }
        return self._friends.get(key, fs.Friendship.NONE)

    def _blocked(self, key: bytes) -> bool:
        return fs.is_silenced(self._friendship(key))

    def _set_friendship(self, key: bytes, handle: str, state: fs.Friendship) -> None:
        self.profile.state.set_friendship(key.hex(), handle, state.value)
        if self._friends is not None:
            self._friends[key] = state

    def _handle_of(self, key: bytes) -> str:
        entry = self.online.get(key)
        if entry is not None:
            return entry.handle
        pin = self.profile.state.pin_for_key(key.hex())
        if pin is not None:
            return pin.handle
        friends = self.profile.state.friendships()
        return friends.get(key.hex(), ("?", ""))[0]

    def friend_move(self, handle: str, move: fs.Move) -> None:
        key = self._key_for_handle(handle)
        name = self._handle_of(key) if self._handle_of(key) != "?" else handle
        if move is fs.Move.REQUEST:
            self._limit_requests(key, name)
        try:
            outcome = fs.apply(self._friendship(key), move)
        except fs.IllegalTransition as exc:
            raise CommandError("bad_command", f"{name}: {exc}") from None
        self._set_friendship(key, name, outcome.state)
        if outcome.send is not None:
            self._queue_private(key, outcome.send.value, "")
        if outcome.state == fs.Friendship.FRIEND and move in (fs.Move.ACCEPT, fs.Move.REQUEST):
            self._emit("accepted", by=self.cfg.handle, **{"with": name})

    def trust_new_key(self, handle: str, fingerprint: str) -> None:
        """Pin the key a handle uses now in place of the pinned one (a reinstall, a new
        laptop), once the user has compared its fingerprint with its owner out of band.

        The friendship of the old key is not carried over: the new key starts as a
        stranger, so a chat request is needed again. What was queued for the old key stays
        sealed to it and is never sent to the new one.
        """
        self._check_other_handle(handle)
        state = self.profile.state
        pin = state.pin_for_handle(handle)
        now_key = self._online_key(handle)
        if now_key is None:
            raise CommandError("unknown_handle", f"{handle!r} is not online: nothing to trust")
        if pin is None or pin.key == now_key.hex():
            raise CommandError("bad_command", f"{handle!r} already uses the key you trust")
        wanted = ident.fingerprint(now_key)
        if fingerprint.strip().casefold() != wanted.casefold():
            raise CommandError(
                "fingerprint_mismatch",
                f"that is not the fingerprint of {handle!r}'s new key; compare it with them "
                "in person (they see theirs in their status bar)",
            )
        for old in [p for p in state.pins() if handle_key(p.handle) == handle_key(handle)]:
            state.remove_pin(old.key)
        state.set_pin(handle, now_key.hex(), self.wall())
        self._emit("trusted", handle=handle, fingerprint=wanted)

    def _limit_requests(self, key: bytes, name: str) -> None:
        """A pending request is re-sent at most every REQUEST_GAP_S; REQUESTS_PER_MIN in all."""
        now = self.clock()
        recent = [t for t in self._request_times if now - t < 60.0]
        self._request_times = recent
        last = self._last_request.get(key)
        pending = self._friendship(key) is fs.Friendship.PENDING_OUT
        if pending and last is not None and now - last < REQUEST_GAP_S:
            raise CommandError(
                "rate_limited", f"you asked {name} {now - last:.0f} s ago; wait a little"
            )
        if len(recent) >= REQUESTS_PER_MIN:
            raise CommandError("rate_limited", "too many chat requests; wait a minute")
        self._last_request[key] = now
        self._request_times.append(now)

    def send_private(self, handle: str, text: str) -> str:
        session = self._help_session_for(handle)
        if session is not None:
            return self._send_help(session[0], session[1], session[2], check_text(text))
        key = self._key_for_handle(handle)
        text = check_text(text)
        if not fs.can_message(self._friendship(key)):
            raise CommandError(
                "not_friends", f"you and {handle} are not friends: send a request first"
            )
        return self._queue_private(key, "text", text)

    def _queue_private(self, key: bytes, item: str, text: str) -> str:
        hist = self.profile.history
        counter = f"out:{key.hex()}"
        cseq = hist.max_seq(counter) + 1
        hist.set_seq(counter, cseq)
        sent_t = round(self.wall(), 3)
        payload = wire.encode_inner(
            wire.Private(
                item=item, cseq=cseq, base=0, handle=self.cfg.handle, text=text, sent_t=sent_t
            )
        )
        hist.outbox_add(
            OutboxItem(peer_key=key.hex(), cseq=cseq, payload=payload, created_t=sent_t)
        )
        msg_id = self._private_id(self.me.key, key, cseq)
        if item == "text":
            self._store_outgoing(msg_id, _conv(key), text, sent_t)
        self._flush_private(key)
        return msg_id

    def _flush_private(self, key: bytes) -> None:
        """Send everything queued for ``key`` (in order) if it is online now."""
        if key not in self.online or self.link is None or self.link.welcome is None:
            return
        entry = self.online[key]
        held = self.profile.state.pin_for_handle(entry.handle)
        if held is not None and held.key != key.hex():
            return  # impersonation suspected: hold everything back
        items = self.profile.history.outbox_for(key.hex())
        if not items:
            return
        base = items[0].cseq
        for item in items:
            inner = wire.decode_inner(item.payload)
            assert isinstance(inner, wire.Private)
            self._send_direct(key, wire.encode_inner(replace(inner, base=base)))

    def _flush_private_all(self) -> None:
        for peer in self.profile.history.outbox_peers():
            self._flush_private(bytes.fromhex(peer))

    def _send_direct(self, key: bytes, plaintext: bytes) -> None:
        box = self.me.seal_to(key, plaintext)
        direct = wire.Direct(sender=self.me.key, recipient=key, box=box)
        self._send_to_broker(wire.encode(direct, self.me.sign(wire.signed_bytes(direct))))

    def _on_direct(self, msg: wire.Direct, sig: bytes) -> None:
        if msg.recipient != self.me.key:
            self._count("direct_not_for_me")
            return
        if not ident.verify(msg.sender, wire.signed_bytes(msg), sig):
            self._count("bad_signature")
            return
        try:
            inner = wire.decode_inner(self.me.open_from(msg.sender, msg.box))
        except (ident.CryptoError, wire.DecodeError):
            self._count("bad_box")
            return
        if isinstance(inner, wire.PrivateAck):
            self._on_private_ack(msg.sender, inner.upto)
            return
        if isinstance(inner, wire.Signal):
            self._on_signal(msg.sender, inner)
            return
        chan = self.inbound.get(msg.sender)
        if chan is None:
            upto = self.profile.history.max_seq(f"in:{msg.sender.hex()}")
            chan = self.inbound[msg.sender] = InboundChannel(delivered_upto=upto)
        for ready in chan.receive(inner.cseq, inner.base, inner):
            assert isinstance(ready, wire.Private)
            self._deliver_private(msg.sender, ready)
        self.profile.history.set_seq(f"in:{msg.sender.hex()}", chan.delivered_upto)
        ack = wire.encode_inner(wire.PrivateAck(upto=chan.delivered_upto))
        self._send_direct(msg.sender, ack)

    def _deliver_private(self, sender: bytes, item: wire.Private) -> None:
        handle = self._handle_of(sender)
        if handle == "?":
            handle = safe_label(item.handle)
        state = self._friendship(sender)
        if item.item == "text":
            if not fs.can_message(state):
                self._count("private_from_non_friend")
                if state is fs.Friendship.NONE:
                    # They still think we are friends (we unblocked or lost state): tell
                    # them, so their state follows and they can ask again.
                    self._queue_private(sender, fs.Notice.REJECT.value, "")
                return
            msg_id = self._private_id(sender, self.me.key, item.cseq)
            shown = self._show_private(msg_id, _conv(sender), handle, sender.hex(), item)
            if shown and self.cfg.auto_read:
                self._send_signal(sender, "read", item.cseq)
            return
        if item.item == "file":
            if not fs.can_message(state):
                self._count("private_from_non_friend")
                return
            self._on_offer(sender, handle, item.text, shared=False)
            return
        move = fs.arrives_as(fs.Notice(item.item))
        try:
            outcome = fs.apply(state, move)
        except fs.IllegalTransition:
            self._count("friendship_out_of_step")
            return
        if outcome.silenced:
            self._count("blocked")
            return
        self._set_friendship(sender, handle, outcome.state)
        if outcome.send is not None:
            self._queue_private(sender, outcome.send.value, "")
        if move is fs.Move.GOT_REQUEST:
            if outcome.state == fs.Friendship.FRIEND and state != fs.Friendship.FRIEND:
                self._emit("accepted", by=handle)
            elif outcome.state == fs.Friendship.PENDING_IN and state != fs.Friendship.PENDING_IN:
                # A repeated request while one is pending is not news (no request floods).
                self._emit("request", **{"from": handle}, fingerprint=ident.fingerprint(sender))
        elif move is fs.Move.GOT_ACCEPT and state != fs.Friendship.FRIEND:
            self._emit("accepted", by=handle)
        elif move is fs.Move.GOT_REJECT:
            self._emit("rejected", by=handle)

    # ---------------------------------------------------------------- receipts, typing

    def _on_private_ack(self, peer: bytes, upto: int) -> None:
        """The friend's node has everything up to ``upto``: say which messages arrived."""
        hist = self.profile.history
        acked = [i for i in hist.outbox_for(peer.hex()) if i.cseq <= upto]
        if not hist.outbox_remove_upto(peer.hex(), upto):
            return
        to = self._handle_of(peer)
        for item in acked:
            inner = wire.decode_inner(item.payload)
            if isinstance(inner, wire.Private) and inner.item == "text":
                msg_id = self._private_id(self.me.key, peer, item.cseq)
                self._emit("delivered", id=msg_id, to=to, upto=upto)

    def _on_signal(self, peer: bytes, signal: wire.Signal) -> None:
        if not fs.can_message(self._friendship(peer)):
            self._count("signal_from_non_friend")
            return
        who = self._handle_of(peer)
        if signal.what == "typing":
            self._emit("typing", **{"from": who}, active=signal.value > 0)
            return
        counter = f"read:{peer.hex()}"
        before = self.profile.history.max_seq(counter)
        if signal.value <= before:
            return
        self.profile.history.set_seq(counter, signal.value)
        upto = min(signal.value, self.profile.history.max_seq(f"out:{peer.hex()}"))
        for cseq in range(before + 1, upto + 1):
            msg_id = self._private_id(self.me.key, peer, cseq)
            if self.profile.history.has(msg_id):  # a text of ours, not a request/accept
                self._emit("read", id=msg_id, by=who)

    def _private_id(self, sender: bytes, recipient: bytes, cseq: int) -> str:
        return f"{sender.hex()[:16]}>{recipient.hex()[:16]}:{cseq}"

    def _send_signal(self, peer: bytes, what: str, value: int) -> None:
        setting = "receipts" if what == "read" else "typing"
        if not self.profile.state.get_setting(setting, True):
            return  # privacy: this profile does not tell
        if peer in self.online:
            self._send_direct(peer, wire.encode_inner(wire.Signal(what=what, value=value)))

    def mark_read(self, handle: str) -> None:
        """Tell a friend we have seen their messages (the UI calls this when showing them)."""
        key = self._key_for_handle(handle)
        upto = self.profile.history.max_seq(f"in:{key.hex()}")
        if upto:
            self._send_signal(key, "read", upto)

    def typing(self, handle: str, active: bool) -> None:
        key = self._key_for_handle(handle)
        if not fs.can_message(self._friendship(key)):
            raise CommandError("not_friends", f"you and {handle} are not friends")
        self._send_signal(key, "typing", int(active))

    def set_presence(self, state: str, text: str) -> None:
        if state not in PRESENCE_STATES:
            raise CommandError("bad_command", f"status is one of {', '.join(PRESENCE_STATES)}")
        self.presence = state if not text else f"{state}:{safe_label(text)[:48]}"
        self._auto_away = False
        self._last_heartbeat = 0.0  # tell the broker at the next tick

    def _show_private(
        self,
        msg_id: str,
        conversation: str,
        who: str,
        sender_key: str,
        item: wire.Private,
        **extra: Any,
    ) -> bool:
        """Store an incoming private text and show it, unless it was seen before."""
        record = HistoryRecord(
            id=msg_id,
            conversation=conversation,
            sender=who,
            sender_key=sender_key,
            text=item.text,
            sent_t=item.sent_t,
            received_t=self.wall(),
            outgoing=False,
        )
        if not self.profile.history.append(record):
            return False
        self._emit(
            "private",
            id=msg_id,
            **{"from": who},
            text=safe_text(item.text),
            sent_t=item.sent_t,
            **extra,
        )
        return True

    def history(self, with_handle: str | None, limit: int) -> list[dict[str, Any]]:
        conv = PUBLIC if with_handle is None else _conv(self._key_for_handle(with_handle))
        return [
            {
                "id": r.id,
                "from": r.sender,
                "text": safe_text(r.text),
                "sent_t": r.sent_t,
                "outgoing": r.outgoing,
            }
            for r in self.profile.history.recent(conv, limit)
        ]

    def friends(self) -> list[dict[str, Any]]:
        out = []
        for key_hex, (handle, state) in sorted(
            self.profile.state.friendships().items(), key=lambda kv: kv[1][0].lower()
        ):
            key = bytes.fromhex(key_hex)
            out.append(
                {
                    "handle": handle,
                    "state": state,
                    "online": key in self.online,
                    "fingerprint": ident.fingerprint(key),
                    "safety_code": ident.safety_code(self.me.key, key),
                }
            )
        return out

    # ================================================================ files

    def _file_service(self) -> FileService:
        """The file server and downloader, bound and serving from the first use on."""
        if self._files is None:
            from lanchat.files import FileService

            files = FileService(
                self.transport.file_context(),
                self.cfg.address,
                self.me.curve_public,
                self.me.curve_secret,
                self.profile.directory / "downloads",
                self._emit_file_event,
                self._may_fetch,
            )
            try:
                files.start()
            except zmq.ZMQError as exc:  # our LAN address cannot take another socket
                raise CommandError(
                    "file_error", f"cannot open the file service on {self.cfg.address}: {exc}"
                ) from exc
            assert self._tg is not None
            self._tg.create_task(files.serve())
            self._files = files
        return self._files

    async def _offer_file(self, path: Path, to: str | None) -> None:
        """``send`` (to a friend) or ``share`` (to the room): hash, register, announce."""
        key = None
        if to is not None:
            key = self._key_for_handle(to)
            if not fs.can_message(self._friendship(key)):
                self._error("not_friends", f"you and {to} are not friends: send a request first")
                return
        from lanchat.files import FileError

        try:
            service = self._file_service()
            offer = await service.prepare_offer(path.expanduser(), shared=key is None)
        except FileError as exc:
            self._error("file_error", str(exc))
            return
        except CommandError as exc:
            self._error(exc.code, str(exc))
            return
        self._offers_out[offer.offer_id] = (offer, key)
        if key is not None:
            self._queue_private(key, "file", offer.to_json())
        else:
            self._say_offer(offer)
        self._emit("file_offered", id=offer.offer_id, name=offer.name, size=offer.size, to=to)

    def _say_offer(self, offer: FileOffer) -> None:
        seq = self.outbox.allocate()
        self.profile.history.set_seq("public", seq)
        msg = wire.Public(
            author=self.me.key,
            handle=self.cfg.handle,
            room=self.cfg.room,
            seq=seq,
            text=f"shares the file {offer.name} ({offer.size:,} bytes)",
            sent_t=round(self.wall(), 3),
            offer=offer.to_json(),
        )
        sig = self.me.sign(wire.signed_bytes(msg))
        self.outbox.add(seq, wire.encode(msg, sig), self.clock())
        self.recent_relays.append((msg, sig))
        self._pump_public()

    def _on_offer(self, sender: bytes, handle: str, text: str, shared: bool) -> None:
        from lanchat.core.files import FileOffer, OfferError

        try:
            offer = FileOffer.from_json(text)
        except OfferError:
            self._count("bad_offer")
            return
        entry = self.online.get(sender)
        # The file must come from the sender's own machine and key: an offer pointing
        # elsewhere would make us fetch from (and hammer) a third party.
        if entry is None or (offer.server_key, offer.address) != (entry.curve_key, entry.address):
            self._count("offer_elsewhere")
            return
        if offer.shared != shared:
            self._count("bad_offer")
            return
        self._offers_in[offer.offer_id] = (offer, sender)
        self._emit(
            "file_offer",
            id=offer.offer_id,
            **{"from": handle},
            name=offer.name,
            size=offer.size,
            sha256=offer.sha256,
            fingerprint=ident.fingerprint(sender),
            shared=shared,
        )

    def accept_file(self, offer_id: str) -> None:
        known = self._offers_in.get(offer_id)
        if known is None:
            raise CommandError("bad_command", f"no file offer {offer_id!r}")
        self._spawn(self._file_service().download(known[0]))

    def decline_file(self, offer_id: str) -> None:
        if self._offers_in.pop(offer_id, None) is None:
            raise CommandError("bad_command", f"no file offer {offer_id!r}")
        self._file_service().decline(offer_id)

    def _may_fetch(self, offer_id: str, curve_key: bytes) -> bool:
        """Whether the peer that authenticated with ``curve_key`` may fetch this offer."""
        known = self._offers_out.get(offer_id)
        if known is None:
            return False
        _offer, to = known
        # By the keys seen in any roster of this session, not only who is online this
        # second: a receiver whose Wi-Fi dropped must be able to resume its download.
        who = self._identity_of_curve.get(curve_key)
        if who is None or self._blocked(who):
            return False
        return to is None or who == to

    def _emit_file_event(self, event: dict[str, Any]) -> None:
        fields = dict(event)
        self._emit(str(fields.pop("ev")), **fields)

    # ================================================================ help queue

    def raise_hand(self, topic: str, anon: bool) -> str:
        topic = check_text(topic) if topic.strip() else ""
        if len(topic) > 200:
            raise CommandError("bad_command", "a topic is at most 200 characters")
        open_hands = [h for h in self.my_hands.values() if h.state != "done"]
        if len(open_hands) >= 3:
            raise CommandError("queue", "you already have 3 hands up; /done one first")
        hand = _MyHand(
            hand_id=secrets.token_hex(8),
            topic=topic,
            anon=anon,
            eph=ident.EphemeralKey(),
            raised_at=round(self.wall(), 3),
        )
        self.my_hands[hand.hand_id] = hand
        self._send_hand(hand)
        self._emit("hand", id=hand.hand_id, state="raised", anon=anon, topic=topic)
        return hand.hand_id

    def _send_hand(self, hand: _MyHand) -> None:
        msg = wire.Hand(
            hand_id=hand.hand_id,
            topic=hand.topic,
            anon=hand.anon,
            eph_key=hand.eph.public,
            raised_at=hand.raised_at,
            claimed_by=hand.mentor_key,
        )
        self._send_to_broker(wire.encode(msg))

    def claim(self, hand_id: object, n: object) -> None:
        if not self.cfg.mentor:
            raise CommandError("queue", "only mentors (lanchat --mentor) can claim hands")
        entries = [
            e
            for e in (self.queue.entries if self.queue else ())
            if not e.claimed_key or e.claimed_key == self.me.key
        ]
        if isinstance(n, int) and not isinstance(n, bool):
            if not 1 <= n <= len(entries):
                raise CommandError("queue", f"there is no hand number {n} in the queue")
            hand_id = entries[n - 1].hand_id
        if not isinstance(hand_id, str):
            raise CommandError("bad_command", "'claim' needs 'id' (a hand id) or 'n' (its number)")
        if not any(e.hand_id == hand_id for e in entries):
            raise CommandError("queue", "no such hand in the queue (claimed by another mentor?)")
        self._send_to_broker(wire.encode(wire.Claim(hand_id=hand_id)))

    def done(self, hand_id: str | None) -> None:
        mine = [h for h in self.my_hands if self.my_hands[h].state != "done"]
        candidates = mine + list(self.my_claims)
        if hand_id is None:
            if len(candidates) != 1:
                raise CommandError("bad_command", "which hand? give its 'id'")
            hand_id = candidates[0]
        if hand_id not in candidates:
            raise CommandError("queue", "that is not one of your hands or claims")
        self._done_asked.add(hand_id)
        self._send_to_broker(wire.encode(wire.HandDone(hand_id=hand_id)))

    def _on_queue(self, msg: wire.Queue) -> None:
        if self.queue is not None and msg.version == self.queue.version and msg == self.queue:
            return
        self.queue = msg
        for entry in msg.entries:
            if entry.claimed_key == self.me.key and entry.hand_id not in self.my_claims:
                self.my_claims[entry.hand_id] = _Claimed(entry=entry)
                self._emit(
                    "claimed",
                    id=entry.hand_id,
                    who=safe_label(entry.label),
                    anon=entry.anon,
                    topic=safe_text(entry.topic),
                )
        live = {e.hand_id for e in msg.entries}
        for hand_id in [h for h in self.my_claims if h not in live]:
            claim = self.my_claims.pop(hand_id)
            self._emit("hand", id=hand_id, state="done", who=safe_label(claim.entry.label))
        self._emit_queue()

    def _emit_queue(self) -> None:
        now = self.wall()
        # A hand another mentor claimed is theirs: it leaves everyone else's queue.
        entries = [
            e
            for e in (self.queue.entries if self.queue else ())
            if not e.claimed_key or e.claimed_key == self.me.key
        ]
        self._emit(
            "queue",
            entries=[
                {
                    "n": i,
                    "id": e.hand_id,
                    "who": safe_label(e.label),
                    "topic": safe_text(e.topic),
                    "anon": e.anon,
                    "waiting_s": round(max(0.0, now - e.raised_at), 1),
                    "claimed_by": safe_label(e.claimed_by),
                }
                for i, e in enumerate(entries, start=1)
            ],
        )

    def _on_hand_status(self, msg: wire.HandStatus) -> None:
        hand = self.my_hands.get(msg.hand_id)
        if hand is None:
            return
        changed = (msg.state, msg.position, msg.mentor) != (hand.state, hand.position, hand.mentor)
        hand.state, hand.position = msg.state, msg.position
        if msg.state == "claimed" and msg.mentor_key and hand.mentor_key != msg.mentor_key:
            hand.mentor, hand.mentor_key = msg.mentor, msg.mentor_key
            hand.session = _HelpSession(box=hand.eph.session_with_identity(msg.mentor_key))
        if changed:
            self._emit(
                "hand",
                id=hand.hand_id,
                state=msg.state,
                position=msg.position,
                mentor=safe_label(hand.mentor),
            )
        if msg.state == "done":
            del self.my_hands[msg.hand_id]

    def _help_session_for(self, label: str) -> tuple[str, _HelpSession, bool] | None:
        """(hand id, session, to_mentor) if ``label`` names our help-session partner."""
        wanted = label.casefold()
        for hand in self.my_hands.values():
            if hand.state == "claimed" and hand.mentor.casefold() == wanted:
                return hand.hand_id, hand.session, True
        for hand_id, claim in self.my_claims.items():
            if claim.entry.label.casefold() == wanted:
                if claim.session.box is None:
                    claim.session.box = ident.session_with_ephemeral(self.me, claim.entry.eph_key)
                return hand_id, claim.session, False
        return None

    def _send_help(self, hand_id: str, session: _HelpSession, to_mentor: bool, text: str) -> str:
        cseq = session.next_cseq
        session.next_cseq += 1
        label = self.cfg.handle
        if to_mentor:
            hand = self.my_hands[hand_id]
            label = "" if hand.anon else self.cfg.handle
        item = wire.Private(
            item="text", cseq=cseq, base=0, handle=label, text=text, sent_t=round(self.wall(), 3)
        )
        session.unacked[cseq] = wire.encode_inner(item)
        self._flush_help(hand_id, session, to_mentor)
        msg_id = f"hand:{hand_id}:{'s' if to_mentor else 'm'}:{cseq}"
        self._store_outgoing(msg_id, f"hand:{hand_id}", text, item.sent_t)
        return msg_id

    def _flush_help(self, hand_id: str, session: _HelpSession, to_mentor: bool) -> None:
        if session.box is None or not session.unacked:
            return
        base = min(session.unacked)
        for cseq in sorted(session.unacked):
            inner = wire.decode_inner(session.unacked[cseq])
            assert isinstance(inner, wire.Private)
            payload = wire.encode_inner(replace(inner, base=base))
            frames = wire.encode(
                wire.HelpMsg(hand_id=hand_id, to_mentor=to_mentor, box=session.box.seal(payload))
            )
            self._send_to_broker(frames)

    def _flush_help_all(self) -> None:
        for hand in self.my_hands.values():
            self._flush_help(hand.hand_id, hand.session, True)
        for hand_id, claim in self.my_claims.items():
            self._flush_help(hand_id, claim.session, False)

    def _on_help_msg(self, msg: wire.HelpMsg) -> None:
        if msg.to_mentor:
            claim = self.my_claims.get(msg.hand_id)
            if claim is None:
                self._count("help_unknown")
                return
            if claim.session.box is None:
                claim.session.box = ident.session_with_ephemeral(self.me, claim.entry.eph_key)
            session, who, reply_to_mentor = claim.session, safe_label(claim.entry.label), False
        else:
            hand = self.my_hands.get(msg.hand_id)
            if hand is None or hand.session.box is None:
                self._count("help_unknown")
                return
            session, who, reply_to_mentor = hand.session, safe_label(hand.mentor), True
        assert session.box is not None
        try:
            inner = wire.decode_inner(session.box.open(msg.box))
        except (ident.CryptoError, wire.DecodeError):
            self._count("bad_box")
            return
        if isinstance(inner, wire.PrivateAck):
            for cseq in [c for c in session.unacked if c <= inner.upto]:
                del session.unacked[cseq]
            return
        if isinstance(inner, wire.Signal):
            return  # no typing/read hints in help sessions
        author = "s" if msg.to_mentor else "m"  # the student wrote it, or the mentor
        for ready in session.inbound.receive(inner.cseq, inner.base, inner):
            assert isinstance(ready, wire.Private)
            msg_id = f"hand:{msg.hand_id}:{author}:{ready.cseq}"
            conversation = f"hand:{msg.hand_id}"
            self._show_private(msg_id, conversation, who, "", ready, hand=msg.hand_id)
        ack = wire.encode_inner(wire.PrivateAck(upto=session.inbound.delivered_upto))
        self._send_to_broker(
            wire.encode(
                wire.HelpMsg(
                    hand_id=msg.hand_id, to_mentor=reply_to_mentor, box=session.box.seal(ack)
                )
            )
        )

    # ================================================================ loops

    async def _tick_loop(self) -> None:
        while True:
            self._tick_now()
            await asyncio.sleep(TICK_S)

    def _tick_at(self, when: float) -> None:
        """Run a tick at `when` (our clock) too: a decision due between two regular ticks
        (an election wait, a coalesced roster) is taken on time, not up to TICK_S late."""
        if self._wake is not None and self._wake_at <= when:
            return
        if self._wake is not None:
            self._wake.cancel()
        self._wake_at = when
        delay = max(0.0, when - self.clock()) + 0.001  # never just before it is due
        self._wake = asyncio.get_running_loop().call_later(
            delay, functools.partial(self._tick_now, scheduled=True)
        )

    def _tick_now(self, *, scheduled: bool = False) -> None:
        if scheduled:
            self._wake, self._wake_at = None, float("inf")
        try:
            self._tick(self.clock())
        except Exception:  # one bug in a tick must not end the node (and the room's relay)
            self._count("handler_error")
            log.exception("error in a tick")

    def _tick(self, now: float) -> None:
        # A laptop lid, SIGSTOP or a starved CPU: we did not run for a while. Whatever is
        # queued in our sockets is still to be read; no timeout may fire on our account.
        asleep = now - self._last_tick > ASLEEP_S
        self._last_tick = now
        if asleep:
            self._woke_at = now
        self._check_link(now)
        if self.relay is not None:
            for eff in self.relay.tick(now):
                self._apply(eff)
            lost_lately = now - self._lost_room_at < LOST_FAST_FOR_S
            alone = self.relay.client_count() <= 1
            every = LOST_REANNOUNCE_S if lost_lately and alone else REANNOUNCE_S
            if now - self._last_reannounce >= every:
                self._last_reannounce = now
                self._spawn(self._reannounce())
            self._maybe_hand_over()
        link = self.link
        if link is None:
            if self.cfg.connect is None or self.roster:
                self._choose_target(now)
            return
        if link.welcome is None:
            # A broker whose host took our connection but is silent is there, only busy
            # (a room of newcomers at once, all on a slow CPU; the CURVE handshake waits
            # for its Python to authenticate us): leaving it for the next candidate would
            # split the room, so it gets longer than one that never answered. A node
            # that answers "not the broker" is not busy: it gets the usual time.
            busy = link.reached and link.refused_not_broker == 0
            patience = WELCOME_WAIT_S if busy else CONNECT_TIMEOUT_S
            if now - link.started > patience:
                self._broker_lost("no answer")
            return
        if asleep:
            link.last_beat = now  # we were not running: the broker is not to blame
        # With the connection up, ZMTP heartbeats (answered by the broker's libzmq thread,
        # not by its Python) say its host is there: it is only starved of CPU, and a host
        # that vanished drops the connection (a disconnect) within transport.HEARTBEAT_TIMEOUT_MS.
        silence = BROKER_HUNG_S if link.reached else BROKER_TIMEOUT_S
        if now - link.last_beat > silence:
            self._broker_lost("heartbeat timeout")
            return
        if (
            self.presence == "online"
            and now - self._last_activity > AUTO_AWAY_S
            and not self._auto_away
        ):
            self.presence, self._auto_away = "away:idle", True
            self._last_heartbeat = 0.0
        if now - self._last_heartbeat >= HEARTBEAT_S:
            self._last_heartbeat = now
            self._send_to_broker(
                wire.encode(wire.Heartbeat(t=round(self.wall(), 3), status=self.presence))
            )
        self.outbox.overdue(now)
        self._pump_public()
        self.outbox.expire(now)
        if now - self._last_private_resend >= PRIVATE_RESEND_S:
            self._last_private_resend = now
            self._flush_private_all()
            self._flush_help_all()
        self._check_merge()

    async def _reannounce(self) -> None:
        with contextlib.suppress(Exception):
            await self.discovery.reannounce()

    async def _connect_direct(self) -> None:
        """``--connect HOST[:PORT]``: ask that node which broker it uses, and go there."""
        assert self.cfg.connect is not None
        host, port = self.cfg.connect
        while not self._stop.is_set():
            if self.link is not None and self.link.welcome is not None:
                await asyncio.sleep(1.0)
                continue
            if self.roster:
                await asyncio.sleep(0.5)
                if self.link is not None:
                    continue
            try:
                info = await self.transport.ask_info(host, port, timeout_s=2.0)
                broker = info.get("broker") or {
                    "key": info["key"],
                    "curve": info["curve"],
                    "address": info["address"],
                    "router_port": info["router_port"],
                }
                if info.get("room") != self.cfg.room:
                    self._error(
                        "wrong_room",
                        f"{host} is in room {info.get('room')!r}, not {self.cfg.room!r}",
                    )
                target = _Target(
                    key=bytes.fromhex(broker["key"]),
                    curve_key=bytes.fromhex(broker["curve"]),
                    address=str(broker["address"]),
                    router_port=int(broker["router_port"]),
                )
                if self.link is None or self.link.welcome is None:
                    self._open_link(target, self.clock())
            except (TimeoutError, KeyError, ValueError, TypeError):
                self._set_status("connecting", f"no answer from {host}:{port}; retrying")
            await asyncio.sleep(2.0)

    async def _command_loop(self, commands: asyncio.Queue[dict[str, Any] | None]) -> None:
        while True:
            cmd = await commands.get()
            # Take the whole burst that is already waiting (a bot pasting 100 lines): its
            # public messages go out packed, with one signature.
            burst = [cmd]
            while len(burst) < 512 and not commands.empty():
                burst.append(commands.get_nowait())
            with self.profile.history.batch():
                for one in burst:
                    if one is None:
                        self.stop()
                        return
                    try:
                        self.execute(one)
                    except CommandError as exc:
                        self._error(exc.code, str(exc))
                    except (TextError, HandleError) as exc:
                        self._error("bad_command", str(exc))

    def _set_privacy(self, cmd: dict[str, Any]) -> None:
        changed = {k: v for k, v in cmd.items() if k in ("receipts", "typing")}
        if not changed or len(changed) != len(cmd) - 1:
            raise CommandError("bad_command", "'set' takes 'receipts' and/or 'typing' (true/false)")
        for key, value in changed.items():
            if not isinstance(value, bool):
                raise CommandError("bad_command", f"'{key}' must be true or false")
            self.profile.state.set_setting(key, value)
        state = self.profile.state
        self._emit(
            "settings",
            receipts=state.get_setting("receipts", True),
            typing=state.get_setting("typing", True),
        )

    def execute(self, cmd: dict[str, Any]) -> str | None:
        """Run one command; returns the id of what it created (say, msg, hand), if any."""
        name = cmd.get("cmd")
        if name not in BACKGROUND_COMMANDS:  # a front end's own queries are not activity
            self._last_activity = self.clock()
            if self._auto_away:
                self.presence, self._auto_away = "online", False
                self._last_heartbeat = 0.0

        def arg(key: str) -> str:
            value = cmd.get(key)
            if not isinstance(value, str):
                raise CommandError("bad_command", f"{name!r} needs {key!r} (a string)")
            return value

        if name == "say":
            return self.say(arg("text"))
        if name == "msg":
            return self.send_private(arg("to"), arg("text"))
        if name == "hand":
            topic = cmd.get("topic", "")
            anon = cmd.get("anon", False)
            if not isinstance(topic, str) or not isinstance(anon, bool):
                raise CommandError("bad_command", "'hand' takes 'topic' (string) and 'anon' (bool)")
            return self.raise_hand(topic, anon)
        if name == "request":
            self.friend_move(arg("to"), fs.Move.REQUEST)
        elif name == "accept":
            self.friend_move(arg("from"), fs.Move.ACCEPT)
        elif name == "reject":
            self.friend_move(arg("from"), fs.Move.REJECT)
        elif name == "block":
            self.friend_move(arg("handle"), fs.Move.BLOCK)
        elif name == "unblock":
            self.friend_move(arg("handle"), fs.Move.UNBLOCK)
        elif name == "trust":
            self.trust_new_key(arg("handle"), arg("fingerprint"))
        elif name == "who":
            self._emit("who", peers=self.who())
        elif name == "friends":
            self._emit("friends", friends=self.friends())
        elif name == "history":
            with_handle = cmd.get("with")
            limit = cmd.get("limit", 50)
            if with_handle is not None and not isinstance(with_handle, str):
                raise CommandError("bad_command", "'with' must be a handle or null")
            if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 10_000:
                raise CommandError("bad_command", "'limit' must be an integer from 1 to 10000")
            self._emit(
                "history", **{"with": with_handle}, messages=self.history(with_handle, limit)
            )
        elif name == "claim":
            self.claim(cmd.get("id"), cmd.get("n"))
        elif name == "done":
            hand_id = cmd.get("id")
            if hand_id is not None and not isinstance(hand_id, str):
                raise CommandError("bad_command", "'id' must be a hand id")
            self.done(hand_id)
        elif name == "queue":
            self._emit_queue()
        elif name == "send":
            self._spawn(self._offer_file(Path(arg("path")), arg("to")))
        elif name == "share":
            self._spawn(self._offer_file(Path(arg("path")), None))
        elif name == "accept_file":
            self.accept_file(arg("id"))
        elif name == "decline_file":
            self.decline_file(arg("id"))
        elif name == "typing":
            active = cmd.get("active", True)
            if not isinstance(active, bool):
                raise CommandError("bad_command", "'active' must be true or false")
            self.typing(arg("to"), active)
        elif name == "read":
            self.mark_read(arg("with"))
        elif name == "set":
            self._set_privacy(cmd)
        elif name == "status" and "set" in cmd:
            text = cmd.get("text", "")
            if not isinstance(text, str):
                raise CommandError("bad_command", "'text' must be a string")
            self.set_presence(arg("set"), text)
            self._emit("status", state=self.status, text=self._status_text, presence=self.presence)
        elif name == "status":
            counters = dict(self.counters)
            if self.relay is not None:  # what the broker dropped, counted the same way
                for name, count in self.relay.counters.items():
                    counters[name] = counters.get(name, 0) + count
            self._emit(
                "status",
                state=self.status,
                text=self._status_text,
                online=len(self.online),
                counters=counters,
            )
        elif name == "quit":
            self.stop()
        else:
            raise CommandError("bad_command", f"unknown command {name!r}")
        return None

    # ================================================================ helpers

    _status_text = ""

    def _set_status(self, state: str, text: str) -> None:
        if self._offline and state != "offline":
            self._after_offline = (state, text)  # told when the network is back
            return
        if state == self.status and text == self._status_text:
            return
        self.status = state
        self._status_text = text
        self._emit("status", state=state, text=text)

    def _check_link(self, now: float) -> None:
        """Say plainly when our network interface goes down, and when it is back."""
        if self._iface is None or now - self._last_link_check < LINK_CHECK_S:
            return
        self._last_link_check = now
        state = netif.link_state(self._iface)
        down = state is not None and state not in ("up", "unknown")
        if down and not self._offline:
            self._lost_room_at = now
            self._after_offline = (self.status, self._status_text)
            self._set_status(
                "offline", f"the network is down ({self._iface} is {state}); waiting for it"
            )
            self._offline = True
        elif not down and self._offline:
            self._offline = False
            state_now, text = self._after_offline
            self._set_status("electing", "the network is back; finding the broker")
            if state_now in ("connected", "broker"):
                self._set_status(state_now, text)
            # Nobody we lost while our own link was down is to blame: try them again (a
            # cached advert is enough to find the broker), and tell the room we are back.
            self.gone.clear()
            self._lost_room_at = now
            self._last_reannounce = now
            self._spawn(self._reannounce())
            with contextlib.suppress(Exception):  # best effort, like every announcement
                self.discovery.ask_everyone()
            if self.link is not None and self.link.welcome is None:
                # A connection attempt made while cut off (to a successor from the old
                # roster, most likely) would only time out: choose again with what we
                # know now, the room's broker first.
                self._drop_link()
                self._choose_target(now)
            elif self.relay is not None:
                self._check_merge()

    def _emit(self, ev: str, /, **fields: Any) -> None:
        self._emit_raw({"ev": ev, "t": round(self.wall(), 6), **fields})

    def _error(self, code: str, message: str) -> None:
        self._emit("error", code=code, message=message)

    def _count(self, reason: str) -> None:
        self.counters[reason] = self.counters.get(reason, 0) + 1

    def _fatal(self, exc: NodeExit) -> None:
        self._exit = exc
        self._stop.set()

    def _spawn(self, coro: Any) -> asyncio.Task[Any] | None:
        guarded = _guard(coro)
        if self._tg is None or self._stop.is_set():
            guarded.close()
            coro.close()
            return None
        try:
            return self._tg.create_task(guarded)
        except RuntimeError:  # the task group is already shutting down
            guarded.close()
            coro.close()
            return None


class CommandError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class _Stopped(Exception):
    pass


async def _guard(coro: Any) -> None:
    """Run a background step; a failed send must not bring the node down."""
    try:
        await coro
    except asyncio.CancelledError:
        raise
    except zmq.ZMQError as exc:
        log.debug("socket error: %s", exc)
    except Exception:
        log.exception("background task failed")


def safe_text(text: str) -> str:
    return clean_text(text)


def _claim(adv: Advert) -> election.BrokerClaim:
    return election.BrokerClaim(
        key=adv.id_key, mentor=adv.mentor, since=adv.broker_since, epoch=adv.broker_epoch
    )


def _candidate_of_advert(adv: Advert) -> election.Candidate:
    return election.Candidate(adv.id_key, adv.mentor, adv.priority, adv.started_at)


def _target_of_advert(adv: Advert) -> _Target:
    return _Target(adv.id_key, adv.curve_key, adv.address, adv.router_port, adv.handle)


def _target_of_redirect(msg: wire.Redirect, handle: str = "") -> _Target:
    return _Target(msg.broker_key, msg.curve_key, msg.address, msg.router_port, handle)


def _target_of_entry(entry: wire.PeerEntry) -> _Target:
    return _Target(entry.id_key, entry.curve_key, entry.address, entry.router_port, entry.handle)
