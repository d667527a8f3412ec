"""The real prompt_toolkit screen, typed at through a pipe, against a recording fake node."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from typing import TYPE_CHECKING, Any

from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput

from lanchat.node import CommandError
from lanchat.ui.app import run_chat
from lanchat.ui.model import PUBLIC, LineKind, Receipt, ViewModel
from lanchat.ui.notify import DesktopNotifier
from lanchat.ui.screen import ChatScreen

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Coroutine
    from pathlib import Path

    from prompt_toolkit.input import PipeInput

WAIT_S = 5.0
ENTER, TAB, CTRL_C, CTRL_N, F2, F3 = "\r", "\t", "\x03", "\x0e", "\x1bOQ", "\x1bOR"
F4, F5 = "\x1bOS", "\x1b[15~"


class FakeNode:
    """Records executed commands; ``run`` lasts until a quit command or None arrives."""

    def __init__(self, screen: ChatScreen, handle: str = "me", *, taken: bool = False) -> None:
        self.screen = screen
        self.handle = handle
        self.taken = taken
        self.commands: list[dict[str, Any]] = []
        self.stopped = asyncio.Event()
        self.fail_with: Exception | None = None
        self.with_ids = False  # return message ids, as a node may

    def execute(self, cmd: dict[str, Any]) -> str | None:
        self.commands.append(cmd)
        if self.fail_with is not None:
            raise self.fail_with
        if cmd["cmd"] == "quit":
            self.stopped.set()
        elif cmd["cmd"] == "accept":
            self.push("accepted", by=self.handle, **{"with": cmd["from"]})
        elif cmd["cmd"] in ("say", "msg") and self.with_ids:
            return f"id{len(self.commands)}"
        return None

    def push(self, name: str, /, **fields: Any) -> None:
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
    peers: tuple[str, ...] = ("bob",), **options: Any
) -> AsyncIterator[tuple[ChatScreen, FakeNode, PipeInput]]:
    """A running screen with a fake node; ``peers`` are online, bob is a friend."""
    with create_pipe_input() as pipe:
        screen = ChatScreen(ViewModel("me", "lobby"), input=pipe, output=DummyOutput(), **options)
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


# ---------------------------------------------------------------- help queue


def test_a_student_raises_a_hand_and_talks_to_the_mentor() -> None:
    async def scenario() -> None:
        async with running() as (screen, node, pipe):
            pipe.send_text("/hand --anon my loop never ends" + ENTER)
            await until(screen, lambda: bool(node.named("hand")))
            assert node.named("hand") == [
                {"cmd": "hand", "topic": "my loop never ends", "anon": True}
            ]
            node.push("hand", id="h1", state="raised", anon=True, topic="my loop never ends")
            node.push("hand", id="h1", state="waiting", position=1, mentor="")
            node.push("hand", id="h1", state="claimed", position=0, mentor="yoda")
            await until(screen, lambda: screen.model.current == "@yoda")
            pipe.send_text("it prints forever" + ENTER)
            await until(screen, lambda: bool(node.named("msg")))
            assert node.named("msg") == [{"cmd": "msg", "to": "yoda", "text": "it prints forever"}]
            pipe.send_text("/done" + ENTER)
            await until(screen, lambda: bool(node.named("done")))
            assert node.named("done") == [{"cmd": "done", "id": "h1"}]

    run(scenario)


def test_a_mentor_claims_from_the_queue() -> None:
    async def scenario() -> None:
        async with running() as (screen, node, pipe):
            entry = {"n": 1, "id": "h1", "who": "anon-3f2a", "topic": "wiring", "anon": True}
            node.push("queue", entries=[{**entry, "waiting_s": 65.0, "claimed_by": ""}])
            await until(screen, lambda: bool(screen.model.waiting_hands()))
            pipe.send_text("/claim 1" + ENTER)
            await until(screen, lambda: bool(node.named("claim")))
            assert node.named("claim") == [{"cmd": "claim", "n": 1}]
            node.push("claimed", id="h1", who="anon-3f2a", anon=True, topic="wiring")
            node.push("queue", entries=[{**entry, "waiting_s": 66.0, "claimed_by": "me"}])
            await until(screen, lambda: screen.model.current == "@anon-3f2a")
            pipe.send_text("hello, show me the wiring" + ENTER)
            await until(screen, lambda: bool(node.named("msg")))
            assert node.named("msg") == [
                {"cmd": "msg", "to": "anon-3f2a", "text": "hello, show me the wiring"}
            ]

    run(scenario)


# ---------------------------------------------------------------- status, receipts, typing


def test_status_and_settings_commands_go_to_the_node() -> None:
    async def scenario() -> None:
        async with running() as (screen, node, pipe):
            pipe.send_text("/status away lunch" + ENTER)
            pipe.send_text("/set receipts off" + ENTER)
            pipe.send_text("/set typing on" + ENTER)
            await until(screen, lambda: len(node.named("set")) == 2)
            assert node.named("status") == [{"cmd": "status", "set": "away", "text": "lunch"}]
            assert node.named("set") == [
                {"cmd": "set", "receipts": False},
                {"cmd": "set", "typing": True},
            ]
            assert screen.model.status.presence == "away"

    run(scenario)


def test_typing_in_a_friends_chat_is_announced_every_three_seconds() -> None:
    now = [1_700_000_000.0]

    async def scenario() -> None:
        async with running(clock=lambda: now[0]) as (screen, node, pipe):
            pipe.send_text("hello in the room")  # the room: nobody to tell
            await until(screen, lambda: screen.buffer.text == "hello in the room")
            screen.buffer.reset()
            pipe.send_text("/join bob" + ENTER)
            await until(screen, lambda: screen.model.current == "@bob")
            pipe.send_text("/who")  # a command: not typing to bob
            await until(screen, lambda: screen.buffer.text == "/who")
            screen.buffer.reset()
            assert node.named("typing") == []
            pipe.send_text("hel")
            await until(screen, lambda: screen.buffer.text == "hel")
            now[0] += 2.0
            pipe.send_text("lo")
            await until(screen, lambda: screen.buffer.text == "hello")
            assert node.named("typing") == [{"cmd": "typing", "to": "bob"}]
            now[0] += 1.5
            pipe.send_text("!")
            await until(screen, lambda: len(node.named("typing")) == 2)

    run(scenario)


def test_read_receipts_follow_what_is_on_screen() -> None:
    async def scenario() -> None:
        async with running() as (screen, node, pipe):
            node.push("private", id="p1", text="psst", sent_t=1.0, **{"from": "bob"})
            await until(screen, lambda: screen.model.conversations["@bob"].unread == 1)
            assert node.named("read") == []  # in the room: bob's message is not shown
            pipe.send_text(CTRL_N)
            await until(screen, lambda: bool(node.named("read")))
            assert node.named("read") == [{"cmd": "read", "with": "bob"}]
            node.push("private", id="p2", text="again", sent_t=2.0, **{"from": "bob"})
            await until(screen, lambda: len(node.named("read")) == 2)

    run(scenario)


def test_receipts_use_the_ids_the_node_returns() -> None:
    async def scenario() -> None:
        async with running() as (screen, node, pipe):
            node.with_ids = True
            pipe.send_text("/msg bob are you there" + ENTER)
            await until(screen, lambda: bool(node.named("msg")))
            own = screen.model.conversations["@bob"].lines[-1]
            assert own.msg_id is not None
            node.push("delivered", id=own.msg_id, to="bob", upto=1)
            node.push("read", id=own.msg_id, by="bob")
            await until(screen, lambda: screen.model.receipt(own) is Receipt.READ)

    run(scenario)


# ---------------------------------------------------------------- files and notifications


def test_f4_and_f5_answer_file_offers_oldest_first() -> None:
    async def scenario() -> None:
        async with running() as (screen, node, pipe):
            for offer_id in ("a" * 32, "b" * 32):
                node.push(
                    "file_offer",
                    id=offer_id,
                    name="x.bin",
                    size=10,
                    sha256="0" * 64,
                    fingerprint="f",
                    shared=False,
                    **{"from": "bob"},
                )
            pipe.send_text(F4)
            await until(screen, lambda: bool(node.named("accept_file")))
            assert node.named("accept_file") == [{"cmd": "accept_file", "id": "a" * 32}]
            pipe.send_text(F5)
            await until(screen, lambda: bool(node.named("decline_file")))
            assert node.named("decline_file") == [{"cmd": "decline_file", "id": "b" * 32}]
            assert screen.model.offers == {}
            assert list(screen.model.transfers) == ["a" * 32]

    run(scenario)


def test_send_share_and_path_completion(tmp_path: Path) -> None:
    (tmp_path / "dataset.bin").write_bytes(b"x")

    async def scenario() -> None:
        async with running() as (screen, node, pipe):
            pipe.send_text(f"/send bob {tmp_path}{os.sep}data" + TAB)  # as each OS spells it
            await until(screen, lambda: screen.buffer.text.endswith("dataset.bin"))
            pipe.send_text(ENTER)
            pipe.send_text(f"/share {tmp_path}{os.sep}dataset.bin" + ENTER)
            await until(screen, lambda: bool(node.named("share")))
            path = str(tmp_path / "dataset.bin")
            assert node.named("send") == [{"cmd": "send", "to": "bob", "path": path}]
            assert node.named("share") == [{"cmd": "share", "path": path}]

    run(scenario)


class FakeNotifier:
    def __init__(self) -> None:
        self.shown: list[tuple[str, str]] = []

    def notify(self, title: str, body: str) -> None:
        self.shown.append((title, body))


class FakeSettings:
    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def get_setting(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def set_setting(self, key: str, value: Any) -> None:
        self.values[key] = value


def test_desktop_notifications_for_other_chats_until_turned_off() -> None:
    notifier, settings = FakeNotifier(), FakeSettings()

    async def scenario() -> None:
        async with running(notifier=notifier, settings=settings) as (screen, node, pipe):
            node.push("private", id="p1", text="psst", sent_t=1.0, **{"from": "bob"})
            node.push(
                "file_offer",
                id="c" * 32,
                name="x.bin",
                size=10,
                sha256="0" * 64,
                fingerprint="f",
                shared=True,
                **{"from": "bob"},
            )  # shared: the room is on screen, no pop-up
            assert notifier.shown == [("bob (private)", "psst")]
            pipe.send_text("/set notify off" + ENTER)
            await until(screen, lambda: not screen.notify_enabled)
            assert settings.values == {"notify": False}
            node.push("private", id="p2", text="hello?", sent_t=2.0, **{"from": "bob"})
            assert len(notifier.shown) == 1

    run(scenario)


def test_the_notify_setting_is_read_from_the_profile() -> None:
    settings = FakeSettings()
    settings.values["notify"] = False
    with create_pipe_input() as pipe:  # no console to read from (Windows would look for one)
        screen = ChatScreen(
            ViewModel("me", "lobby"), input=pipe, output=DummyOutput(), settings=settings
        )
    assert not screen.notify_enabled


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


# ---------------------------------------------------------------- desktop notifier


def test_the_desktop_notifier_is_found_only_where_a_command_exists() -> None:
    assert DesktopNotifier.find(which=lambda _name: None, platform="linux") is None
    mac = DesktopNotifier.find(which=lambda name: f"/usr/bin/{name}", platform="darwin")
    linux = DesktopNotifier.find(which=lambda name: f"/usr/bin/{name}", platform="linux")
    assert mac is not None
    assert linux is not None
    argv = mac._argv("ann", 'say "hi" end tell')
    assert argv[0] == "/usr/bin/osascript"
    assert argv[-2:] == ["ann", 'say "hi" end tell']  # data, never script source
    assert linux._argv("ann", "-x")[-3:] == ["--", "ann", "-x"]
    windows = DesktopNotifier.find(which=lambda name: f"C:\\{name}.exe", platform="win32")
    assert windows is not None
    assert windows._env is not None
    toast = windows._argv("ann", "'; Remove-Item *")
    assert toast[0] == "C:\\powershell.exe"
    assert all("Remove-Item" not in arg for arg in toast)  # the texts are never source...
    assert windows._env("ann", "'; Remove-Item *") == {  # ...only data, in the environment
        "LANCHAT_TITLE": "ann",
        "LANCHAT_BODY": "'; Remove-Item *",
    }
    assert DesktopNotifier.find(which=lambda name: None, platform="win32") is None


def test_the_desktop_notifier_runs_in_the_background(tmp_path: Path) -> None:
    out = tmp_path / "shown"
    script = (
        "import sys, pathlib; pathlib.Path(sys.argv[1]).write_text(sys.argv[2] + '|' + sys.argv[3])"
    )

    def argv(title: str, body: str) -> list[str]:
        return [sys.executable, "-c", script, str(out), title, body]

    async def scenario() -> None:
        notifier = DesktopNotifier(argv)
        notifier.notify("bob (private)", "line one\nline two; $(rm -rf /)")
        assert not out.exists()  # notify() returned at once
        async with asyncio.timeout(WAIT_S):
            while not out.exists() or not out.read_text():
                await asyncio.sleep(0.02)
        await asyncio.wait_for(notifier.drain(), WAIT_S)
        assert out.read_text() == "bob (private)|line one line two; $(rm -rf /)"

    run(scenario)


# ---------------------------------------------------------------- Esc, overlays, lost slashes

ESC, UP, DOWN, CTRL_O = "\x1b", "\x1b[A", "\x1b[B", "\x0f"
ESC_WITHIN_S = 1.0  # prompt_toolkit waited for a Meta key: 0.5 s, then 1 s more
ALT_BACKSPACE = "\x1b\x7f"


def test_esc_then_a_command_typed_at_once_runs_the_command() -> None:
    async def scenario() -> None:
        async with running() as (screen, node, pipe):
            # What a terminal sends when /who is typed right after Esc: one read, like Alt-/.
            pipe.send_text(ESC + "/who" + ENTER)
            await until(screen, lambda: bool(node.named("who")))
            assert node.named("say") == []
            assert node.named("who") == [{"cmd": "who"}]

    run(scenario)


def test_esc_then_a_control_key_at_once_is_esc_then_that_key() -> None:
    async def scenario() -> None:
        async with running(peers=("bob", "ada")) as (screen, _node, pipe):
            pipe.send_text("msg ada x" + ENTER)
            await until(screen, lambda: screen.model.confirm is not None)
            pipe.send_text(ESC + "\x15" + "\x1bOP")  # Esc, Ctrl-U and F1 in one read
            await until(screen, lambda: screen.model.show_help)
            assert screen.model.confirm is None
            assert screen.buffer.text == ""

    run(scenario)


def test_esc_acts_on_the_first_press() -> None:
    async def scenario() -> None:
        async with running() as (screen, _node, pipe):
            pipe.send_text("/help" + ENTER)
            await until(screen, lambda: screen.model.show_help)
            pipe.send_text(ESC)  # alone: nothing follows it
            pressed = time.monotonic()
            await until(screen, lambda: not screen.model.show_help)
            # Not after prompt_toolkit's wait for a Meta combination (0.5 s, then 1 s).
            assert time.monotonic() - pressed < ESC_WITHIN_S

    run(scenario)


def test_alt_with_a_key_that_is_not_printable_still_works() -> None:
    async def scenario() -> None:
        async with running() as (screen, _node, pipe):
            pipe.send_text("one two three")
            await until(screen, lambda: screen.buffer.text == "one two three")
            pipe.send_text(ALT_BACKSPACE)  # one sequence: deletes the word before the cursor
            await until(screen, lambda: screen.buffer.text == "one two ")

    run(scenario)


def test_keys_act_on_the_help_screen_while_it_is_open() -> None:
    async def scenario() -> None:
        async with running() as (screen, node, pipe):
            pipe.send_text("draft")
            await until(screen, lambda: screen.buffer.text == "draft")
            pipe.send_text("\x1bOP")  # F1
            await until(screen, lambda: screen.model.show_help)
            # Typed keys do not go into the hidden line; Enter closes help and sends nothing.
            pipe.send_text("xyz" + DOWN + TAB + ENTER)
            await until(screen, lambda: not screen.model.show_help)
            assert node.named("say") == []
            assert screen.buffer.text == "draft"

    run(scenario)


def test_a_command_without_its_slash_is_not_sent_without_asking() -> None:
    async def scenario() -> None:
        async with running(peers=("bob", "ada")) as (screen, node, pipe):
            pipe.send_text("msg ada x" + ENTER)
            await until(screen, lambda: screen.model.confirm is not None)
            pipe.send_text(ENTER)  # a second Enter does not send it either
            pipe.send_text(ESC)
            await until(screen, lambda: screen.model.confirm is None)
            assert node.named("say") == []
            assert screen.buffer.text == "msg ada x"
            pipe.send_text(ENTER + "/")  # ask again; "/" runs it as the command
            await until(screen, lambda: bool(node.named("msg")))
            assert node.named("msg") == [{"cmd": "msg", "to": "ada", "text": "x"}]
            pipe.send_text("who" + ENTER + "y")  # "y": send it as typed after all
            await until(screen, lambda: bool(node.named("say")))
            assert node.named("say") == [{"cmd": "say", "text": "who"}]
            assert node.named("who") == []

    run(scenario)


def test_sending_jumps_to_the_newest_line() -> None:
    async def scenario() -> None:
        async with running() as (screen, node, pipe):
            for n in range(60):
                node.push(
                    "public", id=f"m{n}", text=f"line {n}", sent_t=time.time(), **{"from": "bob"}
                )
            pipe.send_text("\x1b[5~")  # PageUp
            await until(screen, lambda: screen.model.scroll > 0)
            pipe.send_text("back to the end" + ENTER)
            await until(screen, lambda: bool(node.named("say")))
            assert screen.model.scroll == 0

    run(scenario)


def test_search_results_are_navigable_and_jump_into_the_chat() -> None:
    async def scenario() -> None:
        async with running() as (screen, node, pipe):
            now = time.time()
            for n in range(40):
                text = f"the wiring diagram, part {n}" if n in (3, 20) else f"line {n}"
                node.push("public", id=f"m{n}", text=text, sent_t=now + n, **{"from": "bob"})
            pipe.send_text("/search Wiring" + ENTER)
            await until(screen, lambda: bool(node.named("history")))
            assert node.named("history")[-1] == {"cmd": "history", "with": None, "limit": 10_000}
            stored = [
                {"id": "old", "from": "ann", "text": "wiring at home", "sent_t": now - 86_400}
            ]
            node.push("history", messages=stored, **{"with": None})
            await until(
                screen, lambda: screen.model.search is not None and screen.model.search.done
            )
            search = screen.model.search
            assert search is not None
            assert [hit.text for hit in search.hits] == [
                "wiring at home",
                "the wiring diagram, part 3",
                "the wiring diagram, part 20",
            ]
            assert search.selected == 2  # the newest
            pipe.send_text(UP + "typed into nothing" + ENTER)
            await until(screen, lambda: screen.model.search is None)
            assert screen.model.highlight is not None
            assert screen.model.highlight.text == "the wiring diagram, part 3"
            assert screen.model.scroll > 0  # parts 4 to 39 are below it: not all fit
            shown = screen.model.visible_lines(screen.page() + 1)
            assert screen.model.highlight in shown
            assert node.named("say") == []
            assert screen.buffer.text == ""

    run(scenario)


def test_clear_me_unfriend_rooms_and_room_commands() -> None:
    async def scenario() -> None:
        async with running() as (screen, node, pipe):
            node.push("public", id="m1", text="hello", sent_t=time.time(), **{"from": "bob"})
            pipe.send_text("/clear" + ENTER)
            await until(screen, lambda: not screen.model.conversations[PUBLIC].lines)
            pipe.send_text("/me waves" + ENTER)
            await until(screen, lambda: bool(node.named("say")))
            assert node.named("say") == [{"cmd": "say", "text": "/me waves"}]
            pipe.send_text("/unfriend bob" + ENTER)
            await until(screen, lambda: bool(node.named("unfriend")))
            assert node.named("unfriend") == [{"cmd": "unfriend", "handle": "bob"}]
            pipe.send_text("/rooms" + ENTER + "/room lab-2" + ENTER)
            await until(screen, lambda: bool(node.named("room")))
            assert node.named("rooms") == [{"cmd": "rooms"}]
            assert node.named("room") == [{"cmd": "room", "name": "lab-2"}]

    run(scenario)


def test_save_writes_the_last_code_block_and_ctrl_o_unfolds(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running() as (screen, _node, pipe):
            code = "\n".join(f"print({n})" for n in range(20))
            text = f"try this:\n```python\n{code}\n```"
            screen.on_event(
                {"ev": "public", "t": time.time(), "id": "c1", "from": "bob", "text": text}
            )
            target = tmp_path / "snippet.py"
            pipe.send_text(f"/save {target}" + ENTER)
            await until(screen, target.exists)
            assert target.read_text() == code + "\n"
            pipe.send_text(f"/save {target}" + ENTER)  # never over an existing file
            await until(
                screen, lambda: "exists already" in screen.model.current_conversation.lines[-1].text
            )
            assert not screen.model.current_conversation.unfolded
            pipe.send_text(CTRL_O)
            await until(screen, lambda: screen.model.current_conversation.unfolded)

    run(scenario)


def test_a_directory_completes_with_this_os_separator(tmp_path: Path) -> None:
    from prompt_toolkit.completion import CompleteEvent
    from prompt_toolkit.document import Document

    from lanchat.ui.completion import ChatCompleter

    (tmp_path / "slides").mkdir()
    typed = f"/share {tmp_path}{os.sep}sli"
    found = list(
        ChatCompleter(ViewModel("me", "lobby")).get_completions(Document(typed), CompleteEvent())
    )
    assert [(c.text, c.display_text) for c in found] == [
        ("des", "slides" + os.sep)
    ]  # "\\" on Windows


def test_draining_notifications_that_already_finished_returns() -> None:
    async def finished() -> None:
        return None

    async def scenario() -> None:
        notifier = DesktopNotifier(lambda _title, _body: [sys.executable, "-c", "pass"])
        task = asyncio.ensure_future(finished())
        await task
        notifier._running.add(task)  # done, and no done callback left to take it out
        await asyncio.wait_for(notifier.drain(), WAIT_S)  # spun forever before
        assert not notifier._running

    run(scenario)
