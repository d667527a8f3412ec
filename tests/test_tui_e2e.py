"""The real interactive screen on a virtual LAN, typed at and read through tmux.

Host 1 runs ``lanchat`` (the prompt_toolkit screen) in a detached 100x30 tmux pane; host 2
runs a headless peer. The test reads the pane as text (``tmux capture-pane``) and types
with ``tmux send-keys``, so it sees exactly what a user would.
"""

from __future__ import annotations

import itertools
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from lannode import LanNode
from vlan import reader_for

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from vlan import VirtualLan

pytestmark = pytest.mark.lan

ROOT = Path(__file__).resolve().parents[1]
COLUMNS, ROWS = 100, 30
SIDEBAR_WIDTH = 22
WAIT_S = 15.0
POLL_S = 0.05  # between two looks at the pane while waiting for something to show
QUIT_WITHIN_S = 3.0  # Ctrl-C to the peer's peer_down: a goodbye, not a heartbeat timeout
HOSTILE = "before \x1b[2J\x1b]0;pwned\x07after"

_sessions = itertools.count(1)

# The peer is the real headless node with one change an attacker could make to their own
# copy: what it says is sent as is, not cleaned, so escape bytes really cross the LAN.
_UNCLEANED_SENDER = """
import sys
import lanchat.room.public
from lanchat.cli import main
from lanchat.core.text import TextError

def send_as_is(text):
    if not text.strip():
        raise TextError("message is empty")
    return text

assert callable(lanchat.room.public.check_text), "the room no longer cleans with check_text"
lanchat.room.public.check_text = send_as_is
sys.exit(main(sys.argv[1:]))
"""


class UncleanedPeer(LanNode):
    """A LanNode whose node sends texts uncleaned (see _UNCLEANED_SENDER)."""

    def __init__(self, lan: VirtualLan, host: int, handle: str, profile: Path) -> None:
        self.lan, self.host, self.handle, self.profile = lan, host, handle, profile
        argv = [sys.executable, "-c", _UNCLEANED_SENDER, "--headless", "--handle", handle]
        argv += ["--profile", str(profile), "--room", "e2e"]
        self.stderr_path = profile.parent / f"{profile.name}.stderr"
        with self.stderr_path.open("ab") as err:
            self.proc = lan.spawn(
                host, argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, cwd=ROOT
            )
        self.events = reader_for(self.proc.stdout)


