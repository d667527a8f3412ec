"""What a line typed into the input box means: a node command, a local action or an error.

Pure: no prompt_toolkit, no node. The table below is the single source for parsing, the
help screen and completion, so the three cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final, TypeAlias

from lanchat.core.handles import HandleError, RoomError, validate_handle, validate_room
from lanchat.core.vocabulary import Cmd

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "ACTION_PREFIX",
    "COMMANDS",
    "DEFAULT_HISTORY",
    "HELP_ROWS",
    "HELP_USAGE_WIDTH",
    "MAX_HISTORY",
    "PRESENCE_STATES",
    "PUBLIC_NAMES",
    "Action",
    "Command",
    "CommandSpec",
    "InputContext",
    "InputError",
    "LocalAction",
    "lost_slash",
    "parse_input",
]

DEFAULT_HISTORY: Final = 50
# A message that starts with this is an action (/me waves): shown as "* ann waves".
ACTION_PREFIX: Final = "/me "
MAX_HISTORY: Final = 10_000
# Names that mean "the public room" wherever a handle or conversation is expected.
PUBLIC_NAMES: Final = frozenset({"", "#", "#public", "public"})
PRESENCE_STATES: Final = ("online", "away", "busy")
_ANON_FLAGS: Final = frozenset({"--anon", "-a", "--anonymous"})
_MAX_NUMBER_DIGITS: Final = 6


@dataclass(frozen=True, slots=True)
class CommandSpec:
    name: str
    usage: str
    summary: str
    handle_arg: bool = False  # the first argument is a handle (for completion)
    path_arg: bool = False  # a file path follows (after the handle, if any)
    choices: tuple[tuple[str, ...], ...] = ()  # the words each argument may be
    # Typed without its "/" (a slash lost to a stray key), does the line most likely mean
    # this command? "never": a common word ("me too"); "alone": only as the whole line
    # ("who"); "parsed": whenever it parses as the command; "known": parses, and its handle
    # is someone we know of ("block ada", not "block the door").
    bare: str = "never"


COMMANDS: Final[tuple[CommandSpec, ...]] = (
    CommandSpec(
        "/msg", "/msg H text", "private message to friend H", handle_arg=True, bare="parsed"
    ),
    CommandSpec("/say", "/say text", "public message (also from a private chat)"),
    CommandSpec("/me", "/me action", "say what you do: * ann waves"),
    CommandSpec(
        "/join", "/join H | public", "switch to the chat with H or the room", True, bare="known"
    ),
    CommandSpec("/request", "/request H", "ask H for a private chat", True, bare="known"),
    CommandSpec("/accept", "/accept [H]", "accept a request (default: the first)", True),
    CommandSpec("/reject", "/reject [H]", "decline a request (default: the first)", True),
    CommandSpec("/block", "/block H", "ignore H everywhere", handle_arg=True, bare="known"),
    CommandSpec("/unblock", "/unblock H", "stop ignoring H", handle_arg=True, bare="known"),
    CommandSpec("/unfriend", "/unfriend H", "end the friendship with H", True, bare="known"),
    CommandSpec(
        "/trust", "/trust H code", "trust H's new key (compare its code with H)", handle_arg=True
    ),
    CommandSpec("/who", "/who", "list who is online", bare="alone"),
    CommandSpec("/friends", "/friends", "list friends with their safety codes", bare="alone"),
    CommandSpec("/history", "/history [H] [N]", "load the last N messages", handle_arg=True),
    CommandSpec("/search", "/search text", "find text in this chat's stored history"),
    CommandSpec("/clear", "/clear", "empty this chat's window (the history stays)", bare="alone"),
    CommandSpec("/save", "/save path", "save the last code block of this chat", path_arg=True),
    CommandSpec("/rooms", "/rooms", "the rooms on the network, with their size", bare="alone"),
    CommandSpec("/room", "/room NAME", "move to room NAME"),
    CommandSpec(
        "/serve-install",
        "/serve-install [folder]",
        "mentors: hand lanchat to laptops without internet",
        path_arg=True,
    ),
    CommandSpec("/hand", "/hand [--anon] [topic]", "ask a mentor for help", choices=(("--anon",),)),
    CommandSpec("/done", "/done [id]", "lower your hand, or end a help session"),
    CommandSpec("/queue", "/queue", "mentors: list the help queue", bare="alone"),
    CommandSpec("/claim", "/claim N", "mentors: help hand number N of the queue", bare="parsed"),
    CommandSpec("/mentor", "/mentor add H", "mentors: make H (started with --mentor) a mentor"),
    CommandSpec(
        "/status",
        "/status online|away|busy [text]",
        "tell the others whether you are around",
        choices=(PRESENCE_STATES,),
    ),
    CommandSpec(
        "/set",
        "/set receipts|typing|notify on|off",
        "read receipts, typing indicator, desktop pop-ups",
        choices=(("receipts", "typing", "notify"), ("on", "off")),
        bare="parsed",
    ),
    CommandSpec(
        "/send", "/send H path", "offer a file to friend H", True, path_arg=True, bare="known"
    ),
    CommandSpec("/share", "/share path", "offer a file to everyone in the room", path_arg=True),
    CommandSpec("/accept-file", "/accept-file [id]", "download an offered file (default: oldest)"),
    CommandSpec("/decline-file", "/decline-file [id]", "decline a file offer (default: oldest)"),
    CommandSpec("/help", "/help", "this screen", bare="alone"),
    CommandSpec("/quit", "/quit", "leave (the others are told at once)", bare="alone"),
)
# The help screen groups related commands (it scrolls when the terminal is short).
HELP_ROWS: Final[tuple[tuple[str, str], ...]] = (
    ("/msg H text, /say text", "private message to friend H / public message"),
    ("/me action", "say what you do, shown as: * ann waves"),
    ("/join H | public", "switch to the chat with H, or back to the room"),
    ("/request, /accept, /reject H", "ask H for a private chat / answer (F2 / F3)"),
    ("/unfriend H", "end the friendship with H (they may ask again)"),
    ("/block H, /unblock H", "ignore H everywhere / stop ignoring H"),
    ("/trust H code", "H changed keys: trust the new one (code compared)"),
    ("/who, /friends", "who is online / your friends and safety codes"),
    ("/history [H] [N]", "load the last N stored messages of a chat"),
    ("/search text", "find text in this chat's history (Up/Down, Enter)"),
    ("/clear", "empty this chat's window (the history stays)"),
    ("/save path", "save the last code block of this chat to a file"),
    ("/rooms, /room NAME", "the rooms on the network / move to room NAME"),
    ("/serve-install [folder]", "serve lanchat to laptops without internet"),
    ("/hand [--anon] [topic]", "ask a mentor for help (--anon: name hidden)"),
    ("/done [id], /queue, /claim N", "end a hand · mentors: the queue, help hand N"),
    ("/mentor add H", "mentors: make H (a --mentor) a mentor too"),
    ("/status S [text]", "online, away or busy, e.g. /status away lunch"),
    ("/set X on|off", "X: receipts, typing or notify (desktop pop-ups)"),
    ("/send H path, /share path", "offer a file to friend H / to the whole room"),
    ("/accept-file, /decline-file", "answer a file offer [id] (F4 / F5: the oldest)"),
    ("/help, /quit", "this screen (F1, ?) / leave (others are told)"),
)
HELP_USAGE_WIDTH: Final = 29
_ALIASES: Final = {
    "/m": "/msg",
    "/j": "/join",
    "/q": "/quit",
    "/h": "/help",
    "/?": "/help",
    "/away": "/status away",
    "/busy": "/status busy",
    "/back": "/status online",
}
_SPECS: Final = {spec.name: spec for spec in COMMANDS}


class Action(StrEnum):
    NOTHING = "nothing"
    CLEAR = "clear"
    HELP = "help"
    JOIN = "join"  # target: a handle, or None for the public room
    NOTIFY = "notify"  # target: "on" or "off" (desktop notifications, a setting of the UI)
    QUIT = "quit"
    SAVE = "save"  # target: the path to save the last code block to
    SEARCH = "search"  # target: the text to find in the chat's history


@dataclass(frozen=True, slots=True)
class Command:
    """A command for ``Node.execute``."""

    payload: dict[str, Any] = field(hash=False)

    @property
    def name(self) -> str:
        return str(self.payload["cmd"])


@dataclass(frozen=True, slots=True)
class LocalAction:
    action: Action
    target: str | None = None


@dataclass(frozen=True, slots=True)
class InputError:
    message: str


@dataclass(frozen=True, slots=True)
class InputContext:
    """What a line's meaning depends on."""

    conversation: str | None = None  # the handle of the private chat on screen; None: public
    first_request: str | None = None  # the oldest unanswered private-chat request
    offers: tuple[str, ...] = ()  # ids of the pending file offers, oldest first
    hands: tuple[str, ...] = ()  # ids of our open hands and claims
    help_hand: str | None = None  # the hand of the help session on screen, if it is one


