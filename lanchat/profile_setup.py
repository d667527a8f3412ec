"""From command-line settings to a ready Node: profile, identity, handle, LAN address.

Shared by both front ends (headless and the interactive screen), so neither imports the
other nor ``lanchat.cli``. Start-up failures are reported as ``error`` events through
``emit`` (the headless contract, docs/headless.md) and returned as an exit status.
"""

from __future__ import annotations

import os
import socket
import time
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable

    from lanchat.node import Node

__all__ = ["EXIT_NETWORK", "EXIT_USAGE", "check_options", "login_name", "parse_connect", "prepare"]

EXIT_USAGE: Final = 2  # refused at start: bad arguments, profile locked or unreadable
EXIT_NETWORK: Final = 1  # no usable network


def prepare(
    args: argparse.Namespace,
    emit: Callable[[dict[str, Any]], None],
    handle: str | None,
    *,
    auto_read: bool = True,
) -> Node | int:
    """Open the profile and identity and build the Node; an int is an exit status.

    ``args`` carries the parsed options (room, connect, profile, interface, mentor);
    ``handle`` overrides the one the profile remembers. ``auto_read``: the node counts a
    private message as read once emitted (headless); the interactive screen says so itself.
    On failure an ``error`` event has been emitted and nothing stays open.
    """
    from lanchat.core.handles import HandleError, validate_handle
    from lanchat.identity import Identity, IdentityError
    from lanchat.netif import NetifError
    from lanchat.node import Node, NodeConfig
    from lanchat.store import Profile, ProfileError, ProfileLocked, default_profile_dir

    try:
        room, connect = check_options(args)
    except ValueError as exc:
        return _fail(emit, "bad_command", str(exc))
    room_code = getattr(args, "room_code", None)
    if room_code is not None:
        from lanchat.core.authority import normalise_code

        if normalise_code(room_code) is None:
            return _fail(
                emit,
                "bad_command",
                f"--room-code {room_code!r} is not a room code (12 letters and digits, "
                "as a mentor's screen shows it: XXXX-XXXX-XXXX)",
            )
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
    except OSError as exc:  # the identity files cannot be written (read-only, full)
        profile.close()
        return _fail(emit, "profile_error", f"profile {directory} cannot be used: {exc}")
    except NetifError as exc:
        profile.close()
        return _fail(emit, "network", str(exc), EXIT_NETWORK)
    except BaseException:
        profile.close()
        raise
    config = NodeConfig(
        handle=handle,
        room=room,
        address=address,
        mentor=args.mentor,
        connect=connect,
        auto_read=auto_read,
        room_code=room_code,
    )
    return Node(config, profile, identity, emit)


def check_options(args: argparse.Namespace) -> tuple[str, tuple[str, int] | None]:
    """The room and --connect target of ``args``; ValueError saying what is wrong."""
    from lanchat.core.handles import DEFAULT_ROOM, validate_room

    room = validate_room(args.room or DEFAULT_ROOM)
    connect = parse_connect(args.connect) if args.connect else None
    return room, connect


def parse_connect(value: str) -> tuple[str, int]:
    """``HOST[:PORT]`` of --connect as (address, port); ValueError unless it is on the LAN."""
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


def login_name() -> str:
    """The user's login name (a first handle to suggest), or "guest"."""
    import getpass  # only the interactive first run asks; headless starts never need it

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "guest"


def _fail(
    emit: Callable[[dict[str, Any]], None], code: str, message: str, status: int = EXIT_USAGE
) -> int:
    emit({"ev": "error", "t": round(time.time(), 6), "code": code, "message": message})
    return status


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


def _local_address_towards(host: str) -> str | None:
    """The local address the OS would use to reach ``host`` (sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect((host, 9))
            return str(s.getsockname()[0])
        except OSError:
            return None
