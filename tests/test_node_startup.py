"""Start-up races of a real Node in this process, with discovery's answers scripted."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

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
