"""The chat screen's view model: node events in, everything the screen shows out.

Pure (no prompt_toolkit, no node): events are the dicts of the headless contract, time comes
from the events or is passed in, and every handle or text from the network goes through
``safe_label``/``clean_text`` on the way in, so nothing stored here can move the cursor.
"""

from __future__ import annotations

import itertools
import math
import re
from collections import Counter, deque
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final

from lanchat.core.friendship import Friendship
from lanchat.core.handles import handle_key
from lanchat.core.text import clean_text, safe_label
from lanchat.ui.commands import (
    Command,
    InputContext,
    InputError,
    LocalAction,
    parse_input,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

__all__ = [
    "MAX_LABEL_CHARS",
    "MAX_LINES",
    "PUBLIC",
    "Conversation",
    "Line",
    "LineKind",
    "Peer",
    "SidebarEntry",
    "Status",
    "ViewModel",
    "label",
    "parse_input",
]

MAX_LINES: Final = 5_000  # per conversation: older lines go, so typing stays fast
MAX_LABEL_CHARS: Final = 32
PUBLIC: Final = "#"  # the public room's key; private keys start with "@", so none collide
_OWN_ECHO_WINDOW_S: Final = 5.0  # an echoed own line and its stored copy differ by this at most


class LineKind(StrEnum):
    MESSAGE = "message"  # from someone else
    OWN = "own"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class Line:
    t: float
    kind: LineKind
    text: str
    sender: str = ""
    msg_id: str | None = None
    mention: bool = False


@dataclass(slots=True)
class Peer:
    handle: str
    online: bool = False
    mentor: bool = False
    relation: Friendship = Friendship.NONE
    fingerprint: str = ""


@dataclass(slots=True)
class Conversation:
    key: str
    title: str
    lines: deque[Line] = field(default_factory=lambda: deque(maxlen=MAX_LINES))
    unread: int = 0
    attention: bool = False  # a private message or a mention arrived while elsewhere
    history_loaded: bool = False


@dataclass(slots=True)
class Status:
    room: str
    handle: str
    fingerprint: str = ""
    state: str = "starting"
    text: str = "starting"
    broker: str | None = None
    broker_is_self: bool = False
    last_error: str | None = None  # the code of the latest error event
    last_error_message: str = ""


@dataclass(frozen=True, slots=True)
class SidebarEntry:
    key: str
    label: str
    is_room: bool = False
    mentor: bool = False
    relation: Friendship = Friendship.NONE
    online: bool = True
    unread: int = 0
    attention: bool = False
    current: bool = False


def label(value: object) -> str:
    """A handle from the network made safe to show: one line, no escapes, bounded length."""
    text = safe_label(value if isinstance(value, str) else "").strip()
    if len(text) > MAX_LABEL_CHARS:
        text = text[: MAX_LABEL_CHARS - 1] + "…"
    return text or "?"


def _text(value: object) -> str:
    return clean_text(value) if isinstance(value, str) else ""


def _number(value: object, default: float) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return default


def peer_key(handle: str) -> str:
    return "@" + handle_key(handle)


class ViewModel:
    """State of the chat screen, changed only by node events and user input."""

    def __init__(self, handle: str, room: str, *, max_lines: int = MAX_LINES) -> None:
        self.max_lines = max_lines
        self.status = Status(room=label(room), handle=label(handle))
        self.peers: dict[str, Peer] = {}
        self.conversations: dict[str, Conversation] = {}
        self.requests: dict[str, str] = {}  # peer key -> handle, oldest first
        self.current = PUBLIC
        self.scroll = 0  # lines of the current conversation hidden below the view
        self.show_help = False
        self._wanted: Counter[str] = Counter()  # listings the user asked for
        self._mention = _mention_pattern(self.status.handle)
        self._conversation(PUBLIC, self.status.room)

    # ---------------------------------------------------------------- queries

    @property
    def current_conversation(self) -> Conversation:
        return self.conversations[self.current]

    def handle_of(self, key: str) -> str | None:
        """The peer handle a conversation is with; None for the public room."""
        return None if key == PUBLIC else self.conversations[key].title

    def online_count(self) -> int:
        """People online in the room, counting you once you are connected."""
        others = sum(1 for p in self.peers.values() if p.online)
        return others + (1 if self.status.state in ("connected", "broker") else 0)

    def first_request(self) -> tuple[str, str] | None:
        """(handle, fingerprint) of the oldest unanswered request."""
        for key, handle in self.requests.items():
            return handle, self.peers[key].fingerprint
        return None

    def conversation_order(self) -> list[str]:
        """Keys in the order Ctrl-N walks them: the room, then mentors, then by name."""
        private = [k for k in self.conversations if k != PUBLIC]
        private.sort(key=lambda k: (not self._peer_for(k).mentor, k))
        return [PUBLIC, *private]

    def sidebar(self) -> list[SidebarEntry]:
        room = self.conversations[PUBLIC]
        entries = [
            SidebarEntry(
                key=PUBLIC,
                label=room.title,
                is_room=True,
                unread=room.unread,
                attention=room.attention,
                current=self.current == PUBLIC,
            )
        ]
        shown = [
            (key, peer)
            for key, peer in self.peers.items()
            if peer.online
            or key in self.conversations
            or peer.relation in (Friendship.PENDING_IN, Friendship.PENDING_OUT)
        ]
        shown.sort(key=lambda kp: (not kp[1].online, not kp[1].mentor, kp[0]))
        for key, peer in shown:
            conv = self.conversations.get(key)
            entries.append(
                SidebarEntry(
                    key=key,
                    label=peer.handle,
                    mentor=peer.mentor,
                    relation=peer.relation,
                    online=peer.online,
                    unread=conv.unread if conv else 0,
                    attention=conv.attention if conv else False,
                    current=key == self.current,
                )
            )
        return entries

    def visible_lines(self, count: int) -> list[Line]:
        """At most ``count`` lines of the current conversation, ending ``scroll`` from the end."""
        lines = self.current_conversation.lines
        # From the right: the view is nearly always at the end of a long deque.
        shown = list(itertools.islice(reversed(lines), self.scroll, self.scroll + max(0, count)))
        shown.reverse()
        return shown

    def input_context(self) -> InputContext:
        first = self.first_request()
        return InputContext(
            conversation=self.handle_of(self.current),
            first_request=first[0] if first else None,
        )

    def parse_input(self, line: str) -> Command | LocalAction | InputError:
        return parse_input(line, self.input_context())

    def handle_candidates(self, command: str) -> list[str]:
        """Handles worth offering after ``command`` (e.g. "/accept"), best first."""
        if command in ("/accept", "/reject"):
            return list(self.requests.values())
        peers = sorted(self.peers.values(), key=lambda p: (not p.online, not p.mentor, p.handle))
        if command == "/unblock":
            return [p.handle for p in peers if p.relation is Friendship.BLOCKED]
        if command == "/msg":
            peers.sort(key=lambda p: p.relation is not Friendship.FRIEND)
        names = [p.handle for p in peers if p.relation is not Friendship.BLOCKED]
        if command == "/join":
            names.append("public")
        return names

    # ---------------------------------------------------------------- navigation

    def switch(self, step: int) -> str:
        """Move ``step`` conversations along the Ctrl-N order; returns the new key."""
        order = self.conversation_order()
        index = order.index(self.current) if self.current in order else 0
        return self.open(order[(index + step) % len(order)])

    def open(self, key: str) -> str:
        conv = self.conversations[key]
        self.current = key
        self.scroll = 0
        self.show_help = False
        conv.unread = 0
        conv.attention = False
        return key

    def join(self, handle: str | None, now: float) -> str:
        """Show the room (None) or the private chat with ``handle``, creating it if needed."""
        if handle is None:
            return self.open(PUBLIC)
        peer = self._peer(handle)
        key = peer_key(peer.handle)
        fresh = key not in self.conversations
        conv = self._conversation(key, peer.handle)
        if fresh and peer.relation is not Friendship.FRIEND:
            self._add(
                conv,
                Line(
                    now,
                    LineKind.INFO,
                    f"{peer.handle} is not your friend yet: "
                    f"/request {peer.handle} asks for a private chat",
                ),
            )
        return self.open(key)

    def scroll_up(self, lines: int, view: int = 1) -> None:
        """Show older lines; never so far that fewer than ``view`` lines are left to show."""
        most = max(0, len(self.current_conversation.lines) - max(1, view))
        self.scroll = min(most, self.scroll + max(1, lines))

    def scroll_down(self, lines: int) -> None:
        self.scroll = max(0, self.scroll - max(1, lines))

    # ---------------------------------------------------------------- local input
    def restart(self, handle: str) -> None:
        """A new node starts under ``handle`` (the old one's was taken)."""
        self.status.handle = label(handle)
        self.status.state = self.status.text = "starting"
        self.status.broker = None
        self.status.last_error = None
        self._mention = _mention_pattern(self.status.handle)
        for peer in self.peers.values():
            peer.online = False

    def note(self, text: str, now: float, kind: LineKind = LineKind.INFO) -> None:
        """A line from the UI itself in the current conversation."""
        self._add(self.current_conversation, Line(now, kind, clean_text(text)))

    def will_send(self, cmd: Mapping[str, Any]) -> None:
        """The user asked for this command: show the listing its answer brings."""
        name = str(cmd.get("cmd"))
        if name in ("who", "friends", "history"):
            self._wanted[name] += 1

    def failed(self, cmd: Mapping[str, Any], message: str, now: float) -> None:
        name = str(cmd.get("cmd"))
        if self._wanted[name] > 0:
            self._wanted[name] -= 1
        self.note(message, now, LineKind.ERROR)

    def sent(self, cmd: Mapping[str, Any], now: float) -> None:
        """The node accepted ``cmd``; show what it did (own messages do not come back)."""
        name = cmd.get("cmd")
        me = self.status.handle
        if name == "say":
            line = Line(now, LineKind.OWN, _text(cmd.get("text")), me)
            self._add(self.conversations[PUBLIC], line)
        elif name == "msg":
            peer = self._peer(label(cmd.get("to")))
            key = peer_key(peer.handle)
            text = _text(cmd.get("text"))
            self._add(self._conversation(key, peer.handle), Line(now, LineKind.OWN, text, me))
            if key != self.current:
                self.note(f"to {peer.handle}: {text}", now)
        elif name == "request":
            peer = self._peer(label(cmd.get("to")))
            if peer.relation is Friendship.NONE:
                peer.relation = Friendship.PENDING_OUT
            if peer.relation is not Friendship.FRIEND:
                self.note(f"asked {peer.handle} for a private chat; waiting for an answer", now)
        elif name == "accept":
            self._answered(label(cmd.get("from")))
        elif name == "reject":
            peer = self._answered(label(cmd.get("from")))
            peer.relation = Friendship.NONE
            self.note(f"declined {peer.handle}'s private-chat request", now)
        elif name == "block":
            peer = self._answered(label(cmd.get("handle")))
            peer.relation = Friendship.BLOCKED
            self.note(f"blocked {peer.handle}: you will not see their messages", now)
        elif name == "unblock":
            peer = self._peer(label(cmd.get("handle")))
            peer.relation = Friendship.NONE
            self.note(f"unblocked {peer.handle}", now)

    # ---------------------------------------------------------------- node events

    def apply(self, event: Mapping[str, Any]) -> bool:
        """Take one node event; True when it deserves the terminal bell."""
        handler = getattr(self, f"_on_{event.get('ev')}", None)
        if handler is None:
            return False
        now = _number(event.get("t"), 0.0)
        return bool(handler(event, now))

    def _on_status(self, ev: Mapping[str, Any], now: float) -> None:
        state = label(ev.get("state"))
        text = _text(ev.get("text")).replace("\n", " ") or state
        changed = text != self.status.text
        self.status.state, self.status.text = state, text
        if changed:
            self._add(self.conversations[PUBLIC], Line(now, LineKind.INFO, text))

    def _on_ready(self, ev: Mapping[str, Any], now: float) -> None:
        self.status.handle = label(ev.get("handle"))
        self.status.fingerprint = label(ev.get("fingerprint"))
        self._mention = _mention_pattern(self.status.handle)
        self._add(
            self.conversations[PUBLIC],
            Line(
                now,
                LineKind.INFO,
                f"you are {self.status.handle} (key fingerprint {self.status.fingerprint})",
            ),
        )

    def _on_broker(self, ev: Mapping[str, Any], _now: float) -> None:
        self.status.broker = label(ev.get("handle"))
        self.status.broker_is_self = ev.get("self") is True

    def _on_peer_up(self, ev: Mapping[str, Any], now: float) -> None:
        peer = self._peer(label(ev.get("handle")))
        peer.online = True
        peer.mentor = ev.get("mentor") is True
        role = " (mentor)" if peer.mentor else ""
        self._presence(peer, f"{peer.handle}{role} joined", now)

    def _on_peer_down(self, ev: Mapping[str, Any], now: float) -> None:
        peer = self._peer(label(ev.get("handle")))
        peer.online = False
        self._presence(peer, f"{peer.handle} left", now)

    def _on_public(self, ev: Mapping[str, Any], now: float) -> bool:
        sender = label(ev.get("from"))
        text = _text(ev.get("text"))
        mention = self._mention is not None and self._mention.search(text) is not None
        conv = self.conversations[PUBLIC]
        self._add(conv, Line(now, LineKind.MESSAGE, text, sender, _id(ev), mention))
        if mention and self.current != PUBLIC:
            conv.attention = True
        return mention

    def _on_private(self, ev: Mapping[str, Any], now: float) -> bool:
        peer = self._peer(label(ev.get("from")))
        key = peer_key(peer.handle)
        conv = self._conversation(key, peer.handle)
        text = _text(ev.get("text"))
        self._add(conv, Line(now, LineKind.MESSAGE, text, peer.handle, _id(ev)))
        if key == self.current:
            return False
        conv.attention = True
        return True

    def _on_request(self, ev: Mapping[str, Any], now: float) -> bool:
        peer = self._peer(label(ev.get("from")))
        peer.relation = Friendship.PENDING_IN
        peer.fingerprint = label(ev.get("fingerprint"))
        key = peer_key(peer.handle)
        self.requests.pop(key, None)
        self.requests[key] = peer.handle
        self.note(
            f"{peer.handle} wants to chat privately (key {peer.fingerprint}): "
            f"/accept {peer.handle} or /reject {peer.handle}",
            now,
        )
        return True

    def _on_accepted(self, ev: Mapping[str, Any], now: float) -> None:
        other = ev.get("with")
        peer = self._answered(label(other if isinstance(other, str) else ev.get("by")))
        peer.relation = Friendship.FRIEND
        key = peer_key(peer.handle)
        conv = self._conversation(key, peer.handle)
        self._add(
            conv,
            Line(
                now,
                LineKind.INFO,
                f"you and {peer.handle} are friends now; private messages are end-to-end encrypted",
            ),
        )
        if key != self.current:
            conv.attention = True
            self.note(
                f"{peer.handle} and you are friends now: /join {peer.handle} or "
                "Ctrl-N to chat privately",
                now,
            )

    def _on_rejected(self, ev: Mapping[str, Any], now: float) -> None:
        peer = self._peer(label(ev.get("by")))
        peer.relation = Friendship.NONE
        self.note(f"{peer.handle} declined your private-chat request", now)

    def _on_who(self, ev: Mapping[str, Any], now: float) -> None:
        listed = _records(ev.get("peers"))
        online: set[str] = set()
        rows = []
        for item in listed:
            peer = self._peer(label(item.get("handle")))
            online.add(peer_key(peer.handle))
            peer.online = True
            peer.mentor = item.get("mentor") is True
            peer.relation = _relation(item.get("state"), peer.relation)
            peer.fingerprint = label(item.get("fingerprint"))
            tags = [t for t, on in (("mentor", peer.mentor),) if on]
            if peer.relation is not Friendship.NONE:
                tags.append(peer.relation.value.replace("_", " "))
            rows.append(f"  {peer.handle}  {peer.fingerprint}  {' '.join(tags)}".rstrip())
        for key, peer in self.peers.items():
            if key not in online:
                peer.online = False
        if self._take("who"):
            self.note(
                f"{len(listed)} other{'s' if len(listed) != 1 else ''} online"
                + (":" if rows else ""),
                now,
            )
            for row in rows:
                self.note(row, now)

    def _on_friends(self, ev: Mapping[str, Any], now: float) -> None:
        listed = _records(ev.get("friends"))
        seen: set[str] = set()
        rows = []
        for item in listed:
            peer = self._peer(label(item.get("handle")))
            key = peer_key(peer.handle)
            seen.add(key)
            peer.relation = _relation(item.get("state"), Friendship.NONE)
            peer.online = item.get("online") is True
            peer.fingerprint = label(item.get("fingerprint"))
            if peer.relation is Friendship.FRIEND:
                self._conversation(key, peer.handle)
            where = "online" if peer.online else "offline"
            code = label(item.get("safety_code"))
            rows.append(
                f"  {peer.handle}  {peer.relation.value.replace('_', ' ')}  {where}  "
                f"safety code {code}"
            )
        for key, peer in self.peers.items():
            if key not in seen:
                peer.relation = Friendship.NONE
        if self._take("friends"):
            self.note(
                "no friends yet: /request H asks for a private chat"
                if not rows
                else "friends and requests (compare safety codes in person):",
                now,
            )
            for row in rows:
                self.note(row, now)

    def _on_history(self, ev: Mapping[str, Any], now: float) -> None:
        other = ev.get("with")
        if isinstance(other, str):
            peer = self._peer(label(other))
            conv = self._conversation(peer_key(peer.handle), peer.handle)
        else:
            conv = self.conversations[PUBLIC]
        conv.history_loaded = True
        added = self._merge(conv, _records(ev.get("messages")))
        if self._take("history"):
            where = "the room" if conv.key == PUBLIC else conv.title
            self.note(f"loaded {added} earlier message{'s' if added != 1 else ''} of {where}", now)

    def _on_warning(self, ev: Mapping[str, Any], now: float) -> bool:
        message = _text(ev.get("message")) or label(ev.get("code"))
        self.note(message, now, LineKind.WARNING)
        key = peer_key(label(ev.get("handle")))
        if key != self.current and key in self.conversations:
            self._add(self.conversations[key], Line(now, LineKind.WARNING, message))
        return False

    def _on_error(self, ev: Mapping[str, Any], now: float) -> None:
        code = label(ev.get("code"))
        message = _text(ev.get("message")).replace("\n", " ") or code
        self.status.last_error, self.status.last_error_message = code, message
        self.note(message, now, LineKind.ERROR)

    # ---------------------------------------------------------------- helpers

    def _take(self, listing: str) -> bool:
        if self._wanted[listing] > 0:
            self._wanted[listing] -= 1
            return True
        return False

    def _peer(self, handle: str) -> Peer:
        key = peer_key(handle)
        peer = self.peers.get(key)
        if peer is None:
            peer = self.peers[key] = Peer(handle)
        return peer

    def _peer_for(self, key: str) -> Peer:
        return self.peers.get(key) or Peer(self.conversations[key].title)

    def _answered(self, handle: str) -> Peer:
        peer = self._peer(handle)
        self.requests.pop(peer_key(peer.handle), None)
        if peer.relation is Friendship.PENDING_IN:
            peer.relation = Friendship.NONE
        return peer

    def _conversation(self, key: str, title: str) -> Conversation:
        conv = self.conversations.get(key)
        if conv is None:
            conv = Conversation(key, title, deque(maxlen=self.max_lines))
            self.conversations[key] = conv
        return conv

    def _add(self, conv: Conversation, line: Line) -> None:
        conv.lines.append(line)
        if conv.key == self.current:
            if self.scroll:  # keep the lines being read where they are
                self.scroll = min(self.scroll + 1, len(conv.lines) - 1)
        elif line.kind is LineKind.MESSAGE:
            conv.unread += 1

    def _presence(self, peer: Peer, text: str, now: float) -> None:
        self._add(self.conversations[PUBLIC], Line(now, LineKind.INFO, text))
        conv = self.conversations.get(peer_key(peer.handle))
        if conv is not None:
            self._add(conv, Line(now, LineKind.INFO, text))

    def _merge(self, conv: Conversation, records: Iterable[Mapping[str, Any]]) -> int:
        """Add stored messages not on screen yet; returns how many."""
        ids = {line.msg_id for line in conv.lines if line.msg_id}
        echoes = [line for line in conv.lines if line.kind is LineKind.OWN and not line.msg_id]
        fresh: list[Line] = []
        for rec in records:
            msg_id = _id(rec)
            if msg_id is not None and msg_id in ids:
                continue
            t = _number(rec.get("sent_t"), 0.0)
            text = _text(rec.get("text"))
            own = rec.get("outgoing") is True
            if own and any(e.text == text and abs(e.t - t) < _OWN_ECHO_WINDOW_S for e in echoes):
                continue
            kind = LineKind.OWN if own else LineKind.MESSAGE
            fresh.append(Line(t, kind, text, label(rec.get("from")), msg_id))
        if fresh:
            merged = sorted([*conv.lines, *fresh], key=lambda line: line.t)
            conv.lines = deque(merged, maxlen=self.max_lines)
            self.scroll = min(self.scroll, max(0, len(conv.lines) - 1))
        return len(fresh)


def _mention_pattern(handle: str) -> re.Pattern[str] | None:
    if handle in ("", "?"):
        return None
    return re.compile(rf"(?<![\w.-]){re.escape(handle)}(?![\w-])", re.IGNORECASE)


def _id(record: Mapping[str, Any]) -> str | None:
    value = record.get("id")
    return value if isinstance(value, str) and value else None


def _records(value: object) -> list[Mapping[str, Any]]:
    if not isinstance(value, list):
        return []
    return [item for item in value if isinstance(item, dict)]


def _relation(value: object, default: Friendship) -> Friendship:
    try:
        return Friendship(value) if isinstance(value, str) else default
    except ValueError:
        return default
