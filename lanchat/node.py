"""The composition root: builds the parts of a node, owns its tasks, its tick and its
command queue, and routes what arrives to the part that owns it.

Inputs arrive from three sides - discovery (zeroconf), the sockets (ZeroMQ) and the user
(commands from a front end). Each part of ``lanchat.room`` owns one concern and its state;
the rules live in the pure core (``lanchat.core``). Effects leave as socket sends, store
writes and *events*: dicts in the vocabulary of the headless JSON-lines contract
(docs/headless.md), which every front end consumes. docs/architecture.md draws the parts.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import gc
import logging
import time
from collections import Counter
from typing import TYPE_CHECKING, Any, Final

import zmq

from lanchat import identity as ident
from lanchat.beacon import LanDiscovery
from lanchat.core import wire
from lanchat.core.handles import HandleError, handle_key
from lanchat.core.membership import Phase
from lanchat.core.text import TextError
from lanchat.discovery import HandleTaken
from lanchat.room.commands import Commands
from lanchat.room.context import CommandError, NodeConfig, NodeExit, RoomContext
from lanchat.room.direct import connect_direct
from lanchat.room.friends import Friendships
from lanchat.room.helpdesk import Helpdesk
from lanchat.room.hosting import Hosting
from lanchat.room.installing import InstallService
from lanchat.room.membership import HELD_HANDLE_SETTING, Membership
from lanchat.room.offers import Offers
from lanchat.room.peers import Peers
from lanchat.room.private import PrivateChat
from lanchat.room.public import PublicRoom
from lanchat.room.status import NodeStatus, Presence
from lanchat.room.trust import Trust
from lanchat.transport import Transport

if TYPE_CHECKING:
    from collections.abc import Callable

    from lanchat.core.advert import Advert
    from lanchat.discovery import DiscoveryEvent
    from lanchat.ports import RoomDiscovery, RoomTransport
    from lanchat.room.link import Link
    from lanchat.store import Profile

__all__ = ["CommandError", "Node", "NodeConfig", "NodeExit"]

log = logging.getLogger("lanchat.node")

TICK_S: Final = 0.1
# Listening for a node that already holds our handle before we announce it. Everyone
# answers our start-up query at once (discovery.ask_everyone), so on a wired LAN the holder
# is heard within milliseconds; the margin is for Wi-Fi, where multicast waits for the next
# beacon. A holder heard too late still wins: see HandleClash, and the broker refuses a
# second Hello for a handle.
HANDLE_CHECK_S: Final = 0.15
PRIVATE_RESEND_S: Final = 2.0  # unacknowledged private and help-session items go again
COMMAND_BURST_MAX: Final = 512  # commands taken at once (their public texts go packed)
GOODBYE_GRACE_S: Final = 0.05  # for the goodbye to leave the socket before it is closed
CLOSE_TIMEOUT_S: Final = 2.0
TICK_LATE_S: Final = 0.001  # a scheduled tick runs just after its time, never just before
STORAGE_RETRY_S: Final = 1.0  # writes the disk refused are tried again this often


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
        discovery: Callable[[str, Callable[[DiscoveryEvent], None]], RoomDiscovery] | None = None,
    ) -> None:
        """``transport`` and ``discovery`` (a factory: address, on_event) are the real
        ZeroMQ and zeroconf (plus broadcast beacon) adapters unless a caller passes their
        in-memory twins."""
        self.profile = profile
        self.me = identity
        self.clock = clock
        self.wall = wall
        self.transport: RoomTransport = transport or Transport(
            config.address, identity.curve_public, identity.curve_secret
        )
        ctx = self.ctx = RoomContext(config, identity, profile, emit, clock, wall)
        ctx.spawn, ctx.tick_at, ctx.fatal = self._spawn, self._tick_at, self._fatal
        # State (friendships, pins) is written behind, once per tick: a flood of changes
        # must not rewrite the whole file for each (the profile's close writes the rest).
        profile.state.defer_writes()
        self.friends = Friendships(profile.state, wall)
        self.trust = Trust(
            ctx,
            send=self._send_to_broker,
            hello_again=self._hello_again,
            online=self._online_entry,
        )
        self.peers = Peers(ctx, on_arrived=self._on_arrived, trust=self.trust)
        self.presence = Presence(ctx)
        self.status = NodeStatus(ctx, self._network_down, self._network_back)
        self.hosting = Hosting(ctx, self.transport, self._not_broker_answer)
        self.hosting.mentor_check = self.trust.hello_is_mentor
        self.membership = Membership(
            ctx,
            self.transport,
            discovery or _lan_discovery(identity),
            self.hosting,
            self.peers,
            self.status,
            self.presence,
            on_frames=self._on_frames,
            on_joined=self._on_joined,
            trust=self.trust,
        )
        self.discovery = self.membership.discovery
        self.peers.ask_broker = self.membership.send  # a hall's lookups (room/peers.py)
        self.offers = Offers(ctx, self.transport, self.peers, self.friends)
        self.public = PublicRoom(
            ctx,
            self.membership,
            self.hosting,
            self.peers,
            self.friends,
            on_shared_offer=functools.partial(self.offers.on_offer, shared=True),
        )
        self.private = PrivateChat(
            ctx,
            self.membership,
            self.peers,
            self.friends,
            on_file_offer=functools.partial(self.offers.on_offer, shared=False),
        )
        self.offers.private, self.offers.public = self.private, self.public
        self.hosting.top_place = self.public.top_place
        self.hosting.on_reconcile = self.public.on_client_reconcile
        # One error per episode, whichever store the disk refuses first (history, state).
        self._storage_failing = False
        profile.history.on_fault = self._storage_fault
        profile.history.on_recovered = self._storage_recovered
        profile.state.set_fault_handler(self._storage_fault)
        self.helpdesk = Helpdesk(ctx, self.membership, self.private, self.peers)
        self.membership.quiet_queue_refusals = self.helpdesk.settling
        self.install = InstallService(ctx)
        self.commands = Commands(
            ctx,
            status=self.status,
            presence=self.presence,
            peers=self.peers,
            public=self.public,
            private=self.private,
            helpdesk=self.helpdesk,
            offers=self.offers,
            stop=self.stop,
            relay_counters=lambda: self.hosting.relay.counters if self.hosting.relay else {},
            rooms=self._rooms,
            install=self.install,
            move_to_room=self._move_to_room,
            add_mentor=self.trust.add_mentor,
        )
        self._routes: dict[type, Callable[[Link, Any, bytes, float, bool], None]] = {
            wire.Relay: self._on_relay,
            wire.Beat: self._on_beat,
            wire.Roster: lambda link, msg, _s, _n, _p: self._on_roster(link, msg),
            wire.RosterDelta: lambda link, msg, _s, _n, _p: self._on_roster_delta(link, msg),
            wire.Found: lambda _l, msg, _s, _n, _p: self.peers.on_found(msg),
            wire.Ack: lambda _l, msg, _s, now, _p: self.public.on_ack(msg, now),
            wire.Want: lambda _l, msg, _s, _n, _p: self.public.on_want(msg),
            wire.Direct: lambda _l, msg, sig, _n, _p: self.private.on_direct(msg, sig),
            wire.Grant: lambda _l, msg, sig, _n, _p: self.trust.on_grant(
                msg, sig, self.peers.is_mentor(msg.sender)
            ),
            wire.Goodbye: self._on_goodbye,
            wire.Queue: lambda _l, msg, _s, _n, _p: self.helpdesk.on_queue(msg),
            wire.HandStatus: lambda _l, msg, _s, _n, _p: self.helpdesk.on_hand_status(msg),
            wire.HelpMsg: lambda _l, msg, _s, _n, _p: self.helpdesk.on_help_msg(msg),
            wire.Redirect: lambda link, msg, _s, now, _p: self.membership.on_redirect(
                link, msg, now
            ),
        }
        self._adapters = (transport, discovery)  # for the node of the next room, if we move
        # A `room` command: this node leaves (as on quit) and the front end runs the node
        # that moved_to_room() makes, on the same profile, identity and command queue.
        self.next_room: str | None = None
        self._stop = asyncio.Event()
        self._exit: NodeExit | None = None
        self._tg: asyncio.TaskGroup | None = None
        self._last_private_resend = 0.0
        self._wake: asyncio.TimerHandle | None = None
        self._wake_at = float("inf")
        self._last_storage_retry = 0.0

    # ---- what front ends and tests read

    @property
    def cfg(self) -> NodeConfig:
        return self.ctx.cfg

    @cfg.setter
    def cfg(self, config: NodeConfig) -> None:
        self.ctx.cfg = config

    @property
    def counters(self) -> dict[str, int]:
        return self.ctx.counters

    @property
    def link(self) -> Link | None:
        return self.membership.link

    @property
    def online(self) -> dict[bytes, wire.PeerEntry]:
        return self.peers.online

    def execute(self, cmd: dict[str, Any]) -> str | None:
        """Run one command; returns the id of what it created (say, msg, hand), if any."""
        return self.commands.execute(cmd)

    def stop(self) -> None:
        self._stop.set()

    def _move_to_room(self, room: str) -> None:
        self.next_room = room
        self.stop()

    def moved_to_room(self, transport: RoomTransport | None = None) -> Node:
        """The node of the room a ``room`` command asked for (after this one has run):
        the same profile and identity, a fresh start in the other room."""
        assert self.next_room is not None
        _old_transport, discovery = self._adapters
        return Node(
            dataclasses.replace(self.cfg, room=self.next_room),
            self.profile,
            self.me,
            self.ctx.emit_raw,
            self.clock,
            self.wall,
            transport=transport,
            discovery=discovery,
        )

    # ================================================================ life cycle

    async def run(self, commands: asyncio.Queue[dict[str, Any] | None]) -> int:
        """Run until quit; returns the process exit status."""
        try:
            self.transport.start(self.cfg.info_port)
        except zmq.ZMQError as exc:
            self.ctx.error("network", f"cannot open sockets on {self.cfg.address}: {exc}")
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
            self.ctx.error(self._exit.code, str(self._exit))
            return self._exit.status
        return 0

    async def _startup(self, commands: asyncio.Queue[dict[str, Any] | None]) -> None:
        assert self._tg is not None
        ctx, membership = self.ctx, self.membership
        self.status.set(Phase.DISCOVERING, "looking for other lanchat users on the network")
        await self.discovery.start()
        conflict = await self.discovery.find_conflict(
            self.cfg.handle, self.me.key, wait_s=HANDLE_CHECK_S
        )
        held = ctx.profile.state.get_setting(HELD_HANDLE_SETTING) == handle_key(self.cfg.handle)
        if conflict is not None and not held:
            raise self._handle_taken(conflict)
        if conflict is not None:
            # Our profile has held this handle in the room before: an advert (one forgeable
            # packet) does not take it away. The broker's roster decides.
            ctx.emit(
                "warning",
                code="handle_claimed",
                handle=self.cfg.handle,
                message=(
                    f"another node ({conflict.address}, key "
                    f"{ident.fingerprint(conflict.id_key)}) announces your handle "
                    f"{self.cfg.handle!r}; you keep it unless the broker already holds it "
                    "for someone else"
                ),
            )
        try:
            await membership.register(force=held)
        except HandleTaken as exc:
            # Its holder announced itself between our check and our announcement.
            raise self._handle_taken(exc.holder) from exc
        ctx.emit(
            "ready",
            handle=self.cfg.handle,
            fingerprint=self.me.fingerprint,
            connect=membership.advertising.connect_address(),
        )
        self.trust.start()
        self.status.set(Phase.ELECTING, "finding the broker")
        self.transport.read_router(self.hosting.on_router_batch)
        self._tg.create_task(
            self.transport.serve_info(lambda: membership.advertising.info(membership.link))
        )
        self._tg.create_task(self._tick_loop())
        self._tg.create_task(self._command_loop(commands))
        if self.cfg.connect is not None:
            self._tg.create_task(
                connect_direct(ctx, self.transport, membership, self.peers, self.status, self._stop)
            )
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
            self.trust.save()
            self.membership.say_goodbye()
            if self.hosting.relay is not None:
                self.hosting.close()
                await asyncio.sleep(GOODBYE_GRACE_S)
        self.membership.drop_link()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.offers.close(), CLOSE_TIMEOUT_S)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.install.close(), CLOSE_TIMEOUT_S)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.discovery.close(), CLOSE_TIMEOUT_S)
        self.transport.close()

    # ================================================================ routing

    def _on_frames(self, link: Link, via_pub: bool, batch: list[list[bytes]]) -> None:
        """A burst from the broker (DEALER or SUB), in one history transaction: the cost of
        a commit is paid once per burst, not per message."""
        with self.profile.history.batch():
            for frames in batch:
                if link is not self.membership.link:
                    return
                try:  # one bad frame (or one bug) must not stop the receive loop
                    self._route(link, frames, via_pub)
                except Exception:
                    self.ctx.count("handler_error")
                    log.exception("error handling a frame from the broker")
        self.public.pump()

    def _route(self, link: Link, frames: list[bytes], via_pub: bool) -> None:
        try:
            msg, sig = wire.decode(frames)
        except wire.DecodeError:
            self.ctx.count("malformed_from_broker")
            return
        now = self.clock()
        if isinstance(msg, wire.Welcome):
            self.membership.on_welcome(link, msg, now)
        elif isinstance(msg, wire.Refused):
            self.membership.on_refused(link, msg, now)
        elif link.welcome is None:  # before its Welcome, a broker has little to say
            if isinstance(msg, wire.Roster):
                self._on_roster(link, msg)
            elif isinstance(msg, wire.Redirect):
                self.membership.on_redirect(link, msg, now)
        else:
            route = self._routes.get(type(msg))
            if route is None:
                self.ctx.count("unexpected_from_broker")
            else:
                route(link, msg, sig, now, via_pub)

    def _on_relay(self, link: Link, msg: wire.Relay, _sig: bytes, now: float, _p: bool) -> None:
        link.last_beat = now
        self.public.on_relay(msg, now)

    def _on_beat(self, link: Link, msg: wire.Beat, _sig: bytes, now: float, _p: bool) -> None:
        link.last_beat = now
        self.public.on_beat(msg, now)
        if msg.roster_version != self.peers.version:
            self.membership.send(wire.encode(wire.Sync(roster_version=self.peers.version)))

    def _on_roster(self, link: Link, roster: wire.Roster) -> None:
        if roster.broker_key != link.target.key:
            return
        if roster.version <= self.peers.version and link.welcome is not None:
            return
        self.peers.on_full_roster(roster)
        self.helpdesk.resume_held()

    def _on_roster_delta(self, link: Link, delta: wire.RosterDelta) -> None:
        if delta.broker_key != link.target.key or delta.version <= self.peers.version:
            return
        if not self.peers.on_roster_delta(delta):
            # A gap (a delta missed, or ours is older than its base): the whole roster.
            self.membership.send(wire.encode(wire.Sync(roster_version=self.peers.version)))
            return
        self.helpdesk.resume_held()

    def _on_goodbye(
        self, _link: Link, _msg: wire.Goodbye, _s: bytes, _n: float, via_pub: bool
    ) -> None:
        if via_pub:
            self.membership.broker_lost("broker left")

    def _on_joined(self, _link: Link, msg: wire.Welcome, now: float) -> None:
        """A broker welcomed us: each part resumes with it."""
        self.public.on_welcome(msg, now)
        self.private.flush_all()
        self.helpdesk.on_new_broker()

    def _send_to_broker(self, frames: list[bytes]) -> bool:
        return self.membership.send(frames)

    def _hello_again(self) -> None:
        self.membership.hello_again()

    def _online_entry(self, handle: str) -> wire.PeerEntry | None:
        key = self.peers.online_key(handle)
        return self.peers.online.get(key) if key is not None else None

    def _storage_fault(self, message: str) -> None:
        if not self._storage_failing:
            self._storage_failing = True
            self.ctx.error("storage", message)

    def _storage_recovered(self, saved: int) -> None:
        self._storage_failing = False
        self.ctx.emit(
            "storage",
            state="ok",
            saved=saved,
            message=f"history is saved again ({saved} message(s) kept in memory were written)",
        )

    def _on_arrived(self, keys: list[bytes]) -> None:
        for key in keys:
            self.private.flush(key)  # what we queued for them while they were away

    def _rooms(self) -> list[dict[str, Any]]:
        """The rooms whose nodes advertise on the LAN, with how many are in each (us too)."""
        counts = Counter(a.room for a in self.discovery.peers().values() if a.id_key != self.me.key)
        counts[self.cfg.room] += 1
        return [{"name": name, "members": n} for name, n in sorted(counts.items())]

    def _not_broker_answer(self) -> wire.Redirect | wire.Refused:
        return self.membership.not_broker_answer()

    def _network_down(self, now: float) -> None:
        self.membership.network_down(now)

    def _network_back(self, now: float) -> None:
        self.membership.network_back(now)

    # ================================================================ loops

    async def _tick_loop(self) -> None:
        while True:
            self._tick_now()
            await asyncio.sleep(TICK_S)

    def _tick_at(self, when: float) -> None:
        """Run a tick at ``when`` (our clock) too: a decision due between two regular ticks
        (an election wait, a coalesced roster) is taken on time, not up to TICK_S late."""
        if self._stop.is_set():
            return  # stopping: a tick now would meet a closing transport
        if self._wake is not None and self._wake_at <= when:
            return
        if self._wake is not None:
            self._wake.cancel()
        self._wake_at = when
        delay = max(0.0, when - self.clock()) + TICK_LATE_S
        self._wake = asyncio.get_running_loop().call_later(
            delay, functools.partial(self._tick_now, scheduled=True)
        )

    def _tick_now(self, *, scheduled: bool = False) -> None:
        if scheduled:
            self._wake, self._wake_at = None, float("inf")
        if self._stop.is_set():
            return
        try:
            self._tick(self.clock())
        except Exception:  # one bug in a tick must not end the node (and the room's relay)
            self.ctx.count("handler_error")
            log.exception("error in a tick")

    def _tick(self, now: float) -> None:
        self.profile.state.flush()
        if now - self._last_storage_retry >= STORAGE_RETRY_S:
            self._last_storage_retry = now
            self.profile.retry()
        self.status.check_link(now)
        self.membership.tick(now)
        if not self.membership.welcomed():
            return
        self.public.tick(now)
        if now - self._last_private_resend >= PRIVATE_RESEND_S:
            self._last_private_resend = now
            self.private.flush_all()
            self.helpdesk.flush_all()
        self.membership.check_merge()

    async def _command_loop(self, commands: asyncio.Queue[dict[str, Any] | None]) -> None:
        while True:
            cmd = await commands.get()
            # Take the whole burst that is already waiting (a bot pasting 100 lines): its
            # public messages go out packed, with one signature.
            burst = [cmd]
            while len(burst) < COMMAND_BURST_MAX and not commands.empty():
                burst.append(commands.get_nowait())
            with self.profile.history.batch():
                for one in burst:
                    if one is None:
                        self.stop()
                        return
                    try:
                        self.execute(one)
                    except CommandError as exc:
                        self.ctx.error(exc.code, str(exc))
                    except (TextError, HandleError) as exc:
                        self.ctx.error("bad_command", str(exc))

    # ================================================================ services for the parts

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


def _lan_discovery(
    identity: ident.Identity,
) -> Callable[[str, Callable[[DiscoveryEvent], None]], RoomDiscovery]:
    """The real discovery: mDNS, with the broadcast beacon where multicast is filtered."""

    def make(address: str, on_event: Callable[[DiscoveryEvent], None]) -> RoomDiscovery:
        return LanDiscovery(address, on_event, identity=identity)

    return make
