"""What one broker laptop can carry: one real broker, N simulated clients.

One real ``lanchat --headless`` node is the broker (pinned to CPU 0), a second real node
is its successor, and N lightweight simulated clients speak the real protocol
(``lanchat.core.wire``: signed Hellos, Heartbeats every 0.4 s, Sync when a Beat names a
roster version they lack, real CURVE on a DEALER and a SUB socket each, ZMTP heartbeats,
the nodes' frame-size limit) from a few worker processes pinned to CPU 1. Each node and
the workers live in their own network namespace of a virtual LAN this script creates.

    sudo python3 benchmarks/bench_broker.py --clients 300 [--json FILE]

Figures (the keys of ``--json``):
- ``converge_s``: all N send their Hello at once; until every client is welcomed, holds a
  roster with everyone (N + 2) and has heard a Beat on its SUB socket naming that roster.
- ``idle_cpu_pct``: the broker's CPU (all its threads) over 10 s of an idle room, % of a core.
- ``p99_ms``: one client posts 100 public messages at 20 msgs/s; the 99th percentile of
  the latency from its send to each of the N clients' receipt.
- ``storm_mbit_s``: the broker's egress (its interface's transmitted bytes) averaged over
  the join storm, Mbit/s.
- ``failover_s``: SIGKILL of the broker until every client is welcomed by the successor
  (each client moves to the first peer of its last roster, as a node does). At the kill
  the successor moves to the broker's core: a laptop of its own, as in a hall.

The simulated clients decode a roster once per worker (every client gets the same bytes):
what a real laptop spends on its own CPU is not charged to the two cores here.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import resource
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

CLK_TCK = os.sysconf("SC_CLK_TCK")
PER_WORKER = 250
INFO_PORT = 47100
HEARTBEAT_S = 0.4
RETRY_HELLO_S = 0.1
POSTS = 100
POST_RATE = 20.0
IDLE_S = 10.0

# ============================================================== the simulated clients


def worker_main(args: argparse.Namespace) -> int:
    import zmq
    from zmq.utils.monitor import recv_monitor_message

    from lanchat import transport
    from lanchat.core import wire
    from lanchat.core.election import Candidate, succession
    from lanchat.identity import Identity
    from lanchat.transport import curve_client_socket, limit_frames

    with contextlib.suppress(ValueError, OSError):
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    ctx = zmq.Context(io_threads=1)
    ctx.max_sockets = 20 * args.count + 100
    head = {wire.encode(m)[0]: m.KIND for m in _samples(wire)}
    k_beat, k_roster, k_relay = wire.Kind.BEAT, wire.Kind.ROSTER, wire.Kind.RELAY
    k_welcome, k_refused = wire.Kind.WELCOME, wire.Kind.REFUSED
    k_redirect = wire.Kind.REDIRECT
    k_delta = getattr(wire.Kind, "ROSTER_DELTA", -1)

    def out(**ev: Any) -> None:
        sys.stdout.write(json.dumps(ev) + "\n")
        sys.stdout.flush()

    # Ask the broker's info port where to connect (what --connect does).
    req = ctx.socket(zmq.DEALER)
    req.setsockopt(zmq.LINGER, 0)
    req.connect(f"tcp://{args.broker}:{INFO_PORT}")
    req.send(b"info?")
    if not req.poll(10_000):
        out(ev="error", message="no answer from the broker's info port")
        return 1
    info = json.loads(req.recv())
    req.close()
    room = info["room"]
    broker = (info["address"], int(info["router_port"]), bytes.fromhex(info["curve"]))
    Succ = tuple[str, int, bytes, bytes]
    rosters: dict[bytes, tuple[int, frozenset[bytes], Succ | None]] = {}
    Delta = tuple[int, int, frozenset[bytes], frozenset[bytes], int, Succ | None]
    deltas: dict[bytes, Delta] = {}

    def delta_facts(frames: list[bytes]) -> Delta:
        facts = deltas.get(frames[1])
        if facts is None:
            msg, _ = wire.decode(frames)
            assert isinstance(msg, wire.RosterDelta)
            changed = frozenset(e.id_key for e in msg.changed)
            # The successor, as a node reads it from its copy (a hall's snapshot lists
            # the succession's head).
            by_key = {e.id_key: e for e in msg.changed}
            cands = [Candidate(e.id_key, e.mentor, e.priority, e.started_at) for e in msg.changed]
            ranked = [c.key for c in succession(cands, msg.broker_key)]
            head = getattr(msg, "head", ())  # the broker's own ranking, when it sends it
            order = [k for k in (*head, *ranked) if k != msg.broker_key and k in by_key]
            succ = None
            if order:
                e = by_key[order[0]]
                succ = (e.address, e.router_port, e.curve_key, e.id_key)
            facts = (msg.base, msg.version, changed, frozenset(msg.left), msg.count, succ)
            if len(deltas) > 256:
                deltas.clear()
            deltas[frames[1]] = facts
        return facts

    def roster_facts(frames: list[bytes]) -> tuple[int, frozenset[bytes], Succ | None]:
        # One decode per distinct roster per worker: every client receives the same bytes.
        facts = rosters.get(frames[1])
        if facts is None:
            msg, _ = wire.decode(frames)
            assert isinstance(msg, wire.Roster)
            nxt = next((e for e in msg.peers if e.id_key != msg.broker_key), None)
            succ = None
            if nxt is not None:
                succ = (nxt.address, nxt.router_port, nxt.curve_key, nxt.id_key)
            facts = (msg.version, frozenset(e.id_key for e in msg.peers), succ)
            if len(rosters) > 64:
                rosters.clear()
            rosters[frames[1]] = facts
        return facts

    class Sim:
        def __init__(self, i: int) -> None:
            self.i = i
            self.me = Identity.generate()
            self.handle = f"s{i:04d}"
            hello = wire.Hello(
                handle=self.handle,
                room=room,
                id_key=self.me.key,
                curve_key=self.me.curve_public,
                started_at=round(time.time() + 1000, 3),  # never before the two real nodes
                address=args.address,
                router_port=1,
                info_port=1,
            )
            self.hello = wire.encode(hello, self.me.sign(wire.signed_bytes(hello)))
            self.dealer: Any = None
            self.sub: Any = None
            self.mon: Any = None
            self.target: tuple[str, int, bytes] = broker
            self.welcomed = False
            self.version = -1
            self.keys: set[bytes] = set()
            self.count = 0  # in a hall: how many the broker says are connected
            self.beat_ok = False
            self.succ: tuple[str, int, bytes, bytes] | None = None
            self.next_hb = 0.0
            self.retry_at = math.inf
            self.lost = False
            self.seq = 0

        def connect(self) -> None:
            addr, port, curve = self.target
            d = curve_client_socket(
                ctx, zmq.DEALER, curve, self.me.curve_public, self.me.curve_secret
            )
            limit_frames(d, wire.MAX_FRAMES_BYTES)
            self.mon = d.get_monitor_socket(zmq.EVENT_DISCONNECTED)
            d.connect(f"tcp://{addr}:{port}")
            self.dealer = d
            sockets[d] = (self, "dealer")
            sockets[self.mon] = (self, "mon")
            poller.register(d, zmq.POLLIN)
            poller.register(self.mon, zmq.POLLIN)

        def subscribe(self, pub_port: int) -> None:
            addr, _, curve = self.target
            s = curve_client_socket(ctx, zmq.SUB, curve, self.me.curve_public, self.me.curve_secret)
            limit_frames(s, wire.MAX_FRAMES_BYTES)
            s.setsockopt(zmq.SUBSCRIBE, b"")
            s.setsockopt(zmq.HEARTBEAT_IVL, getattr(transport, "SUB_HEARTBEAT_IVL_MS", 400))
            s.setsockopt(
                zmq.HEARTBEAT_TIMEOUT, getattr(transport, "SUB_HEARTBEAT_TIMEOUT_MS", 1500)
            )
            s.connect(f"tcp://{addr}:{pub_port}")
            self.sub = s
            sockets[s] = (self, "sub")
            poller.register(s, zmq.POLLIN)

        def drop(self) -> None:
            for s in (self.dealer, self.sub, self.mon):
                if s is not None:
                    poller.unregister(s)
                    sockets.pop(s, None)
                    with contextlib.suppress(zmq.ZMQError):
                        if s is self.dealer:
                            s.disable_monitor()
                    s.close(linger=0)
            self.dealer = self.sub = self.mon = None

        def send_hello(self) -> None:
            # As a node: no Welcome in 2 s, introduce ourselves again.
            self.retry_at = min(self.retry_at, time.time() + 2.0)
            self.send(self.hello)

        def send(self, frames: list[bytes]) -> None:
            with contextlib.suppress(zmq.Again):
                self.dealer.send_multipart(frames, zmq.NOBLOCK)

        def converged(self) -> bool:
            # A room: everyone listed. A hall: the count says everyone (the design holds
            # the rest on demand), and the snapshot is in.
            held = max(len(self.keys), self.count)
            return self.welcomed and held >= args.expected and self.beat_ok

    sockets: dict[Any, tuple[Sim, str]] = {}
    poller = zmq.Poller()
    poller.register(sys.stdin.fileno(), zmq.POLLIN)
    sims = [Sim(args.first + j) for j in range(args.count)]
    out(ev="ready")
    phase = "wait"
    reported = False
    poster: Sim | None = None
    posts_left = 0
    next_post = 0.0
    lat_ms: list[float] = []
    stdin_buf = b""
    next_status, refused, syncs = 0.0, 0, 0
    kinds: dict[int, int] = {}
    while True:
        now = time.time()
        timeout = 50
        for item, _ in poller.poll(timeout):
            if item == sys.stdin.fileno():
                chunk = os.read(item, 65536)
                if not chunk:
                    return 0
                stdin_buf += chunk
                while b"\n" in stdin_buf:
                    line, stdin_buf = stdin_buf.split(b"\n", 1)
                    cmd = json.loads(line)
                    if cmd["cmd"] == "join":
                        phase, reported = "join", False
                        for sim in sims:
                            sim.connect()
                            sim.send_hello()
                            sim.next_hb = time.time() + HEARTBEAT_S * (sim.i % 97) / 97
                    elif cmd["cmd"] == "post":
                        poster, posts_left, next_post = sims[0], POSTS, time.time()
                    elif cmd["cmd"] == "report":
                        out(ev="latency", ms=lat_ms, clients=len(sims))
                        lat_ms = []
                    elif cmd["cmd"] == "failover":
                        phase, reported = "failover", False
                    elif cmd["cmd"] == "quit":
                        return 0
                continue
            if item not in sockets:
                continue
            sim, role = sockets[item]
            if role == "mon":
                while True:
                    try:
                        ev = recv_monitor_message(item, zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    if ev["event"] == zmq.EVENT_DISCONNECTED and sim.welcomed:
                        sim.lost = True
                continue
            for _ in range(100):
                try:
                    frames = item.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                kind = head.get(frames[0])
                t_rx = time.time()
                kinds[int(kind or 0)] = kinds.get(int(kind or 0), 0) + 1
                if kind == k_relay:
                    if len(frames) >= 5:
                        inner = json.loads(frames[4])
                        if "sent_t" in inner:
                            lat_ms.append((t_rx - float(inner["sent_t"])) * 1000)
                elif kind == k_beat:
                    body = json.loads(frames[1])
                    if body.get("roster_version", 0) == sim.version:
                        sim.beat_ok = True
                    elif sim.welcomed:
                        syncs += 1
                        sim.send(wire.encode(wire.Sync(roster_version=sim.version)))
                elif kind == k_roster:
                    version, keys, succ = roster_facts(frames)
                    if version > sim.version:
                        sim.version, sim.keys, sim.succ = version, set(keys), succ
                        sim.count = 0
                        sim.beat_ok = False  # until a Beat names this version
                elif kind == k_delta:
                    base, version, changed, left, count, succ = delta_facts(frames)
                    if base <= sim.version < version:
                        if base < 0:  # a hall's snapshot
                            sim.keys, sim.succ = set(), succ
                        sim.keys -= left
                        sim.keys |= changed
                        sim.version, sim.beat_ok, sim.count = version, False, count
                    elif sim.welcomed and sim.version < version:
                        syncs += 1
                        sim.send(wire.encode(wire.Sync(roster_version=sim.version)))
                elif kind == k_welcome:
                    msg, _ = wire.decode(frames)
                    assert isinstance(msg, wire.Welcome)
                    sim.retry_at = math.inf
                    if not sim.welcomed:
                        sim.welcomed = True
                        sim.subscribe(msg.pub_port)
                elif kind == k_redirect:
                    # As a node does: on to the broker it names (one we failed over to
                    # too early, or whom a busy broker's dropped connection left us).
                    msg, _ = wire.decode(frames)
                    assert isinstance(msg, wire.Redirect)
                    to = (msg.address, msg.router_port, msg.curve_key)
                    # (not back to the broker we saw killed: a node's "gone" set)
                    if to != sim.target and not (phase == "failover" and to == broker):
                        sim.target = to
                        sim.lost = True
                        sim.welcomed = True  # so the loop below reconnects
                    elif not sim.welcomed:
                        sim.retry_at = t_rx + RETRY_HELLO_S
                elif kind == k_refused and sim.welcomed:
                    refused += 1
                    # hello_first: the broker dropped us (silent too long): join again.
                    sim.send_hello()
                elif kind is not None and not sim.welcomed:
                    # Refused (not the broker yet), Redirect: introduce ourselves again soon.
                    sim.retry_at = t_rx + RETRY_HELLO_S
        now = time.time()
        hb: list[bytes] | None = None
        for sim in sims:
            if sim.lost:
                # The broker's connection dropped: on to the first peer of the last roster.
                sim.lost = False
                sim.drop()
                if sim.target == broker and sim.succ is not None:
                    addr, port, curve, _key = sim.succ
                    sim.target = (addr, port, curve)
                sim.welcomed, sim.version, sim.beat_ok = False, -1, False
                sim.keys = set()
                sim.connect()
                sim.send_hello()
            elif sim.dealer is not None and now >= sim.retry_at:
                sim.retry_at = math.inf
                sim.send_hello()
            if sim.welcomed and now >= sim.next_hb:
                if hb is None:
                    hb = wire.encode(wire.Heartbeat(t=round(now, 3), status="online"))
                sim.next_hb = now + HEARTBEAT_S
                sim.send(hb)
        if poster is not None and posts_left > 0 and now >= next_post:
            poster.seq += 1
            pub = wire.Public(
                author=poster.me.key,
                handle=poster.handle,
                room=room,
                seq=poster.seq,
                text=f"latency probe {poster.seq}",
                sent_t=time.time(),
            )
            poster.send(wire.encode(pub, poster.me.sign(wire.signed_bytes(pub))))
            posts_left -= 1
            next_post += 1 / POST_RATE
        if args.verbose and now >= next_status:
            next_status = now + 5.0
            sys.stderr.write(
                f"worker {args.first}: welcomed {sum(s.welcomed for s in sims)}, "
                f"held {sum(max(len(s.keys), s.count) >= args.expected for s in sims)}, "
                f"beat {sum(s.beat_ok for s in sims)}, refused {refused}, syncs {syncs}, "
                f"versions {sorted({s.version for s in sims})[:3]}.. kinds {kinds}\n"
            )
        if phase == "join" and not reported and all(s.converged() for s in sims):
            reported = True
            out(ev="converged", t=time.time())
        if (
            phase == "failover"
            and not reported
            and all(s.welcomed and s.target != broker for s in sims)
        ):
            reported = True
            out(ev="failed_over", t=time.time())


def _samples(wire: Any) -> list[Any]:
    """One message of each kind a client may receive, for their header frame."""
    return [
        wire.Welcome(),
        wire.Refused(),
        wire.Beat(),
        wire.Roster(),
        *([wire.RosterDelta(version=1)] if hasattr(wire, "RosterDelta") else []),
        wire.Redirect(),
        wire.Ack(),
        wire.Goodbye(),
        wire.Queue(),
        wire.HandStatus(),
        wire.Relay(inner=wire.Public(), inner_sig=bytes(64)),
    ]


# ============================================================== the harness


class EventFile:
    """A node's headless events, written to a file and read as they come."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.events: list[dict[str, Any]] = []

    def poll(self) -> list[dict[str, Any]]:
        with self.path.open("rb") as f:
            f.seek(self.offset)
            data = f.read()
        done = data[: data.rfind(b"\n") + 1]
        self.offset += len(done)
        new = [json.loads(x) for x in done.splitlines() if x.strip()]
        self.events += new
        return new


