"""A room of full nodes in one process and one event loop, over the in-memory twins.

Every node is a real `lanchat.node.Node` with a real profile (TinyDB state, sqlite
history) in its own directory, a real identity and the real core; only the network is
`lanchat.inmemory`. Tests drive the nodes as a front end does (commands on the queue given
to ``Node.run``) and look only at the events they emit (docs/headless.md). No root, no
sockets (files aside), no sleeps: every wait is for an event, with a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import hostile
import zmq

from lanchat.core import wire
from lanchat.headless import encode_event
from lanchat.identity import Identity
from lanchat.inmemory import MemoryLan, MemoryLink, MemoryTransport
from lanchat.node import Node, NodeConfig
from lanchat.store import Profile
from lanchat.transport import DEFAULT_INFO_PORT

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine
    from pathlib import Path

    import pytest

ROOM = "workshop"
WAIT_S = 10.0  # a generous bound for any one wait: the machine is shared
STUDENTS = ("ann", "bob", "cat", "dan")
Event = dict[str, Any]


def logged_errors(caplog: pytest.LogCaptureFixture) -> str:
    """What the nodes logged at ERROR during the test (a failed handler, a failed
    background task: what a node survives but should not meet)."""
    errors = [r for r in caplog.get_records("call") if r.levelno >= logging.ERROR]
    return "\n".join(r.getMessage() for r in errors)


def is_tick_after_stop(record: logging.LogRecord) -> bool:
    """A tick that ran after ``Node.run`` returned and met the closed transport (or the
    finished task group); test_room_lifecycle's test_a_broker_that_quit_runs_no_more_ticks
    makes sure there is none."""
    if record.getMessage() != "error in a tick" or record.exc_info is None:
        return False
    exc = record.exc_info[1]
    return ("transport is closed" in str(exc) and isinstance(exc, zmq.ZMQError)) or (
        isinstance(exc, RuntimeError) and "is finished" in str(exc)
    )


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 60))


@dataclass(eq=False)
class Member:
    """One node of the room, seen as a front end sees it: commands in, events out."""

    handle: str
    address: str
    node: Node
    profile: Profile  # the harness opened it: it closes it too
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
        self.members: dict[str, Member] = {}  # by handle: the latest node of each
        self._made: list[Member] = []  # every node made, to close each profile
        self.unencodable: list[Event] = []  # events the headless front end would mangle

    def add(
        self,
        handle: str,
        *,
        mentor: bool = False,
        directory: Path | None = None,
        address: str | None = None,
        discovery: MemoryLan | None = None,
        connect: tuple[str, int] | None = None,
        priority: int = 0,
        info_port: int = DEFAULT_INFO_PORT,
        room_code: str | None = None,
    ) -> Member:
        """A node (not started) with its own address and profile (``directory``, else a
        new one; ``address``, else a new one); its adverts go on ``discovery``'s LAN, the
        room's unless given. Ports as the real default: info_port, then the next two."""
        address = address or f"127.0.0.{10 + len(self._made)}"
        directory = directory or self.tmp_path / f"{handle}-{len(self._made)}"
        profile = Profile.open(directory)
        identity = Identity.load_or_create(directory)
        config = NodeConfig(
            handle=handle,
            room=ROOM,
            address=address,
            mentor=mentor,
            priority=priority,
            info_port=info_port,
            connect=connect,
            room_code=room_code,
        )
        events: list[Event] = []
        changed = asyncio.Event()

        def emit(event: Event) -> None:
            # Every event must be a line of the headless contract, as the front end
            # writes it (checked here, where the node would write it).
            if json.loads(encode_event(event)) != event or not {"ev", "t"} <= event.keys():
                self.unencodable.append(event)
            events.append(event)
            changed.set()

        node = Node(
            config,
            profile,
            identity,
            emit,
            transport=self.lan.transport(address, identity.curve_public),
            discovery=(discovery or self.lan).discovery,
        )
        member = Member(handle, address, node, profile, self.lan, events=events, changed=changed)
        self.members[handle] = member
        self._made.append(member)
        return member

    def start(self, *members: Member) -> None:
        for member in members:
            member.task = asyncio.create_task(member.node.run(member.commands))

    def __getitem__(self, handle: str) -> Member:
        return self.members[handle]

    def running(self) -> list[Member]:
        return [m for m in self.members.values() if m.running]

    async def kill(self, *members: Member) -> None:
        """SIGKILL, all at the same instant: their connections drop at once, their adverts
        stay, no goodbye."""
        for member in members:
            self.lan.kill(member.address)
        for member in members:
            assert member.task is not None
            member.task.cancel()
        for member in members:
            assert member.task is not None
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(member.task, WAIT_S)
            member.profile.close()

    async def quit(self, member: Member) -> int:
        """A clean quit (EOF on stdin): the exit status; the profile is free again."""
        member.commands.put_nowait(None)
        assert member.task is not None
        try:
            return await asyncio.wait_for(member.task, WAIT_S)
        finally:
            member.profile.close()

    async def close(self) -> None:
        running = [m for m in self._made if m.running]
        try:
            for member in running:
                member.commands.put_nowait(None)
            tasks = [m.task for m in running if m.task is not None]
            statuses = await asyncio.wait_for(
                asyncio.gather(*tasks, return_exceptions=True), WAIT_S
            )
        finally:
            for member in self._made:
                member.profile.close()
        for member, status in zip(running, statuses, strict=True):
            assert status == 0, f"{member.handle} exited with {status!r}"
        assert self.unencodable == []

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


