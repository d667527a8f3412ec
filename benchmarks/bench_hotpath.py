"""CPU per public chat message on the hot path, piece by piece, in one process (no network).

Run: python3 benchmarks/bench_hotpath.py [--quick]

Prints µs per message (best of several repeats; "cpu" is this thread's CPU time, user +
system, so it includes the write syscalls) for:

- ``clean_text`` / ``check_text`` on typical chat texts;
- ``EventWriter`` writing a ``public`` event into a pipe drained by ``cat``, with 1 and with
  100 events per event-loop iteration (low rate: one message wakes the loop; high rate: a
  receive batch), into a block-buffered stream and a write-through one (PYTHONUNBUFFERED);
- ``HistoryStore``: a receiver's ``append``, and a sender's ``set_seq`` + ``append``, in
  batches (transactions) of 1 and of 100;
- the receive path of a ``Relay`` through the real pieces (wire decode, GapTracker,
  Ed25519 verify, history, clean text, EventWriter into a write-through pipe), mirroring
  ``Node._handle_batch`` / ``Node._on_relay``: one relay per receive batch, 100 per batch,
  and one 64-text batch;
- the sender's path, mirroring ``Node.say`` + ``Node._pack_public`` + ``PublicOutbox``;
- the sender's outbox upkeep at every tick (``Node._tick``), spread over the messages of
  one tick at 20, 200 and 2,500 msgs/s.

zmq, CURVE and the process wake-ups are not included: they are the same before and after
any change here. The mirrors copy what node.py does; keep them in step with it.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import itertools
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

# Runnable from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lanchat.core import wire
from lanchat.core.reliability import RETAIN_MAX, RETAIN_S, GapTracker, PublicOutbox
from lanchat.core.text import check_text, clean_text
from lanchat.headless import EventWriter
from lanchat.identity import Identity, verify
from lanchat.store import HistoryRecord, HistoryStore, Profile

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

PUBLIC = "public"

TEXTS = {
    "200 ASCII chars": ("The quick brown fox jumps over the lazy dog; " * 5)[:200],
    "200 chars, accents + emoji": ("Grüße aus Köln, ça va? 👍 déjà vu — naïve café " * 5)[:200],
    "3 lines (\\n)": "first line of a paste\nsecond line: def f(x): return x\nthird line",
    "with a colour escape": "plain text \x1b[31mred\x1b[0m and more plain text " * 4,
}


@dataclass(frozen=True, slots=True)
class Cost:
    wall_us: float
    cpu_us: float


def measure(run: Callable[[], int], repeats: int) -> Cost:
    """Best per-item cost of ``repeats`` runs; ``run`` does the work, returns item count."""
    best_wall = best_cpu = float("inf")
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.thread_time()
        items = run()
        c1, w1 = time.thread_time(), time.perf_counter()
        best_wall = min(best_wall, (w1 - w0) * 1e6 / items)
        best_cpu = min(best_cpu, (c1 - c0) * 1e6 / items)
    return Cost(best_wall, best_cpu)


def show(label: str, cost: Cost) -> None:
    print(f"  {label:<58} {cost.wall_us:9.2f} {cost.cpu_us:9.2f}")


def header(title: str) -> None:
    print(f"\n{title}")
    print(f"  {'':<58} {'wall µs':>9} {'cpu µs':>9}")


@contextmanager
def pipe_to_cat(write_through: bool) -> Iterator[IO[str]]:
    """A text stream like a headless node's stdout when a bot reads it through a pipe.

    ``write_through``: every write is a syscall, as with PYTHONUNBUFFERED=1 (which the test
    and benchmark harnesses inherit here); otherwise block-buffered, Python's default.
    """
    reader = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    assert reader.stdin is not None
    fd = reader.stdin.fileno()
    stream = (
        io.TextIOWrapper(io.FileIO(fd, "w", closefd=False), encoding="utf-8", write_through=True)
        if write_through
        else open(fd, "w", encoding="utf-8", closefd=False)  # noqa: SIM115
    )
    try:
        yield stream
    finally:
        stream.close()
        reader.stdin.close()
        reader.wait()


def flush_writer(writer: Any) -> None:
    """Flush anything a buffering EventWriter still holds (older versions hold nothing)."""
    flush = getattr(writer, "flush", None)
    if flush is not None:
        flush()


def run_in_loop(body: Callable[[], Any]) -> Callable[[], int]:
    """``body`` is a coroutine function returning an item count; run it in a fresh loop."""

    def run() -> int:
        count: int = asyncio.run(body())
        return count

    return run


def public_event(i: int, text: str) -> dict[str, Any]:
    return {
        "ev": "public",
        "t": round(time.time(), 6),
        "id": f"{'ab' * 8}:{i}",
        "from": "student42",
        "text": clean_text(text),
        "sent_t": 1_700_000_000.123,
    }


# ---------------------------------------------------------------- pieces


def bench_text(repeats: int, n: int) -> None:
    header(f"clean_text / check_text, {n:,} calls")
    for label, text in TEXTS.items():

        def clean(text: str = text) -> int:
            for _ in range(n):
                clean_text(text)
            return n

        show(f"clean_text: {label}", measure(clean, repeats))
    typical = TEXTS["200 ASCII chars"]

    def check() -> int:
        for _ in range(n):
            check_text(typical)
        return n

    show("check_text: 200 ASCII chars", measure(check, repeats))


def bench_writer(repeats: int, n: int) -> None:
    header(f"EventWriter, a public event (200 chars) into a pipe, {n:,} events")
    event = public_event(1, TEXTS["200 ASCII chars"])
    for write_through, per_iteration in itertools.product((False, True), (1, 100)):
        with pipe_to_cat(write_through) as stream:

            def body(per_iteration: int = per_iteration, write: bool = True) -> Callable[[], Any]:
                async def main() -> int:
                    writer = EventWriter(stream)
                    for _ in range(n // per_iteration):
                        for _ in range(per_iteration):
                            if write:
                                writer(event)
                        await asyncio.sleep(0)  # the loop iteration ends: events go out
                    flush_writer(writer)
                    return n

                return main

            loop_only = measure(run_in_loop(body(write=False)), repeats)
            total = measure(run_in_loop(body()), repeats)
            show(
                f"{per_iteration} per loop iteration{', write-through' if write_through else ''}"
                " (minus the bare loop)",
                Cost(total.wall_us - loop_only.wall_us, total.cpu_us - loop_only.cpu_us),
            )


def make_record(i: int, text: str, outgoing: bool) -> HistoryRecord:
    return HistoryRecord(
        id=f"{'cd' * 8}:{i}",
        conversation=PUBLIC,
        sender="student42",
        sender_key="cd" * 32,
        text=text,
        sent_t=1_700_000_000.0 + i,
        received_t=1_700_000_000.1 + i,
        outgoing=outgoing,
    )


@contextmanager
def fresh_history() -> Iterator[HistoryStore]:
    with tempfile.TemporaryDirectory() as tmp, Profile.open(Path(tmp) / "p") as profile:
        yield profile.history


def bench_history(repeats: int, n: int) -> None:
    header(f"HistoryStore, {n:,} messages of 200 chars, one transaction per batch")
    text = TEXTS["200 ASCII chars"]
    for per_batch in (1, 100):
        for sender in (False, True):
            with fresh_history() as history:
                first = [0]

                def run(
                    per_batch: int = per_batch,
                    sender: bool = sender,
                    history: HistoryStore = history,
                    first: list[int] = first,
                ) -> int:
                    i = first[0]
                    for _ in range(n // per_batch):
                        with history.batch():
                            for _ in range(per_batch):
                                i += 1
                                if sender:
                                    history.set_seq(PUBLIC, i)
                                assert history.append(make_record(i, text, sender))
                    first[0] = i
                    return n

                what = "sender: set_seq + append" if sender else "receiver: append"
                show(f"{what}, {per_batch} per batch", measure(run, repeats))


# ---------------------------------------------------------------- receive path


class Receiver:
    """The parts of a Node that a public relay goes through (see Node._on_relay)."""

    def __init__(self, history: HistoryStore, emit: Callable[[dict[str, Any]], None]) -> None:
        self.history = history
        self.emit = emit
        self.gap = GapTracker()
        self.gap.reset(1, 0)
        self.shown = 0

    def handle_batch(self, batch: list[list[bytes]]) -> None:
        with self.history.batch():
            for frames in batch:
                msg, _sig = wire.decode(frames)
                assert isinstance(msg, wire.Relay)
                self.on_relay(msg)

    def on_relay(self, msg: wire.Relay) -> None:
        _is_new, missing = self.gap.observe(msg.epoch, msg.bseq)
        assert missing is None
        pub = msg.inner
        assert verify(pub.author, wire.signed_bytes(pub), msg.inner_sig)
        handle = pub.handle  # the node looks up the pinned handle: a dict hit
        received = time.time()
        shown_t = 0.0
        author_hex = pub.author.hex()
        append, sent_t = self.history.append, pub.sent_t
        for msg_id, text in pub.texts_by_id():
            record = HistoryRecord(
                msg_id, PUBLIC, handle, author_hex, text, sent_t, received, False
            )
            if not append(record):
                continue
            self.shown += 1
            if not shown_t:
                shown_t = round(time.time(), 6)
            self.emit(
                {
                    "ev": "public",
                    "t": shown_t,
                    "id": msg_id,
                    "from": handle,
                    "text": clean_text(text),
                    "sent_t": sent_t,
                }
            )


_next_seq = itertools.count(1, 1_000_000)


def relay_frames(author: Identity, count: int, per_message: int) -> list[list[bytes]]:
    """``count`` Relay frames, each of one Public or of a PublicBatch of ``per_message``.

    Message ids never repeat between calls: a repeated id would be dropped as a duplicate.
    """
    assert count * per_message < 1_000_000
    text = TEXTS["200 ASCII chars"]
    frames = []
    seq = next(_next_seq)
    for bseq in range(1, count + 1):
        inner: wire.Public | wire.PublicBatch
        if per_message == 1:
            inner = wire.Public(
                author=author.key, handle="student42", room="", seq=seq, text=text, sent_t=1.0
            )
        else:
            texts = tuple(text for _ in range(per_message))
            inner = wire.PublicBatch(
                author=author.key, handle="student42", room="", seq=seq, texts=texts, sent_t=1.0
            )
        seq += per_message
        sig = author.sign(wire.signed_bytes(inner))
        frames.append(wire.encode(wire.Relay(epoch=1, bseq=bseq, inner=inner, inner_sig=sig)))
    return frames


def bench_receive(repeats: int, n: int) -> None:
    header(f"receive path: Relay -> decode, verify, history, clean, EventWriter ({n:,} msgs)")
    author = Identity.generate()
    cases = [
        ("1 Relay per receive batch (low rate)", 1, 1),
        ("100 Relays per receive batch", 100, 1),
        ("1 Relay of a 64-text PublicBatch per receive batch", 1, 64),
    ]
    with pipe_to_cat(write_through=True) as stream:
        for label, relays_per_batch, per_message in cases:
            batches_per_run = max(1, n // (relays_per_batch * per_message))
            runs = [
                relay_frames(author, batches_per_run * relays_per_batch, per_message)
                for _ in range(repeats)
            ]
            with fresh_history() as history:

                def body(
                    history: HistoryStore = history,
                    runs: list[list[list[bytes]]] = runs,
                    relays_per_batch: int = relays_per_batch,
                    per_message: int = per_message,
                ) -> Callable[[], Any]:
                    async def main() -> int:
                        writer = EventWriter(stream)
                        receiver = Receiver(history, writer)
                        frames = runs.pop()
                        for start in range(0, len(frames), relays_per_batch):
                            receiver.handle_batch(frames[start : start + relays_per_batch])
                            await asyncio.sleep(0)
                        flush_writer(writer)
                        assert receiver.shown == len(frames) * per_message
                        return receiver.shown

                    return main

                show(label, measure(run_in_loop(body()), repeats))


# ---------------------------------------------------------------- sender path


class Sender:
    """Node.say + Node._pack_public + the outbox, without the socket."""

    def __init__(self, history: HistoryStore, me: Identity) -> None:
        self.history = history
        self.me = me
        self.outbox = PublicOutbox(next_seq=history.max_seq(PUBLIC) + 1)
        self.unpacked: list[tuple[int, str, float]] = []

    def say(self, text: str) -> str:
        text = check_text(text)
        seq = self.outbox.allocate()
        self.history.set_seq(PUBLIC, seq)
        sent_t = round(time.time(), 3)
        msg_id = f"{self.me.key.hex()[:16]}:{seq}"
        self.history.append(
            HistoryRecord(
                id=msg_id,
                conversation=PUBLIC,
                sender="student42",
                sender_key=self.me.key_hex,
                text=text,
                sent_t=sent_t,
                received_t=sent_t,
                outgoing=True,
            )
        )
        self.unpacked.append((seq, text, sent_t))
        return msg_id

    def pump(self) -> int:
        now = time.monotonic()
        pending, self.unpacked = self.unpacked, []
        added = []
        while pending:
            chunk, pending = pending[: wire.MAX_BATCH], pending[wire.MAX_BATCH :]
            seq, text, sent_t = chunk[0]
            msg: wire.Public | wire.PublicBatch
            if len(chunk) == 1:
                msg = wire.Public(
                    author=self.me.key,
                    handle="student42",
                    room="",
                    seq=seq,
                    text=text,
                    sent_t=sent_t,
                )
            else:
                msg = wire.PublicBatch(
                    author=self.me.key,
                    handle="student42",
                    room="",
                    seq=seq,
                    texts=tuple(t for _, t, _ in chunk),
                    sent_t=sent_t,
                )
            sig = self.me.sign(wire.signed_bytes(msg))
            self.outbox.add(seq, wire.encode(msg, sig), now)
            added.append(seq)
        sent = self.outbox.sendable(now)
        for seq in added:  # the broker's Acks
            self.outbox.ack(seq, now)
        return len(sent)


def bench_send(repeats: int, n: int) -> None:
    header(f"sender path: say (clean, seq, history) + pack, sign, outbox ({n:,} msgs)")
    me = Identity.generate()
    text = TEXTS["200 ASCII chars"]
    for per_burst in (1, 100):
        with fresh_history() as history:
            sender = Sender(history, me)

            def run(per_burst: int = per_burst, sender: Sender = sender) -> int:
                for _ in range(n // per_burst):
                    with sender.history.batch():
                        for _ in range(per_burst):
                            sender.say(text)
                    sender.pump()
                return n

            show(f"{per_burst} message(s) per command burst", measure(run, repeats))


def bench_outbox_tick(repeats: int) -> None:
    header("PublicOutbox at every tick (10 a second): overdue + sendable + expire")
    ticks_per_s = 10
    for rate in (20, 200, 2_500):
        # What a sender retains at this rate: RETAIN_S of acked messages, at most RETAIN_MAX.
        retained = min(int(rate * RETAIN_S), RETAIN_MAX)
        box = PublicOutbox(window=retained)
        for _ in range(retained):
            box.add(box.allocate(), [b""], 0.0)
        box.sendable(0.0)
        for seq in range(1, retained + 1):
            box.ack(seq, 1.0)

        def tick(box: PublicOutbox = box) -> int:
            for _ in range(1_000):
                box.overdue(2.0)
                box.sendable(2.0)
                box.expire(2.0)
            return 1_000

        per_tick = measure(tick, repeats)
        scale = ticks_per_s / rate
        show(
            f"per message at {rate:,} msgs/s ({retained:,} retained)",
            Cost(per_tick.wall_us * scale, per_tick.cpu_us * scale),
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (a smoke test)")
    args = parser.parse_args()
    repeats, scale = (2, 1) if args.quick else (5, 10)
    print(f"Python {sys.version.split()[0]}; best of {repeats} runs")
    bench_text(repeats, 2_000 * scale)
    bench_writer(repeats, 500 * scale)
    bench_history(repeats, 200 * scale)
    bench_receive(repeats, 100 * scale)
    bench_send(repeats, 200 * scale)
    bench_outbox_tick(repeats)


if __name__ == "__main__":
    main()
