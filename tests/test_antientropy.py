"""The pure anti-entropy bookkeeping: holdings, summaries, what each side lacks, holes."""

from __future__ import annotations

import random
import subprocess
import sys

from lanchat.core.antientropy import Holdings, merge_ranges, order_key

A, B = b"a" * 32, b"b" * 32


def test_ranges_merge_overlapping_and_adjacent() -> None:
    assert merge_ranges([(5, 6), (1, 2), (3, 3), (9, 9), (8, 8)]) == [(1, 3), (5, 6), (8, 9)]
    assert merge_ranges([(1, 4), (2, 3), (5, 5)]) == [(1, 5)]
    assert merge_ranges([]) == []


def test_holdings_add_summary_and_holes() -> None:
    h = Holdings()
    assert h.add(A, 1, 3, place=7)
    assert not h.add(A, 2)  # already held
    assert h.add(A, 6, 2, place=3)
    assert h.add(B, 4)
    assert h.top == 7
    assert h.summary() == [(A, (1, 3, 6, 7)), (B, (4, 4))]
    assert h.holes() == [(A, 4, 5)]
    assert h.has(A, 7)
    assert not h.has(A, 5)
    assert h.add(A, 4, 2)
    assert h.holes() == []
    assert h.summary()[0] == (A, (1, 7))


def test_lacking_and_extra_are_the_two_sides_of_a_difference() -> None:
    mine, theirs = Holdings(), Holdings()
    mine.add(A, 1, 10)
    theirs.add(A, 5, 10)
    theirs.add(B, 1, 2)
    assert mine.lacking(theirs.summary()) == [(A, (11, 14)), (B, (1, 2))]
    assert mine.extra(theirs.summary()) == [(A, (1, 4))]
    assert theirs.lacking(mine.summary()) == [(A, (1, 4))]


def test_exchanging_both_differences_makes_two_holdings_equal() -> None:
    rng = random.Random(7)
    for _ in range(200):
        x, y = Holdings(), Holdings()
        for h in (x, y):
            for _ in range(rng.randrange(8)):
                h.add(rng.choice((A, B)), rng.randrange(1, 40), rng.randrange(1, 5))
        for author, ranges in x.lacking(y.summary()):
            for i in range(0, len(ranges), 2):
                x.add(author, ranges[i], ranges[i + 1] - ranges[i] + 1)
        for author, ranges in y.lacking(x.summary()):
            for i in range(0, len(ranges), 2):
                y.add(author, ranges[i], ranges[i + 1] - ranges[i] + 1)
        assert x.summary() == y.summary()


def test_the_rooms_order_is_place_then_author_then_number() -> None:
    keys = [order_key(3, "ff" * 8, 1), order_key(2, "aa" * 8, 9), order_key(3, "aa" * 8, 2)]
    assert sorted(keys) == [keys[1], keys[2], keys[0]]


def test_the_core_imports_nothing_outside_the_standard_library() -> None:
    code = (
        "import sys, lanchat.core.antientropy; "
        "print(sorted(m for m in ('zmq', 'zeroconf', 'tinydb', 'nacl') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
