"""The life of a room over the in-memory twins (tests/memroom.py): a broker that quits,
a mentor who arrives late, handles in use, a node without mDNS, an offline friend, a file."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from memroom import (
    STUDENTS,
    WAIT_S,
    Member,
    Room,
    in_room,
    is_tick_after_stop,
    logged_errors,
    online,
    peer_handles,
    run,
)

from lanchat.inmemory import MemoryLan
from lanchat.room.membership import HELD_HANDLE_SETTING
from lanchat.store import Profile
from lanchat.transport import DEFAULT_INFO_PORT

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture(autouse=True)
def no_errors_logged(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.WARNING, logger="lanchat")
    yield
    assert not logged_errors(caplog)


def test_a_broker_that_quits_hands_over_at_once(tmp_path: Path) -> None:
    async def scenario(room: Room) -> None:
        mia = room["mia"]
        survivors = [m for m in room.running() if m is not mia]
        assert await room.quit(mia) == 0
        for member in survivors:
            await member.wait("broker", epoch=2)
        successors = {m.of("broker", epoch=2)[0]["handle"] for m in survivors}
        assert len(successors) == 1, f"the survivors disagree on the successor: {successors}"
        for member in survivors:
            await member.see_online({m.handle for m in survivors if m is not member})
            member.do("say", text=f"{member.handle} carries on")
        for member in survivors:
            await member.hear({f"{m.handle} carries on" for m in survivors if m is not member})

    in_room(tmp_path, scenario)


def test_a_mentor_who_arrives_while_a_student_broker_settles_takes_over(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        room = Room(tmp_path)
        try:
            students = [room.add(handle) for handle in STUDENTS[:3]]
            room.start(*students)
            for member in students:
                await member.wait("broker", epoch=1)
            (first,) = {m.of("broker")[0]["handle"] for m in students}
            assert first in STUDENTS
            mia = room.add("mia", mentor=True)
            room.start(mia)
            # Within its first seconds a student broker gives way to a mentor.
            await room.settled("mia", epoch=2)
            assert mia.of("broker", handle="mia")[0]["self"]
            for member in students:
                assert [b["handle"] for b in member.of("broker")] == [first, "mia"]
        finally:
            await room.close()

    run(main())


# ---- handles ---------------------------------------------------------------------


def test_a_handle_in_use_is_refused_at_start(tmp_path: Path) -> None:
    async def scenario(room: Room) -> None:
        impostor = room.add("ANN")  # another person: another profile, another key
        room.start(impostor)
        assert impostor.task is not None
        assert await asyncio.wait_for(impostor.task, WAIT_S) == 2
        assert [e["code"] for e in impostor.of("error")] == ["handle_taken"]
        assert impostor.of("ready") == []
        assert room["bob"].of("peer_up", handle="ANN") == []

    in_room(tmp_path, scenario)


def test_two_nodes_taking_one_handle_at_the_same_moment_leave_one_holder(
    tmp_path: Path,
) -> None:
    async def scenario(room: Room) -> None:
        first, second = room.add("zed"), room.add("Zed")
        room.start(first, second)
        tasks = [m.task for m in (first, second) if m.task is not None]
        done, _ = await asyncio.wait(tasks, timeout=WAIT_S, return_when=asyncio.FIRST_COMPLETED)
        (loser,) = [m for m in (first, second) if m.task in done]
        (winner,) = [m for m in (first, second) if m is not loser]
        assert loser.task is not None
        assert loser.task.result() == 2
        assert [e["code"] for e in loser.of("error")] == ["handle_taken"]
        await winner.wait("broker", handle="mia")
        bob = room["bob"]
        await bob.until(lambda: winner.handle in online(bob), f"{winner.handle} online")
        # The loser said no goodbye for the name: the winner's advert still stands.
        await bob.until(lambda: "zed" in peer_handles(bob), "zed in who")
        assert loser.handle not in online(bob)

    in_room(tmp_path, scenario)


async def own_broker(member: Member) -> None:
    await member.until(lambda: any(e["self"] for e in member.of("broker")), "its own broker")


def test_one_handle_taken_by_two_brokers_at_the_same_moment_leaves_one_holder(
    tmp_path: Path,
) -> None:
    """Two fresh nodes, each alone when it took the handle: each elects itself (an advert
    under our own name is a clash, never a candidate). When they hear each other, the worse
    broker probes the better, which holds the handle: the worse gives way, once."""

    async def main() -> None:
        room = Room(tmp_path)
        try:
            first, second = room.add("ann"), room.add("Ann")
            room.lan.partition([first.address], [second.address])
            room.start(first, second)
            await own_broker(first)
            await own_broker(second)
            room.lan.heal()
            tasks = [m.task for m in (first, second) if m.task is not None]
            done, _ = await asyncio.wait(tasks, timeout=WAIT_S, return_when=asyncio.FIRST_COMPLETED)
            (loser,) = [m for m in (first, second) if m.task in done]
            (winner,) = [m for m in (first, second) if m is not loser]
            assert loser.task is not None
            assert loser.task.result() == 2
            assert [e["code"] for e in loser.of("error")] == ["handle_taken"]
            assert loser.profile.state.get_setting(HELD_HANDLE_SETTING) is None
            assert winner.running
            assert winner.of("error") == []
        finally:
            await room.close()

    run(main())


def test_a_handle_held_before_is_not_given_up_to_a_broker_that_claims_it(
    tmp_path: Path,
) -> None:
    """Only a claim made moments ago gives way: a node whose profile held the handle does
    not chase a broker that announces it, and keeps running (that broker's word, which a
    modified node can send, does not take it); the fresh claim does not give way to a
    worse broker either."""

    async def main() -> None:
        room = Room(tmp_path)
        try:
            held = tmp_path / "held"
            profile = Profile.open(held)  # a profile that held the handle in an earlier run
            profile.state.set_setting(HELD_HANDLE_SETTING, "ann")
            profile.close()
            first, second = room.add("ann"), room.add("Ann", directory=held)
            room.start(first)
            await own_broker(first)  # the older reign: the better broker
            room.start(second)
            await second.wait("warning", code="handle_claimed")
            await own_broker(second)
            counters = second.node.ctx.counters
            await second.until(lambda: counters.get("handle_clash", 0) > 0, "the clash heard")
            await first.until(
                lambda: first.node.ctx.counters.get("handle_clash", 0) > 0, "the clash heard"
            )
            assert second.running
            assert second.of("error") == []
            assert first.running
        finally:
            await room.close()

    run(main())


# ---- without multicast, through --connect ---------------------------------------------


def test_a_node_without_mdns_joins_through_connect(tmp_path: Path) -> None:
    async def scenario(room: Room) -> None:
        bob = room["bob"]
        # Its adverts go nowhere and it hears none (multicast blocked), but the room's
        # sockets are reachable: it asks bob's info port which broker to join.
        fay = room.add(
            "fay",
            discovery=MemoryLan(),
            connect=(bob.address, DEFAULT_INFO_PORT),  # --connect BOB
        )
        room.start(fay)
        await fay.wait("broker", handle="mia", epoch=1)
        await fay.see_online({"mia", *STUDENTS})
        bob.do("say", text="hello fay")
        await fay.wait("public", text="hello fay")
        fay.do("say", text="hello room")
        await room["mia"].wait("public", text="hello room", **{"from": "fay"})

    in_room(tmp_path, scenario)


# ---- offline friends, files --------------------------------------------------------------


def test_a_private_message_to_an_offline_friend_arrives_when_they_are_back(
    tmp_path: Path,
) -> None:
    async def scenario(room: Room) -> None:
        ann, bob = room["ann"], room["bob"]
        ann.do("request", to="bob")
        await bob.wait("request", **{"from": "ann"})
        bob.do("accept", **{"from": "ann"})
        await ann.wait("accepted", by="bob")
        directory = bob.profile.directory
        assert await room.quit(bob) == 0
        await ann.wait("peer_down", handle="bob")
        ann.do("msg", to="bob", text="while you were away")
        ann.do("friends")
        friends = await ann.wait("friends")
        assert [(f["handle"], f["online"]) for f in friends["friends"]] == [("bob", False)]
        back = room.add("bob", directory=directory)  # the same profile, the same key
        room.start(back)
        got = await back.wait("private", text="while you were away")
        assert got["from"] == "ann"
        await ann.wait("delivered", id=got["id"], to="bob")

    in_room(tmp_path, scenario)


def test_a_shared_file_is_fetched_peer_to_peer(tmp_path: Path) -> None:
    async def scenario(room: Room) -> None:
        ann, bob = room["ann"], room["bob"]
        content = bytes(range(256)) * 400
        path = tmp_path / "notes.bin"
        path.write_bytes(content)
        ann.do("share", path=str(path))
        offered = await ann.wait("file_offered")
        assert offered["to"] is None
        offer = await bob.wait("file_offer", id=offered["id"])
        assert (offer["from"], offer["shared"], offer["size"]) == ("ann", True, len(content))
        bob.do("accept_file", id=offered["id"])
        done = await bob.wait("file_done", id=offered["id"])
        assert Path(done["path"]).read_bytes() == content
        # The sharer learns who has it (once the fetcher verified it), and only that.
        fetched = await ann.wait("file_fetched", id=offered["id"])
        assert fetched["by"] == "bob"
        assert ann.of("file_fetched") == [fetched]

    in_room(tmp_path, scenario)


def test_a_broker_that_quit_runs_no_more_ticks(tmp_path: Path) -> None:
    async def scenario(room: Room) -> None:
        errors: list[logging.LogRecord] = []
        seen = asyncio.Event()

        class Catch(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                if is_tick_after_stop(record):
                    errors.append(record)
                    seen.set()

        catch = Catch()
        logging.getLogger("lanchat").addHandler(catch)
        try:
            for epoch in (1, 2, 3):  # three brokers quit in turn: three chances
                (broker,) = [m for m in room.running() if m.of("broker", epoch=epoch)[0]["self"]]
                assert await room.quit(broker) == 0
                for member in room.running():
                    await member.wait("broker", epoch=epoch + 1)
                # A tick it left behind is due within the relay's BEAT_INTERVAL_S.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(seen.wait(), 0.5)
                assert errors == [], "a tick ran after the node stopped"
        finally:
            logging.getLogger("lanchat").removeHandler(catch)

    in_room(tmp_path, scenario)
