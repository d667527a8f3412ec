"""Membership rules (lanchat.core.membership): whom a node joins, when a broker is lost,
handover and merge. Pure: every input is a value, ``now`` included."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lanchat.core import membership as m
from lanchat.core.election import BrokerClaim, Candidate


def key(n: int) -> bytes:
    return bytes([n]) * 32


def cand(n: int, *, mentor: bool = False, started_at: float = 100.0) -> Candidate:
    return Candidate(key(n), mentor, 0, started_at)


def claim(n: int, *, mentor: bool = False, since: float = 100.0, epoch: int = 1) -> BrokerClaim:
    return BrokerClaim(key(n), mentor, since, epoch)


def choose(**over: object) -> m.Decision:
    args: dict[str, object] = {
        "me": cand(9),
        "hosting": False,
        "advertised": [],
        "succession": [],
        "candidates": [],
        "gone": set(),
        "election_from": 0.0,
        "now": 1.0,
    }
    args.update(over)
    return m.choose_broker(**args)  # type: ignore[arg-type]


# ---- choose_broker: the table of cases, in the order the rules apply -------------------


def test_a_node_that_runs_the_relay_joins_its_own() -> None:
    assert choose(hosting=True, advertised=[claim(1)]) == m.HostOwn()


def test_an_advertised_broker_is_joined_whoever_it_is() -> None:
    """No preemption: a mentor candidate does not replace a working student broker."""
    decision = choose(advertised=[claim(5)], candidates=[cand(1, mentor=True)])
    assert decision == m.Join(key(5), "advertised")


def test_the_best_of_two_advertised_brokers_is_joined() -> None:
    decision = choose(advertised=[claim(5, since=50.0), claim(6, mentor=True, since=90.0)])
    assert decision == m.Join(key(6), "advertised")


def test_adverts_of_non_brokers_and_gone_brokers_are_not_brokers() -> None:
    decision = choose(advertised=[claim(5, epoch=0), claim(6)], gone={key(6)}, succession=[cand(7)])
    assert decision == m.Join(key(7), "successor")


def test_the_successor_is_the_first_live_node_of_the_roster() -> None:
    order = [cand(1), cand(2), cand(3)]
    assert choose(succession=order, gone={key(1)}) == m.Join(key(2), "successor")


def test_we_become_broker_when_the_successor_is_us() -> None:
    order = [cand(1), cand(9), cand(3)]
    assert choose(succession=order, gone={key(1)}) == m.BecomeBroker()


def test_a_cold_start_waits_for_adverts_before_electing() -> None:
    decision = choose(election_from=10.0, now=10.05, candidates=[cand(1)])
    assert decision == m.WaitUntil(10.0 + m.ELECTION_WAIT_S)


def test_after_the_wait_the_best_candidate_wins() -> None:
    decision = choose(candidates=[cand(1, started_at=200.0), cand(2, mentor=True)])
    assert decision == m.Join(key(2), "elected")


def test_we_win_the_election_when_we_rank_best() -> None:
    assert choose(me=cand(1, started_at=1.0), candidates=[cand(2)]) == m.BecomeBroker()


def test_gone_candidates_do_not_win() -> None:
    assert choose(candidates=[cand(1, mentor=True)], gone={key(1)}) == m.BecomeBroker()


@given(
    st.lists(
        st.tuples(st.integers(1, 8), st.booleans(), st.floats(0, 1000)),
        max_size=8,
        unique_by=lambda t: t[0],
    ),
    st.sets(st.integers(1, 8)),
)
def test_every_node_that_sees_the_same_room_elects_the_same_broker(
    nodes: list[tuple[int, bool, float]], gone: set[int]
) -> None:
    """Two observers with the same view agree on the winner, whoever they are."""
    cands = [cand(n, mentor=mentor, started_at=t) for n, mentor, t in nodes]
    gone_keys = {key(g) for g in gone}
    verdicts = set()
    for me in (cand(20, started_at=5000.0), cand(21, started_at=5000.0)):
        decision = choose(me=me, candidates=cands, gone=gone_keys)
        verdicts.add(decision.key if isinstance(decision, m.Join) else None)
    live = [c for c in cands if c.key not in gone_keys]
    assert len(verdicts) == 1 if live else verdicts == {None}


# ---- when a broker is lost ----------------------------------------------------------------


def facts(**over: object) -> m.LinkFacts:
    base: dict[str, object] = {
        "started": 0.0,
        "welcomed": False,
        "reached": False,
        "refused_not_broker": 0,
        "last_beat": 0.0,
    }
    base.update(over)
    return m.LinkFacts(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("link", "now", "verdict"),
    [
        (facts(), m.CONNECT_TIMEOUT_S - 0.01, None),
        (facts(), m.CONNECT_TIMEOUT_S + 0.01, "no answer"),
        # Its host took our connection: a busy broker gets longer...
        (facts(reached=True), m.CONNECT_TIMEOUT_S + 0.01, None),
        (facts(reached=True), m.WELCOME_WAIT_S + 0.01, "no answer"),
        # ...unless it said it is not the broker.
        (facts(reached=True, refused_not_broker=1), m.CONNECT_TIMEOUT_S + 0.01, "no answer"),
        (facts(welcomed=True, last_beat=5.0), 5.0 + m.BROKER_TIMEOUT_S - 0.01, None),
        (facts(welcomed=True, last_beat=5.0), 5.0 + m.BROKER_TIMEOUT_S + 0.01, "heartbeat timeout"),
        # Connection up (ZMTP heartbeats answered): only starved, so it gets longer.
        (facts(welcomed=True, reached=True, last_beat=5.0), 5.0 + m.BROKER_TIMEOUT_S + 0.01, None),
        (
            facts(welcomed=True, reached=True, last_beat=5.0),
            5.0 + m.BROKER_HUNG_S + 0.01,
            "heartbeat timeout",
        ),
    ],
)
def test_link_verdicts(link: m.LinkFacts, now: float, verdict: str | None) -> None:
    assert m.link_verdict(link, now) == verdict


def test_a_dropped_connection_right_after_a_sleep_goes_back_to_the_same_broker() -> None:
    def back(why: str, last_tick: float, *, us: bool = False) -> bool:
        return m.back_to_same_broker(
            why=why, now=10.0, last_tick=last_tick, woke_at=-1e9, broker_is_us=us
        )

    assert back("connection closed", last_tick=5.0)  # we were not running for 5 s
    assert not back("connection closed", last_tick=5.0, us=True)
    assert not back("connection closed", last_tick=9.95)  # awake: the broker is gone
    assert not back("heartbeat timeout", last_tick=5.0)


# ---- brokers that meet ---------------------------------------------------------------------


def test_a_settling_student_broker_hands_over_to_the_best_mentor() -> None:
    mentors = [cand(3, mentor=True, started_at=50.0), cand(2, mentor=True, started_at=20.0)]
    assert m.handover_target(i_am_mentor=False, reign_s=1.0, mentors=mentors) == mentors[1]


@pytest.mark.parametrize(("mentor", "reign"), [(True, 1.0), (False, m.SETTLE_S + 0.1)])
def test_no_handover_by_a_mentor_or_after_settling(mentor: bool, reign: float) -> None:
    mentors = [cand(2, mentor=True)]
    assert m.handover_target(i_am_mentor=mentor, reign_s=reign, mentors=mentors) is None


def test_merge_goes_to_the_best_of_the_better_brokers() -> None:
    current = claim(5, since=50.0)
    others = [claim(6, since=60.0), claim(7, since=40.0), claim(8, mentor=True, since=90.0)]
    assert m.merge_into(current, others, gone=set()) == others[2]
    assert m.merge_into(current, others, gone={key(8)}) == others[1]
    assert m.merge_into(current, [claim(6, since=60.0)], gone=set()) is None


@given(
    st.lists(
        st.tuples(st.integers(1, 6), st.booleans(), st.floats(0, 100)),
        min_size=2,
        max_size=6,
        unique_by=lambda t: t[0],
    )
)
def test_every_broker_of_a_healed_room_merges_into_the_same_one(
    brokers: list[tuple[int, bool, float]],
) -> None:
    claims = [claim(n, mentor=mentor, since=since) for n, mentor, since in brokers]
    final = set()
    for current in claims:
        target = m.merge_into(current, claims, gone=set())
        final.add((target or current).key)
    assert len(final) == 1


def test_redirects_are_not_followed_to_the_lost_ourselves_or_back() -> None:
    me, asked = key(1), key(2)
    assert m.follow_redirect(key(3), me=me, asked=asked, gone=set())
    assert not m.follow_redirect(key(3), me=me, asked=asked, gone={key(3)})
    assert not m.follow_redirect(me, me=me, asked=asked, gone=set())
    assert not m.follow_redirect(asked, me=me, asked=asked, gone=set())


# ---- phases -------------------------------------------------------------------------------


def test_phases_start_with_discovery_and_never_go_back_to_it() -> None:
    assert m.check_phase(m.Phase.STARTING, m.Phase.DISCOVERING) is m.Phase.DISCOVERING
    assert m.check_phase(m.Phase.DISCOVERING, m.Phase.ELECTING) is m.Phase.ELECTING
    for phase in (m.Phase.ELECTING, m.Phase.CONNECTING, m.Phase.CONNECTED, m.Phase.BROKER):
        for after in (m.Phase.ELECTING, m.Phase.CONNECTED, m.Phase.BROKER, m.Phase.OFFLINE):
            assert m.check_phase(phase, after) is after
        with pytest.raises(m.IllegalPhase):
            m.check_phase(phase, m.Phase.DISCOVERING)
    with pytest.raises(m.IllegalPhase):
        m.check_phase(m.Phase.STARTING, m.Phase.BROKER)
