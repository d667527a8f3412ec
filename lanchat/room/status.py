"""What the node tells about itself: its phase (the ``status`` events a screen shows while
it starts, connects and fails over), whether its network interface is up, and the
presence its heartbeats carry (online / away / busy, away by itself when idle)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from lanchat import netif
from lanchat.core.membership import Phase, check_phase
from lanchat.core.text import safe_label
from lanchat.room.context import CommandError

if TYPE_CHECKING:
    from collections.abc import Callable

    from lanchat.room.context import RoomContext

__all__ = ["PRESENCE_STATES", "NodeStatus", "Presence"]

LINK_CHECK_S: Final = 0.25  # how often we read our interface's state
AUTO_AWAY_S: Final = 600.0  # no command for this long: shown as away (until the next command)
PRESENCE_STATES: Final = ("online", "away", "busy")
STATUS_TEXT_MAX: Final = 48


class NodeStatus:
    """The node's phase and its plain-words description; the network interface's state."""

    def __init__(
        self,
        ctx: RoomContext,
        on_network_down: Callable[[float], None],
        on_network_back: Callable[[float], None],
    ) -> None:
        self._ctx = ctx
        self._on_down = on_network_down
        self._on_back = on_network_back
        self.phase = Phase.STARTING
        self.text = ""
        self.offline = False
        self._after_offline: tuple[Phase, str] = (Phase.STARTING, "")
        self._iface = netif.interface_of(ctx.cfg.address)
        self._last_link_check = 0.0

    def set(self, phase: Phase, text: str) -> None:
        if self.offline and phase != Phase.OFFLINE:
            self._after_offline = (phase, text)  # told when the network is back
            return
        if phase == self.phase and text == self.text:
            return
        self.phase = check_phase(self.phase, phase)
        self.text = text
        self._ctx.emit("status", state=str(phase), text=text)

    def check_link(self, now: float) -> None:
        """Say plainly when our network interface goes down, and when it is back."""
        if self._iface is None or now - self._last_link_check < LINK_CHECK_S:
            return
        self._last_link_check = now
        state = netif.link_state(self._iface)
        down = state is not None and state not in ("up", "unknown")
        if down and not self.offline:
            self._after_offline = (self.phase, self.text)
            self.set(
                Phase.OFFLINE, f"the network is down ({self._iface} is {state}); waiting for it"
            )
            self.offline = True
            self._on_down(now)
        elif not down and self.offline:
            self.offline = False
            before, text = self._after_offline
            self.set(Phase.ELECTING, "the network is back; finding the broker")
            if before in (Phase.CONNECTED, Phase.BROKER):
                self.set(before, text)
            self._on_back(now)


class Presence:
    """What our heartbeats tell the room: ``state[:text]``."""

    def __init__(self, ctx: RoomContext) -> None:
        self._ctx = ctx
        self.value = "online"
        self.auto_away = False
        self.last_activity = ctx.clock()
        self.changed = False  # tell the broker at the next tick, not at the next heartbeat

    def set(self, state: str, text: str) -> None:
        if state not in PRESENCE_STATES:
            raise CommandError("bad_command", f"status is one of {', '.join(PRESENCE_STATES)}")
        self.value = state if not text else f"{state}:{safe_label(text)[:STATUS_TEXT_MAX]}"
        self.auto_away = False
        self.changed = True

    def active(self, now: float) -> None:
        """A command from the user: back from an automatic away."""
        self.last_activity = now
        if self.auto_away:
            self.value, self.auto_away = "online", False
            self.changed = True

    def tick(self, now: float) -> None:
        if self.value == "online" and now - self.last_activity > AUTO_AWAY_S and not self.auto_away:
            self.value, self.auto_away = "away:idle", True
            self.changed = True