def parse_input(
    line: str, context: InputContext | None = None
) -> Command | LocalAction | InputError:
    """The meaning of one submitted line.

    Plain text goes to the conversation on screen; ``//text`` sends text that starts with "/".
    """
    ctx = context or InputContext()
    text = line.strip("\r\n")
    if not text.strip():
        return LocalAction(Action.NOTHING)
    if text.startswith("//"):
        return _plain(text[1:], ctx)
    if not text.startswith("/"):
        return _plain(text, ctx)
    head, _, rest = text.partition(" ")
    name, _, implied = _ALIASES.get(head.lower(), head.lower()).partition(" ")
    if implied:
        rest = f"{implied} {rest}"
    spec = _SPECS.get(name)
    if spec is None:
        return InputError(f"unknown command {_shown(head)}: type /help for the list")
    words = rest.split()
    try:
        return _PARSERS[name](rest, words, ctx)
    except _UsageError as exc:
        return InputError(str(exc) or f"usage: {spec.usage}")


def lost_slash(line: str, context: InputContext, known: Callable[[str], bool]) -> str | None:
    """The command a plain line most likely was before its "/" got lost, or None.

    ``known(handle)``: whether a handle is someone we know of. A hit is the corrected line
    ("/msg ada hi"); the screen asks before sending such a line as a message.
    """
    text = line.strip()
    if not text or text.startswith("/"):
        return None
    head = text.split(None, 1)[0].lower()
    spec = _SPECS.get("/" + head)
    if spec is None or spec.bare == "never":
        return None
    if spec.bare == "alone" and text.lower() != head:
        return None
    fixed = "/" + text
    parsed = parse_input(fixed, context)
    if isinstance(parsed, InputError):
        return None
    if spec.bare == "known":
        words = text.split()
        handle = words[1].removeprefix("@") if len(words) > 1 else ""
        if not (handle.lower() in PUBLIC_NAMES and spec.name == "/join") and not known(handle):
            return None
    return fixed


