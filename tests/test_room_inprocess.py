"""A room of five full nodes in one process over the in-memory twins (tests/memroom.py):
election, public chat, consent and private chat, the help queue, a broker's failure and
a late joiner's catch-up, each in well under a second, without root."""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import TYPE_CHECKING

import pytest
from memroom import Room, in_room, logged_errors

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


@pytest.fixture(autouse=True)
def no_errors_logged(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.WARNING, logger="lanchat")
    yield
    assert not logged_errors(caplog)


# ---- start and election -----------------------------------------------------------


def test_five_nodes_started_together_elect_the_mentor_as_their_one_broker(
    tmp_path: Path,
) -> None:
    async def scenario(room: Room) -> None:
        everyone = room.running()
        assert len(everyone) == 5
        for member in everyone:
            broker = member.of("broker")
            assert [(b["handle"], b["self"], b["epoch"]) for b in broker] == [
                ("mia", member.handle == "mia", 1)
            ]
            assert len(member.of("ready")) == 1
            assert member.of("error") == []
        # Only the mentor's node ever took the broker role.
        brokers = {m.handle for m in everyone if m.of("status", state="broker")}
        assert brokers == {"mia"}
        room["ann"].do("who")
        who = await room["ann"].wait("who")
        assert [p["handle"] for p in who["peers"]] == ["mia", "bob", "cat", "dan"]
        assert [p["mentor"] for p in who["peers"]] == [True, False, False, False]

    in_room(tmp_path, scenario)


# ---- public room -------------------------------------------------------------------


def test_every_node_sees_every_public_message_exactly_once(tmp_path: Path) -> None:
    async def scenario(room: Room) -> None:
        everyone = room.running()
        per_node = 3
        for member in everyone:
            for n in range(per_node):
                member.do("say", text=f"{member.handle} says {n}")
        for member in everyone:
            await member.count("sent", per_node)
        mine = {m.handle: {e["id"] for e in m.of("sent")} for m in everyone}
        for member in everyone:
            expected = set().union(*(ids for h, ids in mine.items() if h != member.handle))
            texts = {
                f"{m.handle} says {n}" for m in everyone if m is not member for n in range(per_node)
            }
            await member.hear(texts)
            assert set(member.public_ids()) == expected
            assert member.public_texts() == {
                f"{m.handle} says {n}" for m in everyone if m is not member for n in range(per_node)
            }
        # A last round is a barrier: whatever a resend could duplicate came before it.
        for member in everyone:
            member.do("say", text=f"{member.handle} is done")
        for member in everyone:
            await member.hear({f"{m.handle} is done" for m in everyone if m is not member})
            counts = member.public_ids()
            assert max(counts.values()) == 1, "a public message was shown twice"
            assert not set(counts) & mine[member.handle], "our own message came back"

    in_room(tmp_path, scenario)


def test_a_late_joiner_catches_up_on_the_recent_public_messages(tmp_path: Path) -> None:
    async def scenario(room: Room) -> None:
        for n, member in enumerate(room.running() * 2):
            member.do("say", text=f"before {n}")
        said = 2 * len(room.running())
        for member in room.running():
            await member.count("sent", 2)
        fay = room.add("fay")
        room.start(fay)
        await fay.wait("broker", handle="mia", epoch=1)
        await fay.count("public", said)
        assert sorted(e["text"] for e in fay.of("public")) == sorted(
            f"before {n}" for n in range(said)
        )
        # The catch-up is marked as a replay; what is said from now on is live.
        assert all(e.get("replay") is True for e in fay.of("public"))
        room["bob"].do("say", text="welcome fay")
        live = await fay.wait("public", text="welcome fay", **{"from": "bob"})
        assert "replay" not in live
        assert not any(
            "replay" in e for m in room.running() if m is not fay for e in m.of("public")
        )
        await room["bob"].wait("peer_up", handle="fay")
        assert max(fay.public_ids().values()) == 1

    in_room(tmp_path, scenario)


# ---- consent and private chat -------------------------------------------------------


def test_consent_then_private_chat_with_receipts_and_a_block(tmp_path: Path) -> None:
    async def scenario(room: Room) -> None:
        ann, bob, cat = room["ann"], room["bob"], room["cat"]
        ann.do("msg", to="bob", text="too early")
        await ann.wait("error", code="not_friends")

        ann.do("request", to="bob")
        request = await bob.wait("request", **{"from": "ann"})
        assert request["fingerprint"]
        bob.do("reject", **{"from": "ann"})
        await ann.wait("rejected", by="bob")

        ann.do("request", to="bob")  # a rejected request may be made again
        await bob.wait_new("request", **{"from": "ann"})
        bob.do("accept", **{"from": "ann"})
        await ann.wait("accepted", by="bob")
        await bob.wait("accepted", by="bob", **{"with": "ann"})

        ann.do("msg", to="bob", text="hello bob")
        got = await bob.wait("private", text="hello bob")
        assert got["from"] == "ann"
        sent_id = got["id"]
        await ann.wait("delivered", id=sent_id, to="bob")
        await ann.wait("read", id=sent_id, by="bob")  # headless nodes read what they print
        bob.do("msg", to="ann", text="hi ann")
        await ann.wait("private", text="hi ann", **{"from": "bob"})

        bob.do("block", handle="ann")
        bob.do("friends")
        friends = await bob.wait("friends")
        assert [(f["handle"], f["state"]) for f in friends["friends"]] == [("ann", "blocked")]
        ann.do("msg", to="bob", text="are you there?")
        # Ann's node hands it over (the ack comes back) but bob's drops it, silently.
        await ann.count("delivered", 2)
        assert [e["text"] for e in bob.of("private")] == ["hello bob"]
        assert cat.of("private") == []
        assert cat.of("request") == []

    in_room(tmp_path, scenario)


