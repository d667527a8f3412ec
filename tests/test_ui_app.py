"""The real prompt_toolkit screen, typed at through a pipe, against a recording fake node."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any

from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput

from lanchat.node import CommandError
from lanchat.ui.app import run_chat
from lanchat.ui.model import PUBLIC, LineKind, ViewModel
from lanchat.ui.screen import ChatScreen

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Coroutine

    from prompt_toolkit.input import PipeInput

WAIT_S = 5.0
ENTER, TAB, CTRL_C, CTRL_N, F2, F3 = "\r", "\t", "\x03", "\x0e", "\x1bOQ", "\x1bOR"


class FakeNode:
    """Records executed commands; ``run`` lasts until a quit command or None arrives."""

    def __init__(self, screen: ChatScreen, handle: str = "me", *, taken: bool = False) -> None:
        self.screen = screen
        self.handle = handle
        self.taken = taken
        self.commands: list[dict[str, Any]] = []
        self.stopped = asyncio.Event()
        self.fail_with: Exception | None = None

    def execute(self, cmd: dict[str, Any]) -> None:
        self.commands.append(cmd)
        if self.fail_with is not None:
            raise self.fail_with
        if cmd["cmd"] == "quit":
            self.stopped.set()
        elif cmd["cmd"] == "accept":
            self.push("accepted", by=self.handle, **{"with": cmd["from"]})

    def push(self, name: str, **fields: Any) -> None:
        self.screen.on_event({"ev": name, "t": time.time(), **fields})

    def named(self, name: str) -> list[dict[str, Any]]:
        return [c for c in self.commands if c["cmd"] == name]

    async def run(self, commands: asyncio.Queue[dict[str, Any] | None]) -> int:
        if self.taken:
            self.push("error", code="handle_taken", message=f"{self.handle!r} is taken")
            return 2
        self.push("ready", handle=self.handle, fingerprint="aaaa-bbbb")
        from_queue = asyncio.ensure_future(commands.get())
        stopped = asyncio.ensure_future(self.stopped.wait())
        await asyncio.wait({from_queue, stopped}, return_when=asyncio.FIRST_COMPLETED)
        from_queue.cancel()
        stopped.cancel()
        return 0


async def until(screen: ChatScreen, condition: Callable[[], bool]) -> None:
    """Wait (at most WAIT_S) until ``condition`` holds; checked after every redraw."""
    redrawn = asyncio.Event()

    def poke(_app: object) -> None:
        redrawn.set()

    screen.app.after_render += poke
    try:
        async with asyncio.timeout(WAIT_S):
            while not condition():
                redrawn.clear()
                await redrawn.wait()
    finally:
        screen.app.after_render -= poke


@contextlib.asynccontextmanager
async def running(
    peers: tuple[str, ...] = ("bob",),
) -> AsyncIterator[tuple[ChatScreen, FakeNode, PipeInput]]:
    """A running screen with a fake node; ``peers`` are online, bob is a friend."""
    with create_pipe_input() as pipe:
        screen = ChatScreen(ViewModel("me", "lobby"), input=pipe, output=DummyOutput())
        node = FakeNode(screen)
        screen.attach(node)
        task = asyncio.ensure_future(screen.app.run_async())
        for handle in peers:
            node.push("peer_up", handle=handle, mentor=False)
        node.push("accepted", by="bob")
        try:
            await until(screen, lambda: screen.app.is_running)
            yield screen, node, pipe
        finally:
            if not screen.app.is_done:
                screen.app.exit()
            await asyncio.wait_for(task, WAIT_S)


def run(test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 4 * WAIT_S))


# ---------------------------------------------------------------- typing


def test_a_typed_line_is_said_in_the_room() -> None:
    async def scenario() -> None:
        async with running() as (screen, node, pipe):
            pipe.send_text("hello everyone" + ENTER)
            await until(screen, lambda: bool(node.named("say")))
            assert node.named("say") == [{"cmd": "say", "text": "hello everyone"}]
            own = screen.model.conversations[PUBLIC].lines[-1]
            assert (own.kind, own.text) == (LineKind.OWN, "hello everyone")
            assert screen.buffer.text == ""

    run(scenario)


def test_msg_command_sends_a_private_message() -> None:
    async def scenario() -> None:
        async with running() as (screen, node, pipe):
            pipe.send_text("/msg bob hi" + ENTER)
            await until(screen, lambda: bool(node.named("msg")))
            assert node.named("msg") == [{"cmd": "msg", "to": "bob", "text": "hi"}]

    run(scenario)


def test_node_errors_become_error_lines() -> None:
    async def scenario() -> None:
        async with running() as (screen, node, pipe):
            node.fail_with = CommandError("not_friends", "you and zed are not friends")
            pipe.send_text("/msg zed hi" + ENTER)
            await until(screen, lambda: bool(node.named("msg")))
            last = screen.model.current_conversation.lines[-1]
            assert (last.kind, last.text) == (LineKind.ERROR, "you and zed are not friends")
            assert screen.app.is_running

    run(scenario)


def test_tab_completes_a_command_then_a_handle() -> None:
    async def scenario() -> None:
        async with running(peers=("bob", "carol")) as (screen, node, pipe):
            pipe.send_text("/acc" + TAB)
            await until(screen, lambda: screen.buffer.text == "/accept")
            node.push("request", **{"from": "carol"}, fingerprint="ca01")
            pipe.send_text(" c" + TAB)
            await until(screen, lambda: screen.buffer.text == "/accept carol")
            pipe.send_text(ENTER)
            await until(screen, lambda: bool(node.named("accept")))
            assert node.named("accept") == [{"cmd": "accept", "from": "carol"}]

    run(scenario)


def test_ctrl_n_switches_to_the_next_conversation() -> None:
    async def scenario() -> None:
        async with running() as (screen, node, pipe):
            pipe.send_text(CTRL_N)
            await until(screen, lambda: screen.model.current == "@bob")
            pipe.send_text("just us" + ENTER)
            await until(screen, lambda: bool(node.named("msg")))
            assert node.named("msg") == [{"cmd": "msg", "to": "bob", "text": "just us"}]
            # Opening the chat loaded its stored history once, quietly.
            assert node.named("history") == [{"cmd": "history", "with": "bob", "limit": 50}]
            pipe.send_text(TAB)  # empty line: Tab moves on too
            await until(screen, lambda: screen.model.current == PUBLIC)

    run(scenario)


def test_the_accept_key_answers_the_first_request() -> None:
    async def scenario() -> None:
        async with running(peers=("bob", "carol", "dave")) as (screen, node, pipe):
            node.push("request", **{"from": "carol"}, fingerprint="ca01")
            node.push("request", **{"from": "dave"}, fingerprint="da01")
            pipe.send_text(F2)
            await until(screen, lambda: bool(node.named("accept")))
            assert node.named("accept") == [{"cmd": "accept", "from": "carol"}]
            pipe.send_text(F3)
            await until(screen, lambda: bool(node.named("reject")))
            assert node.named("reject") == [{"cmd": "reject", "from": "dave"}]
            assert screen.model.requests == {}
            assert screen.model.current == PUBLIC  # answering never switches the chat

    run(scenario)


def test_help_key_and_command_show_the_help_screen() -> None:
    async def scenario() -> None:
        async with running() as (screen, _node, pipe):
            pipe.send_text("?")
            await until(screen, lambda: screen.model.show_help)
            assert screen.buffer.text == ""
            pipe.send_text("\x1bOP")  # F1 toggles it off
            await until(screen, lambda: not screen.model.show_help)
            pipe.send_text("/help" + ENTER)
            await until(screen, lambda: screen.model.show_help)

    run(scenario)


def test_ctrl_c_sends_quit_and_closes_the_screen() -> None:
    async def scenario() -> None:
        async with running() as (screen, node, pipe):
            pipe.send_text(CTRL_C)
            await until(screen, lambda: screen.app.is_done)
            assert node.commands[-1] == {"cmd": "quit"}

    run(scenario)


# ---------------------------------------------------------------- the session loop


def test_a_taken_handle_is_replaced_without_restarting() -> None:
    async def scenario() -> None:
        with create_pipe_input() as pipe:
            screen = ChatScreen(ViewModel("me", "lobby"), input=pipe, output=DummyOutput())
            first = FakeNode(screen, "me", taken=True)
            built: list[FakeNode] = []

            def rebuild(handle: str) -> FakeNode:
                built.append(FakeNode(screen, handle))
                return built[-1]

            session = asyncio.ensure_future(run_chat(screen, first, rebuild))
            await until(screen, lambda: screen.buffer.text == "me2")  # the suggestion
            assert screen.model.status.last_error == "handle_taken"
            pipe.send_text(ENTER)
            await until(screen, lambda: screen.model.status.handle == "me2")
            pipe.send_text(CTRL_C)
            assert await asyncio.wait_for(session, WAIT_S) == 0
            assert [node.handle for node in built] == ["me2"]
            assert built[0].commands[-1] == {"cmd": "quit"}

    run(scenario)


def test_leaving_the_screen_stops_the_node() -> None:
    async def scenario() -> None:
        with create_pipe_input() as pipe:
            screen = ChatScreen(ViewModel("me", "lobby"), input=pipe, output=DummyOutput())
            node = FakeNode(screen)
            session = asyncio.ensure_future(run_chat(screen, node, lambda _h: node))
            await until(screen, lambda: screen.model.status.fingerprint == "aaaa-bbbb")
            # After "ready" the screen asked, quietly, for friends and the room's history.
            assert node.named("friends") == [{"cmd": "friends"}]
            assert node.named("history") == [{"cmd": "history", "with": None, "limit": 50}]
            screen.app.exit()  # e.g. the terminal went away: no quit command was sent
            assert await asyncio.wait_for(session, WAIT_S) == 0

    run(scenario)
