"""One reliable, ordered channel between two nodes through an unreliable relay. Pure.

Used by private chat (friend to friend) and by help sessions (student and mentor): the
sender numbers its items (``cseq``), keeps each one until the other side acknowledges it
cumulatively, and sends everything unacknowledged again on every flush with ``base``, the
lowest number still kept, so the receiver knows it can deliver from there; the receiver
(:class:`lanchat.core.reliability.InboundChannel`) delivers in order, each item once.

The channel keeps the items themselves: a flush re-sends what it holds, with no store round
trip. Whoever needs the items durable (private chat, whose queue survives restarts) writes
them to a store beside the channel and loads the channel from it once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

from lanchat.core.reliability import InboundChannel

__all__ = ["OutboundChannel", "ReliableChannel"]

_T = TypeVar("_T")


@dataclass(slots=True, eq=False)
class OutboundChannel(Generic[_T]):
    """A sender's numbered items until acknowledged."""

    next_cseq: int = 1
    _kept: dict[int, _T] = field(default_factory=dict)

    def add(self, item: _T) -> int:
        """Keep ``item`` under the next number; returns its number."""
        cseq = self.next_cseq
        self.next_cseq += 1
        self._kept[cseq] = item
        return cseq

    def restore(self, cseq: int, item: _T) -> None:
        """An item kept from an earlier run (a durable queue loaded at start)."""
        self._kept[cseq] = item
        self.next_cseq = max(self.next_cseq, cseq + 1)

    def ack(self, upto: int) -> list[tuple[int, _T]]:
        """The other side has everything up to ``upto``: the items it acknowledges now."""
        done = [(c, item) for c, item in self._kept.items() if c <= upto]
        for cseq, _item in done:
            del self._kept[cseq]
        return done

    def pending(self) -> tuple[int, list[tuple[int, _T]]]:
        """(base, items in order): what to send again; base is the lowest number kept."""
        if not self._kept:
            return 0, []
        ordered = sorted(self._kept.items())
        return ordered[0][0], ordered

    def __len__(self) -> int:
        return len(self._kept)


@dataclass(slots=True, eq=False)
class ReliableChannel(Generic[_T]):
    """Both directions of one conversation: our numbered items out, theirs in."""

    outbound: OutboundChannel[_T] = field(default_factory=OutboundChannel)
    inbound: InboundChannel = field(default_factory=InboundChannel)
