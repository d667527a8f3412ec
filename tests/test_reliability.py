"""Delivery bookkeeping: outbox acks and retention, relay gaps, in-order private channel."""

from __future__ import annotations

from unittest import mock

from hypothesis import given
from hypothesis import strategies as st

from lanchat.core import reliability
from lanchat.core.reliability import (
    INBOUND_BUFFER_MAX,
    RESEND_AFTER_S,
    RETAIN_S,
    GapTracker,
    InboundChannel,
    PublicOutbox,
)

T0 = 100.0


def frames(seq: int) -> list[bytes]:
    return [b"hdr", f"msg {seq}".encode(), b"sig"]


def outbox_with(*seqs: int, now: float = T0) -> PublicOutbox:
    box = PublicOutbox()
    for seq in seqs:
        assert box.allocate() == seq
        box.add(seq, frames(seq), now)
    return box


# ---------------------------------------------------------------- PublicOutbox


def test_allocate_numbers_from_one() -> None:
    box = PublicOutbox()
    assert [box.allocate() for _ in range(3)] == [1, 2, 3]


def test_ack_is_news_once_and_only_for_known_messages() -> None:
    box = outbox_with(1, 2)
    box.sendable(T0)
    assert box.pending_count() == 2
    assert box.ack(1, T0 + 0.1) is True
    assert box.ack(1, T0 + 0.2) is False  # duplicate ack
    assert box.ack(9, T0 + 0.2) is False  # never sent
    assert box.pending_count() == 1


def test_the_window_bounds_what_is_in_flight() -> None:
    box = PublicOutbox(window=2)
    for seq in (1, 2, 3, 4):
        box.add(box.allocate(), frames(seq), T0)
    assert box.sendable(T0) == [frames(1), frames(2)]
    assert box.sendable(T0) == []  # the window is full
    box.ack(1, T0 + 0.1)
    assert box.sendable(T0 + 0.1) == [frames(3)]
    box.ack(2, T0 + 0.2)
    box.ack(3, T0 + 0.2)
    assert box.sendable(T0 + 0.2) == [frames(4)]


def test_in_flight_messages_go_again_only_when_acks_stall() -> None:
    box = outbox_with(1, 2, 3)
    box.sendable(T0)
    box.ack(1, T0 + 0.5)
    # Progress 0.5 s ago: the broker is working through the queue, nothing is resent.
    assert box.overdue(T0 + RESEND_AFTER_S) == 0
    assert box.sendable(T0 + RESEND_AFTER_S) == []
    # No ack for RESEND_AFTER_S: everything in flight goes back in line, oldest first.
    assert box.overdue(T0 + 0.5 + RESEND_AFTER_S) == 2
    assert box.sendable(T0 + 0.5 + RESEND_AFTER_S) == [frames(2), frames(3)]
    assert box.overdue(T0 + 0.5 + RESEND_AFTER_S + 0.1) == 0


def test_new_broker_gets_retained_again_and_pending_back_in_line() -> None:
    box = outbox_with(1, 2, 3, 4)
    box.sendable(T0)
    box.ack(1, T0 + 0.1)
    box.ack(3, T0 + 0.1)
    assert box.for_new_broker(T0 + 1) == [frames(1), frames(3)]
    assert box.sendable(T0 + 1) == [frames(2), frames(4)]
    # Their clock restarted: nothing is overdue right after the failover.
    assert box.overdue(T0 + 1 + RESEND_AFTER_S / 2) == 0


def test_acked_messages_expire_after_retain_time_pending_never() -> None:
    box = outbox_with(1, 2)
    box.sendable(T0)
    box.ack(1, T0)
    box.expire(T0 + RETAIN_S)
    assert box.for_new_broker(T0 + RETAIN_S) == [frames(1)]
    assert box.for_new_broker(T0 + RETAIN_S + 0.01) == []
    box.expire(T0 + 10 * RETAIN_S)
    assert box.pending_count() == 1
    assert box.ack(1, T0 + 10 * RETAIN_S) is False  # forgotten


