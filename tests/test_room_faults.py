"""Faults in a room over the in-memory twins (tests/memroom.py): a partition and its heal,
a student that vanishes. Slower than the other room tests: these wait for the node's own
timeouts (heartbeats, re-announcements), which are seconds by design."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

import pytest
from memroom import STUDENTS, Member, Room, in_room, logged_errors, run

from lanchat.core import reliability

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


@pytest.fixture(autouse=True)
def no_errors_logged(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.WARNING, logger="lanchat")
    yield
    assert not logged_errors(caplog)


async def split_and_heal(room: Room) -> str:
    """Cut the mentor's broker off from the students, let both halves talk, heal.

    Returns the handle of the students' own broker while they were cut off.
    """
    mia = room["mia"]
    students = [room[h] for h in STUDENTS]
    room.lan.partition([mia.address], [m.address for m in students], detect_s=0.1)
    for member in students:
        await member.wait("broker", epoch=2)
    (their_broker,) = {str(m.of("broker", epoch=2)[0]["handle"]) for m in students}
    for member in students:
        await member.see_online({m.handle for m in students if m is not member})
    await mia.until(lambda: mia.of("peer_down") != [], "the students timing out")
    mia.do("say", text="mia alone")
    for member in students:
        member.do("say", text=f"{member.handle} cut off")
    for member in students:
        await member.hear({f"{m.handle} cut off" for m in students if m is not member})
    await mia.count("sent", 1)

    healed_at = time.monotonic()
    room.lan.heal()
    for member in students:  # the second time they join mia
        await member.count("broker", 2, handle="mia", epoch=1)
    print(f"merged back on mia {(time.monotonic() - healed_at) * 1000:.0f} ms after the heal")
    await room.settled("mia", epoch=1)
    return their_broker


def test_a_partition_elects_a_broker_per_half_and_the_heal_merges_them_and_their_texts(
    tmp_path: Path,
) -> None:
    async def scenario(room: Room) -> None:
        their_broker = await split_and_heal(room)
        assert their_broker in STUDENTS
        # What each half said while cut off reaches the other half: the students' texts
        # are re-sent by their authors to the merged broker, mia's come with the backlog
        # each student asks of it on joining.
        mia = room["mia"]
        for member in room.running():
            if member is not mia:
                await member.hear({"mia alone"})
        await mia.hear({f"{h} cut off" for h in STUDENTS})
        for member in room.running():
            member.do("say", text=f"{member.handle} healed")
        for member in room.running():
            await member.hear({f"{m.handle} healed" for m in room.running() if m is not member})
            assert max(member.public_ids().values()) == 1

    in_room(tmp_path, scenario)


def test_a_vanished_student_is_reported_down_within_the_client_timeout(
    tmp_path: Path,
) -> None:
    async def scenario(room: Room) -> None:
        dan = room["dan"]
        killed_at = time.monotonic()
        await room.kill(dan)
        for member in room.running():
            await member.wait("peer_down", handle="dan")
        took_s = time.monotonic() - killed_at
        assert took_s < 4.0  # the broker's CLIENT_TIMEOUT_S (2 s) and a tick or two
        print(f"dan reported down {took_s * 1000:.0f} ms after the kill")

    in_room(tmp_path, scenario)


def test_when_the_broker_and_its_successor_die_together_the_next_in_line_takes_over(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        room = Room(tmp_path)
        try:
            # The succession: mentors first, then the higher priority (then the longest
            # running, then the smaller key): after mia, ann, then bob.
            mia = room.add("mia", mentor=True)
            ann, bob = room.add("ann", priority=2), room.add("bob", priority=1)
            room.start(mia, ann, bob, room.add("cat"), room.add("dan"))
            await room.settled("mia")
            killed_at = time.monotonic()
            await room.kill(mia, ann)
            survivors = room.running()
            for member in survivors:
                await member.wait("broker", handle="bob", epoch=2)
            took_s = time.monotonic() - killed_at
            assert bob.of("broker", epoch=2)[0]["self"]
            for member in survivors:
                await member.see_online({m.handle for m in survivors if m is not member})
            # Asking the dead successor first costs the node's CONNECT_TIMEOUT_S (2 s).
            assert took_s < 5.0
            print(f"bob took over {took_s * 1000:.0f} ms after the double kill")
        finally:
            await room.close()

    run(main())


async def _claimed_session(room: Room) -> tuple[Member, Member, Member, str]:
    """Mentors mia (the broker) and max, students ann, bob, cat; ann's hand claimed by max
    and a message each way in its session; bob's hand waiting. (max, ann, bob, hand id)"""
    mia, max_ = room.add("mia", mentor=True), room.add("max", mentor=True)
    students = [room.add(h) for h in STUDENTS[:3]]
    # The room's first mentor starts first: its authority is the room's. (Two fresh mentors
    # started at the same moment can each keep their own: see docs/security.md.)
    room.start(mia)
    await mia.wait("broker", handle="mia", epoch=1)
    room.start(max_, *students)
    await room.settled("mia")
    ann, bob = room["ann"], room["bob"]
    mia.do("add_mentor", handle="max")  # a mentor only by the room authority's certificate
    for member in (max_, ann, bob):
        await member.wait("mentor_added", handle="max")
    ann.do("hand", topic="recursion")
    hand_id = str((await ann.wait("hand", state="raised"))["id"])
    bob.do("hand", topic="still waiting")
    await max_.until(lambda: any(len(q["entries"]) == 2 for q in max_.of("queue")), "2 hands")
    max_.do("claim", id=hand_id)
    await max_.wait("claimed", id=hand_id)
    await ann.wait("hand", id=hand_id, state="claimed", mentor="max")
    ann.do("msg", to="max", text="s before")
    await max_.wait("private", text="s before", hand=hand_id)
    return max_, ann, bob, hand_id


