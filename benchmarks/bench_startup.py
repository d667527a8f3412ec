"""Start-up cost of one `lanchat --headless` process: spawn until it discovers, and until ready.

Each run starts `python3 -m lanchat --headless` (through `runpy`, exactly as `-m` does) with
a fresh profile, so a new key pair, history and state are created as in the benchmarks
that spawn a room. A small driver watches the process's own event stream and, at the first
``status discovering`` and at ``ready``, notes inside the process:

- CPU time of the whole process so far (all threads, ``time.process_time``), ms;
- wall time since the parent spawned it, ms;
- modules loaded (``len(sys.modules)``) and resident memory (VmRSS), MiB.

It then exits at once (``os._exit``), so shutdown is not measured. A second set of runs with
``-X importtime`` sums the import time of everything imported after interpreter start-up
(``site`` and friends excluded; ``-X importtime`` itself adds some overhead). For scale it
also times processes that only import the libraries lanchat is built on (asyncio, pyzmq,
zeroconf, PyNaCl, TinyDB, sqlite3), and pyre with pyzmq (when the ``bench`` extra is in).

    python3 benchmarks/bench_startup.py [--runs 7] [--interface 127.0.0.1] [--existing]
    python3 benchmarks/bench_startup.py --cprofile /tmp/start.prof   # one profiled run
    python3 benchmarks/bench_startup.py --instructions 3             # + valgrind counts

CPU time on a shared machine varies by tens of percent from run to run. ``--instructions N``
adds N runs under valgrind's callgrind and reports the instructions executed until ready:
within ~0.1 % from run to run, the figure to compare two versions by (each such run takes
~10 s).

``--existing`` reuses one profile for every run (a returning user) instead of a fresh one.
Runs are sequential: one process at a time, on an otherwise quiet machine.

Bytecode: an installed lanchat has its ``.pyc`` files; a checkout run with
``PYTHONDONTWRITEBYTECODE=1`` (or with sources edited since) compiles every stale module on
every start, which can cost more than everything else lanchat does until ready. By default
the runs use a private bytecode cache (``PYTHONPYCACHEPREFIX``, filled by one unmeasured
run) so they measure lanchat, not the compiler; ``--as-is`` keeps the inherited environment
and shows what such a checkout pays.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Runs inside the measured process. argv: spawn wall time, cProfile output ("" for none),
# then lanchat's own arguments.
DRIVER = r"""
import os, sys, time
spawned = float(sys.argv[1])
prof_out = sys.argv[2]
sys.argv = ["lanchat", *sys.argv[3:]]
profiler = None
if prof_out:
    import cProfile
    profiler = cProfile.Profile()
    profiler.enable()

def rss_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0

def sample():
    return {
        "cpu_ms": time.process_time() * 1000,
        "wall_ms": (time.time() - spawned) * 1000,
        "modules": len(sys.modules),
        "rss_mib": rss_mib(),
    }

class Tap:
    def __init__(self, real):
        self.real = real
        self.marks = {}
    def write(self, text):
        if '"state":"discovering"' in text and "discovering" not in self.marks:
            self.marks["discovering"] = sample()
        if '"ev":"ready"' in text:
            self.marks["ready"] = sample()
            if profiler is not None:
                profiler.disable()
                profiler.dump_stats(prof_out)
            self.real.write("BENCH " + __import__("json").dumps(self.marks) + "\n")
            self.real.flush()
            os._exit(0)
        if '"ev":"error"' in text:
            self.real.write(text)
            self.real.flush()
            os._exit(3)
        return len(text)
    def flush(self):
        pass