def peer_handles(member: Member) -> set[str]:
    """The handles (case-folded) of the last ``who`` answer; asks again for the next call."""
    member.do("who")
    answers = member.of("who")
    return {p["handle"].casefold() for p in answers[-1]["peers"]} if answers else set()


class Rogue:
    """A hostile client in the room, built from the real wire code: it talks to the broker
    over links of the in-memory LAN, as one identity or as thousands of throwaway ones.

    Its frames are encoded up front (``hello``, ``request``, ...), so that a flood costs the
    shared event loop only the sending, as a separate process would."""

    def __init__(self, room: Room, broker: Member, address: str = "127.0.0.250") -> None:
        self.address = address
        self.curve = Identity.generate()  # one transport key for every identity it uses
        self.transport = room.lan.transport(address, self.curve.curve_public)
        self.broker = broker
        self.replies: list[Any] = []

    def link(self) -> MemoryLink:
        """A new connection to the broker."""
        server = self.broker.node.transport
        assert isinstance(server, MemoryTransport)
        link = self.transport.link(self.broker.address, server.router_port, server.curve_public)
        link.start(self._heard, lambda _events: None)
        return link

    def hello(self, ident: Identity, handle: str) -> list[bytes]:
        return hostile.hello(
            ident,
            handle,
            ROOM,
            self.curve.curve_public,
            address=self.address,
            router_port=1,
            info_port=1,
        )

    request = staticmethod(hostile.request)

    @staticmethod
    def hand(i: int) -> list[bytes]:
        hand = wire.Hand(
            hand_id=f"{i:016x}", topic=f"help {i}", eph_key=bytes(32), raised_at=time.time()
        )
        return wire.encode(hand)

    def shared_offer(self, ident: Identity, handle: str, seq: int) -> list[bytes]:
        """A public message sharing a file that this rogue claims to serve."""
        return hostile.shared_offer(
            ident,
            handle,
            ROOM,
            seq,
            offer_id=f"{seq:032x}",
            name=f"f{seq}.txt",
            address=self.address,
            server_key=self.curve.curve_public,
        )

    def _heard(self, batch: list[list[bytes]]) -> None:
        for frames in batch:
            if sum(map(len, frames)) > 2_000:
                continue  # a roster: a rogue in its own process would not read it here
            with contextlib.suppress(wire.DecodeError):
                self.replies.append(wire.decode(frames)[0])

    def refused(self, code: str) -> int:
        return sum(1 for m in self.replies if isinstance(m, wire.Refused) and m.code == code)


async def probe_commands(
    member: Member, until: asyncio.Event, every_s: float = 0.05
) -> list[float]:
    """Ask ``member`` for ``friends`` again and again until ``until`` is set: how long each
    answer took (what a user at that node waits for a command)."""
    waits: list[float] = []
    loop = asyncio.get_running_loop()
    while not until.is_set():
        asked = loop.time()
        member.do("friends")
        await member.wait_new("friends")
        waits.append(loop.time() - asked)
        await asyncio.sleep(every_s)  # the pace of a user, not a synchronisation
    return waits
