"""A room of full nodes in one process and one event loop, over the in-memory twins.

Every node is a real `lanchat.node.Node` with a real profile (TinyDB state, sqlite
history) in ``tmp_path``, a real identity and the real core; only the network is
`lanchat.inmemory`. The tests drive the nodes as a front end does (commands on the queue
given to ``Node.run``) and look only at the events they emit (docs/headless.md). No root,
no sockets, no sleeps: every wait is for an event, with a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

from lanchat.identity import Identity
from lanchat.inmemory import MemoryLan
from lanchat.node import Node, NodeConfig
from lanchat.store import Profile

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Iterator
    from pathlib import Path

ROOM = "workshop"
WAIT_S = 10.0  # a generous bound for any one wait: the machine is shared
STUDENTS = ("ann", "bob", "cat", "dan")
Event = dict[str, Any]


@pytest.fixture(autouse=True)
def no_errors_logged(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """A node logs what it survives (a failed handler, a failed background task): none here."""
    caplog.set_level(logging.WARNING, logger="lanchat")
    yield
    errors = [r for r in caplog.get_records("call") if r.levelno >= logging.ERROR]
    assert not errors, "\n".join(r.getMessage() for r in errors)


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 60))


@dataclass(eq=False)
class Member:
    """One node of the room, seen as a front end sees it: commands in, events out."""

    handle: str
    address: str
    node: Node
    lan: MemoryLan
    events: list[Event] = field(default_factory=list)
    commands: asyncio.Queue[dict[str, Any] | None] = field(default_factory=asyncio.Queue)
    task: asyncio.Task[int] | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def do(self, cmd: str, **fields: Any) -> None:
        self.commands.put_nowait({"cmd": cmd, **fields})

    def of(self, ev: str, **match: Any) -> list[Event]:
        return [
            e for e in self.events if e["ev"] == ev and all(e.get(k) == v for k, v in match.items())
        ]

    async def until(self, done: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
        try:
            async with asyncio.timeout(timeout):
                while not done():
                    self.changed.clear()
                    await self.changed.wait()
        except TimeoutError:
            tail = "\n".join(str(e) for e in self.events[-15:])
            message = f"{self.handle}: no {what} within {timeout} s; last events:\n{tail}"
            raise AssertionError(message) from None

    async def wait(self, ev: str, **match: Any) -> Event:
        """The first event ``ev`` with these fields (already emitted, or the next one)."""
        await self.until(lambda: bool(self.of(ev, **match)), f"{ev} {match}")
        return self.of(ev, **match)[0]

    async def wait_new(self, ev: str, **match: Any) -> Event:
        """The next event ``ev`` with these fields, not one emitted before this call."""
        before = len(self.of(ev, **match))
        await self.until(lambda: len(self.of(ev, **match)) > before, f"new {ev} {match}")
        return self.of(ev, **match)[before]

    async def count(self, ev: str, n: int, **match: Any) -> list[Event]:
        """Wait for ``n`` events ``ev`` with these fields in all; returns them."""
        await self.until(lambda: len(self.of(ev, **match)) >= n, f"{n} x {ev} {match}")
        return self.of(ev, **match)

    async def hear(self, texts: set[str]) -> None:
        """Wait until every one of ``texts`` was shown in the public room."""
        await self.until(lambda: texts <= self.public_texts(), f"public texts {sorted(texts)}")

    async def see_online(self, handles: set[str]) -> None:
        await self.until(lambda: online(self) == handles, f"exactly {sorted(handles)} online")

    def public_texts(self) -> set[str]:
        return {e["text"] for e in self.of("public")}

    def public_ids(self) -> Counter[str]:
        return Counter(e["id"] for e in self.of("public"))

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()


class Room:
    """Nodes on one `MemoryLan`, each at its own address."""

    def __init__(self, tmp_path: Path) -> None:
        self.lan = MemoryLan()
        self.tmp_path = tmp_path
        self.members: dict[str, Member] = {}

    def add(self, handle: str, *, mentor: bool = False) -> Member:
        address = f"127.0.0.{10 + len(self.members)}"
        directory = self.tmp_path / handle
        profile = Profile.open(directory)
        identity = Identity.load_or_create(directory)
        config = NodeConfig(handle=handle, room=ROOM, address=address, mentor=mentor, info_port=0)
        events: list[Event] = []
        changed = asyncio.Event()

        def emit(event: Event) -> None:
            events.append(event)
            changed.set()

        node = Node(
            config,
            profile,
            identity,
            emit,
            transport=self.lan.transport(address, identity.curve_public),
            discovery=self.lan.discovery,
        )
        member = Member(handle, address, node, self.lan, events=events, changed=changed)
        self.members[handle] = member
        return member

    def start(self, *members: Member) -> None:
        for member in members:
            member.task = asyncio.create_task(member.node.run(member.commands))

    def __getitem__(self, handle: str) -> Member:
        return self.members[handle]

    def running(self) -> list[Member]:
        return [m for m in self.members.values() if m.running]

    async def kill(self, member: Member) -> None:
        """SIGKILL: its connections drop at once, its advert stays, no goodbye."""
        self.lan.kill(member.address)
        assert member.task is not None
        member.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(member.task, WAIT_S)

    async def close(self) -> None:
        for member in self.running():
            member.commands.put_nowait(None)
        tasks = [m.task for m in self.members.values() if m.task is not None]
        try:
            statuses = await asyncio.wait_for(
                asyncio.gather(*tasks, return_exceptions=True), WAIT_S
            )
        finally:
            for member in self.members.values():
                member.node.profile.close()
        for member, status in zip(self.members.values(), statuses, strict=True):
            if member.task is not None and not member.task.cancelled():
                assert status == 0, f"{member.handle} exited with {status!r}"

    async def settled(self, broker: str, epoch: int = 1) -> None:
        """Every running node is connected to ``broker`` and sees everyone else online."""
        everyone = self.running()
        for member in everyone:
            await member.wait("broker", handle=broker, epoch=epoch)
        for member in everyone:
            others = {m.handle for m in everyone if m is not member}
            await member.see_online(others)


def online(member: Member) -> set[str]:
    """Who ``member`` has seen come up and not go down since, by its events."""
    seen: set[str] = set()
    for event in member.events:
        if event["ev"] == "peer_up":
            seen.add(event["handle"])
        elif event["ev"] == "peer_down":
            seen.discard(event["handle"])
    return seen


async def workshop(tmp_path: Path, students: tuple[str, ...] = STUDENTS) -> Room:
    """A mentor and ``students``, started at the same moment, settled on one broker."""
    room = Room(tmp_path)
    room.start(room.add("mia", mentor=True), *(room.add(s) for s in students))
    await room.settled("mia")
    return room


def in_room(tmp_path: Path, scenario: Callable[[Room], Coroutine[Any, Any, None]]) -> None:
    async def main() -> None:
        room = await workshop(tmp_path)
        try:
            await scenario(room)
        finally:
            await room.close()

    run(main())


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
        room["bob"].do("say", text="welcome fay")
        await fay.wait("public", text="welcome fay", **{"from": "bob"})
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
        await bob.wait("hand", state="waiting", position=2)
        await mia.until(lambda: any(len(q["entries"]) == 2 for q in mia.of("queue")), "2 hands")
        queue = next(q for q in mia.of("queue") if len(q["entries"]) == 2)
        first, second = queue["entries"]
        assert (first["n"], first["id"], first["who"]) == (1, hand_id, "ann")
        assert first["topic"] == "my loop never ends"
        assert second["anon"]
        assert second["who"].startswith("anon-")
        assert "bob" not in str(mia.of("queue"))  # the anonymous hand stays anonymous

        mia.do("claim", n=1)
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
        mia = room["mia"]
        survivors = [m for m in room.running() if m is not mia]
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
        print(f"failover: the survivors followed {successor} {took_s * 1000:.0f} ms after the kill")

    in_room(tmp_path, scenario)
