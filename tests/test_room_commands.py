"""The command vocabulary (lanchat/room/commands.py) against a room of full nodes in one
process: each command's answer, and a clear ``error`` event for every bad argument, the
node running on."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import pytest
from memroom import WAIT_S, Room, in_room

if TYPE_CHECKING:
    from pathlib import Path


BAD_COMMANDS: list[tuple[dict[str, Any], str]] = [
    ({"cmd": "fly"}, "unknown command"),
    ({"cmd": 7}, "unknown command"),
    ({"cmd": ["say"]}, "unknown command"),
    ({}, "unknown command"),
    ({"cmd": "say"}, "needs 'text'"),
    ({"cmd": "say", "text": 5}, "needs 'text'"),
    ({"cmd": "msg", "to": "bob"}, "needs 'text'"),
    ({"cmd": "hand", "topic": 3}, "'hand' takes"),
    ({"cmd": "hand", "anon": "yes"}, "'hand' takes"),
    ({"cmd": "history", "with": 3}, "'with' must be"),
    ({"cmd": "history", "limit": 0}, "'limit' must be"),
    ({"cmd": "history", "limit": True}, "'limit' must be"),
    ({"cmd": "done", "id": 4}, "'id' must be"),
    ({"cmd": "set"}, "'set' takes"),
    ({"cmd": "set", "receipts": "no"}, "must be true or false"),
    ({"cmd": "set", "colour": True}, "'set' takes"),
    ({"cmd": "typing", "to": "bob", "active": 1}, "must be true or false"),
    ({"cmd": "status", "set": "asleep"}, "status is one of"),
    ({"cmd": "status", "set": "away", "text": 1}, "'text' must be"),
    ({"cmd": "claim", "n": 1}, "only mentors"),
    ({"cmd": "request", "to": "ann"}, "your own handle"),
    ({"cmd": "request", "to": "nobody"}, "nobody called"),
    ({"cmd": "request", "to": "bad handle!"}, ""),
    ({"cmd": "msg", "to": "bob", "text": "hi"}, "not friends"),
    ({"cmd": "typing", "to": "bob"}, "not friends"),
    ({"cmd": "trust", "handle": "bob", "fingerprint": "x"}, "already uses the key"),
    ({"cmd": "trust", "handle": "zed", "fingerprint": "x"}, "not online"),
    ({"cmd": "accept_file", "id": "nope"}, "no file offer"),
    ({"cmd": "decline_file", "id": "nope"}, "no file offer"),
    ({"cmd": "done"}, "which hand"),
    ({"cmd": "done", "id": "nope"}, "not one of your hands"),
    ({"cmd": "say", "text": "   "}, ""),
]


@pytest.mark.parametrize(("cmd", "says"), BAD_COMMANDS, ids=[str(c) for c, _ in BAD_COMMANDS])
def test_a_bad_command_is_an_error_event_and_the_node_goes_on(
    tmp_path: Path, cmd: dict[str, Any], says: str
) -> None:
    async def scenario(room: Room) -> None:
        ann = room["ann"]
        ann.commands.put_nowait(cmd)
        error = await ann.wait_new("error")
        assert error["code"] in {"bad_command", "queue", "unknown_handle", "not_friends"}
        assert says in error["message"]
        ann.do("say", text="still here")
        await room["bob"].hear({"still here"})

    in_room(tmp_path, scenario)


def test_queries_and_settings_answer_with_their_events(tmp_path: Path) -> None:
    async def scenario(room: Room) -> None:
        ann, bob = room["ann"], room["bob"]
        ann.do("status", set="busy", text="in a call")
        status = await ann.wait_new("status")
        assert status["presence"] == "busy:in a call"
        # The room hears the new presence from the broker's roster.
        changed = await bob.wait("peer_status", handle="ann")
        assert (changed["status"], changed["text"]) == ("busy", "in a call")
        ann.do("status")
        status = await ann.wait_new("status")
        assert status["state"] == "connected"
        assert status["online"] == 4
        assert isinstance(status["counters"], dict)
        ann.do("set", receipts=False, typing=True)
        settings = await ann.wait("settings")
        assert (settings["receipts"], settings["typing"]) == (False, True)
        ann.do("friends")
        assert (await ann.wait("friends"))["friends"] == []
        ann.do("queue")
        assert (await ann.wait("queue"))["entries"] == []
        ann.do("history", limit=5)
        assert (await ann.wait("history"))["messages"] == []

    in_room(tmp_path, scenario)


def test_friends_type_read_and_see_their_history(tmp_path: Path) -> None:
    async def scenario(room: Room) -> None:
        ann, bob = room["ann"], room["bob"]
        ann.do("request", to="bob")
        await bob.wait("request", **{"from": "ann"})
        bob.do("accept", **{"from": "ann"})
        await ann.wait("accepted", by="bob")
        ann.do("typing", to="bob", active=True)
        typing = await bob.wait("typing", **{"from": "ann"})
        assert typing["active"] is True
        ann.do("msg", to="bob", text="hello bob")
        await bob.wait("private", text="hello bob")
        bob.do("read", **{"with": "ann"})
        await ann.wait("read", by="bob")
        ann.do("friends")
        friends = (await ann.wait("friends"))["friends"]
        assert [(f["handle"], f["state"], f["online"]) for f in friends] == [
            ("bob", "friend", True)
        ]
        assert friends[0]["safety_code"]
        bob.do("history", **{"with": "ann"})
        history = (await bob.wait("history"))["messages"]
        assert [(m["from"], m["text"], m["outgoing"]) for m in history] == [
            ("ann", "hello bob", False)
        ]
        ann.do("block", handle="bob")
        ann.do("friends")
        await ann.until(
            lambda: any(f["state"] == "blocked" for e in ann.of("friends") for f in e["friends"]),
            "bob blocked",
        )
        ann.do("unblock", handle="bob")
        ann.do("request", to="bob")
        bob.do("quit")
        await ann.wait("peer_down", handle="bob")

    in_room(tmp_path, scenario)


def test_unfriend_msg_ids_and_the_rooms_on_the_lan(tmp_path: Path) -> None:
    async def scenario(room: Room) -> None:
        ann, bob = room["ann"], room["bob"]
        ann.do("request", to="bob")
        await bob.wait("request", **{"from": "ann"})
        bob.do("accept", **{"from": "ann"})
        await ann.wait("accepted", by="bob")
        ann.do("msg", to="bob", text="one")
        sent = await ann.wait("sent")  # a msg answers with its id, like say
        delivered = await ann.wait("delivered", to="bob")
        assert delivered["id"] == sent["id"]
        ann.do("unfriend", handle="bob")
        await bob.wait("rejected", by="ann")  # told as a reject: bob's state follows
        bob.do("msg", to="ann", text="still friends?")
        error = await bob.wait_new("error")
        assert error["code"] == "not_friends"
        ann.do("rooms")
        rooms = (await ann.wait("rooms"))["rooms"]
        assert rooms == [{"name": "workshop", "members": 5}]

    in_room(tmp_path, scenario)


def test_serve_install_without_a_wheelhouse_is_a_clear_error(tmp_path: Path) -> None:
    async def scenario(room: Room) -> None:
        mia = room["mia"]
        mia.do("serve_install", dir=str(tmp_path / "no-such-wheelhouse"))
        error = await mia.wait_new("error")
        assert error["code"] == "install_server"
        mia.do("serve_install", port="80")
        assert (await mia.wait_new("error"))["code"] == "bad_command"

    in_room(tmp_path, scenario)


def test_room_moves_a_running_node_to_another_room(tmp_path: Path) -> None:
    """`room`: the node leaves (the others see it go at once) and its successor, on the same
    profile and key, starts in the other room; the front end runs it on the same queue."""

    async def scenario(room: Room) -> None:
        ann, bob = room["ann"], room["bob"]
        ann.do("room", name="workshop")
        assert "already" in (await ann.wait_new("error"))["message"]
        ann.do("room", name="bad room!")
        assert (await ann.wait_new("error"))["code"] == "bad_command"
        ann.do("room", name="lab")
        assert ann.task is not None
        assert await asyncio.wait_for(ann.task, WAIT_S) == 0
        await bob.wait("peer_down", handle="ann")
        old = ann.node
        assert old.next_room == "lab"
        moved = old.moved_to_room(transport=room.lan.transport(ann.address, old.me.curve_public))
        assert (moved.cfg.room, moved.cfg.handle, moved.me.key) == ("lab", "ann", old.me.key)
        before = len(ann.events)
        ann.node, ann.task = moved, asyncio.create_task(moved.run(ann.commands))
        await ann.wait("broker", handle="ann", epoch=1)  # alone in lab: its own broker
        assert not any(e["ev"] == "peer_up" for e in ann.events[before:])
        ann.do("rooms")
        rooms = (await ann.wait("rooms"))["rooms"]
        assert {r["name"]: r["members"] for r in rooms} == {"lab": 1, "workshop": 4}
        bob.do("say", text="only for the workshop")
        ann.do("say", text="only for the lab")
        await ann.wait("sent")
        await room["cat"].hear({"only for the workshop"})
        assert "only for the workshop" not in ann.public_texts()

    in_room(tmp_path, scenario)