def test_beyond_retain_max_the_earliest_acked_go_first() -> None:
    with mock.patch.object(reliability, "RETAIN_MAX", 3):
        box = outbox_with(1, 2, 3, 4, 5)
        box.sendable(T0)
        for i, seq in enumerate((4, 5, 1, 2, 3)):
            box.ack(seq, T0 + i / 10)
        box.expire(T0 + 1)
        # The messages acked last are the ones a dying broker may not have published.
        assert box.for_new_broker(T0 + 1) == [frames(1), frames(2), frames(3)]


_OUTBOX_OPS = st.lists(
    st.tuples(
        st.sampled_from(["say", "send", "ack", "expire", "failover"]),
        st.integers(1, 12),
        st.sampled_from([0.0, 0.001, 0.5, 3.0, RETAIN_S - 0.001, RETAIN_S]),
    ),
    max_size=80,
)


@given(_OUTBOX_OPS)
def test_retention_keeps_the_latest_acked_within_retain_time(
    ops: list[tuple[str, int, float]],
) -> None:
    """Whatever the order of acks: retained = acked within RETAIN_S, the latest RETAIN_MAX."""
    with mock.patch.object(reliability, "RETAIN_MAX", 4):
        box = PublicOutbox(window=3)
        now = T0
        acked: dict[int, float] = {}  # the model: seq -> ack time, in ack order
        said = acks = 0
        for op, seq, step in ops:
            now += step
            if op == "say":
                said += 1
                box.add(box.allocate(), frames(said), now)
            elif op == "send":
                box.sendable(now)
            elif op == "ack" and box.ack(seq, now):
                acks += 1
                acked[seq] = now
            elif op in ("expire", "failover"):
                acked = {s: t for s, t in acked.items() if now - t <= RETAIN_S}
                while len(acked) > reliability.RETAIN_MAX:
                    del acked[next(iter(acked))]
                if op == "expire":
                    box.expire(now)
                else:
                    assert box.for_new_broker(now) == [frames(s) for s in sorted(acked)]
            assert box.pending_count() == said - acks


# ---------------------------------------------------------------- GapTracker


def test_in_order_relays_are_new_without_gaps() -> None:
    gaps = GapTracker()
    gaps.reset(epoch=2, last_bseq=0)
    assert [gaps.observe(2, b) for b in (1, 2, 3)] == [(True, None)] * 3
    assert gaps.next_bseq == 4


def test_a_skipped_range_is_reported_once() -> None:
    gaps = GapTracker()
    gaps.reset(epoch=2, last_bseq=4)
    assert gaps.observe(2, 9) == (True, (5, 8))
    assert gaps.observe(2, 10) == (True, None)
    # The repaired relays arrive later: not new to the tracker (the id check decides).
    assert gaps.observe(2, 6) == (False, None)


def test_duplicates_and_old_relays_are_not_new() -> None:
    gaps = GapTracker()
    gaps.reset(epoch=1, last_bseq=0)
    gaps.observe(1, 1)
    assert gaps.observe(1, 1) == (False, None)
    assert gaps.observe(1, 0) == (False, None)


def test_relays_of_another_epoch_are_ignored() -> None:
    gaps = GapTracker()
    gaps.reset(epoch=2, last_bseq=3)
    assert gaps.observe(1, 50) == (False, None)
    assert gaps.observe(3, 50) == (False, None)
    assert gaps.next_bseq == 4
    assert gaps.tail_gap(1, 50) is None


def test_tail_gap_from_a_beat() -> None:
    gaps = GapTracker()
    gaps.reset(epoch=2, last_bseq=0)
    gaps.observe(2, 1)
    assert gaps.tail_gap(2, 1) is None  # up to date
    assert gaps.tail_gap(2, 4) == (2, 4)
    assert gaps.tail_gap(2, 4) is None  # asked once
    assert gaps.observe(2, 5) == (True, None)


