"""The chat screen's view model: node events in, everything the screen shows out.

Pure (no prompt_toolkit, no node): events are the dicts of the headless contract, time comes
from the events or is passed in, and every handle or text from the network goes through
``safe_label``/``clean_text`` on the way in, so nothing stored here can move the cursor.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
import zlib
from collections import Counter, deque
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final

from lanchat.core.friendship import Friendship
from lanchat.core.handles import handle_key
from lanchat.core.text import clean_text, safe_label
from lanchat.core.units import human_size
from lanchat.core.vocabulary import Cmd
from lanchat.ui.commands import (
    ACTION_PREFIX,
    MAX_HISTORY,
    Command,
    InputContext,
    InputError,
    LocalAction,
    lost_slash,
    parse_input,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping

__all__ = [
    "FOLD_LINES",
    "FOLD_SHOWN",
    "HANDLE_COLOURS",
    "MAX_LABEL_CHARS",
    "MAX_LINES",
    "PUBLIC",
    "TYPING_SHOWN_S",
    "Alert",
    "Block",
    "Conversation",
    "FileOffer",
    "Hand",
    "Line",
    "LineKind",
    "Peer",
    "QueueEntry",
    "Receipt",
    "RoomInfo",
    "Search",
    "SidebarEntry",
    "Status",
    "Transfer",
    "ViewModel",
    "human_size",
    "is_action",
    "label",
    "ordinal",
    "parse_input",
    "queue_row",
    "short_id",
    "split_blocks",
]

MAX_LINES: Final = 5_000  # per conversation: older lines go, so typing stays fast
MAX_LABEL_CHARS: Final = 32
PUBLIC: Final = "#"  # the public room's key; private keys start with "@", so none collide
_OWN_ECHO_WINDOW_S: Final = 5.0  # an echoed own line and its stored copy differ by this at most
TYPING_SHOWN_S: Final = 5.0  # a typing indicator is stale after this long
_MAX_RECEIPTS: Final = 20_000  # message ids with a receipt remembered; the oldest go first
_MAX_AWAITING_ID: Final = 1_000  # own private lines per chat still waiting to learn their id
_MAX_PENDING: Final = 100  # file offers / transfers kept (a flood cannot grow memory)
_MAX_ALERTS: Final = 20
_SHORT_ID: Final = 8
_PRESENCE: Final = frozenset({"online", "away", "busy"})
HANDLE_COLOURS: Final = 12  # distinct name colours (class:sender.c0 … c11 of the screen)
FOLD_LINES: Final = 15  # a code block or message longer than this is folded…
FOLD_SHOWN: Final = 10  # …to its first lines, until Ctrl-O unfolds the chat's blocks
_CODE_SHARE: Final = 0.6  # unfenced text is code when this share of its lines look like it
_MIN_CODE_LINES: Final = 3
_FENCE: Final = re.compile(r"^\s*```\s*([\w+#.-]*)\s*$")
_CODEISH: Final = re.compile(
    r"^(\s{2,}|\t)\S|[{};]\s*$|^\s*[})\]]|^\s*(def|class|import|from \S+ import|return|"
    r"if\b.*:$|for\b.*:$|while\b|elif\b|else:|try:|except\b|#include|function\b|const |"
    r"let |var |public |private |fn |package |@\w+|SELECT |print\()"
)


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
    unverified: bool = False  # under a handle whose pinned key is another (see `marked`)
    # The room's order (the node's ``order`` field): public messages are shown by it, so
    # every screen shows the room's messages in the same order.
    order: tuple[Any, ...] | None = None


@dataclass(frozen=True, slots=True)
class Block:
    """A piece of a message: prose, or code shown as is (never re-wrapped)."""

    text: str
    code: bool = False
    language: str = ""  # from the fence (```python); empty: guessed or plain


def split_blocks(text: str) -> tuple[Block, ...]:
    """``text`` cut into prose and code: fenced with ```, or a paste that looks like code."""
    blocks: list[Block] = []
    prose: list[str] = []
    code: list[str] | None = None
    language = ""
    for row in text.split("\n"):
        fence = _FENCE.match(row)
        if code is None:
            if fence is None:
                prose.append(row)
                continue
            if prose:
                blocks.append(Block("\n".join(prose)))
                prose = []
            code, language = [], fence.group(1).lower()
        elif fence is not None and not fence.group(1):
            blocks.append(Block("\n".join(code), code=True, language=language))
            code = None
        else:
            code.append(row)
    if code is not None:  # an unclosed fence: the rest is code (a paste cut short)
        blocks.append(Block("\n".join(code), code=True, language=language))
    if prose:
        blocks.append(Block("\n".join(prose)))
    if len(blocks) == 1 and not blocks[0].code and _looks_like_code(text):
        return (Block(text, code=True),)
    return tuple(blocks)


def _looks_like_code(text: str) -> bool:
    rows = [row for row in text.split("\n") if row.strip()]
    if len(rows) < _MIN_CODE_LINES:
        return False
    codeish = sum(1 for row in rows if _CODEISH.search(row))
    return codeish >= _CODE_SHARE * len(rows)


def is_action(text: str) -> bool:
    """Whether a message is an action (sent with /me)."""
    return text.startswith(ACTION_PREFIX) and bool(text[len(ACTION_PREFIX) :].strip())


class Receipt(StrEnum):
    DELIVERED = "delivered"  # reached the friend's node
    READ = "read"  # the friend has seen it


@dataclass(slots=True)
class Peer:
    handle: str
    online: bool = False
    mentor: bool = False
    relation: Friendship = Friendship.NONE
    fingerprint: str = ""
    status: str = "online"  # online, away or busy
    status_text: str = ""


@dataclass(slots=True)
class Conversation:
    key: str
    title: str
    lines: deque[Line] = field(default_factory=lambda: deque(maxlen=MAX_LINES))
    unread: int = 0
    attention: bool = False  # a private message or a mention arrived while elsewhere
    history_loaded: bool = False
    hand: str | None = None  # the hand of a help session going on in this chat
    anon: bool = False  # that hand is anonymous: the title is a pseudonym
    unseen: bool = False  # messages came in that the friend has not been told we read
    unfolded: bool = False  # Ctrl-O: long code blocks and pastes shown whole


@dataclass(slots=True)
class Hand:
    """One of our raised hands (students)."""

    id: str
    state: str = "raised"  # raised, waiting, claimed (done hands are dropped)
    position: int = 0
    mentor: str = ""
    topic: str = ""
    anon: bool = False


@dataclass(frozen=True, slots=True)
class QueueEntry:
    """A hand in the help queue (mentors)."""

    n: int
    id: str
    who: str
    topic: str
    anon: bool
    since: float  # when it went up
    claimed_by: str = ""


@dataclass(frozen=True, slots=True)
class FileOffer:
    id: str
    sender: str
    name: str
    size: int
    shared: bool
    t: float

    @property
    def key(self) -> str:
        """The conversation the offer belongs to."""
        return PUBLIC if self.shared else peer_key(self.sender)


@dataclass(slots=True)
class Transfer:
    """A download under way."""

    id: str
    name: str
    size: int
    key: str  # the conversation of its offer
    done: int = 0
    rate: float = 0.0
    eta: float | None = None


@dataclass(slots=True)
class Search:
    """The answer to /search: the chat's lines that contain ``text``, one of them selected."""

    text: str
    key: str
    hits: list[Line] = field(default_factory=list)
    selected: int = 0
    done: bool = False  # the stored history has been searched (not only the screen)


@dataclass(frozen=True, slots=True)
class RoomInfo:
    name: str
    members: int
    current: bool = False


@dataclass(frozen=True, slots=True)
class Alert:
    """Something worth a desktop notification."""

    title: str
    body: str


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
    presence: str = "online"  # ours: online, away or busy
    presence_text: str = ""


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
    status: str = "online"
    status_text: str = ""
    helping: bool = False  # a help session (hand) goes on in this chat


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


def _line_text(value: object) -> str:
    return " ".join(_text(value).split())


def marked(ev: Mapping[str, Any], name: str) -> str:
    """``name`` as shown for an event from a key that is not the one pinned for that handle
    (an impostor, or a new key not trusted yet): with the key's fingerprint."""
    if ev.get("impostor") is not True:
        return name
    return f"{name} [unverified key {label(ev.get('fingerprint'))}]"


def _optional_label(value: object) -> str:
    return label(value) if isinstance(value, str) and value.strip() else ""


def _count(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return max(0, value)
    return 0


def peer_key(handle: str) -> str:
    return "@" + handle_key(handle)


def short_id(value: str) -> str:
    return value[:_SHORT_ID]


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


class ViewModel:
    """State of the chat screen, changed only by node events and user input."""

    def __init__(
        self, handle: str, room: str, *, max_lines: int = MAX_LINES, mentor: bool = False
    ) -> None:
        self.max_lines = max_lines
        self.mentor = mentor
        self.status = Status(room=label(room), handle=label(handle))
        self.peers: dict[str, Peer] = {}
        self.conversations: dict[str, Conversation] = {}
        self.requests: dict[str, str] = {}  # peer key -> handle, oldest first
        self.current = PUBLIC
        self.scroll = 0  # lines of the current conversation hidden below the view
        self.show_help = False
        self.help_scroll = 0  # help rows scrolled off the top
        self.search: Search | None = None  # /search results on screen
        self.confirm: tuple[str, str] | None = None  # (line as typed, the command it looks like)
        self.highlight: Line | None = None  # the search hit jumped to
        self.hands: dict[str, Hand] = {}  # our raised hands, oldest first
        self.queue: list[QueueEntry] = []  # mentors: the last help queue
        self.claims: dict[str, str] = {}  # mentors: hand id -> conversation key
        self.offers: dict[str, FileOffer] = {}  # file offers to us, oldest first
        self.transfers: dict[str, Transfer] = {}  # downloads under way
        self.receipts: dict[str, Receipt] = {}  # own private message id -> receipt
        self.typing: dict[str, float] = {}  # peer key -> until when "is typing" shows
        self.settings: dict[str, bool] = {"receipts": True, "typing": True}
        self.alerts: deque[Alert] = deque(maxlen=_MAX_ALERTS)  # for desktop notifications
        self._awaiting_id: dict[str, deque[Line]] = {}  # own lines sent without a known id
        self._queue_known: set[str] = set()
        self._reads_owed: set[str] = set()  # peer keys: read receipts to send once online
        self._wanted: Counter[str] = Counter()  # listings the user asked for
        self._colours: dict[str, int] = {}  # handle key -> colour, in order of appearance
        self._my_offers: dict[str, tuple[str, str]] = {}  # own offer id -> (name, chat key)
        self.rooms: list[RoomInfo] = []  # the last /rooms answer
        self._mention = _mention_pattern(self.status.handle)
        self._conversation(PUBLIC, self.status.room)

    # ---------------------------------------------------------------- queries

    @property
    def current_conversation(self) -> Conversation:
        return self.conversations[self.current]

    @property
    def overlay(self) -> bool:
        """Something covers the chat (help, search results): keys act on it, not the input."""
        return self.show_help or self.search is not None

    def chat_title(self) -> str:
        """The name of the chat on screen, for the status bar."""
        if self.current == PUBLIC:
            return self.status.room
        conv = self.current_conversation
        return f"help: {conv.title}" if conv.hand is not None else f"@{conv.title}"

    def colour(self, handle: str) -> int:
        """A colour number for ``handle``: stable for the session, distinct while they last.

        The first choice comes from the handle itself (the same across sessions when free).
        """
        key = handle_key(handle)
        found = self._colours.get(key)
        if found is not None:
            return found
        first = zlib.crc32(key.encode()) % HANDLE_COLOURS
        used = Counter(self._colours.values())
        fewest = min(used.get(n, 0) for n in range(HANDLE_COLOURS))
        for step in range(HANDLE_COLOURS):
            candidate = (first + step) % HANDLE_COLOURS
            if used.get(candidate, 0) == fewest:
                self._colours[key] = candidate
                return candidate
        raise AssertionError("unreachable")

    def is_mentor(self, handle: str) -> bool:
        peer = self.peers.get(peer_key(handle))
        return peer is not None and peer.mentor

    def is_friend(self, handle: str) -> bool:
        peer = self.peers.get(peer_key(handle))
        return peer is not None and peer.relation is Friendship.FRIEND

    def knows(self, handle: str) -> bool:
        """Whether ``handle`` is someone seen in this session."""
        return peer_key(handle) in self.peers

    def lost_slash(self, line: str) -> str | None:
        """The command ``line`` most likely was before its "/" got lost (see commands)."""
        return lost_slash(line, self.input_context(), self.knows)

    def last_code(self) -> Block | None:
        """The newest code block of the chat on screen."""
        for line in reversed(self.current_conversation.lines):
            if line.kind in (LineKind.MESSAGE, LineKind.OWN):
                code = [block for block in split_blocks(line.text) if block.code]
                if code:
                    return code[-1]
        return None

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

    def first_offer(self) -> FileOffer | None:
        """The oldest file offer not answered yet."""
        return next(iter(self.offers.values()), None)

    def waiting_hands(self) -> list[QueueEntry]:
        """Mentors: the hands nobody has taken yet, oldest first."""
        return [entry for entry in self.queue if not entry.claimed_by]

    def receipt(self, line: Line) -> Receipt | None:
        if line.kind is not LineKind.OWN or line.msg_id is None:
            return None
        return self.receipts.get(line.msg_id)

    def typing_text(self, now: float) -> str | None:
        """The "ann is typing…" of the chat on screen, for a few seconds after a hint."""
        if self.current == PUBLIC or self.typing.get(self.current, 0.0) <= now:
            return None
        return f"{self.current_conversation.title} is typing…"

    def peer_presence(self) -> str | None:
        """The "ann is away: lunch" of the chat on screen, unless the peer is plainly online."""
        peer = self.peers.get(self.current) if self.current != PUBLIC else None
        if peer is None or not peer.online or peer.status == "online":
            return None
        extra = f": {peer.status_text}" if peer.status_text else ""
        return f"{peer.handle} is {peer.status}{extra}"

    def typing_target(self) -> str | None:
        """The friend to tell that we are typing, if the chat on screen is with one."""
        if self.current == PUBLIC or not self.settings.get("typing", True):
            return None
        peer = self.peers.get(self.current)
        if peer is None or peer.relation is not Friendship.FRIEND or not peer.online:
            return None
        return peer.handle

    def take_reads(self) -> list[str]:
        """Friends to send a read receipt to now: their new messages have been on screen.

        A friend who is offline is told once they are back (the node only tells peers online).
        """
        if not (self.overlay or self.scroll or self.current == PUBLIC):
            conv = self.current_conversation
            peer = self.peers.get(self.current)
            if conv.unseen and peer is not None and peer.relation is Friendship.FRIEND:
                self._reads_owed.add(self.current)
            conv.unseen = False
        due = sorted(key for key in self._reads_owed if self.peers[key].online)
        self._reads_owed.difference_update(due)
        return [self.peers[key].handle for key in due]

    def take_alerts(self) -> list[Alert]:
        alerts = list(self.alerts)
        self.alerts.clear()
        return alerts

    def conversation_order(self) -> list[str]:
        """Keys in the order Ctrl-N walks them: the room, help sessions, mentors, by name."""
        private = [k for k in self.conversations if k != PUBLIC]
        private.sort(
            key=lambda k: (self.conversations[k].hand is None, not self._peer_for(k).mentor, k)
        )
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
        helping = {k for k, conv in self.conversations.items() if conv.hand is not None}
        shown.sort(
            key=lambda kp: (
                not (kp[1].online or kp[0] in helping),
                kp[0] not in helping,
                not kp[1].mentor,
                kp[0],
            )
        )
        for key, peer in shown:
            conv = self.conversations.get(key)
            entries.append(
                SidebarEntry(
                    key=key,
                    label=peer.handle,
                    mentor=peer.mentor,
                    relation=peer.relation,
                    online=peer.online or key in helping,
                    unread=conv.unread if conv else 0,
                    attention=conv.attention if conv else False,
                    current=key == self.current,
                    status=peer.status if peer.online else "online",
                    status_text=peer.status_text if peer.online else "",
                    helping=key in helping,
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
            offers=tuple(self.offers),
            hands=(*self.hands, *self.claims),
            help_hand=self.current_conversation.hand,
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
        if command == "/unfriend":
            return [p.handle for p in peers if p.relation is Friendship.FRIEND]
        if command in ("/msg", "/send"):
            peers.sort(key=lambda p: p.relation is not Friendship.FRIEND)
        names = [p.handle for p in peers if p.relation is not Friendship.BLOCKED]
        if command == "/join":
            names.append("public")
        return names

    def id_candidates(self, command: str) -> list[tuple[str, str]]:
        """(word, what it is) worth offering after ``command``: hand numbers, offer ids."""
        if command == "/claim":
            return [(str(e.n), f"{e.who} — {e.topic}" if e.topic else e.who) for e in self.queue]
        if command in ("/accept-file", "/decline-file"):
            return [(o.id, f"{o.name} from {o.sender}") for o in self.offers.values()]
        if command == "/done":
            mine = [(h.id, h.topic or "your hand") for h in self.hands.values()]
            return mine + [(i, self.conversations[k].title) for i, k in self.claims.items()]
        return []

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
        self.search = None
        self.highlight = None
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

    def to_newest(self) -> None:
        self.scroll = 0
        self.highlight = None

    def clear(self) -> None:
        """/clear: the chat's window is emptied; its stored history stays (/history)."""
        conv = self.current_conversation
        conv.lines.clear()
        self._awaiting_id.pop(conv.key, None)
        self.to_newest()

    def toggle_folds(self) -> None:
        conv = self.current_conversation
        conv.unfolded = not conv.unfolded

    # ---------------------------------------------------------------- search

    def start_search(self, text: str, now: float) -> dict[str, Any]:
        """/search: show the hits on screen now; the command that brings the stored ones."""
        self.show_help = False
        self.search = Search(text, self.current)
        self._find()
        return {"cmd": Cmd.HISTORY, "with": self.handle_of(self.current), "limit": MAX_HISTORY}

    def search_failed(self) -> None:
        """The stored history could not be asked for: the hits on screen are all there is."""
        if self.search is not None:
            self.search.done = True

    def move_search(self, step: int) -> None:
        if self.search is not None and self.search.hits:
            last = len(self.search.hits) - 1
            self.search.selected = max(0, min(last, self.search.selected + step))

    def jump_to_hit(self, view: int = 1) -> None:
        """Close the results; scroll the chat so that the selected hit is mid-``view``."""
        search, self.search = self.search, None
        if search is None or not search.hits or search.key != self.current:
            return
        hit = search.hits[search.selected]
        lines = self.current_conversation.lines
        for index in range(len(lines) - 1, -1, -1):
            if lines[index] is hit:
                below = len(lines) - 1 - index
                self.scroll = max(0, min(below - view // 2, len(lines) - max(1, view)))
                self.highlight = hit
                return

    def _find(self) -> None:
        search = self.search
        conv = self.conversations.get(search.key) if search is not None else None
        if search is None or conv is None:
            return
        needle = search.text.casefold()
        search.hits = [
            line
            for line in conv.lines
            if line.kind in (LineKind.MESSAGE, LineKind.OWN) and needle in line.text.casefold()
        ]
        search.selected = max(0, len(search.hits) - 1)  # the newest first

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
        # Hands, claims and offers lived in the old node.
        for conv in self.conversations.values():
            conv.hand = None
        self.hands.clear()
        self.claims.clear()
        self.queue = []
        self._queue_known.clear()
        self.offers.clear()
        self.transfers.clear()
        self.typing.clear()
        self._awaiting_id.clear()

    def note(self, text: str, now: float, kind: LineKind = LineKind.INFO) -> None:
        """A line from the UI itself in the current conversation."""
        self._add(self.current_conversation, Line(now, kind, clean_text(text)))

    def will_send(self, cmd: Mapping[str, Any]) -> None:
        """The user asked for this command: show the listing its answer brings."""
        name = str(cmd.get("cmd"))
        if name in (Cmd.WHO, Cmd.FRIENDS, Cmd.HISTORY, Cmd.QUEUE, Cmd.ROOMS):
            self._wanted[name] += 1

    def failed(self, cmd: Mapping[str, Any], message: str, now: float) -> None:
        name = str(cmd.get("cmd"))
        if self._wanted[name] > 0:
            self._wanted[name] -= 1
        self.note(message, now, LineKind.ERROR)

    def sent(self, cmd: Mapping[str, Any], now: float, msg_id: str | None = None) -> None:
        """The node accepted ``cmd``; show what it did (own messages do not come back).

        ``msg_id``: the id the node gave a message, when it says (receipts refer to it).
        """
        name = cmd.get("cmd")
        me = self.status.handle
        if name in (Cmd.SAY, Cmd.MSG):
            self.to_newest()  # you see what you sent
        if name == Cmd.SAY:
            line = Line(now, LineKind.OWN, _text(cmd.get("text")), me, msg_id)
            self._add(self.conversations[PUBLIC], line)
        elif name == Cmd.MSG:
            peer = self._peer(label(cmd.get("to")))
            key = peer_key(peer.handle)
            text = _text(cmd.get("text"))
            conv = self._conversation(key, peer.handle)
            line = Line(now, LineKind.OWN, text, me, msg_id)
            self._add(conv, line)
            if msg_id is None and conv.hand is None:
                # Learnt from the order of the "delivered" events (help sessions have none).
                waiting = self._awaiting_id.setdefault(key, deque(maxlen=_MAX_AWAITING_ID))
                waiting.append(line)
            if key != self.current:
                self.note(f"to {peer.handle}: {text}", now)
        elif name == Cmd.REQUEST:
            peer = self._peer(label(cmd.get("to")))
            if peer.relation is Friendship.NONE:
                peer.relation = Friendship.PENDING_OUT
            if peer.relation is not Friendship.FRIEND:
                self.note(f"asked {peer.handle} for a private chat; waiting for an answer", now)
        elif name == Cmd.ACCEPT:
            self._answered(label(cmd.get("from")))
        elif name == Cmd.REJECT:
            peer = self._answered(label(cmd.get("from")))
            peer.relation = Friendship.NONE
            self.note(f"declined {peer.handle}'s private-chat request", now)
        elif name == Cmd.BLOCK:
            peer = self._answered(label(cmd.get("handle")))
            peer.relation = Friendship.BLOCKED
            self.note(f"blocked {peer.handle}: you will not see their messages", now)
        elif name == Cmd.UNBLOCK:
            peer = self._peer(label(cmd.get("handle")))
            peer.relation = Friendship.NONE
            self.note(f"unblocked {peer.handle}", now)
        elif name == Cmd.UNFRIEND:
            peer = self._peer(label(cmd.get("handle")))
            peer.relation = Friendship.NONE
            self.note(
                f"you and {peer.handle} are no longer friends; /request {peer.handle} asks again",
                now,
            )
        elif name == Cmd.ROOM:
            self.note(f"moving to room {label(cmd.get('name'))}…", now)
        elif name == Cmd.STATUS and "set" in cmd:
            self.status.presence = label(cmd.get("set"))
            self.status.presence_text = _optional_label(cmd.get("text"))
            extra = f" ({self.status.presence_text})" if self.status.presence_text else ""
            self.note(f"your status: {self.status.presence}{extra}", now)
        elif name in (Cmd.SEND, Cmd.SHARE):
            path = _line_text(cmd.get("path"))
            where = f"for {label(cmd.get('to'))}" if name == Cmd.SEND else "for the room"
            self.note(f"preparing {path.rstrip('/').rsplit('/', 1)[-1]} {where}…", now)
        elif name == Cmd.ACCEPT_FILE:
            offer = self.offers.pop(str(cmd.get("id")), None)
            if offer is not None:
                self._transfer(offer.id, offer.name, offer.size, offer.key)
                self.note(f"downloading {offer.name} from {offer.sender}…", now)
        elif name == Cmd.DECLINE_FILE:
            offer = self.offers.pop(str(cmd.get("id")), None)
            if offer is not None:
                self.note(f"declined {offer.name} from {offer.sender}", now)

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
        presence = ev.get("presence")
        if isinstance(presence, str) and presence:  # the answer to setting our status
            state_set, _, extra = presence.partition(":")
            self.status.presence = label(state_set)
            self.status.presence_text = _optional_label(extra)
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
        connect = _optional_label(ev.get("connect"))
        if self.mentor and connect:
            # For the projector: where discovery does not reach, this is how to join.
            self._add(
                self.conversations[PUBLIC],
                Line(now, LineKind.INFO, f"others can join with:  lanchat --connect {connect}"),
            )

    def _on_broker(self, ev: Mapping[str, Any], _now: float) -> None:
        self.status.broker = label(ev.get("handle"))
        self.status.broker_is_self = ev.get("self") is True

    def _on_peer_up(self, ev: Mapping[str, Any], now: float) -> None:
        peer = self._peer(label(ev.get("handle")))
        peer.online = True
        peer.mentor = ev.get("mentor") is True
        self._set_presence(peer, ev.get("status"), ev.get("status_text", ev.get("text")))
        role = " (mentor)" if peer.mentor else ""
        self._presence(peer, f"{peer.handle}{role} joined", now)

    def _on_peer_down(self, ev: Mapping[str, Any], now: float) -> None:
        peer = self._peer(label(ev.get("handle")))
        peer.online = False
        self._presence(peer, f"{peer.handle} left", now)

    def _on_public(self, ev: Mapping[str, Any], now: float) -> bool:
        sender = marked(ev, label(ev.get("from")))
        text = _text(ev.get("text"))
        mention = self._mention is not None and self._mention.search(text) is not None
        conv = self.conversations[PUBLIC]
        unverified = ev.get("impostor") is True
        line = Line(
            _sent_t(ev, now),
            LineKind.MESSAGE,
            text,
            sender,
            _id(ev),
            mention,
            unverified,
            _order(ev),
        )
        if ev.get("replay") is True:  # history or catch-up: shown in place, quietly
            self._merge_lines(conv, [line])
            return False
        self._add(conv, line)
        self._keep_order(conv, line)
        if mention and self.current != PUBLIC:
            conv.attention = True
        return mention

    def _on_placed(self, ev: Mapping[str, Any], now: float) -> None:
        """Our message got its place in the room's order: its line moves there."""
        del now
        msg_id, order = _id(ev), _order(ev)
        conv = self.conversations[PUBLIC]
        if msg_id is None or order is None:
            return
        for line in reversed(conv.lines):
            if line.msg_id == msg_id:
                placed = dataclasses.replace(line, order=order)
                self._replace(conv, line, placed)
                self._keep_order(conv, placed)
                return

    def _keep_order(self, conv: Conversation, line: Line) -> None:
        """After ``line`` got its order: re-sort if its ordered neighbours disagree."""
        order = line.order
        if order is None:
            return
        lines = conv.lines
        index = next((i for i in range(len(lines) - 1, -1, -1) if lines[i] is line), None)
        if index is None:
            return
        rank = (0, order)
        before = next((r for x in _walk(lines, index - 1, -1) if (r := _rank(x))), None)
        after = next((r for x in _walk(lines, index + 1, 1) if (r := _rank(x))), None)
        if (before is None or before <= rank) and (after is None or rank <= after):
            return  # the common case: it arrived in order
        _sort_ordered(conv)

    def _on_private(self, ev: Mapping[str, Any], now: float) -> bool:
        peer = self._peer(label(ev.get("from")))
        key = peer_key(peer.handle)
        conv = self._conversation(key, peer.handle)
        text = _text(ev.get("text"))
        sender, unverified = marked(ev, peer.handle), ev.get("impostor") is True
        line = Line(_sent_t(ev, now), LineKind.MESSAGE, text, sender, _id(ev), False, unverified)
        hand = ev.get("hand")
        if isinstance(hand, str) and hand:
            conv.hand = hand  # a help session: no receipts there
        if ev.get("replay") is True:
            self._merge_lines(conv, [line])
            return False
        self._add(conv, line)
        if conv.hand is None:
            conv.unseen = True
        self.typing.pop(key, None)
        if key == self.current:
            return False
        conv.attention = True
        self._alert(f"{peer.handle} (private)", text)
        return True

    def _on_request(self, ev: Mapping[str, Any], now: float) -> bool:
        peer = self._peer(label(ev.get("from")))
        peer.relation = Friendship.PENDING_IN
        peer.fingerprint = label(ev.get("fingerprint"))
        key = peer_key(peer.handle)
        self.requests.pop(key, None)
        self.requests[key] = peer.handle
        self.note(
            f"{marked(ev, peer.handle)} wants to chat privately (key {peer.fingerprint}): "
            f"/accept {peer.handle} or /reject {peer.handle}",
            now,
        )
        if key != self.current:
            self._alert(f"{peer.handle} wants to chat", "answer in lanchat: F2 accept, F3 reject")
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
        was_friend = peer.relation is Friendship.FRIEND
        peer.relation = Friendship.NONE
        if was_friend:  # a friend's /unfriend reaches us as a rejection
            text = f"{peer.handle} ended your friendship; /request {peer.handle} asks again"
            conv = self.conversations.get(peer_key(peer.handle))
            if conv is not None and conv.key != self.current:
                self._add(conv, Line(now, LineKind.INFO, text))
            self.note(text, now)
        else:
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
            self._set_presence(peer, item.get("status"), item.get("status_text"))
            tags = [t for t, on in (("mentor", peer.mentor),) if on]
            if peer.relation is not Friendship.NONE:
                tags.append(peer.relation.value.replace("_", " "))
            if peer.status != "online":
                extra = f": {peer.status_text}" if peer.status_text else ""
                tags.append(f"({peer.status}{extra})")
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
        search = self.search
        if search is not None and search.key == conv.key and not search.done:
            search.done = True
            self._find()
        if self._take("history"):
            where = "the room" if conv.key == PUBLIC else conv.title
            self.note(f"loaded {added} earlier message{'s' if added != 1 else ''} of {where}", now)

    def _on_rooms(self, ev: Mapping[str, Any], now: float) -> None:
        rooms = [
            RoomInfo(
                label(item.get("name")),
                _count(item.get("members")),
                item.get("current") is True or label(item.get("name")) == self.status.room,
            )
            for item in _records(ev.get("rooms"))
        ]
        self.rooms = rooms
        if not self._take("rooms"):
            return
        if not rooms:
            self.note("no rooms seen on the network yet", now)
            return
        self.note(f"{len(rooms)} room{'s' if len(rooms) != 1 else ''} on the network:", now)
        for room in sorted(rooms, key=lambda r: (-r.members, r.name)):
            here = "  (you are here)" if room.current else ""
            people = f"{room.members} {'person' if room.members == 1 else 'people'}"
            self.note(f"  {room.name}  {people}{here}", now)
        self.note("/room NAME moves there", now)

    def _on_install_server(self, ev: Mapping[str, Any], now: float) -> None:
        """Our install server is up: the lines to show the room (put it on the projector)."""
        self.note("━━━ laptops without lanchat and without internet: install it from here ━━━", now)
        self.note(f"  Windows:      {_text(ev.get('windows')) or _text(ev.get('command'))}", now)
        self.note(f"  macOS/Linux:  {_text(ev.get('unix')) or _text(ev.get('command'))}", now)
        self.note(f"  or open {_text(ev.get('url'))} in a browser; then run: lanchat", now)

    def _on_room(self, ev: Mapping[str, Any], now: float) -> None:
        """We moved to another room: its people and messages replace the old room's."""
        name = label(ev.get("name"))
        if name == self.status.room:
            return
        self.status.room = name
        for key in [k for k, p in self.peers.items() if p.relation is not Friendship.FRIEND]:
            if key not in self.conversations:
                del self.peers[key]
        for peer in self.peers.values():
            peer.online = False
        room = self.conversations[PUBLIC]
        room.title, room.lines, room.history_loaded = name, deque(maxlen=self.max_lines), False
        room.unread, room.attention = 0, False
        self.open(PUBLIC)
        self.note(f"you are in room {name} now", now)

    def _on_peer_status(self, ev: Mapping[str, Any], _now: float) -> None:
        peer = self._peer(label(ev.get("handle")))
        self._set_presence(peer, ev.get("status"), ev.get("text"))

    def _on_settings(self, ev: Mapping[str, Any], now: float) -> None:
        for key in ("receipts", "typing"):
            value = ev.get(key)
            if isinstance(value, bool):
                self.settings[key] = value

        def word(on: bool) -> str:
            return "on" if on else "off"

        self.note(
            f"read receipts {word(self.settings['receipts'])} · "
            f"typing indicator {word(self.settings['typing'])}",
            now,
        )

    # ---------------------------------------------------------------- receipts, typing

    def _on_delivered(self, ev: Mapping[str, Any], _now: float) -> None:
        msg_id = _id(ev)
        if msg_id is None:
            return
        to = ev.get("to")
        if isinstance(to, str):
            self._learn_id(peer_key(label(to)), msg_id)
        self._receipt(msg_id, Receipt.DELIVERED)

    def _on_read(self, ev: Mapping[str, Any], _now: float) -> None:
        msg_id = _id(ev)
        if msg_id is not None:
            self._receipt(msg_id, Receipt.READ)

    def _on_typing(self, ev: Mapping[str, Any], now: float) -> None:
        key = peer_key(label(ev.get("from")))
        if ev.get("active") is False:
            self.typing.pop(key, None)
        else:
            self.typing[key] = now + TYPING_SHOWN_S

    # ---------------------------------------------------------------- help queue

    def _on_hand(self, ev: Mapping[str, Any], now: float) -> bool:
        hand_id = _id(ev)
        if hand_id is None:
            return False
        state = label(ev.get("state"))
        if hand_id in self.claims or "who" in ev:  # mentors: a hand we helped with is done
            self._claim_over(hand_id, _optional_label(ev.get("who")), now)
            return False
        hand = self.hands.get(hand_id)
        if hand is None:
            if state == "done":
                return False
            hand = self.hands[hand_id] = Hand(hand_id)
        if "topic" in ev:
            hand.topic = _line_text(ev.get("topic"))
        if "anon" in ev:
            hand.anon = ev.get("anon") is True
        hand.position = _count(ev.get("position")) or hand.position
        hand.mentor = _optional_label(ev.get("mentor")) or hand.mentor
        before, hand.state = hand.state, state
        if state == "raised":
            how = " anonymously (mentors do not see your name)" if hand.anon else ""
            about = f" about {hand.topic}" if hand.topic else ""
            self.note(f"you raised your hand{how}{about}; /done lowers it", now)
        elif state == "claimed" and before != "claimed" and hand.mentor:
            key = peer_key(hand.mentor)
            self._peer(hand.mentor)
            conv = self._conversation(key, hand.mentor)
            conv.hand = hand_id
            self._add(
                conv,
                Line(
                    now,
                    LineKind.INFO,
                    f"{hand.mentor} is with you — type here to talk privately; "
                    "/done when your question is answered",
                ),
            )
            if self.current == PUBLIC:
                self.open(key)
            elif key != self.current:
                conv.attention = True
                self.note(f"{hand.mentor} is with you: /join {hand.mentor} to talk", now)
            return True
        elif state == "done":
            del self.hands[hand_id]
            session = self.conversations.get(peer_key(hand.mentor)) if hand.mentor else None
            if session is not None and session.hand == hand_id:
                session.hand = None
                self._tell(session, f"the help session with {hand.mentor} has ended", now)
                self._session_over(session, now)
            else:
                self.note("your hand is down", now)
        return False

    def _on_queue(self, ev: Mapping[str, Any], now: float) -> bool:
        entries = []
        for item in _records(ev.get("entries")):
            hand_id, n = _id(item), item.get("n")
            if hand_id is None or not isinstance(n, int) or isinstance(n, bool):
                continue
            entries.append(
                QueueEntry(
                    n=n,
                    id=hand_id,
                    who=label(item.get("who")),
                    topic=_line_text(item.get("topic")),
                    anon=item.get("anon") is True,
                    since=now - _number(item.get("waiting_s"), 0.0),
                    claimed_by=_optional_label(item.get("claimed_by")),
                )
            )
        fresh = [e for e in entries if not e.claimed_by and e.id not in self._queue_known]
        self._queue_known = {e.id for e in entries}
        self.queue = entries
        if self._take("queue"):
            waiting = self.waiting_hands()
            if entries:
                self.note(f"help queue: {len(waiting)} waiting", now)
            elif self.mentor:
                self.note("the help queue is empty", now)
            else:
                self.note("only mentors see the help queue; /hand asks one for help", now)
            for entry in entries:
                self.note("  " + queue_row(entry, now), now)
        if not fresh:
            return False
        first = fresh[0]
        more = f" (and {len(fresh) - 1} more)" if len(fresh) > 1 else ""
        self._alert(f"new hand: {first.who}{more}", first.topic or "no topic given")
        return True

    def _on_claimed(self, ev: Mapping[str, Any], now: float) -> None:
        hand_id = _id(ev)
        if hand_id is None:
            return
        who = label(ev.get("who"))
        topic = _line_text(ev.get("topic"))
        anon = ev.get("anon") is True
        key = peer_key(who)
        self._peer(who)
        conv = self._conversation(key, who)
        conv.hand, conv.anon = hand_id, anon
        self.claims[hand_id] = key
        tag = " (anonymous: you do not see their name)" if anon else ""
        about = f" with: {topic}" if topic else ""
        self._add(
            conv,
            Line(
                now,
                LineKind.INFO,
                f"you are helping {who}{tag}{about} — type here to talk privately; "
                "/done when finished",
            ),
        )
        self.open(key)

    def _claim_over(self, hand_id: str, who: str, now: float) -> None:
        key = self.claims.pop(hand_id, None) or (peer_key(who) if who else None)
        conv = self.conversations.get(key) if key else None
        if conv is not None and conv.hand == hand_id:
            conv.hand = None
            self._tell(conv, f"the help session with {conv.title} is done", now)
            self._session_over(conv, now)

    def _session_over(self, conv: Conversation, now: float) -> None:
        """A help session ended: its chat leaves the sidebar unless it is with a friend."""
        peer = self.peers.get(conv.key)
        if peer is not None and peer.relation is not Friendship.NONE:
            return
        if self.current == conv.key:
            self.open(PUBLIC)
            self.note(f"the help session with {conv.title} is done", now)
        del self.conversations[conv.key]
        self._awaiting_id.pop(conv.key, None)
        self._reads_owed.discard(conv.key)
        if peer is not None and not peer.online:
            del self.peers[conv.key]

    # ---------------------------------------------------------------- files

    def _on_file_offer(self, ev: Mapping[str, Any], now: float) -> bool:
        offer_id = _id(ev)
        if offer_id is None:
            return False
        offer = FileOffer(
            id=offer_id,
            sender=label(ev.get("from")),
            name=label(ev.get("name")),
            size=_count(ev.get("size")),
            shared=ev.get("shared") is True,
            t=now,
        )
        self.offers.pop(offer_id, None)
        self.offers[offer_id] = offer
        while len(self.offers) > _MAX_PENDING:
            del self.offers[next(iter(self.offers))]
        to = " to the room" if offer.shared else ""
        who = marked(ev, offer.sender)
        what = f"{who} offers {offer.name} ({human_size(offer.size)}){to}"
        if offer.shared:
            conv = self.conversations[PUBLIC]
        else:
            conv = self._conversation(offer.key, offer.sender)
        self._tell(
            conv, f"{what} — F4 accept / F5 decline or /accept-file {short_id(offer_id)}", now
        )
        if offer.key != self.current:
            conv.attention = True
            self._alert(f"{offer.sender} offers a file", f"{offer.name} ({human_size(offer.size)})")
        return True

    def _on_file_offered(self, ev: Mapping[str, Any], now: float) -> None:
        name, size = label(ev.get("name")), human_size(_count(ev.get("size")))
        to = ev.get("to")
        if isinstance(to, str) and to:
            peer = self._peer(label(to))
            conv = self._conversation(peer_key(peer.handle), peer.handle)
            self._tell(conv, f"you offered {name} ({size}) to {peer.handle}", now)
        else:
            conv = self.conversations[PUBLIC]
            self._tell(conv, f"you shared {name} ({size}) with the room", now)
        offer_id = _id(ev)
        if offer_id is not None:
            self._my_offers[offer_id] = (name, conv.key)
            while len(self._my_offers) > _MAX_PENDING:
                del self._my_offers[next(iter(self._my_offers))]

    def _on_file_fetched(self, ev: Mapping[str, Any], now: float) -> None:
        """Someone finished fetching a file we offered."""
        offer_id = _id(ev)
        name, key = self._my_offers.get(offer_id or "", ("", PUBLIC))
        name = _optional_label(ev.get("name")) or name or "your file"
        conv = self.conversations.get(key) or self.conversations[PUBLIC]
        self._tell(conv, f"{label(ev.get('by'))} fetched {name}", now)

    def _on_file_progress(self, ev: Mapping[str, Any], _now: float) -> None:
        offer_id = _id(ev)
        if offer_id is None:
            return
        transfer = self.transfers.get(offer_id)
        if transfer is None:
            offer = self.offers.pop(offer_id, None)
            key = offer.key if offer else self.current
            transfer = self._transfer(offer_id, label(ev.get("name")), 0, key)
        transfer.size = _count(ev.get("size")) or transfer.size
        transfer.done = min(_count(ev.get("done")), transfer.size or _count(ev.get("done")))
        transfer.rate = max(0.0, _number(ev.get("rate"), 0.0))
        eta = ev.get("eta")
        transfer.eta = _number(eta, 0.0) if isinstance(eta, int | float) else None

    def _on_file_done(self, ev: Mapping[str, Any], now: float) -> None:
        offer_id = _id(ev)
        transfer = self.transfers.pop(offer_id, None) if offer_id else None
        name = label(ev.get("name"))
        path = _line_text(ev.get("path"))
        key = transfer.key if transfer else self.current
        conv = self.conversations.get(key) or self.current_conversation
        self._tell(conv, f"saved {name} ({human_size(_count(ev.get('size')))}) to {path}", now)

    def _on_file_failed(self, ev: Mapping[str, Any], now: float) -> None:
        offer_id = _id(ev)
        transfer = self.transfers.pop(offer_id, None) if offer_id else None
        offer = self.offers.pop(offer_id, None) if offer_id else None
        reason = label(ev.get("reason"))
        if reason == "declined" and transfer is None:
            return  # our own "no", already shown
        name = _optional_label(ev.get("name")) or (
            transfer.name if transfer else offer.name if offer else "the file"
        )
        message = _line_text(ev.get("message")) or reason
        key = transfer.key if transfer else offer.key if offer else self.current
        conv = self.conversations.get(key) or self.current_conversation
        if reason == "declined":
            self._tell(conv, f"stopped downloading {name}", now)
        else:
            self._tell(conv, f"{name} failed: {message}", now, LineKind.ERROR)

    def _on_warning(self, ev: Mapping[str, Any], now: float) -> bool:
        message = _text(ev.get("message")) or label(ev.get("code"))
        if ev.get("code") == "key_changed":
            message += (
                f" If they only reinstalled, compare the new code with them and type "
                f"/trust {label(ev.get('handle'))} CODE."
            )
        self.note(message, now, LineKind.WARNING)
        key = peer_key(label(ev.get("handle")))
        if key != self.current and key in self.conversations:
            self._add(self.conversations[key], Line(now, LineKind.WARNING, message))
        return False

    def _on_trusted(self, ev: Mapping[str, Any], now: float) -> None:
        handle = label(ev.get("handle"))
        peer = self._peer(handle)
        peer.relation = Friendship.NONE  # the friendship stays with the old key
        self.note(
            f"you trust {handle}'s new key ({label(ev.get('fingerprint'))}); "
            f"send /request {handle} to chat privately again",
            now,
        )

    def _on_authority(self, ev: Mapping[str, Any], now: float) -> None:
        code = label(ev.get("code"))
        self.note(
            f"room code {code}: students who start with lanchat --room-code {code} "
            "trust only this room's mentors",
            now,
        )

    def _on_mentor_added(self, ev: Mapping[str, Any], now: float) -> None:
        handle = label(ev.get("handle"))
        if handle == self.status.handle:
            self.note("you are now a mentor of this room", now)
            return
        self._peer(handle).mentor = True
        self.note(f"{handle} is now a mentor of this room", now)

    def _on_error(self, ev: Mapping[str, Any], now: float) -> None:
        code = label(ev.get("code"))
        message = _text(ev.get("message")).replace("\n", " ") or code
        self.status.last_error, self.status.last_error_message = code, message
        self.note(message, now, LineKind.ERROR)

    # ---------------------------------------------------------------- helpers

    def _set_presence(self, peer: Peer, status: object, text: object) -> None:
        peer.status = status if isinstance(status, str) and status in _PRESENCE else "online"
        peer.status_text = _optional_label(text) if peer.status != "online" else ""

    def _receipt(self, msg_id: str, receipt: Receipt) -> None:
        if self.receipts.get(msg_id) is Receipt.READ:
            return
        self.receipts[msg_id] = receipt
        while len(self.receipts) > _MAX_RECEIPTS:
            del self.receipts[next(iter(self.receipts))]

    def _learn_id(self, key: str, msg_id: str) -> None:
        """Give ``msg_id`` to the oldest own line of the chat sent without a known id.

        A fallback for nodes whose ``execute`` does not return ids: the friend's node
        acknowledges a chat's messages in the order they were sent.
        """
        waiting = self._awaiting_id.get(key)
        conv = self.conversations.get(key)
        if not waiting or conv is None:
            return
        if any(line.msg_id == msg_id for line in reversed(conv.lines)):
            return  # a message shown with its id (e.g. from the history)
        old = waiting.popleft()
        self._replace(conv, old, dataclasses.replace(old, msg_id=msg_id))

    def _replace(self, conv: Conversation, old: Line, new: Line) -> None:
        for index in range(len(conv.lines) - 1, -1, -1):
            if conv.lines[index] is old:
                conv.lines[index] = new
                return

    def _transfer(self, offer_id: str, name: str, size: int, key: str) -> Transfer:
        transfer = self.transfers[offer_id] = Transfer(offer_id, name, size, key)
        while len(self.transfers) > _MAX_PENDING:
            del self.transfers[next(iter(self.transfers))]
        return transfer

    def _alert(self, title: str, body: str) -> None:
        self.alerts.append(Alert(title, " ".join(body.split())))

    def _tell(
        self, conv: Conversation, text: str, now: float, kind: LineKind = LineKind.INFO
    ) -> None:
        """A line in ``conv``, and in the conversation on screen if that is another one."""
        self._add(conv, Line(now, kind, text))
        if conv.key != self.current:
            self.note(text, now, kind)

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

    def _merge_lines(self, conv: Conversation, lines: list[Line]) -> int:
        """Add lines by time, skipping ids already shown; returns how many were new."""
        ids = {line.msg_id for line in conv.lines if line.msg_id}
        fresh = [line for line in lines if line.msg_id is None or line.msg_id not in ids]
        if fresh:
            merged = sorted([*conv.lines, *fresh], key=lambda line: line.t)
            conv.lines = deque(merged, maxlen=self.max_lines)
            _sort_ordered(conv)
            self.scroll = min(self.scroll, max(0, len(conv.lines) - 1))
        return len(fresh)

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
            echo = next(
                (e for e in echoes if own and e.text == text and abs(e.t - t) < _OWN_ECHO_WINDOW_S),
                None,
            )
            if echo is not None:
                if msg_id is not None:  # now its id is known (receipts refer to it)
                    echoes.remove(echo)
                    known = dataclasses.replace(echo, msg_id=msg_id, order=_order(rec))
                    self._replace(conv, echo, known)
                    waiting = self._awaiting_id.get(conv.key)
                    if waiting and echo in waiting:
                        waiting.remove(echo)
                continue
            kind = LineKind.OWN if own else LineKind.MESSAGE
            line = Line(t, kind, text, label(rec.get("from")), msg_id, order=_order(rec))
            if own and msg_id is not None and line.order is not None and msg_id in ids:
                continue
            fresh.append(line)
        if fresh or conv.key == PUBLIC:
            merged = sorted([*conv.lines, *fresh], key=lambda line: line.t)
            conv.lines = deque(merged, maxlen=self.max_lines)
            _sort_ordered(conv)
            self.scroll = min(self.scroll, max(0, len(conv.lines) - 1))
        return len(fresh)


def queue_row(entry: QueueEntry, now: float) -> str:
    """``N. who — topic (waiting 3 min)``."""
    minutes = int(max(0.0, now - entry.since) // 60)
    waited = "just now" if minutes < 1 else f"waiting {minutes} min"
    topic = f" — {entry.topic}" if entry.topic else ""
    mine = " (yours)" if entry.claimed_by else ""
    return f"{entry.n}. {entry.who}{topic} ({waited}){mine}"


def _mention_pattern(handle: str) -> re.Pattern[str] | None:
    if handle in ("", "?"):
        return None
    return re.compile(rf"(?<![\w.-]){re.escape(handle)}(?![\w-])", re.IGNORECASE)


def _sent_t(ev: Mapping[str, Any], now: float) -> float:
    """When a message was written (its ``sent_t``), else when it arrived."""
    return _number(ev.get("sent_t"), now) or now


def _order(record: Mapping[str, Any]) -> tuple[Any, ...] | None:
    """A message's place in the room's order (``[place, author, seq]``), if it has one."""
    value = record.get("order")
    if (
        isinstance(value, list)
        and len(value) == 3
        and isinstance(value[0], int)
        and isinstance(value[1], str)
        and isinstance(value[2], int)
    ):
        return tuple(value)
    return None


def _walk(lines: deque[Line], start: int, step: int) -> Iterator[Line]:
    i = start
    while 0 <= i < len(lines):
        yield lines[i]
        i += step


def _rank(line: Line) -> tuple[Any, ...] | None:
    """Where a line goes among the room's messages: by its place; ours not placed yet
    after every placed one (as the history lists them); None: a note, left where it is."""
    if line.order is not None:
        return (0, line.order)
    if line.kind is LineKind.OWN:
        return (1, line.t)
    return None


def _sort_ordered(conv: Conversation) -> None:
    """Put the room's messages in the room's order, in the slots they occupy; notes stay
    where they are."""
    if conv.key != PUBLIC:
        return  # private chats: in send order already
    slots = [i for i, line in enumerate(conv.lines) if _rank(line) is not None]
    ordered = sorted((conv.lines[i] for i in slots), key=lambda line: _rank(line) or ())
    for i, line in zip(slots, ordered, strict=True):
        conv.lines[i] = line


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
