"""Delivery bookkeeping that makes at-least-once transport look exactly-once to users.

Three small machines, all pure:

- :class:`PublicOutbox` - an author's public messages: pending until the broker acks them,
  then retained for a while, because a broker that dies right after acking may not have
  published to everyone. After a failover the author re-sends pending *and* retained
  messages to the new broker; receivers drop duplicates by message id.
- :class:`GapTracker` - a receiver's view of the broker's relay numbering; says which
  relays were missed (PUB drops silently) so they can be asked for again.
- :class:`InboundChannel` - a receiver's view of one private conversation: items numbered
  by the sender, delivered in order, each once, with a cumulative ack.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "RETAIN_S",
    "GapTracker",
    "InboundChannel",
    "PublicOutbox",
]

# How long an acked public message is kept for re-sending after a failover: longer than
# the time the broker's death takes to notice (heartbeat timeout) plus a margin.
RETAIN_S = 10.0
RETAIN_MAX = 2000
# In-flight messages are sent again when no ack at all arrived for this long (a stalled or
# lossy link). Progress on any ack means the broker is working through the queue.
RESEND_AFTER_S = 1.0
# At most this many messages await an ack at once; the rest wait their turn, so a burst
# cannot flood the broker (and a slow broker is never sent the same message twice).
SEND_WINDOW = 500
INBOUND_BUFFER_MAX = 1000


@dataclass(slots=True)
class _Outgoing:
    seq: int
    frames: list[bytes]
    sent_at: float | None = None
    acked_at: float | None = None


@dataclass(slots=True)
class PublicOutbox:
    """An author's public messages until acked and retained; ``now`` never goes backwards."""

    next_seq: int = 1
    window: int = SEND_WINDOW
    _items: OrderedDict[int, _Outgoing] = field(default_factory=OrderedDict)
    _unsent: deque[int] = field(default_factory=deque)  # in send order
    # Acked and retained, in ack order, so oldest first: expire() looks only at the front
    # (it runs every tick, and a second of chat at 200 msgs/s retains 2,000 messages).
    _acked: deque[int] = field(default_factory=deque)
    _in_flight: int = 0
    _last_progress: float = 0.0

    def allocate(self) -> int:
        seq = self.next_seq
        self.next_seq += 1
        return seq

    def add(self, seq: int, frames: list[bytes], now: float) -> None:
        """Queue a message; :meth:`sendable` hands it out when the window has room."""
        del now
        self._items[seq] = _Outgoing(seq, frames)
        self._unsent.append(seq)

    def ack(self, seq: int, now: float) -> bool:
        """True if this ack was news (a pending message is now confirmed)."""
        item = self._items.get(seq)
        if item is None or item.acked_at is not None:
            return False
        if item.sent_at is not None:
            self._in_flight -= 1
        item.acked_at = now
        self._acked.append(seq)
        self._last_progress = now
        return True

    def pending_count(self) -> int:
        return len(self._items) - len(self._acked)

    def sendable(self, now: float) -> list[list[bytes]]:
        """Unsent messages that fit in the window, oldest first; they count as sent now."""
        out: list[list[bytes]] = []
        while self._unsent and self._in_flight < self.window:
            item = self._items.get(self._unsent.popleft())
            if item is None or item.acked_at is not None or item.sent_at is not None:
                continue  # acked meanwhile (e.g. by the broker before a failover)
            if self._in_flight == 0 and not out:
                self._last_progress = now  # the clock for a stall starts now
            item.sent_at = now
            self._in_flight += 1
            out.append(item.frames)
        return out

    def overdue(self, now: float) -> int:
        """If nothing was acked for RESEND_AFTER_S, put everything in flight back in line."""
        if self._in_flight == 0 or now - self._last_progress < RESEND_AFTER_S:
            return 0
        return self._requeue_in_flight(now)

    def for_new_broker(
        self, now: float, placed: Callable[[int], bool] | None = None
    ) -> list[list[bytes]]:
        """Acked messages a new broker must see again (the old one may not have published
        them to everyone), oldest first. Pending ones go back in line for :meth:`sendable`.

        ``placed(seq)``: true for a message whose relay came back to us; anti-entropy
        carries those with their place, and a raw copy would get another one."""
        self.expire(now)
        self._requeue_in_flight(now)
        return [
            i.frames
            for i in self._items.values()
            if i.acked_at is not None and (placed is None or not placed(i.seq))
        ]

    def _requeue_in_flight(self, now: float) -> int:
        again = [i.seq for i in self._items.values() if i.acked_at is None and i.sent_at]
        for seq in again:
            self._items[seq].sent_at = None
        # Back in line ahead of the never-sent ones, keeping the authoring order.
        self._unsent = deque(sorted({*again, *self._unsent}))
        self._in_flight = 0
        self._last_progress = now
        return len(again)

    def expire(self, now: float) -> None:
        """Forget acked messages after RETAIN_S, and the earliest acked beyond RETAIN_MAX."""
        acked = self._acked
        while acked:
            acked_at = self._items[acked[0]].acked_at
            assert acked_at is not None
            if len(acked) <= RETAIN_MAX and now - acked_at <= RETAIN_S:
                return  # the rest were acked later still
            del self._items[acked.popleft()]


@dataclass(slots=True)
class GapTracker:
    """Expected next relay number within the current broker epoch."""

    epoch: int = 0
    next_bseq: int = 1

    def reset(self, epoch: int, last_bseq: int) -> None:
        """A new broker: continue after what it already holds (the backlog covers older)."""
        self.epoch = epoch
        self.next_bseq = last_bseq + 1

    def observe(self, epoch: int, bseq: int) -> tuple[bool, tuple[int, int] | None]:
        """``(is_new, missing_range)`` for an incoming relay."""
        if epoch != self.epoch:
            return (False, None)
        if bseq < self.next_bseq:
            return (False, None)  # a duplicate or a repaired gap: the id check decides
        missing = (self.next_bseq, bseq - 1) if bseq > self.next_bseq else None
        self.next_bseq = bseq + 1
        return (True, missing)

    def tail_gap(self, epoch: int, last_bseq: int) -> tuple[int, int] | None:
        """From a Beat: relays that exist but never arrived (the last ones of a burst)."""
        if epoch != self.epoch or last_bseq < self.next_bseq:
            return None
        gap = (self.next_bseq, last_bseq)
        self.next_bseq = last_bseq + 1
        return gap


@dataclass(slots=True)
class InboundChannel:
    """Items from one sender, numbered 1, 2, 3... delivered in order exactly once."""

    delivered_upto: int = 0
    _held: dict[int, object] = field(default_factory=dict)

    def receive(self, cseq: int, base: int, item: object) -> list[object]:
        """Items now deliverable, in order. ``base``: everything below was acked before."""
        if base - 1 > self.delivered_upto:
            # The sender holds nothing below base: we acked it earlier (then lost our
            # state) - skip ahead rather than wait forever.
            self.delivered_upto = base - 1
            self._held = {k: v for k, v in self._held.items() if k > self.delivered_upto}
        if cseq <= self.delivered_upto:
            return []
        if cseq not in self._held:
            if len(self._held) >= INBOUND_BUFFER_MAX and cseq != self.delivered_upto + 1:
                return []  # not acked: the sender will send it again
            self._held[cseq] = item
        ready = []
        while self.delivered_upto + 1 in self._held:
            self.delivered_upto += 1
            ready.append(self._held.pop(self.delivered_upto))
        return ready
