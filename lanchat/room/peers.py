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

# The broker sends its succession's first few (lanchat.core.relay.LAZY_HEAD + itself) with
# a delta when they change; from a whole roster we keep as many.
HEAD_KEPT = 9
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
        # In a hall (lanchat.core.relay.LAZY_FROM_CLIENTS): how many are connected, of
        # whom ``online`` holds only some; 0 in a room whose roster lists everyone.
        self.count = 0
        self.ask_broker: Callable[[list[bytes]], bool] = lambda _frames: False  # node wires
        self._who_waiting: list[str] = []  # prefixes of `who` answers awaiting a Found
        self._head: tuple[bytes, ...] = ()  # the broker's succession order, its first few
        self._status_shown: dict[bytes, str] = {}  # what the last event said, per peer
        self._status_budget: Budgets[bytes] = Budgets(STATUS_SHOWN_PER_S, STATUS_SHOWN_BURST)

    # ---- the roster

    def on_roster(self, roster: wire.Roster) -> None:
        """A roster from our broker (the caller checked that it is from our broker)."""
        self._take_roster(roster)

    def on_full_roster(self, roster: wire.Roster) -> None:
        """A whole roster: everyone is listed (not a hall's part of it)."""
        self.count = 0
        self._head = tuple(e.id_key for e in roster.peers[:HEAD_KEPT])
        self._take_roster(roster)

    def _take_roster(self, roster: wire.Roster) -> None:
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

    def on_roster_delta(self, delta: wire.RosterDelta) -> bool:
        """A delta from our broker; False if it does not follow our copy (ask for the roster).

        It follows any copy from ``delta.base`` on: it lists every entry changed since,
        and every key that left since, as they are now (lanchat.core.relay._delta_frames).
        """
        if not delta.base <= self.version < delta.version:
            return False
        # base -1: a hall's snapshot (the entries everyone holds), replacing ours.
        entries = {e.id_key: e for e in self.roster} if delta.base >= 0 else {}
        for key in delta.left:
            entries.pop(key, None)
        for entry in delta.changed:
            entries[entry.id_key] = entry
        # The broker's head first, as it ranked them (it alone knows who is verified),
        # then the rest by the same rule as far as we can tell (the election reads the
        # first of the roster who is not gone: the head decides it).
        if delta.head or delta.base < 0:
            self._head = delta.head  # sent when it changed, and in every snapshot
        head = [key for key in dict.fromkeys(self._head) if key in entries]
        in_head = set(head)
        rest = [
            election.Candidate(e.id_key, e.mentor, e.priority, e.started_at)
            for e in entries.values()
            if e.id_key not in in_head
        ]
        ranked = election.succession(rest, delta.broker_key)
        order = head + [c.key for c in ranked]
        if delta.base < 0 and delta.count and not self.count:
            self._ask_for_mine()
        self.count = delta.count
        self._take_roster(
            wire.Roster(
                epoch=delta.epoch,
                version=delta.version,
                broker_key=delta.broker_key,
                peers=tuple(entries[key] for key in order),
            )
        )
        return True

    # ---- a hall: the broker sends only some entries; we ask for the rest we need

    def _ask_for_mine(self) -> None:
        """Joined a hall: our friends and pending requests, whom the snapshot may lack."""
        keys = sorted(bytes.fromhex(k) for k in self._ctx.profile.state.friendships())
        for start in range(0, len(keys), wire.MAX_LOOKUP):
            chunk = tuple(keys[start : start + wire.MAX_LOOKUP])
            self.ask_broker(wire.encode(wire.Lookup(keys=chunk)))

    def who_prefix(self, prefix: str) -> bool:
        """`who` with a prefix in a hall: ask the broker; the answer goes out on its Found.
        False if there is nothing to ask (not a hall, or no broker): answer at once."""
        if not self.count or not self.ask_broker(wire.encode(wire.Lookup(prefix=prefix))):
            return False
        self._who_waiting.append(prefix)
        return True

    def on_found(self, found: wire.Found) -> None:
        """Entries we asked for: held from now on, as if they had been in the roster."""
        if found.count:
            self.count = found.count
        known = {e.id_key for e in self.roster}
        new = [e for e in found.peers if e.id_key not in known and e.id_key != self._ctx.me.key]
        if new and self.roster:
            # After what we hold, in the broker's order: the head (who takes over) stays.
            if len(new) == 1 and not found.prefix:
                self._add_one(new[0])  # a first contact's sender (a hall's Direct)
            else:
                self._take_roster(
                    wire.Roster(
                        epoch=0,
                        version=self.version,
                        broker_key=self.roster[0].id_key,
                        peers=(*self.roster, *new),
                    )
                )
        if found.prefix and found.prefix in self._who_waiting:
            self._who_waiting.remove(found.prefix)
            self._ctx.emit("who", peers=self.who(found.prefix), count=self.count or None)

    def _add_one(self, entry: wire.PeerEntry) -> None:
        """One more member held, in O(1): a flood of first contacts in a hall must not
        cost a pass over everyone held for each."""
        if not self._entry_ok(entry):
            return
        ctx = self._ctx
        self.roster.append(entry)
        self.identity_of_curve[entry.curve_key] = entry.id_key
        self.online[entry.id_key] = entry
        # Checked against the pins, not pinned on sight: a flood of throwaway identities
        # writing to someone would fill them (it is pinned once a roster or a lookup has it).
        self._peer_up(entry, ctx.profile.state.pins_by_handle(), [])
        self._on_arrived([entry.id_key])

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

    def who(self, prefix: str = "") -> list[dict[str, Any]]:
        out = []
        start = handle_key(prefix) if prefix else ""
        for entry in sorted(
            self.online.values(), key=lambda e: (e.id_key not in self.mentors, handle_key(e.handle))
        ):
            if start and not handle_key(entry.handle).startswith(start):
                continue
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
