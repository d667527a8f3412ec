"""Election: ranking, succession and broker merge are total orders every node agrees on."""

from __future__ import annotations

import itertools
from functools import reduce

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lanchat.core.election import (
    BrokerClaim,
    Candidate,
    best_candidate,
    better_broker,
    succession,
    successor,
)


def cand(
    key: int, *, mentor: bool = False, priority: int = 0, started_at: float = 100.0
) -> Candidate:
    return Candidate(key=bytes([key]) * 32, mentor=mentor, priority=priority, started_at=started_at)


def claim(key: int, *, mentor: bool = False, since: float = 100.0, epoch: int = 1) -> BrokerClaim:
    return BrokerClaim(key=bytes([key]) * 32, mentor=mentor, since=since, epoch=epoch)


def test_no_candidates_no_winner() -> None:
    assert best_candidate([]) is None
    assert best_candidate(iter([])) is None


@pytest.mark.parametrize(
    ("winner", "loser"),
    [
        # A mentor beats everything else, even higher priority and an older node.
        (cand(9, mentor=True, priority=0, started_at=500.0), cand(1, priority=9, started_at=1.0)),
        # Then the higher priority, even if younger and with a larger key.
        (cand(9, priority=2, started_at=500.0), cand(1, priority=1, started_at=1.0)),
        # Then the node running longest (smaller started_at), even with a larger key.
        (cand(9, started_at=99.0), cand(1, started_at=100.0)),
        # Then the smaller key.
        (cand(1), cand(2)),
    ],
    ids=["mentor", "priority", "older", "key"],
)
def test_best_candidate_order(winner: Candidate, loser: Candidate) -> None:
    assert best_candidate([winner, loser]) == winner
    assert best_candidate([loser, winner]) == winner


def test_best_candidate_ranks_mentors_among_themselves() -> None:
    mentors = [cand(3, mentor=True, priority=1), cand(4, mentor=True, priority=5)]
    assert best_candidate([cand(1, priority=9), *mentors]) == mentors[1]


def test_negative_priority_loses_to_default() -> None:
    assert best_candidate([cand(1, priority=-1), cand(2)]) == cand(2)


def test_succession_puts_the_broker_first_then_best_first() -> None:
    broker = cand(5, started_at=900.0)
    others = [cand(4), cand(3, mentor=True), cand(2, priority=1), cand(1, started_at=200.0)]
    order = succession([*others, broker], broker.key)
    assert order == [broker, cand(3, mentor=True), cand(2, priority=1), cand(4), others[3]]


def test_succession_without_the_broker_among_candidates() -> None:
    order = succession([cand(2), cand(1)], bytes([9]) * 32)
    assert order == [cand(1), cand(2)]


def test_successor_skips_gone_peers() -> None:
    order = [cand(1), cand(2), cand(3)]
    assert successor(order, []) == cand(1)
    assert successor(order, [cand(1).key]) == cand(2)
    assert successor(order, {cand(1).key, cand(2).key}) == cand(3)
    assert successor(order, [c.key for c in order]) is None
    assert successor([], []) is None


def test_successor_follows_roster_order_not_rank() -> None:
    # The roster is the broker's word: a better-ranked peer later in it does not jump ahead.
    order = [cand(7), cand(1, mentor=True)]
    assert successor(order, []) == cand(7)


@pytest.mark.parametrize(
    ("winner", "loser"),
    [
        (claim(9, mentor=True, since=500.0), claim(1, since=1.0)),
        (claim(9, since=99.0), claim(1, since=100.0)),
        (claim(1), claim(2)),
        # The epoch is not compared: it grows with failovers, not with the reign.
        (claim(1, epoch=1), claim(2, epoch=9)),
    ],
    ids=["mentor", "longest-reign", "key", "epoch-ignored"],
)
def test_better_broker_order(winner: BrokerClaim, loser: BrokerClaim) -> None:
    assert better_broker(winner, loser) is winner
    assert better_broker(loser, winner) is winner


def test_better_broker_returns_one_of_its_arguments() -> None:
    a, b = claim(1), claim(2)
    assert better_broker(a, a) is a
    assert better_broker(a, b) in (a, b)


# ---------------------------------------------------------------- properties

small_keys = st.binary(min_size=1, max_size=2).map(lambda k: k.ljust(32, b"\x00"))
times = st.sampled_from([0.0, 1.5, 100.0, 100.001, 1.7e9])

candidates = st.lists(
    st.builds(
        Candidate,
        key=small_keys,
        mentor=st.booleans(),
        priority=st.integers(min_value=-2, max_value=2),
        started_at=times,
    ),
    min_size=1,
    max_size=6,
    unique_by=lambda c: c.key,
)
claims = st.lists(
    st.builds(
        BrokerClaim,
        key=small_keys,
        mentor=st.booleans(),
        since=times,
        epoch=st.integers(min_value=1, max_value=5),
    ),
    min_size=1,
    max_size=5,
    unique_by=lambda c: c.key,
)


@given(candidates, st.data())
def test_every_permutation_elects_the_same_winner(
    cands: list[Candidate], data: st.DataObject
) -> None:
    winner = best_candidate(cands)
    assert winner in cands
    shuffled = data.draw(st.permutations(cands))
    assert best_candidate(shuffled) == winner
    assert all(winner.rank() <= c.rank() for c in cands)


@given(candidates)
def test_all_permutations_agree_on_winner_and_succession(cands: list[Candidate]) -> None:
    broker = cands[-1].key
    winners = set()
    orders = set()
    for perm in itertools.permutations(cands[:5]):
        winners.add(best_candidate(perm))
        orders.add(tuple(succession(perm, broker)))
    assert len(winners) == 1
    assert len(orders) == 1


@given(claims)
def test_better_broker_is_symmetric(cs: list[BrokerClaim]) -> None:
    for a, b in itertools.product(cs, repeat=2):
        assert better_broker(a, b) == better_broker(b, a)


@given(claims, st.data())
def test_better_broker_merges_to_one_winner_in_any_meeting_order(
    cs: list[BrokerClaim], data: st.DataObject
) -> None:
    # Transitive and total: however the partitions meet, they converge on one broker.
    expected = reduce(better_broker, cs)
    shuffled = data.draw(st.permutations(cs))
    assert reduce(better_broker, shuffled) == expected
    assert all(better_broker(expected, c) == expected for c in cs)