def _plain(text: str, ctx: InputContext) -> Command:
    if ctx.conversation is None:
        return Command({"cmd": Cmd.SAY, "text": text})
    return Command({"cmd": Cmd.MSG, "to": ctx.conversation, "text": text})


class _UsageError(Exception):
    """The arguments do not fit; an empty message means "show the usage line"."""


_Parser: TypeAlias = "Callable[[str, list[str], InputContext], Command | LocalAction]"


def _shown(word: str) -> str:
    """A word from the input, safe and short enough to quote in an error."""
    return repr(word[:40])


def _handle(word: str) -> str:
    try:
        return validate_handle(word)
    except HandleError as exc:
        raise _UsageError(f"{_shown(word)} is not a handle: {exc}") from None


def _no_args(words: list[str]) -> None:
    if words:
        raise _UsageError()


def _one_handle(words: list[str]) -> str:
    if len(words) != 1:
        raise _UsageError()
    return _handle(words[0])


def _msg(rest: str, words: list[str], _ctx: InputContext) -> Command:
    if len(words) < 2:
        raise _UsageError()
    to = _handle(words[0])
    body = rest.lstrip()[len(words[0]) :].lstrip()
    return Command({"cmd": Cmd.MSG, "to": to, "text": body})


def _say(rest: str, _words: list[str], _ctx: InputContext) -> Command:
    if not rest.strip():
        raise _UsageError()
    return Command({"cmd": Cmd.SAY, "text": rest})


def _me(rest: str, _words: list[str], ctx: InputContext) -> Command:
    if not rest.strip():
        raise _UsageError()
    return _plain(f"{ACTION_PREFIX}{rest.strip()}", ctx)


def _search(rest: str, _words: list[str], _ctx: InputContext) -> LocalAction:
    if not rest.strip():
        raise _UsageError()
    return LocalAction(Action.SEARCH, rest.strip())


