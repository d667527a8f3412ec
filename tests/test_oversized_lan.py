"""Oversized frames at a real broker: refused unread, memory flat, the room keeps chatting.

Also a benchmark: ``python3 -m pytest -q -s tests/test_oversized_lan.py`` prints the figures
quoted in docs/security.md ("Hostile input").
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from lannode import LanNode, start_nodes, wait_connected
from vlan import reader_for

if TYPE_CHECKING:
    from collections.abc import Callable

    from vlan import VirtualLan

pytestmark = pytest.mark.lan
FLOOD = Path(__file__).with_name("frame_flood.py")
CONNECTIONS, FRAMES, MEGABYTES = 5, 3, 100
RSS_LIMIT_MB = 100


def memory_mb(pid: int) -> dict[str, float]:
    """Resident memory now (VmRSS) and at its highest since the start (VmHWM), in MB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) / 1024
    return fields


def chat_once(speaker: LanNode, listener: LanNode, text: str) -> float:
    """Seconds from ``say`` to the listener's public event."""
    t0 = time.monotonic()
    speaker.send(cmd="say", text=text)
    listener.wait("public", lambda e: e["text"] == text, timeout=10)
    return time.monotonic() - t0


def test_oversized_frames_cost_the_broker_nothing_and_the_room_keeps_chatting(
    vlan: Callable[..., VirtualLan], tmp_path: Path
) -> None:
    lan = vlan(3)
    ann, ben = start_nodes(lan, tmp_path, ["ann", "ben"], extra={"ann": ["--mentor"]})
    assert wait_connected([ann, ben], expect="ann") == "ann"
    chat_once(ann, ben, "warm-up")
    before = memory_mb(ann.proc.pid)
    flooder = lan.spawn(
        3,
        [sys.executable, str(FLOOD), lan.ip(1), "47100", CONNECTIONS, FRAMES, MEGABYTES],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=str(FLOOD.parent.parent),
    )
    steps = reader_for(flooder.stdout)
    # While the flood runs, both ways through the broker.
    delays: list[float] = []
    n = 0
    while flooder.poll() is None and n < 400:
        n += 1
        speaker, listener = (ann, ben) if n % 2 else (ben, ann)
        delays.append(chat_once(speaker, listener, f"during {n}"))
    assert flooder.wait(timeout=120) == 0
    router = steps.wait_for(lambda s: s["step"] == "router", 5)
    info = steps.wait_for(lambda s: s["step"] == "info", 5)
    after = memory_mb(ann.proc.pid)
    chat_once(ben, ann, "after")
    figures = {
        "rss_before_mb": round(before["VmRSS"], 1),
        "peak_before_mb": round(before["VmHWM"], 1),
        "peak_after_mb": round(after["VmHWM"], 1),
        "rss_after_mb": round(after["VmRSS"], 1),
        "router": router,
        "info": info,
        "messages_during_flood": len(delays),
        "slowest_message_s": round(max(delays, default=0.0), 3),
    }
    print(json.dumps(figures))
    frames = CONNECTIONS * FRAMES
    assert router["cut"] == frames  # every one refused unread: the connection dropped
    assert info["cut"] == frames
    assert after["VmHWM"] < RSS_LIMIT_MB
    assert after["VmHWM"] - before["VmHWM"] < 10  # not even a 100 MB frame's worth, once
    assert len(delays) >= 2
    assert ann.proc.poll() is None
    assert ben.proc.poll() is None
