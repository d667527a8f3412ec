"""Broker election: pure functions every node evaluates on the same data.

Rules, in order:
1. No preemption: a node that finds a working broker in its room joins it, whoever it is.
2. With no broker, the best-ranked node of the room becomes broker: mentors first, then the
   higher ``priority``, then the node that has been running longest, then the smaller key
   (a total order, so every node that sees the same peers names the same winner).
3. The broker publishes its roster in succession order; when it vanishes, the first live
   peer of that roster takes over with ``epoch + 1``. Everyone reads the same roster.
4. Two brokers that meet (a healed partition) merge into the better one: mentor-run first,
   then the one that has been broker longest, then the smaller key. Only facts fixed for a
   broker's whole reign are compared, so both sides reach the same verdict.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

__all__ = [
    "BrokerClaim",
    "Candidate",
    "best_candidate",
    "better_broker",
    "succession",
    "successor",
]


@dataclass(frozen=True, slots=True)
class Candidate:
    key: bytes
    mentor: bool
    priority: int
    started_at: float

    def rank(self) -> tuple[bool, int, float, bytes]:
        """Sort key: smaller is better."""
        return (not self.mentor, -self.priority, self.started_at, self.key)


@dataclass(frozen=True, slots=True)
class BrokerClaim:
    """A running broker as others see it (from its advert or its Welcome)."""

    key: bytes
    mentor: bool
    since: float
    epoch: int

    def rank(self) -> tuple[bool, float, bytes]:
        return (not self.mentor, self.since, self.key)


def best_candidate(candidates: Iterable[Candidate]) -> Candidate | None:
    ranked = sorted(candidates, key=Candidate.rank)
    return ranked[0] if ranked else None


def succession(candidates: Iterable[Candidate], broker_key: bytes) -> list[Candidate]:
    """Roster order: the broker first, then everyone else best-first."""
    everyone = list(candidates)
    head = [c for c in everyone if c.key == broker_key]
    rest = sorted((c for c in everyone if c.key != broker_key), key=Candidate.rank)
    return head + rest


def successor(order: Sequence[Candidate], gone: Iterable[bytes]) -> Candidate | None:
    """The first peer of the last roster that is not known to be gone."""
    gone_keys = set(gone)
    for cand in order:
        if cand.key not in gone_keys:
            return cand
    return None


def better_broker(a: BrokerClaim, b: BrokerClaim) -> BrokerClaim:
    """The broker two meeting partitions converge on."""
    return a if a.rank() <= b.rank() else b