def _save(rest: str, _words: list[str], _ctx: InputContext) -> LocalAction:
    return LocalAction(Action.SAVE, _path(rest))


def _serve_install(rest: str, _words: list[str], _ctx: InputContext) -> Command:
    """The wheelhouse ``lanchat bundle`` made (in the profile, or the folder given)."""
    cmd: dict[str, Any] = {"cmd": Cmd.SERVE_INSTALL}
    if rest.strip():
        cmd["dir"] = _path(rest)
    return Command(cmd)


def _room(_rest: str, words: list[str], _ctx: InputContext) -> Command:
    if len(words) != 1:
        raise _UsageError()
    try:
        name = validate_room(words[0])
    except RoomError as exc:
        raise _UsageError(f"{_shown(words[0])} is not a room name: {exc}") from None
    return Command({"cmd": Cmd.ROOM, "name": name})


def _join(_rest: str, words: list[str], _ctx: InputContext) -> LocalAction:
    if len(words) > 1:
        raise _UsageError()
    target = words[0] if words else ""
    if target.lower() in PUBLIC_NAMES:
        return LocalAction(Action.JOIN, None)
    return LocalAction(Action.JOIN, _handle(target.removeprefix("@")))


def _answer(key: str) -> _Parser:
    def parse(_rest: str, words: list[str], ctx: InputContext) -> Command:
        if not words:
            if ctx.first_request is None:
                raise _UsageError(f"no private-chat request is waiting (usage: /{key} H)")
            return Command({"cmd": key, "from": ctx.first_request})
        return Command({"cmd": key, "from": _one_handle(words)})

    return parse


def _with_handle(cmd: str, key: str) -> _Parser:
    def parse(_rest: str, words: list[str], _ctx: InputContext) -> Command:
        return Command({"cmd": cmd, key: _one_handle(words)})

    return parse


def _mentor(_rest: str, words: list[str], _ctx: InputContext) -> Command:
    if len(words) != 2 or words[0] != "add":
        raise _UsageError()
    return Command({"cmd": "add_mentor", "handle": _handle(words[1])})


def _trust(_rest: str, words: list[str], _ctx: InputContext) -> Command:
    if len(words) != 2:
        raise _UsageError()
    return Command({"cmd": Cmd.TRUST, "handle": _handle(words[0]), "fingerprint": words[1]})


def _bare(cmd: str) -> _Parser:
    def parse(_rest: str, words: list[str], _ctx: InputContext) -> Command:
        _no_args(words)
        return Command({"cmd": cmd})

    return parse


def _local(action: Action) -> _Parser:
    def parse(_rest: str, words: list[str], _ctx: InputContext) -> LocalAction:
        _no_args(words)
        return LocalAction(action)

    return parse


def _history(_rest: str, words: list[str], ctx: InputContext) -> Command:
    if len(words) > 2:
        raise _UsageError()
    who: str | None = ctx.conversation
    limit = DEFAULT_HISTORY
    if words and _is_number(words[-1]):
        limit = int(words.pop())
        if not 1 <= limit <= MAX_HISTORY:
            raise _UsageError(f"N must be from 1 to {MAX_HISTORY}")
    if len(words) > 1:
        raise _UsageError()
    if words:
        who = None if words[0].lower() in PUBLIC_NAMES else _handle(words[0])
    return Command({"cmd": Cmd.HISTORY, "with": who, "limit": limit})


def _is_number(word: str) -> bool:
    return word.isascii() and word.isdigit() and len(word) <= _MAX_NUMBER_DIGITS


def _pick(word: str, known: tuple[str, ...], what: str) -> str:
    """An id as typed, or the one known id it is a prefix of (ids are long)."""
    if word in known:
        return word
    matches = [item for item in known if item.startswith(word.lower())]
    if len(matches) > 1:
        raise _UsageError(f"{_shown(word)} could be more than one {what}: type more of its id")
    return matches[0] if matches else word


def _path(text: str) -> str:
    """A path as typed; quotes around it (for spaces) are dropped."""
    path = text.strip()
    if len(path) >= 2 and path[0] == path[-1] and path[0] in "'\"":
        path = path[1:-1]
    if not path:
        raise _UsageError()
    return path


