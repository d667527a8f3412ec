"""The view model as styled text, one function per part of the screen. Pure.

Fragments are ``(style, text)`` pairs, the shape prompt_toolkit's formatted text takes;
styles name classes of the screen's style sheet (``class:sender``), never raw colours.
"""

from __future__ import annotations

import re
import time
import unicodedata
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from lanchat.core.friendship import Friendship
from lanchat.ui.commands import HELP_ROWS
from lanchat.ui.model import PUBLIC, Line, LineKind

if TYPE_CHECKING:
    from collections.abc import Sequence

    from lanchat.ui.model import SidebarEntry, ViewModel

__all__ = [
    "ASCII",
    "TIME_WIDTH",
    "UNICODE",
    "Fragments",
    "Markers",
    "cells",
    "conversation",
    "help_screen",
    "prompt",
    "request_bar",
    "sidebar",
    "status_left",
    "status_right",
    "wrap",
]

Fragments = list[tuple[str, str]]

TIME_WIDTH: Final = len("HH:MM ")
CURSOR: Final = "[SetCursorPosition]"  # prompt_toolkit scrolls a window to keep this visible


@dataclass(frozen=True, slots=True)
class Markers:
    mentor: str
    friend: str
    pending_in: str
    pending_out: str
    blocked: str

    def relation(self, relation: Friendship) -> str:
        return {
            Friendship.FRIEND: self.friend,
            Friendship.PENDING_IN: self.pending_in,
            Friendship.PENDING_OUT: self.pending_out,
            Friendship.BLOCKED: self.blocked,
        }.get(relation, " ")


UNICODE: Final = Markers(mentor="★", friend="♥", pending_in="?", pending_out="→", blocked="✕")
ASCII: Final = Markers(mentor="M", friend="F", pending_in="?", pending_out="~", blocked="x")


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


def clock(t: float) -> str:
    return time.strftime("%H:%M", time.localtime(t)) if t > 0 else "--:--"


# ------------------------------------------------------------------ main pane


def conversation(model: ViewModel, count: int, width: int = 0) -> Fragments:
    """The last ``count`` lines of the current conversation, word-wrapped to ``width``.

    Fewer than ``count`` may fit once wrapped; the window shows the end. ``width`` 0: no wrap.
    """
    conv = model.current_conversation
    lines = model.visible_lines(count)
    out: Fragments = []
    if not lines:
        out.append(("class:info", _placeholder(model)))
    for index, line in enumerate(lines):
        if index:
            out.append(("", "\n"))
        out.extend(wrap(_line(line), width, TIME_WIDTH) if width else _line(line))
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
    return f"Private chat with {model.current_conversation.title}."


def _line(line: Line) -> Fragments:
    body = line.text.replace("\n", "\n" + " " * TIME_WIDTH)
    stamp = ("class:time", clock(line.t) + " ")
    if line.kind is LineKind.MESSAGE:
        text_style = "class:mention" if line.mention else "class:text"
        return [stamp, ("class:sender", line.sender), ("", ": "), (text_style, body)]
    if line.kind is LineKind.OWN:
        return [stamp, ("class:sender.own", line.sender), ("", ": "), ("class:text", body)]
    if line.kind is LineKind.WARNING:
        return [stamp, ("class:warning", f"warning: {body}")]
    if line.kind is LineKind.ERROR:
        return [stamp, ("class:error", f"error: {body}")]
    return [stamp, ("class:info", f"· {body}")]


def help_screen(keys: Sequence[tuple[str, str]]) -> Fragments:
    """Every command and key on one screen (fits 80x24)."""
    out: Fragments = [
        ("class:help.title", "lanchat help"),
        ("class:info", "  Esc or F1 closes · //text sends a line that starts with /\n"),
        ("class:help.section", "Commands (H = a handle)\n"),
    ]
    rows = [*HELP_ROWS, ("", ""), *keys]
    for usage, meaning in rows:
        if not usage:
            out.append(("class:help.section", "Keys\n"))
            continue
        out += [("class:help.key", f"  {usage:<26}"), ("", f"{meaning}\n")]
    out[-1] = (out[-1][0], out[-1][1].rstrip("\n"))
    return out


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
        marks = (markers.mentor if entry.mentor else " ") + markers.relation(entry.relation)
    unread = f" {entry.unread}" if entry.unread else ""
    if not entry.is_room and not entry.online:
        unread = unread or " off"
    marks += " "
    name = fit(entry.label, max(1, width - 2 - cells(marks) - len(unread)))
    pad = max(0, width - 2 - cells(marks) - cells(name) - len(unread))
    row = f" {marks}{name}{' ' * pad}{unread} "
    style = "class:sidebar.entry"
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


def status_left(model: ViewModel) -> Fragments:
    status = model.status
    out: Fragments = [("class:status.room", f" {status.room} ")]
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
    return [("class:status.me", f" {status.handle} "), ("class:status", f"{short} ")]


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


def prompt(model: ViewModel) -> str:
    if model.current == PUBLIC:
        return f"{model.status.room}> "
    return f"@{model.current_conversation.title}> "
