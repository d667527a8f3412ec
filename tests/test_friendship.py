from __future__ import annotations

import pytest

from lanchat.core.friendship import (
    LOCAL_MOVES,
    REMOTE_MOVES,
    TRANSITIONS,
    Friendship,
    IllegalTransition,
    Move,
    Notice,
    Outcome,
    apply,
    arrives_as,
    can_message,
    is_silenced,
    step,
)

F = Friendship
M = Move

# The full expected table, written out independently of the implementation.
EXPECTED: dict[tuple[Friendship, Move], tuple[Friendship, Notice | None]] = {
    (F.NONE, M.REQUEST): (F.PENDING_OUT, Notice.REQUEST),
    (F.NONE, M.GOT_REQUEST): (F.PENDING_IN, None),
    (F.NONE, M.BLOCK): (F.BLOCKED, None),
    (F.PENDING_OUT, M.REQUEST): (F.PENDING_OUT, Notice.REQUEST),
    (F.PENDING_OUT, M.REMOVE): (F.NONE, Notice.REJECT),
    (F.PENDING_OUT, M.GOT_REQUEST): (F.FRIEND, Notice.ACCEPT),
    (F.PENDING_OUT, M.GOT_ACCEPT): (F.FRIEND, None),
    (F.PENDING_OUT, M.GOT_REJECT): (F.NONE, None),
    (F.PENDING_OUT, M.BLOCK): (F.BLOCKED, None),
    (F.PENDING_IN, M.REQUEST): (F.FRIEND, Notice.REQUEST),
    (F.PENDING_IN, M.ACCEPT): (F.FRIEND, Notice.ACCEPT),
    (F.PENDING_IN, M.REJECT): (F.NONE, Notice.REJECT),
    (F.PENDING_IN, M.GOT_REQUEST): (F.PENDING_IN, None),
    (F.PENDING_IN, M.GOT_REJECT): (F.NONE, None),
    (F.PENDING_IN, M.BLOCK): (F.BLOCKED, None),
    (F.FRIEND, M.REMOVE): (F.NONE, Notice.REJECT),
    (F.FRIEND, M.GOT_REQUEST): (F.FRIEND, Notice.ACCEPT),
    (F.FRIEND, M.GOT_ACCEPT): (F.FRIEND, None),
    (F.FRIEND, M.GOT_REJECT): (F.NONE, None),
    (F.FRIEND, M.BLOCK): (F.BLOCKED, None),
    (F.BLOCKED, M.BLOCK): (F.BLOCKED, None),
    (F.BLOCKED, M.UNBLOCK): (F.NONE, None),
    (F.BLOCKED, M.GOT_REQUEST): (F.BLOCKED, None),
    (F.BLOCKED, M.GOT_ACCEPT): (F.BLOCKED, None),
    (F.BLOCKED, M.GOT_REJECT): (F.BLOCKED, None),
}

ALL_PAIRS = [(state, move) for state in Friendship for move in Move]


@pytest.mark.parametrize(("state", "move"), ALL_PAIRS)
def test_every_pair_maps_or_raises(state: Friendship, move: Move) -> None:
    if (state, move) in EXPECTED:
        new, send = EXPECTED[state, move]
        assert step(state, move) is new
        silenced = state is F.BLOCKED and move in REMOTE_MOVES
        assert apply(state, move) == Outcome(new, send=send, silenced=silenced)
    else:
        with pytest.raises(IllegalTransition) as info:
            step(state, move)
        assert info.value.state is state
        assert info.value.move is move
        with pytest.raises(IllegalTransition):
            apply(state, move)


def test_table_is_exactly_the_expected_one() -> None:
    assert dict(TRANSITIONS) == {pair: new for pair, (new, _) in EXPECTED.items()}


def test_table_is_read_only() -> None:
    with pytest.raises(TypeError):
        TRANSITIONS[F.NONE, M.ACCEPT] = F.FRIEND  # type: ignore[index]


