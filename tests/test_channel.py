"""The reliable channel (lanchat.core.channel) shared by private chat and help sessions:
whatever the relay drops, duplicates or reorders, the receiver delivers every item once,
in order, and the sender keeps exactly what is not acknowledged."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from lanchat.core.channel import OutboundChannel, ReliableChannel


def test_items_are_numbered_kept_and_acknowledged_cumulatively() -> None:
    out: OutboundChannel[str] = OutboundChannel()
    assert [out.add(x) for x in "abc"] == [1, 2, 3]
    assert out.pending() == (1, [(1, "a"), (2, "b"), (3, "c")])
    assert out.ack(2) == [(1, "a"), (2, "b")]
    assert out.pending() == (3, [(3, "c")])
    assert out.ack(2) == []  # a repeated ack acknowledges nothing new
    assert out.ack(3) == [(3, "c")]
    assert out.pending() == (0, [])
    assert len(out) == 0


def test_a_restored_queue_continues_its_numbering() -> None:
    out: OutboundChannel[str] = OutboundChannel()
    out.restore(7, "g")
    out.restore(5, "e")
    assert out.pending() == (5, [(5, "e"), (7, "g")])
    assert out.add("h") == 8


@given(
    st.integers(1, 30),
    st.lists(
        st.tuples(st.sampled_from(["drop", "dup", "late", "ok"]), st.integers(0, 5)), max_size=200
    ),
)
def test_lossy_relay_every_item_once_in_order(n: int, plan: list[tuple[str, int]]) -> None:
    """Flushes over a relay that drops, duplicates and delays; acks too may be lost. Each
    round the sender flushes all it keeps (what the node does every PRIVATE_RESEND_S)."""
    sender: ReliableChannel[int] = ReliableChannel()
    receiver: ReliableChannel[int] = ReliableChannel()
    for i in range(n):
        sender.outbound.add(i)
    delivered: list[object] = []
    late: list[tuple[int, int, int]] = []
    steps = iter(plan)
    for _round in range(len(plan) + 2 * n + 2):
        base, items = sender.outbound.pending()
        if not items:
            break
        wire = [(cseq, base, item) for cseq, item in items]
        for cseq, b, item in wire:
            fate, _ = next(steps, ("ok", 0))
            if fate == "drop":
                continue
            if fate == "late":
                late.append((cseq, b, item))
                continue
            copies = 2 if fate == "dup" else 1
            for _ in range(copies):
                delivered += receiver.inbound.receive(cseq, b, item)
        for cseq, b, item in late[:1]:
            delivered += receiver.inbound.receive(cseq, b, item)
        del late[:1]
        if next(steps, ("ok", 0))[0] != "drop":  # the ack itself may be lost
            sender.outbound.ack(receiver.inbound.delivered_upto)
    # Once the relay stops losing things, everything arrives: in order, each once.
    assert delivered == list(range(n))
    assert len(sender.outbound) == 0