class TmuxPane:
    """One detached tmux session on a private server (its own socket), sized COLUMNS x ROWS."""

    def __init__(self, workdir: Path) -> None:
        tag = f"lanchat-e2e-{os.getpid()}-{next(_sessions)}"
        self.socket = tag
        self.session = tag
        self.config = workdir / "tmux.conf"
        self.exit_file = workdir / "tmux-pane.status"
        # No status line (the whole pane is the screen); the pane stays after the program
        # exits, to read what it left there; no user configuration.
        self.config.write_text("set -g status off\nset -g remain-on-exit on\n")
        self.screen = ""

    def tmux(self, *args: str, check: bool = True) -> str:
        done = subprocess.run(
            ["tmux", "-L", self.socket, "-f", str(self.config), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"tmux {' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout

    def start(self, argv: Sequence[str]) -> None:
        """Run ``argv`` in the pane; its exit status goes to ``exit_file`` (see exit_status)."""
        # A shell reaps the program and records its status: tmux (3.3a) can leave a dead
        # pane's process unreaped, its status unknown, when the pty closes first.
        record = f'"$@"; echo $? > {shlex.quote(str(self.exit_file))}.new; ' + (
            f"mv {shlex.quote(str(self.exit_file))}.new {shlex.quote(str(self.exit_file))}"
        )
        command = shlex.join(["sh", "-c", record, "sh", *argv])
        self.tmux(
            "new-session", "-d", "-s", self.session, "-x", str(COLUMNS), "-y", str(ROWS),
            "-c", str(ROOT), command,
        )  # fmt: skip

    def exit_status(self) -> int | None:
        """The program's exit status once it has exited, else None."""
        try:
            return int(self.exit_file.read_text())
        except FileNotFoundError:
            return None

    def close(self) -> None:
        socket = self.tmux("display-message", "-p", "#{socket_path}", check=False).strip()
        self.tmux("kill-session", "-t", self.session, check=False)
        self.tmux("kill-server", check=False)
        if socket.endswith(f"/{self.socket}"):  # the server leaves its socket file behind
            Path(socket).unlink(missing_ok=True)

    def info(self, fmt: str) -> str:
        return self.tmux("display-message", "-p", "-t", self.session, fmt).strip()

    def capture(self) -> str:
        self.screen = self.tmux("capture-pane", "-p", "-t", self.session)
        return self.screen

    def rows(self) -> list[str]:
        return self.capture().split("\n")[:ROWS]

    def send(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", self.session, *keys)

    def type(self, text: str) -> None:
        self.tmux("send-keys", "-t", self.session, "-l", text)

    def wait(self, what: str, ok: Callable[[list[str]], bool], timeout: float = WAIT_S) -> None:
        """Look at the pane every POLL_S until ``ok(rows)``; fail showing the last screen."""
        deadline = time.monotonic() + timeout
        while not ok(self.rows()):
            if time.monotonic() > deadline:
                raise AssertionError(f"not on screen within {timeout} s: {what}\n{self.screen}")
            time.sleep(POLL_S)

    def wait_text(self, text: str, timeout: float = WAIT_S) -> None:
        self.wait(repr(text), lambda rows: any(text in row for row in rows), timeout)


def sidebar(rows: list[str]) -> list[str]:
    return [row[:SIDEBAR_WIDTH].strip() for row in rows]


def request_bar(row: str) -> bool:
    return "peer wants to chat privately" in row and "F2 accept" in row and "F3 reject" in row


def status_bar(rows: list[str]) -> str:
    """The status row: room name first, own handle last (just above the input line)."""
    for row in rows:
        if row.startswith(" e2e ") and "tuiuser" in row:
            return row
    return ""


@pytest.fixture
def tmux_pane(tmp_path: Path) -> Iterator[TmuxPane]:
    if shutil.which("tmux") is None:
        why = "the terminal-UI end-to-end test drives the screen through tmux: not installed"
        if os.environ.get("LANCHAT_REQUIRE_LAN") == "1":
            pytest.fail(f"LANCHAT_REQUIRE_LAN=1 but {why}")
        pytest.skip(why)
    pane = TmuxPane(tmp_path)
    try:
        yield pane
    finally:
        pane.close()


def test_the_chat_screen_on_a_real_lan(
    tmux_pane: TmuxPane, vlan: Callable[..., VirtualLan], tmp_path: Path
) -> None:
    lan = vlan(2)
    peer = UncleanedPeer(lan, 2, "peer", tmp_path / "peer")
    peer.wait("ready")
    profile = tmp_path / "tui"
    pane = tmux_pane
    argv = [sys.executable, "-m", "lanchat", "--handle", "tuiuser", "--profile", str(profile)]
    pane.start(lan.argv(1, [*argv, "--room", "e2e"]))
    try:
        assert pane.info("#{pane_width}x#{pane_height}") == f"{COLUMNS}x{ROWS}"
        run_scenario(pane, peer)
    except BaseException:
        log = profile / "lanchat.log"
        if log.exists():
            print(f"--- {log}\n{log.read_text(errors='replace')}")
        print(f"--- peer stderr\n{peer.stderr()}\n--- peer events\n{peer.events.seen}")
        raise


def run_scenario(pane: TmuxPane, peer: LanNode) -> None:
    # Discovery: the peer appears in the sidebar, the status bar says we are connected.
    peer.wait("peer_up", lambda e: e["handle"] == "tuiuser")
    pane.wait("peer in the sidebar", lambda rows: "peer" in " ".join(sidebar(rows)))
    pane.wait("status bar: connected, 2 online", lambda rows: "2 online" in status_bar(rows))
    status = status_bar(pane.rows())
    assert "broker" in status or "connected" in status, status

    # A public message from the peer shows up; what we type reaches the peer.
    peer.send(cmd="say", text="hello from the headless peer")
    pane.wait_text("peer: hello from the headless peer")
    pane.type("hello from tui")
    pane.send("Enter")
    got = peer.wait("public", lambda e: e["from"] == "tuiuser")
    assert got["text"] == "hello from tui"
    pane.wait_text("tuiuser: hello from tui")

    # A private-chat request: the accept prompt, answered with F2.
    peer.send(cmd="request", to="tuiuser")
    pane.wait("the request bar", lambda rows: any(request_bar(row) for row in rows))
    capture = os.environ.get("LANCHAT_TUI_CAPTURE")
    if capture:  # the screen shown in the README
        Path(capture).write_text(pane.capture())
    pane.send("F2")
    accepted = peer.wait("accepted")
    assert accepted["by"] == "tuiuser"
    pane.wait("no request bar", lambda rows: not any(request_bar(row) for row in rows))
    pane.wait_text("peer and you are friends now")

    # Escape sequences in a message neither clear the screen nor retitle the terminal.
    # (The peer sends them as they are; the receiving node and the screen drop them.)
    peer.send(cmd="say", text=HOSTILE)
    pane.wait_text("peer: before after")
    screen = pane.capture()
    assert "peer: hello from the headless peer" in screen
    assert "tuiuser: hello from tui" in screen
    assert "pwned" not in screen
    assert "[2J" not in screen
    assert "pwned" not in pane.info("#{pane_title}")

    # A private message: the sidebar marks it unread; Ctrl-N opens the chat.
    peer.send(cmd="msg", to="tuiuser", text="a private hello")
    unread = re.compile(r"^♥ peer +1$")  # friend mark, handle, one unread message
    pane.wait("peer marked unread", lambda rows: any(unread.match(r) for r in sidebar(rows)))
    pane.send("C-n")
    pane.wait_text("peer: a private hello")
    pane.wait("the private prompt", lambda rows: any(r.startswith("@peer>") for r in rows))

    # Ctrl-C: the screen closes, the program exits 0 and the peer hears the goodbye at once.
    pane.send("C-c")
    quit_at = time.monotonic()
    peer.wait("peer_down", lambda e: e["handle"] == "tuiuser", timeout=WAIT_S)
    assert time.monotonic() - quit_at < QUIT_WITHIN_S
    pane.wait("lanchat exited", lambda _rows: pane.exit_status() is not None)
    assert pane.exit_status() == 0, pane.screen
    assert "Traceback" not in pane.screen
    assert "error" not in pane.screen


# ---------------------------------------------------------------- a real room

EIGHT = ("ann", "bob", "cyd", "dan", "eve", "fay", "gus", "hal")
ESC_CLOSES_WITHIN_S = 1.0  # prompt_toolkit waited for a Meta key: 0.5 s, then 1 s more
SGR = re.compile(r"\x1b\[[0-9;]*m")
CODE = "\n".join(f"def step_{n}(x):  # {n}\n    return x + {n}" for n in range(10))


def colours_before(screen: str, text: str) -> str:
    """The colour attributes in force where ``text`` starts on a ``capture-pane -e`` screen."""
    for row in screen.split("\n"):
        plain = SGR.sub("", row)
        if text not in plain:
            continue
        at = plain.index(text)
        seen = 0
        codes: list[str] = []
        for part in re.split(f"({SGR.pattern})", row):
            if SGR.fullmatch(part):
                codes = [] if part in ("\x1b[0m", "\x1b[m") else [*codes, part]
                continue
            if seen + len(part) > at:
                return "".join(codes)
            seen += len(part)
    raise AssertionError(f"{text!r} is not on the screen:\n{screen}")


def store_history(profile: Path, now: float) -> None:
    """Messages from eight people in the room's stored history (the screen loads it)."""
    from lanchat.store import HistoryRecord, Profile

    with Profile.open(profile) as opened:
        for n, handle in enumerate(EIGHT):
            opened.history.append(
                HistoryRecord(
                    f"stored:{n}", "public", handle, f"{n:02x}" * 32, f"hello from {handle}",
                    now - 600 + n, now - 600 + n, False,
                )
            )  # fmt: skip


class Room:
    """The screen of ``tuiuser`` on host 1 and a headless ``ada`` on host 2, in room e2e."""

    def __init__(self, pane: TmuxPane, lan: VirtualLan, tmp_path: Path) -> None:
        self.pane = pane
        self.profile = tmp_path / "tui"
        self.ada = LanNode(lan, 2, "ada", tmp_path / "ada", ["--room", "e2e"])
        self.ada.wait("ready")
        store_history(self.profile, time.time())
        argv = [sys.executable, "-m", "lanchat", "--handle", "tuiuser"]
        pane.start(lan.argv(1, [*argv, "--profile", str(self.profile), "--room", "e2e"]))
        self.ada.wait("peer_up", lambda e: e["handle"] == "tuiuser")
        pane.wait("ada in the sidebar", lambda rows: "ada" in " ".join(sidebar(rows)))
        pane.wait("connected", lambda rows: "2 online" in status_bar(rows))

    def say(self, text: str) -> None:
        self.pane.type(text)
        self.pane.send("Enter")

    def nothing_public_but(self, marker: str) -> None:
        """Nothing reached ada publicly before ``marker`` (said now, arriving in order)."""
        self.say(marker)
        self.ada.wait("public", lambda e: e["text"] == marker)
        said = [e["text"] for e in self.ada.seen("public") if e["from"] == "tuiuser"]
        assert said[-1] == marker

    def report(self) -> str:
        log = self.profile / "lanchat.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        return f"--- log\n{text}\n--- ada\n{self.ada.stderr()}\n{self.ada.events.seen}"


@pytest.fixture
def room(tmux_pane: TmuxPane, vlan: Callable[..., VirtualLan], tmp_path: Path) -> Iterator[Room]:
    chat = Room(tmux_pane, vlan(2), tmp_path)
    try:
        yield chat
    except BaseException:
        print(chat.report())
        raise
    finally:
        chat.ada.quit()


def test_esc_never_eats_a_key_and_a_lost_slash_is_caught(room: Room) -> None:
    pane = room.pane
    # Esc, then "/who" in the same instant (one tmux command: well within 50 ms).
    pane.tmux("send-keys", "-t", pane.session, "Escape", ";", "send-keys", "-t", pane.session,
              "-l", "/who")  # fmt: skip
    pane.send("Enter")
    pane.wait_text("1 other online:")
    room.nothing_public_but("after who")
    assert "who" not in [e["text"] for e in room.ada.seen("public")]

    # Esc closes help at the first press, at once.
    pane.send("F1")
    pane.wait_text("lanchat help")
    pane.send("Escape")
    pressed = time.monotonic()
    pane.wait("help closed", lambda rows: not any("lanchat help" in r for r in rows))
    assert time.monotonic() - pressed < ESC_CLOSES_WITHIN_S

    # A private message whose "/" was lost is not posted: the screen asks first.
    pane.type("msg ada secret")
    pane.send("Enter")
    pane.wait_text("looks like /msg without its /")
    pane.send("Enter")  # a habitual second Enter does not send it either
    pane.send("Escape")
    pane.wait("question gone", lambda rows: not any("without its /" in r for r in rows))
    pane.wait("the line kept", lambda rows: any(r.startswith("e2e> msg ada secret") for r in rows))
    pane.send("C-u")
    room.nothing_public_but("after msg")
    assert not [e for e in room.ada.seen("public") if "secret" in e["text"]]


def test_names_in_eight_colours_me_search_clear_and_code(room: Room, tmp_path: Path) -> None:
    pane = room.pane
    pane.wait_text("hal: hello from hal")  # the stored history, loaded at start
    screen = pane.tmux("capture-pane", "-p", "-e", "-t", pane.session)
    colours = {handle: colours_before(screen, f"{handle}: hello") for handle in EIGHT}
    assert all(colours.values()), colours
    assert len(set(colours.values())) == len(EIGHT), colours

    room.say("/search hello from cyd")
    pane.wait_text("search 'hello from cyd' in this chat: 1 hit")
    pane.send("Enter")  # shows it in the chat
    pane.wait("results closed", lambda rows: not any("search 'hello" in r for r in rows))
    assert "cyd: hello from cyd" in pane.screen

    room.say("/clear")
    pane.wait("cleared", lambda rows: not any("hello from" in r for r in rows))

    room.say("/me waves")
    assert room.ada.wait("public", lambda e: e["from"] == "tuiuser")["text"] == "/me waves"
    pane.wait_text("* tuiuser waves")

    # A fenced code block: highlighted, shown as is behind a gutter, folded after 10 rows.
    room.ada.send(cmd="say", text=f"try this:\n```python\n{CODE}\n```")
    pane.wait_text("┄ 10 more lines · Ctrl-O shows them")
    screen = pane.tmux("capture-pane", "-p", "-e", "-t", pane.session)
    assert "│ def step_0(x):  # 0" in SGR.sub("", screen)
    keyword, name, comment = (
        colours_before(screen, text) for text in ("def step_0", "step_0(", "# 0")
    )
    assert len({keyword, name, comment}) == 3, (keyword, name, comment)
    assert "step_9" not in SGR.sub("", screen)
    capture = os.environ.get("LANCHAT_TUI_CAPTURE_CODE")
    if capture:  # the second screen shown in the README
        Path(capture).write_text(pane.capture())
    pane.send("C-o")
    pane.wait_text("│     return x + 9")
    target = tmp_path / "step.py"
    room.say(f"/save {target}")
    pane.wait_text("saved the code block (20 lines)")
    assert target.read_text() == CODE + "\n"

    # Code pasted into the input line (a bracketed paste) goes out whole and shows as code.
    pasted = "def hello():\n    print('hi')\n    return 1"
    pane.tmux("set-buffer", "-b", "snippet", pasted)
    pane.tmux("paste-buffer", "-p", "-d", "-b", "snippet", "-t", pane.session)
    pane.send("Enter")
    got = room.ada.wait("public", lambda e: e["text"].startswith("def hello"))
    assert got["text"] == pasted
    pane.wait_text("│     print('hi')")


def test_unfriend(room: Room) -> None:
    room.ada.send(cmd="request", to="tuiuser")
    room.pane.wait_text("ada wants to chat privately")
    room.pane.send("F2")
    room.ada.wait("accepted")
    room.say("/unfriend ada")
    room.pane.wait(
        "an answer", lambda rows: any("no longer friends" in r or "error:" in r for r in rows)
    )
    assert "error:" not in room.pane.screen
    room.ada.send(cmd="msg", to="tuiuser", text="still friends?")
    room.ada.wait("error", lambda e: e["code"] == "not_friends", timeout=5)


def test_rooms_and_moving_room(room: Room, tmp_path: Path) -> None:
    other = LanNode(room.ada.lan, 2, "zed", tmp_path / "zed", ["--room", "lab"])
    try:
        other.wait("ready")
        room.say("/rooms")
        room.pane.wait(
            "an answer",
            lambda rows: any("room" in r and ("network" in r or "error:" in r) for r in rows),
        )
        assert "error:" not in room.pane.screen
        room.pane.wait_text("lab  1 person")
        room.say("/room lab")
        room.pane.wait_text("you are in room lab now")
        other.wait("peer_up", lambda e: e["handle"] == "tuiuser")
    finally:
        other.quit()


def test_the_sender_sees_who_fetched_a_file(room: Room, tmp_path: Path) -> None:
    shared = tmp_path / "notes.txt"
    shared.write_text("the wiring diagram\n")
    room.say(f"/share {shared}")
    offer = room.ada.wait("file_offer")
    room.ada.send(cmd="accept_file", id=offer["id"])
    room.ada.wait("file_done")
    room.pane.wait_text("ada fetched notes.txt", timeout=5)
