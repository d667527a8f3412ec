"""The help queue, as the broker keeps it: students raise hands, mentors claim them.

Pure bookkeeping: the relay (lanchat.core.relay) feeds it the authenticated sender of
every Hand/Claim/HandDone and turns its answers into frames.

Why it survives a failover without a snapshot: every student keeps its open hands and
re-raises them on the next broker (with the claim it had been granted), and every mentor
re-claims what it holds; the new broker rebuilds the same queue from its clients.

Anonymity: an anonymous hand is listed under a pseudonym derived from its random id, and
its entry never carries the student's handle or key. Only the broker (which must route
the conversation) knows which connection raised it, and it never tells.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lanchat.core import wire

__all__ = ["HandRecord", "HelpQueue", "QueueError", "pseudonym"]

MAX_HANDS_PER_STUDENT = 3


class QueueError(ValueError):
    """A hand operation that is not allowed (the message says why)."""


def pseudonym(hand_id: str) -> str:
    """The name mentors see for an anonymous hand: stable for the hand, unlinkable."""
    return f"anon-{hand_id[:4]}"


@dataclass(slots=True)
class HandRecord:
    hand_id: str
    student_key: bytes
    student_handle: str
    topic: str
    anon: bool
    eph_key: bytes
    raised_at: float
    mentor_key: bytes = b""
    mentor_handle: str = ""
    claim_sig: bytes = b""  # the mentor's signature of its claim (core/authority.py)
    hand_sig: bytes = b""  # the student's signature of its hand (core/authority.py)

    def entry(self) -> wire.QueueEntry:
        return wire.QueueEntry(
            hand_id=self.hand_id,
            label=pseudonym(self.hand_id) if self.anon else self.student_handle,
            topic=self.topic,
            anon=self.anon,
            raised_at=self.raised_at,
            eph_key=self.eph_key,
            student_key=b"" if self.anon else self.student_key,
            claimed_by=self.mentor_handle,
            claimed_key=self.mentor_key,
            hand_sig=b"" if self.anon else self.hand_sig,
        )


@dataclass(slots=True)
class HelpQueue:
    version: int = 0
    _hands: dict[str, HandRecord] = field(default_factory=dict)

    def raise_hand(
        self,
        hand: wire.Hand,
        student_key: bytes,
        student_handle: str,
        mentor_handle_of: dict[bytes, str],
    ) -> HandRecord:
        known = self._hands.get(hand.hand_id)
        if known is not None:
            if known.student_key != student_key:
                raise QueueError("that hand id belongs to someone else")
            return known  # re-raised after a reconnect: nothing changes
        if len(hand.hand_id) < 8 or not all(c in "0123456789abcdef" for c in hand.hand_id):
            raise QueueError("a hand id is 8-32 lowercase hex characters")
        mine = [h for h in self._hands.values() if h.student_key == student_key]
        if len(mine) >= MAX_HANDS_PER_STUDENT:
            raise QueueError(f"at most {MAX_HANDS_PER_STUDENT} hands at a time")
        record = HandRecord(
            hand_id=hand.hand_id,
            student_key=student_key,
            student_handle=student_handle,
            topic=hand.topic,
            anon=hand.anon,
            eph_key=hand.eph_key,
            raised_at=hand.raised_at,
            hand_sig=hand.sig,
        )
        if hand.claimed_by and hand.claimed_by in mentor_handle_of:
            # A claim granted by the previous broker, restored as it was.
            record.mentor_key = hand.claimed_by
            record.mentor_handle = mentor_handle_of[hand.claimed_by]
            record.claim_sig = hand.claim_sig
        self._hands[hand.hand_id] = record
        self.version += 1
        return record

    def claim(
        self, hand_id: str, mentor_key: bytes, mentor_handle: str, sig: bytes = b""
    ) -> HandRecord:
        record = self._hands.get(hand_id)
        if record is None:
            raise QueueError("no such hand (already resolved?)")
        if record.mentor_key and record.mentor_key != mentor_key:
            raise QueueError(f"already claimed by {record.mentor_handle}")
        if record.mentor_key != mentor_key:
            record.mentor_key = mentor_key
            record.mentor_handle = mentor_handle
            self.version += 1
        if sig:
            record.claim_sig = sig
        return record

    def done(self, hand_id: str, by_key: bytes) -> HandRecord:
        record = self._hands.get(hand_id)
        if record is None:
            raise QueueError("no such hand")
        if by_key not in (record.student_key, record.mentor_key):
            raise QueueError("only the student or the claiming mentor can resolve a hand")
        del self._hands[hand_id]
        self.version += 1
        return record

    def release_mentor(self, mentor_key: bytes) -> list[HandRecord]:
        """A mentor left for good: its hands go back to waiting."""
        released = [h for h in self._hands.values() if h.mentor_key == mentor_key]
        for record in released:
            record.mentor_key = b""
            record.mentor_handle = ""
            record.claim_sig = b""
        if released:
            self.version += 1
        return released

    def drop_student(self, student_key: bytes) -> list[HandRecord]:
        """A student left for good: its hands are withdrawn."""
        gone = [h for h in self._hands.values() if h.student_key == student_key]
        for record in gone:
            del self._hands[record.hand_id]
        if gone:
            self.version += 1
        return gone

    def get(self, hand_id: str) -> HandRecord | None:
        return self._hands.get(hand_id)

    def position(self, hand_id: str) -> int:
        waiting = [h.hand_id for h in self.ordered() if not h.mentor_key]
        return waiting.index(hand_id) + 1 if hand_id in waiting else 0

    def ordered(self) -> list[HandRecord]:
        return sorted(self._hands.values(), key=lambda h: (h.raised_at, h.hand_id))

    def snapshot(self) -> wire.Queue:
        return wire.Queue(version=self.version, entries=tuple(h.entry() for h in self.ordered()))
