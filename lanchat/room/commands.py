"""The node's commands (``lanchat.core.vocabulary.Cmd``, the ``cmd`` of the headless
contract, docs/headless.md) dispatched to the part that owns each one."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from lanchat.core import friendship as fs
from lanchat.core.handles import RoomError, room_key, validate_room
from lanchat.core.vocabulary import Cmd
from lanchat.room.context import CommandError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from lanchat.room.context import RoomContext
    from lanchat.room.helpdesk import Helpdesk
    from lanchat.room.installing import InstallService
    from lanchat.room.offers import Offers
    from lanchat.room.peers import Peers
    from lanchat.room.private import PrivateChat
    from lanchat.room.public import PublicRoom
    from lanchat.room.status import NodeStatus, Presence

__all__ = ["BACKGROUND_COMMANDS", "HISTORY_LIMIT_MAX", "Cmd", "Commands"]

HISTORY_LIMIT_MAX: Final = 10_000
HISTORY_LIMIT_DEFAULT: Final = 50


# A front end's own queries: not the user being active (no end of an automatic away).
BACKGROUND_COMMANDS: Final = frozenset(
    {Cmd.READ, Cmd.HISTORY, Cmd.FRIENDS, Cmd.WHO, Cmd.QUEUE, Cmd.STATUS, Cmd.ROOMS}
)
_FRIEND_MOVES: Final = {
    Cmd.REQUEST: ("to", fs.Move.REQUEST),
    Cmd.ACCEPT: ("from", fs.Move.ACCEPT),
    Cmd.REJECT: ("from", fs.Move.REJECT),
    Cmd.BLOCK: ("handle", fs.Move.BLOCK),
    Cmd.UNBLOCK: ("handle", fs.Move.UNBLOCK),
    Cmd.UNFRIEND: ("handle", fs.Move.REMOVE),
}


class _Args:
    """A command's fields, checked as they are read."""

    def __init__(self, cmd: Mapping[str, Any]) -> None:
        self.cmd = cmd
        self.name = cmd.get("cmd")

    def text(self, key: str) -> str:
        value = self.cmd.get(key)
        if not isinstance(value, str):
            raise CommandError("bad_command", f"{self.name!r} needs {key!r} (a string)")
        return value

    def flag(self, key: str, default: bool) -> bool:
        value = self.cmd.get(key, default)
        if not isinstance(value, bool):
            raise CommandError("bad_command", f"'{key}' must be true or false")
        return value


