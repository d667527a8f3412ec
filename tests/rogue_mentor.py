"""A modified lanchat node for tests: the real code, patched to do what a curious student
would try with ``--mentor`` (docs/security.md, "Roles and trust").

Usage: rogue_mentor.py -m lanchat ARGS... (the arguments of ``python -m lanchat``; LanNode
passes them that way). Patches:
- it keeps the mentor authority it made for itself, whatever the room's is;
- once in the room, it starts its own relay claiming a reign since 1970 and advertises it;
- it never gives that reign up (no merge, no handover);
- it prints every hand it sees in its own relay's queue, and every help-session text it can
  open, as {"rogue": ...} lines on stderr.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from lanchat.room import helpdesk, hosting, membership, trust


def _leak(what: str, **fields: Any) -> None:
    print(json.dumps({"rogue": what, **fields}), file=sys.stderr, flush=True)


def patch() -> None:
    trust.Trust._give_way = lambda self, other: None  # type: ignore[method-assign,assignment]
    membership.Membership.check_merge = lambda self: None  # type: ignore[method-assign]
    membership.Membership._maybe_hand_over = lambda self: None  # type: ignore[method-assign]

    start = hosting.Hosting.start

    def forged_start(self: hosting.Hosting, epoch: int) -> None:
        start(self, max(epoch, 50))
        assert self.relay is not None
        self.relay.since = 1.0  # "broker since 1970"

    hosting.Hosting.start = forged_start  # type: ignore[method-assign]

    on_welcome = membership.Membership.on_welcome

    def reign(self: membership.Membership, link: Any, msg: Any, now: float) -> None:
        on_welcome(self, link, msg, now)
        if self._hosting.relay is None:
            self._become_broker(now)

    membership.Membership.on_welcome = reign  # type: ignore[method-assign]

    on_help = helpdesk.Helpdesk.on_help_msg

    def read_help(self: helpdesk.Helpdesk, msg: Any) -> None:
        _leak("help_msg", hand=msg.hand_id)
        on_help(self, msg)

    helpdesk.Helpdesk.on_help_msg = read_help  # type: ignore[method-assign]

    from lanchat.core import helpqueue

    raise_hand = helpqueue.HelpQueue.raise_hand

    def log_hand(self: helpqueue.HelpQueue, hand: Any, key: bytes, handle: str, *a: Any) -> Any:
        _leak("hand", hand=hand.hand_id, anon=hand.anon, handle=handle)
        return raise_hand(self, hand, key, handle, *a)

    helpqueue.HelpQueue.raise_hand = log_hand  # type: ignore[method-assign]


def main() -> int:
    args = sys.argv[1:]
    if args[:2] == ["-m", "lanchat"]:
        args = args[2:]
    patch()
    from lanchat.cli import main as lanchat_main

    return lanchat_main(args)


if __name__ == "__main__":
    sys.exit(main())
