"""The chat screen's view model, input parsing and rendering: pure, no terminal."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

import pytest

from lanchat.core.friendship import Friendship
from lanchat.ui import render
from lanchat.ui.commands import (
    COMMANDS,
    HELP_ROWS,
    HELP_USAGE_WIDTH,
    Action,
    Command,
    InputContext,
    InputError,
    LocalAction,
    parse_input,
)
from lanchat.ui.model import (
    FOLD_SHOWN,
    HANDLE_COLOURS,
    MAX_LINES,
    PUBLIC,
    Block,
    LineKind,
    Receipt,
    ViewModel,
    human_size,
    ordinal,
    peer_key,
    split_blocks,
)
from lanchat.ui.screen import KEYS

ESC = "\x1b"


def ev(name: str, /, **fields: Any) -> dict[str, Any]:
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


def test_a_mentor_sees_the_connect_line_others_can_use() -> None:
    mentor = ViewModel("ada", "lobby", mentor=True)
    mentor.apply(ev("ready", handle="ada", fingerprint="aaaa-bbbb", connect="10.77.0.1"))
    assert "others can join with:  lanchat --connect 10.77.0.1" in texts(mentor)
    student = ViewModel("ben", "lobby")
    student.apply(ev("ready", handle="ben", fingerprint="aaaa-bbbb", connect="10.77.0.2"))
    assert not any("--connect" in t for t in texts(student))


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


# Zero-width characters, direction marks, BOM, soft hyphen, a tag.
INVISIBLE = "\u200b\u200c\u200d\ufeff\u2060\u200e\u200f\u061c\u00ad\U000e0041"
SEPARATORS = "\u2028\u2029"


def test_invisible_characters_never_reach_the_screen() -> None:
    model = ViewModel("me", "lobby", mentor=True)

    def sly(word: str) -> str:
        return INVISIBLE.join(word)

    model.apply(ev("peer_up", handle=sly("bob"), mentor=False, status="busy", status_text=sly("x")))
    model.apply(ev("peer_status", handle=sly("bob"), status="away", text=sly("lunch")))
    model.apply(
        ev("public", id="1", **{"from": sly("bob")}, text=sly("hello") + "\u2029x", sent_t=1)
    )
    model.apply(ev("private", id="2", **{"from": sly("bob")}, text=sly("psst"), sent_t=1))
    model.apply(ev("peer_up", handle="sep\u2028\u2029arator", mentor=False))
    model.apply(ev("request", **{"from": sly("eve")}, fingerprint="abcd"))
    model.apply(ev("typing", **{"from": sly("bob")}, active=True))
    model.apply(ev("warning", code="key_changed", handle=sly("bob"), message=sly("changed")))
    model.apply(
        ev("file_offer", id="f" * 32, **{"from": sly("bob")}, name=sly("notes.txt"), size=5,
           sha256="0" * 64, fingerprint="abcd", shared=True)
    )  # fmt: skip
    model.apply(
        ev("queue", entries=[{"n": 1, "id": "h1", "who": sly("carl"), "topic": sly("loops"),
                              "anon": False, "waiting_s": 3, "claimed_by": ""},
                             {"n": 2, "id": "h2", "who": sly("fay"), "topic": sly("sets"),
                              "anon": False, "waiting_s": 3, "claimed_by": sly("dan")}])
    )  # fmt: skip
    out = plain(render.conversation(model, 80)) + plain(render.sidebar(model, 22))
    out += plain(render.request_bar(model)) + plain(render.offer_bar(model))
    out += plain(render.queue_panel(model, 80, now=1_700_000_001.0))
    out += plain(render.status_left(model, now=1_700_000_001.0)) + render.prompt(model)
    model.switch(1)
    out += plain(render.conversation(model, 80))
    assert not set(out) & set(INVISIBLE + SEPARATORS)
    assert "bob: hello\n" in out
    assert "notes.txt" in out
    assert "loops" in out


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
OFFER_ID = "9f86d081884c7d659a2feaa0c55ad015"
FILES_CTX = InputContext(offers=(OFFER_ID, "a" * 32))
HELP_CTX = InputContext(conversation="anon-3f2a", hands=("h1",), help_hand="h1")


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
        # help queue
        ("/hand", PUBLIC_CTX, Command({"cmd": "hand", "topic": "", "anon": False})),
        (
            "/hand wiring the  sensor",
            PUBLIC_CTX,
            Command({"cmd": "hand", "topic": "wiring the  sensor", "anon": False}),
        ),
        (
            "/hand --anon loops",
            PUBLIC_CTX,
            Command({"cmd": "hand", "topic": "loops", "anon": True}),
        ),
        ("/done", PUBLIC_CTX, Command({"cmd": "done"})),
        ("/done", HELP_CTX, Command({"cmd": "done", "id": "h1"})),
        ("/done h", HELP_CTX, Command({"cmd": "done", "id": "h1"})),
        ("/queue", PUBLIC_CTX, Command({"cmd": "queue"})),
        ("/claim 2", PUBLIC_CTX, Command({"cmd": "claim", "n": 2})),
        ("thanks", HELP_CTX, Command({"cmd": "msg", "to": "anon-3f2a", "text": "thanks"})),
        # status and settings
        (
            "/status away at lunch",
            PUBLIC_CTX,
            Command({"cmd": "status", "set": "away", "text": "at lunch"}),
        ),
        ("/status BUSY", PUBLIC_CTX, Command({"cmd": "status", "set": "busy", "text": ""})),
        ("/away lunch", PUBLIC_CTX, Command({"cmd": "status", "set": "away", "text": "lunch"})),
        ("/back", PUBLIC_CTX, Command({"cmd": "status", "set": "online", "text": ""})),
        ("/set receipts off", PUBLIC_CTX, Command({"cmd": "set", "receipts": False})),
        ("/set typing ON", PUBLIC_CTX, Command({"cmd": "set", "typing": True})),
        ("/set notify off", PUBLIC_CTX, LocalAction(Action.NOTIFY, "off")),
        # files
        (
            "/send bob ~/data/set 1.bin",
            PUBLIC_CTX,
            Command({"cmd": "send", "to": "bob", "path": "~/data/set 1.bin"}),
        ),
        (
            '/send bob "my file.txt"',
            PUBLIC_CTX,
            Command({"cmd": "send", "to": "bob", "path": "my file.txt"}),
        ),
        ("/share notes.pdf", BOB_CTX, Command({"cmd": "share", "path": "notes.pdf"})),
        ("/accept-file", FILES_CTX, Command({"cmd": "accept_file", "id": OFFER_ID})),
        ("/accept-file 9f86", FILES_CTX, Command({"cmd": "accept_file", "id": OFFER_ID})),
        ("/decline-file", FILES_CTX, Command({"cmd": "decline_file", "id": OFFER_ID})),
        ("/decline-file zz", FILES_CTX, Command({"cmd": "decline_file", "id": "zz"})),
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
        ("/claim", "usage: /claim N"),
        ("/claim 0", "usage: /claim N"),
        ("/claim ²", "usage: /claim N"),
        ("/claim " + "9" * 5000, "usage: /claim N"),
        ("/done a b", "usage: /done [id]"),
        ("/status", "usage: /status online|away|busy [text]"),
        ("/status gone fishing", "usage: /status online|away|busy [text]"),
        ("/set receipts", "usage: /set receipts|typing|notify on|off"),
        ("/set sound off", "usage: /set receipts|typing|notify on|off"),
        ("/send bob", "usage: /send H path"),
        ("/share", "usage: /share path"),
        ("/accept-file", "no file offer is waiting (usage: /accept-file ID)"),
        ("/decline-file", "no file offer is waiting (usage: /decline-file ID)"),
    ],
)
def test_parse_errors_explain(line: str, message: str) -> None:
    assert parse_input(line) == InputError(message)


def test_parse_rejects_bad_handles_safely() -> None:
    result = parse_input(f"/request bo{ESC}b")
    assert isinstance(result, InputError)
    assert "is not a handle" in result.message
    assert ESC not in result.message


def test_an_ambiguous_id_prefix_is_refused() -> None:
    result = parse_input("/accept-file ", FILES_CTX)
    assert result == Command({"cmd": "accept_file", "id": OFFER_ID})
    assert parse_input("/decline-file a", InputContext(offers=("ab", "ac"))) == InputError(
        "'a' could be more than one file offer: type more of its id"
    )


def test_every_command_is_on_the_help_screen_which_fits_80_columns_and_scrolls() -> None:
    helped = " ".join(usage for usage, _ in HELP_ROWS)
    for spec in COMMANDS:
        assert spec.name in helped
    assert all(len(usage) < HELP_USAGE_WIDTH for usage, _ in HELP_ROWS + KEYS)
    rows = plain(render.help_screen(KEYS)).split("\n")
    assert len(rows) == render.help_rows(KEYS)
    assert max(render.cells(row) for row in rows) <= 80
    # Scrolled by 5: the same rows from the sixth on; never scrolled past the last.
    assert plain(render.help_screen(KEYS, 5)).split("\n") == rows[5:]
    assert plain(render.help_screen(KEYS, 999)).split("\n") == rows[-1:]


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
    rows = plain(render.conversation(model, 10, width, now=1)).split("\n")
    assert len(rows) > 1
    assert all(render.cells(row) <= width for row in rows)
    assert all(row.startswith(" " * render.TIME_WIDTH) for row in rows[1:])
    joined = "".join(row[render.TIME_WIDTH :] for row in rows)
    assert joined.replace(" ", "") == ("carol:" + text).replace(" ", "")


# ---------------------------------------------------------------- help queue

T0 = 1_700_000_000.0


def friend_model(*handles: str) -> ViewModel:
    """A model where ``handles`` are online friends."""
    model = ViewModel("me", "lobby")
    for handle in handles:
        model.apply(ev("peer_up", handle=handle, mentor=False))
        model.apply(ev("accepted", by=handle))
        model.open("@" + handle)  # seen: no attention marks left
    model.open(PUBLIC)
    return model


def test_a_students_hand_goes_up_waits_and_is_taken(model: ViewModel) -> None:
    model.apply(ev("hand", id="h1", state="raised", anon=True, topic="loops"))
    assert "you raised your hand anonymously" in texts(model)[-1]
    assert "your hand is up · a mentor" in plain(render.hand_bar(model))
    model.apply(ev("hand", id="h1", state="waiting", position=2, mentor=""))
    assert "your hand is up (2nd in line)" in plain(render.hand_bar(model))

    rang = model.apply(ev("hand", id="h1", state="claimed", position=0, mentor="mentor1"))
    assert rang
    assert model.current == "@mentor1"  # from the room, straight into the help session
    assert model.current_conversation.hand == "h1"
    assert "mentor1 is with you — type to talk privately" in plain(render.hand_bar(model))
    assert "mentor1 is with you" in texts(model, "@mentor1")[-1]
    assert model.parse_input("it loops forever") == Command(
        {"cmd": "msg", "to": "mentor1", "text": "it loops forever"}
    )
    assert model.parse_input("/done") == Command({"cmd": "done", "id": "h1"})
    model.apply(
        ev("private", id="hand:h1:m:1", text="show me", sent_t=1, hand="h1", **{"from": "mentor1"})
    )
    assert texts(model, "@mentor1")[-1] == "show me"
    assert model.take_reads() == []  # no read receipts in help sessions
    entry = next(e for e in model.sidebar() if e.key == "@mentor1")
    assert entry.helping
    assert entry.online
    assert model.current == "@mentor1"
    assert plain(render.status_left(model, T0)).startswith(" help: mentor1 ")

    model.open(PUBLIC)
    assert "/join mentor1 to talk privately" in plain(render.hand_bar(model))
    model.apply(ev("hand", id="h1", state="done", position=0, mentor="mentor1"))
    assert model.hands == {}
    assert render.hand_bar(model) == []
    assert "@mentor1" not in model.conversations  # the finished session left the sidebar
    assert not any(e.helping for e in model.sidebar())
    assert texts(model)[-1] == "the help session with mentor1 has ended"


def test_a_claimed_hand_does_not_pull_the_student_out_of_a_private_chat() -> None:
    model = friend_model("bob")
    model.open("@bob")
    model.apply(ev("hand", id="h1", state="raised", anon=False, topic=""))
    model.apply(ev("hand", id="h1", state="claimed", position=0, mentor="yoda"))
    assert model.current == "@bob"
    assert model.conversations["@yoda"].attention
    assert texts(model, "@bob")[-1] == "yoda is with you: /join yoda to talk"
    model.apply(ev("hand", id="h2", state="raised", anon=False, topic="x"))
    model.apply(ev("hand", id="h2", state="done", position=0, mentor=""))
    assert texts(model, "@bob")[-1] == "your hand is down"


def queue_event(*entries: tuple[int, str, str, str, float], t: float = T0) -> dict[str, Any]:
    return {
        "ev": "queue",
        "t": t,
        "entries": [
            {
                "n": n,
                "id": i,
                "who": who,
                "topic": topic,
                "anon": who.startswith("anon-"),
                "waiting_s": waiting,
                "claimed_by": "",
            }
            for n, i, who, topic, waiting in entries
        ],
    }


def test_mentors_see_the_queue_and_hear_new_hands() -> None:
    model = ViewModel("yoda", "lobby", mentor=True)
    assert model.apply(queue_event((1, "h1", "anon-3f2a", "wiring", 180.0)))  # bell
    assert model.take_alerts()[0].title == "new hand: anon-3f2a"
    panel = plain(render.queue_panel(model, 80, now=T0))
    assert "help queue: 1 waiting · /claim N helps hand N" in panel
    assert "1. anon-3f2a — wiring (waiting 3 min)" in panel
    assert not model.apply(queue_event((1, "h1", "anon-3f2a", "wiring", 181.0)))  # not new
    assert model.apply(
        queue_event((1, "h1", "anon-3f2a", "wiring", 200.0), (2, "h2", "carol", "", 1.0))
    )
    assert "2. carol (just now)" in plain(render.queue_panel(model, 80, now=T0 + 1))
    assert [word for word, _ in model.id_candidates("/claim")] == ["1", "2"]

    model.will_send({"cmd": "queue"})
    model.apply(queue_event((1, "h1", "anon-3f2a", "wiring", 240.0)))
    assert texts(model)[-2:] == ["help queue: 1 waiting", "  1. anon-3f2a — wiring (waiting 4 min)"]
    model.will_send({"cmd": "queue"})
    model.apply(queue_event())
    assert texts(model)[-1] == "the help queue is empty"
    student = ViewModel("me", "lobby")
    student.will_send({"cmd": "queue"})
    student.apply(queue_event())
    assert texts(student)[-1] == "only mentors see the help queue; /hand asks one for help"


def test_a_claim_opens_a_help_session_under_the_pseudonym() -> None:
    model = ViewModel("yoda", "lobby", mentor=True)
    model.apply(queue_event((1, "h1", "anon-3f2a", "wiring", 10.0)))
    model.apply(ev("claimed", id="h1", who="anon-3f2a", anon=True, topic="wiring"))
    assert model.current == "@anon-3f2a"
    assert "you are helping anon-3f2a (anonymous" in texts(model, "@anon-3f2a")[-1]
    assert model.parse_input("hi, what is wrong?") == Command(
        {"cmd": "msg", "to": "anon-3f2a", "text": "hi, what is wrong?"}
    )
    model.sent({"cmd": "msg", "to": "anon-3f2a", "text": "hi"}, T0)
    assert texts(model, "@anon-3f2a")[-1] == "hi"
    assert (
        model.apply(
            ev(
                "private",
                id="hand:h1:s:1",
                text="it sparks",
                sent_t=1,
                hand="h1",
                **{"from": "anon-3f2a"},
            )
        )
        is False
    )  # on screen: no bell
    entry = next(e for e in model.sidebar() if e.key == "@anon-3f2a")
    assert entry.helping
    assert entry.online
    assert entry.current
    assert "✚" in plain(render.sidebar(model, 22))
    # The queue after the claim lists it as ours: not waiting, so no panel.
    model.apply(
        {
            "ev": "queue",
            "t": T0,
            "entries": [
                {
                    "n": 1,
                    "id": "h1",
                    "who": "anon-3f2a",
                    "topic": "",
                    "anon": True,
                    "waiting_s": 20.0,
                    "claimed_by": "yoda",
                }
            ],
        }
    )
    assert render.queue_panel(model, 80) == []
    assert model.parse_input("/done") == Command({"cmd": "done", "id": "h1"})
    model.apply(ev("hand", id="h1", state="done", who="anon-3f2a"))
    assert model.claims == {}
    assert "@anon-3f2a" not in model.conversations  # the finished session left the sidebar
    assert [e.label for e in model.sidebar()] == ["lobby"]
    assert "@anon-3f2a" not in model.peers
    assert model.current == PUBLIC
    assert texts(model)[-1] == "the help session with anon-3f2a is done"


# ---------------------------------------------------------------- status, receipts, typing


def test_peer_status_marks_the_sidebar_and_the_status_bar() -> None:
    model = friend_model("ann", "bob")
    model.apply(ev("peer_status", handle="ann", status="away", text="lunch"))
    model.apply(ev("peer_status", handle="bob", status="busy", text=""))
    entries = {e.label: e for e in model.sidebar()}
    assert (entries["ann"].status, entries["ann"].status_text) == ("away", "lunch")
    bar = render.sidebar(model, 30)
    assert any(
        style == "class:sidebar.away" and "♥ ann (away: lunch)" in text for style, text in bar
    )
    assert any(style == "class:sidebar.busy" and "bob (busy)" in text for style, text in bar)
    model.open("@ann")
    assert "ann is away: lunch" in plain(render.status_left(model, now=T0))
    model.apply(ev("peer_status", handle="ann", status="online", text=""))
    assert "away" not in plain(render.status_left(model, now=T0))
    model.apply(
        ev(
            "who",
            peers=[
                {
                    "handle": "ann",
                    "mentor": False,
                    "state": "friend",
                    "status": "busy",
                    "status_text": "exam",
                    "fingerprint": "f",
                }
            ],
        )
    )
    assert model.peers["@ann"].status_text == "exam"


def test_own_status_shows_in_the_status_bar(model: ViewModel) -> None:
    model.sent({"cmd": "status", "set": "away", "text": "lunch"}, T0)
    assert texts(model)[-1] == "your status: away (lunch)"
    assert "away: lunch" in plain(render.status_right(model))
    model.sent({"cmd": "status", "set": "online", "text": ""}, T0)
    assert "away" not in plain(render.status_right(model))


def own_marks(model: ViewModel) -> list[str]:
    rows = plain(render.conversation(model, 20)).split("\n")
    return [row.rsplit(" ", 1)[-1] for row in rows if "me:" in row]


def test_receipts_tick_own_messages_by_their_ids() -> None:
    model = friend_model("bob")
    model.open("@bob")
    model.sent({"cmd": "msg", "to": "bob", "text": "one"}, T0, "m1")
    model.sent({"cmd": "msg", "to": "bob", "text": "two"}, T0, "m2")
    assert own_marks(model) == ["one", "two"]
    model.apply(ev("delivered", id="m1", to="bob", upto=1))
    assert own_marks(model) == ["✓", "two"]
    model.apply(ev("delivered", id="m2", to="bob", upto=2))
    model.apply(ev("read", id="m1", by="bob"))
    assert own_marks(model) == ["✓✓", "✓"]
    model.apply(ev("delivered", id="m1", to="bob", upto=2))  # late: read stays read
    assert model.receipts["m1"] is Receipt.READ
    assert own_marks(render_model := model) == ["✓✓", "✓"]
    assert "vv" in plain(render.conversation(render_model, 20, markers=render.ASCII))


def test_without_ids_from_the_node_receipts_follow_the_order_of_deliveries() -> None:
    model = friend_model("bob")
    model.open("@bob")
    model.apply(
        ev(
            "history",
            messages=[
                {"id": "old", "from": "me", "text": "earlier", "sent_t": T0 - 99, "outgoing": True}
            ],
            **{"with": "bob"},
        )
    )
    model.sent({"cmd": "msg", "to": "bob", "text": "one"}, T0)
    model.sent({"cmd": "msg", "to": "bob", "text": "two"}, T0 + 1)
    model.apply(ev("delivered", id="old", to="bob", upto=1))  # shown with its id: not taken
    model.apply(ev("delivered", id="x1", to="bob", upto=2))
    model.apply(ev("read", id="x1", by="bob"))
    assert own_marks(model) == ["✓", "✓✓", "two"]
    model.apply(ev("delivered", id="x2", to="bob", upto=3))
    assert own_marks(model) == ["✓", "✓✓", "✓"]


def test_history_tells_the_ids_of_lines_sent_without_one() -> None:
    model = friend_model("bob")
    model.open("@bob")
    model.sent({"cmd": "msg", "to": "bob", "text": "one"}, T0)
    model.apply(
        ev(
            "history",
            messages=[
                {"id": "m1", "from": "me", "text": "one", "sent_t": T0 + 0.2, "outgoing": True}
            ],
            **{"with": "bob"},
        )
    )
    assert [line.msg_id for line in model.conversations["@bob"].lines][-1:] == ["m1"]
    model.apply(ev("read", id="m1", by="bob"))
    assert own_marks(model) == ["✓✓"]


def test_typing_shows_for_five_seconds_and_stops_with_the_message() -> None:
    model = friend_model("bob")
    model.open("@bob")
    model.apply(ev("typing", active=True, **{"from": "bob"}))
    assert "bob is typing…" in plain(render.status_left(model, now=T0 + 1))
    assert "typing" not in plain(render.status_left(model, now=T0 + 6))
    model.apply(ev("typing", active=True, **{"from": "bob"}))
    model.apply(ev("private", id="p1", text="hi", sent_t=1, **{"from": "bob"}))
    assert "typing" not in plain(render.status_left(model, now=T0 + 1))
    model.open(PUBLIC)
    model.apply(ev("typing", active=True, **{"from": "bob"}))
    assert "typing" not in plain(render.status_left(model, now=T0 + 1))  # another chat


def test_typing_goes_only_to_online_friends() -> None:
    model = friend_model("bob")
    assert model.typing_target() is None  # the room
    model.open("@bob")
    assert model.typing_target() == "bob"
    model.apply(ev("settings", receipts=True, typing=False))
    assert texts(model, "@bob")[-1] == "read receipts on · typing indicator off"
    assert model.typing_target() is None
    model.apply(ev("settings", receipts=True, typing=True))
    model.apply(ev("peer_down", handle="bob"))
    assert model.typing_target() is None


def test_read_receipts_are_due_only_for_what_is_on_screen() -> None:
    model = friend_model("bob")
    model.apply(ev("private", id="p1", text="hi", sent_t=1, **{"from": "bob"}))
    assert model.take_reads() == []  # in the room: bob's chat is not on screen
    model.open("@bob")
    assert model.take_reads() == ["bob"]
    assert model.take_reads() == []  # once
    model.show_help = True
    model.apply(ev("private", id="p2", text="there?", sent_t=2, **{"from": "bob"}))
    assert model.take_reads() == []
    model.show_help = False
    assert model.take_reads() == ["bob"]
    # Read while bob is offline: he is told when he is back.
    model.apply(ev("private", id="p3", text="bye", sent_t=3, **{"from": "bob"}))
    model.apply(ev("peer_down", handle="bob"))
    assert model.take_reads() == []
    model.open(PUBLIC)
    model.apply(ev("peer_up", handle="bob", mentor=False))
    assert model.take_reads() == ["bob"]


def test_private_messages_requests_and_offers_elsewhere_raise_alerts() -> None:
    model = friend_model("bob")
    model.apply(ev("private", id="p1", text="psst", sent_t=1, **{"from": "bob"}))
    model.apply(ev("request", fingerprint="ca01", **{"from": "carol"}))
    model.open("@bob")
    model.apply(ev("private", id="p2", text="on screen", sent_t=2, **{"from": "bob"}))
    assert [(a.title, a.body) for a in model.take_alerts()] == [
        ("bob (private)", "psst"),
        ("carol wants to chat", "answer in lanchat: F2 accept, F3 reject"),
    ]
    assert model.take_alerts() == []


# ---------------------------------------------------------------- files


def offer_event(offer_id: str = OFFER_ID, *, shared: bool = False) -> dict[str, Any]:
    return ev(
        "file_offer",
        id=offer_id,
        name="dataset.bin",
        size=3_000_000,
        sha256="00" * 32,
        fingerprint="be01",
        shared=shared,
        **{"from": "ben"},
    )


def test_a_file_offer_prompts_and_is_downloaded_with_progress() -> None:
    model = friend_model("ben")
    assert model.apply(offer_event())  # bell
    assert model.conversations["@ben"].attention
    note = texts(model)[-1]
    assert note == (
        "ben offers dataset.bin (3.0 MB) — F4 accept / F5 decline or /accept-file 9f86d081"
    )
    assert model.take_alerts()[0].title == "ben offers a file"
    bar = plain(render.offer_bar(model))
    assert "ben offers dataset.bin (3.0 MB): F4 accept · F5 decline" in bar
    assert model.parse_input("/accept-file") == Command({"cmd": "accept_file", "id": OFFER_ID})

    model.sent({"cmd": "accept_file", "id": OFFER_ID}, T0)
    assert model.offers == {}
    assert texts(model)[-1] == "downloading dataset.bin from ben…"
    model.apply(
        ev(
            "file_progress",
            id=OFFER_ID,
            name="dataset.bin",
            done=1_500_000,
            size=3_000_000,
            rate=1_000_000,
            eta=1.5,
        )
    )
    panel = plain(render.transfer_panel(model, 100))
    assert "dataset.bin ██████████░░░░░░░░░░  50% · 1.0 MB/s · 0:02 left" in panel
    assert "##########----------" in plain(render.transfer_panel(model, 100, render.ASCII))
    model.apply(
        ev(
            "file_done",
            id=OFFER_ID,
            name="dataset.bin",
            path="/home/me/Downloads/dataset.bin",
            size=3_000_000,
            sha256="00" * 32,
        )
    )
    assert model.transfers == {}
    assert texts(model, "@ben")[-1] == (
        "saved dataset.bin (3.0 MB) to /home/me/Downloads/dataset.bin"
    )


def test_declined_and_failed_files(model: ViewModel) -> None:
    model.apply(offer_event(shared=True))
    assert "to the room" in texts(model)[-1]
    model.apply(offer_event("b" * 32))
    assert "(1 more waiting)" in plain(render.offer_bar(model))
    model.sent({"cmd": "decline_file", "id": OFFER_ID}, T0)
    assert texts(model)[-1] == "declined dataset.bin from ben"
    model.apply(
        ev("file_failed", id=OFFER_ID, name="", reason="declined", message="offer declined")
    )
    assert texts(model)[-1] == "declined dataset.bin from ben"  # nothing more to say
    model.sent({"cmd": "accept_file", "id": "b" * 32}, T0)
    model.apply(
        ev(
            "file_failed",
            id="b" * 32,
            name="dataset.bin",
            reason="no_space",
            message="dataset.bin needs 3.0 MB but only 1 MB is free",
        )
    )
    last = model.conversations["@ben"].lines[-1]
    assert (last.kind, last.text) == (
        LineKind.ERROR,
        "dataset.bin failed: dataset.bin needs 3.0 MB but only 1 MB is free",
    )
    assert model.transfers == {}
    assert model.offers == {}


def test_our_own_offers_are_confirmed(model: ViewModel) -> None:
    model.sent({"cmd": "send", "to": "bob", "path": "~/data/set.bin"}, T0)
    assert texts(model)[-1] == "preparing set.bin for bob…"
    model.apply(ev("file_offered", id="o1", name="set.bin", size=2048, to="bob"))
    assert texts(model, "@bob")[-1] == "you offered set.bin (2.0 kB) to bob"
    model.apply(ev("file_offered", id="o2", name="notes.pdf", size=10, to=None))
    assert texts(model)[-1] == "you shared notes.pdf (10 B) with the room"


def test_sizes_and_ordinals() -> None:
    assert [human_size(n) for n in (0, 999, 1000, 3_000_000, 5 * 10**12)] == [
        "0 B",
        "999 B",
        "1.0 kB",
        "3.0 MB",
        "5000.0 GB",
    ]
    assert [ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22, 101)] == [
        "1st",
        "2nd",
        "3rd",
        "4th",
        "11th",
        "12th",
        "13th",
        "21st",
        "22nd",
        "101st",
    ]


def test_trusting_a_new_key_is_typed_with_its_code_and_starts_over(model: ViewModel) -> None:
    assert parse_input("/trust bob 1a2b-3c4d-5e6f-7a8b-9c0d", InputContext()) == Command(
        {"cmd": "trust", "handle": "bob", "fingerprint": "1a2b-3c4d-5e6f-7a8b-9c0d"}
    )
    assert isinstance(parse_input("/trust bob", InputContext()), InputError)
    model.apply(ev("warning", code="key_changed", handle="bob", message="bob changed key"))
    assert "/trust bob CODE" in texts(model)[-1]
    model.apply(ev("trusted", handle="bob", fingerprint="1a2b-3c4d-5e6f-7a8b-9c0d"))
    assert "/request bob" in texts(model)[-1]
    assert model.peers[peer_key("bob")].relation is Friendship.NONE


# ---------------------------------------------------------------- a real room


def test_eight_handles_get_eight_colours_that_stay() -> None:
    model = ViewModel("me", "lobby")
    handles = ["ann", "bob", "carol", "dave", "eve", "frank", "grace", "heidi"]
    colours = [model.colour(handle) for handle in handles]
    assert len(set(colours)) == 8
    assert [model.colour(handle.upper()) for handle in handles] == colours  # case-insensitive
    assert len({model.colour(f"x{n}") for n in range(HANDLE_COLOURS - 8)}) == HANDLE_COLOURS - 8


def test_message_lines_show_the_senders_colour_and_marks_not_only_colour() -> None:
    model = ViewModel("me", "lobby")
    model.apply(ev("peer_up", handle="yoda", mentor=True))
    model.apply(ev("accepted", by="bob"))
    model.apply(ev("public", id="1", text="hi", sent_t=T0, **{"from": "yoda"}))
    model.apply(ev("public", id="2", text="yo", sent_t=T0, **{"from": "bob"}))
    out = render.conversation(model, 10, 80, now=T0)
    styles = {text: style for style, text in out}
    assert styles["yoda"] == f"class:sender,sender.c{model.colour('yoda')}"
    assert styles["bob"] == f"class:sender,sender.c{model.colour('bob')}"
    assert "★yoda: hi" in plain(out)
    assert "♥bob: yo" in plain(out)


def test_times_come_from_sent_t_with_the_date_when_not_today() -> None:
    model = ViewModel("me", "lobby")
    yesterday = T0 - 86_400
    model.apply(
        {"ev": "public", "t": T0, "id": "1", "from": "bob", "text": "old", "sent_t": yesterday}
    )
    model.apply(
        {"ev": "public", "t": T0, "id": "2", "from": "bob", "text": "new", "sent_t": T0 - 60}
    )
    rows = plain(render.conversation(model, 10, 80, now=T0)).split("\n")
    assert rows[-2].startswith(render.clock(yesterday, T0) + " bob: old")
    assert render.clock(yesterday, T0) == time.strftime("%d %b %H:%M", time.localtime(yesterday))
    assert rows[-1].startswith(time.strftime("%H:%M", time.localtime(T0 - 60)) + " bob: new")
    assert render.clock(T0 - 400 * 86_400, T0).count("-") == 2  # another year: the full date


def test_replayed_messages_go_in_their_place_quietly() -> None:
    model = ViewModel("me", "lobby")
    model.open(PUBLIC)
    model.apply(ev("public", id="2", text="later", sent_t=T0, **{"from": "bob"}))
    ring = model.apply(
        ev("public", id="1", text="earlier me", sent_t=T0 - 5, replay=True, **{"from": "bob"})
    )
    assert not ring
    assert texts(model)[-2:] == ["earlier me", "later"]
    model.apply(
        ev("public", id="1", text="earlier me", sent_t=T0 - 5, replay=True, **{"from": "bob"})
    )
    assert texts(model).count("earlier me") == 1
    model.apply(ev("private", id="p1", text="hey", sent_t=T0, replay=True, **{"from": "ann"}))
    assert model.take_alerts() == []
    assert model.conversations["@ann"].unread == 0


def test_a_line_that_lost_its_slash_is_recognised() -> None:
    model = friend_model("ada")
    assert model.lost_slash("msg ada x") == "/msg ada x"
    assert model.lost_slash("who") == "/who"
    assert model.lost_slash("join ada") == "/join ada"
    assert model.lost_slash("block ada") == "/block ada"
    for line in ("who is here?", "join us at 5", "block the door", "me too", "/who", "done"):
        assert model.lost_slash(line) is None, line


def test_me_clear_unfriend_and_status_bar_title() -> None:
    model = friend_model("bob")
    assert model.parse_input("/me waves") == Command({"cmd": "say", "text": "/me waves"})
    model.sent({"cmd": "say", "text": "/me waves"}, T0)
    assert plain(render.conversation(model, 1, 80, now=T0)).endswith("* me waves")
    model.open("@bob")
    assert model.parse_input("/me waves") == Command(
        {"cmd": "msg", "to": "bob", "text": "/me waves"}
    )
    assert plain(render.status_left(model, T0)).startswith(" @bob ")
    model.sent({"cmd": "unfriend", "handle": "bob"}, T0)
    assert model.peers["@bob"].relation is Friendship.NONE
    model.open(PUBLIC)
    assert plain(render.status_left(model, T0)).startswith(" lobby ")
    assert model.parse_input("/clear") == LocalAction(Action.CLEAR)
    model.clear()
    assert texts(model) == []


def test_rooms_listing_and_moving_to_another_room() -> None:
    model = friend_model("bob")
    model.apply(ev("peer_up", handle="zed", mentor=False))
    model.will_send({"cmd": "rooms"})
    model.apply(ev("rooms", rooms=[{"name": "lobby", "members": 3}, {"name": "lab", "members": 5}]))
    assert texts(model)[-4:] == [
        "2 rooms on the network:",
        "  lab  5 people",
        "  lobby  3 people  (you are here)",
        "/room NAME moves there",
    ]
    model.apply(ev("room", name="lab"))
    assert model.status.room == "lab"
    assert model.conversations[PUBLIC].title == "lab"
    assert texts(model) == ["you are in room lab now"]
    assert "@zed" not in model.peers  # a stranger of the old room
    assert "@bob" in model.peers  # friends stay friends


def test_the_sender_learns_who_fetched_a_file() -> None:
    model = friend_model("bob")
    model.apply(ev("file_offered", id="f1", name="notes.pdf", size=10, to=None))
    model.apply(ev("file_fetched", id="f1", by="bob"))
    assert texts(model)[-1] == "bob fetched notes.pdf"


def test_code_is_split_from_prose_fenced_or_by_its_looks() -> None:
    text = "look:\n```py\nx = 1\n```\nthanks"
    assert split_blocks(text) == (
        Block("look:"),
        Block("x = 1", code=True, language="py"),
        Block("thanks"),
    )
    pasted = "def f(x):\n    if x:\n        return 1\n    return 2"
    assert split_blocks(pasted) == (Block(pasted, code=True),)
    prose = "first line\nsecond line\nthird line"
    assert split_blocks(prose) == (Block(prose),)


def test_code_blocks_are_highlighted_not_wrapped_and_folded() -> None:
    model = ViewModel("me", "lobby")
    code = "\n".join(
        f"value_{n} = compute({n}, 'some long argument that is wider than the view')"
        for n in range(20)
    )
    model.apply(ev("public", id="1", text=f"```python\n{code}\n```", sent_t=T0, **{"from": "bob"}))
    out = render.conversation(model, 10, 40, now=T0)
    rows = plain(out).split("\n")
    code_rows = [row for row in rows if "│ " in row]
    assert len(code_rows) == FOLD_SHOWN
    assert code_rows[0].endswith(
        "value_0 = compute(0, 'some long argument that is wider than the view')"
    )
    assert "┄ 10 more lines · Ctrl-O shows them · /save FILE saves it" in rows[-1]
    assert any("pygments.literal.string" in style for style, _ in out)
    assert any("pygments.literal.number" in style for style, _ in out)
    model.toggle_folds()
    rows = plain(render.conversation(model, 10, 40, now=T0)).split("\n")
    assert len([row for row in rows if "│ " in row]) == 20
    assert model.last_code() == Block(code, code=True, language="python")


def test_long_pastes_are_folded() -> None:
    model = ViewModel("me", "lobby")
    text = "\n".join(f"log entry number {n} said nothing much." for n in range(50))
    model.apply(ev("public", id="1", text=text, sent_t=T0, **{"from": "bob"}))
    rows = plain(render.conversation(model, 10, 80, now=T0)).split("\n")
    assert len(rows) == FOLD_SHOWN + 1
    stamp = render.clock(T0, T0) + " "
    assert rows[0] == stamp + "bob: log entry number 0 said nothing much."
    assert rows[1] == " " * len(stamp) + "log entry number 1 said nothing much."  # under the text
    assert rows[-1] == " " * len(stamp) + "┄ 40 more lines · Ctrl-O shows them"


def test_prose_after_a_code_block_wraps_under_the_text() -> None:
    model = ViewModel("me", "lobby")
    text = "```\nx = 1\n```\n" + "word " * 30 + "\nand a second row"
    model.apply(ev("public", id="1", text=text, sent_t=T0, **{"from": "bob"}))
    rows = plain(render.conversation(model, 10, 40, now=T0)).split("\n")
    pad = " " * len(render.clock(T0, T0) + " ")
    assert rows[1] == pad + "│ x = 1"
    assert all(render.cells(row) <= 40 for row in rows)
    assert all(row.startswith(pad) for row in rows[1:])
    assert rows[-1] == pad + "and a second row"


def test_unfriend_completes_friends_only() -> None:
    model = friend_model("bob")
    model.apply(ev("peer_up", handle="zed", mentor=False))
    assert model.handle_candidates("/unfriend") == ["bob"]
    assert "zed" in model.handle_candidates("/block")


def test_a_friend_ending_the_friendship_is_not_a_declined_request() -> None:
    model = friend_model("bob")
    model.apply(ev("rejected", by="bob"))
    assert texts(model)[-1] == "bob ended your friendship; /request bob asks again"
    assert texts(model, "@bob")[-1] == "bob ended your friendship; /request bob asks again"
    model.apply(ev("rejected", by="bob"))  # no longer a friend: an answer to a request
    assert texts(model)[-1] == "bob declined your private-chat request"


def test_serve_install_asks_the_node_and_shows_the_lines_for_the_room() -> None:
    assert parse_input("/serve-install") == Command({"cmd": "serve_install"})
    assert parse_input('/serve-install "~/my wheels"') == Command(
        {"cmd": "serve_install", "dir": "~/my wheels"}
    )
    model = friend_model("bob")
    url = "http://10.0.0.5:8765/"
    model.apply(
        ev(
            "install_server",
            url=url,
            command="python -m pip install lanchat",
            windows="py -m pip install --index-url http://10.0.0.5:8765/simple/ lanchat",
            unix="python3 -m venv ~/lanchat-env && ...",
        )
    )
    shown = texts(model)[-4:]
    assert "install it from here" in shown[0]
    assert shown[1].endswith("py -m pip install --index-url http://10.0.0.5:8765/simple/ lanchat")
    assert shown[2].endswith("python3 -m venv ~/lanchat-env && ...")
    assert url in shown[3]


def test_an_impostors_lines_are_marked_with_its_key(model: ViewModel) -> None:
    model.apply(ev("accepted", by="ann"))
    model.apply(ev("public", id="a:1", **{"from": "ann"}, text="the real one", sent_t=1.0))
    fake = {"impostor": True, "fingerprint": "1234-5678-9abc-def0-1234"}
    model.apply(ev("public", id="b:1", **{"from": "ann"}, text="trust me", sent_t=2.0, **fake))
    model.apply(ev("private", id="b>m:1", **{"from": "ann"}, text="psst", sent_t=3.0, **fake))
    real, impostor = list(model.conversations[PUBLIC].lines)[-2:]
    assert (real.sender, real.unverified) == ("ann", False)
    assert impostor.sender == "ann [unverified key 1234-5678-9abc-def0-1234]"
    assert impostor.unverified
    assert list(model.conversations["@ann"].lines)[-1].unverified
    shown = render.conversation(model, 100, 20)
    # No friend mark and no colour of the real ann: the warning style, with the key.
    assert ("class:warning", impostor.sender) in shown


def test_public_lines_follow_the_rooms_order_and_our_own_moves_to_its_place(
    model: ViewModel,
) -> None:
    def public(text: str, place: int, sent_t: float = 100.0) -> dict[str, Any]:
        return ev(
            "public", id=f"a:{place}", text=text, sent_t=sent_t, order=[place, "a" * 16, place]
        )

    model.apply(ev("status", state="connected", text="connected"))
    model.apply(public("one", 1))
    model.apply(public("three", 3))
    model.sent({"cmd": "say", "text": "mine"}, 100.5, msg_id="me:1")
    # The other half of a healed partition: placed before "three", arriving after it.
    model.apply(public("two", 2, sent_t=101.0))
    assert [t for t in texts(model) if t in {"one", "two", "three", "mine"}] == [
        "one",
        "two",
        "three",
        "mine",
    ]
    # The broker placed ours between one and two: every screen shows it there.
    model.apply(ev("placed", id="me:1", order=[1, "f" * 16, 1]))
    assert [t for t in texts(model) if t in {"one", "two", "three", "mine"}] == [
        "one",
        "mine",
        "two",
        "three",
    ]
