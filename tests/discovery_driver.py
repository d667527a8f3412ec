"""Run one Discovery on a (virtual) host, driven by JSON lines; for tests/test_discovery_lan.py.

    python discovery_driver.py --advert '{"handle": "ann", ...}' [--register]

stdin commands (one JSON object per line), each answered on stdout:
    {"cmd": "register"}                      -> {"ev": "registered", "t0": .., "t": ..}
    {"cmd": "update", "changes": {...}}      -> {"ev": "updated", ...}
    {"cmd": "reannounce"}                    -> {"ev": "reannounced"}
    {"cmd": "disown"}                        -> {"ev": "disowned"}
    {"cmd": "find_conflict", "handle": h, "key": hex, "wait_s": s}
                                -> {"ev": "conflict", "advert": {...} | null, "elapsed": s}
    {"cmd": "peers"}                         -> {"ev": "peers", "peers": {handle: advert}}
    {"cmd": "close"}                         -> {"ev": "closing", "t": ..} then {"ev": "closed", ..}
Events: {"ev": "seen", "advert": {...}, "t": ..} and {"ev": "gone", "handle": h, "t": ..}.
Times are time.monotonic(), which all namespaces of one machine share.
EOF on stdin or SIGTERM closes cleanly (goodbye packets).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import signal
import sys
import time
from typing import Any

from lanchat.core.advert import Advert
from lanchat.discovery import Discovery, DiscoveryEvent, PeerSeen

_KEY_FIELDS = ("id_key", "curve_key")


def advert_to_json(advert: Advert) -> dict[str, Any]:
    data = dataclasses.asdict(advert)
    for name in _KEY_FIELDS:
        data[name] = data[name].hex()
    return data


def advert_from_json(data: dict[str, Any]) -> Advert:
    fields = dict(data)
    for name in _KEY_FIELDS:
        if name in fields:
            fields[name] = bytes.fromhex(fields[name])
    return Advert(**fields)


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"ev": event, "t": time.monotonic(), **fields}), flush=True)


def on_event(event: DiscoveryEvent) -> None:
    if isinstance(event, PeerSeen):
        emit("seen", advert=advert_to_json(event.advert))
    else:
        emit("gone", handle=event.handle)


async def handle(discovery: Discovery, advert: Advert, command: dict[str, Any]) -> Advert:
    cmd = command.get("cmd")
    if cmd == "register":
        t0 = time.monotonic()
        await discovery.register(advert)
        emit("registered", t0=t0)
    elif cmd == "update":
        changes = advert_to_json(advert) | command["changes"]
        advert = advert_from_json(changes)
        t0 = time.monotonic()
        await discovery.update(advert)
        emit("updated", t0=t0, advert=advert_to_json(advert))
    elif cmd == "reannounce":
        await discovery.reannounce()
        emit("reannounced")
    elif cmd == "disown":
        discovery.disown()
        emit("disowned")
    elif cmd == "find_conflict":
        t0 = time.monotonic()
        found = await discovery.find_conflict(
            command["handle"], bytes.fromhex(command["key"]), command.get("wait_s", 0.35)
        )
        emit(
            "conflict",
            advert=None if found is None else advert_to_json(found),
            elapsed=time.monotonic() - t0,
        )
    elif cmd == "peers":
        emit(
            "peers",
            peers={h: advert_to_json(a) for h, a in discovery.peers().items()},
            malformed=discovery.malformed_count,
            foreign=discovery.foreign_count,
        )
    else:
        emit("error", message=f"unknown command {command!r}")
    return advert


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--advert", required=True, help="Advert as JSON (keys in hex)")
    parser.add_argument("--register", action="store_true", help="register right after start")
    args = parser.parse_args()
    advert = advert_from_json(json.loads(args.advert))

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    discovery = Discovery(advert.address, on_event)
    try:
        await discovery.start()
        emit("started")
        if args.register:
            advert = await handle(discovery, advert, {"cmd": "register"})
        stopping = asyncio.ensure_future(stop.wait())
        while True:
            reading = asyncio.ensure_future(reader.readline())
            await asyncio.wait({reading, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if stopping.done():
                reading.cancel()
                break
            line = reading.result()
            if not line:
                break
            command = json.loads(line)
            if command.get("cmd") == "close":
                break
            advert = await handle(discovery, advert, command)
        stopping.cancel()
    finally:
        emit("closing")
        await discovery.close()
        emit("closed")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