def _hand(rest: str, words: list[str], _ctx: InputContext) -> Command:
    topic = rest.strip()
    anon = bool(words) and words[0].lower() in _ANON_FLAGS
    if anon:
        topic = topic[len(words[0]) :].strip()
    return Command({"cmd": Cmd.HAND, "topic": topic, "anon": anon})


def _done(_rest: str, words: list[str], ctx: InputContext) -> Command:
    if len(words) > 1:
        raise _UsageError()
    if words:
        return Command({"cmd": Cmd.DONE, "id": _pick(words[0], ctx.hands, "hand")})
    if ctx.help_hand is not None:
        return Command({"cmd": Cmd.DONE, "id": ctx.help_hand})
    return Command({"cmd": Cmd.DONE})


def _claim(_rest: str, words: list[str], _ctx: InputContext) -> Command:
    if len(words) != 1 or not _is_number(words[0]) or int(words[0]) < 1:
        raise _UsageError()
    return Command({"cmd": Cmd.CLAIM, "n": int(words[0])})


def _status(rest: str, words: list[str], _ctx: InputContext) -> Command:
    if not words or words[0].lower() not in PRESENCE_STATES:
        raise _UsageError()
    text = rest.strip()[len(words[0]) :].strip()
    return Command({"cmd": Cmd.STATUS, "set": words[0].lower(), "text": text})


def _set(_rest: str, words: list[str], _ctx: InputContext) -> Command | LocalAction:
    if len(words) != 2 or words[1].lower() not in ("on", "off"):
        raise _UsageError()
    what, on = words[0].lower(), words[1].lower() == "on"
    if what == "notify":
        return LocalAction(Action.NOTIFY, "on" if on else "off")
    if what not in ("receipts", "typing"):
        raise _UsageError()
    return Command({"cmd": Cmd.SET, what: on})


def _send(rest: str, words: list[str], _ctx: InputContext) -> Command:
    if len(words) < 2:
        raise _UsageError()
    to = _handle(words[0])
    return Command({"cmd": Cmd.SEND, "to": to, "path": _path(rest.lstrip()[len(words[0]) :])})


def _share(rest: str, _words: list[str], _ctx: InputContext) -> Command:
    return Command({"cmd": Cmd.SHARE, "path": _path(rest)})


def _file_answer(cmd: str, name: str) -> _Parser:
    def parse(_rest: str, words: list[str], ctx: InputContext) -> Command:
        if len(words) > 1:
            raise _UsageError()
        if words:
            return Command({"cmd": cmd, "id": _pick(words[0], ctx.offers, "file offer")})
        if not ctx.offers:
            raise _UsageError(f"no file offer is waiting (usage: {name} ID)")
        return Command({"cmd": cmd, "id": ctx.offers[0]})

    return parse


_PARSERS: Final[dict[str, _Parser]] = {
    "/msg": _msg,
    "/say": _say,
    "/me": _me,
    "/join": _join,
    "/request": _with_handle(Cmd.REQUEST, "to"),
    "/accept": _answer(Cmd.ACCEPT),
    "/reject": _answer(Cmd.REJECT),
    "/block": _with_handle(Cmd.BLOCK, "handle"),
    "/unblock": _with_handle(Cmd.UNBLOCK, "handle"),
    "/unfriend": _with_handle(Cmd.UNFRIEND, "handle"),
    "/trust": _trust,
    "/who": _bare(Cmd.WHO),
    "/friends": _bare(Cmd.FRIENDS),
    "/history": _history,
    "/search": _search,
    "/clear": _local(Action.CLEAR),
    "/save": _save,
    "/rooms": _bare(Cmd.ROOMS),
    "/room": _room,
    "/serve-install": _serve_install,
    "/hand": _hand,
    "/done": _done,
    "/queue": _bare(Cmd.QUEUE),
    "/claim": _claim,
    "/mentor": _mentor,
    "/status": _status,
    "/set": _set,
    "/send": _send,
    "/share": _share,
    "/accept-file": _file_answer(Cmd.ACCEPT_FILE, "/accept-file"),
    "/decline-file": _file_answer(Cmd.DECLINE_FILE, "/decline-file"),
    "/help": _local(Action.HELP),
    "/quit": _local(Action.QUIT),
}
assert set(_PARSERS) == set(_SPECS), "every command in COMMANDS needs a parser"
