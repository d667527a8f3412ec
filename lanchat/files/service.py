"""The file service: a CURVE file server for our offers, and the downloads of others'."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import zmq
import zmq.asyncio

from lanchat.core.files import (
    CHUNK_BYTES,
    MAX_FILE_BYTES,
    WINDOW_CHUNKS,
    FileOffer,
    chunk_span,
    safe_filename,
)
from lanchat.core.units import human_size
from lanchat.files.disk import (
    FileError,
    _free_bytes,
    _hash_fd,
    _open_regular,
    _pread_all,
    _publish,
    _resumable_bytes,
)
from lanchat.files.fetch import _Download, _Failed, _Fetch
from lanchat.files.wire import (
    _CHUNK_FRAME_FACTOR,
    _DENIED,
    _DOWNLOAD_RCVHWM,
    _FETCHED_INDEX,
    _IO,
    _OFFER_ID_BYTES,
    _OK,
    _RANGE,
    _REQUEST_FRAME_MAX_BYTES,
    _UNKNOWN,
)
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

__all__ = ["FREE_SPACE_MARGIN_BYTES", "RETRY_S", "STALL_TIMEOUT_S", "FileService"]

FREE_SPACE_MARGIN_BYTES: Final = 50 * 1024**2  # a download never leaves the disk fuller
STALL_TIMEOUT_S: Final = 60.0  # a download fails after this long without a single new chunk
RETRY_S: Final = 1.0  # silence before re-requesting (doubles up to RETRY_MAX_FACTOR times)
_FETCHED_LINGER_MS: Final = 1000  # the notice may still leave after its socket is closed
_SERVE_BATCH: Final = 4 * WINDOW_CHUNKS  # requests answered per thread hop, across clients


# eq=False: these records are looked up by offer id, never compared or hashed; generated
# __eq__ and __hash__ methods would only add to every node's start-up time.
@dataclass(frozen=True, slots=True, eq=False)
class _Served:
    """One of our offers: its descriptor stays open, so the path cannot be swapped later."""

    offer: FileOffer
    fd: int


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
