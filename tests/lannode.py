"""Real `lanchat --headless` processes on a virtual LAN, driven like a bot would."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

from vlan import VirtualLan, reader_for

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from pathlib import Path

Event = dict[str, Any]
WAIT_S = 15.0


class LanNode:
    """One headless node in host ``host`` of ``lan``."""

    def __init__(
        self,
        lan: VirtualLan,
        host: int,
        handle: str,
        profile: Path,
        extra: Sequence[str] = (),
        python: Sequence[str] = (sys.executable,),
        env: dict[str, str] | None = None,
    ) -> None:
        self.lan = lan
        self.host = host
        self.handle = handle
        self.profile = profile
        argv = [
            *python,  # another interpreter (Windows CPython in Wine) with its own environment
            "-m",
            "lanchat",
            "--headless",
            "--handle",
            handle,
            "--profile",
            str(profile),
            *extra,
        ]
        self.stderr_path = profile.parent / f"{profile.name}.stderr"
        with self.stderr_path.open("ab") as err:
            self.proc = lan.spawn(
                host, argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, env=env
            )
        self.events = reader_for(self.proc.stdout)

    def send(self, **cmd: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        self.proc.stdin.flush()

    def send_raw(self, line: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line)
        self.proc.stdin.flush()

    def wait(
        self, ev: str, pred: Callable[[Event], bool] = lambda e: True, timeout: float = WAIT_S
    ) -> Event:
        return self.events.wait_for(lambda e: e.get("ev") == ev and pred(e), timeout)

    def seen(self, ev: str) -> list[Event]:
        return [e for e in self.events.seen if e.get("ev") == ev]

    def quit(self, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            with contextlib.suppress(BrokenPipeError, OSError):
                self.send(cmd="quit")
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        self.proc.kill()  # SIGKILL
        self.proc.wait(timeout=5)

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")


def start_nodes(
    lan: VirtualLan,
    tmp: Path,
    handles: Sequence[str],
    extra: dict[str, Sequence[str]] | None = None,
) -> list[LanNode]:
    extra = extra or {}
    return [LanNode(lan, i + 1, h, tmp / h, extra.get(h, ())) for i, h in enumerate(handles)]


def mentored_room(lan: VirtualLan, tmp: Path) -> tuple[LanNode, LanNode, LanNode]:
    """ann (a mentor, hence the broker), ben and cat on hosts 1-3, all connected."""
    nodes = start_nodes(lan, tmp, ["ann", "ben", "cat"], extra={"ann": ["--mentor"]})
    wait_connected(nodes, expect="ann")
    ann, ben, cat = nodes
    return ann, ben, cat


def wait_connected(
    nodes: Sequence[LanNode], timeout: float = WAIT_S, expect: str | None = None
) -> str:
    """Every node reports a broker and sees all the others; returns the broker's handle.

    With ``expect``, also wait until every node is on that broker (a mentor may take over
    from a student broker that is still settling, or two brokers may merge).
    """
    for node in nodes:
        node.wait("broker", timeout=timeout)
    for node in nodes:
        want = {n.handle for n in nodes} - {node.handle}
        got: set[str] = set()
        while not want <= got:
            got.add(node.wait("peer_up", timeout=timeout)["handle"])
    deadline = time.monotonic() + timeout
    while True:
        # A node may have been told of a first broker before a handover or merge.
        final = {n.seen("broker")[-1]["handle"] for n in nodes}
        if final == {expect} or (expect is None and len(final) == 1):
            return final.pop()
        if time.monotonic() > deadline:
            raise AssertionError(f"brokers do not agree: {final} (expected {expect})")
        for node in nodes:
            if node.seen("broker")[-1]["handle"] != expect:
                with contextlib.suppress(TimeoutError):
                    node.wait("broker", timeout=0.3)


def wait_online(node: LanNode, handles: set[str], timeout: float = WAIT_S) -> None:
    """Ask ``who`` until exactly ``handles`` are online (a converging roster, not one event)."""
    deadline = time.monotonic() + timeout
    last: set[str] = set()
    while time.monotonic() < deadline:
        node.send(cmd="who")
        last = {p["handle"] for p in node.wait("who", timeout=timeout)["peers"]}
        if last == handles:
            return
        # The next roster change, or a short pause before asking again.
        with contextlib.suppress(TimeoutError):
            node.wait("peer_up", timeout=0.3)
    raise AssertionError(f"{node.handle} sees {sorted(last)}, wanted {sorted(handles)}")
