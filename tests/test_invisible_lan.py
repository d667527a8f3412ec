"""Invisible characters from a hostile client never reach a real node's events."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from lannode import start_nodes, wait_connected
from vlan import reader_for

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from vlan import VirtualLan

pytestmark = pytest.mark.lan
SLY = Path(__file__).with_name("sly_client.py")
INVISIBLE = frozenset(
    "\u200b\u200c\u200d\ufeff\u2060\u200e\u200f\u061c\u00ad\U000e0041\u2028\u2029\u202e"
)


def strings(value: Any) -> Iterator[str]:
    """Every string in an event: keys, values, inside lists and objects."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


def test_invisible_characters_never_reach_an_event(
    vlan: Callable[..., VirtualLan], tmp_path: Path
) -> None:
    lan = vlan(3)
    ann, ben = start_nodes(lan, tmp_path, ["ann", "ben"], extra={"ann": ["--mentor"]})
    assert wait_connected([ann, ben], expect="ann") == "ann"
    sly = lan.spawn(
        3,
        [sys.executable, str(SLY), lan.ip(1), "47100", "4"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=str(SLY.parent.parent),
    )
    steps = reader_for(sly.stdout)
    steps.wait_for(lambda s: s["step"] == "sent", 20)
    public = ben.wait("public", lambda e: e["from"] == "sly", timeout=20)
    assert public["text"] == "hello\n\n"  # the separators as newlines, nothing else
    ben.wait(
        "peer_status", lambda e: e["handle"] == "sly" and e["text"].strip() == "lunch", timeout=20
    )
    queue = ann.wait("queue", lambda e: any(x["who"] == "sly" for x in e["entries"]), timeout=20)
    assert [x["topic"] for x in queue["entries"] if x["who"] == "sly"] == ["loops\n\n"]
    for node in (ann, ben):
        node.send(cmd="who")
        node.wait("who", timeout=20)
    assert sly.wait(timeout=30) == 0
    for node in (ann, ben):
        for event in node.events.seen:
            leaked = {c for text in strings(event) for c in text} & INVISIBLE
            assert not leaked, (event, leaked)
