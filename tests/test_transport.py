"""ZeroMQ adapter on loopback: CURVE keys reach the router, readers miss nothing."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest
import zmq
from zmq.utils import z85

from lanchat.core.wire import MAX_FRAMES_BYTES
from lanchat.transport import (
    CURVE_FRAME_OVERHEAD_BYTES,
    HANDSHAKE_FRAME_BYTES,
    INFO_REQUEST,
    BrokerLink,
    Incoming,
    SocketReader,
    Transport,
    zap_reply,
)


def _keypair() -> tuple[bytes, bytes]:
    public, secret = zmq.curve_keypair()
    return z85.decode(public), z85.decode(secret)


def _client_link(
    transport: Transport, server_public: bytes, client_public: bytes, client_secret: bytes
) -> BrokerLink:
    """A client's sockets towards ``transport``, under the client's own CURVE keys."""
    return BrokerLink(
        transport.sync_ctx,
        "127.0.0.1",
        transport.router_port,
        server_public,
        client_public,
        client_secret,
    )


def test_the_router_learns_the_key_a_client_authenticated_with() -> None:
    server_public, server_secret = _keypair()
    client_public, client_secret = _keypair()

    async def scenario() -> tuple[bytes, list[bytes]]:
        transport = Transport("127.0.0.1", server_public, server_secret)
        transport.start(info_port=0)
        got: asyncio.Future[Incoming] = asyncio.get_running_loop().create_future()

        def on_router(batch: list[Incoming]) -> None:
            if not got.done():
                got.set_result(batch[0])

        transport.read_router(on_router)
        link = _client_link(transport, server_public, client_public, client_secret)
        try:
            assert link.send_nowait([b"hello"])
            incoming = await asyncio.wait_for(got, 10)
            return incoming.transport_key, incoming.frames
        finally:
            link.close()
            transport.close()

    assert asyncio.run(scenario()) == (client_public, [b"hello"])


def test_a_client_hears_its_answers_and_the_room() -> None:
    server_public, server_secret = _keypair()
    client_public, client_secret = _keypair()

    async def scenario() -> tuple[list[list[bytes]], list[list[bytes]]]:
        transport = Transport("127.0.0.1", server_public, server_secret)
        transport.start(info_port=0)
        answers: list[list[bytes]] = []
        room: list[list[bytes]] = []
        both = asyncio.Event()

        def on_router(batch: list[Incoming]) -> None:
            for incoming in batch:
                transport.send_router_nowait(incoming.rid, [b"answer", *incoming.frames])
                transport.publish_nowait([b"room", *incoming.frames])

        def heard(into: list[list[bytes]], probes: asyncio.Event | None) -> Any:
            def on_messages(batch: list[list[bytes]]) -> None:
                into.extend(m for m in batch if m[1] != b"probe")
                if probes is not None and any(m[1] == b"probe" for m in batch):
                    probes.set()
                if len(answers) == 3 and len(room) == 3:
                    both.set()

            return on_messages

        transport.read_router(on_router)
        link = _client_link(transport, server_public, client_public, client_secret)
        subscribed = asyncio.Event()
        sub_connected = asyncio.Event()
        link.start(heard(answers, None), lambda events: None)
        link.subscribe(transport.pub_port, heard(room, subscribed), lambda _: sub_connected.set())
        try:
            # A SUB hears only what is published after its subscription reached the PUB,
            # and nothing tells when that is: probe until the room echoes one.
            while not subscribed.is_set():
                link.send_nowait([b"probe"])
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(subscribed.wait(), 0.05)
            for i in range(3):
                assert link.send_nowait([b"%d" % i])
            await asyncio.wait_for(both.wait(), 10)
            await asyncio.wait_for(sub_connected.wait(), 10)  # the SUB's connection, reported
            return answers, room
        finally:
            link.close()
            transport.close()

    answers, room = asyncio.run(scenario())
    assert answers == [[b"answer", b"%d" % i] for i in range(3)]
    assert room == [[b"room", b"%d" % i] for i in range(3)]


def test_a_reader_sees_a_message_whose_signal_a_send_consumed() -> None:
    """The zmq descriptor is edge-triggered: a send may swallow the signal of a message
    that arrived meanwhile, and the reader must still deliver it without a new one."""

    async def scenario() -> list[bytes]:
        ctx: zmq.Context[zmq.Socket[Any]] = zmq.Context()
        a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
        a.bind("inproc://edge")
        b.connect("inproc://edge")
        got: list[bytes] = []
        arrived = asyncio.Event()

        def on_batch(batch: list[bytes]) -> None:
            got.extend(batch)
            arrived.set()

        reader = SocketReader(b, lambda: b.recv(zmq.NOBLOCK), on_batch)
        try:
            await asyncio.sleep(0)  # the reader's first look: nothing yet
            a.send(b"waiting")
            # The message is queued for b; b's own send now processes b's pending
            # commands, which clears the descriptor's signal before the loop sees it.
            b.send(b"ping")
            reader.after_send()
            await asyncio.wait_for(arrived.wait(), 5)
            return got
        finally:
            reader.close()
            a.close(0)
            b.close(0)
            ctx.term()

    assert asyncio.run(scenario()) == [b"waiting"]


def test_zap_lets_in_every_curve_key_under_its_own_name_and_refuses_other_mechanisms() -> None:
    key = bytes(range(32))

    def ask(mechanism: bytes, *credentials: bytes, version: bytes = b"1.0") -> list[bytes]:
        request = [b"peer", b"", version, b"7", b"lanchat", b"10.0.0.2", b"", mechanism]
        reply = zap_reply([*request, *credentials])
        assert reply is not None
        assert reply[:4] == [b"peer", b"", b"1.0", b"7"]
        return reply[4:]

    assert ask(b"CURVE", key) == [b"200", b"OK", z85.encode(key), b""]
    assert ask(b"NULL") == [b"200", b"OK", b"", b""]
    assert ask(b"PLAIN", b"user", b"password")[0] == b"400"
    assert ask(b"CURVE", key[:31])[0] == b"400"
    assert ask(b"CURVE", key, version=b"2.0")[0] == b"400"
    assert zap_reply([b"peer", b"not a delimiter", *[b""] * 6]) is None
    assert zap_reply([b"peer", b""]) is None


# ---------------------------------------------------------------- frame size limits

BIG = 100 * 1024 * 1024


def test_a_frame_over_the_limit_is_refused_and_the_router_keeps_working() -> None:
    server_public, server_secret = _keypair()
    client_public, client_secret = _keypair()
    other_public, other_secret = _keypair()

    async def scenario() -> list[list[bytes]]:
        transport = Transport("127.0.0.1", server_public, server_secret)
        transport.start(info_port=0)
        got: list[list[bytes]] = []
        arrived = asyncio.Event()

        def on_router(batch: list[Incoming]) -> None:
            got.extend(incoming.frames for incoming in batch)
            arrived.set()

        async def until(frames: list[bytes]) -> None:
            async with asyncio.timeout(20):
                while frames not in got:
                    arrived.clear()
                    await arrived.wait()

        transport.read_router(on_router)
        hostile = _client_link(transport, server_public, client_public, client_secret)
        honest = _client_link(transport, server_public, other_public, other_secret)
        try:
            largest = [b"x" * MAX_FRAMES_BYTES]  # the largest legitimate frame gets through
            assert hostile.send_nowait(largest)
            await until(largest)
            assert hostile.send_nowait([b"y" * (MAX_FRAMES_BYTES + 1)])
            assert hostile.send_nowait([b"z" * BIG])
            assert honest.send_nowait([b"still here"])
            await until([b"still here"])
            # The hostile client's connection was dropped; it may come back and behave.
            assert hostile.send_nowait([b"sorry"])
            await until([b"sorry"])
            return got
        finally:
            hostile.close()
            honest.close()
            transport.close()

    got = asyncio.run(scenario())
    assert all(len(frame) <= MAX_FRAMES_BYTES for frames in got for frame in frames)
    assert got.count([b"x" * MAX_FRAMES_BYTES]) == 1


def test_the_info_port_answers_its_one_small_request_only() -> None:
    server_public, server_secret = _keypair()

    async def scenario() -> list[bytes]:
        transport = Transport("127.0.0.1", server_public, server_secret)
        transport.start(info_port=0)
        asked = 0

        def advert() -> dict[str, int]:
            nonlocal asked
            asked += 1
            return {"n": asked}

        serving = asyncio.create_task(transport.serve_info(advert))
        hostile = transport.ctx.socket(zmq.DEALER)
        hostile.setsockopt(zmq.LINGER, 0)
        hostile.connect(f"tcp://127.0.0.1:{transport.info_port}")
        try:
            await hostile.send(b"z" * BIG)  # refused unread: the connection is dropped
            await hostile.send_multipart([b"info?", b"more"])
            await hostile.send(b"info!")
            await hostile.send(INFO_REQUEST)
            first = await asyncio.wait_for(hostile.recv(), 20)
            # Still answers the next client (and each request once).
            assert await transport.ask_info("127.0.0.1", transport.info_port, 20) == {"n": 2}
            assert asked == 2
            return [first]
        finally:
            hostile.close(linger=0)
            serving.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await serving
            transport.close()

    assert asyncio.run(scenario()) == [b'{"n": 1}']
    assert INFO_REQUEST == b"info?"


def test_every_room_socket_has_its_limit() -> None:
    server_public, server_secret = _keypair()
    transport = Transport("127.0.0.1", server_public, server_secret)

    async def scenario() -> dict[str, int]:
        transport.start(info_port=0)
        link = _client_link(transport, server_public, *_keypair())
        link.subscribe(transport.pub_port, lambda _: None, lambda _: None)
        assert link.sub is not None
        try:
            return {
                name: int(sock.getsockopt(zmq.MAXMSGSIZE))
                for name, sock in [
                    ("router", transport.router),
                    ("pub", transport.pub),
                    ("info", transport.info),
                    ("dealer", link.dealer),
                    ("sub", link.sub),
                ]
            }
        finally:
            link.close()
            transport.close()

    room = MAX_FRAMES_BYTES + CURVE_FRAME_OVERHEAD_BYTES
    assert asyncio.run(scenario()) == {
        "router": room,
        "pub": HANDSHAKE_FRAME_BYTES,
        "info": HANDSHAKE_FRAME_BYTES,
        "dealer": room,
        "sub": room,
    }


def test_a_loop_that_cannot_watch_sockets_is_named_as_the_problem() -> None:
    # Windows' default proactor loop has no add_reader; lanchat.oscompat.run avoids it.
    class NoReaders(asyncio.SelectorEventLoop):
        def add_reader(self, *_args: Any) -> None:
            raise NotImplementedError

    async def scenario() -> str:
        ctx: zmq.Context[zmq.Socket[Any]] = zmq.Context()
        sock = ctx.socket(zmq.PAIR)
        try:
            with pytest.raises(RuntimeError, match=r"oscompat\.run") as info:
                SocketReader(sock, lambda: sock.recv(zmq.NOBLOCK), lambda _batch: None)
            return str(info.value)
        finally:
            sock.close(0)
            ctx.term()

    with asyncio.Runner(loop_factory=NoReaders) as runner:
        assert "add_reader" in runner.run(scenario())
