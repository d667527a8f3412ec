"""A throw-away virtual LAN of Linux network namespaces, for multi-host tests.

Topology of ``VirtualLan("lct42x1", 3)``::

    lct42x1-sw : bridge br0 (multicast snooping off, like a dumb switch), ports p1..pN
    lct42x1-hI : eth0 10.77.0.I/24, MAC 02:00:0a:4d:00:0I (veth, peer lct42x1-sw:pI), lo

Hosts have no default route, so nothing they send can leave the lab. Interface
names inside namespaces are fixed (eth0, pI, br0), so only namespace names
carry the prefix and several labs (even with the same subnet) coexist.

Teardown kills every process inside the lab's namespaces by PID and deletes
the namespaces on every exit path: normal exit, exception, KeyboardInterrupt,
SIGTERM (turned into KeyboardInterrupt so pytest unwinds) and atexit. Labs
left behind by a crashed run are removed by `remove_stale_labs()`: their
prefix embeds the creating PID, so only labs of dead processes are touched.

Needs root and iproute2.
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import itertools
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from typing import IO, TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence
    from types import FrameType, TracebackType

__all__ = [
    "LabError",
    "VirtualLan",
    "make_prefix",
    "missing_requirements",
    "remove_stale_labs",
    "wait_for_line",
]

PREFIX_STEM = "lct"  # every namespace this module creates starts with it
HOST_IF = "eth0"
BRIDGE = "br0"
NETNS_DIR = "/run/netns"
TERM_GRACE_S = 1.0
_PREFIX_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,31}$")
# Namespaces of ours: lct<pid>x<counter>-sw / -h<N>.
_OURS_RE = re.compile(rf"^{PREFIX_STEM}(\d+)x(\d+)-(?:sw|h\d+)$")

# Windows has no SIGKILL; nothing runs a lab there (missing_requirements), but the module
# must import so that the suite can be collected.
SIGKILL: int = getattr(signal, "SIGKILL", signal.SIGTERM)

_counter = itertools.count(1)
_live: set[VirtualLan] = set()
_live_lock = threading.RLock()
_cleaning = 0
_old_sigterm: Any = None
_stale_removed = False

Side = Literal["host", "switch", "silent"]


class LabError(RuntimeError):
    pass


# ---- iproute2 helpers -------------------------------------------------------


def _ip(args: Sequence[str], ns: str | None = None, check: bool = True) -> str:
    cmd = ["ip", *(["-n", ns] if ns else []), *args]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise LabError(f"`{' '.join(cmd)}` failed: {done.stderr.strip()}")
    return done.stdout


def _list_netns() -> list[str]:
    # lines look like "lct1x1-h1 (id: 3)" or just "lct1x1-h1"
    return [line.split()[0] for line in _ip(["netns", "list"], check=False).splitlines() if line]


def missing_requirements() -> str | None:
    """Why virtual LANs cannot be built here, or None if they can."""
    if not sys.platform.startswith("linux"):
        return f"network namespaces exist only on Linux, not {sys.platform}"
    if os.geteuid() != 0:
        return "not running as root"
    if shutil.which("ip") is None:
        return "`ip` (iproute2) not found"
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        return f"`ip netns list` failed: {probe.stderr.strip()}"
    return None


def pids_in_netns(namespaces: Iterable[str]) -> list[int]:
    """PIDs of every process whose network namespace is one of `namespaces`."""
    wanted: set[tuple[int, int]] = set()
    for ns in namespaces:
        with contextlib.suppress(FileNotFoundError):
            st = os.stat(os.path.join(NETNS_DIR, ns))
            wanted.add((st.st_dev, st.st_ino))
    if not wanted:
        return []
    me = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            st = os.stat(f"/proc/{entry}/ns/net")
        except OSError:  # exited meanwhile, or a kernel thread
            continue
        if (st.st_dev, st.st_ino) in wanted:
            found.append(int(entry))
    return found


def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    if state == "Z":
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reap it if it is our child
        return False
    return True


def _kill_pids(pids: Iterable[int], grace_s: float = TERM_GRACE_S) -> None:
    """SIGTERM, then SIGKILL whatever is left after `grace_s`; strictly by PID."""
    alive = set()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
            alive.add(pid)
    deadline = time.monotonic() + grace_s
    while alive and time.monotonic() < deadline:
        # Processes we did not spawn cannot be waited for; poll /proc briefly.
        time.sleep(0.02)
        alive = {pid for pid in alive if _pid_alive(pid)}
    for pid in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, SIGKILL)


def _delete_namespaces(namespaces: Sequence[str]) -> None:
    _kill_pids(pids_in_netns(namespaces))
    for ns in namespaces:
        _ip(["netns", "del", ns], check=False)
    left = set(namespaces) & set(_list_netns())
    if left:
        raise LabError(f"could not delete namespaces: {sorted(left)}")


def make_prefix() -> str:
    """A prefix unique to this process and lab: lct<pid>x<counter>."""
    return f"{PREFIX_STEM}{os.getpid()}x{next(_counter)}"


def remove_stale_labs(*, force: bool = False) -> list[str]:
    """Delete namespaces left by crashed runs: ours by name, created by a dead PID.

    Runs once per process unless `force`; labs of live processes (a
    concurrent test run) are never touched.
    """
    global _stale_removed
    if _stale_removed and not force:
        return []
    _stale_removed = True
    stale = [
        ns
        for ns in _list_netns()
        if (m := _OURS_RE.match(ns))
        and int(m.group(1)) != os.getpid()
        and not _pid_alive(int(m.group(1)))
    ]
    if stale:
        _delete_namespaces(stale)
    return stale


def _resolve_static_arp(hosts: int) -> bool:
    """Whether the lab needs permanent ARP entries.

    Every namespace shares one kernel neighbour table (gc_thresh3, 1024 by
    default); an all-to-all lab of ~33 hosts overflows it and connections
    stall silently. Permanent entries do not count against the limit.
    """
    try:
        with open("/proc/sys/net/ipv4/neigh/default/gc_thresh3") as f:
            limit = int(f.read())
    except (OSError, ValueError):
        limit = 1024
    return hosts * (hosts - 1) > limit // 2


# ---- exit paths -------------------------------------------------------------


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    if _cleaning:  # never interrupt a teardown half-way
        return
    # KeyboardInterrupt, not SystemExit: pytest stops the session on it and
    # still runs every fixture teardown; scripts unwind through __exit__.
    raise KeyboardInterrupt(f"signal {signum}")


def _register_live(lab: VirtualLan) -> None:
    global _old_sigterm
    with _live_lock:
        if not _live and threading.current_thread() is threading.main_thread():
            _old_sigterm = signal.signal(signal.SIGTERM, _on_sigterm)
        _live.add(lab)


def _unregister_live(lab: VirtualLan) -> None:
    global _old_sigterm
    with _live_lock:
        _live.discard(lab)
        if not _live and _old_sigterm is not None:
            if threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGTERM, _old_sigterm)
            _old_sigterm = None


@atexit.register
def _teardown_all_at_exit() -> None:
    with _live_lock:
        labs = list(_live)
    for lab in labs:
        with contextlib.suppress(Exception):
            lab.down()


# ---- the lab ----------------------------------------------------------------


def _close_streams(proc: subprocess.Popen[Any]) -> None:
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is None:
            continue
        # A reader thread blocked on the pipe holds its lock; the writer is
        # dead now, so it sees EOF at once. Never close under a live reader.
        reader = _reader_threads.get(id(stream))
        if reader is not None:
            reader.join(timeout=2.0)
            if reader.is_alive():
                continue
        with contextlib.suppress(OSError):
            stream.close()


class VirtualLan:
    """A switch namespace with a bridge and `hosts` host namespaces numbered 1..hosts."""

    def __init__(self, prefix: str, hosts: int, subnet: str = "10.77.0.0/24") -> None:
        if not _PREFIX_RE.match(prefix):
            raise LabError(f"bad prefix {prefix!r} (letters, digits, _ and -; max 32)")
        self.prefix = prefix
        self.hosts = hosts
        self.net = ipaddress.IPv4Network(subnet, strict=False)
        if not 1 <= hosts <= self.net.num_addresses - 2:
            raise LabError(f"{hosts} hosts do not fit in {self.net}")
        self.static_arp = _resolve_static_arp(hosts)
        self._procs: list[tuple[int, subprocess.Popen[Any]]] = []
        self._lock = threading.Lock()
        self._created = False

    def __repr__(self) -> str:
        return f"VirtualLan({self.prefix!r}, {self.hosts}, {str(self.net)!r})"

    # -- naming
    @property
    def switch_ns(self) -> str:
        return f"{self.prefix}-sw"

    def ns(self, i: int) -> str:
        self._check_host(i)
        return f"{self.prefix}-h{i}"

    def ip(self, i: int) -> str:
        self._check_host(i)
        return str(self.net.network_address + i)

    def mac(self, i: int) -> str:
        """02:00 + the four bytes of host i's address: fixed, so ARP entries are predictable."""
        return "02:00:" + ":".join(f"{b:02x}" for b in ipaddress.IPv4Address(self.ip(i)).packed)

    @property
    def namespaces(self) -> list[str]:
        return [self.switch_ns] + [self.ns(i) for i in range(1, self.hosts + 1)]

    def _check_host(self, i: int) -> None:
        if not 1 <= i <= self.hosts:
            raise LabError(f"host {i} is not in 1..{self.hosts}")

    # -- life cycle
    def __enter__(self) -> VirtualLan:
        self.up()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.down()

    def up(self) -> VirtualLan:
        """Create the switch, the hosts and the wiring (tears down again if any step fails)."""
        existing = set(self.namespaces) & set(_list_netns())
        if existing:
            raise LabError(f"namespaces already exist: {sorted(existing)}")
        _register_live(self)
        self._created = True
        try:
            sw = self.switch_ns
            _ip(["netns", "add", sw])
            _ip(["link", "set", "lo", "up"], ns=sw)
            # Snooping off: flood multicast to every port like a cheap switch;
            # nobody here sends the IGMP queries snooping would rely on.
            _ip(["link", "add", BRIDGE, "type", "bridge", "mcast_snooping", "0"], ns=sw)
            _ip(["link", "set", BRIDGE, "up"], ns=sw)
            for i in range(1, self.hosts + 1):
                host, port = self.ns(i), f"p{i}"
                _ip(["netns", "add", host])
                # Created straight inside the two namespaces: nothing ever
                # appears in (or collides in) the root namespace.
                veth = ["type", "veth", "peer", "name", port, "netns", sw]
                _ip(["link", "add", HOST_IF, "address", self.mac(i), "netns", host, *veth])
                _ip(["link", "set", port, "master", BRIDGE], ns=sw)
                _ip(["link", "set", port, "up"], ns=sw)
                _ip(["addr", "add", f"{self.ip(i)}/{self.net.prefixlen}", "dev", HOST_IF], ns=host)
                _ip(["link", "set", HOST_IF, "up"], ns=host)
                _ip(["link", "set", "lo", "up"], ns=host)
            if self.static_arp:
                self._add_static_arp()
        except BaseException:
            self.down()
            raise
        return self

    def _add_static_arp(self) -> None:
        for i in range(1, self.hosts + 1):
            batch = "".join(
                f"neigh replace {self.ip(j)} lladdr {self.mac(j)} dev {HOST_IF} nud permanent\n"
                for j in range(1, self.hosts + 1)
                if j != i
            )
            done = subprocess.run(
                ["ip", "-n", self.ns(i), "-batch", "-"],
                input=batch,
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode != 0:
                raise LabError(f"static ARP for host {i} failed: {done.stderr.strip()}")

    def down(self) -> None:
        """Stop everything in the lab and delete its namespaces. Idempotent."""
        global _cleaning
        with _live_lock:
            _cleaning += 1
        try:
            with self._lock:
                procs, self._procs = self._procs, []
            for _, proc in procs:  # a SIGTERM first lets our drivers say goodbye
                if proc.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        proc.terminate()
            deadline = time.monotonic() + TERM_GRACE_S
            for _, proc in procs:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            if self._created:
                # By PID, everything inside: survivors, their children, and
                # anything that entered the namespaces some other way.
                _delete_namespaces([ns for ns in self.namespaces if ns in _list_netns()])
                self._created = False
            for _, proc in procs:
                if proc.poll() is None:  # not in a namespace (cannot happen), still ours
                    proc.kill()
                proc.wait()
                _close_streams(proc)
        finally:
            with _live_lock:
                _cleaning -= 1
            _unregister_live(self)

    # -- running things
    def argv(self, i: int, argv: Sequence[str]) -> list[str]:
        """`argv` wrapped to run inside host i (ip netns exec execs in place: same PID)."""
        return ["ip", "netns", "exec", self.ns(i), *map(str, argv)]

    def spawn(self, i: int, argv: Sequence[str], **popen_kwargs: Any) -> subprocess.Popen[Any]:
        """Start `argv` in host i in the background, in its own session; tracked for teardown."""
        popen_kwargs.setdefault("start_new_session", True)
        proc: subprocess.Popen[Any] = subprocess.Popen(self.argv(i, argv), **popen_kwargs)
        with self._lock:
            self._procs.append((i, proc))
        return proc

    def run(
        self, i: int, argv: Sequence[str], **run_kwargs: Any
    ) -> subprocess.CompletedProcess[Any]:
        """Run `argv` in host i to completion (subprocess.run; text output captured)."""
        run_kwargs.setdefault("capture_output", True)
        run_kwargs.setdefault("text", True)
        run_kwargs.setdefault("timeout", 30)
        check = run_kwargs.pop("check", False)
        return subprocess.run(self.argv(i, argv), check=check, **run_kwargs)

    def procs(self, i: int | None = None) -> list[subprocess.Popen[Any]]:
        with self._lock:
            return [p for host, p in self._procs if i is None or host == i]

    def kill(self, i: int, sig: int = SIGKILL) -> list[int]:
        """Send `sig` to every process in host i (default SIGKILL: vanish without a goodbye)."""
        pids = pids_in_netns([self.ns(i)])
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        if sig in (SIGKILL, signal.SIGTERM):
            for proc in self.procs(i):
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=5)
        return pids

    def link_down(self, i: int, side: Side = "host") -> None:
        """Take host i off the LAN.

        "host": eth0 down inside the host (Wi-Fi switched off: sends fail
        with ENETUNREACH). "switch": the bridge port goes down (walked out of
        range: the host keeps its route, packets vanish silently; a veth pair
        still tells the host that its carrier is gone). "silent": the bridge
        port stops forwarding and the carrier stays up (an access point that
        drops the laptop, a cable cut beyond the switch): nothing tells the host.
        """
        self._set_link(i, side, "down")

    def link_up(self, i: int, side: Side = "host") -> None:
        self._set_link(i, side, "up")

    def partition(self, *groups: Sequence[int]) -> None:
        """Split the switch: the hosts of each group after the first go to a bridge of their
        own (as if the switch were cut in pieces); hosts in no group stay on the first."""
        sw = self.switch_ns
        for n, group in enumerate(groups[1:], start=1):
            bridge = f"br{n}"
            if bridge not in _ip(["-o", "link", "show"], ns=sw):
                _ip(["link", "add", bridge, "type", "bridge", "mcast_snooping", "0"], ns=sw)
                _ip(["link", "set", bridge, "up"], ns=sw)
            for i in group:
                self._check_host(i)
                _ip(["link", "set", f"p{i}", "master", bridge], ns=sw)

    def heal(self) -> None:
        """Every port back on the one bridge."""
        for i in range(1, self.hosts + 1):
            _ip(["link", "set", f"p{i}", "master", BRIDGE], ns=self.switch_ns)

    def _set_link(self, i: int, side: Side, state: str) -> None:
        if side == "host":
            _ip(["link", "set", HOST_IF, state], ns=self.ns(i))
        elif side == "switch":
            self._check_host(i)
            _ip(["link", "set", f"p{i}", state], ns=self.switch_ns)
        elif side == "silent":
            self._check_host(i)
            port_state = "0" if state == "down" else "3"  # disabled / forwarding
            cmd = ["ip", "netns", "exec", self.switch_ns, "bridge", "link", "set"]
            done = subprocess.run(
                [*cmd, "dev", f"p{i}", "state", port_state],
                check=False,
                capture_output=True,
                text=True,
            )
            if done.returncode != 0:
                raise LabError(f"`bridge link set` failed: {done.stderr.strip()}")
        else:
            raise LabError(f"side must be 'host', 'switch' or 'silent', not {side!r}")