def _wait_event(node: EventFile, pred: Any, timeout: float) -> dict[str, Any]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        node.poll()
        for e in node.events:
            if pred(e):
                return e
        time.sleep(0.05)  # polling a file the node appends to
    raise TimeoutError(f"no such event in {node.path}")


class Worker:
    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.buf = b""

    def send(self, **cmd: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        self.proc.stdin.flush()


def _read_all(workers: list[Worker], ev: str, timeout: float) -> list[dict[str, Any]]:
    """One ``ev`` line from every worker (others are dropped)."""
    got: dict[int, dict[str, Any]] = {}
    deadline = time.time() + timeout
    while len(got) < len(workers):
        left = deadline - time.time()
        if left <= 0:
            raise TimeoutError(f"{len(got)} of {len(workers)} workers said {ev!r}")
        fds = {w.proc.stdout.fileno(): i for i, w in enumerate(workers) if i not in got}  # type: ignore[union-attr]
        ready, _, _ = select.select(list(fds), [], [], left)
        for fd in ready:
            i = fds[fd]
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                raise RuntimeError(f"worker {i} ended")
            workers[i].buf += chunk
            while b"\n" in workers[i].buf and i not in got:
                line, workers[i].buf = workers[i].buf.split(b"\n", 1)
                msg = json.loads(line)
                if msg.get("ev") == "error":
                    raise RuntimeError(msg.get("message"))
                if msg.get("ev") == ev:
                    got[i] = msg
    return [got[i] for i in range(len(workers))]


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _thread_cpu_s(pid: int) -> dict[str, float]:
    """CPU seconds by thread name (the Python thread, libzmq's I/O thread, ...)."""
    out: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            stat = (task / "stat").read_text()
            name = stat[stat.index("(") + 1 : stat.rindex(")")]
            fields = stat.rsplit(")", 1)[1].split()
            cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
            out[name] = out.get(name, 0.0) + cpu
    return out


def _tx_bytes(pid: int) -> int:
    """Bytes sent by the network namespace of ``pid`` (its one veth: the broker's egress)."""
    total = 0
    for line in Path(f"/proc/{pid}/net/dev").read_text().splitlines()[2:]:
        name, rest = line.split(":", 1)
        if name.strip() != "lo":
            total += int(rest.split()[8])
    return total


def _node(lan: Any, host: int, cpu: int, handle: str, tmp: Path) -> tuple[Any, EventFile]:
    argv = ["taskset", "-c", str(cpu), sys.executable, "-m", "lanchat", "--headless"]
    argv += ["--handle", handle, "--profile", str(tmp / handle), "--mentor"]
    out = tmp / f"{handle}.jsonl"
    with out.open("wb") as f:
        proc = lan.spawn(host, argv, stdin=subprocess.PIPE, stdout=f, stderr=subprocess.DEVNULL)
    return proc, EventFile(out)


def harness(args: argparse.Namespace) -> int:
    from vlan import VirtualLan, make_prefix, missing_requirements

    why = missing_requirements()
    if why:
        print(f"cannot run: {why}")
        return 1
    n = args.clients
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "lanchat")], check=False)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result: dict[str, Any] = {"clients": n}
    with tempfile.TemporaryDirectory() as tmp_s, VirtualLan(make_prefix(), 3) as lan:
        tmp = Path(tmp_s)
        hub, hub_ev = _node(lan, 1, 0, "hub", tmp)
        _wait_event(hub_ev, lambda e: e["ev"] == "broker" and e.get("self"), 30)
        spare, spare_ev = _node(lan, 2, 1, "spare", tmp)
        _wait_event(spare_ev, lambda e: e["ev"] == "broker" and not e.get("self"), 30)
        nw = max(1, math.ceil(n / PER_WORKER))
        workers = []
        for wi in range(nw):
            first, count = wi * PER_WORKER, min(PER_WORKER, n - wi * PER_WORKER)
            argv = ["taskset", "-c", "1", sys.executable, str(Path(__file__).resolve())]
            argv += ["--worker", "--first", str(first), "--count", str(count)]
            argv += ["--verbose"] if args.verbose else []
            argv += ["--broker", lan.ip(1), "--address", lan.ip(3), "--expected", str(n + 2)]
            proc = lan.spawn(3, argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
            workers.append(Worker(proc))
        _read_all(workers, "ready", 120)
        time.sleep(1.0)  # the two nodes settle (their own adverts, beats)

        # -- the join storm
        tx0, t0 = _tx_bytes(hub.pid), time.time()
        for w in workers:
            w.send(cmd="join")
        try:
            conv = _read_all(workers, "converged", args.timeout)
            t1 = max(float(c["t"]) for c in conv)
            tx1 = _tx_bytes(hub.pid)
            result["converge_s"] = round(t1 - t0, 3)
            result["storm_mbit_s"] = round((tx1 - tx0) * 8 / 1e6 / (t1 - t0), 2)
            result["storm_mb"] = round((tx1 - tx0) / 1e6, 2)
        except TimeoutError as exc:
            result["converge_s"] = None
            result["converge_error"] = str(exc)
            tx1 = _tx_bytes(hub.pid)
            result["storm_mbit_s"] = round((tx1 - tx0) * 8 / 1e6 / args.timeout, 2)
            result["storm_mb"] = round((tx1 - tx0) / 1e6, 2)
        print(f"converge: {result}", flush=True)

        # -- idle
        time.sleep(2.0)
        c0, tx0, th0 = _cpu_s(hub.pid), _tx_bytes(hub.pid), _thread_cpu_s(hub.pid)
        time.sleep(IDLE_S)
        c1, tx1, th1 = _cpu_s(hub.pid), _tx_bytes(hub.pid), _thread_cpu_s(hub.pid)
        result["idle_cpu_pct"] = round((c1 - c0) / IDLE_S * 100, 1)
        result["idle_cpu_pct_by_thread"] = {
            name: round((cpu - th0.get(name, 0.0)) / IDLE_S * 100, 1)
            for name, cpu in th1.items()
            if cpu - th0.get(name, 0.0) > 0
        }
        result["idle_kbit_s"] = round((tx1 - tx0) * 8 / 1e3 / IDLE_S, 1)

        # -- latency at 20 msgs/s
        c0, tx0 = _cpu_s(hub.pid), _tx_bytes(hub.pid)
        workers[0].send(cmd="post")
        time.sleep(POSTS / POST_RATE + 2.0)
        c1, tx1 = _cpu_s(hub.pid), _tx_bytes(hub.pid)
        for w in workers:
            w.send(cmd="report")
        reports = _read_all(workers, "latency", 60)
        lat = sorted(x for r in reports for x in r["ms"])
        result["latency_samples"] = len(lat)
        result["latency_expected"] = POSTS * n
        if lat:
            result["p50_ms"] = round(statistics.median(lat), 1)
            result["p99_ms"] = round(lat[min(len(lat) - 1, int(len(lat) * 0.99))], 1)
        else:
            result["p99_ms"] = None
        result["bytes_per_post"] = round((tx1 - tx0) / POSTS)
        result["post_cpu_ms"] = round((c1 - c0) / POSTS * 1000, 2)

        # -- what the broker's relay dropped (its status answer's counters)
        hub.stdin.write(b'{"cmd":"status"}\n')
        hub.stdin.flush()
        with contextlib.suppress(TimeoutError):
            status = _wait_event(hub_ev, lambda e: e["ev"] == "status" and "counters" in e, 10)
            result["broker_counters"] = status["counters"]

        # -- failover
        for w in workers:
            w.send(cmd="failover")
        t_kill = time.time()
        os.kill(hub.pid, signal.SIGKILL)
        # The successor is a laptop of its own: it gets the core the broker had (every
        # thread of it), not a share of the clients' core.
        for task in Path(f"/proc/{spare.pid}/task").iterdir():
            with contextlib.suppress(OSError):
                os.sched_setaffinity(int(task.name), {0})
        try:
            fo = _read_all(workers, "failed_over", 60)
            result["failover_s"] = round(max(float(x["t"]) for x in fo) - t_kill, 3)
        except TimeoutError as exc:
            result["failover_s"] = None
            result["failover_error"] = str(exc)
        for w in workers:
            with contextlib.suppress(OSError):
                w.send(cmd="quit")
        for w in workers:
            with contextlib.suppress(subprocess.TimeoutExpired):
                w.proc.wait(5)
        spare.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            spare.wait(5)
    result["conditions"] = (
        f"{os.cpu_count()} cores shared with other work; broker pinned to CPU 0, "
        f"successor and {nw} client processes to CPU 1; one virtual LAN (veth, bridge)"
    )
    print(json.dumps(result, indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--json", type=Path, help="write the figures here")
    ap.add_argument("--timeout", type=float, default=120.0, help="for the join storm (s)")
    ap.add_argument("--verbose", action="store_true", help="client progress every 5 s")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--first", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--broker", default="", help=argparse.SUPPRESS)
    ap.add_argument("--address", default="", help=argparse.SUPPRESS)
    ap.add_argument("--expected", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker_main(args)
    return harness(args)


if __name__ == "__main__":
    sys.exit(main())
