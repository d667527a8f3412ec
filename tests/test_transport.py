"""ZeroMQ adapter: a CURVE client's key reaches the router (loopback)."""

from __future__ import annotations

import asyncio

import zmq
from zmq.utils import z85

from lanchat.transport import BrokerLink, Transport


def test_the_router_learns_the_key_a_client_authenticated_with() -> None:
    server_public, server_secret = (z85.decode(k) for k in zmq.curve_keypair())
    client_public, client_secret = (z85.decode(k) for k in zmq.curve_keypair())

    async def scenario() -> tuple[bytes, list[bytes]]:
        transport = Transport("127.0.0.1", server_public, server_secret)
        transport.start(info_port=0)
        link = BrokerLink(
            transport.ctx,
            "127.0.0.1",
            transport.router_port,
            server_public,
            client_public,
            client_secret,
        )
        try:
            await link.send([b"hello"])
            incoming = await asyncio.wait_for(transport.recv_router(), 10)
            return incoming.transport_key, incoming.frames
        finally:
            link.close()
            transport.close()

    assert asyncio.run(scenario()) == (client_public, [b"hello"])
