"""Anti-entropy for the public room: who holds which messages, and the room's one order.

Every public message is numbered by its author (``seq``, inside the signed envelope), so
what a node holds is, per author, a few ranges of numbers: a summary of a few dozen bytes
per author, whatever the length of the history. Two nodes exchange summaries first and then
only the envelopes one lacks (:meth:`Holdings.lacking`), from any node that holds them.

The same numbers show a receiver a gap in one author's messages (:meth:`Holdings.holes`):
a message the broker relayed to others and not to us, or withheld from everyone.

**Order.** A broker gives each message it accepts first a *place*: a Lamport counter that
goes up by one per relay and never goes below a place the broker has seen (its history,
the summaries of the nodes that join it, the messages they carry). A message keeps its
place wherever it travels afterwards. The room's order is :func:`order_key`: place, then
author, then the author's number. Two halves of a partitioned room number concurrently and
their messages interleave by place; after the heal, the merged broker counts on from above
everything either half held, so later messages come after. When a message got two places
(a broker acknowledged it and vanished before anyone heard its relay, and the author sent
it again), the smaller one wins everywhere.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

__all__ = ["Holdings", "Ranges", "merge_ranges", "order_key"]

Ranges = tuple[int, ...]  # flattened inclusive ranges: first1, last1, first2, last2, ...


def order_key(place: int, author_hex: str, seq: int) -> tuple[int, str, int]:
    """The room's order of a message: every node sorts by this, so every screen agrees."""
    return (place, author_hex[:16], seq)


def merge_ranges(pairs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, disjoint, non-adjacent inclusive ranges covering the same numbers."""
    out: list[tuple[int, int]] = []
    for first, last in sorted(pairs):
        if out and first <= out[-1][1] + 1:
            if last > out[-1][1]:
                out[-1] = (out[-1][0], last)
        else:
            out.append((first, last))
    return out


def _pairs(ranges: Ranges) -> list[tuple[int, int]]:
    return [(ranges[i], ranges[i + 1]) for i in range(0, len(ranges) - 1, 2)]


def _flat(pairs: list[tuple[int, int]]) -> Ranges:
    return tuple(n for pair in pairs for n in pair)


def _subtract(have: list[tuple[int, int]], minus: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """``have`` without ``minus`` (both sorted and disjoint)."""
    out: list[tuple[int, int]] = []
    j = 0
    for first, last in have:
        cur = first
        while j < len(minus) and minus[j][1] < cur:
            j += 1
        k = j
        while k < len(minus) and minus[k][0] <= last:
            if minus[k][0] > cur:
                out.append((cur, minus[k][0] - 1))
            cur = max(cur, minus[k][1] + 1)
            k += 1
        if cur <= last:
            out.append((cur, last))
    return out


@dataclass(slots=True)
class _Author:
    starts: list[int] = field(default_factory=list)  # sorted firsts of disjoint ranges
    ends: list[int] = field(default_factory=list)  # their lasts

    def add(self, first: int, last: int) -> bool:
        """True if any number in first..last was new."""
        i = bisect.bisect_right(self.starts, first) - 1
        if i >= 0 and self.ends[i] >= last:
            return False  # already covered: the common case for a duplicate
        if (
            i >= 0
            and self.ends[i] + 1 >= first
            and (i + 1 == len(self.starts) or self.starts[i + 1] > last + 1)
        ):
            self.ends[i] = last  # extends the range before it: the common case live
            return True
        merged = merge_ranges([*self.pairs(), (first, last)])
        self.starts = [a for a, _ in merged]
        self.ends = [b for _, b in merged]
        return True

    def has(self, seq: int) -> bool:
        i = bisect.bisect_right(self.starts, seq) - 1
        return i >= 0 and self.ends[i] >= seq

    def pairs(self) -> list[tuple[int, int]]:
        return list(zip(self.starts, self.ends, strict=True))


@dataclass(slots=True)
class Holdings:
    """What one node holds of the room: per author, the ranges of numbers, and the highest
    place it has seen (where a broker must count on from)."""

    top: int = 0
    _authors: dict[bytes, _Author] = field(default_factory=dict)

    def add(self, author: bytes, seq: int, count: int = 1, place: int = 0) -> bool:
        """An envelope of ``count`` messages from ``seq``; True if any was new to us."""
        self.top = max(self.top, place)
        held = self._authors.get(author)
        if held is None:
            held = self._authors[author] = _Author()
        return held.add(seq, seq + max(1, count) - 1)

    def has(self, author: bytes, seq: int) -> bool:
        held = self._authors.get(author)
        return held is not None and held.has(seq)

    def summary(self) -> list[tuple[bytes, Ranges]]:
        """Per author, the ranges held: what goes in a ``Have``."""
        return [(a, _flat(h.pairs())) for a, h in sorted(self._authors.items())]

    def lacking(self, other: list[tuple[bytes, Ranges]]) -> list[tuple[bytes, Ranges]]:
        """What ``other`` (a summary) holds that we do not."""
        out = []
        for author, ranges in other:
            theirs = merge_ranges(_pairs(ranges))
            held = self._authors.get(author)
            missing = theirs if held is None else _subtract(theirs, held.pairs())
            if missing:
                out.append((author, _flat(missing)))
        return out

    def extra(self, other: list[tuple[bytes, Ranges]]) -> list[tuple[bytes, Ranges]]:
        """What we hold that ``other`` (a summary) does not."""
        theirs = {a: merge_ranges(_pairs(r)) for a, r in other}
        out = []
        for author, held in sorted(self._authors.items()):
            missing = _subtract(held.pairs(), theirs.get(author, []))
            if missing:
                out.append((author, _flat(missing)))
        return out

    def holes(self) -> list[tuple[bytes, int, int]]:
        """``(author, first, last)`` of every gap between the lowest and highest numbers we
        hold of an author: messages relayed to others, or withheld."""
        out = []
        for author, held in self._authors.items():
            for i in range(1, len(held.starts)):
                out.append((author, held.ends[i - 1] + 1, held.starts[i] - 1))
        return out

    def authors(self) -> int:
        return len(self._authors)
