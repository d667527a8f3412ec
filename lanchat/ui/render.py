"""The view model as styled text, one function per part of the screen. Pure.

Fragments are ``(style, text)`` pairs, the shape prompt_toolkit's formatted text takes;
styles name classes of the screen's style sheet (``class:sender``), never raw colours.
"""

from __future__ import annotations

import functools
import re
import time
import unicodedata
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from pygments.lexers import get_lexer_by_name
from pygments.util import ClassNotFound

from lanchat.core.friendship import Friendship
from lanchat.ui.commands import ACTION_PREFIX, HELP_ROWS, HELP_USAGE_WIDTH
from lanchat.ui.model import (
    FOLD_LINES,
    FOLD_SHOWN,
    PUBLIC,
    Block,
    Line,
    LineKind,
    Receipt,
    human_size,
    is_action,
    ordinal,
    queue_row,
    short_id,
    split_blocks,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from lanchat.ui.model import SidebarEntry, Transfer, ViewModel

__all__ = [
    "ASCII",
    "TIME_WIDTH",
    "UNICODE",
    "Fragments",
    "Markers",
    "cells",
    "clock",
    "confirm_bar",
    "conversation",
    "hand_bar",
    "help_screen",
    "offer_bar",
    "prompt",
    "queue_panel",
    "request_bar",
    "search_screen",
    "sidebar",
    "status_left",
    "status_right",
    "transfer_panel",
    "wrap",
]

Fragments = list[tuple[str, str]]

TIME_WIDTH: Final = len("HH:MM ")
CURSOR: Final = "[SetCursorPosition]"  # prompt_toolkit scrolls a window to keep this visible
QUEUE_SHOWN: Final = 3  # hands listed in the queue panel; /queue lists them all
TRANSFERS_SHOWN: Final = 2
NEW_HAND_S: Final = 60.0  # a hand this young is highlighted in the queue panel
_BAR_CELLS: Final = 20


@dataclass(frozen=True, slots=True)
class Markers:
    mentor: str
    friend: str
    pending_in: str
    pending_out: str
    blocked: str
    helping: str  # a help session goes on in this chat
    delivered: str
    read: str
    bar_done: str
    bar_todo: str

    def relation(self, relation: Friendship) -> str:
        return {
            Friendship.FRIEND: self.friend,
            Friendship.PENDING_IN: self.pending_in,
            Friendship.PENDING_OUT: self.pending_out,
            Friendship.BLOCKED: self.blocked,
        }.get(relation, " ")


UNICODE: Final = Markers(
    mentor="★",
    friend="♥",
    pending_in="?",
    pending_out="→",
    blocked="✕",
    helping="✚",
    delivered="✓",
    read="✓✓",
    bar_done="█",
    bar_todo="░",
)
ASCII: Final = Markers(
    mentor="M",
    friend="F",
    pending_in="?",
    pending_out="~",
    blocked="x",
    helping="+",
    delivered="v",
    read="vv",
    bar_done="#",
    bar_todo="-",
)


def cells(text: str) -> int:
    """Terminal columns ``text`` takes (wide East Asian characters take two)."""
    width = 0
    for char in text:
        if unicodedata.combining(char):
            continue
        width += 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1
    return width


def fit(text: str, width: int) -> str:
    """``text`` cut to ``width`` columns, marking the cut with "…"."""
    if cells(text) <= width:
        return text
    out = ""
    for char in text:
        if cells(out + char) > width - 1:
            break
        out += char
    return out + "…" if width > 0 else ""


_TOKEN: Final = re.compile(r"\S+\s*|\s+")


def wrap(fragments: Fragments, width: int, indent: int) -> Fragments:
    """Break styled text at spaces so no row is wider than ``width``; later rows indented.

    Words longer than a row are cut. Too narrow to indent: returned as is (the window wraps).
    """
    if width <= indent + 8:
        return fragments
    out: Fragments = []
    pad = " " * indent
    col = 0
    for style, text in fragments:
        for index, part in enumerate(text.split("\n")):
            if index:
                out.append(("", "\n"))
                col = 0
            for found in _TOKEN.findall(part):
                token, word = found, found.rstrip()
                if not word and col + cells(token) > width:
                    col = width  # spaces at the end of a row are dropped
                    continue
                if col + cells(word) > width and col > indent:
                    out.append(("", "\n" + pad))
                    col = indent
                while cells(word) > width - col:  # longer than a whole row
                    head = fit(word, width - col + 1)[:-1] or word[0]
                    out += [(style, head), ("", "\n" + pad)]
                    col = indent
                    word = word[len(head) :]
                    token = token[len(head) :]
                if col + cells(token) > width:
                    out.append((style, word))
                    col = width  # the next word starts a new row
                else:
                    out.append((style, token))
                    col += cells(token)
    return out


def clock(t: float, now: float | None = None) -> str:
    """HH:MM of ``t``; with the day when that is not today (the year when not this year)."""
    if t <= 0:
        return "--:--"
    when = time.localtime(t)
    today = time.localtime(time.time() if now is None else now)
    if when.tm_year != today.tm_year:
        return time.strftime("%Y-%m-%d %H:%M", when)
    if when.tm_yday != today.tm_yday:
        return time.strftime("%d %b %H:%M", when)
    return time.strftime("%H:%M", when)


# ------------------------------------------------------------------ code

# Fence names people type, to Pygments' names; anything else is tried as typed.
_LANGUAGE_ALIASES: Final = {"py": "python", "js": "javascript", "sh": "bash", "shell": "bash"}
# A block without a language: the first of these signs decides (a guess among the languages
# of a workshop; Pygments' own guess, over hundreds of lexers, often picks an exotic one).
_LANGUAGE_SIGNS: Final = (
    ("c", re.compile(r"^\s*#include\b", re.MULTILINE)),
    ("java", re.compile(r"\bpublic (static |final )*(class|void)\b|System\.out\.")),
    ("rust", re.compile(r"\bfn \w+\(|\blet mut\b")),
    ("go", re.compile(r"^\s*(package \w+|func \w+\()", re.MULTILINE)),
    ("javascript", re.compile(r"\b(function\s*\w*\(|const \w+ =|let \w+ =|=>|console\.log)")),
    ("sql", re.compile(r"^\s*(SELECT|INSERT|UPDATE|CREATE TABLE)\b", re.MULTILINE | re.I)),
    ("html", re.compile(r"^\s*<(!DOCTYPE|html|div|p|head|body)\b", re.MULTILINE | re.I)),
    ("bash", re.compile(r"^(#!/bin/(ba)?sh|\$ )", re.MULTILINE)),
    ("python", re.compile(r"^\s*(def |class |import |from \S+ import|print\(|if .*:$)", re.M)),
)


def guess_language(code: str) -> str:
    """The language of an unlabelled code block, or "" when there is no sign of one."""
    for language, sign in _LANGUAGE_SIGNS:
        if sign.search(code):
            return language
    return ""


@functools.lru_cache(maxsize=256)  # redrawn every second: lex each block once
def highlight(code: str, language: str = "") -> tuple[tuple[str, str], ...]:
    """``code`` as styled fragments (class:code plus Pygments' token classes)."""
    name = _LANGUAGE_ALIASES.get(language, language) or guess_language(code)
    if not name:
        return (("class:code", code),)
    try:
        lexer = get_lexer_by_name(name, stripnl=False, ensurenl=False)
    except ClassNotFound:
        return (("class:code", code),)
    # Token.Keyword.Namespace: class pygments.keyword.namespace (as prompt_toolkit names it)
    return tuple(
        (f"class:code,{'.'.join(('pygments', *kind)).lower()}", value)
        for kind, value in lexer.get_tokens(code)
    )


def _code_rows(block: Block, pad: str, gutter: str, folded: bool) -> Fragments:
    """A code block as is: one row per line behind a gutter, cut to FOLD_SHOWN when folded."""
    rows: list[Fragments] = [[]]
    for style, text in highlight(block.text, block.language):
        for index, part in enumerate(text.split("\n")):
            if index:
                rows.append([])
            if part:
                rows[-1].append((style, part))
    hidden = len(rows) - FOLD_SHOWN if folded and len(rows) > FOLD_LINES else 0
    out: Fragments = []
    for row in rows[: len(rows) - hidden]:
        out += [("", "\n" + pad), ("class:code.gutter", gutter), *row]
    if hidden:
        out += [("", "\n" + pad), ("class:fold", _fold_note(hidden, code=True))]
    return out


def _fold_note(hidden: int, *, code: bool) -> str:
    save = " · /save FILE saves it" if code else ""
    return f"┄ {hidden} more lines · Ctrl-O shows them{save}"


# ------------------------------------------------------------------ main pane


def conversation(
    model: ViewModel,
    count: int,
    width: int = 0,
    markers: Markers = UNICODE,
    now: float | None = None,
) -> Fragments:
    """The last ``count`` lines of the current conversation, word-wrapped to ``width``.

    Fewer than ``count`` may fit once wrapped; the window shows the end. ``width`` 0: no wrap.
    Own private messages end with ✓ once delivered and ✓✓ once read. Code is shown as is
    (highlighted, never re-wrapped); long code and long pastes are folded until Ctrl-O.
    """
    conv = model.current_conversation
    lines = model.visible_lines(count)
    at = time.time() if now is None else now
    out: Fragments = []
    if not lines:
        out.append(("class:info", _placeholder(model)))
    for index, line in enumerate(lines):
        if index:
            out.append(("", "\n"))
        receipt = model.receipt(line) if conv.key != PUBLIC else None
        tail: Fragments = []
        if receipt is not None:
            mark = markers.read if receipt is Receipt.READ else markers.delivered
            tail.append((f"class:receipt.{receipt.value}", f" {mark}"))
        folded = not conv.unfolded
        out.extend(_line(model, line, at, markers, width, tail, folded=folded))
    if model.scroll:
        below = min(model.scroll, len(conv.lines))
        out.append(("", "\n"))
        out.append(
            (
                "class:scrolled",
                f"── {below} newer line{'s' if below != 1 else ''} below: PageDown, Esc ──",
            )
        )
    out.append((CURSOR, ""))
    return out


def _placeholder(model: ViewModel) -> str:
    if model.current == PUBLIC:
        return (
            f"Room {model.status.room}: type a message and press Enter. "
            "F1 or /help lists commands and keys."
        )
    conv = model.current_conversation
    if conv.hand is not None:
        return f"Help session with {conv.title}."
    return f"Private chat with {conv.title}."


def _line(
    model: ViewModel,
    line: Line,
    now: float,
    markers: Markers,
    width: int,
    tail: Fragments,
    *,
    folded: bool,
) -> Fragments:
    """One line of the chat: time, sender, then its text (prose wrapped, code as is)."""
    stamp = clock(line.t, now) + " "
    indent = cells(stamp)
    pad = " " * indent
    time_style = "class:time.hit" if line is model.highlight else "class:time"
    head: Fragments = [(time_style, stamp)]

    def wrapped(fragments: Fragments) -> Fragments:
        return wrap(fragments, width, indent) if width else fragments

    if line.kind not in (LineKind.MESSAGE, LineKind.OWN):
        body = line.text.replace("\n", "\n" + pad)
        style, prefix = {
            LineKind.WARNING: ("class:warning", "warning: "),
            LineKind.ERROR: ("class:error", "error: "),
        }.get(line.kind, ("class:info", "· "))
        return wrapped([*head, (style, prefix + body), *tail])
    name = _sender(model, line, markers)
    text_style = "class:mention" if line.mention else "class:text"
    if is_action(line.text):  # /me waves: "* ann waves", one line of prose
        action = " ".join(line.text[len(ACTION_PREFIX) :].split())
        return wrapped(
            [*head, ("class:action", "* "), *name, ("class:action", f" {action}"), *tail]
        )
    out: Fragments = []
    first: Fragments = [*head, *name, ("", ":")]
    for index, block in enumerate(split_blocks(line.text)):
        if block.code:
            if index == 0:
                out += wrapped(first)
            out += _code_rows(block, pad, "│ ", folded)
            continue
        rows = block.text.split("\n")
        hidden = len(rows) - FOLD_SHOWN if folded and len(rows) > FOLD_LINES else 0
        body = ("\n" + pad).join(rows[: len(rows) - hidden])  # each row under the text
        prose: Fragments = [(text_style, body)]
        if hidden:
            prose += [("", "\n" + pad), ("class:fold", _fold_note(hidden, code=False))]
        if index == 0:
            out += wrapped([*first, ("", " "), *prose])
        else:
            out += [("", "\n"), *wrapped([("", pad), *prose])]
    return out + tail


def _sender(model: ViewModel, line: Line, markers: Markers) -> Fragments:
    """The sender's name in its own colour, with the mentor / friend mark in front of it."""
    if line.kind is LineKind.OWN:
        return [("class:sender.own", line.sender)]
    if line.unverified:  # not the key this handle is known by: no colour, no marks of trust
        return [("class:warning", line.sender)]
    marks = (markers.mentor if model.is_mentor(line.sender) else "") + (
        markers.friend if model.is_friend(line.sender) else ""
    )
    style = f"class:sender,sender.c{model.colour(line.sender)}"
    return (
        [(f"{style},sender.mark", marks), (style, line.sender)] if marks else [(style, line.sender)]
    )


def help_screen(keys: Sequence[tuple[str, str]], skip: int = 0) -> Fragments:
    """Every command and key, from row ``skip`` on (Up/Down and PageUp/PageDown scroll)."""
    rows: list[Fragments] = [
        [
            ("class:help.title", "lanchat help"),
            ("class:info", "  Esc, Enter or F1 closes · Up/Down scroll · //text sends /text"),
        ],
        [("class:help.section", "Commands (H = a handle)")],
    ]
    for usage, meaning in [*HELP_ROWS, ("", ""), *keys]:
        if not usage:
            rows.append([("class:help.section", "Keys")])
            continue
        rows.append([("class:help.key", f"  {usage:<{HELP_USAGE_WIDTH}}"), ("", meaning)])
    out: Fragments = []
    for index, row in enumerate(rows[max(0, min(skip, len(rows) - 1)) :]):
        if index:
            out.append(("", "\n"))
        out += row
    return out


def help_rows(keys: Sequence[tuple[str, str]]) -> int:
    """How many rows the help screen has."""
    return len(HELP_ROWS) + len(keys) + 3


def search_screen(model: ViewModel, width: int, height: int, now: float | None = None) -> Fragments:
    """The /search results: one hit per row, the selected one highlighted."""
    search = model.search
    if search is None:
        return []
    at = time.time() if now is None else now
    where = "this chat" + ("" if search.done else " (searching the stored history…)")
    count = f"{len(search.hits)} hit{'s' if len(search.hits) != 1 else ''}"
    out: Fragments = [
        ("class:help.title", fit(f"search {search.text!r} in {where}: {count}", width)),
        ("", "\n"),
        ("class:info", fit("Up/Down choose · Enter shows it in the chat · Esc closes", width)),
    ]
    if not search.hits:
        return [*out, ("", "\n"), ("class:info", "  nothing found")]
    shown = max(1, height - 2)
    first = max(0, min(search.selected - shown // 2, len(search.hits) - shown))
    for index, hit in enumerate(search.hits[first : first + shown], start=first):
        text = " ".join(hit.text.split())
        row = fit(f"  {clock(hit.t, at)} {hit.sender}: {text}", width)
        style = "class:search.selected" if index == search.selected else ""
        out += [("", "\n"), *([(CURSOR, "")] if style else []), (style, row)]
    return out


def confirm_bar(model: ViewModel) -> Fragments:
    """A line that looks like a command without its "/": ask before it goes out as text."""
    if model.confirm is None:
        return []
    typed, fixed = model.confirm
    where = "the room" if model.current == PUBLIC else model.current_conversation.title
    return [
        ("class:confirm", f" {fit(typed, 30)!r} looks like {fixed.split()[0]} without its /: "),
        ("class:confirm.key", "/"),
        ("class:confirm", f" runs {fit(fixed, 30)} · "),
        ("class:confirm.key", "y"),
        ("class:confirm", f" sends it to {where} as typed · "),
        ("class:confirm.key", "Esc"),
        ("class:confirm", " edits it "),
    ]


# ------------------------------------------------------------------ sidebar


def sidebar(model: ViewModel, width: int, markers: Markers = UNICODE) -> Fragments:
    out: Fragments = []
    entries = model.sidebar()
    for index, entry in enumerate(entries):
        if index == 1:
            out.append(("class:sidebar.heading", fit(" people", width) + "\n"))
        out.extend(_entry(entry, width, markers))
        out.append(("", "\n"))
    if len(entries) == 1:
        out.append(("class:sidebar.offline", fit(" nobody else yet", width)))
    return out


def _entry(entry: SidebarEntry, width: int, markers: Markers) -> Fragments:
    if entry.is_room:
        marks = "#"
    else:
        role = markers.helping if entry.helping else markers.mentor if entry.mentor else " "
        marks = role + markers.relation(entry.relation)
    unread = f" {entry.unread}" if entry.unread else ""
    if not entry.is_room and not entry.online:
        unread = unread or " off"
    marks += " "
    label = entry.label
    if entry.status != "online":
        label += (
            f" ({entry.status}: {entry.status_text})" if entry.status_text else f" ({entry.status})"
        )
    name = fit(label, max(1, width - 2 - cells(marks) - len(unread)))
    pad = max(0, width - 2 - cells(marks) - cells(name) - len(unread))
    row = f" {marks}{name}{' ' * pad}{unread} "
    style = "class:sidebar.entry"
    if entry.status != "online":
        style = f"class:sidebar.{entry.status}"
    if not entry.online:
        style = "class:sidebar.offline"
    if entry.unread:
        style = "class:sidebar.unread"
    if entry.attention:
        style = "class:sidebar.attention"
    if entry.current:
        style = "class:sidebar.current"
        return [(CURSOR, ""), (style, row)]
    return [(style, row)]


# ------------------------------------------------------------------ bars


def status_left(model: ViewModel, now: float | None = None) -> Fragments:
    status = model.status
    out: Fragments = [("class:status.room", f" {model.chat_title()} ")]
    typing = model.typing_text(time.time() if now is None else now)
    if typing:
        out.append(("class:status.typing", f" {typing} "))
    else:
        away = model.peer_presence()
        if away:
            out.append(("class:status.away", f" {away} "))
    text = status.text
    if status.state in ("connected", "broker"):
        text = f"{text} · {model.online_count()} online"
    out.append(("class:status", f" {text}"))
    if model.scroll:
        out.append(("class:status.scrolled", "  [scrolled]"))
    return out


def status_right(model: ViewModel) -> Fragments:
    status = model.status
    short = "-".join(status.fingerprint.split("-")[:2])
    out: Fragments = []
    if status.presence != "online":
        extra = f": {status.presence_text}" if status.presence_text else ""
        out.append(("class:status.away", f" {status.presence}{extra} "))
    return [*out, ("class:status.me", f" {status.handle} "), ("class:status", f"{short} ")]


def request_bar(model: ViewModel) -> Fragments:
    first = model.first_request()
    if first is None:
        return []
    handle, fingerprint = first
    more = len(model.requests) - 1
    tail = f" ({more} more waiting)" if more else ""
    return [
        ("class:request", f" {handle} wants to chat privately (key {fingerprint}){tail}: "),
        ("class:request.key", "F2"),
        ("class:request", " accept · "),
        ("class:request.key", "F3"),
        ("class:request", f" reject · or /accept {handle}, /reject {handle} "),
    ]


def offer_bar(model: ViewModel) -> Fragments:
    """The oldest file offer waiting for an answer, with the keys that answer it."""
    offer = model.first_offer()
    if offer is None:
        return []
    more = len(model.offers) - 1
    tail = f" ({more} more waiting)" if more else ""
    room = " to the room" if offer.shared else ""
    return [
        (
            "class:offer",
            f" {offer.sender} offers {offer.name} ({human_size(offer.size)}){room}{tail}: ",
        ),
        ("class:offer.key", "F4"),
        ("class:offer", " accept · "),
        ("class:offer.key", "F5"),
        ("class:offer", f" decline · or /accept-file {short_id(offer.id)} "),
    ]


def hand_bar(model: ViewModel) -> Fragments:
    """Students: where our raised hand stands."""
    hands = sorted(model.hands.values(), key=lambda h: h.state != "claimed")
    if not hands:
        return []
    hand = hands[0]
    more = (
        f" (+{len(hands) - 1} more hand{'s' if len(hands) > 2 else ''})" if len(hands) > 1 else ""
    )
    if hand.state == "claimed" and hand.mentor:
        here = model.current_conversation.hand == hand.id
        how = "type to talk privately" if here else f"/join {hand.mentor} to talk privately"
        text = f" {hand.mentor} is with you — {how} · /done when you are helped{more} "
        return [("class:hand.claimed", text)]
    line = f" ({ordinal(hand.position)} in line)" if hand.position else ""
    text = f" your hand is up{line} · a mentor will come to you · /done lowers it{more} "
    return [("class:hand", text)]


def queue_panel(model: ViewModel, width: int, now: float | None = None) -> Fragments:
    """Mentors: the hands waiting for help, oldest first (``/queue`` lists them all)."""
    waiting = model.waiting_hands()
    if not waiting:
        return []
    at = time.time() if now is None else now
    count = f"{len(waiting)} waiting" if len(waiting) != 1 else "1 waiting"
    head = f" help queue: {count} · /claim N helps hand N"
    if len(waiting) > QUEUE_SHOWN:
        head += " · /queue lists all"
    out: Fragments = [("class:queue.title", fit(head, width))]
    for entry in waiting[:QUEUE_SHOWN]:
        style = "class:queue.new" if at - entry.since < NEW_HAND_S else "class:queue"
        out += [("", "\n"), (style, fit(" " + queue_row(entry, at), width))]
    return out


def transfer_panel(model: ViewModel, width: int, markers: Markers = UNICODE) -> Fragments:
    """Downloads under way: a bar, the rate and the time left."""
    transfers = list(model.transfers.values())
    out: Fragments = []
    for index, transfer in enumerate(transfers[:TRANSFERS_SHOWN]):
        if index:
            out.append(("", "\n"))
        row = _progress(transfer, markers)
        if index == TRANSFERS_SHOWN - 1 and len(transfers) > TRANSFERS_SHOWN:
            row += f" (+{len(transfers) - TRANSFERS_SHOWN} more)"
        out.append(("class:transfer", fit(row, width)))
    return out


def _progress(transfer: Transfer, markers: Markers) -> str:
    share = transfer.done / transfer.size if transfer.size else 0.0
    filled = round(share * _BAR_CELLS)
    bar = markers.bar_done * filled + markers.bar_todo * (_BAR_CELLS - filled)
    parts = [f" {fit(transfer.name, 24)} {bar} {share:4.0%}"]
    if transfer.rate > 0:
        parts.append(f"{human_size(transfer.rate)}/s")
    if transfer.eta is not None:
        parts.append(f"{_duration(transfer.eta)} left")
    return " · ".join(parts)


def _duration(seconds: float) -> str:
    total = max(0, round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02}:{secs:02}" if hours else f"{minutes}:{secs:02}"


def prompt(model: ViewModel) -> str:
    if model.current == PUBLIC:
        return f"{model.status.room}> "
    return f"@{model.current_conversation.title}> "