def test_a_help_session_goes_on_through_a_failover(tmp_path: Path) -> None:
    """Two mentors: when the broker's dies, the other (first in line, as a mentor) takes
    over; the student's hand, the queue and the session with the student go on."""

    async def main() -> None:
        room = Room(tmp_path)
        try:
            max_, ann, bob, hand_id = await _claimed_session(room)
            await room.kill(room["mia"])
            ann.do("msg", to="max", text="s during")
            for member in room.running():
                await member.wait("broker", handle="max", epoch=2)
            await max_.wait("private", text="s during", hand=hand_id)
            max_.do("msg", to="ann", text="m after")
            ann.do("msg", to="max", text="s after")
            await max_.wait("private", text="s after", hand=hand_id)
            await ann.wait("private", text="m after", hand=hand_id)
            # The new broker's queue is rebuilt from the hands re-sent to it.
            max_.do("queue")
            await max_.until(
                lambda: (
                    {e["id"] for e in max_.of("queue")[-1]["entries"]} >= {hand_id}
                    and len(max_.of("queue")[-1]["entries"]) == 2
                ),
                "both hands queued again",
            )
            max_.do("done", id=hand_id)
            await ann.wait("hand", id=hand_id, state="done")
            await bob.wait("hand", state="waiting", position=1)
            assert [e["text"] for e in max_.of("private")] == ["s before", "s during", "s after"]
        finally:
            await room.close()

    run(main())


def test_a_mentors_claim_and_session_survive_a_failover(tmp_path: Path) -> None:
    async def main() -> None:
        room = Room(tmp_path)
        try:
            max_, ann, _bob, hand_id = await _claimed_session(room)
            max_.do("msg", to="ann", text="m before")
            await ann.wait("private", text="m before", hand=hand_id)
            await room.kill(room["mia"])
            for member in room.running():
                await member.wait("broker", handle="max", epoch=2)
            max_.do("msg", to="ann", text="m after")
            # Within the help sessions' resend period (node.PRIVATE_RESEND_S) at the latest.
            await ann.until(lambda: bool(ann.of("private", text="m after")), "m after", 3.0)
            # The claim held throughout: never resolved, refused or granted anew.
            assert max_.of("hand", id=hand_id) == []
            assert max_.of("error") == []
            assert len(max_.of("claimed", id=hand_id)) == 1
        finally:
            await room.close()

    run(main())