def test_illegal_messages_are_clear() -> None:
    with pytest.raises(IllegalTransition, match=r"^cannot accept: no pending request from them$"):
        step(F.NONE, M.ACCEPT)
    with pytest.raises(IllegalTransition, match=r"^cannot request: already friends$"):
        step(F.FRIEND, M.REQUEST)
    with pytest.raises(IllegalTransition, match="blocked; unblock them first"):
        step(F.BLOCKED, M.REQUEST)
    with pytest.raises(IllegalTransition, match=r"^unexpected accept from peer"):
        step(F.NONE, M.GOT_ACCEPT)
    assert isinstance(IllegalTransition(F.NONE, M.ACCEPT), ValueError)


def test_values_are_the_stored_strings() -> None:
    assert [state.value for state in Friendship] == [
        "none",
        "pending_out",
        "pending_in",
        "friend",
        "blocked",
    ]
    assert Friendship("pending_in") is F.PENDING_IN


def test_moves_are_split_into_local_and_remote() -> None:
    assert set(Move) == LOCAL_MOVES | REMOTE_MOVES
    assert not LOCAL_MOVES & REMOTE_MOVES
    assert all(move.value.startswith("got_") for move in REMOTE_MOVES)


def test_only_friends_can_message_and_only_blocked_is_silenced() -> None:
    assert [state for state in Friendship if can_message(state)] == [F.FRIEND]
    assert [state for state in Friendship if is_silenced(state)] == [F.BLOCKED]


def test_notices_arrive_as_remote_moves() -> None:
    assert {arrives_as(notice) for notice in Notice} == REMOTE_MOVES


def _exchange(a: Friendship, b: Friendship, move: Move) -> tuple[Friendship, Friendship]:
    """``a`` makes a local move; its notice (and any automatic reply) is delivered to ``b``."""
    outcome = apply(a, move)
    a = outcome.state
    pending = outcome.send
    to_b = True
    while pending is not None:
        if to_b:
            reply = apply(b, arrives_as(pending))
            b = reply.state
        else:
            reply = apply(a, arrives_as(pending))
            a = reply.state
        pending, to_b = reply.send, not to_b
    return a, b


def test_two_peers_request_then_accept() -> None:
    a, b = _exchange(F.NONE, F.NONE, M.REQUEST)
    assert (a, b) == (F.PENDING_OUT, F.PENDING_IN)
    b, a = _exchange(b, a, M.ACCEPT)
    assert (a, b) == (F.FRIEND, F.FRIEND)


def test_two_peers_crossed_requests_end_as_friends() -> None:
    a_after = apply(F.NONE, M.REQUEST).state
    b_after = apply(F.NONE, M.REQUEST).state
    # Both requests are in flight; each side receives the other's, then the accept replies.
    a = apply(a_after, M.GOT_REQUEST)
    b = apply(b_after, M.GOT_REQUEST)
    assert a.send is b.send is Notice.ACCEPT
    assert apply(a.state, M.GOT_ACCEPT).state is F.FRIEND
    assert apply(b.state, M.GOT_ACCEPT).state is F.FRIEND


def test_peer_that_lost_its_state_is_re_accepted() -> None:
    a, b = _exchange(F.NONE, F.FRIEND, M.REQUEST)
    assert (a, b) == (F.FRIEND, F.FRIEND)


def test_reject_lets_the_requester_ask_again() -> None:
    a, b = _exchange(F.NONE, F.NONE, M.REQUEST)
    b, a = _exchange(b, a, M.REJECT)
    assert (a, b) == (F.NONE, F.NONE)
    a, b = _exchange(a, b, M.REQUEST)
    assert (a, b) == (F.PENDING_OUT, F.PENDING_IN)


def test_remove_is_followed_by_the_peer() -> None:
    a, b = _exchange(F.FRIEND, F.FRIEND, M.REMOVE)
    assert (a, b) == (F.NONE, F.NONE)


def test_blocked_peer_cannot_get_through() -> None:
    for move in REMOTE_MOVES:
        outcome = apply(F.BLOCKED, move)
        assert outcome == Outcome(F.BLOCKED, send=None, silenced=True)