class Commands:
    """Runs one command: the parts do the work, this only checks arguments and routes."""

    def __init__(
        self,
        ctx: RoomContext,
        *,
        status: NodeStatus,
        presence: Presence,
        peers: Peers,
        public: PublicRoom,
        private: PrivateChat,
        helpdesk: Helpdesk,
        offers: Offers,
        stop: Callable[[], None],
        relay_counters: Callable[[], Mapping[str, int]],
        rooms: Callable[[], list[dict[str, Any]]],
        install: InstallService,
        move_to_room: Callable[[str], None],
        add_mentor: Callable[[str], None],
    ) -> None:
        self._ctx = ctx
        self._status = status
        self._presence = presence
        self._peers = peers
        self._public = public
        self._private = private
        self._helpdesk = helpdesk
        self._offers = offers
        self._stop = stop
        self._relay_counters = relay_counters
        self._install = install
        self._move_to_room = move_to_room
        self._handlers: dict[Cmd, Callable[[_Args], str | None]] = {
            Cmd.SAY: lambda a: public.say(a.text("text")),
            Cmd.MSG: self._msg,
            Cmd.HAND: self._hand,
            Cmd.TRUST: lambda a: private.trust_new_key(a.text("handle"), a.text("fingerprint")),
            Cmd.WHO: self._who,
            Cmd.FRIENDS: lambda _a: ctx.emit("friends", friends=private.friends()),
            Cmd.HISTORY: self._history,
            Cmd.CLAIM: lambda a: helpdesk.claim(a.cmd.get("id"), a.cmd.get("n")),
            Cmd.DONE: self._done,
            Cmd.QUEUE: lambda _a: helpdesk.show_queue(),
            Cmd.ADD_MENTOR: lambda a: add_mentor(a.text("handle")),
            Cmd.SEND: lambda a: self._spawn_offer(Path(a.text("path")), a.text("to")),
            Cmd.SHARE: lambda a: self._spawn_offer(Path(a.text("path")), None),
            Cmd.ACCEPT_FILE: lambda a: offers.accept(a.text("id")),
            Cmd.DECLINE_FILE: lambda a: offers.decline(a.text("id")),
            Cmd.TYPING: lambda a: private.typing(a.text("to"), a.flag("active", True)),
            Cmd.READ: lambda a: private.mark_read(a.text("with")),
            Cmd.SET: self._set_privacy,
            Cmd.STATUS: self._status_cmd,
            Cmd.ROOMS: lambda _a: ctx.emit("rooms", rooms=rooms()),
            Cmd.SERVE_INSTALL: self._serve_install,
            Cmd.ROOM: self._room,
            Cmd.QUIT: lambda _a: stop(),
        }
        for name, (field, move) in _FRIEND_MOVES.items():
            self._handlers[name] = self._friend_move(field, move)

    def execute(self, cmd: Mapping[str, Any]) -> str | None:
        """Run one command; returns the id of what it created (say, msg, hand), if any."""
        name = cmd.get("cmd")
        if not isinstance(name, str) or name not in BACKGROUND_COMMANDS:
            self._presence.active(self._ctx.clock())  # a front end's own queries are not
        try:
            handler = self._handlers[Cmd(str(name))] if isinstance(name, str) else None
        except (ValueError, KeyError, TypeError):
            handler = None
        if handler is None:
            raise CommandError("bad_command", f"unknown command {name!r}")
        return handler(_Args(cmd))

    def _friend_move(self, field: str, move: fs.Move) -> Callable[[_Args], None]:
        def run(args: _Args) -> None:
            self._private.friend_move(args.text(field), move)

        return run

    def _who(self, args: _Args) -> None:
        """`who`, optionally with a handle prefix. In a hall, where this node holds only
        some members, a prefix is asked of the broker and answered when it replies."""
        prefix = args.cmd.get("prefix")
        prefix = prefix if isinstance(prefix, str) else ""
        if prefix and self._peers.who_prefix(prefix):
            return
        count = self._peers.count or None
        self._ctx.emit("who", peers=self._peers.who(prefix), count=count)

    def _msg(self, args: _Args) -> str:
        to, text = args.text("to"), args.text("text")
        session = self._helpdesk.session_for(to)
        if session is not None:
            msg_id = self._helpdesk.send(session, text)
        else:
            msg_id = self._private.send(to, text)
        self._ctx.emit("sent", id=msg_id)  # like `say`: bots match delivered/read to it
        return msg_id

    def _hand(self, args: _Args) -> str:
        topic = args.cmd.get("topic", "")
        anon = args.cmd.get("anon", False)
        if not isinstance(topic, str) or not isinstance(anon, bool):
            raise CommandError("bad_command", "'hand' takes 'topic' (string) and 'anon' (bool)")
        return self._helpdesk.raise_hand(topic, anon)

    def _history(self, args: _Args) -> None:
        with_handle = args.cmd.get("with")
        limit = args.cmd.get("limit", HISTORY_LIMIT_DEFAULT)
        if with_handle is not None and not isinstance(with_handle, str):
            raise CommandError("bad_command", "'with' must be a handle or null")
        if (
            not isinstance(limit, int)
            or isinstance(limit, bool)
            or not 1 <= limit <= HISTORY_LIMIT_MAX
        ):
            raise CommandError(
                "bad_command", f"'limit' must be an integer from 1 to {HISTORY_LIMIT_MAX}"
            )
        self._ctx.emit(
            "history",
            **{"with": with_handle},
            messages=self._history_messages(with_handle, limit),
        )

    def _history_messages(self, with_handle: str | None, limit: int) -> list[dict[str, Any]]:
        from lanchat.core.text import clean_text
        from lanchat.room.context import PUBLIC
        from lanchat.room.private import conversation_of

        conv = (
            PUBLIC
            if with_handle is None
            else conversation_of(self._private.key_for_handle(with_handle))
        )
        from lanchat.core.antientropy import order_key

        messages: list[dict[str, Any]] = []
        for r in self._ctx.profile.history.recent(conv, limit):
            if self._private.blocked(bytes.fromhex(r.sender_key)):
                continue  # never shown
            entry = {
                "id": r.id,
                "from": r.sender,
                "text": clean_text(r.text),
                "sent_t": r.sent_t,
                "outgoing": r.outgoing,
            }
            if conv == PUBLIC:
                # The room's order (null: ours, not yet placed by a broker; shown last).
                place = r.place
                entry["order"] = (
                    None if place is None else list(order_key(place, r.sender_key, r.seq))
                )
            messages.append(entry)
        return messages

    def _done(self, args: _Args) -> None:
        hand_id = args.cmd.get("id")
        if hand_id is not None and not isinstance(hand_id, str):
            raise CommandError("bad_command", "'id' must be a hand id")
        self._helpdesk.done(hand_id)

    def _spawn_offer(self, path: Path, to: str | None) -> None:
        self._ctx.spawn(self._offers.offer(path, to))

    def _room(self, args: _Args) -> None:
        name = args.text("name")
        try:
            validate_room(name)
        except RoomError as exc:
            raise CommandError("bad_command", str(exc)) from None
        if room_key(name) == room_key(self._ctx.cfg.room):
            raise CommandError("bad_command", f"you are in room {self._ctx.cfg.room!r} already")
        self._move_to_room(name)

    def _serve_install(self, args: _Args) -> None:
        directory, port = args.cmd.get("dir"), args.cmd.get("port")
        if directory is not None and not isinstance(directory, str):
            raise CommandError("bad_command", "'dir' must be a folder's path")
        if port is not None and (
            not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535
        ):
            raise CommandError("bad_command", "'port' must be a port number")
        self._ctx.spawn(self._install.start(directory, port))

    def _set_privacy(self, args: _Args) -> None:
        cmd = args.cmd
        changed = {k: v for k, v in cmd.items() if k in ("receipts", "typing")}
        if not changed or len(changed) != len(cmd) - 1:
            raise CommandError("bad_command", "'set' takes 'receipts' and/or 'typing' (true/false)")
        values = {key: args.flag(key, True) for key in changed}  # all checked before any is set
        state = self._ctx.profile.state
        for key, value in values.items():
            state.set_setting(key, value)
        self._ctx.emit(
            "settings",
            receipts=state.get_setting("receipts", True),
            typing=state.get_setting("typing", True),
        )

    def _status_cmd(self, args: _Args) -> None:
        ctx, status = self._ctx, self._status
        if "set" in args.cmd:
            text = args.cmd.get("text", "")
            if not isinstance(text, str):
                raise CommandError("bad_command", "'text' must be a string")
            self._presence.set(args.text("set"), text)
            ctx.emit(
                "status", state=str(status.phase), text=status.text, presence=self._presence.value
            )
            return
        counters = dict(ctx.counters)
        for name, count in self._relay_counters().items():  # what our relay dropped
            counters[name] = counters.get(name, 0) + count
        ctx.emit(
            "status",
            state=str(status.phase),
            text=status.text,
            online=len(self._peers.online),
            counters=counters,
        )
