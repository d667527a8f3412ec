"""A pyre (Python Zyre) node driven by JSON lines, shaped like ``lanchat --headless``.

Used by benchmarks/compare_pyre.py so that both chats are driven and measured the
same way: commands on stdin, one event per stdout line (flushed), every event with
``"ev"`` and ``"t"`` (Unix time when this process emitted it).

    python3 benchmarks/pyre_node.py --handle NAME [--group CHAT]

Events: ``started`` (after ``Pyre.start()`` returned; the counterpart of lanchat's
``status discovering``), ``enter``/``exit`` (a peer appeared/expired), ``join``/``leave``
(a peer joined/left a group), ``public`` (a SHOUT in our group, with ``from``, ``text``,
``sent_t``), ``error``.

Commands: ``{"cmd":"say","text":T}`` shouts ``{"text":T,"sent_t":now}`` to the group;
``{"cmd":"quit"}``, EOF on stdin, SIGTERM and SIGINT stop the node politely.

Needs ``pip install zeromq-pyre==0.3.4`` (the ``bench`` extra).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from typing import Any

import zmq

try:
    from pyre import Pyre
except ImportError:  # pragma: no cover - reported to the harness
    sys.stdout.write(json.dumps({"ev": "error", "t": time.time(), "code": "no_pyre"}) + "\n")
    sys.stdout.flush()
    raise SystemExit(3) from None


class _Stop(Exception):
    pass


def _emit(ev: str, **fields: Any) -> None:
    fields = {"ev": ev, "t": round(time.time(), 6), **fields}
    sys.stdout.write(json.dumps(fields, ensure_ascii=False, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def _on_signal(signum: int, frame: object) -> None:
    raise _Stop


def _handle_event(frames: list[bytes], group: str) -> None:
    kind = frames[0].decode()
    name = frames[2].decode("utf-8", "replace")
    if kind == "SHOUT":
        if frames[3].decode() != group:
            return
        try:
            body = json.loads(frames[4])
        except (ValueError, IndexError):
            return
        _emit("public", **{"from": name}, text=body.get("text"), sent_t=body.get("sent_t"))
    elif kind == "ENTER":
        _emit("enter", handle=name)
    elif kind == "EXIT":
        _emit("exit", handle=name)
    elif kind in ("JOIN", "LEAVE"):
        _emit(kind.lower(), handle=name, group=frames[3].decode())
    elif kind == "WHISPER":
        _emit("whisper", **{"from": name})


def _command(node: Pyre, raw: bytes, group: str) -> bool:
    """Run one stdin line; False when it asks to quit."""
    try:
        cmd = json.loads(raw)
    except ValueError:
        _emit("error", code="bad_command", message="not valid JSON")
        return True
    if not isinstance(cmd, dict):
        return True
    what = cmd.get("cmd")
    if what == "say":
        body = json.dumps({"text": cmd.get("text", ""), "sent_t": round(time.time(), 6)})
        node.shout(group, body.encode())
    elif what == "quit":
        return False
    else:
        _emit("error", code="bad_command", message=f"unknown command {what!r}")
    return True


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--handle", required=True)
    ap.add_argument("--group", default="CHAT")
    args = ap.parse_args()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    node = Pyre(args.handle)
    node.join(args.group)  # before start(): the HELLO carries the group
    node.start()
    _emit("started", handle=args.handle)

    inbox = node.socket()
    stdin = sys.stdin.fileno()
    poller = zmq.Poller()
    poller.register(inbox, zmq.POLLIN)
    poller.register(stdin, zmq.POLLIN)
    pending = b""
    running = True
    try:
        while running:
            ready = dict(poller.poll(500))
            if ready.get(inbox):
                # Drain everything already queued before looking at stdin again.
                while True:
                    try:
                        frames = inbox.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    _handle_event(frames, args.group)
            if ready.get(stdin):
                chunk = os.read(stdin, 65536)
                if not chunk:
                    break
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for raw in lines:
                    if raw.strip() and not _command(node, raw, args.group):
                        running = False
                        break
    except (_Stop, KeyboardInterrupt):
        pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        node.stop()  # a port-0 beacon: the others drop us at once
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