def test_a_killed_student_that_restarts_at_once_is_back_in_the_room(tmp_path: Path) -> None:
    async def scenario(room: Room) -> None:
        ann, bob = room["ann"], room["bob"]
        await _befriend(ann, bob)
        directory = bob.profile.directory
        await room.kill(bob)
        back = room.add("bob", directory=directory, address=bob.address)  # same laptop
        room.start(back)
        await back.wait("broker", handle="mia")
        await back.see_online({"mia", "ann", "cat", "dan"})
        ann.do("msg", to="bob", text="you blinked")
        await back.wait("private", text="you blinked", **{"from": "ann"})
        ann.do("say", text="everyone here?")
        await back.wait("public", text="everyone here?")
        # Its old connection is replaced by the new one: the room never sees two bobs.
        ann.do("who")
        who = await ann.wait("who")
        assert sorted(p["handle"] for p in who["peers"]) == ["bob", "cat", "dan", "mia"]


# ---------------------------------------------------------------- nothing lost, one order


async def histories(room: Room) -> dict[str, list[dict[str, Any]]]:
    """Every running node's answer to ``history`` of the room (all of it)."""
    before = {m.handle: len(m.of("history")) for m in room.running()}
    for member in room.running():
        member.do("history", limit=10_000)
    answers = {}
    for member in room.running():
        n = before[member.handle]
        await member.until(lambda m=member, n=n: len(m.of("history")) > n, "history")  # type: ignore[misc]
        answers[member.handle] = member.of("history")[n]["messages"]
    return answers


async def check_room(room: Room, said: set[str], timeout: float = 20.0) -> float:
    """The one check of the fault tests: every message said (and acknowledged) is held by
    every node, shown to each once, and every node's history is the same, in the same
    order. Returns how long the room took to get there (s)."""
    started = time.monotonic()
    for member in room.running():
        own = {e["id"] for e in member.of("sent")}
        others = said - own
        await member.until(
            lambda m=member, want=others: want <= set(m.public_ids()),  # type: ignore[misc]
            f"all {len(others)} messages of the others",
            timeout=timeout,
        )
        assert max(member.public_ids().values(), default=1) == 1, "a message shown twice"
    took = time.monotonic() - started
    deadline = time.monotonic() + timeout
    while True:
        answers = await histories(room)
        orders = {h: [m["id"] for m in msgs] for h, msgs in answers.items()}
        placed = all(m["order"] is not None for msgs in answers.values() for m in msgs)
        if placed and len({tuple(o) for o in orders.values()}) == 1:
            break
        if time.monotonic() > deadline:
            first = next(iter(orders.values()))
            diffs = {h: o for h, o in orders.items() if o != first}
            raise AssertionError(f"histories differ: {first} vs {diffs}")
        await asyncio.sleep(0.2)  # our own lines wait for their relay to be placed
    (order,) = {tuple(o) for o in orders.values()}
    assert set(order) == said
    assert len(order) == len(said)
    return took


async def chat(room: Room, members: list[Member], rounds: int, tag: str) -> set[str]:
    """Every member says ``rounds`` texts, interleaved; returns the ids once all are sent."""
    for i in range(rounds):
        for member in members:
            member.do("say", text=f"{member.handle} {tag} {i}")
        await asyncio.sleep(0.05)
    ids: set[str] = set()
    for member in members:
        sent = await member.count("sent", rounds, **{})
        ids |= {e["id"] for e in sent}
    return ids


def all_sent(room: Room) -> set[str]:
    return {e["id"] for m in room.running() for e in m.of("sent")}


