"""Rules for handles (user names) and room names."""

from __future__ import annotations

import re
import unicodedata
from typing import Final

__all__ = [
    "DEFAULT_ROOM",
    "FALLBACK_HANDLE",
    "MAX_NAME_CHARS",
    "HandleError",
    "RoomError",
    "handle_key",
    "room_key",
    "suggest_handle",
    "validate_handle",
    "validate_room",
]

MAX_NAME_CHARS: Final = 32
DEFAULT_ROOM: Final = "lobby"
FALLBACK_HANDLE: Final = "guest"

_ALLOWED: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-.")
_RULE: Final = f"1-{MAX_NAME_CHARS} characters: letters, digits, _ - ."
_WHITESPACE: Final = re.compile(r"\s+")


class HandleError(ValueError):
    """A handle breaks the naming rules; the message states the rules and the problem."""


class RoomError(ValueError):
    """A room name breaks the naming rules; the message states the rules and the problem."""


def _problem(name: str) -> str | None:
    if not name:
        return "it is empty"
    if len(name) > MAX_NAME_CHARS:
        return f"it has {len(name)} characters"
    for position, char in enumerate(name, start=1):
        if char not in _ALLOWED:
            # repr() escapes control and invisible characters, so the message is safe to print.
            return f"character {position} ({char!r}) is not allowed"
    return None


def validate_handle(handle: str) -> str:
    """Return ``handle`` unchanged if valid, else raise HandleError."""
    problem = _problem(handle)
    if problem is not None:
        raise HandleError(f"a handle is {_RULE}; {problem}")
    return handle


def validate_room(room: str) -> str:
    """Return ``room`` unchanged if valid, else raise RoomError."""
    problem = _problem(room)
    if problem is not None:
        raise RoomError(f"a room name is {_RULE}; {problem}")
    return room


def handle_key(handle: str) -> str:
    """The form handles are compared in: uniqueness is case-insensitive."""
    return handle.casefold()


def room_key(room: str) -> str:
    """The form room names are compared in: case-insensitive, like handles."""
    return room.casefold()


def suggest_handle(login: str) -> str:
    """A valid handle made from any login name: ``"José Núñez"`` → ``"Jose_Nunez"``."""
    # NFKD splits accented letters into base letter + combining mark; the mark is then dropped.
    ascii_only = unicodedata.normalize("NFKD", login).encode("ascii", "ignore").decode("ascii")
    underscored = _WHITESPACE.sub("_", ascii_only.strip())
    kept = "".join(char for char in underscored if char in _ALLOWED)
    trimmed = kept[:MAX_NAME_CHARS].strip("_-.")
    return trimmed or FALLBACK_HANDLE
