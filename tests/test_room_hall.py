"""Rooms past DELTA_FROM_CLIENTS (changes as deltas) and halls past LAZY_FROM_CLIENTS
(members hold a count and some entries, and look up the rest), with full nodes in process.
The hall threshold is lowered so a hall fits in a test."""

from __future__ import annotations

from typing import TYPE_CHECKING

from memroom import Room, online, run, workshop

from lanchat.core import relay as relay_mod

if TYPE_CHECKING:
    from pathlib import Path

    import pytest

TEN = tuple(f"s{i}" for i in range(9))


def test_a_room_of_ten_hears_joins_and_leaves_as_deltas(tmp_path: Path) -> None:
    async def main() -> None:
        room = await workshop(tmp_path, TEN)
        try:
            late = room.add("late")
            room.start(late)
            await room.settled("mia")
            assert all("late" in online(m) for m in room.running() if m is not late)
            await room.quit(room["s3"])
            for member in room.running():
                await member.until(lambda m=member: "s3" not in online(m), "s3 gone")
            room["s0"].do("who")
            who = await room["s0"].wait("who")
            assert "count" not in who  # not a hall: everyone is listed
            assert len(who["peers"]) == 9
            # the roster is still in succession order: the mentor takes over
            await room.kill(room["mia"])
            await room["s0"].wait("broker", epoch=2)
        finally:
            await room.close()

    run(main())


def test_a_hall_holds_the_count_mentors_speakers_and_lookups(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(relay_mod, "LAZY_FROM_CLIENTS", 6)
    monkeypatch.setattr(relay_mod, "LAZY_HEAD", 2)

    async def main() -> None:
        room = Room(tmp_path)
        room.start(room.add("mia", mentor=True))
        await room["mia"].wait("broker", handle="mia")
        students = [room.add(h) for h in ("ann", "bob", "cat", "dan", "eve", "fay", "gus")]
        room.start(*students)
        for member in room.running():
            await member.wait("broker", handle="mia")
        gus = room["gus"]
        await gus.until(lambda: "mia" in online(gus), "the mentor")
        gus.do("who")
        who = await gus.wait_new("who")
        assert who.get("count") == 8
        assert len(who["peers"]) < 7  # not everyone: a hall
        # a prefix is asked of the broker
        gus.do("who", prefix="Da")
        found = await gus.wait_new("who")
        assert [p["handle"] for p in found["peers"]] == ["dan"]
        assert "dan" in online(gus)
        # a recent speaker is known to everyone
        room["cat"].do("say", text="hello hall")
        await gus.until(lambda: "cat" in online(gus), "the speaker")
        await room.close()

    run(main())
