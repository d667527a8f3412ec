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
- the receive path of a ``Relay`` through a real node's parts (wire decode, then
  ``PublicRoom.on_relay``: GapTracker, Ed25519 verify, history, clean text, EventWriter into
  a write-through pipe), in one history transaction per receive batch as ``Node`` does: one
  relay per receive batch, 100 per batch, and one 64-text batch;
- the sender's path: a real node's ``PublicRoom.say`` and ``pump`` (pack, sign, outbox);
- the sender's outbox upkeep at every tick, spread over the messages of one tick at 20,
  200 and 2,500 msgs/s.

The node is a real ``lanchat.node.Node`` over the in-memory twins (``lanchat.inmemory``),
not started: zmq, CURVE and the process wake-ups are not included, as they are the same
before and after any change here.
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
from lanchat.core.reliability import RETAIN_MAX, RETAIN_S, PublicOutbox
from lanchat.core.text import check_text, clean_text
from lanchat.headless import EventWriter
from lanchat.identity import Identity
from lanchat.inmemory import MemoryLan
from lanchat.node import Node, NodeConfig
from lanchat.store import HistoryRecord, HistoryStore, Profile

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from lanchat.room.public import PublicRoom

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


def real_node(directory: Path, emit: Callable[[dict[str, Any]], None]) -> Node:
    """A real node (not started) on the in-memory LAN, with ``student42`` online."""
    profile = Profile.open(directory)
    me = Identity.generate()
    lan = MemoryLan()
    config = NodeConfig(handle="bench", room="", address="10.0.0.1", info_port=0)
    node = Node(
        config,
        profile,
        me,
        emit,
        transport=lan.transport(config.address, me.curve_public),
        discovery=lan.discovery,
    )
    node.public.gap.reset(1, 0)
    return node


class Receiver:
    """A receive batch as ``Node._on_frames`` takes it, into the real ``PublicRoom``."""

    def __init__(self, node: Node, author: Identity) -> None:
        self.node = node
        self.history = node.profile.history
        # Online, as a speaker of the room is: its handle is a dict hit, not a pin lookup.
        node.peers.online[author.key] = wire.PeerEntry(
            handle="student42", id_key=author.key, curve_key=bytes(32)
        )

    def handle_batch(self, batch: list[list[bytes]]) -> None:
        on_relay, now = self.node.public.on_relay, time.monotonic()
        with self.history.batch():
            for frames in batch:
                msg, _sig = wire.decode(frames)
                assert isinstance(msg, wire.Relay)
                on_relay(msg, now)


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
            with tempfile.TemporaryDirectory() as tmp:
                shown: list[int] = [0]
                sink: list[EventWriter] = []  # the run's writer, made in its event loop

                def emit(
                    event: dict[str, Any], shown: list[int] = shown, sink: list[EventWriter] = sink
                ) -> None:
                    shown[0] += event["ev"] == "public"
                    sink[-1](event)

                # One fresh node per run, made before the clock starts.
                receivers = [
                    Receiver(real_node(Path(tmp) / f"r{i}", emit), author) for i in range(repeats)
                ]

                def body(
                    runs: list[list[list[bytes]]] = runs,
                    receivers: list[Receiver] = receivers,
                    relays_per_batch: int = relays_per_batch,
                    per_message: int = per_message,
                    shown: list[int] = shown,
                    sink: list[EventWriter] = sink,
                ) -> Callable[[], Any]:
                    async def main() -> int:
                        writer = EventWriter(stream)
                        sink.append(writer)
                        receiver, frames = receivers.pop(), runs.pop()
                        shown[0] = 0
                        for start in range(0, len(frames), relays_per_batch):
                            receiver.handle_batch(frames[start : start + relays_per_batch])
                            await asyncio.sleep(0)
                        flush_writer(writer)
                        assert shown[0] == len(frames) * per_message
                        return shown[0]

                    return main

                try:
                    show(label, measure(run_in_loop(body()), repeats))
                finally:
                    for receiver in receivers:
                        receiver.node.profile.close()


# ---------------------------------------------------------------- sender path


def bench_send(repeats: int, n: int) -> None:
    header(f"sender path: say (clean, seq, history) + pack, sign, outbox ({n:,} msgs)")
    text = TEXTS["200 ASCII chars"]
    for per_burst in (1, 100):
        with tempfile.TemporaryDirectory() as tmp:
            node = real_node(Path(tmp) / "sender", lambda _event: None)
            public, history = node.public, node.profile.history

            def body(
                per_burst: int = per_burst,
                public: PublicRoom = public,
                history: HistoryStore = history,
            ) -> Callable[[], Any]:
                async def main() -> int:
                    for _ in range(n // per_burst):
                        with history.batch():
                            for _ in range(per_burst):
                                public.say(text)
                        public.pump()  # what the scheduled pump does after the burst
                        now = time.monotonic()
                        for frames in public.outbox.sendable(now):  # then the broker's Acks
                            seq = wire.decode(frames)[0].seq  # type: ignore[union-attr]
                            public.outbox.ack(seq, now)
                    return n

                return main

            try:
                show(
                    f"{per_burst} message(s) per command burst",
                    measure(run_in_loop(body()), repeats),
                )
            finally:
                node.profile.close()


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
