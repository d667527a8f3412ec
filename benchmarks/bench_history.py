"""Per-message cost of HistoryStore.append as the history grows.

Run: python benchmarks/bench_history.py

Each append is its own committed transaction, as in the chat. The history is pre-filled
directly through sqlite3 in one transaction so the run stays short.
"""

from __future__ import annotations

import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

# Runnable from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lanchat.store import HistoryRecord, Profile

PREFILL_SIZES = (1_000, 10_000, 100_000)
BATCH = 1_000
KEY = "ab" * 32


def make_record(i: int) -> HistoryRecord:
    return HistoryRecord(
        id=f"{KEY}:{i}",
        conversation="public" if i % 3 else f"peer:{i % 50:064x}",
        sender=f"student{i % 200}",
        sender_key=f"{i % 200:064x}",
        text=f"message {i}: " + "lorem ipsum dolor sit amet " * (1 + i % 4),
        sent_t=1_700_000_000.0 + i,
        received_t=1_700_000_000.1 + i,
        outgoing=i % 5 == 0,
    )


def prefill(directory: Path, count: int) -> None:
    Profile.open(directory).close()  # creates the schema
    db = sqlite3.connect(directory / "history.sqlite3")
    rows = (
        (r.id, r.conversation, r.sender, r.sender_key, r.text, r.sent_t, r.received_t, r.outgoing)
        for r in map(make_record, range(count))
    )
    with db:
        db.executemany(
            "INSERT INTO messages"
            " (id, conversation, sender, sender_key, text, sent_t, received_t, outgoing)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
    db.close()


def measure(directory: Path, first_id: int) -> list[float]:
    """Seconds per append for BATCH appends."""
    records = [make_record(first_id + i) for i in range(BATCH)]
    timings = []
    with Profile.open(directory) as profile:
        for rec in records:
            start = time.perf_counter()
            stored = profile.history.append(rec)
            timings.append(time.perf_counter() - start)
            assert stored
    return timings


def main() -> None:
    print(f"HistoryStore.append, {BATCH} appends, one commit each (WAL, synchronous=NORMAL)")
    print(f"{'history size':>12} {'prefill s':>10} {'mean µs':>9} {'p50 µs':>8} {'p99 µs':>8}")
    for size in PREFILL_SIZES:
        with tempfile.TemporaryDirectory() as tmp:
            directory = Path(tmp) / "profile"
            start = time.perf_counter()
            prefill(directory, size)
            prefill_s = time.perf_counter() - start
            timings = sorted(measure(directory, size))
        mean_us = statistics.fmean(timings) * 1e6
        p50_us = timings[len(timings) // 2] * 1e6
        p99_us = timings[int(len(timings) * 0.99) - 1] * 1e6
        print(f"{size:>12,} {prefill_s:>10.2f} {mean_us:>9.1f} {p50_us:>8.1f} {p99_us:>8.1f}")


if __name__ == "__main__":
    main()
