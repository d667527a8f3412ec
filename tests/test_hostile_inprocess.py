"""Floods, impostors and blocked authors against a room of full nodes (in one process).

A `Rogue` speaks the real wire protocol to the broker; the victims are real nodes, and the
figures are what their users would see: how long a command waits for its answer during
the flood, how large the state file grows, which events show.
"""

from __future__ import annotations

import asyncio
import statistics
from typing import TYPE_CHECKING

from memroom import Member, Rogue, Room, probe_commands, run, workshop

from lanchat.core import relay as relay_mod
from lanchat.core import wire
from lanchat.identity import Identity
from lanchat.room import private as private_mod
from lanchat.store import PINS_MAX, STATE_NAME

if TYPE_CHECKING:
    from pathlib import Path

    import pytest

FLOOD_S = 5.0
# One event loop runs the rogue, the broker and every node here, so the victim waits for
# all their work too (and for the collector, in a long test session): the LAN tests hold
# a victim in its own process to 0.5 s.
ANSWER_MAX_S = 1.0
STATE_MAX_BYTES = 100_000
SLICE_S = 0.05  # the rogue sends its flood in slices this far apart


def state_size(member: Member) -> int:
    member.node.profile.state.flush()
    return (member.node.profile.directory / STATE_NAME).stat().st_size


async def flood(rogue: Rogue, frames: list[tuple[float, int, list[bytes]]], links: int) -> None:
    """Send each of ``frames`` at its time (s from now), on its connection number."""
    conns = [rogue.link() for _ in range(links)]
    loop = asyncio.get_running_loop()
    start = loop.time()
    pending = sorted(frames, key=lambda f: f[0])
    while pending:
        now = loop.time() - start
        due = 0
        while due < len(pending) and pending[due][0] <= now:
            due += 1
        for _t, conn, msg in pending[:due]:
            conns[conn].send_nowait(msg)
        del pending[:due]
        await asyncio.sleep(SLICE_S)  # the rogue's pace


async def throwaway_requests(room: Room, victim: Member, count: int) -> tuple[Rogue, list[float]]:
    """``count`` identities in FLOOD_S, one connection each, each sending one chat request
    once the room has seen it join (a Heartbeat keeps it in the room meanwhile)."""
    rogue = Rogue(room, room["mia"])
    frames: list[tuple[float, int, list[bytes]]] = []
    for i in range(count):
        ident = Identity.generate()
        # Half of them claim the victim's friend's name, to be shown under it.
        handle = "bob" if i % 2 else f"t{i}"
        at = FLOOD_S * i / count
        frames.append((at, i, rogue.hello(ident, f"t{i}")))
        frames.append((at + 1.0, i, wire.encode(wire.Heartbeat(t=0.0))))
        frames.append((at + 1.5, i, rogue.request(ident, victim.node.me.key, handle)))
    done = asyncio.Event()
    probe = asyncio.create_task(probe_commands(victim, done))
    await flood(rogue, frames, count)
    await asyncio.sleep(1.0)  # what is still on its way lands (the probe keeps asking)
    done.set()
    waits = await probe
    assert max(waits) < ANSWER_MAX_S, f"slowest answer {max(waits):.3f} s"
    return rogue, waits


def test_three_thousand_requests_from_throwaway_identities(tmp_path: Path) -> None:
    async def main() -> None:
        room = await workshop(tmp_path, ("ann", "bob"))
        ann, bob = room["ann"], room["bob"]
        try:
            ann.do("request", to="bob")
            await bob.wait("request", **{"from": "ann"})
            rogue, answers = await throwaway_requests(room, ann, 3_000)
            requests = ann.of("request")
            counters = room["mia"].node.hosting.relay.counters  # type: ignore[union-attr]
            print(
                f"\n3,000 throwaway requests in {FLOOD_S} s: {len(answers)} commands answered, "
                f"slowest {max(answers):.3f} s, "
                f"requests shown {len(requests)}, state {state_size(ann):,} bytes, "
                f"broker counters {counters}, refused {rogue.refused('busy')} busy, "
                f"{rogue.refused('room_full')} room_full"
            )
            assert state_size(ann) < STATE_MAX_BYTES
            assert len(requests) <= relay_mod.FIRST_CONTACTS_BURST + (FLOOD_S + 2) * (
                relay_mod.FIRST_CONTACTS_PER_S
            )
            # Never under a name another key holds: bob's pinned key is bob's.
            assert all(e["from"] != "bob" for e in requests)
            assert counters["first_contact_budget"] > 0
            # The room still works: bob's real request arrives.
            bob.do("accept", **{"from": "ann"})
            await ann.wait("accepted", by="bob")
        finally:
            await room.close()

    run(main())


