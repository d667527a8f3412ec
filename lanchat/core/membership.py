"""Membership: which broker a node is with, and when it must look for another. Pure.

Every rule a node follows about brokers lives here as a function of what it knows and of
``now`` (its monotonic clock, passed in): whom to join when it has no broker, when a broker
that does not answer or has gone silent is lost, when a settling student broker gives way
to a mentor, when two brokers that meet merge, and which redirects to follow. The glue
(``lanchat.room.membership``) feeds it adverts, rosters and link facts and carries out the
decisions; ``docs/election.md`` draws the phases.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Final

from lanchat.core import election

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence, Set

__all__ = [
    "ASLEEP_S",
    "BROKER_HUNG_S",
    "BROKER_TIMEOUT_S",
    "CONNECT_TIMEOUT_S",
    "ELECTION_WAIT_S",
    "SETTLE_S",
    "WELCOME_WAIT_S",
    "BecomeBroker",
    "Decision",
    "HostOwn",
    "IllegalPhase",
    "Join",
    "LinkFacts",
    "Phase",
    "WaitUntil",
    "back_to_same_broker",
    "check_phase",
    "choose_broker",
    "follow_redirect",
    "handover_target",
    "link_verdict",
    "merge_into",
]

# No Beat from a welcomed broker for this long, while its connection is down: it is gone.
BROKER_TIMEOUT_S: Final = 2.0
# ...or this long while its connection is up: ZMTP heartbeats (answered by the broker's
# libzmq thread, not its Python) say its host is there, only starved of CPU, and a host
# that vanishes drops the connection within transport.HEARTBEAT_TIMEOUT_MS.
BROKER_HUNG_S: Final = 8.0
CONNECT_TIMEOUT_S: Final = 2.0  # no Welcome for this long: try the next candidate
# ...unless its host took our connection (a busy broker authenticating a room of
# newcomers): leaving it would split the room, so it gets this long.
WELCOME_WAIT_S: Final = 8.0
# Nodes started at the same moment register within a few ms of each other: hear them this
# long before electing, so a cold start settles on one broker without a merge.
ELECTION_WAIT_S: Final = 0.15
# A student broker gives way to a mentor only in the first seconds of its reign.
SETTLE_S: Final = 3.0
ASLEEP_S: Final = 1.0  # no tick for this long: we were not running (lid, SIGSTOP, CPU)
WOKE_GRACE_S: Final = 2.0


class Phase(StrEnum):
    """Where a node stands; the ``state`` of its ``status`` events."""

    STARTING = "starting"
    DISCOVERING = "discovering"
    ELECTING = "electing"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    BROKER = "broker"
    OFFLINE = "offline"


_ANYWHERE = frozenset(Phase) - {Phase.STARTING, Phase.DISCOVERING}
# Once discovery runs, a node moves freely between electing, connecting, connected, broker
# and offline (failover, merge, handover, a link flap); it never goes back to discovering.
PHASE_MOVES: Final[dict[Phase, frozenset[Phase]]] = {
    Phase.STARTING: frozenset({Phase.DISCOVERING}),
    Phase.DISCOVERING: frozenset({Phase.ELECTING, Phase.OFFLINE}),
    **dict.fromkeys(_ANYWHERE, _ANYWHERE),
}


class IllegalPhase(ValueError):
    pass


def check_phase(before: Phase, after: Phase) -> Phase:
    """``after`` if a node may move there from ``before``; raises IllegalPhase otherwise."""
    if after != before and after not in PHASE_MOVES[before]:
        raise IllegalPhase(f"{before} -> {after}")
    return after


# ---- whom to join --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HostOwn:
    """We run the relay: our client side connects to it."""


@dataclass(frozen=True, slots=True)
class Join:
    """Connect to the node with this key (an advertised broker, the successor, or the
    election's winner)."""

    key: bytes
    why: str  # "advertised", "successor" or "elected"


@dataclass(frozen=True, slots=True)
class BecomeBroker:
    pass


@dataclass(frozen=True, slots=True)
class WaitUntil:
    """Too early to elect: decide again at ``when``."""

    when: float


Decision = HostOwn | Join | BecomeBroker | WaitUntil


def best_advertised(
    brokers: Iterable[election.BrokerClaim], gone: Set[bytes], besides: bytes = b""
) -> election.BrokerClaim | None:
    """The best broker the room's adverts name, leaving out the gone and ``besides``."""
    live = [b for b in brokers if b.epoch > 0 and b.key not in gone and b.key != besides]
    return min(live, key=election.BrokerClaim.rank) if live else None


def choose_broker(
    *,
    me: election.Candidate,
    hosting: bool,
    advertised: Iterable[election.BrokerClaim],
    succession: Sequence[election.Candidate],
    candidates: Iterable[election.Candidate],
    gone: Set[bytes],
    election_from: float,
    now: float,
) -> Decision:
    """A node with no broker link: whom to connect to.

    1. Our own relay, if we run one. 2. A broker the room advertises (no preemption: a
    working broker is joined, whoever it is). 3. The first live node of the last roster's
    succession (every node of the room reads the same roster). 4. After ELECTION_WAIT_S,
    the best candidate among the room's adverts and ourselves.
    """
    if hosting:
        return HostOwn()
    best = best_advertised(advertised, gone)
    if best is not None:
        return Join(best.key, "advertised")
    if succession:
        succ = election.successor(succession, gone)
        if succ is not None:
            return BecomeBroker() if succ.key == me.key else Join(succ.key, "successor")
    if now - election_from < ELECTION_WAIT_S:
        return WaitUntil(election_from + ELECTION_WAIT_S)
    winner = election.best_candidate([*(c for c in candidates if c.key not in gone), me])
    if winner is None or winner.key == me.key:
        return BecomeBroker()
    return Join(winner.key, "elected")


# ---- when a broker is lost -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LinkFacts:
    """What a node knows of its link to a broker."""

    started: float  # when we connected
    welcomed: bool
    reached: bool  # the connection is up (TCP, then CURVE): the broker's host is there
    refused_not_broker: int  # answers "not the broker" so far
    last_beat: float  # the broker's last relay or Beat


def link_verdict(link: LinkFacts, now: float) -> str | None:
    """Why the broker is lost (``"no answer"``, ``"heartbeat timeout"``), or None."""
    if not link.welcomed:
        # A node that answers "not the broker" is not busy: it gets the usual time.
        busy = link.reached and link.refused_not_broker == 0
        patience = WELCOME_WAIT_S if busy else CONNECT_TIMEOUT_S
        return "no answer" if now - link.started > patience else None
    silence = BROKER_HUNG_S if link.reached else BROKER_TIMEOUT_S
    return "heartbeat timeout" if now - link.last_beat > silence else None


def back_to_same_broker(
    *, why: str, now: float, last_tick: float, woke_at: float, broker_is_us: bool
) -> bool:
    """A dropped connection right after we were not running (lid, SIGSTOP, starved CPU):
    the broker most likely dropped us meanwhile and is still there, so reconnect to it
    rather than elect ourselves (a failed reconnect times out as usual)."""
    just_woke = now - last_tick > ASLEEP_S or now - woke_at < WOKE_GRACE_S
    return why == "connection closed" and just_woke and not broker_is_us


# ---- brokers that meet ------------------------------------------------------------------


def handover_target(
    *, i_am_mentor: bool, reign_s: float, mentors: Iterable[election.Candidate]
) -> election.Candidate | None:
    """A student broker gives way to a mentor who turned up while it was settling.

    Laptops started together do not all see each other before electing; a mentor among
    them should still end up as broker. Only in the first SETTLE_S of a reign, and only
    student -> mentor, so a running room never changes broker because a better laptop
    arrived (no preemption).
    """
    if i_am_mentor or reign_s > SETTLE_S:
        return None
    return election.best_candidate(mentors)


def merge_into(
    current: election.BrokerClaim, others: Iterable[election.BrokerClaim], gone: Set[bytes]
) -> election.BrokerClaim | None:
    """Two brokers in one room (a healed partition): the better broker to move to, if any.

    Both sides compare only facts fixed for a reign, so they reach the same verdict.
    """
    better = [
        o
        for o in others
        if o.epoch > 0
        and o.key != current.key
        and o.key not in gone
        and election.better_broker(current, o) is not current
    ]
    return min(better, key=election.BrokerClaim.rank) if better else None


def follow_redirect(broker_key: bytes, *, me: bytes, asked: bytes, gone: Set[bytes]) -> bool:
    """Whether to follow a "your broker is there" answer from a node we asked.

    Not to a broker we lost (a successor that has not noticed the loss yet still names it:
    ask it again), nor to ourselves, nor back to the node that answered.
    """
    return broker_key not in gone and broker_key not in (me, asked)
