"""Command line: parse arguments, open the profile, pick a front end. One composition path."""

from __future__ import annotations

import argparse
import gc
import logging
import sys
from pathlib import Path

from lanchat import __version__

__all__ = ["main"]

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
  lanchat --room-code 7KQ2-M9XD-R4TB    trust the mentors of the code on the mentor's screen
  lanchat --connect 192.168.1.20        where multicast is blocked: join via that laptop
  lanchat --headless --handle bot       JSON lines on stdin/stdout (docs/headless.md)
  lanchat doctor                        explain why you see nobody
  lanchat bundle                        (online) fetch lanchat for every OS, for a room
                                        without internet
  lanchat serve-install                 hand lanchat to the laptops on this LAN

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
        "--room-code",
        metavar="CODE",
        help="the room code a mentor's screen shows: trust the mentors it names "
        "(default: the first ones seen)",
    )
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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["doctor"]:
        from lanchat.doctor import main as doctor_main

        return doctor_main(argv[1:])
    if argv[:1] == ["bundle"]:
        from lanchat.bundle import main as bundle_main

        return bundle_main(argv[1:])
    if argv[:1] == ["serve-install"]:
        from lanchat.installserver import main as serve_main

        return serve_main(argv[1:])
    args = build_parser().parse_args(argv)
    # Start-up (imports, classes, keys) allocates some 30,000 objects and frees almost
    # none: the cyclic collector's passes over them are 3 % of the start-up's CPU for
    # nothing. The node turns it back on once started (see Node._startup).
    gc.disable()
    try:
        if args.headless:
            # Diagnostics to stderr; the interactive screen logs to <profile>/lanchat.log.
            logging.basicConfig(
                level=logging.DEBUG if args.verbose else logging.WARNING,
                stream=sys.stderr,
                format="%(asctime)s %(name)s %(levelname)s %(message)s",
            )
            return _headless(args)
        from lanchat.ui.app import run_interactive

        return run_interactive(args)
    finally:
        gc.enable()


def _headless(args: argparse.Namespace) -> int:
    from lanchat import oscompat
    from lanchat.headless import EventWriter, run_headless
    from lanchat.profile_setup import prepare

    emit = EventWriter(sys.stdout)
    node = prepare(args, emit, args.handle)
    if isinstance(node, int):
        return node
    try:
        return oscompat.run(run_headless(node, emit))
    finally:
        node.profile.close()