def test_the_receiver_alone_holds_without_the_brokers_budgets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A broker that relays everything (an old or hostile one): every request arrives."""
    monkeypatch.setattr(relay_mod, "FIRST_CONTACTS_BURST", 1e9)
    monkeypatch.setattr(relay_mod, "JOINS_BURST", 1e9)
    monkeypatch.setattr(relay_mod, "MAX_CLIENTS", 10_000)

    async def main() -> None:
        room = await workshop(tmp_path, ("ann", "bob"))
        ann = room["ann"]
        try:
            _rogue, answers = await throwaway_requests(room, ann, 3_000)
            pending = [f for f in ann.node.private.friends() if f["state"] == "pending_in"]
            dropped = ann.node.counters.get("request_dropped", 0)
            print(
                f"\nno broker budgets: {len(answers)} commands answered, "
                f"slowest {max(answers):.3f} s, "
                f"requests shown {len(ann.of('request'))}, pending kept {len(pending)}, "
                f"dropped {dropped}, strangers' Directs unopened "
                f"{ann.node.counters.get('direct_from_stranger', 0)}, "
                f"pins {len(ann.node.profile.state.pins())}, state {state_size(ann):,} bytes"
            )
            assert len(pending) <= private_mod.PENDING_IN_MAX
            assert len(ann.of("request")) > private_mod.PENDING_IN_MAX  # the flood got in
            assert len(ann.node.profile.state.pins()) <= PINS_MAX + 10
            assert state_size(ann) < STATE_MAX_BYTES
        finally:
            await room.close()

    run(main())


def test_ten_thousand_hands_and_shared_offers_from_one_node(tmp_path: Path) -> None:
    async def main() -> None:
        room = await workshop(tmp_path, ("ann", "bob"))
        mia, ann = room["mia"], room["ann"]
        try:
            rogue = Rogue(room, mia)
            ident = Identity.generate()
            frames = [(0.0, 0, rogue.hello(ident, "rogue"))]
            for i in range(10_000):
                at = 0.5 + (FLOOD_S - 0.5) * i / 10_000
                frames.append((at, 0, Rogue.hand(i)))
                frames.append((at, 0, rogue.shared_offer(ident, "rogue", i + 1)))
                if i % 500 == 0:
                    frames.append((at, 0, wire.encode(wire.Heartbeat(t=0.0))))
            done = asyncio.Event()
            probes = [asyncio.create_task(probe_commands(m, done)) for m in (mia, ann)]
            await flood(rogue, frames, 1)
            await asyncio.sleep(1.0)
            done.set()
            waits = [await p for p in probes]
            counters = mia.node.hosting.relay.counters  # type: ignore[union-attr]
            hands = mia.of("queue")[-1]["entries"] if mia.of("queue") else []
            print(
                f"\n10,000 hands + 10,000 shared offers: slowest answer mentor "
                f"{max(waits[0]):.3f} s, student {max(waits[1]):.3f} s; hands queued "
                f"{len(hands)}, offers shown {len(ann.of('file_offer'))}, public lines "
                f"{len(ann.of('public'))}; state {state_size(mia):,} / "
                f"{state_size(ann):,} bytes; broker {counters}"
            )
            for w in waits:
                assert max(w) < ANSWER_MAX_S
                assert statistics.median(w) < ANSWER_MAX_S / 5
            assert len(hands) <= 3
            assert len(ann.of("file_offer")) <= relay_mod.SHARED_OFFERS_BURST + 8
            assert counters["hand_budget"] > 9_000
            assert counters["offer_budget"] > 9_000
            assert max(state_size(mia), state_size(ann)) < STATE_MAX_BYTES
        finally:
            await room.close()

    run(main())


def test_an_impostor_is_marked_until_trusted(tmp_path: Path) -> None:
    async def main() -> None:
        room = await workshop(tmp_path, ("ann", "bob"))
        bob = room["bob"]
        try:
            room["ann"].do("say", text="the real ann")
            await bob.hear({"the real ann"})
            assert "impostor" not in bob.of("public", text="the real ann")[0]
            await room.quit(room["ann"])
            await bob.wait("peer_down", handle="ann")
            fake = room.add("ann")  # another key takes the free handle
            room.start(fake)
            await bob.wait("warning", code="key_changed")
            fake.do("say", text="trust me")
            await bob.hear({"trust me"})
            line = bob.of("public", text="trust me")[0]
            assert line["impostor"] is True
            assert line["fingerprint"] == fake.node.me.fingerprint
            fake.do("request", to="bob")
            request = await bob.wait("request")
            assert request["impostor"] is True
            bob.do("trust", handle="ann", fingerprint=fake.node.me.fingerprint)
            await bob.wait("trusted", handle="ann")
            fake.do("say", text="trusted now")
            await bob.hear({"trusted now"})
            assert "impostor" not in bob.of("public", text="trusted now")[0]
        finally:
            await room.close()

    run(main())


def test_a_blocked_authors_message_never_shows_after_unblock_and_restart(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        room = await workshop(tmp_path, ("ann", "bob"))
        ann, bob = room["ann"], room["bob"]
        try:
            bob.do("block", handle="ann")
            bob.do("friends")
            await bob.wait("friends")
            ann.do("say", text="said while blocked")
            room["mia"].do("say", text="after it")
            await bob.hear({"after it"})
            bob.do("unblock", handle="ann")
            bob.do("friends")
            await bob.wait_new("friends")
            directory = bob.node.profile.directory
            await room.quit(bob)
            again = room.add("bob", directory=directory)
            room.start(again)
            # Its catch-up (the broker's backlog, asked for at its Welcome) brings both
            # messages again: "after it" is in its history already, the other is buried.
            await again.wait("broker", handle="mia")
            ann.do("say", text="after the unblock")
            await again.hear({"after the unblock"})
            again.do("history", limit=50)
            history = await again.wait("history")
            assert {"after it", "after the unblock"} <= {m["text"] for m in history["messages"]}
            for member in (bob, again):
                assert "said while blocked" not in member.public_texts()
            assert "said while blocked" not in {m["text"] for m in history["messages"]}
        finally:
            await room.close()

    run(main())


def test_newcomers_a_busy_broker_refuses_wait_their_turn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A broker that admits one newcomer a second: the others ask again, nobody elects
    another broker (the room stays one)."""
    monkeypatch.setattr(relay_mod, "JOINS_BURST", 1.0)
    monkeypatch.setattr(relay_mod, "JOINS_PER_S", 1.0)

    async def main() -> None:
        room = Room(tmp_path)
        mia = room.add("mia", mentor=True)
        room.start(mia)
        await mia.wait("broker", handle="mia")
        students = [room.add(s) for s in ("ann", "bob", "cat")]
        room.start(*students)
        try:
            await room.settled("mia")
            busy = sum(s.node.counters.get("broker_busy", 0) for s in students)
            assert busy >= 2
            for member in room.running():
                assert {e["handle"] for e in member.of("broker")} == {"mia"}
        finally:
            await room.close()

    run(main())


