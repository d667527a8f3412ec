"""More of the headless vocabulary in a room over the in-memory twins
(tests/memroom.py): presence, typing, receipts, history, unblocking, a changed key and a
file offered to one friend."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import pytest
from memroom import Member, Room, in_room, logged_errors

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


@pytest.fixture(autouse=True)
def no_errors_logged(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.WARNING, logger="lanchat")
    yield
    assert not logged_errors(caplog)


async def befriend(asker: Member, other: Member) -> None:
    asker.do("request", to=other.handle)
    await other.wait_new("request", **{"from": asker.handle})
    other.do("accept", **{"from": asker.handle})
    await asker.wait_new("accepted", by=other.handle)


def test_presence_typing_receipts_and_history(tmp_path: Path) -> None:
    async def scenario(room: Room) -> None:
        ann, bob, cat = room["ann"], room["bob"], room["cat"]
        await befriend(ann, bob)

        ann.do("status", set="busy", text="in a call")
        told = await ann.wait("status", presence="busy:in a call")
        assert told["state"] == "connected"
        for member in (bob, cat):
            change = await member.wait("peer_status", handle="ann")
            assert (change["status"], change["text"]) == ("busy", "in a call")
        ann.do("status", set="asleep")
        await ann.wait("error", code="bad_command")

        ann.do("typing", to="bob")
        assert (await bob.wait("typing", **{"from": "ann"}))["active"] is True
        ann.do("typing", to="cat")  # not a friend: not told
        await ann.wait("error", code="not_friends")

        bob.do("set", receipts=False)
        settings = await bob.wait("settings")
        assert (settings["receipts"], settings["typing"]) == (False, True)
        ann.do("msg", to="bob", text="unread, as far as you know")
        got = await bob.wait("private", text="unread, as far as you know")
        await ann.wait("delivered", id=got["id"])
        # A read receipt would have left bob's node before the acknowledgement did.
        assert ann.of("read") == []
        bob.do("set", receipts=True)
        await bob.wait_new("settings")
        bob.do("read", **{"with": "ann"})
        await ann.wait("read", id=got["id"], by="bob")

        bob.do("history", **{"with": "ann"}, limit=10)
        history = await bob.wait("history")
        assert [(m["from"], m["text"], m["outgoing"]) for m in history["messages"]] == [
            ("ann", "unread, as far as you know", False)
        ]
        ann.do("say", text="for the record")
        await bob.wait("public", text="for the record")
        bob.do("history", **{"with": None}, limit=10)
        public = await bob.wait_new("history")
        assert public["with"] is None
        assert [m["text"] for m in public["messages"]] == ["for the record"]
        bob.do("friends")
        friends = await bob.wait("friends")
        assert [(f["handle"], f["state"], f["online"]) for f in friends["friends"]] == [
            ("ann", "friend", True)
        ]
        bob.do("status")
        status = await bob.wait("status", online=4)
        assert status["state"] == "connected"

    in_room(tmp_path, scenario)


def test_an_unblocked_peer_that_still_thinks_it_is_a_friend_is_told_otherwise(
    tmp_path: Path,
) -> None:
    async def scenario(room: Room) -> None:
        ann, bob = room["ann"], room["bob"]
        await befriend(ann, bob)
        bob.do("block", handle="ann")
        bob.do("unblock", handle="ann")
        bob.do("friends")
        friends = await bob.wait("friends")
        assert friends["friends"] == []
        ann.do("msg", to="bob", text="hello?")
        # Bob's node answers a text from a non-friend with a rejection: ann may ask again.
        await ann.wait("rejected", by="bob")
        assert bob.of("private") == []
        await befriend(ann, bob)
        ann.do("msg", to="bob", text="hello again")
        await bob.wait("private", text="hello again")

    in_room(tmp_path, scenario)


def test_a_handle_back_with_another_key_is_held_until_trusted(tmp_path: Path) -> None:
    async def scenario(room: Room) -> None:
        ann, bob = room["ann"], room["bob"]
        await befriend(ann, bob)
        assert await room.quit(bob) == 0
        await ann.wait("peer_down", handle="bob")
        stranger = room.add("bob")  # a new profile: a new key under the same handle
        room.start(stranger)
        fingerprint = (await stranger.wait("ready"))["fingerprint"]
        warning = await ann.wait("warning", code="key_changed", handle="bob")
        assert fingerprint in warning["message"]
        ann.do("msg", to="bob", text="is that you?")  # sealed to the old key: held back
        ann.do("trust", handle="bob", fingerprint="0000-0000-0000-0000-0000")
        await ann.wait("error", code="fingerprint_mismatch")
        ann.do("trust", handle="bob", fingerprint=fingerprint)
        assert (await ann.wait("trusted", handle="bob"))["fingerprint"] == fingerprint
        ann.do("msg", to="bob", text="and now?")  # the new key is a stranger
        await ann.until(lambda: len(ann.of("error", code="not_friends")) == 1, "not_friends")
        await befriend(ann, stranger)
        ann.do("msg", to="bob", text="welcome back")
        await stranger.wait("private", text="welcome back")
        assert [e["text"] for e in stranger.of("private")] == ["welcome back"]

    in_room(tmp_path, scenario)


def test_a_file_offered_to_one_friend_can_be_declined(tmp_path: Path) -> None:
    async def scenario(room: Room) -> None:
        ann, bob, cat = room["ann"], room["bob"], room["cat"]
        await befriend(ann, bob)
        path = tmp_path / "draft.txt"
        path.write_text("not for everyone\n")
        ann.do("send", to="bob", path=str(path))
        offered = await ann.wait("file_offered")
        assert offered["to"] == "bob"
        offer = await bob.wait("file_offer", id=offered["id"])
        assert (offer["from"], offer["shared"], offer["name"]) == ("ann", False, "draft.txt")
        bob.do("decline_file", id=offered["id"])
        failed = await bob.wait("file_failed", id=offered["id"])
        assert failed["reason"] == "declined"
        bob.do("accept_file", id=offered["id"])  # gone with the decline
        await bob.wait("error", code="bad_command")
        ann.do("send", to="cat", path=str(path))
        await ann.wait("error", code="not_friends")
        assert cat.of("file_offer") == []
        assert not (bob.profile.directory / "downloads" / "draft.txt").exists()

    in_room(tmp_path, scenario)