def test_a_partition_heals_with_every_message_everywhere_in_one_order_without_retention(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Authors forget acknowledged messages at once: only anti-entropy can bring the
    # halves' messages together.
    monkeypatch.setattr(reliability, "RETAIN_S", 0.0)

    async def scenario(room: Room) -> None:
        mia = room["mia"]
        students = [room[h] for h in STUDENTS]
        await chat(room, room.running(), 2, "before")
        room.lan.partition(
            [mia.address, room["ann"].address],
            [room[h].address for h in ("bob", "cat", "dan")],
            detect_s=0.1,
        )
        for member in (room["bob"], room["cat"], room["dan"]):
            await member.wait("broker", epoch=2)
        for i in range(5):
            for member in room.running():
                member.do("say", text=f"{member.handle} apart {i}")
            await asyncio.sleep(0.1)
        for member in room.running():
            await member.count("sent", 7)
        healed = time.monotonic()
        room.lan.heal()
        for member in students[1:]:
            await member.wait("broker", handle="mia", epoch=1)
        await chat(room, room.running(), 1, "after")
        took = await check_room(room, all_sent(room))
        print(
            f"reconciled {(time.monotonic() - healed) * 1000:.0f} ms after the heal "
            f"(check {took * 1000:.0f} ms)"
        )

    in_room(tmp_path, scenario)


def test_a_three_way_partition_heals_into_one_history(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reliability, "RETAIN_S", 0.0)

    async def scenario(room: Room) -> None:
        groups = [["mia", "ann"], ["bob", "cat"], ["dan"]]
        room.lan.partition(*([room[h].address for h in g] for g in groups), detect_s=0.1)
        for h in ("bob", "cat", "dan"):
            await room[h].wait("broker", epoch=2)
        for i in range(4):
            for member in room.running():
                member.do("say", text=f"{member.handle} apart {i}")
            await asyncio.sleep(0.1)
        for member in room.running():
            await member.count("sent", 4)
        room.lan.heal()
        for h in ("bob", "cat", "dan"):
            await room[h].wait("broker", handle="mia", epoch=1)
        await check_room(room, all_sent(room))

    in_room(tmp_path, scenario)


def test_an_author_restarted_before_its_message_was_placed_sends_it_then(
    tmp_path: Path,
) -> None:
    async def scenario(room: Room) -> None:
        dan = room["dan"]
        room.lan.partition([dan.address], [m.address for m in room.running() if m is not dan])
        dan.do("say", text="said alone, then stopped")
        await dan.until(lambda: dan.node.profile.history.count() >= 1, "the text stored")
        directory = dan.node.profile.directory
        await room.kill(dan)
        room.lan.heal()
        again = room.add("dan", directory=directory)
        room.start(again)
        await room.settled("mia")
        for member in room.running():
            if member is not again:
                await member.hear({"said alone, then stopped"})
        said = {e["id"] for m in room.running() for e in m.of("public")}
        await check_room(room, said)

    in_room(tmp_path, scenario)


async def _befriend(asker: Member, other: Member) -> None:
    asker.do("request", to=other.handle)
    await other.wait_new("request", **{"from": asker.handle})
    other.do("accept", **{"from": asker.handle})
    await asker.wait_new("accepted", by=other.handle)


def test_brokers_dying_one_after_another_lose_and_double_nothing(tmp_path: Path) -> None:
    async def scenario(room: Room) -> None:
        for epoch in (1, 2, 3):
            alive = room.running()
            (broker,) = [m for m in alive if m.of("broker", epoch=epoch)[0]["self"]]
            for member in alive:
                member.do("say", text=f"{member.handle} before {epoch}")
            await room.kill(broker)
            alive = room.running()
            for member in alive:
                member.do("say", text=f"{member.handle} after {epoch}")
            for member in alive:
                await member.wait("broker", epoch=epoch + 1)
        # Two survivors of five: each has every text the other said, once.
        one, other = room.running()
        for member, peer in ((one, other), (other, one)):
            texts = {f"{peer.handle} {when} {n}" for n in (1, 2, 3) for when in ("before", "after")}
            await member.hear(texts)
            assert max(member.public_ids().values()) == 1


def test_a_full_disk_is_one_storage_error_and_nothing_is_lost(tmp_path: Path) -> None:
    async def scenario(room: Room) -> None:
        dan = room["dan"]
        history = dan.node.profile.history
        pages = history._db.execute("PRAGMA page_count").fetchone()[0]
        history._db.execute(f"PRAGMA max_page_count={pages}")  # "database or disk is full"
        big = "y" * 2000
        for i in range(20):
            room["ann"].do("say", text=f"{big} {i}")
            dan.do("say", text=f"dan {i}")
        await dan.count("sent", 20)
        errors = await dan.count("error", 1, code="storage")
        assert "disk is full" in errors[0]["message"]
        said = all_sent(room)
        await check_room(room, said)  # dan's history answer includes what waits in memory
        assert history.waiting() > 0
        history._db.execute("PRAGMA max_page_count=1073741823")
        saved = await dan.wait("storage", state="ok")
        assert saved["saved"] > 0
        assert len(dan.of("error", code="storage")) == 1
        assert history.waiting() == 0
        await check_room(room, said)

    in_room(tmp_path, scenario)


def test_a_broker_that_drops_one_message_is_noticed_by_its_author_and_the_receivers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def scenario(room: Room) -> None:
        from lanchat.core import wire
        from lanchat.core.relay import BrokerRelay, ToClient

        mia, dan = room["mia"], room["dan"]
        relay = mia.node.hosting.relay
        assert relay is not None
        honest = BrokerRelay.receive

        def censor(
            self: BrokerRelay, rid: bytes, key: bytes, frames: list[bytes], now: float
        ) -> Any:
            msg, _ = wire.decode(frames)
            if self is relay and isinstance(msg, wire.Public) and msg.text == "dan 2":
                # Acknowledged to dan, never numbered nor published.
                return [ToClient(rid, wire.encode(wire.Ack(seq=msg.seq)))]
            return honest(self, rid, key, frames, now)

        monkeypatch.setattr(BrokerRelay, "receive", censor)
        for i in range(1, 4):
            dan.do("say", text=f"dan {i}")
            await dan.count("sent", i)
        for member in room.running():
            if member is not dan:
                await member.hear({"dan 1", "dan 3"})
                assert "dan 2" not in member.public_texts()
        unseen = await dan.wait("warning", code="unseen")
        assert unseen["id"].endswith(":2")
        for member in room.running():
            if member is not dan:
                withheld = await member.wait("warning", code="withheld")
                assert withheld["handle"] == "dan"

    in_room(tmp_path, scenario)


def test_a_message_the_broker_lost_is_fetched_from_its_author(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def scenario(room: Room) -> None:
        from lanchat.core import wire
        from lanchat.core.relay import BrokerRelay, ToClient

        mia, dan = room["mia"], room["dan"]
        relay = mia.node.hosting.relay
        assert relay is not None
        honest = BrokerRelay.receive
        lost: list[int] = []

        def lossy(
            self: BrokerRelay, rid: bytes, key: bytes, frames: list[bytes], now: float
        ) -> Any:
            msg, _ = wire.decode(frames)
            if self is relay and isinstance(msg, wire.Public) and msg.text == "dan 2" and not lost:
                lost.append(msg.seq)  # acknowledged, then lost (once)
                return [ToClient(rid, wire.encode(wire.Ack(seq=msg.seq)))]
            return honest(self, rid, key, frames, now)

        monkeypatch.setattr(BrokerRelay, "receive", lossy)
        for i in range(1, 4):
            dan.do("say", text=f"dan {i}")
            await dan.count("sent", i)
        # The receivers see the gap, ask the broker; it lacks it too and asks dan.
        for member in room.running():
            if member is not dan:
                await member.hear({"dan 1", "dan 2", "dan 3"})
        await check_room(room, all_sent(room))
        for member in room.running():
            assert not member.of("warning", code="withheld")
        assert not dan.of("warning", code="unseen")
        assert lost

    in_room(tmp_path, scenario)
