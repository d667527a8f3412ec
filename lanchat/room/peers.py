"""Who is in the room: the broker's roster as this node verified it, the succession order
it implies, key pins (trust on first use) and the handles to show."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lanchat import identity as ident
from lanchat.core import election, wire
from lanchat.core import friendship as fs
from lanchat.core.budget import Budgets
from lanchat.core.handles import HandleError, handle_key, validate_handle
from lanchat.core.text import safe_label
from lanchat.store import Pin

if TYPE_CHECKING:
    from collections.abc import Callable

    from lanchat.room.context import RoomContext
    from lanchat.room.trust import Trust

__all__ = ["Peers"]

HELLO_CACHE_MAX = 10_000  # verified Hello signatures remembered (a roster repeats them)
STATUS_SHOWN_PER_S = 1.0  # peer_status events per peer (the broker has its own budget)
STATUS_SHOWN_BURST = 5.0


class Peers:
    def __init__(
        self,
        ctx: RoomContext,
        on_arrived: Callable[[list[bytes]], None],
        trust: Trust,
    ) -> None:
        self._ctx = ctx
        self._trust = trust
        # Online peers that are mentors by certificate; those that only say so.
        self.mentors: set[bytes] = set()
        self.unverified: set[bytes] = set()
        self._on_arrived = on_arrived  # newcomers: what we queued for them can go now
        self.roster: list[wire.PeerEntry] = []  # the last roster, in succession order
        self.version = -1  # of the last roster; versions are per broker
        self.online: dict[bytes, wire.PeerEntry] = {}  # everyone but us
        self.gone: set[bytes] = set()  # nodes that failed us as brokers (until seen again)
        self.identity_of_curve: dict[bytes, bytes] = {}  # transport key -> identity key
        self._hello_ok: dict[bytes, bool] = {}
        self._status_shown: dict[bytes, str] = {}  # what the last event said, per peer
        self._status_budget: Budgets[bytes] = Budgets(STATUS_SHOWN_PER_S, STATUS_SHOWN_BURST)

    # ---- the roster

    def on_roster(self, roster: wire.Roster) -> None:
        """A roster from our broker (the caller checked that it is from our broker)."""
        ctx = self._ctx
        peers = [e for e in roster.peers if self._entry_ok(e)]
        self.roster = peers
        for e in peers:
            self.identity_of_curve[e.curve_key] = e.id_key
            # In a live broker's roster, so alive: a node that once failed us (a broker we
            # could not reach in a start-up storm) must count again in the succession, or
            # we would pick another successor than the rest of the room.
            self.gone.discard(e.id_key)
        self.version = roster.version
        trust = self._trust
        trust.observe(peers, roster.broker_key)
        mentors = {e.id_key for e in peers if trust.is_mentor(e.handle, e.id_key, e.cert, e.mentor)}
        self.unverified |= {e.id_key for e in peers if e.mentor and e.id_key not in mentors}
        self.unverified -= mentors
        before, self.mentors = self.mentors, mentors
        now_online = {e.id_key: e for e in peers if e.id_key != ctx.me.key}
        arrived = [key for key in now_online if key not in self.online]
        pins = ctx.profile.state.pins_by_handle() if arrived else {}
        to_pin: list[tuple[str, str]] = []
        for key, entry in now_online.items():
            if key not in self.online:
                self._peer_up(entry, pins, to_pin)
                self._status_shown[key] = entry.status
            else:
                if key in mentors and key not in before:
                    ctx.emit("mentor_added", handle=entry.handle)  # added while online
                if self._status_shown.get(key) != entry.status:
                    # Over budget, the change waits for a later roster (shown as it is then).
                    if not self._status_budget.take(key, ctx.clock()):
                        ctx.count("status_budget")
                        continue
                    self._status_shown[key] = entry.status
                    state, _, text = entry.status.partition(":")
                    ctx.emit(
                        "peer_status", handle=entry.handle, status=state, text=safe_label(text)
                    )
        for key, entry in list(self.online.items()):
            if key not in now_online:
                self._status_shown.pop(key, None)
                ctx.emit("peer_down", handle=entry.handle)
        self.online = now_online
        if to_pin:
            ctx.profile.state.set_pins(to_pin, ctx.wall())
        if arrived:
            self._on_arrived(arrived)

    def succession(self) -> list[election.Candidate]:
        """The last roster as the election reads it (the broker first, then best-first)."""
        return [
            election.Candidate(e.id_key, e.mentor, e.priority, e.started_at) for e in self.roster
        ]

    def verified_entry(self, roster: wire.Roster, key: bytes) -> wire.PeerEntry | None:
        """The entry of ``key`` in a roster (of a broker we are not with), if it checks."""
        entry = next((e for e in roster.peers if e.id_key == key), None)
        return entry if entry is not None and self._entry_ok(entry) else None

    def _entry_ok(self, entry: wire.PeerEntry) -> bool:
        ok = self._hello_ok.get(entry.hello_sig)
        if ok is None:
            # A broker admits what it likes: a handle that is no valid handle (invisible
            # characters, look-alikes the rules forbid) is refused here, whatever it signed.
            ok = (
                _valid_handle(entry.handle)
                and entry.room == self._ctx.cfg.room
                and ident.verify(
                    entry.id_key, wire.signed_bytes(wire.hello_of(entry)), entry.hello_sig
                )
            )
            if len(self._hello_ok) > HELLO_CACHE_MAX:
                self._hello_ok.clear()
            self._hello_ok[entry.hello_sig] = ok
        if not ok:
            self._ctx.count("roster_bad_entry")
        return ok

    def _peer_up(
        self, entry: wire.PeerEntry, pins: dict[str, Pin], to_pin: list[tuple[str, str]]
    ) -> None:
        """A newcomer in the roster; ``pins`` by handle, as the store has them, and
        ``to_pin``, the pins the roster adds: written at once when it is done."""
        ctx = self._ctx
        key_hex = entry.id_key.hex()
        pin = pins.get(entry.handle.casefold())
        if pin is not None and pin.key != key_hex:
            ctx.emit(
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
            now = ctx.wall()
            pins[entry.handle.casefold()] = Pin(entry.handle, key_hex, now, now)
            to_pin.append((entry.handle, key_hex))
        presence, _, text = entry.status.partition(":")
        ctx.emit(
            "peer_up",
            handle=entry.handle,
            mentor=entry.id_key in self.mentors,
            status=presence,
            status_text=safe_label(text),
        )

    # ---- names and keys

    def is_mentor(self, key: bytes) -> bool:
        """A mentor by certificate (lanchat.room.trust), not by its own say."""
        if key == self._ctx.me.key:
            return self._trust.known_as_mentor
        return key in self.mentors

    def display_handle(self, key: bytes, claimed: str) -> str:
        """The handle to show for an author: the roster's, the pinned one, or its claim."""
        entry = self.online.get(key)
        if entry is not None:
            return entry.handle
        pin = self._ctx.profile.state.pin_for_key(key.hex())
        return pin.handle if pin is not None else safe_label(claimed)

    def marks(self, key: bytes, handle: str) -> dict[str, Any]:
        """Fields that mark what ``key`` says under ``handle`` when the handle is pinned to
        another key (an impostor, or a reinstall the user has not trusted yet): nothing for
        the pinned key itself."""
        pinned = self._ctx.profile.state.pinned_key(handle)
        if pinned is None or pinned == key.hex():
            return {}
        return {"impostor": True, "fingerprint": ident.fingerprint(key)}

    def handle_of(self, key: bytes) -> str:
        """The handle we know a key by, or "?"."""
        entry = self.online.get(key)
        if entry is not None:
            return entry.handle
        state = self._ctx.profile.state
        pin = state.pin_for_key(key.hex())
        if pin is not None:
            return pin.handle
        return state.friendships().get(key.hex(), ("?", ""))[0]

    def online_key(self, handle: str) -> bytes | None:
        """The key that ``handle`` is online with now, if it is."""
        wanted = handle_key(handle)
        return next(
            (e.id_key for e in self.online.values() if handle_key(e.handle) == wanted), None
        )

    def who(self) -> list[dict[str, Any]]:
        out = []
        for entry in sorted(
            self.online.values(), key=lambda e: (e.id_key not in self.mentors, handle_key(e.handle))
        ):
            state = self._ctx.profile.state.friendship(entry.id_key.hex())
            out.append(
                {
                    "handle": entry.handle,
                    "mentor": entry.id_key in self.mentors,
                    "friend": state == fs.Friendship.FRIEND,
                    "state": state,
                    "status": entry.status.partition(":")[0],
                    "status_text": safe_label(entry.status.partition(":")[2]),
                    "fingerprint": ident.fingerprint(entry.id_key),
                }
            )
        return out


def _valid_handle(handle: str) -> bool:
    try:
        validate_handle(handle)
    except HandleError:
        return False
    return True
