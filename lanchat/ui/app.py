"""The interactive front end's composition root: first-run handle, node, screen, one loop.

``run_interactive`` is what ``lanchat`` (without --headless) runs. ``run_chat`` runs a
screen and a node side by side and, when the handle turns out to be taken, asks for
another one and starts a fresh node on the same profile without leaving the screen.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import logging.handlers
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

from prompt_toolkit import PromptSession
from prompt_toolkit.validation import ValidationError, Validator

from lanchat import oscompat
from lanchat.core.handles import HandleError, suggest_handle, validate_handle
from lanchat.core.vocabulary import Cmd
from lanchat.node import Node
from lanchat.profile_setup import EXIT_USAGE, check_options, login_name, prepare
from lanchat.ui.model import ViewModel
from lanchat.ui.notify import DesktopNotifier
from lanchat.ui.screen import ChatScreen, CommandSink

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Coroutine

    from prompt_toolkit.document import Document

__all__ = ["RunnableNode", "run_chat", "run_interactive"]

log = logging.getLogger("lanchat.ui")

LOG_NAME: Final = "lanchat.log"
LOG_MAX_BYTES: Final = 1_000_000
NODE_SHUTDOWN_TIMEOUT_S: Final = 5.0  # the node says goodbye and closes mDNS within this
HANDLE_TAKEN: Final = "handle_taken"

Event = dict[str, Any]


class RunnableNode(CommandSink, Protocol):
    async def run(self, commands: asyncio.Queue[dict[str, Any] | None]) -> int: ...


# ------------------------------------------------------------------ the loop


async def run_chat(
    screen: ChatScreen,
    node: RunnableNode,
    rebuild: Callable[[str], RunnableNode],
    move: Callable[[RunnableNode, str], RunnableNode] = lambda node, _room: node,
) -> int:
    """Run the screen and ``node`` until the user quits or the node stops; the exit status."""
    app_task = asyncio.ensure_future(screen.app.run_async())
    status = 0
    try:
        while True:
            commands: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
            screen.attach(node)
            node_task = asyncio.ensure_future(node.run(commands))
            await asyncio.wait({app_task, node_task}, return_when=asyncio.FIRST_COMPLETED)
            if not node_task.done():  # the screen is gone: make sure the node follows
                with contextlib.suppress(Exception):
                    node.execute({"cmd": Cmd.QUIT})  # idempotent; works before the node's loop runs
                commands.put_nowait(None)
                return await _finish(node_task)
            screen.attach(None)
            status = _status_of(node_task)
            next_room = getattr(node, "next_room", None)
            if status == 0 and isinstance(next_room, str) and not app_task.done():
                node = move(node, next_room)  # a `room` command: the same us, another room
                continue
            if app_task.done() or screen.model.status.last_error != HANDLE_TAKEN:
                return status
            new_handle = await _race(screen.ask_handle(_another(node, screen)), app_task)
            if new_handle is None:
                return status
            screen.model.restart(new_handle)
            node = rebuild(new_handle)
    finally:
        if not app_task.done() and not screen.app.is_done:
            screen.app.exit()
        await app_task


async def _finish(node_task: asyncio.Future[int]) -> int:
    try:
        return await asyncio.wait_for(node_task, NODE_SHUTDOWN_TIMEOUT_S)
    except TimeoutError:
        log.warning("the node did not stop within %s s", NODE_SHUTDOWN_TIMEOUT_S)
        return 1
    except Exception:
        log.exception("the node failed")
        return 1


def _status_of(node_task: asyncio.Future[int]) -> int:
    try:
        return node_task.result()
    except Exception:
        log.exception("the node failed")
        return 1


async def _race(
    question: Coroutine[Any, Any, str | None], app_task: asyncio.Future[None]
) -> str | None:
    """The answer to ``question``, or None if the screen closes first."""
    asking = asyncio.ensure_future(question)
    either: set[asyncio.Future[Any]] = {asking, app_task}
    await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
    if not asking.done():
        asking.cancel()
        return None
    return asking.result()


def _another(node: RunnableNode, screen: ChatScreen) -> str:
    """A suggestion for a free handle: the taken one with a digit."""
    taken = getattr(getattr(node, "cfg", None), "handle", None) or screen.model.status.handle
    return suggest_handle(f"{taken[:30]}2")


# ------------------------------------------------------------------ wiring


class EventRelay:
    """The node's ``emit``: holds events until the screen exists, then hands them over.

    Events from another thread are moved onto the loop, so the screen only ever runs there.
    """

    def __init__(self) -> None:
        self.held: list[Event] = []
        self._target: Callable[[Event], None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = 0

    def connect(self, target: Callable[[Event], None]) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        self._target = target
        held, self.held = self.held, []
        for event in held:
            target(event)

    def __call__(self, event: Event) -> None:
        if self._target is None:
            self.held.append(event)
        elif threading.get_ident() != self._thread and self._loop is not None:
            self._loop.call_soon_threadsafe(self._target, event)
        else:
            self._target(event)


def run_interactive(args: argparse.Namespace) -> int:
    """The interactive chat; returns the process exit status."""
    from lanchat.store import default_profile_dir

    try:
        check_options(args)  # before asking for a handle: a bad --room/--connect ends it
    except ValueError as exc:
        print(f"lanchat: {exc}", file=sys.stderr)
        return EXIT_USAGE
    directory = Path(args.profile or default_profile_dir())
    _log_to_file(directory, verbose=bool(getattr(args, "verbose", False)))
    handle: str | None = args.handle
    if not handle and not _has_stored_handle(directory):
        handle = ask_first_handle(suggest_handle(login_name()))
        if handle is None:
            return 1
    relay = EventRelay()
    # Read receipts say what is on screen: the screen sends them, not the node by itself.
    node = prepare(args, relay, handle, auto_read=False)
    if isinstance(node, int):
        for event in relay.held:
            if event.get("ev") == "error":
                print(f"lanchat: {event.get('message')}", file=sys.stderr)
        return node
    try:
        return oscompat.run(_chat(node, relay))
    finally:
        node.profile.close()


async def _chat(node: Node, relay: EventRelay) -> int:
    if node.cfg.auto_read:  # whoever built the node: the screen marks messages read itself
        node.cfg = dataclasses.replace(node.cfg, auto_read=False)
    screen = ChatScreen(
        ViewModel(node.cfg.handle, node.cfg.room, mentor=node.cfg.mentor),
        notifier=DesktopNotifier.find(),
        settings=node.profile.state,
    )
    relay.connect(screen.on_event)
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError):
        oscompat.install_stop_handlers(loop, screen.quit, oscompat.stop_signal_names(hangup=True))

    def rebuild(handle: str) -> Node:
        # Same profile and identity, new handle: what prepare() does, minus opening them.
        node.profile.state.set_setting("handle", handle)
        return Node(dataclasses.replace(node.cfg, handle=handle), node.profile, node.me, relay)

    def move(old: RunnableNode, room: str) -> Node:
        assert isinstance(old, Node)
        relay({"ev": "room", "t": round(time.time(), 6), "name": room})
        return old.moved_to_room()

    status = await run_chat(screen, node, rebuild, move)
    last = screen.model.status
    if status != 0 and last.last_error_message:
        print(f"lanchat: {last.last_error_message}", file=sys.stderr)
    return status


# ------------------------------------------------------------------ first run


class _HandleValidator(Validator):
    def validate(self, document: Document) -> None:
        try:
            validate_handle(document.text.strip())
        except HandleError as exc:
            raise ValidationError(message=str(exc)) from None


def ask_first_handle(suggestion: str) -> str | None:
    """Ask for a handle in a one-line prompt; None if the user gives up (Ctrl-C/Ctrl-D)."""
    print("Welcome to lanchat. Choose a handle: the name the others will see.")
    session: PromptSession[str] = PromptSession(validator=_HandleValidator())
    try:
        answer = session.prompt("handle: ", default=suggestion)
    except (KeyboardInterrupt, EOFError):
        return None
    return answer.strip()


def _has_stored_handle(directory: Path) -> bool:
    """Whether the profile remembers a handle; unreadable profiles are prepare()'s to report."""
    from lanchat.store import Profile, ProfileError

    if not directory.exists():
        return False
    try:
        with Profile.open(directory) as profile:
            return bool(profile.state.get_setting("handle"))
    except (ProfileError, OSError):
        return True


def _log_to_file(directory: Path, *, verbose: bool) -> None:
    """Send logging to the profile's log file: anything on stderr would tear the screen."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    target: logging.Handler
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        target = logging.handlers.RotatingFileHandler(
            directory / LOG_NAME, maxBytes=LOG_MAX_BYTES, backupCount=1, encoding="utf-8"
        )
    except OSError:
        target = logging.NullHandler()
    target.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    root.addHandler(target)
    root.setLevel(logging.DEBUG if verbose else logging.WARNING)
    logging.captureWarnings(True)
