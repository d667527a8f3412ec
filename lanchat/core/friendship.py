"""Friendship with one peer, as a pure state machine: an enum, a table, a step function.

The receiving node enforces it (see docs/friendship.md): a message from a peer that is not a
friend is dropped, and requests from a blocked peer are ignored, whatever the sender's UI did.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "LOCAL_MOVES",
    "REMOTE_MOVES",
    "TRANSITIONS",
    "Friendship",
    "IllegalTransition",
    "Move",
    "Notice",
    "Outcome",
    "apply",
    "arrives_as",
    "can_message",
    "is_silenced",
    "step",
]


class Friendship(StrEnum):
    """Our relation to one peer; the values are what the store keeps on disk."""

    NONE = "none"
    PENDING_OUT = "pending_out"  # we asked, they have not answered
    PENDING_IN = "pending_in"  # they asked, we have not answered
    FRIEND = "friend"
    BLOCKED = "blocked"


class Move(StrEnum):
    """What happened: a local user command, or (``GOT_*``) a friendship message from the peer."""

    REQUEST = "request"
    ACCEPT = "accept"
    REJECT = "reject"
    BLOCK = "block"
    UNBLOCK = "unblock"
    REMOVE = "remove"
    GOT_REQUEST = "got_request"
    GOT_ACCEPT = "got_accept"
    GOT_REJECT = "got_reject"


class Notice(StrEnum):
    """A friendship message to send to the peer; it arrives there as the matching ``GOT_*``."""

    REQUEST = "request"
    ACCEPT = "accept"
    REJECT = "reject"


REMOTE_MOVES: Final = frozenset({Move.GOT_REQUEST, Move.GOT_ACCEPT, Move.GOT_REJECT})
LOCAL_MOVES: Final = frozenset(Move) - REMOTE_MOVES

_F = Friendship
_M = Move

TRANSITIONS: Final[Mapping[tuple[Friendship, Move], Friendship]] = MappingProxyType(
    {
        (_F.NONE, _M.REQUEST): _F.PENDING_OUT,
        (_F.NONE, _M.GOT_REQUEST): _F.PENDING_IN,
        (_F.PENDING_OUT, _M.REQUEST): _F.PENDING_OUT,  # re-send
        (_F.PENDING_OUT, _M.REMOVE): _F.NONE,  # withdraw our request
        (_F.PENDING_OUT, _M.GOT_REQUEST): _F.FRIEND,  # both asked: mutual consent
        (_F.PENDING_OUT, _M.GOT_ACCEPT): _F.FRIEND,
        (_F.PENDING_OUT, _M.GOT_REJECT): _F.NONE,  # we may ask again
        (_F.PENDING_IN, _M.REQUEST): _F.FRIEND,  # asking back is accepting
        (_F.PENDING_IN, _M.ACCEPT): _F.FRIEND,
        (_F.PENDING_IN, _M.REJECT): _F.NONE,
        (_F.PENDING_IN, _M.GOT_REQUEST): _F.PENDING_IN,  # re-sent request
        (_F.PENDING_IN, _M.GOT_REJECT): _F.NONE,  # they withdrew their request
        (_F.FRIEND, _M.REMOVE): _F.NONE,
        (_F.FRIEND, _M.GOT_REQUEST): _F.FRIEND,  # they lost their state: answer with an accept
        (_F.FRIEND, _M.GOT_ACCEPT): _F.FRIEND,  # crossed or repeated accept
        (_F.FRIEND, _M.GOT_REJECT): _F.NONE,  # they removed us
        (_F.BLOCKED, _M.UNBLOCK): _F.NONE,
        **{(state, _M.BLOCK): _F.BLOCKED for state in Friendship},
        **{(_F.BLOCKED, move): _F.BLOCKED for move in REMOTE_MOVES},  # silently ignored
    }
)


class IllegalTransition(ValueError):
    """A move that makes no sense in the current state."""

    def __init__(self, state: Friendship, move: Move) -> None:
        super().__init__(_explain(state, move))
        self.state = state
        self.move = move


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of one move: the new state and what, if anything, to tell the peer."""

    state: Friendship
    send: Notice | None = None
    silenced: bool = False  # a message from a blocked peer: drop it without a word


def step(state: Friendship, move: Move) -> Friendship:
    """The state after ``move``; IllegalTransition if the table has no such pair."""
    try:
        return TRANSITIONS[state, move]
    except KeyError:
        raise IllegalTransition(state, move) from None


def apply(state: Friendship, move: Move) -> Outcome:
    """Like :func:`step`, plus the notice the node must send to the peer.

    Local moves send what they say (REMOVE is told as a reject so the peer's state follows;
    BLOCK and UNBLOCK are never told). A request received that leaves us friends is answered
    with an accept: it reaches a peer that lost its state, or one whose request crossed ours.
    """
    new = step(state, move)
    if state is Friendship.BLOCKED and move in REMOTE_MOVES:
        return Outcome(new, silenced=True)
    return Outcome(new, send=_notice(new, move))


def _notice(new: Friendship, move: Move) -> Notice | None:
    if move is Move.REQUEST:
        return Notice.REQUEST
    if move is Move.ACCEPT:
        return Notice.ACCEPT
    if move in (Move.REJECT, Move.REMOVE):
        return Notice.REJECT
    if move is Move.GOT_REQUEST and new is Friendship.FRIEND:
        return Notice.ACCEPT
    return None


def arrives_as(notice: Notice) -> Move:
    """The move a notice becomes at the peer."""
    return Move(f"got_{notice.value}")


def can_message(state: Friendship) -> bool:
    """Private messages flow only between friends (both directions are checked by receivers)."""
    return state is Friendship.FRIEND


def is_silenced(state: Friendship) -> bool:
    """Everything from this peer is dropped without telling them."""
    return state is Friendship.BLOCKED


_WHY: Final[Mapping[Move, str]] = {
    Move.REQUEST: "already friends",
    Move.ACCEPT: "no pending request from them",
    Move.REJECT: "no pending request from them",
    Move.UNBLOCK: "they are not blocked",
    Move.REMOVE: "not friends and no request of ours pending (to refuse theirs, reject)",
    Move.GOT_ACCEPT: "we sent them no request",
    Move.GOT_REJECT: "nothing of ours to reject",
}


def _explain(state: Friendship, move: Move) -> str:
    if state is Friendship.BLOCKED:
        reason = "they are blocked; unblock them first"
    else:
        reason = _WHY.get(move, f"not allowed while {state.value}")
    if move in REMOTE_MOVES:
        return f"unexpected {move.value.removeprefix('got_')} from peer: {reason}"
    return f"cannot {move.value}: {reason}"
