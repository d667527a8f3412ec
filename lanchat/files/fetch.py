"""The receiving side of one download: windowed requests, in-order writes, retries."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import os
import stat
import time
import typing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import zmq

from lanchat import oscompat
from lanchat.core.files import WINDOW_CHUNKS, FileOffer, Progress, chunk_span
from lanchat.files.disk import _hash_prefix, _write_chunks
from lanchat.files.wire import _OK, _REASONS, _explain
from lanchat.transport import drain_nowait as _drain

if TYPE_CHECKING:
    from pathlib import Path

    import zmq.asyncio

    from lanchat.files.service import FileService

RETRY_MAX_FACTOR: Final = 8


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
class _Download:
    """One running download; ``stop`` (resolved with a reason) and ``ended`` let decline()
    and close() stop it and wait for it."""

    offer: FileOffer
    stop: asyncio.Future[str]
    ended: asyncio.Event

    def abort(self, reason: str) -> None:
        if not self.stop.done():
            self.stop.set_result(reason)


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