def test_a_friends_typing_hints_show_at_most_every_two_seconds(tmp_path: Path) -> None:
    async def main() -> None:
        room = await workshop(tmp_path, ("ann", "bob"))
        ann, bob = room["ann"], room["bob"]
        try:
            ann.do("request", to="bob")
            await bob.wait("request", **{"from": "ann"})
            bob.do("accept", **{"from": "ann"})
            await ann.wait("accepted", by="bob")
            for _ in range(1_000):
                ann.do("typing", to="bob")
            ann.do("msg", to="bob", text="done typing")
            await bob.wait("private", text="done typing")
            assert 1 <= len(bob.of("typing")) <= 2
        finally:
            await room.close()

    run(main())


def test_a_strangers_repeated_requests_show_once_and_write_nothing(tmp_path: Path) -> None:
    async def main() -> None:
        room = await workshop(tmp_path, ("ann", "bob"))
        ann = room["ann"]
        try:
            rogue = Rogue(room, room["mia"])
            ident = Identity.generate()
            link = rogue.link()
            link.send_nowait(rogue.hello(ident, "pest"))
            await ann.wait("peer_up", handle="pest")
            ann.node.profile.state.flush()
            state = ann.node.profile.directory / STATE_NAME
            link.send_nowait(Rogue.request(ident, ann.node.me.key, "pest", cseq=1))
            await ann.wait("request", **{"from": "pest"})
            ann.node.profile.state.flush()
            written = state.stat().st_mtime_ns
            for cseq in range(2, 200):  # each a new item of its channel: all delivered
                link.send_nowait(Rogue.request(ident, ann.node.me.key, "pest", cseq=cseq))
            link.send_nowait(wire.encode(wire.Heartbeat(t=0.0)))

            def acked_upto() -> int:
                """How far ann acknowledged the rogue's channel (she took all up to it)."""
                upto = 0
                for msg in rogue.replies:
                    if isinstance(msg, wire.Direct):
                        inner = wire.decode_inner(ident.open_from(msg.sender, msg.box))
                        if isinstance(inner, wire.PrivateAck):
                            upto = max(upto, inner.upto)
                return upto

            async with asyncio.timeout(10):
                while acked_upto() < 199:
                    await asyncio.sleep(0.01)  # polling the rogue's inbox
            ann.node.profile.state.flush()  # what the next tick would write
            assert len(ann.of("request")) == 1
            assert state.stat().st_mtime_ns == written
        finally:
            await room.close()

    run(main())


