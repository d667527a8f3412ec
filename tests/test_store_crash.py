"""Done criterion for the store: a kill mid-burst never corrupts or loses committed data."""

from __future__ import annotations

import json
import os
import queue
import random
import runpy
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

from lanchat.store import Profile

REPO_ROOT = Path(__file__).resolve().parents[1]
ROUNDS = 20
BURST = 1000
MAX_KILL_DELAY_S = 0.150
START_TIMEOUT_S = 10.0

# The writer. Even ops write the TinyDB state, odd ops append history; each op carries its
# index so the checker can tell exactly which ops completed.
WRITER = """
from __future__ import annotations

import sys
from pathlib import Path

from lanchat.store import HistoryRecord, Profile


def expected_record(rnd: int, i: int) -> HistoryRecord:
    return HistoryRecord(
        id=f"r{rnd}-{i}",
        conversation="public" if i % 3 else f"peer:{i % 5:064x}",
        sender=f"h{i % 7}",
        sender_key=f"{i % 7:064x}",
        text=f"round {rnd} op {i} " + "x" * (i % 97),
        sent_t=rnd * 10_000.0 + i,
        received_t=rnd * 10_000.0 + i + 0.25,
        outgoing=i % 4 == 0,
    )


def main() -> None:
    directory, rnd = Path(sys.argv[1]), int(sys.argv[2])
    profile = Profile.open(directory)
    print("started", flush=True)
    for i in range(int(sys.argv[3])):
        if i % 2:
            profile.history.append(expected_record(rnd, i))
        elif i % 4 == 0:
            profile.state.set_setting(f"k{i % 7}", {"round": rnd, "op": i, "pad": "y" * (i % 50)})
        else:
            profile.state.set_friendship(f"{i % 9:064x}", f"round{rnd}-op{i}", "friends")
    profile.close()
    print("finished", flush=True)


if __name__ == "__main__":
    main()
"""


def last_state_op(state: dict[str, dict[str, dict[str, object]]], rnd: int) -> int:
    """Highest op index of this round found in the state file (-1 if none)."""
    ops = [-1]
    for doc in state.get("settings", {}).values():
        value = doc["value"]
        assert isinstance(value, dict)
        if value["round"] == rnd:
            ops.append(int(value["op"]))
    prefix = f"round{rnd}-op"
    for doc in state.get("friendships", {}).values():
        handle = doc["handle"]
        assert isinstance(handle, str)
        if handle.startswith(prefix):
            ops.append(int(handle.removeprefix(prefix)))
    return max(ops)


def run_writer_and_kill(script: Path, directory: Path, rnd: int, delay_s: float) -> bool:
    """Start a writer, kill it delay_s after it started writing; True if it was mid-burst.

    Popen.kill is SIGKILL on POSIX and TerminateProcess on Windows: no clean-up either way.
    """
    proc = subprocess.Popen(
        [sys.executable, str(script), str(directory), str(rnd), str(BURST)],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    assert proc.stdout is not None
    lines: queue.Queue[bytes] = queue.Queue()
    # A thread, not select(): Windows selects on sockets only.
    reader = threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout or ()])
    reader.start()
    try:
        started = lines.get(timeout=START_TIMEOUT_S).rstrip()  # "\r\n" on Windows
        assert started == b"started", "writer did not start"
        time.sleep(delay_s)
        proc.kill()
        proc.wait(timeout=START_TIMEOUT_S)
    finally:
        if proc.returncode is None:
            proc.kill()
            proc.wait()
        reader.join(timeout=START_TIMEOUT_S)
        proc.stdout.close()
    return lines.empty()  # no "finished": it died mid-burst


def test_sigkill_mid_burst_never_corrupts_the_profile(tmp_path: Path) -> None:
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    expected_record = runpy.run_path(str(script), run_name="writer")["expected_record"]
    directory = tmp_path / "profile"
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    start = time.monotonic()
    previous_count = 0
    kills_mid_burst = 0

    for rnd in range(ROUNDS):
        delay_s = rng.uniform(0, MAX_KILL_DELAY_S)
        where = f"round {rnd}, kill after {delay_s * 1000:.0f} ms, seed {seed}"
        kills_mid_burst += run_writer_and_kill(script, directory, rnd, delay_s)

        with Profile.open(directory) as profile:  # the dead writer's lock is gone
            everything = profile.history.recent(None, 10**9)
            assert profile.history.count() == len(everything)
        state = json.loads((directory / "state.json").read_text())
        assert state["_meta"]["1"]["format"] == "lanchat-state", where
        assert list(directory.glob(".state.json.*.tmp")) == [], where  # cleaned by open

        db = sqlite3.connect(directory / "history.sqlite3")
        try:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok", where
        finally:
            db.close()

        # Every stored record is intact, and this round's appends form a gapless prefix.
        this_round = []
        for rec in everything:
            rec_round, op = (int(x) for x in rec.id.removeprefix("r").split("-"))
            assert rec == expected_record(rec_round, op), where
            if rec_round == rnd:
                this_round.append(op)
        last_history_op = max(this_round, default=-1)
        assert this_round == list(range(1, last_history_op + 1, 2)), where

        # Ops ran in order and each was durable before the next began, so the last op
        # seen in history and in state can differ by at most one.
        assert abs(last_state_op(state, rnd) - last_history_op) <= 1, where

        assert len(everything) >= previous_count, where
        previous_count = len(everything)

    assert kills_mid_burst >= ROUNDS // 2, f"bursts finished before the kill (seed {seed})"
    assert previous_count > 0
    assert time.monotonic() - start < 30
