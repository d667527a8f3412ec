"""The full-screen chat: layout, keys and the glue between the view model and a node.

The screen never talks to the network: it calls ``node.execute(cmd)`` and receives events
through ``on_event``. Tests drive it with a pipe input, a dummy output and a fake node.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

from prompt_toolkit.application import Application
from prompt_toolkit.buffer import Buffer
from prompt_toolkit.document import Document
from prompt_toolkit.filters import Condition
from prompt_toolkit.history import InMemoryHistory
from prompt_toolkit.key_binding import KeyBindings
from prompt_toolkit.key_binding.bindings.completion import generate_completions
from prompt_toolkit.keys import Keys
from prompt_toolkit.layout import (
    ConditionalContainer,
    Float,
    FloatContainer,
    FormattedTextControl,
    HSplit,
    Layout,
    VSplit,
    Window,
)
from prompt_toolkit.layout.controls import BufferControl
from prompt_toolkit.layout.dimension import Dimension
from prompt_toolkit.layout.menus import CompletionsMenu
from prompt_toolkit.layout.processors import BeforeInput
from prompt_toolkit.styles import Style

from lanchat.core.handles import HandleError, handle_key, validate_handle
from lanchat.core.text import TextError
from lanchat.core.vocabulary import Cmd
from lanchat.node import CommandError
from lanchat.ui import render
from lanchat.ui.commands import DEFAULT_HISTORY, Action, Command, InputError, LocalAction
from lanchat.ui.completion import ChatCompleter
from lanchat.ui.model import HANDLE_COLOURS, PUBLIC, LineKind

if TYPE_CHECKING:
    from collections.abc import Callable

    from prompt_toolkit.formatted_text import StyleAndTextTuples
    from prompt_toolkit.input import Input
    from prompt_toolkit.key_binding import KeyPressEvent
    from prompt_toolkit.output import Output

    from lanchat.ui.model import ViewModel
    from lanchat.ui.notify import Notifier

__all__ = ["KEYS", "STYLE", "ChatScreen", "CommandSink", "SettingStore"]

log = logging.getLogger("lanchat.ui")

SIDEBAR_WIDTH: Final = 22
MIN_COLUMNS_FOR_SIDEBAR: Final = 60  # narrower: the chat gets the whole width
INPUT_MAX_ROWS: Final = 3
TYPING_EVERY_S: Final = 3.0  # while the line is edited, a friend hears "typing" this often
REFRESH_S: Final = 1.0  # redraw this often: typing hints expire, waiting times grow
# A lone Esc byte is taken as the Esc key after this long without the rest of a sequence
# (prompt_toolkit waits 0.5 s). Terminals send a whole sequence in one write.
ESC_SEQUENCE_WAIT_S: Final = 0.05
# Keys that make an Alt combination when they come right after Esc (word-wise moves and
# deletion); after any other key, Esc is the Esc key. Alt-Left is one sequence from the
# terminal ("\x1b[1;3D"), Alt-Backspace two bytes in one write ("\x1b\x7f").
ALT_KEYS: Final = frozenset({Keys.Left, Keys.Right, Keys.Backspace})

# Shown by the help screen; the bindings are in ChatScreen._key_bindings.
# F1-F5 are on the rows of /help, /accept and /accept-file.
KEYS: Final[tuple[tuple[str, str], ...]] = (
    ("Enter, Up / Down", "send the line / lines you sent before"),
    ("Tab", "complete a command, handle, path or number"),
    ("Ctrl-N / Ctrl-P", "next / previous chat (empty line: Tab, Shift-Tab)"),
    ("PageUp / PageDown", "scroll the chat (and help, search results)"),
    ("Esc", "close help or search · back to the newest line"),
    ("Ctrl-O", "show whole / fold again long code and pastes"),
    ("y, /, Esc", "'msg ann hi' (no /): send it / run it / edit it"),
    ("Ctrl-C, Ctrl-D", "quit (Ctrl-D on an empty line)"),
)

# Name colours: mid-tones, readable on dark and on light backgrounds.
HANDLE_PALETTE: Final = (
    "#d75f5f",
    "#5f87d7",
    "#00af87",
    "#af5fd7",
    "#d78700",
    "#0087af",
    "#87af00",
    "#d75faf",
    "#af8700",
    "#5fafaf",
    "#8787d7",
    "#af5f5f",
)
assert len(HANDLE_PALETTE) == HANDLE_COLOURS

STYLE: Final = Style.from_dict(
    {
        "time": "#808080",
        "sender": "bold #5fafff",
        "sender.own": "bold #00af00",  # readable on light backgrounds too
        "mention": "bold #ffd700",
        "info": "#8a8a8a",
        "warning": "#ffaf00",
        "error": "bold #ff5f5f",
        "scrolled": "reverse",
        "divider": "#585858",
        "sidebar.heading": "#8a8a8a",
        "sidebar.offline": "#6c6c6c",
        "sidebar.unread": "bold",
        "sidebar.attention": "bold reverse #ffd700",
        "sidebar.current": "reverse bold",
        "status": "bg:#303030 #d0d0d0",
        "status.room": "bg:#005f87 #ffffff bold",
        "status.me": "bg:#303030 #ffffff bold",
        "status.scrolled": "bg:#303030 #ffd700",
        "status.typing": "bg:#303030 #87d7ff italic",
        "status.away": "bg:#303030 #ffaf00",
        "sidebar.away": "#808080",
        "sidebar.busy": "#af8787",
        "receipt.delivered": "#808080",
        "receipt.read": "#5fd75f",
        "request": "bg:#875f00 #ffffff",
        "request.key": "bg:#875f00 #ffffff bold underline",
        "offer": "bg:#005f5f #ffffff",
        "offer.key": "bg:#005f5f #ffffff bold underline",
        "hand": "bg:#5f5f87 #ffffff",
        "hand.claimed": "bg:#005f00 #ffffff bold",
        "queue.title": "bg:#3a3a3a #ffffff bold",
        "queue": "bg:#262626 #d0d0d0",
        "queue.new": "bg:#262626 #ffd700 bold",
        "transfer": "bg:#262626 #87d7ff",
        "prompt": "bold",
        "help.title": "bold",
        "help.section": "bold underline",
        "help.key": "#5fafff",
        "action": "italic",
        "time.hit": "reverse",
        "fold": "italic #808080",
        "code.gutter": "#808080",
        "confirm": "bg:#870000 #ffffff",
        "confirm.key": "bg:#870000 #ffffff bold underline",
        "search.selected": "reverse",
        # Pygments' token classes (class:pygments.keyword …), mid-tones like the names.
        "pygments.keyword": "bold #af5fd7",
        "pygments.name.builtin": "#0087af",
        "pygments.name.function": "#5f87d7",
        "pygments.name.class": "bold #5f87d7",
        "pygments.name.decorator": "#af8700",
        "pygments.literal.string": "#5f8700",
        "pygments.literal.number": "#d78700",
        "pygments.comment": "italic #808080",
        "pygments.operator.word": "bold #af5fd7",
        **{f"sender.c{n}": f"bold {colour}" for n, colour in enumerate(HANDLE_PALETTE)},
    }
)

_QUIET_ERRORS: Final = (CommandError, TextError, HandleError)


class CommandSink(Protocol):
    """What the screen needs of a node.

    ``execute`` may return the id the node gave a message (``say``/``msg``); receipts refer to
    it. Nodes returning None still work: the ids are then learnt from the order of receipts.
    """

    def execute(self, cmd: dict[str, Any]) -> object: ...


class SettingStore(Protocol):
    """Where UI settings (desktop notifications on/off) are kept: the profile."""

    def get_setting(self, key: str, default: Any = None) -> Any: ...

    def set_setting(self, key: str, value: Any) -> None: ...


class ChatScreen:
    """The prompt_toolkit Application over a ViewModel; commands go to ``node.execute``."""

    def __init__(
        self,
        model: ViewModel,
        node: CommandSink | None = None,
        *,
        input: Input | None = None,
        output: Output | None = None,
        clock: Callable[[], float] = time.time,
        notifier: Notifier | None = None,
        settings: SettingStore | None = None,
    ) -> None:
        self.model = model
        self.node = node
        self.clock = clock
        self.notifier = notifier
        self.settings = settings
        self.notify_enabled = _setting(settings, "notify", default=True)
        self._handle_wanted: asyncio.Future[str | None] | None = None
        self._typing_sent: dict[str, float] = {}  # handle key -> when we last said "typing"
        self.buffer = Buffer(
            multiline=False,
            completer=ChatCompleter(model),
            complete_while_typing=False,
            history=InMemoryHistory(),
            accept_handler=self._on_enter,
            on_text_changed=self._typed,
        )
        self.main_window = Window(
            FormattedTextControl(self._main_text, show_cursor=False),
            wrap_lines=True,
            get_line_prefix=_continuation_indent,
            always_hide_cursor=True,
        )
        self.app: Application[None] = Application(
            layout=self._layout(),
            key_bindings=self._key_bindings(),
            style=STYLE,
            full_screen=True,
            input=input,
            output=output,
            refresh_interval=REFRESH_S,
        )
        self.app.ttimeoutlen = ESC_SEQUENCE_WAIT_S
        self.app.after_render += self._rendered
        utf = self.app.output.encoding().lower().replace("-", "") in ("utf8", "utf16")
        self.markers = render.UNICODE if utf else render.ASCII

    # ---------------------------------------------------------------- wiring

    def attach(self, node: CommandSink | None) -> None:
        """Send commands to ``node`` from now on (None: no node is running)."""
        self.node = node

    def on_event(self, event: dict[str, Any]) -> None:
        """A node event: update the model, ring if it asks for attention, redraw."""
        if self.model.apply(event):
            self.app.output.bell()
        alerts = self.model.take_alerts()
        if self.notifier is not None and self.notify_enabled:
            for alert in alerts:
                self.notifier.notify(alert.title, alert.body)
        if event.get("ev") == "ready":
            # Fill the sidebar's friend marks and the room with what the profile remembers.
            self.send({"cmd": Cmd.FRIENDS}, user=False)
            self._load_history(PUBLIC)
        self.app.invalidate()

    async def ask_handle(self, suggestion: str) -> str | None:
        """Let the user type a new handle in the input line; None if they quit instead."""
        future: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._handle_wanted = future
        self.model.note("type another handle and press Enter (Ctrl-C quits)", self.clock())
        self.buffer.document = Document(suggestion)
        self.app.invalidate()
        try:
            return await future
        finally:
            self._handle_wanted = None

    # ---------------------------------------------------------------- actions

    def submit(self, line: str) -> None:
        """Act on one line from the input box."""
        result = self.model.parse_input(line)
        now = self.clock()
        if isinstance(result, InputError):
            self.model.note(result.message, now, LineKind.ERROR)
        elif isinstance(result, Command):
            self.send(result.payload)
        elif isinstance(result, LocalAction):
            self._local(result, now)
        self.app.invalidate()

    def send(self, cmd: dict[str, Any], *, user: bool = True) -> bool:
        """Run ``cmd`` on the node; errors become lines, never exceptions."""
        now = self.clock()
        if self.node is None:
            if user:
                self.model.failed(cmd, "not connected to the chat right now", now)
            return False
        if user:
            self.model.will_send(cmd)
        try:
            result = self.node.execute(cmd)
        except _QUIET_ERRORS as exc:
            if user:
                self.model.failed(cmd, str(exc), now)
            else:
                log.debug("background command %s failed: %s", cmd.get("cmd"), exc)
            return False
        except Exception as exc:
            log.exception("command %s failed", cmd.get("cmd"))
            self.model.failed(cmd, f"internal error: {exc}", now)
            return False
        self.model.sent(cmd, now, result if isinstance(result, str) else None)
        return True

    def quit(self) -> None:
        """Say goodbye through the node and leave the screen."""
        if self.node is not None:
            try:
                self.node.execute({"cmd": Cmd.QUIT})
            except Exception:
                log.exception("quit failed")
        if self._handle_wanted is not None and not self._handle_wanted.done():
            self._handle_wanted.set_result(None)
        if self.app.is_running and not self.app.is_done:
            self.app.exit()

    def switch(self, step: int) -> None:
        self._opened(self.model.switch(step))

    def answer_first_request(self, answer: str) -> None:
        first = self.model.first_request()
        if first is not None:
            self.send({"cmd": answer, "from": first[0]})

    def answer_first_offer(self, answer: str) -> None:
        offer = self.model.first_offer()
        if offer is not None:
            self.send({"cmd": answer, "id": offer.id})

    def set_notify(self, on: bool) -> None:
        """Desktop notifications on or off, remembered in the profile."""
        self.notify_enabled = on
        if self.settings is not None:
            try:
                self.settings.set_setting("notify", on)
            except Exception:
                log.exception("could not save the notify setting")
        now = self.clock()
        if on and self.notifier is None:
            self.model.note(
                "desktop notifications on, but this system has neither notify-send nor "
                "osascript: only the terminal bell rings",
                now,
            )
        else:
            self.model.note(f"desktop notifications {'on' if on else 'off'}", now)

    def page(self) -> int:
        """Lines one PageUp/PageDown moves: the chat's height, less two lines of context."""
        return max(1, self._chat_rows() - 2)

    def _chat_rows(self) -> int:
        info = self.main_window.render_info
        return info.window_height if info else 10

    def _local(self, action: LocalAction, now: float) -> None:
        if action.action is Action.HELP:
            self.model.show_help = True
        elif action.action is Action.JOIN:
            self._opened(self.model.join(action.target, now))
        elif action.action is Action.NOTIFY:
            self.set_notify(action.target == "on")
        elif action.action is Action.QUIT:
            self.quit()
        elif action.action is Action.CLEAR:
            self.model.clear()
        elif action.action is Action.SEARCH and action.target:
            if not self.send(self.model.start_search(action.target, now), user=False):
                self.model.search_failed()
        elif action.action is Action.SAVE and action.target:
            self.save_code(action.target, now)

    def save_code(self, where: str, now: float) -> None:
        """/save: the chat's newest code block into a new file (never over an existing one)."""
        block = self.model.last_code()
        if block is None:
            self.model.note("no code block in this chat yet", now, LineKind.ERROR)
            return
        path = Path(where).expanduser()
        try:
            with path.open("x", encoding="utf-8") as out:
                out.write(block.text.rstrip("\n") + "\n")
        except FileExistsError:
            self.model.note(f"{path} exists already: choose another name", now, LineKind.ERROR)
            return
        except OSError as exc:
            self.model.note(f"could not save to {path}: {exc.strerror}", now, LineKind.ERROR)
            return
        rows = block.text.count("\n") + 1
        self.model.note(f"saved the code block ({rows} lines) to {path}", now)

    def confirm(self, *, as_command: bool) -> None:
        """Answer the "this looks like a command" question: run it, or send it as typed."""
        pending, self.model.confirm = self.model.confirm, None
        if pending is None:
            return
        typed, fixed = pending
        self.buffer.reset(append_to_history=True)
        self.submit(fixed if as_command else typed)

    def _opened(self, key: str) -> None:
        if key != PUBLIC:
            self._load_history(key)

    def _load_history(self, key: str) -> None:
        conv = self.model.conversations[key]
        if conv.history_loaded:
            return
        conv.history_loaded = True
        who = self.model.handle_of(key)
        self.send({"cmd": Cmd.HISTORY, "with": who, "limit": DEFAULT_HISTORY}, user=False)

    def _typed(self, buffer: Buffer) -> None:
        """The input line changed: tell the friend on screen we are typing (now and then)."""
        text = buffer.text
        if self._handle_wanted is not None or not text.strip():
            return
        if text.startswith("/") and not text.startswith("//"):
            return  # a command is not a message to them
        handle = self.model.typing_target()
        if handle is None:
            return
        now = self.clock()
        key = handle_key(handle)
        if now - self._typing_sent.get(key, -math.inf) < TYPING_EVERY_S:
            return
        self._typing_sent[key] = now
        self.send({"cmd": Cmd.TYPING, "to": handle}, user=False)

    def _rendered(self, _app: object) -> None:
        """New messages of a friend are on screen now: say so (a read receipt)."""
        for handle in self.model.take_reads():
            self.send({"cmd": Cmd.READ, "with": handle}, user=False)

    def _on_enter(self, buffer: Buffer) -> bool:
        if self._handle_wanted is not None:
            return self._take_handle(buffer.text.strip())
        fixed = self.model.lost_slash(buffer.text)
        if fixed is not None:  # most likely a command that lost its "/": ask first
            self.model.confirm = (buffer.text.strip(), fixed)
            return True  # keep the line
        self.submit(buffer.text)
        return False  # clear the line (it stays in the Up/Down history)

    def _take_handle(self, handle: str) -> bool:
        try:
            validate_handle(handle)
        except HandleError as exc:
            self.model.note(str(exc), self.clock(), LineKind.ERROR)
            return True  # keep the text to fix it
        assert self._handle_wanted is not None
        self._handle_wanted.set_result(handle)
        return False

    # ---------------------------------------------------------------- layout

    def _layout(self) -> Layout:
        model = self.model
        wide = Condition(lambda: self.app.output.get_size().columns >= MIN_COLUMNS_FOR_SIDEBAR)
        helping = Condition(lambda: model.overlay)
        sidebar = VSplit(
            [
                Window(
                    FormattedTextControl(self._sidebar_text, show_cursor=False),
                    width=SIDEBAR_WIDTH,
                    always_hide_cursor=True,
                ),
                Window(width=1, char="│", style="class:divider"),
            ]
        )
        body = VSplit([ConditionalContainer(sidebar, filter=wide & ~helping), self.main_window])

        def bar(
            text: Callable[[], StyleAndTextTuples], shown: Callable[[], bool], rows: int, style: str
        ) -> ConditionalContainer:
            return ConditionalContainer(
                Window(
                    FormattedTextControl(text),
                    wrap_lines=True,
                    height=Dimension(min=1, max=rows),
                    dont_extend_height=True,
                    style=style,
                ),
                filter=Condition(shown) & ~helping,
            )

        queue = bar(
            self._queue_text,
            lambda: bool(model.waiting_hands()),
            render.QUEUE_SHOWN + 1,
            "class:queue",
        )
        transfers = bar(
            self._transfer_text,
            lambda: bool(model.transfers),
            render.TRANSFERS_SHOWN,
            "class:transfer",
        )
        hand = bar(self._hand_text, lambda: bool(model.hands), 2, "class:hand")
        offer = bar(self._offer_text, lambda: bool(model.offers), 3, "class:offer")
        request = bar(self._request_text, lambda: bool(model.requests), 3, "class:request")
        confirm = bar(self._confirm_text, lambda: model.confirm is not None, 3, "class:confirm")
        status = VSplit(
            [
                Window(FormattedTextControl(lambda: _pt(render.status_left(model, self.clock())))),
                Window(
                    FormattedTextControl(lambda: _pt(render.status_right(model))),
                    dont_extend_width=True,
                ),
            ],
            height=1,
            style="class:status",
        )
        self.input_window = Window(
            BufferControl(
                self.buffer, input_processors=[BeforeInput(self._prompt, style="class:prompt")]
            ),
            height=Dimension(min=1, max=INPUT_MAX_ROWS),
            dont_extend_height=True,
            wrap_lines=True,
        )
        root = FloatContainer(
            HSplit(
                [body, queue, transfers, hand, offer, request, confirm, status, self.input_window]
            ),
            floats=[
                Float(
                    xcursor=True,
                    ycursor=True,
                    content=CompletionsMenu(max_height=8, scroll_offset=1),
                )
            ],
        )
        return Layout(root, focused_element=self.input_window)

    def _main_text(self) -> StyleAndTextTuples:
        if self.model.show_help:
            return _pt(render.help_screen(KEYS, self.model.help_scroll))
        size = self.app.output.get_size()
        if self.model.search is not None:
            return _pt(render.search_screen(self.model, size.columns, self._chat_rows()))
        width = size.columns
        if width >= MIN_COLUMNS_FOR_SIDEBAR:
            width -= SIDEBAR_WIDTH + 1
        # One line per row is the most that can show; wrapping only makes it fewer.
        return _pt(render.conversation(self.model, size.rows, width, self.markers, self.clock()))

    def _confirm_text(self) -> StyleAndTextTuples:
        return _pt(render.wrap(render.confirm_bar(self.model), self._columns(), 1))

    def _columns(self) -> int:
        return self.app.output.get_size().columns

    def _request_text(self) -> StyleAndTextTuples:
        return _pt(render.wrap(render.request_bar(self.model), self._columns(), 1))

    def _offer_text(self) -> StyleAndTextTuples:
        return _pt(render.wrap(render.offer_bar(self.model), self._columns(), 1))

    def _hand_text(self) -> StyleAndTextTuples:
        return _pt(render.wrap(render.hand_bar(self.model), self._columns(), 1))

    def _queue_text(self) -> StyleAndTextTuples:
        return _pt(render.queue_panel(self.model, self._columns(), self.clock()))

    def _transfer_text(self) -> StyleAndTextTuples:
        return _pt(render.transfer_panel(self.model, self._columns(), self.markers))

    def _sidebar_text(self) -> StyleAndTextTuples:
        return _pt(render.sidebar(self.model, SIDEBAR_WIDTH, self.markers))

    def _prompt(self) -> str:
        return "new handle> " if self._handle_wanted is not None else render.prompt(self.model)

    # ---------------------------------------------------------------- keys

    def _key_bindings(self) -> KeyBindings:
        kb = KeyBindings()
        buffer = self.buffer
        model = self.model
        empty = Condition(lambda: not buffer.text)
        completing = Condition(lambda: buffer.complete_state is not None)
        helping = Condition(lambda: model.show_help)
        searching = Condition(lambda: model.search is not None)
        confirming = Condition(lambda: model.confirm is not None)
        # Help, search results and the "looks like a command" question take the keys.
        chatting = ~helping & ~searching & ~confirming

        @kb.add("c-c")
        @kb.add(Keys.SIGINT)  # kill -INT: prompt_toolkit turns the signal into this key
        def _quit(_event: KeyPressEvent) -> None:
            self.quit()

        @kb.add("c-d", filter=empty & chatting)
        def _quit_on_empty(_event: KeyPressEvent) -> None:
            self.quit()

        @kb.add("tab", filter=(~empty | completing) & chatting)
        def _complete(event: KeyPressEvent) -> None:
            generate_completions(event)

        @kb.add("s-tab", filter=completing & chatting)
        def _complete_back(_event: KeyPressEvent) -> None:
            buffer.complete_previous()

        @kb.add("tab", filter=empty & ~completing & chatting)
        @kb.add("c-n", filter=chatting)
        def _next(_event: KeyPressEvent) -> None:
            self.switch(1)

        @kb.add("s-tab", filter=empty & ~completing & chatting)
        @kb.add("c-p", filter=chatting)
        def _previous(_event: KeyPressEvent) -> None:
            self.switch(-1)

        @kb.add("pageup", filter=chatting)
        def _page_up(_event: KeyPressEvent) -> None:
            # Not past the first screenful: the window stays full (one row for the marker).
            model.scroll_up(self.page(), view=self._chat_rows() - 1)

        @kb.add("pagedown", filter=chatting)
        def _page_down(_event: KeyPressEvent) -> None:
            model.scroll_down(self.page())

        @kb.add("c-o", filter=chatting)
        def _folds(_event: KeyPressEvent) -> None:
            model.toggle_folds()

        # Esc acts at once, and never as a Meta prefix for the key typed after it: the "/"
        # of "/who" typed just after Esc is a "/", not Alt-/. Alt-Left, Alt-Right and
        # Alt-Backspace (ALT_KEYS) still work.
        @kb.add("escape", eager=True, filter=Condition(self._escape_alone))
        def _escape(_event: KeyPressEvent) -> None:
            # What is on top goes first: help and search cover the question's bar.
            if buffer.complete_state is not None:
                buffer.cancel_completion()
            elif model.show_help:
                model.show_help = False
            elif model.search is not None:
                model.search = None
            elif model.confirm is not None:
                model.confirm = None
            else:
                model.to_newest()

        @kb.add("f1")
        def _help(_event: KeyPressEvent) -> None:
            model.show_help = not model.show_help
            model.search = None

        @kb.add("?", filter=empty & chatting)
        def _help_on_empty(_event: KeyPressEvent) -> None:
            model.show_help, model.help_scroll = True, 0

        @kb.add("f2", filter=chatting)
        def _accept(_event: KeyPressEvent) -> None:
            self.answer_first_request("accept")

        @kb.add("f3", filter=chatting)
        def _reject(_event: KeyPressEvent) -> None:
            self.answer_first_request("reject")

        @kb.add("f4", filter=chatting)
        def _accept_file(_event: KeyPressEvent) -> None:
            self.answer_first_offer("accept_file")

        @kb.add("f5", filter=chatting)
        def _decline_file(_event: KeyPressEvent) -> None:
            self.answer_first_offer("decline_file")

        # ------------------------------------------------ the "looks like a command" question

        @kb.add("/", filter=confirming)
        def _run_it(_event: KeyPressEvent) -> None:
            self.confirm(as_command=True)

        @kb.add("y", filter=confirming)
        @kb.add("Y", filter=confirming)
        def _send_it(_event: KeyPressEvent) -> None:
            self.confirm(as_command=False)

        @kb.add("n", filter=confirming)
        @kb.add("N", filter=confirming)
        def _edit_it(_event: KeyPressEvent) -> None:
            model.confirm = None

        # ------------------------------------------------ help and search results

        rows = self._chat_rows

        @kb.add("up", filter=helping)
        @kb.add("pageup", filter=helping)
        @kb.add("down", filter=helping)
        @kb.add("pagedown", filter=helping)
        def _scroll_help(event: KeyPressEvent) -> None:
            key = event.key_sequence[0].key
            step = max(1, rows() - 2) if key in (Keys.PageUp, Keys.PageDown) else 1
            down = key in (Keys.Down, Keys.PageDown)
            most = max(0, render.help_rows(KEYS) - rows())
            model.help_scroll = max(0, min(most, model.help_scroll + (step if down else -step)))

        @kb.add("enter", filter=helping)
        @kb.add("q", filter=helping)
        def _close_help(_event: KeyPressEvent) -> None:
            model.show_help = False

        @kb.add("up", filter=searching)
        @kb.add("pageup", filter=searching)
        @kb.add("down", filter=searching)
        @kb.add("pagedown", filter=searching)
        def _choose_hit(event: KeyPressEvent) -> None:
            key = event.key_sequence[0].key
            step = max(1, rows() - 3) if key in (Keys.PageUp, Keys.PageDown) else 1
            model.move_search(step if key in (Keys.Down, Keys.PageDown) else -step)

        @kb.add("enter", filter=searching)
        def _show_hit(_event: KeyPressEvent) -> None:
            model.jump_to_hit(view=rows() - 1)

        @kb.add("q", filter=searching)
        def _close_search(_event: KeyPressEvent) -> None:
            model.search = None

        # Everything else is swallowed while something covers the input: Enter never sends
        # the line behind the help screen, and typing never goes into it unseen.
        @kb.add(Keys.Any, filter=~chatting)
        @kb.add(Keys.BracketedPaste, filter=~chatting)
        @kb.add("enter", filter=confirming)
        @kb.add("up", filter=confirming)
        @kb.add("down", filter=confirming)
        def _ignore(_event: KeyPressEvent) -> None:
            pass

        return kb

    def _escape_alone(self) -> bool:
        """Whether an Esc is the Esc key, not the Alt of an Alt-Left, Alt-Backspace, ...

        What follows it in the same read from the terminal waits in the key processor's
        queue: Esc then "/who" typed fast arrive together, like Alt-/ would; Esc then F1 or
        Ctrl-U too. Only the keys of ALT_KEYS after it make an Alt combination.
        """
        queue = self.app.key_processor.input_queue
        return not queue or queue[0].key not in ALT_KEYS


def _setting(settings: SettingStore | None, key: str, *, default: bool) -> bool:
    if settings is None:
        return default
    try:
        value = settings.get_setting(key, default)
    except Exception:
        log.exception("could not read the %s setting", key)
        return default
    return value if isinstance(value, bool) else default


def _continuation_indent(_lineno: int, wrap_count: int) -> str:
    """Wrapped message lines start under the text, not under the time."""
    return " " * render.TIME_WIDTH if wrap_count else ""


def _pt(fragments: render.Fragments) -> StyleAndTextTuples:
    return list(fragments)
