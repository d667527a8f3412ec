"""Roles in a room of strangers, over the in-memory twins (tests/memroom.py): verified
mentors, a late rogue mentor with a forged reign, forged adverts (a handle, a better broker
at a dead address), adding a mentor, room codes, signed claims, anonymous hands."""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import TYPE_CHECKING

import pytest
from memroom import ROOM, WAIT_S, Member, Room, in_room, logged_errors, run, workshop

from lanchat.core import authority as auth
from lanchat.core import wire
from lanchat.core.advert import Advert
from lanchat.identity import Identity

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from lanchat.inmemory import MemoryDiscovery


@pytest.fixture(autouse=True)
def no_errors_logged(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.WARNING, logger="lanchat")
    yield
    assert not logged_errors(caplog)


async def poll(done: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    """For a node's counters, which no event announces."""
    try:
        async with asyncio.timeout(timeout):
            while not done():
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(what) from None


def brokers(member: Member) -> list[str]:
    return [e["handle"] for e in member.of("broker")]


async def forge(room: Room, address: str, advert: Advert) -> MemoryDiscovery:
    """An advert sent by a script, not by a node: nothing listens at its address."""
    forger = room.lan.discovery(address, lambda _event: None)
    await forger.start()
    await forger.register(advert, force=True)
    return forger


def forged_advert(handle: str, address: str, **fields: object) -> Advert:
    someone = Identity.generate()
    values: dict[str, object] = {
        "handle": handle,
        "room": ROOM,
        "address": address,
        "id_key": someone.key,
        "curve_key": someone.curve_public,
        "router_port": 47001,
        "pub_port": 47002,
        "mentor": True,
        "priority": 99,
        "started_at": 1.0,
        **fields,
    }
    return Advert(**values)  # type: ignore[arg-type]


# ---- verified mentors ---------------------------------------------------------------


def test_the_first_mentor_creates_the_authority_and_everyone_verifies_it(
    tmp_path: Path,
) -> None:
    async def scenario(room: Room) -> None:
        mia = room["mia"]
        (shown,) = mia.of("authority")
        key = mia.node.trust.pinned
        assert key is not None
        assert shown["code"] == auth.room_code(key)
        for member in room.running():
            if member is not mia:
                assert member.of("peer_up", handle="mia")[0]["mentor"] is True
                assert member.node.trust.pinned == key  # pinned on first sight
                assert member.of("warning") == []
                assert member.of("authority") == []

    in_room(tmp_path, scenario)


def test_the_authority_survives_a_restart_of_its_mentor(tmp_path: Path) -> None:
    async def main() -> None:
        room = await workshop(tmp_path, students=("ann",))
        try:
            mia = room["mia"]
            code = mia.of("authority")[0]["code"]
            assert await room.quit(mia) == 0
            again = room.add("mia", mentor=True, directory=mia.node.profile.directory)
            room.start(again)
            assert (await again.wait("authority"))["code"] == code
            ann = room["ann"]
            await ann.until(
                lambda: any(e["mentor"] for e in ann.of("peer_up", handle="mia")[1:]),
                "mia back, as a verified mentor",
            )
            assert ann.of("warning") == []
        finally:
            await room.close()

    run(main())


def test_a_second_mentor_is_unverified_until_a_mentor_adds_it(tmp_path: Path) -> None:
    async def scenario(room: Room) -> None:
        mia, ann = room["mia"], room["ann"]
        max_ = room.add("max", mentor=True)
        room.start(max_)
        up = await ann.wait("peer_up", handle="max")
        assert up["mentor"] is False
        await ann.wait("warning", code="mentor_unverified", handle="max")
        await max_.wait("broker", handle="mia")
        max_.do("queue")
        assert (await max_.wait("error"))["code"] == "queue"
        # Its own authority (made at start, before it saw the room) gave way to the room's.
        assert max_.node.trust.pinned == mia.node.trust.pinned
        gave_way = await max_.wait("warning", code="authority_conflict", handle="max")
        assert mia.of("authority")[0]["code"] in gave_way["message"]
        mia.do("add_mentor", handle="max")
        await max_.wait("mentor_added", handle="max")
        await mia.wait("mentor_added", handle="max")
        await ann.wait("mentor_added", handle="max")
        max_.do("queue")
        await max_.wait("queue")
        assert [p["mentor"] for p in ann.node.peers.who() if p["handle"] == "max"] == [True]
        # A student cannot add mentors.
        ann.do("add_mentor", handle="bob")
        assert (await ann.wait("error"))["code"] == "not_mentor"

    in_room(tmp_path, scenario)


def test_a_room_code_pins_the_authority_and_a_wrong_one_trusts_nobody(
    tmp_path: Path,
) -> None:
    async def scenario(room: Room) -> None:
        code = room["mia"].of("authority")[0]["code"]
        right = room.add("eve", room_code=code.lower().replace("-", " "))
        wrong = room.add("fay", room_code="0000-0000-0000")
        room.start(right, wrong)
        assert (await right.wait("peer_up", handle="mia"))["mentor"] is True
        assert (await wrong.wait("peer_up", handle="mia"))["mentor"] is False
        await wrong.wait("warning", code="mentor_unverified", handle="mia")
        assert wrong.node.trust.pinned is None

    in_room(tmp_path, scenario)


def test_a_late_rogue_mentor_with_a_forged_reign_changes_no_broker(tmp_path: Path) -> None:
    async def scenario(room: Room) -> None:
        students = [m for m in room.running() if m.handle != "mia"]
        zed = room.add("zed", mentor=True)  # a profile of its own: its own authority
        # A modified node: it keeps its own authority, and never gives up a reign.
        zed.node.trust._give_way = lambda _other: None  # type: ignore[method-assign]
        zed.node.membership.check_merge = lambda: None  # type: ignore[method-assign]
        room.start(zed)
        for member in students:
            await member.wait("warning", code="authority_conflict", handle="zed")
            assert member.of("peer_up", handle="zed")[0]["mentor"] is False
        zed.do("queue")
        assert (await zed.wait("error"))["code"] == "queue"
        # Now it runs a relay and advertises a reign since 1970, as a mentor.
        membership = zed.node.membership
        membership._become_broker(zed.node.clock())
        relay = zed.node.hosting.relay
        assert relay is not None
        relay.since = 1.0
        membership.advertising.changed()
        everyone = [room["mia"], *students]
        for member in everyone:
            await poll(
                lambda m=member: any(  # type: ignore[misc]
                    a.handle == "zed" and a.broker_since == 1.0
                    for a in m.node.discovery.peers().values()
                ),
                f"{member.handle} heard zed's reign",
            )
        # A newcomer, who never saw zed in a roster, tries it first (its advert is the best
        # hint); given the room code, it finds zed's certificate from another authority, and
        # moves to mia once mia proved hers. (Without a code it would trust the first
        # authority it meets: docs/security.md, "Roles and trust".)
        gus = room.add("gus", room_code=room["mia"].of("authority")[0]["code"])
        room.start(gus)
        await gus.until(lambda: brokers(gus)[-1:] == ["mia"], "gus with mia")
        await gus.wait("warning", code="authority_conflict", handle="zed")
        for member in everyone:
            assert brokers(member) == ["mia"]
        students[0].do("say", text="still here")
        for member in [room["mia"], gus, *students[1:]]:
            await member.hear({"still here"})

    in_room(tmp_path, scenario)


def test_a_forged_better_broker_at_a_dead_address_changes_nothing(tmp_path: Path) -> None:
    async def scenario(room: Room) -> None:
        everyone = room.running()
        ghost = forged_advert("ghost", "127.0.0.250", broker_epoch=99, broker_since=1.0)
        forger = await forge(room, "127.0.0.250", ghost)
        try:
            for member in everyone:
                await poll(
                    lambda m=member: m.node.counters.get("probe_failed", 0) >= 1,  # type: ignore[misc]
                    f"{member.handle} tried the ghost and stayed",
                )
            for member in everyone:
                assert brokers(member) == ["mia"]
                assert [e["state"] for e in member.of("status")][-1] in ("connected", "broker")
            room["ann"].do("say", text="nothing happened")
            await room["bob"].hear({"nothing happened"})
        finally:
            await forger.close()

    in_room(tmp_path, scenario)


# ---- handles ------------------------------------------------------------------------


def test_a_forged_advert_of_a_handle_neither_evicts_nor_blocks_its_holder(
    tmp_path: Path,
) -> None:
    async def scenario(room: Room) -> None:
        ann, bob = room["ann"], room["bob"]
        fake = forged_advert("ann", "127.0.0.251", mentor=False, started_at=1.0)
        forger = await forge(room, "127.0.0.251", fake)
        try:
            await poll(lambda: ann.node.counters.get("handle_clash", 0) >= 1, "ann heard it")
            assert ann.running
            bob.do("say", text="ann, still there?")
            await ann.hear({"ann, still there?"})
            # Restarted with the forged advert still on the LAN: its profile holds the handle.
            assert await room.quit(ann) == 0
            again = room.add("ann", directory=ann.node.profile.directory)
            room.start(again)
            await again.wait("warning", code="handle_claimed", handle="ann")
            await again.wait("broker", handle="mia")
            again.do("say", text="ann is back")
            await bob.hear({"ann is back"})
            assert again.running
        finally:
            await forger.close()

    in_room(tmp_path, scenario)


# ---- help sessions ------------------------------------------------------------------


def test_a_claim_no_verified_mentor_signed_is_never_sealed_to(tmp_path: Path) -> None:
    async def scenario(room: Room) -> None:
        ann = room["ann"]
        hand_id = ann.node.execute({"cmd": "hand", "topic": "help"})
        assert hand_id is not None
        await ann.wait("hand", id=hand_id, state="waiting")
        rogue = Identity.generate()
        hand = ann.node.helpdesk.my_hands[hand_id]
        # A broker's word: "claimed by mia", but with the rogue's key, or mia's key and a
        # signature that is not hers.
        payload = auth.claim_payload(ROOM, hand_id, hand.eph.public)
        mia_key = room["mia"].node.me.key
        for key, sig in (
            (rogue.key, rogue.sign(payload)),
            (mia_key, rogue.sign(payload)),
            (mia_key, secrets.token_bytes(64)),
        ):
            status = wire.HandStatus(
                hand_id=hand_id, state="claimed", mentor="mia", mentor_key=key, claim_sig=sig
            )
            ann.node.helpdesk.on_hand_status(status)
        assert hand.session.box is None
        assert hand.state == "waiting"
        assert ann.node.counters["claim_unverified"] == 3
        # The real claim goes through.
        room["mia"].do("claim", id=hand_id)
        await ann.wait("hand", id=hand_id, state="claimed", mentor="mia")
        assert hand.session.box is not None

    in_room(tmp_path, scenario)


def test_an_anonymous_hand_waits_for_a_broker_that_is_a_verified_mentor(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        room = Room(tmp_path)
        try:
            ann, bob = room.add("ann"), room.add("bob")
            room.start(ann, bob)
            for member in (ann, bob):
                await member.wait("broker", epoch=1)
            (broker,) = {m.of("broker")[0]["handle"] for m in (ann, bob)}
            student = bob if broker == "ann" else ann
            host = room[broker]
            hand_id = student.node.execute({"cmd": "hand", "topic": "shy", "anon": True})
            shown = await student.wait("hand", id=hand_id)
            assert shown["state"] == "raised"
            await poll(lambda: student.node.counters.get("anon_hand_held", 0) >= 1, "held")
            relay = host.node.hosting.relay
            assert relay is not None
            assert relay._queue.get(hand_id or "") is None  # the student broker never saw it
        finally:
            await room.close()

    run(main())


def test_a_mentor_never_seals_to_a_hand_key_the_student_did_not_sign(tmp_path: Path) -> None:
    async def scenario(room: Room) -> None:
        mia, ann = room["mia"], room["ann"]
        desk = mia.node.helpdesk
        # What a lying broker could send mia: ann's hand, claimed by mia, with its own key.
        forged = wire.QueueEntry(
            hand_id="00aa11bb22cc33dd",
            label="ann",
            topic="help",
            raised_at=1.0,
            eph_key=Identity.generate().box_public,
            student_key=ann.node.me.key,
            claimed_by="mia",
            claimed_key=mia.node.me.key,
            hand_sig=secrets.token_bytes(64),
        )
        desk.on_queue(wire.Queue(version=999, entries=(forged,)))
        assert "00aa11bb22cc33dd" not in desk.my_claims
        assert mia.node.counters["hand_unverified"] == 1
        assert mia.of("claimed") == []
        # A real hand, signed by ann, is claimed and talked to as before.
        hand_id = ann.node.execute({"cmd": "hand", "topic": "real"})
        await mia.until(
            lambda: any(e["id"] == hand_id for q in mia.of("queue") for e in q["entries"]),
            "ann's hand in mia's queue",
        )
        mia.do("claim", id=hand_id)
        await mia.wait("claimed", id=hand_id)
        mia.do("msg", to="ann", text="on my way")
        await ann.wait("private", text="on my way")

    in_room(tmp_path, scenario)
