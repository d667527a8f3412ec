"""What every part of a node shares: its configuration, identity, profile, clocks, and the
way out to the front ends (events). Services, not state: each part owns its own state."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lanchat.core.events import Event, UnknownEvent, event_of
from lanchat.store import HistoryRecord

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable, Coroutine

    from lanchat import identity as ident
    from lanchat.store import Profile

__all__ = ["PUBLIC", "CommandError", "NodeConfig", "NodeExit", "RoomContext"]

log = logging.getLogger("lanchat.node")

PUBLIC = "public"  # the public room's conversation name in the history


class NodeExit(Exception):
    """The node cannot run: ``code`` is the error code, ``status`` the exit status."""

    def __init__(self, code: str, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


class CommandError(Exception):
    """A command that cannot be carried out: an ``error`` event with this code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


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
    # The room code a mentor showed (--room-code): pins the room's mentor authority by it
    # rather than by first sight.
    room_code: str | None = None


def _no_spawn(coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any] | None:
    coro.close()
    return None


@dataclass(eq=False)
class RoomContext:
    """Handed to every part by the composition root."""

    cfg: NodeConfig
    me: ident.Identity
    profile: Profile
    emit_raw: Callable[[dict[str, Any]], None]
    clock: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    counters: dict[str, int] = field(default_factory=dict)
    # Set by the root once its task group runs: background steps, and an extra tick at a
    # given time (a decision due between two regular ticks).
    spawn: Callable[[Coroutine[Any, Any, Any]], asyncio.Task[Any] | None] = _no_spawn
    tick_at: Callable[[float], None] = lambda _when: None
    # The node cannot go on (a handle taken): it stops, and exits with the error.
    fatal: Callable[[NodeExit], None] = lambda exc: None

    def emit(self, ev: str, /, **fields: Any) -> None:
        """Event ``ev`` of the contract (lanchat.core.events), checked as it is built."""
        t = round(self.wall(), 6)
        try:
            event = event_of(ev, fields)
        except (UnknownEvent, TypeError) as exc:
            # A bug of ours, not the user's: say so, and still tell the front end.
            log.error("event %r does not fit the contract (%s): %s", ev, exc, sorted(fields))
            self.emit_raw({"ev": ev, "t": t, **fields})
            return
        self.emit_raw(event.to_json(t))

    def emit_event(self, event: Event) -> None:
        self.emit_raw(event.to_json(round(self.wall(), 6)))

    def error(self, code: str, message: str) -> None:
        self.emit("error", code=code, message=message)

    def count(self, reason: str) -> None:
        """Something dropped or refused, for the ``status`` command's counters."""
        self.counters[reason] = self.counters.get(reason, 0) + 1

    def store_outgoing(self, msg_id: str, conversation: str, text: str, sent_t: float) -> None:
        """A text of ours in the history of ``conversation`` (public, private or a hand's)."""
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
