"""The command vocabulary: every ``cmd`` of the headless contract (docs/headless.md), named
once. The node dispatches on it, the TUI's command line builds commands from it and its
view model reads them back with it, so the three cannot drift apart. Pure.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Cmd"]


class Cmd(StrEnum):
    SAY = "say"
    MSG = "msg"
    HAND = "hand"
    REQUEST = "request"
    ACCEPT = "accept"
    REJECT = "reject"
    BLOCK = "block"
    UNBLOCK = "unblock"
    TRUST = "trust"
    WHO = "who"
    FRIENDS = "friends"
    HISTORY = "history"
    CLAIM = "claim"
    DONE = "done"
    QUEUE = "queue"
    SEND = "send"
    SHARE = "share"
    ACCEPT_FILE = "accept_file"
    DECLINE_FILE = "decline_file"
    TYPING = "typing"
    READ = "read"
    SET = "set"
    STATUS = "status"
    UNFRIEND = "unfriend"
    ROOMS = "rooms"
    ROOM = "room"
    SERVE_INSTALL = "serve_install"
    ADD_MENTOR = "add_mentor"
    QUIT = "quit"
