"""File transfer adapter: a CURVE file server for our offers and a downloader for others'.

Files go peer to peer, never through the broker. Each node binds one ROUTER (CURVE server,
ZAP domain ``lanchat``) on its LAN address; a receiver connects a DEALER with the sender's
CURVE key from the offer and pulls chunks, keeping ``WINDOW_CHUNKS`` requests in flight.

Wire (all integers big-endian)::

    request  DEALER -> ROUTER   [offer_id: 16 bytes, index: u64]
    reply    ROUTER -> DEALER   [offer_id: 16 bytes, index: u64, status, data]

``status`` is ``ok`` (``data`` is the chunk) or one of ``denied`` / ``unknown`` / ``range`` /
``io`` (``data`` empty). The receiver writes chunks in order to a hidden ``.part`` file, so a
``.part`` is always a verified-length prefix and a later attempt resumes from its size.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import os
import secrets
import shutil
import stat
import time
import typing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import zmq
import zmq.asyncio

from lanchat import oscompat
from lanchat.core.files import (
    CHUNK_BYTES,
    MAX_FILE_BYTES,
    WINDOW_CHUNKS,
    FileOffer,
    Progress,
    chunk_span,
    safe_filename,
    unique_name,
)
from lanchat.core.units import human_size
from lanchat.transport import (
    authenticated_key,
    curve_client_socket,
    curve_server_socket,
    limit_frames,
)
from lanchat.transport import drain_nowait as _drain

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

__all__ = ["FREE_SPACE_MARGIN_BYTES", "FileError", "FileService"]

FREE_SPACE_MARGIN_BYTES: Final = 50 * 1024**2  # a download never leaves the disk fuller
STALL_TIMEOUT_S: Final = 60.0  # a download fails after this long without a single new chunk
RETRY_S: Final = 1.0  # silence before re-requesting (doubles up to RETRY_MAX_FACTOR times)
RETRY_MAX_FACTOR: Final = 8
_OK: Final = b"ok"
_DENIED: Final = b"denied"
_UNKNOWN: Final = b"unknown"
_RANGE: Final = b"range"
_IO: Final = b"io"
# A request for this chunk index says "fetched whole, and the SHA-256 matched": the server
# tells its user who has the file (``file_fetched``). No chunk has this index.
_FETCHED_INDEX: Final = (1 << 64) - 1
_FETCHED_LINGER_MS: Final = 1000  # the notice may still leave after its socket is closed
# Server status -> file_failed reason on the receiving side.
_REASONS: Final = {_DENIED: "denied", _UNKNOWN: "withdrawn", _RANGE: "protocol", _IO: "unreadable"}
_HASH_READ_BYTES: Final = 1024 * 1024
_SERVE_BATCH: Final = 4 * WINDOW_CHUNKS  # requests answered per thread hop, across clients
_EMPTY_SHA256: Final = hashlib.sha256().hexdigest()
_OFFER_ID_BYTES: Final = 16
# Frame size limits (see lanchat.transport): the server reads only requests, whose largest
# frame is an offer id. A downloader takes frames up to twice the offer's chunk size, so a
# server that sends more than it offered is caught here and told (too_large) rather than
# cut off silently by libzmq; anything bigger is cut off unread, and the download ends for
# lack of data.
_REQUEST_FRAME_MAX_BYTES: Final = _OFFER_ID_BYTES
_CHUNK_FRAME_FACTOR: Final = 2
# Replies a downloader's socket queues: requests in flight are a window, so more than a few
# windows are unsolicited; with the frame limit this bounds what a server can make us hold.
_DOWNLOAD_RCVHWM: Final = 4 * WINDOW_CHUNKS


class FileError(Exception):
    """A file cannot be offered: missing, not a regular file, too large or unreadable."""


class _Failed(Exception):
    """A download ends without a file; ``reason`` goes into the file_failed event.

    ``discard``: the sender lied (more or other bytes than it offered), so its partial file
    is worth nothing and is deleted rather than kept for a resume.
    """

    def __init__(self, reason: str, message: str, *, discard: bool = False) -> None:
        super().__init__(message)
        self.reason = reason
        self.discard = discard


# eq=False: these records are looked up by offer id, never compared or hashed; generated
# __eq__ and __hash__ methods would only add to every node's start-up time.
@dataclass(frozen=True, slots=True, eq=False)
class _Served:
    """One of our offers: its descriptor stays open, so the path cannot be swapped later."""

    offer: FileOffer
    fd: int


@dataclass(frozen=True, slots=True, eq=False)
class _Download:
    """One running download; ``stop`` (resolved with a reason) and ``ended`` let decline()
    and close() stop it and wait for it."""

    offer: FileOffer
    stop: asyncio.Future[str]
    ended: asyncio.Event

    def abort(self, reason: str) -> None:
        if not self.stop.done():
            self.stop.set_result(reason)


def _pread_all(spans: list[tuple[int, int, int]]) -> list[bytes | None]:
    """``(fd, offset, length)`` -> the bytes, or None if unreadable or the file shrank."""
    out: list[bytes | None] = []
    for fd, offset, length in spans:
        try:
            data: bytes | None = oscompat.pread(fd, length, offset)
        except OSError:
            data = None
        # A file that shrank after it was offered cannot be served correctly.
        out.append(data if data is not None and len(data) == length else None)
    return out


def _hash_fd(fd: int, size: int) -> str:
    digest = hashlib.sha256()
    offset = 0
    while offset < size:
        data = oscompat.pread(fd, min(_HASH_READ_BYTES, size - offset), offset)
        if not data:
            raise OSError(errno.EIO, "file shrank while it was being hashed")
        digest.update(data)
        offset += len(data)
    return digest.hexdigest()


def _hash_prefix(fd: int, length: int, digest: hashlib._Hash) -> None:
    offset = 0
    while offset < length:
        data = oscompat.pread(fd, min(_HASH_READ_BYTES, length - offset), offset)
        if not data:
            raise OSError(errno.EIO, "partial file shrank while resuming")
        digest.update(data)
        offset += len(data)


def _write_chunks(fd: int, chunks: list[memoryview], digest: hashlib._Hash) -> None:
    # Runs in a worker thread: hashlib and os.write release the GIL on large buffers, so the
    # event loop keeps receiving while this one writes.
    for chunk in chunks:
        digest.update(chunk)
        view = chunk
        while view:
            view = view[os.write(fd, view) :]


def _free_bytes(directory: Path) -> int:
    probe = directory
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free


def _publish(part: Path, directory: Path, name: str) -> Path:
    """Give ``part`` a final name in ``directory`` that no existing file has; never overwrite."""
    while True:
        final = directory / unique_name(os.listdir(directory), name)
        try:
            # link() fails if the name exists, even if someone created it a moment ago.
            os.link(part, final)
        except FileExistsError:
            continue
        except OSError:
            # File systems without hard links: claim the name exclusively, then move over it.
            try:
                os.close(
                    os.open(final, os.O_WRONLY | os.O_CREAT | os.O_EXCL | oscompat.O_BINARY, 0o644)
                )
            except FileExistsError:
                continue
            os.replace(part, final)
            return final
        part.unlink()
        return final


class FileService:
    """Serves this node's offers and downloads other nodes' offers into ``downloads``."""

    def __init__(
        self,
        ctx: zmq.asyncio.Context,
        address: str,
        curve_public: bytes,
        curve_secret: bytes,
        downloads: Path,
        emit: Callable[[dict[str, Any]], None],
        authorize: Callable[[str, bytes], bool],
        *,
        on_fetched: Callable[[str, bytes], None] = lambda _offer_id, _key: None,
        max_file_bytes: int = MAX_FILE_BYTES,
        stall_timeout_s: float = STALL_TIMEOUT_S,
        retry_s: float = RETRY_S,
    ) -> None:
        if address in ("", "0.0.0.0", "*"):
            raise ValueError("the file server binds a LAN address, never every interface")
        self.address = address
        self.curve_public = curve_public
        self._curve_secret = curve_secret
        self.downloads = downloads
        self.max_file_bytes = max_file_bytes
        self.stall_timeout_s = stall_timeout_s
        self.retry_s = retry_s
        self._ctx = ctx
        self._emit = emit
        self._authorize = authorize
        self._on_fetched = on_fetched  # (offer id, the fetcher's CURVE key)
        self._router: zmq.asyncio.Socket | None = None
        self.port = 0
        self._served: dict[str, _Served] = {}
        self._downloads: dict[str, _Download] = {}
        self._serve_tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    # ---- serving -------------------------------------------------------------------------

    def start(self, port: int = 0) -> int:
        """Bind the file server on our LAN address (``port`` 0: any free port); its port."""
        if self._router is not None or self._closed:
            raise RuntimeError("a file service starts once")
        # Every client's CURVE key is stamped on its messages: authorize() decides per
        # offer who may fetch it.
        sock = curve_server_socket(self._ctx, zmq.ROUTER, self.curve_public, self._curve_secret)
        limit_frames(sock, _REQUEST_FRAME_MAX_BYTES)
        try:
            if port:
                sock.bind(f"tcp://{self.address}:{port}")
                self.port = port
            else:
                self.port = int(sock.bind_to_random_port(f"tcp://{self.address}"))
        except zmq.ZMQError:
            sock.close(linger=0)
            raise
        self._router = sock
        return self.port

    async def serve(self) -> None:
        """Answer chunk requests until close()."""
        sock = self._router
        if sock is None:
            raise RuntimeError("start() the file service before serve()")
        task = asyncio.current_task()
        assert task is not None
        self._serve_tasks.add(task)
        try:
            while True:
                batch = [await sock.recv_multipart(copy=False), *_drain(sock, _SERVE_BATCH)]
                for reply in await self._answer(batch):
                    await sock.send_multipart(reply, copy=False)
        finally:
            self._serve_tasks.discard(task)

    async def _answer(self, batch: list[list[zmq.Frame]]) -> list[list[Any]]:
        """Replies to a batch of requests; the chunks are read together, in one thread hop."""
        replies: list[list[Any]] = []
        heads: list[list[bytes]] = []
        wanted: list[tuple[_Served, int]] = []
        for frames in batch:
            if (
                len(frames) != 3
                or len(frames[1].bytes) != _OFFER_ID_BYTES
                or len(frames[2].bytes) != 8
            ):
                continue  # not our protocol: a silent drop gives a prober nothing to learn
            head = [frames[0].bytes, frames[1].bytes, frames[2].bytes]
            offer_id = head[1].hex()
            served = self._served.get(offer_id)
            index = int.from_bytes(head[2], "big")
            if served is None:
                replies.append([*head, _UNKNOWN, b""])
            elif not self._authorize(offer_id, authenticated_key(frames[1])):
                replies.append([*head, _DENIED, b""])
            elif index == _FETCHED_INDEX:
                self._on_fetched(offer_id, authenticated_key(frames[1]))  # no answer needed
            elif not 0 <= index < served.offer.chunks:
                replies.append([*head, _RANGE, b""])
            else:
                heads.append(head)
                wanted.append((served, index))
        if wanted:
            chunks = await self._read_chunks(wanted)
            for head, data in zip(heads, chunks, strict=True):
                replies.append([*head, _OK, data] if data is not None else [*head, _IO, b""])
        return replies

    async def _read_chunks(self, wanted: list[tuple[_Served, int]]) -> list[bytes | None]:
        """The requested chunks (None: unreadable), read in a thread: a slow disk never
        stalls the chat, and one hop per batch keeps the thread hand-offs off the hot path."""
        spans = [
            (served.fd, *chunk_span(served.offer.size, served.offer.chunk_size, index))
            for served, index in wanted
        ]
        return await asyncio.to_thread(_pread_all, spans)

    async def prepare_offer(self, path: Path, shared: bool) -> FileOffer:
        """Check, hash and register ``path``; the offer to send. Raises FileError."""
        if self._router is None:
            raise FileError("the file service is not started")
        fd = _open_regular(path)
        try:
            size = os.fstat(fd).st_size
            if size > self.max_file_bytes:
                raise FileError(
                    f"{path.name} is {human_size(size)}; files up to "
                    f"{human_size(self.max_file_bytes)} can be sent"
                )
            try:
                digest = await asyncio.to_thread(_hash_fd, fd, size)
            except OSError as exc:
                raise FileError(f"cannot read {path}: {exc.strerror or exc}") from exc
            offer = FileOffer(
                offer_id=secrets.token_hex(16),
                name=safe_filename(path.name),
                size=size,
                sha256=digest,
                address=self.address,
                port=self.port,
                server_key=self.curve_public,
                chunk_size=CHUNK_BYTES,
                shared=shared,
            )
        except BaseException:
            os.close(fd)
            raise
        self._served[offer.offer_id] = _Served(offer, fd)
        return offer

    async def restore_offer(self, offer: FileOffer, path: Path) -> None:
        """Serve an offer made before a restart again, if ``path`` still has the same content."""
        if self._router is None:
            raise FileError("the file service is not started")
        if (offer.address, offer.port, offer.server_key) != (
            self.address,
            self.port,
            self.curve_public,
        ):
            raise FileError("the offer names another file server")
        fd = _open_regular(path)
        try:
            size = os.fstat(fd).st_size
            digest = await asyncio.to_thread(_hash_fd, fd, size) if size == offer.size else ""
            if digest != offer.sha256:
                raise FileError(f"{path} changed since it was offered")
        except OSError as exc:
            os.close(fd)
            raise FileError(f"cannot read {path}: {exc.strerror or exc}") from exc
        except BaseException:
            os.close(fd)
            raise
        self.withdraw(offer.offer_id)
        self._served[offer.offer_id] = _Served(offer, fd)

    def withdraw(self, offer_id: str) -> None:
        """Stop serving an offer; later requests for it are answered ``unknown``."""
        served = self._served.pop(offer_id, None)
        if served is not None:
            os.close(served.fd)

    # ---- downloading ---------------------------------------------------------------------

    async def download(self, offer: FileOffer) -> Path | None:
        """Fetch, verify and publish ``offer``; the final path, or None (file_failed emitted)."""
        name = safe_filename(offer.name)  # FileOffer insists already; kept for defence in depth
        if offer.offer_id in self._downloads:
            self._fail(offer, name, _Failed("busy", "this file is already being downloaded"))
            return None
        job = _Download(offer, asyncio.get_running_loop().create_future(), asyncio.Event())
        self._downloads[offer.offer_id] = job
        try:
            return await self._download(job, name)
        except _Failed as failed:
            self._fail(offer, name, failed)
            return None
        except asyncio.CancelledError:
            self._fail(offer, name, _Failed("cancelled", "the download was cancelled"))
            raise
        finally:
            del self._downloads[offer.offer_id]
            job.ended.set()

    def decline(self, offer_id: str) -> None:
        """Refuse an offer: nothing is written, and a running download of it stops."""
        job = self._downloads.get(offer_id)
        if job is not None:
            job.abort("declined")  # the download wakes up, deletes its .part and reports
            return
        self._emit(
            {
                "ev": "file_failed",
                "id": offer_id,
                "name": "",
                "reason": "declined",
                "message": "offer declined",
            }
        )

    def _fail(self, offer: FileOffer, name: str, failed: _Failed) -> None:
        self._emit(
            {
                "ev": "file_failed",
                "id": offer.offer_id,
                "name": name,
                "reason": failed.reason,
                "message": str(failed),
            }
        )

    async def _download(self, job: _Download, name: str) -> Path:
        offer = job.offer
        if self._closed:
            raise _Failed("cancelled", "the file service is closed")
        if offer.size > self.max_file_bytes:
            raise _Failed(
                "too_large",
                f"{name} is {human_size(offer.size)}; "
                f"the limit is {human_size(self.max_file_bytes)}",
            )
        part = self.downloads / f".{name}.{offer.offer_id}.part"
        have = _resumable_bytes(part, offer)
        need = offer.size - have
        free = _free_bytes(self.downloads)
        if free - need < FREE_SPACE_MARGIN_BYTES:
            raise _Failed(
                "no_space",
                f"{name} needs {human_size(need)} but only {human_size(free)} is free in "
                f"{self.downloads} (keeping {human_size(FREE_SPACE_MARGIN_BYTES)} spare)",
            )
        self.downloads.mkdir(parents=True, exist_ok=True)
        fetch = _Fetch(self, job, name, part, have)
        try:
            digest = await fetch.run()
        except _Failed as failed:
            if failed.discard:
                await fetch.discard()
            raise
        finally:
            fetch.close()
        if digest != offer.sha256:
            part.unlink(missing_ok=True)
            raise _Failed("hash_mismatch", f"{name} arrived damaged (SHA-256 mismatch); deleted")
        final = await asyncio.to_thread(_publish, part, self.downloads, name)
        self._tell_fetched(offer)
        self._emit(
            {
                "ev": "file_done",
                "id": offer.offer_id,
                "name": final.name,
                "path": str(final),
                "size": offer.size,
                "sha256": offer.sha256,
            }
        )
        return final

    def _tell_fetched(self, offer: FileOffer) -> None:
        """Tell the server we have the whole file, verified (best effort: a courtesy)."""
        sock = self._client_socket(offer)
        try:
            frames = [bytes.fromhex(offer.offer_id), _FETCHED_INDEX.to_bytes(8, "big")]
            with contextlib.suppress(zmq.ZMQError):
                sock.send_multipart(frames, zmq.NOBLOCK)
        finally:
            sock.close(linger=_FETCHED_LINGER_MS)

    def _client_socket(self, offer: FileOffer) -> zmq.asyncio.Socket:
        sock = curve_client_socket(
            self._ctx, zmq.DEALER, offer.server_key, self.curve_public, self._curve_secret
        )
        limit_frames(sock, _CHUNK_FRAME_FACTOR * offer.chunk_size)
        sock.setsockopt(zmq.RCVHWM, _DOWNLOAD_RCVHWM)
        sock.connect(f"tcp://{offer.address}:{offer.port}")
        return sock

    async def close(self) -> None:
        """Stop serving and downloading (partial files stay for a later resume)."""
        self._closed = True
        jobs = list(self._downloads.values())
        for job in jobs:
            job.abort("cancelled")
        serving = set(self._serve_tasks)
        for task in serving:
            task.cancel()
        if serving:  # wait() rather than await: their CancelledError is not ours to raise
            await asyncio.wait(serving)
        if self._router is not None:
            self._router.close(linger=0)
            self._router = None
        for offer_id in list(self._served):
            self.withdraw(offer_id)
        for job in jobs:
            await job.ended.wait()


class _Fetch:
    """The receiving loop of one download: windowed requests, in-order writes, retries."""

    def __init__(
        self, service: FileService, job: _Download, name: str, part: Path, have: int
    ) -> None:
        self.service = service
        self.job = job
        self.offer = job.offer
        self.name = name
        self.part = part
        self.total = self.offer.chunks
        self.written = have // self.offer.chunk_size  # chunks safely in the .part
        self.next_request = self.written
        self.outstanding: set[int] = set()
        # Arrived, waiting for earlier chunks or the writer; each view keeps its zmq frame alive.
        self.received: dict[int, memoryview] = {}
        self.digest = hashlib.sha256()
        self.fd: int | None = None
        self.writer: asyncio.Task[None] | None = None
        self.writing = 0  # chunks handed to the writer thread
        self.sock: zmq.asyncio.Socket | None = None
        self.recv: asyncio.Future[list[zmq.Frame]] | None = None
        self.raw_id = bytes.fromhex(self.offer.offer_id)

    async def run(self) -> str:
        """Fetch every missing chunk into the .part; the SHA-256 of the whole file."""
        have = self.written * self.offer.chunk_size
        if have or self.part.exists():
            self._open_part(have)
            assert self.fd is not None
            await asyncio.to_thread(_hash_prefix, self.fd, have, self.digest)
        if self.total == 0:
            self._open_part(0)
            return self.digest.hexdigest()
        start = time.monotonic()
        progress = Progress(self.offer.size, start, have)
        retry = self.service.retry_s
        last_progress = last_reply = start
        self.sock = self.service._client_socket(self.offer)
        while self.written < self.total:
            await self._check_abort()
            await self._request_more()
            deadline = min(last_reply + retry, last_progress + self.service.stall_timeout_s)
            got = await self._wait(max(0.0, deadline - time.monotonic()))
            now = time.monotonic()
            if got:
                last_progress = last_reply = now
                retry = self.service.retry_s
            if self.writer is not None and self.writer.done():
                await self._writer_done()
                progress.update(now, min(self.written * self.offer.chunk_size, self.offer.size))
                if progress.should_report(now):
                    self._report(progress)
            self._flush()
            if now - last_progress > self.service.stall_timeout_s:
                raise _Failed(
                    "unreachable",
                    f"no data for {self.service.stall_timeout_s:g} s from the sender of "
                    f"{self.name}; the partial file is kept to resume later",
                )
            if self.outstanding and now - last_reply >= retry:
                # Silence: the link dropped or requests were lost. A fresh socket discards
                # whatever the dead connection still held; ask again for everything missing.
                self._reconnect()
                last_reply = now
                retry = min(retry * 2, self.service.retry_s * RETRY_MAX_FACTOR)
            elif not self.outstanding:
                # Waiting on our own writer (a slow disk) is not the sender's silence.
                last_progress = last_reply = now
        assert self.fd is not None
        await asyncio.to_thread(os.fsync, self.fd)
        return self.digest.hexdigest()

    def _open_part(self, have: int) -> None:
        if self.fd is not None:
            return
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | oscompat.O_BINARY
        try:
            self.fd = os.open(self.part, flags, 0o600)
            if not stat.S_ISREG(os.fstat(self.fd).st_mode):
                raise OSError(errno.EINVAL, "not a regular file")
            # Only whole chunks count: a torn last write is dropped and fetched again.
            os.ftruncate(self.fd, have)
            os.lseek(self.fd, have, os.SEEK_SET)
        except OSError as exc:
            raise _Failed("write_error", f"cannot write {self.part}: {exc.strerror}") from exc

    async def _check_abort(self) -> None:
        reason = self.job.stop.result() if self.job.stop.done() else None
        if reason == "declined":
            if self.writer is not None:
                # Windows cannot delete a file that is still open: let the writer finish, so
                # that close() closes the descriptor now, not when the writer is done.
                await asyncio.gather(self.writer, return_exceptions=True)
                self.writer = None
            self.close()
            self.part.unlink(missing_ok=True)
            raise _Failed("declined", "offer declined; the partial file was deleted")
        if reason is not None:
            raise _Failed(reason, "the download was stopped; the partial file is kept")

    async def _request_more(self) -> None:
        assert self.sock is not None
        # Bound memory: chunks requested but not yet written stay within two windows.
        while (
            self.next_request < self.total
            and len(self.outstanding) < WINDOW_CHUNKS
            and self.next_request - self.written < 2 * WINDOW_CHUNKS
        ):
            index = self.next_request
            self.next_request += 1
            if index in self.received:  # arrived before a retry asked for it again
                continue
            await self.sock.send_multipart([self.raw_id, index.to_bytes(8, "big")])
            self.outstanding.add(index)

    async def _wait(self, timeout_s: float) -> bool:
        """Wait for a reply or the writer; take every queued reply. True if a chunk was new."""
        assert self.sock is not None
        if self.recv is None:
            self.recv = typing.cast(
                "asyncio.Future[list[zmq.Frame]]", self.sock.recv_multipart(copy=False)
            )
        waits: set[asyncio.Future[Any]] = {self.recv, self.job.stop}
        if self.writer is not None:
            waits.add(self.writer)
        # The receive stays pending across calls: no message is lost to a timeout.
        await asyncio.wait(waits, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        if not self.recv.done():
            return False
        recv, self.recv = self.recv, None
        got = self._accept(recv.result())
        for frames in _drain(self.sock, 4 * WINDOW_CHUNKS):
            got = self._accept(frames) or got
        return got

    def _accept(self, frames: list[zmq.Frame]) -> bool:
        if len(frames) != 4 or frames[0].bytes != self.raw_id or len(frames[1].bytes) != 8:
            return False
        index = int.from_bytes(frames[1].bytes, "big")
        if index not in self.outstanding:
            return False  # a duplicate after a retry
        status = frames[2].bytes
        if status != _OK:
            reason = _REASONS.get(status, "protocol")
            raise _Failed(reason, _explain(reason, self.name))
        _offset, length = chunk_span(self.offer.size, self.offer.chunk_size, index)
        data = frames[3].buffer
        if len(data) > length:
            raise _Failed(
                "too_large",
                f"the sender of {self.name} sent more than it offered; the partial file "
                "was deleted",
                discard=True,
            )
        if len(data) < length:
            raise _Failed(
                "protocol",
                f"the sender of {self.name} sent a chunk of the wrong size; the partial file "
                "was deleted",
                discard=True,
            )
        self.outstanding.discard(index)
        self.received[index] = data
        return True

    def _flush(self) -> None:
        """Hand the next run of in-order chunks to the writer thread, if it is idle."""
        if self.writer is not None:
            return
        batch: list[memoryview] = []
        index = self.written
        while index in self.received:
            batch.append(self.received.pop(index))
            index += 1
        if not batch:
            return
        self._open_part(self.written * self.offer.chunk_size)
        assert self.fd is not None
        self.writing = len(batch)
        self.writer = asyncio.create_task(
            asyncio.to_thread(_write_chunks, self.fd, batch, self.digest)
        )

    async def _writer_done(self) -> None:
        assert self.writer is not None
        writer, self.writer = self.writer, None
        try:
            await writer
        except OSError as exc:
            reason = "no_space" if exc.errno == errno.ENOSPC else "write_error"
            raise _Failed(reason, f"cannot write {self.part}: {exc.strerror}") from exc
        self.written += self.writing
        self.writing = 0

    def _reconnect(self) -> None:
        self._close_socket()
        self.sock = self.service._client_socket(self.offer)
        # Everything not yet received is asked for again, in order.
        self.next_request = min(self.outstanding, default=self.next_request)
        self.outstanding.clear()

    def _report(self, progress: Progress) -> None:
        eta = progress.eta
        self.service._emit(
            {
                "ev": "file_progress",
                "id": self.offer.offer_id,
                "name": self.name,
                "done": progress.done,
                "size": self.offer.size,
                "rate": round(progress.rate),
                "eta": None if eta is None else round(eta, 1),
            }
        )

    def _close_socket(self) -> None:
        if self.recv is not None:
            self.recv.cancel()
            self.recv = None
        if self.sock is not None:
            self.sock.close(linger=0)
            self.sock = None

    async def discard(self) -> None:
        """Stop, and delete the .part (after the writer is done with it: Windows cannot
        delete an open file)."""
        self._close_socket()
        writer, self.writer = self.writer, None
        if writer is not None:
            with contextlib.suppress(OSError):
                await writer
        self.close()
        self.part.unlink(missing_ok=True)

    def close(self) -> None:
        self._close_socket()
        if self.writer is not None:
            # Never close the descriptor under the thread still writing to it; its error (if
            # any) is moot once the download has failed for another reason.
            fd, self.fd = self.fd, None
            self.writer.add_done_callback(lambda task: _writer_closed(task, fd))
            self.writer = None
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _writer_closed(task: asyncio.Task[None], fd: int | None) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: asyncio would otherwise log it as never retrieved
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)


def _open_regular(path: Path) -> int:
    try:
        fd = os.open(path, os.O_RDONLY | oscompat.O_BINARY)
    except FileNotFoundError:
        raise FileError(f"{path}: no such file") from None
    except OSError as exc:
        if path.is_dir():  # Windows refuses to open a directory at all (EACCES)
            raise FileError(f"{path} is not a regular file") from None
        raise FileError(f"cannot open {path}: {exc.strerror}") from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise FileError(f"{path} is not a regular file")
    return fd


def _resumable_bytes(part: Path, offer: FileOffer) -> int:
    """Bytes of an earlier attempt worth keeping: whole chunks, never more than the file."""
    try:
        info = part.lstat()
    except FileNotFoundError:
        return 0
    if not stat.S_ISREG(info.st_mode) or info.st_size > offer.size:
        return 0
    return info.st_size - info.st_size % offer.chunk_size


def _explain(reason: str, name: str) -> str:
    return {
        "denied": f"the sender of {name} refused us (the offer is not for this key)",
        "withdrawn": f"{name} is no longer offered",
        "unreadable": f"the sender can no longer read {name}",
    }.get(reason, f"the sender of {name} answered something unexpected")