def test_what_a_blocked_author_said_out_of_reach_never_shows_after_the_unblock(
    tmp_path: Path,
) -> None:
    """The relay of a message is lost on its way to us while we block its author; it comes
    (the broker's answer to our Resend) only after the unblock, and still does not show."""

    async def main() -> None:
        room = await workshop(tmp_path, ("ann", "bob"))
        ann, bob, mia = room["ann"], room["bob"], room["mia"]
        try:
            bob.do("block", handle="ann")
            bob.do("friends")
            await bob.wait("friends")
            on_relay = bob.node.public.on_relay
            lost: list[wire.Relay] = []

            def lose_it(msg: wire.Relay, now: float) -> None:
                if not lost and msg.inner.author == ann.node.me.key:
                    lost.append(msg)  # lost on the way: bob's numbering never saw it
                    return
                on_relay(msg, now)

            bob.node.public.on_relay = lose_it  # type: ignore[method-assign]
            ann.do("say", text="said while blocked")
            await mia.hear({"said while blocked"})
            assert lost
            # Time passes (here all of it would fit in the millisecond its clock rounds to).
            await asyncio.sleep(0.01)
            bob.do("unblock", handle="ann")
            bob.do("friends")
            await bob.wait_new("friends")
            ann.do("say", text="after the unblock")  # bob sees the gap and asks again
            await bob.hear({"after the unblock"})
            async with asyncio.timeout(10):
                while not bob.node.counters.get("blocked"):
                    await asyncio.sleep(0.01)  # polling a counter: no event says it
            assert "said while blocked" not in bob.public_texts()
        finally:
            await room.close()

    run(main())
