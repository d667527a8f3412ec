"""The broker role: the relay this node runs while it is the room's broker, fed by our
ROUTER socket, its effects sent on our ROUTER and PUB sockets."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import TYPE_CHECKING, Final

from lanchat import identity as ident
from lanchat.core import wire

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from lanchat.core.relay import BrokerRelay, Probe, Publish, Reconcile, ToClient
    from lanchat.ports import RoomTransport
    from lanchat.room.context import RoomContext
    from lanchat.transport import Incoming

__all__ = ["Hosting"]

log = logging.getLogger("lanchat.node")

# Public messages this node saw, kept to seed its relay's backlog if it becomes broker
# (the relay's own backlog is lanchat.core.relay.BACKLOG_SIZE).
RECENT_RELAYS: Final = 2000
PROBES_AT_ONCE: Final = 32


class Hosting:
    def __init__(
        self,
        ctx: RoomContext,
        transport: RoomTransport,
        not_broker_answer: Callable[[], wire.Redirect | wire.Refused],
    ) -> None:
        self._ctx = ctx
        self._transport = transport
        self._not_broker_answer = not_broker_answer  # where our broker is, if we know
        self.relay: BrokerRelay | None = None
        self._probing = asyncio.Semaphore(PROBES_AT_ONCE)
        # Whether a client's mentor claim holds (its certificate; lanchat.room.trust).
        self.mentor_check: Callable[[wire.Hello], bool] | None = None
        # (message, signature, place): place 0 for ours that no broker has placed yet.
        self.recent: deque[tuple[wire.Public | wire.PublicBatch, bytes, int]] = deque(
            maxlen=RECENT_RELAYS
        )
        # Wired by the root to the public room: the highest place we hold (where a new
        # relay counts on from), and a client's Have or Want (answered from our history).
        self.top_place: Callable[[], int] = lambda: 0
        self.on_reconcile: Callable[[bytes, wire.Have | wire.Want], None] = lambda _r, _m: None

    @property
    def epoch(self) -> int:
        return self.relay.epoch if self.relay is not None else 0

    @property
    def since(self) -> float:
        return self.relay.since if self.relay is not None else 0.0

    def start(self, epoch: int) -> None:
        # Imported here, not at start-up: most nodes of a room are never its broker.
        from lanchat.core.relay import BrokerRelay

        ctx = self._ctx
        self.relay = BrokerRelay(
            key=ctx.me.key,
            handle=ctx.cfg.handle,
            room=ctx.cfg.room,
            epoch=epoch,
            since=round(ctx.wall(), 3),
            pub_port=self._transport.pub_port,
            verify=ident.verify,
            mentor_check=self.mentor_check,
        )
        self.relay.clock = self.top_place()
        self.relay.seed(self.recent)

    def stop(self, redirect: wire.Redirect | None = None) -> None:
        """Give up the role; with ``redirect``, send every client to the next broker."""
        if self.relay is not None and redirect is not None:
            self._apply_all(self.relay.redirect(redirect))
        self.relay = None

    def close(self) -> None:
        """Leaving: tell every client (they fail over at once)."""
        if self.relay is not None:
            self._apply_all(self.relay.close())

    def on_router_batch(self, batch: list[Incoming]) -> None:
        for incoming in batch:
            self._on_router(incoming)
        if self.relay is not None:
            self._ctx.tick_at(self.relay.next_due())

    def _on_router(self, incoming: Incoming) -> None:
        relay = self.relay
        if relay is None:
            frames = wire.encode(self._not_broker_answer())
            self._transport.send_router_nowait(incoming.rid, frames)
            return
        try:
            effects = relay.receive(
                incoming.rid, incoming.transport_key, incoming.frames, self._ctx.clock()
            )
        except Exception:  # a bug must not take the room's relay down
            self._ctx.count("relay_error")
            log.exception("relay failed on a frame")
            return
        self._apply_all(effects)

    def tick(self, now: float) -> None:
        if self.relay is not None:
            self._apply_all(self.relay.tick(now))

    def client_count(self) -> int:
        return self.relay.client_count() if self.relay is not None else 0

    def rid_of(self, key: bytes) -> bytes | None:
        return self.relay.rid_of(key) if self.relay is not None else None

    def send_to_client(self, rid: bytes, frames: list[bytes]) -> None:
        self._transport.send_router_nowait(rid, frames)

    def _apply_all(self, effects: Iterable[ToClient | Publish | Reconcile | Probe]) -> None:
        from lanchat.core.relay import Probe, Publish, ToClient  # loaded: a relay is running

        for eff in effects:
            if isinstance(eff, ToClient):
                self._transport.send_router_nowait(eff.rid, eff.frames)
            elif isinstance(eff, Publish):
                self._transport.publish_nowait(eff.frames)
            elif isinstance(eff, Probe):
                self._ctx.spawn(self._probe(eff))
            else:
                self.on_reconcile(eff.rid, eff.msg)

    async def _probe(self, probe: Probe) -> None:
        """Busy or gone: a TCP connect to the client's info port. Its kernel accepts for a
        live process however starved (ZeroMQ's own I/O thread listens there); a dead
        process's port refuses at once; a laptop that left does not answer."""
        from lanchat.core.relay import PROBE_CONNECT_S

        alive = False
        # A few at a time: a flood of silent clients must not open a socket each at once
        # (Windows' select() watches 512 at most, and every one costs a descriptor).
        async with self._probing:
            try:
                _reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(probe.address, probe.port), PROBE_CONNECT_S
                )
            except (OSError, TimeoutError):
                pass
            else:
                alive = True
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
        relay = self.relay
        if relay is not None:
            self._apply_all(relay.probed(probe.rid, alive, self._ctx.clock()))
