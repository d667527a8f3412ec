"""The broker's help queue, as pure bookkeeping."""

from __future__ import annotations

import pytest

from lanchat.core import wire
from lanchat.core.helpqueue import HelpQueue, QueueError, pseudonym

STU, STU2, M1, M2 = (bytes([n]) * 32 for n in (1, 2, 3, 4))
EPH = bytes([9]) * 32


def hand(
    hand_id: str, *, anon: bool = False, at: float = 1.0, claimed_by: bytes = b""
) -> wire.Hand:
    return wire.Hand(
        hand_id=hand_id, topic="t", anon=anon, eph_key=EPH, raised_at=at, claimed_by=claimed_by
    )


def test_hands_are_ordered_by_when_they_were_raised() -> None:
    q = HelpQueue()
    q.raise_hand(hand("bbbbbbbb", at=2.0), STU, "stu", {})
    q.raise_hand(hand("aaaaaaaa", at=1.0), STU2, "stu2", {})
    assert [h.hand_id for h in q.ordered()] == ["aaaaaaaa", "bbbbbbbb"]
    assert q.position("bbbbbbbb") == 2


def test_anonymous_entries_carry_neither_handle_nor_key() -> None:
    q = HelpQueue()
    q.raise_hand(hand("cafe0000", anon=True), STU, "shy", {})
    (entry,) = q.snapshot().entries
    assert entry.label == pseudonym("cafe0000") == "anon-cafe"
    assert entry.student_key == b""
    assert "shy" not in repr(entry)


def test_first_claim_wins_and_others_are_refused() -> None:
    q = HelpQueue()
    q.raise_hand(hand("aaaaaaaa"), STU, "stu", {})
    q.claim("aaaaaaaa", M1, "m1")
    assert q.claim("aaaaaaaa", M1, "m1").mentor_handle == "m1"  # idempotent
    with pytest.raises(QueueError, match="already claimed by m1"):
        q.claim("aaaaaaaa", M2, "m2")
    assert q.position("aaaaaaaa") == 0  # no longer waiting


def test_only_the_student_or_the_claiming_mentor_resolves() -> None:
    q = HelpQueue()
    q.raise_hand(hand("aaaaaaaa"), STU, "stu", {})
    q.claim("aaaaaaaa", M1, "m1")
    with pytest.raises(QueueError):
        q.done("aaaaaaaa", M2)
    q.done("aaaaaaaa", M1)
    assert q.snapshot().entries == ()


def test_re_raising_after_failover_restores_the_claim_and_changes_nothing_else() -> None:
    q = HelpQueue()
    record = q.raise_hand(hand("aaaaaaaa", claimed_by=M1), STU, "stu", {M1: "m1"})
    assert record.mentor_handle == "m1"
    version = q.version
    q.raise_hand(hand("aaaaaaaa", claimed_by=M1), STU, "stu", {M1: "m1"})
    assert q.version == version
    with pytest.raises(QueueError):
        q.raise_hand(hand("aaaaaaaa"), STU2, "thief", {})


def test_a_claim_by_a_mentor_who_is_gone_is_not_restored() -> None:
    q = HelpQueue()
    assert q.raise_hand(hand("aaaaaaaa", claimed_by=M1), STU, "stu", {}).mentor_key == b""


def test_limits_and_bad_ids() -> None:
    q = HelpQueue()
    for i in range(3):
        q.raise_hand(hand(f"{i}" * 8), STU, "stu", {})
    with pytest.raises(QueueError, match="at most 3"):
        q.raise_hand(hand("dddddddd"), STU, "stu", {})
    with pytest.raises(QueueError, match="hex"):
        q.raise_hand(hand("NOT-HEX!"), STU2, "stu2", {})


def test_leaving_mentor_releases_and_leaving_student_withdraws() -> None:
    q = HelpQueue()
    q.raise_hand(hand("aaaaaaaa"), STU, "stu", {})
    q.raise_hand(hand("bbbbbbbb", at=2.0), STU2, "stu2", {})
    q.claim("aaaaaaaa", M1, "m1")
    assert [h.hand_id for h in q.release_mentor(M1)] == ["aaaaaaaa"]
    assert q.position("aaaaaaaa") == 1
    assert [h.hand_id for h in q.drop_student(STU2)] == ["bbbbbbbb"]
    assert [e.hand_id for e in q.snapshot().entries] == ["aaaaaaaa"]