# ---- awaiting JSON lines from a subprocess ----------------------------------

_EOF = object()


class JsonLines:
    """Background reader of one stream of JSON lines, with selective receive.

    A daemon thread moves lines into a queue; `wait_for` blocks on the queue
    (no sleep-polling) and returns the oldest not-yet-returned line matching a
    predicate, leaving non-matching ones for later calls, so events can be
    awaited in any order.
    """

    def __init__(self, stream: IO[str] | IO[bytes]) -> None:
        self._queue: queue.Queue[object] = queue.Queue()
        self._pending: list[dict[str, Any]] = []
        self.seen: list[dict[str, Any]] = []  # every JSON line, for failure messages
        self.noise: list[str] = []  # lines that were not JSON objects
        self.closed = False
        self.thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self.thread.start()

    def _pump(self, stream: IO[str] | IO[bytes]) -> None:
        try:
            for raw in stream:
                self._queue.put(raw.decode() if isinstance(raw, bytes) else raw)
        except (OSError, ValueError):  # closed under us at teardown
            pass
        finally:
            self._queue.put(_EOF)

    def _take(self, item: object) -> None:
        if item is _EOF:
            self.closed = True
            return
        assert isinstance(item, str)
        try:
            value = json.loads(item)
        except json.JSONDecodeError:
            value = None
        if isinstance(value, dict):
            self.seen.append(value)
            self._pending.append(value)
        elif item.strip():
            self.noise.append(item.rstrip("\n"))

    def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for index, line in enumerate(self._pending):
                if predicate(line):
                    del self._pending[index]
                    return line
            if self.closed:
                raise EOFError(f"stream ended without a matching line; {self._context()}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no matching line within {timeout} s; {self._context()}")
            try:
                self._take(self._queue.get(timeout=remaining))
            except queue.Empty:
                continue
            # Drain whatever else already arrived before scanning again.
            with contextlib.suppress(queue.Empty):
                while True:
                    self._take(self._queue.get_nowait())

    def _context(self) -> str:
        return f"last lines: {self.seen[-8:]}" + (
            f"; non-JSON: {self.noise[-5:]}" if self.noise else ""
        )


_readers: dict[int, tuple[object, JsonLines]] = {}
_reader_threads: dict[int, threading.Thread] = {}
_readers_lock = threading.Lock()


def reader_for(stream: IO[str] | IO[bytes]) -> JsonLines:
    """The one JsonLines reader of `stream` (created on first use)."""
    with _readers_lock:
        entry = _readers.get(id(stream))
        # Holding the stream in the entry keeps its id from being reused.
        if entry is None or entry[0] is not stream:
            entry = (stream, JsonLines(stream))
            _readers[id(stream)] = entry
            _reader_threads[id(stream)] = entry[1].thread
        return entry[1]


def wait_for_line(
    stream: IO[str] | IO[bytes] | None,
    predicate: Callable[[dict[str, Any]], bool],
    timeout: float,
) -> dict[str, Any]:
    """Block until a JSON-object line from `stream` satisfies `predicate`; return it.

    Each matching line is returned once; non-matching lines stay available to
    later calls. Raises TimeoutError after `timeout` s, EOFError as soon as
    the stream ends (the process died) — both quoting the last lines seen.
    """
    if stream is None:
        raise ValueError("the process was not started with stdout=subprocess.PIPE")
    return reader_for(stream).wait_for(predicate, timeout)
