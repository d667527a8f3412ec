"""Command line: parse arguments, open the profile, pick a front end. One composition path."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from lanchat import __version__

__all__ = ["main"]

EXIT_USAGE = 2

DESCRIPTION = """\
LAN-only, zero-configuration chat. Run it on every laptop in the room: peers find each
other over mDNS, one of them relays (elected automatically, replaced when it leaves), and
private chats need the other side's consent and are end-to-end encrypted.
"""

EPILOG = """\
examples:
  lanchat                               start the chat (asks for a handle the first time)
  lanchat --handle ada --mentor         join as mentor "ada"
  lanchat --room robotics               a separate room for a second workshop
  lanchat --connect 192.168.1.20        where multicast is blocked: join via that laptop
  lanchat --headless --handle bot       JSON lines on stdin/stdout (docs/headless.md)
  lanchat doctor                        explain why you see nobody

Your identity, friends and history live in a profile directory (see --profile).
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lanchat",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"lanchat {__version__}")
    p.add_argument("--handle", metavar="NAME", help="your pseudonym (1-32 letters, digits, _ - .)")
    p.add_argument(
        "--profile",
        metavar="DIR",
        type=Path,
        help="profile directory (default: the per-user data directory)",
    )
    p.add_argument("--mentor", action="store_true", help="advertise yourself as a mentor")
    p.add_argument("--room", metavar="ROOM", help="join this room instead of the default one")
    p.add_argument(
        "--interface", metavar="IP", help="use this local address or interface for the LAN"
    )
    p.add_argument(
        "--connect",
        metavar="HOST[:PORT]",
        help="join via this laptop directly (when multicast discovery is blocked)",
    )
    p.add_argument("--headless", action="store_true", help="JSON lines on stdin/stdout")
    p.add_argument("--verbose", "-v", action="store_true", help="log diagnostics to stderr")
    return p


def parse_connect(value: str) -> tuple[str, int]:
    from lanchat.netif import is_private_or_local
    from lanchat.transport import DEFAULT_INFO_PORT

    host, _, port_text = value.rpartition(":") if value.count(":") == 1 else (value, "", "")
    host = host or value
    port = DEFAULT_INFO_PORT
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"--connect: {port_text!r} is not a port number")
        port = int(port_text)
    try:
        address = socket.gethostbyname(host)
    except OSError:
        raise ValueError(f"--connect: cannot resolve {host!r}") from None
    if not is_private_or_local(address):
        raise ValueError(
            f"--connect: {address} is not a local-network address; lanchat never talks "
            "beyond the LAN"
        )
    return address, port


def _local_address_towards(host: str) -> str | None:
    """The local address the OS would use to reach ``host`` (sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect((host, 9))
            return str(s.getsockname()[0])
        except OSError:
            return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["doctor"]:
        from lanchat.doctor import main as doctor_main

        return doctor_main(argv[1:])
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    if args.headless:
        return _headless(args)
    from lanchat.ui.app import run_interactive

    return run_interactive(args)


def _fail(emit: Any, code: str, message: str, status: int = EXIT_USAGE) -> int:
    emit({"ev": "error", "t": round(time.time(), 6), "code": code, "message": message})
    return status


def prepare(args: argparse.Namespace, emit: Any, handle: str | None) -> Any:
    """Open the profile and identity and build the Node; an int is an exit status."""
    from lanchat.core.handles import (
        DEFAULT_ROOM,
        HandleError,
        RoomError,
        validate_handle,
        validate_room,
    )
    from lanchat.identity import Identity, IdentityError
    from lanchat.netif import NetifError
    from lanchat.node import Node, NodeConfig
    from lanchat.store import Profile, ProfileError, ProfileLocked, default_profile_dir

    try:
        room = validate_room(args.room or DEFAULT_ROOM)
        connect = parse_connect(args.connect) if args.connect else None
    except (RoomError, ValueError) as exc:
        return _fail(emit, "bad_command", str(exc))
    directory = args.profile or default_profile_dir()
    try:
        profile = Profile.open(directory)
    except ProfileLocked as exc:
        return _fail(emit, "profile_locked", str(exc))
    except ProfileError as exc:
        return _fail(emit, "profile_error", str(exc))
    try:
        identity = Identity.load_or_create(directory)
        handle = handle or profile.state.get_setting("handle")
        if not handle:
            profile.close()
            return _fail(emit, "bad_command", "no handle: pass --handle NAME")
        try:
            validate_handle(handle)
        except HandleError as exc:
            profile.close()
            return _fail(emit, "bad_command", str(exc))
        if profile.state.get_setting("handle") != handle:
            profile.state.set_setting("handle", handle)
        address = _pick_address(args.interface, connect)
    except IdentityError as exc:
        profile.close()
        return _fail(emit, "profile_error", str(exc))
    except NetifError as exc:
        profile.close()
        return _fail(emit, "network", str(exc), 1)
    config = NodeConfig(
        handle=handle, room=room, address=address, mentor=args.mentor, connect=connect
    )
    return Node(config, profile, identity, emit)


def _pick_address(interface: str | None, connect: tuple[str, int] | None) -> str:
    from lanchat.netif import NoLanInterface, choose_address

    if interface:
        return choose_address(interface).address
    if connect is not None:
        towards = _local_address_towards(connect[0])
        if towards:
            return towards
    try:
        return choose_address(None).address
    except NoLanInterface:
        if os.environ.get("LANCHAT_ALLOW_LOOPBACK") == "1":
            return "127.0.0.1"
        raise


def _headless(args: argparse.Namespace) -> int:
    from lanchat.headless import EventWriter, run_headless

    emit = EventWriter(sys.stdout)
    node = prepare(args, emit, args.handle)
    if isinstance(node, int):
        return node
    try:
        return asyncio.run(run_headless(node, emit))
    finally:
        node.profile.close()


def login_name() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "guest"
