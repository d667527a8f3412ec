"""Start-up races of a real Node in this process, with discovery's answers scripted."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import zmq
from zmq.utils import z85

from lanchat.core import wire
from lanchat.core.advert import Advert
from lanchat.discovery import HandleTaken
from lanchat.identity import Identity
from lanchat.node import Node, NodeConfig
from lanchat.store import Profile

if TYPE_CHECKING:
    from pathlib import Path

ROOM = "workshop"


def _node(tmp_path: Path, events: list[dict[str, Any]]) -> Node:
    profile = Profile.open(tmp_path / "ann")
    identity = Identity.load_or_create(tmp_path / "ann")
    config = NodeConfig(handle="ann", room=ROOM, address="127.0.0.1", info_port=0)
    return Node(config, profile, identity, events.append)


def test_a_holder_that_announces_itself_after_the_check_still_stops_the_start(
    tmp_path: Path,
) -> None:
    """Nobody held the handle during the check; the holder's advert arrived just before we
    registered: a clear handle_taken error and exit status 2, not a crash."""
    events: list[dict[str, Any]] = []
    node = _node(tmp_path, events)
    holder = Advert(
        handle="Ann",
        room=ROOM,
        address="192.0.2.7",
        id_key=Identity.generate().key,
        curve_key=bytes(32),
        router_port=47101,
        pub_port=47102,
        mentor=False,
        priority=0,
        started_at=1.0,
    )

    async def nothing(*_args: Any, **_kwargs: Any) -> None:
        return None

    async def taken(*_args: Any, **_kwargs: Any) -> None:
        raise HandleTaken("ann", holder)

    node.discovery.start = nothing  # type: ignore[method-assign]
    node.discovery.find_conflict = nothing  # type: ignore[method-assign]
    node.discovery.register = taken  # type: ignore[method-assign]
    node.discovery.close = nothing  # type: ignore[method-assign]
    queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
    try:
        status = asyncio.run(asyncio.wait_for(node.run(queue), 10))
    finally:
        node.profile.close()
    assert status == 2
    errors = [e for e in events if e["ev"] == "error"]
    assert [e["code"] for e in errors] == ["handle_taken"]
    assert "192.0.2.7" in errors[0]["message"]
    assert not any(e["ev"] == "ready" for e in events)


def _advert(handle: str, curve_public: bytes, port: int, started_at: float, epoch: int) -> Advert:
    return Advert(
        handle=handle,
        room=ROOM,
        address="127.0.0.1",
        id_key=Identity.generate().key,
        curve_key=curve_public,
        router_port=port,
        pub_port=port,
        mentor=False,
        priority=0,
        started_at=started_at,
        broker_epoch=epoch,
        broker_since=started_at if epoch else 0.0,
    )


def test_a_node_that_refuses_sends_us_to_the_broker_the_room_advertises(
    tmp_path: Path,
) -> None:
    """Cold start: we elected bob from the adverts heard so far, but bob joined carol's
    relay meanwhile and refuses us ("not_broker"). Once carol's broker advert is in, the
    first refusal sends us to her; bob is not asked again until a connect timeout."""
    _elect_bob_who_answers(tmp_path, redirect=False)


def test_a_node_that_has_a_broker_redirects_us_there(tmp_path: Path) -> None:
    """The same, but bob names his broker in his answer: we go to carol even though her
    advert has not reached us (in a start-up storm, mDNS updates come late)."""
    _elect_bob_who_answers(tmp_path, redirect=True)


def _elect_bob_who_answers(tmp_path: Path, redirect: bool) -> None:
    events: list[dict[str, Any]] = []
    node = _node(tmp_path, events)
    ctx: zmq.Context[zmq.Socket[Any]] = zmq.Context()
    keys = {name: zmq.curve_keypair() for name in ("bob", "carol")}
    servers = {}
    for name, (public, secret) in keys.items():
        sock = ctx.socket(zmq.ROUTER)
        sock.curve_server = True
        sock.curve_publickey, sock.curve_secretkey = public, secret
        servers[name] = (sock, sock.bind_to_random_port("tcp://127.0.0.1"))
    bob = _advert("bob", z85.decode(keys["bob"][0]), servers["bob"][1], 1.0, epoch=0)
    carol = _advert("carol", z85.decode(keys["carol"][0]), servers["carol"][1], 2.0, epoch=1)
    heard: dict[str, Advert] = {"bob": bob}  # bob started first: the one we elect

    async def nothing(*_args: Any, **_kwargs: Any) -> None:
        return None

    for method in ("start", "find_conflict", "register", "close", "update", "reannounce"):
        setattr(node.discovery, method, nothing)
    node.discovery.peers = lambda: dict(heard)  # type: ignore[method-assign]

    async def scenario() -> tuple[int, wire.Message]:
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        running = asyncio.create_task(node.run(queue))
        bob_sock, carol_sock = servers["bob"][0], servers["carol"][0]
        hellos_at_bob = 0
        try:
            while True:  # bob: refuse every Hello, after carol's advert has arrived
                rid, *frames = await asyncio.to_thread(_recv, bob_sock)
                if isinstance(wire.decode(frames)[0], wire.Hello):
                    hellos_at_bob += 1
                    answer: wire.Message
                    if redirect:  # carol's advert never arrives
                        answer = wire.Redirect(
                            broker_key=carol.id_key,
                            curve_key=carol.curve_key,
                            address=carol.address,
                            router_port=carol.router_port,
                            epoch=1,
                        )
                    else:
                        heard["carol"] = carol
                        answer = wire.Refused(code="not_broker", message="not the broker")
                    bob_sock.send_multipart([rid, *wire.encode(answer)])
                    break
            rid, *frames = await asyncio.to_thread(_recv, carol_sock)
            while bob_sock.poll(0):  # anything bob got meanwhile
                _recv(bob_sock)
                hellos_at_bob += 1
            return hellos_at_bob, wire.decode(frames)[0]
        finally:
            await queue.put(None)
            await asyncio.wait_for(running, 10)

    try:
        hellos_at_bob, first_at_carol = asyncio.run(asyncio.wait_for(scenario(), 20))
    finally:
        node.profile.close()
        for sock, _port in servers.values():
            sock.close(0)
        ctx.term()
    assert isinstance(first_at_carol, wire.Hello)
    assert hellos_at_bob == 1
    connecting = [e["text"] for e in events if e.get("state") == "connecting"]
    carol_named = "127.0.0.1" if redirect else "carol"  # unknown to us but for bob's word
    assert connecting == ["connecting to broker bob", f"connecting to broker {carol_named}"]


def _recv(sock: zmq.Socket[Any]) -> list[bytes]:
    if not sock.poll(10_000):
        raise TimeoutError("nothing arrived")
    return sock.recv_multipart()
