"""The chat screen's view model, input parsing and rendering: pure, no terminal."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from lanchat.core.friendship import Friendship
from lanchat.ui import render
from lanchat.ui.commands import (
    COMMANDS,
    HELP_ROWS,
    Action,
    Command,
    InputContext,
    InputError,
    LocalAction,
    parse_input,
)
from lanchat.ui.model import MAX_LINES, PUBLIC, LineKind, ViewModel
from lanchat.ui.screen import KEYS

ESC = "\x1b"


def ev(name: str, **fields: Any) -> dict[str, Any]:
    return {"ev": name, "t": 1_700_000_000.0, **fields}


def texts(model: ViewModel, key: str = PUBLIC) -> list[str]:
    return [line.text for line in model.conversations[key].lines]


def plain(fragments: render.Fragments) -> str:
    return "".join(text for _style, text in fragments)


@pytest.fixture
def model() -> ViewModel:
    return ViewModel("me", "lobby")


# ---------------------------------------------------------------- status and peers


def test_start_up_progress_fills_the_status_and_the_room(model: ViewModel) -> None:
    model.apply(ev("status", state="discovering", text="looking for other lanchat users"))
    model.apply(ev("ready", handle="me", fingerprint="aaaa-bbbb-cccc-dddd-eeee"))
    model.apply(ev("status", state="electing", text="finding the broker"))
    model.apply(ev("broker", handle="alice", epoch=1, **{"self": False}))
    model.apply(ev("status", state="connected", text="connected to broker alice"))
    model.apply(ev("peer_up", handle="alice", mentor=True))

    assert model.status.state == "connected"
    assert model.status.broker == "alice"
    assert model.status.fingerprint == "aaaa-bbbb-cccc-dddd-eeee"
    assert model.online_count() == 2  # alice and you
    assert texts(model)[:3] == [
        "looking for other lanchat users",
        "you are me (key fingerprint aaaa-bbbb-cccc-dddd-eeee)",
        "finding the broker",
    ]
    left = plain(render.status_left(model))
    assert "lobby" in left
    assert "connected to broker alice · 2 online" in left
    assert "me" in plain(render.status_right(model))


def test_sidebar_lists_mentors_first_and_marks_friends_and_requests(model: ViewModel) -> None:
    for handle, mentor in (("zed", False), ("bob", False), ("yoda", True), ("carol", False)):
        model.apply(ev("peer_up", handle=handle, mentor=mentor))
    model.apply(
        ev(
            "friends",
            friends=[
                {"handle": "bob", "state": "friend", "online": True, "fingerprint": "f1"},
                {"handle": "dave", "state": "friend", "online": False, "fingerprint": "f2"},
            ],
        )
    )
    model.apply(ev("request", **{"from": "carol"}, fingerprint="c0ff-ee00"))

    entries = model.sidebar()
    assert [e.label for e in entries] == ["lobby", "yoda", "bob", "carol", "zed", "dave"]
    by_name = {e.label: e for e in entries}
    assert by_name["yoda"].mentor
    assert by_name["bob"].relation is Friendship.FRIEND
    assert by_name["carol"].relation is Friendship.PENDING_IN
    assert not by_name["dave"].online  # an offline friend stays listed
    bar = render.sidebar(model, 22, render.UNICODE)
    rows = plain(bar).splitlines()
    assert rows[2].startswith(" ★  yoda")
    assert rows[3].startswith("  ♥ bob")
    assert rows[4].startswith("  ? carol")
    assert rows[-1].rstrip().endswith("off")
    assert all(render.cells(row) == 22 for row in rows if row.strip() != "people")
    ascii_rows = plain(render.sidebar(model, 22, render.ASCII)).splitlines()
    assert ascii_rows[2].startswith(" M  yoda")
    assert ascii_rows[3].startswith("  F bob")


def test_peer_down_marks_offline_and_who_replaces_the_online_set(model: ViewModel) -> None:
    model.apply(ev("peer_up", handle="bob", mentor=False))
    model.apply(ev("peer_up", handle="carol", mentor=False))
    model.apply(ev("peer_down", handle="bob"))
    assert [p.handle for p in model.peers.values() if p.online] == ["carol"]
    model.apply(ev("who", peers=[{"handle": "bob", "mentor": True, "state": "none"}]))
    assert {p.handle: p.online for p in model.peers.values()} == {"bob": True, "carol": False}
    assert model.peers["@bob"].mentor
    # Nobody asked for the listing: nothing printed.
    assert not any("online" in t for t in texts(model) if "other" in t)


def test_who_prints_a_listing_only_when_asked(model: ViewModel) -> None:
    model.will_send({"cmd": "who"})
    model.apply(ev("who", peers=[{"handle": "bob", "mentor": False, "fingerprint": "ab-cd"}]))
    assert texts(model)[-2:] == ["1 other online:", "  bob  ab-cd"]


# ---------------------------------------------------------------- messages


def test_public_messages_count_as_unread_only_elsewhere(model: ViewModel) -> None:
    assert not model.apply(ev("public", id="a:1", **{"from": "bob"}, text="hi", sent_t=1.0))
    assert model.conversations[PUBLIC].unread == 0
    model.apply(ev("accepted", by="bob"))
    model.join("bob", 2.0)
    model.apply(ev("public", id="a:2", **{"from": "bob"}, text="again", sent_t=2.0))
    assert model.conversations[PUBLIC].unread == 1
    model.switch(1)  # back to the room: the only other conversation
    assert model.current == PUBLIC
    assert model.conversations[PUBLIC].unread == 0


def test_private_message_elsewhere_rings_and_highlights(model: ViewModel) -> None:
    rings = model.apply(ev("private", id="b>m:1", **{"from": "bob"}, text="psst", sent_t=1.0))
    assert rings
    conv = model.conversations["@bob"]
    assert (conv.unread, conv.attention) == (1, True)
    assert next(e for e in model.sidebar() if e.label == "bob").attention
    assert model.current == PUBLIC  # never steals focus
    model.switch(1)
    assert model.current == "@bob"
    assert (conv.unread, conv.attention) == (0, False)
    assert not model.apply(ev("private", id="b>m:2", **{"from": "bob"}, text="x", sent_t=2.0))


def test_a_mention_of_your_handle_rings_and_is_marked(model: ViewModel) -> None:
    assert model.apply(ev("public", id="1", **{"from": "bob"}, text="hey ME, look", sent_t=1))
    assert not model.apply(ev("public", id="2", **{"from": "bob"}, text="meh. memo", sent_t=1))
    lines = list(model.conversations[PUBLIC].lines)
    assert [line.mention for line in lines] == [True, False]


def test_own_messages_are_shown_when_sent(model: ViewModel) -> None:
    model.sent({"cmd": "say", "text": "hello"}, 5.0)
    model.sent({"cmd": "msg", "to": "bob", "text": "secret"}, 6.0)
    own = model.conversations[PUBLIC].lines[0]
    assert (own.kind, own.sender, own.text) == (LineKind.OWN, "me", "hello")
    assert texts(model, "@bob") == ["secret"]
    assert texts(model)[-1] == "to bob: secret"  # a note where you are; the chat stays put
    assert model.current == PUBLIC


def test_history_merges_without_duplicates(model: ViewModel) -> None:
    model.apply(ev("public", t=100.0, id="x:2", **{"from": "bob"}, text="two", sent_t=100.0))
    model.sent({"cmd": "say", "text": "three"}, 101.0)
    stored = [
        {"id": "x:1", "from": "bob", "text": "one", "sent_t": 50.0, "outgoing": False},
        {"id": "x:2", "from": "bob", "text": "two", "sent_t": 100.0, "outgoing": False},
        {"id": "m:1", "from": "me", "text": "three", "sent_t": 101.2, "outgoing": True},
    ]
    model.will_send({"cmd": "history"})
    model.apply(ev("history", t=200.0, messages=stored, **{"with": None}))
    assert texts(model) == ["one", "two", "three", "loaded 1 earlier message of the room"]


def test_errors_and_warnings_go_to_the_conversation_on_screen(model: ViewModel) -> None:
    model.apply(ev("error", code="unknown_handle", message="nobody called 'x'"))
    model.apply(ev("warning", code="key_changed", handle="bob", message="bob changed key"))
    kinds = [line.kind for line in model.conversations[PUBLIC].lines]
    assert kinds == [LineKind.ERROR, LineKind.WARNING]
    assert model.status.last_error == "unknown_handle"
    model.failed({"cmd": "msg"}, "you and bob are not friends", 3.0)
    assert texts(model)[-1] == "you and bob are not friends"


# ---------------------------------------------------------------- requests


def test_request_flow_accept(model: ViewModel) -> None:
    assert model.apply(ev("request", **{"from": "bob"}, fingerprint="b0b0"))
    assert model.first_request() == ("bob", "b0b0")
    assert "bob wants to chat privately" in plain(render.request_bar(model))
    assert model.parse_input("/accept") == Command({"cmd": "accept", "from": "bob"})
    # The node answers an accept with an "accepted" event while executing it.
    model.apply(ev("accepted", by="me", **{"with": "bob"}))
    model.sent({"cmd": "accept", "from": "bob"}, 2.0)
    assert model.requests == {}
    assert model.peers["@bob"].relation is Friendship.FRIEND
    assert "@bob" in model.conversation_order()
    assert render.request_bar(model) == []


def test_request_flow_reject_and_rejected(model: ViewModel) -> None:
    model.apply(ev("request", **{"from": "bob"}, fingerprint="b0b0"))
    model.apply(ev("request", **{"from": "carol"}, fingerprint="ca01"))
    assert "1 more waiting" in plain(render.request_bar(model))
    model.sent({"cmd": "reject", "from": "bob"}, 2.0)
    assert model.first_request() == ("carol", "ca01")
    assert model.peers["@bob"].relation is Friendship.NONE
    model.sent({"cmd": "request", "to": "dave"}, 3.0)
    dave = model.peers["@dave"]
    assert dave.relation is Friendship.PENDING_OUT
    model.apply(ev("rejected", by="dave"))
    assert model.peers["@dave"].relation is Friendship.NONE
    assert texts(model)[-1] == "dave declined your private-chat request"


# ---------------------------------------------------------------- hostile input


def test_hostile_handles_and_texts_are_rendered_harmless(model: ViewModel) -> None:
    evil = f"{ESC}[2J{ESC}]0;owned\x07bob\u202e"
    model.apply(ev("peer_up", handle=evil, mentor=False))
    model.apply(ev("public", id="1", **{"from": evil}, text=f"hi{ESC}[31m red\x9b1m", sent_t=1))
    model.apply(ev("private", id="2", **{"from": evil}, text=f"{ESC}P payload{ESC}\\x", sent_t=1))
    model.apply(ev("request", **{"from": "x" * 500}, fingerprint=ESC + "[1m"))
    model.apply(ev("public", id="3", **{"from": 42}, text=None, sent_t="soon"))  # malformed

    out = plain(render.conversation(model, 50)) + plain(render.sidebar(model, 22))
    out += plain(render.request_bar(model))
    model.switch(1)
    out += plain(render.conversation(model, 50)) + render.prompt(model)
    assert ESC not in out
    assert "\x07" not in out
    assert "\x9b" not in out
    assert "\u202e" not in out
    assert "bob: hi red" in out
    assert max(len(p.handle) for p in model.peers.values()) <= 32


# ---------------------------------------------------------------- memory and scrolling


def test_ten_thousand_messages_stay_bounded(model: ViewModel) -> None:
    for i in range(10_000):
        model.apply(
            ev("public", t=float(i), id=f"a:{i}", **{"from": "bob"}, text=f"m{i}", sent_t=i)
        )
    lines = model.conversations[PUBLIC].lines
    assert len(lines) == MAX_LINES
    assert lines[0].text == f"m{10_000 - MAX_LINES}"
    assert [line.text for line in model.visible_lines(3)] == ["m9997", "m9998", "m9999"]


def test_scrolling_pages_and_holds_the_view_while_messages_arrive() -> None:
    model = ViewModel("me", "lobby", max_lines=100)
    for i in range(50):
        model.apply(ev("public", id=f"{i}", **{"from": "bob"}, text=f"m{i}", sent_t=i))
    model.scroll_up(10)
    assert model.visible_lines(2)[-1].text == "m39"
    model.apply(ev("public", id="new", **{"from": "bob"}, text="new", sent_t=99))
    assert model.visible_lines(2)[-1].text == "m39"  # the view did not jump
    assert "newer lines below" in plain(render.conversation(model, 5))
    model.scroll_up(1000)
    assert model.visible_lines(1)[0].text == "m0"
    model.scroll_down(1000)
    assert model.scroll == 0
    assert model.visible_lines(1)[0].text == "new"


def test_paging_up_stops_at_the_first_screenful() -> None:
    model = ViewModel("me", "lobby", max_lines=100)
    for i in range(30):
        model.apply(ev("public", id=f"{i}", **{"from": "bob"}, text=f"m{i}", sent_t=i))
    model.scroll_up(26, view=20)
    assert model.scroll == 10  # the view still holds 20 lines: m0 to m19
    assert [line.text for line in model.visible_lines(20)][::19] == ["m0", "m19"]
    model.scroll_down(10)
    model.scroll_up(5, view=40)  # everything fits already: nothing to scroll
    assert model.scroll == 0


# ---------------------------------------------------------------- input parsing


PUBLIC_CTX = InputContext()
BOB_CTX = InputContext(conversation="bob", first_request="carol")


@pytest.mark.parametrize(
    ("line", "ctx", "expected"),
    [
        ("hello all", PUBLIC_CTX, Command({"cmd": "say", "text": "hello all"})),
        ("hi bob", BOB_CTX, Command({"cmd": "msg", "to": "bob", "text": "hi bob"})),
        ("//etc/hosts", PUBLIC_CTX, Command({"cmd": "say", "text": "/etc/hosts"})),
        (
            "/msg bob  hi  there",
            PUBLIC_CTX,
            Command({"cmd": "msg", "to": "bob", "text": "hi  there"}),
        ),
        ("/m bob x", PUBLIC_CTX, Command({"cmd": "msg", "to": "bob", "text": "x"})),
        ("/say ?", BOB_CTX, Command({"cmd": "say", "text": "?"})),
        ("/request bob", PUBLIC_CTX, Command({"cmd": "request", "to": "bob"})),
        ("/accept bob", PUBLIC_CTX, Command({"cmd": "accept", "from": "bob"})),
        ("/accept", BOB_CTX, Command({"cmd": "accept", "from": "carol"})),
        ("/reject", BOB_CTX, Command({"cmd": "reject", "from": "carol"})),
        ("/REJECT dave", BOB_CTX, Command({"cmd": "reject", "from": "dave"})),
        ("/block bob", PUBLIC_CTX, Command({"cmd": "block", "handle": "bob"})),
        ("/unblock bob", PUBLIC_CTX, Command({"cmd": "unblock", "handle": "bob"})),
        ("/who", PUBLIC_CTX, Command({"cmd": "who"})),
        ("/friends", PUBLIC_CTX, Command({"cmd": "friends"})),
        ("/history", PUBLIC_CTX, Command({"cmd": "history", "with": None, "limit": 50})),
        ("/history", BOB_CTX, Command({"cmd": "history", "with": "bob", "limit": 50})),
        ("/history 20", BOB_CTX, Command({"cmd": "history", "with": "bob", "limit": 20})),
        ("/history dave 5", PUBLIC_CTX, Command({"cmd": "history", "with": "dave", "limit": 5})),
        ("/history public", BOB_CTX, Command({"cmd": "history", "with": None, "limit": 50})),
        ("/help", PUBLIC_CTX, LocalAction(Action.HELP)),
        ("/quit", PUBLIC_CTX, LocalAction(Action.QUIT)),
        ("/join bob", PUBLIC_CTX, LocalAction(Action.JOIN, "bob")),
        ("/join @bob", PUBLIC_CTX, LocalAction(Action.JOIN, "bob")),
        ("/join public", BOB_CTX, LocalAction(Action.JOIN, None)),
        ("/join", BOB_CTX, LocalAction(Action.JOIN, None)),
        ("   ", PUBLIC_CTX, LocalAction(Action.NOTHING)),
    ],
)
def test_parse_input(line: str, ctx: InputContext, expected: object) -> None:
    assert parse_input(line, ctx) == expected


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("/frobnicate", "unknown command '/frobnicate': type /help for the list"),
        ("/msg bob", "usage: /msg H text"),
        ("/msg", "usage: /msg H text"),
        ("/say", "usage: /say text"),
        ("/request", "usage: /request H"),
        ("/request a b", "usage: /request H"),
        ("/accept", "no private-chat request is waiting (usage: /accept H)"),
        ("/who now", "usage: /who"),
        ("/history 0", "N must be from 1 to 10000"),
        ("/history a b c", "usage: /history [H] [N]"),
    ],
)
def test_parse_errors_explain(line: str, message: str) -> None:
    assert parse_input(line) == InputError(message)


def test_parse_rejects_bad_handles_safely() -> None:
    result = parse_input(f"/request bo{ESC}b")
    assert isinstance(result, InputError)
    assert "is not a handle" in result.message
    assert ESC not in result.message


def test_every_command_is_on_the_help_screen_which_fits_80x24() -> None:
    helped = " ".join(usage for usage, _ in HELP_ROWS)
    for spec in COMMANDS:
        assert spec.name in helped
    rows = plain(render.help_screen(KEYS)).split("\n")
    assert len(rows) <= 22  # 24 rows minus the status bar and the input line
    assert max(render.cells(row) for row in rows) <= 80


def test_model_commands_and_render_do_not_import_prompt_toolkit() -> None:
    code = (
        "import sys, lanchat.ui.model, lanchat.ui.commands, lanchat.ui.render; "
        "print('prompt_toolkit' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("width", [20, 33, 57, 80])
def test_long_messages_wrap_at_spaces_under_the_text(width: int) -> None:
    model = ViewModel("me", "lobby")
    text = "can you share the wiring diagram? " * 5 + "x" * 120 + " 終わり end"
    model.apply(ev("public", id="1", **{"from": "carol"}, text=text, sent_t=1))
    rows = plain(render.conversation(model, 10, width)).split("\n")
    assert len(rows) > 1
    assert all(render.cells(row) <= width for row in rows)
    assert all(row.startswith(" " * render.TIME_WIDTH) for row in rows[1:])
    joined = "".join(row[render.TIME_WIDTH :] for row in rows)
    assert joined.replace(" ", "") == ("carol:" + text).replace(" ", "")
