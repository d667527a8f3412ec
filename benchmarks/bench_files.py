"""File transfer throughput: FileService (CURVE, chunked, SHA-256 verified) vs a plain TCP copy.

The same file goes from a sender process to a receiver process twice per run: once with
FileService.download (what /send and /share use) and once as a plain TCP stream written to
disk, like ``cat file | nc``. Prints both rates and their ratio (target >= 0.70).

Where: on two network namespaces joined by a veth/bridge virtual LAN (root and iproute2;
namespaces named lcf<pid>x<n>-*, always deleted), unshaped and shaped to ``--shape``
(default 1gbit, a typical wired LAN); otherwise (or with --loopback) on 127.0.0.1.

    python3 benchmarks/bench_files.py [--size-mb 200] [--runs 3] [--shape 1gbit] [--loopback]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import itertools
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import zmq  # noqa: E402
import zmq.asyncio  # noqa: E402
import zmq.auth  # noqa: E402
from zmq.auth.asyncio import AsyncioAuthenticator  # noqa: E402
from zmq.utils import z85  # noqa: E402

from lanchat.core.files import FileOffer  # noqa: E402
from lanchat.files import FileService  # noqa: E402

MB = 1_000_000  # rates in MB/s (decimal, like network gear)
COPY_BUFFER_BYTES = 256 * 1024  # what a read/write copy loop (cat | nc) moves per call
_labs = itertools.count(1)


# ---- sender process ------------------------------------------------------------------------


def _tcp_sender(listener: socket.socket, path: Path) -> None:
    """Send the whole file to every connection: a plain read/write loop, like cat | nc."""
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn, path.open("rb") as file:
            while data := file.read(COPY_BUFFER_BYTES):
                conn.sendall(data)


async def _serve(address: str, path: Path) -> None:
    ctx = zmq.asyncio.Context()
    auth = AsyncioAuthenticator(ctx)
    auth.start()
    auth.configure_curve(domain="*", location=zmq.auth.CURVE_ALLOW_ANY)
    public, secret = (z85.decode(k) for k in zmq.curve_keypair())
    with tempfile.TemporaryDirectory() as tmp:
        service = FileService(
            ctx, address, public, secret, Path(tmp), lambda _e: None, lambda _i, _k: True
        )
        service.start()
        serving = asyncio.create_task(service.serve())
        offer = await service.prepare_offer(path, shared=True)
        listener = socket.create_server((address, 0))
        threading.Thread(target=_tcp_sender, args=(listener, path), daemon=True).start()
        print(json.dumps({"offer": offer.to_json(), "tcp_port": listener.getsockname()[1]}))
        sys.stdout.flush()
        # Until the parent closes our stdin.
        await asyncio.to_thread(sys.stdin.read)
        listener.close()
        await service.close()
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)
    auth.stop()
    ctx.destroy(linger=0)


# ---- receiver process ----------------------------------------------------------------------


def _tcp_copy(address: str, port: int, target: Path, size: int) -> float:
    """Seconds to receive the file over plain TCP and write it (no hash, no fsync: like nc)."""
    buffer = bytearray(COPY_BUFFER_BYTES)
    view = memoryview(buffer)
    got = 0
    start = time.perf_counter()
    with socket.create_connection((address, port)) as conn, target.open("wb") as out:
        while n := conn.recv_into(buffer):
            out.write(view[:n])
            got += n
    elapsed = time.perf_counter() - start
    if got != size:
        raise RuntimeError(f"plain TCP copy got {got} of {size} bytes")
    return elapsed


async def _files_copy(offer: FileOffer, address: str, downloads: Path) -> float:
    """Seconds from download() to a verified file in ``downloads``."""
    ctx = zmq.asyncio.Context()
    public, secret = (z85.decode(k) for k in zmq.curve_keypair())
    failures: list[dict[str, Any]] = []
    service = FileService(
        ctx,
        address,
        public,
        secret,
        downloads,
        lambda e: failures.append(e) if e["ev"] == "file_failed" else None,
        lambda _i, _k: False,
    )
    try:
        start = time.perf_counter()
        path = await service.download(offer)
        elapsed = time.perf_counter() - start
    finally:
        await service.close()
        ctx.destroy(linger=0)
    if path is None:
        raise RuntimeError(f"FileService download failed: {failures}")
    return elapsed


def _fetch(address: str, my_address: str, port: int, offer_json: str, runs: int, tmp: Path) -> None:
    offer = FileOffer.from_json(offer_json)
    tcp_s: list[float] = []
    files_s: list[float] = []
    # CPU seconds of the receiving process (all threads, zmq's I/O thread included): unlike
    # wall time, this hardly depends on what else the machine is doing.
    cpu_s: dict[str, float] = {"tcp": 0.0, "files": 0.0}
    for run in range(runs):
        # Alternate the order so neither side always gets the warmer caches.
        order = ("tcp", "files") if run % 2 == 0 else ("files", "tcp")
        for kind in order:
            work = tmp / f"{kind}-{run}"
            work.mkdir()
            cpu_start = time.process_time()
            if kind == "tcp":
                tcp_s.append(_tcp_copy(address, port, work / "copy.bin", offer.size))
            else:
                files_s.append(asyncio.run(_files_copy(offer, my_address, work)))
            cpu_s[kind] += time.process_time() - cpu_start
            for file in work.iterdir():
                file.unlink()
            work.rmdir()
    per_gb = {kind: cpu / runs / (offer.size / 1e9) for kind, cpu in cpu_s.items()}
    print(json.dumps({"tcp_s": tcp_s, "files_s": files_s, "cpu_s_per_gb": per_gb}))


# ---- orchestration -------------------------------------------------------------------------


def _make_file(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    block = os.urandom(4 * 1024 * 1024)
    with path.open("wb") as out:
        left = size
        while left:
            piece = block[: min(left, len(block))]
            out.write(piece)
            digest.update(piece)
            left -= len(piece)
    return digest.hexdigest()


def _measure(
    spawn: Any, sender_ip: str, receiver_ip: str, source: Path, runs: int, tmp: Path
) -> dict[str, Any]:
    """Run one sender and one receiver process (``spawn(host, argv, **popen)``)."""
    me = [sys.executable, str(Path(__file__).resolve())]
    sender = spawn(
        1,
        [*me, "_serve", sender_ip, str(source)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert sender.stdout is not None
        hello = json.loads(sender.stdout.readline())
        receiver = spawn(
            2,
            [
                *me,
                "_fetch",
                sender_ip,
                receiver_ip,
                str(hello["tcp_port"]),
                hello["offer"],
                str(runs),
                str(tmp),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        out, _ = receiver.communicate(timeout=600)
        if receiver.returncode != 0:
            raise RuntimeError(f"receiver failed (exit {receiver.returncode})")
        result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        return result
    finally:
        with contextlib.suppress(Exception):
            assert sender.stdin is not None
            sender.stdin.close()
        try:
            sender.wait(timeout=10)
        except subprocess.TimeoutExpired:
            sender.kill()
            sender.wait()


def _report(label: str, size: int, result: dict[str, Any]) -> float:
    tcp: list[float] = [size / s / MB for s in result["tcp_s"]]
    files: list[float] = [size / s / MB for s in result["files_s"]]
    ratio = statistics.median(files) / statistics.median(tcp)
    print(f"{label}")
    print(f"  plain TCP copy (like cat | nc)   median {statistics.median(tcp):8.1f} MB/s   "
          f"runs {' '.join(f'{r:.1f}' for r in tcp)}")  # fmt: skip
    print(f"  FileService (CURVE, SHA-256)     median {statistics.median(files):8.1f} MB/s   "
          f"runs {' '.join(f'{r:.1f}' for r in files)}")  # fmt: skip
    print(f"  ratio FileService / TCP          {ratio:8.2f}   (target >= 0.70)")
    cpu = result["cpu_s_per_gb"]
    print(f"  receiver CPU per GB              TCP {cpu['tcp']:.2f} s, "
          f"FileService {cpu['files']:.2f} s")  # fmt: skip
    return ratio


def _loopback(source: Path, size: int, runs: int, tmp: Path) -> None:
    def spawn(_host: int, argv: list[str], **popen: Any) -> subprocess.Popen[Any]:
        return subprocess.Popen(argv, **popen)

    result = _measure(spawn, "127.0.0.1", "127.0.0.1", source, runs, tmp)
    _report(f"loopback 127.0.0.1, {size / MB:.0f} MB, {runs} run(s)", size, result)


def _netns(source: Path, size: int, runs: int, shapes: list[str], tmp: Path) -> None:
    from vlan import VirtualLan

    # Our own prefix (lcf...), so only namespaces this run created are ever touched.
    prefix = f"lcf{os.getpid()}x{next(_labs)}"
    with VirtualLan(prefix, 2, "10.79.0.0/24") as lan:
        for shape in shapes:
            if shape != "none":
                tbf = f"tc qdisc replace dev eth0 root tbf rate {shape} burst 512kb latency 20ms"
                for host in (1, 2):  # both directions: requests one way, data the other
                    lan.run(host, tbf.split(), check=True)
            result = _measure(lan.spawn, lan.ip(1), lan.ip(2), source, runs, tmp)
            where = "unshaped veth" if shape == "none" else f"veth shaped to {shape} (tbf)"
            _report(f"network namespaces, {where}, {size / MB:.0f} MB, {runs} run(s)", size, result)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "_serve":
        asyncio.run(_serve(sys.argv[2], Path(sys.argv[3])))
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "_fetch":
        address, mine, port, offer, runs, work = sys.argv[2:8]
        _fetch(address, mine, int(port), offer, int(runs), Path(work))
        return 0
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--size-mb", type=int, default=200)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--shape", default="1gbit", help="tc rate for the shaped run, or none")
    ap.add_argument("--loopback", action="store_true", help="127.0.0.1 even when root")
    args = ap.parse_args()
    size = args.size_mb * MB
    with tempfile.TemporaryDirectory(prefix="bench-files-") as tmp_name:
        tmp = Path(tmp_name)
        source = tmp / "payload.bin"
        _make_file(source, size)
        from vlan import missing_requirements

        why_not = None if not args.loopback else "--loopback"
        why_not = why_not or missing_requirements()
        if why_not:
            print(f"(no virtual LAN: {why_not})")
            _loopback(source, size, args.runs, tmp)
        else:
            shapes = ["none"] if args.shape == "none" else ["none", args.shape]
            _loopback(source, size, args.runs, tmp)
            _netns(source, size, args.runs, shapes, tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