sys.stdout = Tap(sys.stdout)
import runpy
runpy.run_module("lanchat", run_name="__main__", alter_sys=True)
"""


# One handle per invocation: a node still advertising ours elsewhere on the interface would
# stop every run at the handle check.
HANDLE = f"bench-{secrets.token_hex(3)}"


def lanchat_args(profile: Path, interface: str) -> list[str]:
    return ["--headless", "--handle", HANDLE, "--profile", str(profile), "--interface", interface]


def one_run(
    profile: Path,
    interface: str,
    env: dict[str, str],
    importtime: bool = False,
    cprofile: str = "",
    callgrind: bool = False,
) -> tuple[dict[str, dict[str, float]], str]:
    flags = ["-X", "importtime"] if importtime else []
    # valgrind needs the interpreter itself, not a wrapper script (pyenv's shims are).
    python = os.path.realpath(sys.executable)
    cmd = [python, *flags, "-c", DRIVER, repr(time.time()), cprofile]
    cmd += lanchat_args(profile, interface)
    if callgrind:
        cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *cmd]
    proc = subprocess.run(
        cmd,
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=600 if callgrind else 60,
        check=False,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("BENCH "):
            marks: dict[str, dict[str, float]] = json.loads(line[6:])
            return marks, proc.stderr
    raise RuntimeError(f"no ready event (exit {proc.returncode}): {proc.stdout}{proc.stderr}")


def instructions_m(stderr: str) -> float:
    """Millions of instructions callgrind counted (all threads), from its summary."""
    for line in stderr.splitlines():
        if "Collected :" in line:
            return int(line.rsplit(":", 1)[1]) / 1e6
    raise RuntimeError(f"no callgrind summary: {stderr[-500:]}")


def import_ms(stderr: str) -> float:
    """Cumulative import time of the top-level imports after ``site`` (interpreter start-up)."""
    total_us = 0
    after_site = False
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cumulative, name = line.split("|")
        if not cumulative.strip().isdigit():
            continue  # the header line
        if name.startswith("  "):
            continue  # imported by another module: counted in its parent's figure
        if after_site:
            total_us += int(cumulative)
        elif name.strip() == "site":
            after_site = True
    return total_us / 1000


# What lanchat cannot start without: the libraries the product is built on (DEVELOPERS.md)
# and the stdlib modules they pull in. Their import alone is the floor of a lanchat start.
LIBRARIES = "asyncio, zmq, zmq.asyncio, zeroconf, zeroconf.asyncio, nacl.signing, nacl.public, "
LIBRARIES += "tinydb, sqlite3, json, argparse"
PYRE_LIBRARIES = "pyre, zmq"  # pyre's own driver needs nothing else


def interpreter_floor(runs: int, env: dict[str, str], imports: str = "") -> list[float]:
    """CPU ms of `python3 -c pass` (interpreter and site start-up, for scale), or of a
    process that only imports `imports`."""
    out = []
    for _ in range(runs):
        code = "import time; print(time.process_time() * 1000)"
        if imports:
            code = f"import {imports}; {code}"
        python = os.path.realpath(sys.executable)
        proc = subprocess.run(
            [python, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        out.append(float(proc.stdout))
    return out


def spread(values: list[float], digits: int = 1) -> str:
    return "/".join(
        f"{v:.{digits}f}" for v in (min(values), statistics.median(values), max(values))
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--interface", default="127.0.0.1")
    parser.add_argument("--existing", action="store_true", help="reuse one profile")
    parser.add_argument("--cprofile", metavar="FILE", help="one run under cProfile, saved here")
    parser.add_argument("--json", metavar="FILE", help="also save the raw samples here")
    parser.add_argument(
        "--as-is", action="store_true", help="inherited bytecode settings (see the docstring)"
    )
    parser.add_argument(
        "--instructions", type=int, default=0, metavar="N", help="N more runs under callgrind"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ)
        if not args.as_is:
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env["PYTHONPYCACHEPREFIX"] = str(Path(tmp) / "pycache")
            one_run(Path(tmp) / "warmup", args.interface, env)  # fills the cache

        def profile_dir(i: int) -> Path:
            return Path(tmp) / ("shared" if args.existing else f"p{i}")

        if args.cprofile:
            one_run(profile_dir(0), args.interface, env, cprofile=args.cprofile)
            print(f"cProfile of one start (until ready) saved to {args.cprofile}")
            return 0
        if args.existing:
            one_run(profile_dir(0), args.interface, env)  # create it once, unmeasured
        samples: list[dict[str, dict[str, float]]] = []
        imports: list[float] = []
        for i in range(args.runs):
            marks, _ = one_run(profile_dir(i), args.interface, env)
            samples.append(marks)
            if not args.existing:
                shutil.rmtree(profile_dir(i), ignore_errors=True)
        for i in range(args.runs):
            _, stderr = one_run(profile_dir(args.runs + i), args.interface, env, importtime=True)
            imports.append(import_ms(stderr))
        floor = interpreter_floor(args.runs, env)
        libraries = interpreter_floor(args.runs, env, LIBRARIES)
        try:
            pyre_libraries = interpreter_floor(args.runs, env, PYRE_LIBRARIES)
        except subprocess.CalledProcessError:
            pyre_libraries = []  # pyre is the optional `bench` extra
        instructions: list[float] = []
        if args.instructions and shutil.which("valgrind") is None:
            print("--instructions: valgrind is not installed; skipped")
        elif args.instructions:
            for i in range(args.instructions):
                _, stderr = one_run(
                    profile_dir(2 * args.runs + i), args.interface, env, callgrind=True
                )
                instructions.append(instructions_m(stderr))

    kind = "existing profile" if args.existing else "fresh profile each run"
    bytecode = "inherited bytecode settings" if args.as_is else "bytecode cached"
    print(f"lanchat --headless start-up, {args.runs} runs, {kind}, {bytecode} (min/median/max)")
    print(f"  {'':24} {'CPU ms':>17} {'wall ms':>17} {'modules':>13} {'RSS MiB':>17}")
    for mark in ("discovering", "ready"):
        cpu = [s[mark]["cpu_ms"] for s in samples]
        wall = [s[mark]["wall_ms"] for s in samples]
        mods = [s[mark]["modules"] for s in samples]
        rss = [s[mark]["rss_mib"] for s in samples]
        print(
            f"  {'spawn -> ' + mark:24} {spread(cpu):>17} {spread(wall):>17} "
            f"{spread(mods, 0):>13} {spread(rss):>17}"
        )
    print(f"  imports after site (-X importtime), ms: {spread(imports)}")
    print(f"  interpreter alone (python3 -c pass), CPU ms: {spread(floor)}")
    print(f"  interpreter + import of lanchat's libraries only, CPU ms: {spread(libraries)}")
    if pyre_libraries:
        print(f"  interpreter + import of pyre and zmq only, CPU ms: {spread(pyre_libraries)}")
    if instructions:
        print(f"  instructions until ready (callgrind), millions: {spread(instructions)}")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "samples": samples,
                    "import_ms": imports,
                    "floor_cpu_ms": floor,
                    "libraries_cpu_ms": libraries,
                    "pyre_libraries_cpu_ms": pyre_libraries,
                    "instructions_m": instructions,
                }
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