# ---------------------------------------------------------------- InboundChannel


def test_in_order_items_are_delivered_at_once() -> None:
    ch = InboundChannel()
    assert ch.receive(1, 1, "a") == ["a"]
    assert ch.receive(2, 1, "b") == ["b"]
    assert ch.delivered_upto == 2


def test_out_of_order_items_are_held_then_released_in_order() -> None:
    ch = InboundChannel()
    assert ch.receive(3, 1, "c") == []
    assert ch.receive(2, 1, "b") == []
    assert ch.delivered_upto == 0
    assert ch.receive(1, 1, "a") == ["a", "b", "c"]
    assert ch.delivered_upto == 3


def test_duplicates_are_dropped_delivered_or_held() -> None:
    ch = InboundChannel()
    ch.receive(1, 1, "a")
    ch.receive(3, 1, "c")
    assert ch.receive(1, 1, "a again") == []
    assert ch.receive(3, 1, "c again") == []
    assert ch.receive(2, 1, "b") == ["b", "c"]


def test_base_skips_ahead_past_items_acked_before_a_restart() -> None:
    ch = InboundChannel()  # fresh state: we acked 1..4 before losing it
    assert ch.receive(6, 5, "f") == []
    assert ch.receive(5, 5, "e") == ["e", "f"]
    assert ch.delivered_upto == 6


def test_base_skip_drops_held_items_below_it() -> None:
    ch = InboundChannel()
    ch.receive(2, 1, "b")
    ch.receive(4, 1, "d")
    assert ch.receive(5, 4, "e") == ["d", "e"]
    assert ch.delivered_upto == 5


def test_base_behind_delivered_changes_nothing() -> None:
    ch = InboundChannel()
    ch.receive(1, 1, "a")
    ch.receive(2, 1, "b")
    assert ch.receive(3, 1, "c") == ["c"]
    assert ch.delivered_upto == 3


def test_buffer_is_bounded_and_overflow_is_not_taken() -> None:
    ch = InboundChannel()
    for cseq in range(3, 3 + INBOUND_BUFFER_MAX):
        assert ch.receive(cseq, 1, cseq) == []
    assert ch.receive(3 + INBOUND_BUFFER_MAX, 1, "overflow") == []
    assert len(ch._held) == INBOUND_BUFFER_MAX


def test_full_buffer_still_takes_the_next_item_in_order() -> None:
    ch = InboundChannel()
    for cseq in range(2, 2 + INBOUND_BUFFER_MAX):
        ch.receive(cseq, 1, cseq)
    released = ch.receive(1, 1, 1)
    assert released == list(range(1, 2 + INBOUND_BUFFER_MAX))


def test_skip_ahead_releases_a_held_item_on_its_resend() -> None:
    ch = InboundChannel()  # fresh state after a restart; we had acked 1..4
    assert ch.receive(5, 3, "e") == []  # sent before the sender saw our ack of 3 and 4
    assert ch.receive(5, 5, "e") == ["e"]  # the re-send, now with base 5


@given(st.data())
def test_any_order_with_duplicates_delivers_each_item_once_in_order(data: st.DataObject) -> None:
    n = data.draw(st.integers(min_value=1, max_value=40), label="n")
    extra = data.draw(st.lists(st.integers(min_value=1, max_value=n), max_size=2 * n))
    deliveries = data.draw(st.permutations([*range(1, n + 1), *extra]), label="deliveries")
    ch = InboundChannel()
    got: list[object] = []
    for cseq in deliveries:
        # The sender's base never passes what we acked (delivered_upto) plus one.
        base = data.draw(st.integers(min_value=1, max_value=min(cseq, ch.delivered_upto + 1)))
        got.extend(ch.receive(cseq, base, f"item {cseq}"))
    assert got == [f"item {i}" for i in range(1, n + 1)]
    assert ch.delivered_upto == n
    assert ch._held == {}
