"""``--connect HOST[:PORT]``: where multicast does not reach, ask that node which broker it
uses (its info port answers), and go there; again whenever we have no broker."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Final

from lanchat.core.membership import Phase
from lanchat.room.link import Target

if TYPE_CHECKING:
    from lanchat.ports import RoomTransport
    from lanchat.room.context import RoomContext
    from lanchat.room.membership import Membership
    from lanchat.room.peers import Peers
    from lanchat.room.status import NodeStatus

__all__ = ["connect_direct"]

CONNECT_RETRY_S: Final = 2.0  # ask the node again after this long
CONNECT_CHECK_S: Final = 1.0  # how often to look whether we still have a broker
ROSTER_WAIT_S: Final = 0.5  # a roster arrived: its successor is being tried


async def connect_direct(
    ctx: RoomContext,
    transport: RoomTransport,
    membership: Membership,
    peers: Peers,
    status: NodeStatus,
    stopped: asyncio.Event,
) -> None:
    assert ctx.cfg.connect is not None
    host, port = ctx.cfg.connect
    while not stopped.is_set():
        if membership.welcomed():
            await asyncio.sleep(CONNECT_CHECK_S)
            continue
        if peers.roster:
            await asyncio.sleep(ROSTER_WAIT_S)
            if membership.link is not None:
                continue
        try:
            info = await transport.ask_info(host, port, timeout_s=CONNECT_RETRY_S)
            broker = info.get("broker") or {
                "key": info["key"],
                "curve": info["curve"],
                "address": info["address"],
                "router_port": info["router_port"],
            }
            if info.get("room") != ctx.cfg.room:
                ctx.error(
                    "wrong_room", f"{host} is in room {info.get('room')!r}, not {ctx.cfg.room!r}"
                )
            membership.connect_to(
                Target(
                    key=bytes.fromhex(broker["key"]),
                    curve_key=bytes.fromhex(broker["curve"]),
                    address=str(broker["address"]),
                    router_port=int(broker["router_port"]),
                )
            )
        except (TimeoutError, KeyError, ValueError, TypeError):
            status.set(Phase.CONNECTING, f"no answer from {host}:{port}; retrying")
        await asyncio.sleep(CONNECT_RETRY_S)