# ---- help queue ----------------------------------------------------------------------


def test_help_queue_hand_claim_session_and_done(tmp_path: Path) -> None:
    async def scenario(room: Room) -> None:
        mia, ann, bob = room["mia"], room["ann"], room["bob"]
        ann.do("hand", topic="my loop never ends")
        raised = await ann.wait("hand", state="raised")
        hand_id = raised["id"]
        await ann.wait("hand", id=hand_id, state="waiting", position=1)
        bob.do("hand", topic="what is a dict", anon=True)
        await mia.until(lambda: any(len(q["entries"]) == 2 for q in mia.of("queue")), "2 hands")
        queue = next(q for q in mia.of("queue") if len(q["entries"]) == 2)
        # Oldest first; two hands raised within one millisecond go by id.
        assert [e["n"] for e in queue["entries"]] == [1, 2]
        by_id = {e["id"]: e for e in queue["entries"]}
        first = by_id.pop(hand_id)
        (second,) = by_id.values()
        assert (first["who"], first["topic"], first["anon"]) == ("ann", "my loop never ends", False)
        assert second["anon"]
        assert second["who"].startswith("anon-")
        assert "bob" not in str(mia.of("queue"))  # the anonymous hand stays anonymous
        await bob.wait("hand", id=second["id"], state="waiting", position=second["n"])

        mia.do("claim", n=first["n"])
        claimed = await mia.wait("claimed", id=hand_id)
        assert claimed["who"] == "ann"
        await ann.wait("hand", id=hand_id, state="claimed", mentor="mia")

        ann.do("msg", to="mia", text="it prints forever")
        heard = await mia.wait("private", text="it prints forever")
        assert (heard["from"], heard["hand"]) == ("ann", hand_id)
        mia.do("msg", to="ann", text="look at your condition")
        answer = await ann.wait("private", text="look at your condition")
        assert (answer["from"], answer["hand"]) == ("mia", hand_id)

        mia.do("done", id=hand_id)
        await ann.wait("hand", id=hand_id, state="done")
        await mia.wait("hand", id=hand_id, state="done")
        # The anonymous hand moves up, and the next claim opens a session with it.
        await bob.wait("hand", state="waiting", position=1)
        mia.do("claim", n=1)
        anon = await mia.wait("claimed", id=second["id"])
        assert anon["who"] == second["who"]
        await bob.wait("hand", id=second["id"], state="claimed", mentor="mia")
        mia.do("msg", to=anon["who"], text="which dict?")
        await bob.wait("private", text="which dict?", hand=second["id"])
        bob.do("msg", to="mia", text="the builtin one")
        reply = await mia.wait("private", text="the builtin one")
        assert reply["from"] == second["who"]

    in_room(tmp_path, scenario)


# ---- broker failure ----------------------------------------------------------------


def test_a_killed_broker_is_replaced_and_no_public_message_is_lost_or_doubled(
    tmp_path: Path,
) -> None:
    async def scenario(room: Room) -> None:
        mia, ann, bob = room["mia"], room["ann"], room["bob"]
        survivors = [m for m in room.running() if m is not mia]
        ann.do("request", to="bob")
        await bob.wait("request", **{"from": "ann"})
        bob.do("accept", **{"from": "ann"})
        await ann.wait("accepted", by="bob")
        for member in room.running():
            member.do("say", text=f"{member.handle} before")
        for member in room.running():
            await member.count("public", 4)

        # Said at the moment of the kill: not yet sent when the broker dies.
        for member in survivors:
            assert member.node.execute({"cmd": "say", "text": f"{member.handle} in flight"})
        killed_at = time.monotonic()
        await room.kill(mia)
        for member in survivors:  # ...and during the failover
            member.do("say", text=f"{member.handle} during")
        ann.do("msg", to="bob", text="still there?")

        for member in survivors:
            await member.wait("broker", epoch=2)
        took_s = time.monotonic() - killed_at
        successors = {m.of("broker", epoch=2)[0]["handle"] for m in survivors}
        assert len(successors) == 1, f"the survivors disagree on the successor: {successors}"
        (successor,) = successors
        assert successor != "mia"
        assert room[successor].of("broker", epoch=2)[0]["self"]
        for member in survivors:
            await member.wait("peer_down", handle="mia")

        texts = {f"{m.handle} {when}" for m in survivors for when in ("in flight", "during")}
        for member in survivors:
            await member.hear({t for t in texts if not t.startswith(member.handle)})
            # A last round after the failover is a barrier for late duplicates.
            member.do("say", text=f"{member.handle} after")
        for member in survivors:
            await member.hear({f"{m.handle} after" for m in survivors if m is not member})
            counts = member.public_ids()
            assert max(counts.values()) == 1, "a public message was shown twice"
            shown = Counter(e["text"] for e in member.of("public"))
            assert max(shown.values()) == 1
            assert len(shown) == 4 + 3 * 2 + 3  # before, in flight + during, after
        # The private message said during the failover is delivered through the successor.
        got = await bob.wait("private", text="still there?")
        await ann.wait("delivered", id=got["id"], to="bob")
        assert len(bob.of("private")) == 1
        print(f"failover: the survivors followed {successor} {took_s * 1000:.0f} ms after the kill")

    in_room(tmp_path, scenario)
