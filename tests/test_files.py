"""FileService over real ZeroMQ CURVE sockets on 127.0.0.1, with real files in tmp_path."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import pytest
import zmq
import zmq.asyncio
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85

import lanchat.files
from lanchat import oscompat
from lanchat.core.files import CHUNK_BYTES, FileOffer, OfferError
from lanchat.files import FileError, FileService

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable
    from pathlib import Path

    from lanchat.files import _Served

WAIT_S = 20.0
HOST = "127.0.0.1"
MB = 1024 * 1024


class Keys(NamedTuple):
    public: bytes
    secret: bytes


def _keys() -> Keys:
    public, secret = zmq.curve_keypair()
    return Keys(z85.decode(public), z85.decode(secret))


class Recorder:
    """Collects emitted events; `wait` returns the first match (with a timeout, no sleeping)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self._changed = asyncio.Event()

    def __call__(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        self._changed.set()

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["ev"] == kind]

    async def wait(self, kind: str, timeout: float = WAIT_S, **match: Any) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                for event in self.of(kind):
                    if all(event.get(k) == v for k, v in match.items()):
                        return event
                self._changed.clear()
                await self._changed.wait()


@dataclass
class Counter:
    """An authorize() double: allows `allowed` keys (None: everyone) and records every call."""

    allowed: set[bytes] | None = None
    calls: list[tuple[str, bytes]] = field(default_factory=list)

    def __call__(self, offer_id: str, key: bytes) -> bool:
        self.calls.append((offer_id, key))
        return self.allowed is None or key in self.allowed


class PausingService(FileService):
    """Serves about `pause_after` distinct chunks (at least one batch), then hangs (a sender
    whose link is about to drop)."""

    pause_after = 10**9

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.served = 0
        self.indices: set[int] = set()
        self.paused = asyncio.Event()

    async def _read_chunks(self, wanted: list[tuple[_Served, int]]) -> list[bytes | None]:
        # Chunks asked for again do not count: on a slow machine the receiver retries (on a
        # new socket) before the first replies reach it, and a pause then would leave no
        # partial file to resume from.
        fresh = {index for _served, index in wanted} - self.indices
        if self.indices and len(self.indices) + len(fresh) > self.pause_after:
            self.paused.set()
            await asyncio.Future()  # until close() cancels the server
        self.served += len(wanted)
        self.indices.update(index for _served, index in wanted)
        return await super()._read_chunks(wanted)


class CorruptingService(FileService):
    """Flips one bit of chunk 3: a sender (or a path) that damages data."""

    async def _read_chunks(self, wanted: list[tuple[_Served, int]]) -> list[bytes | None]:
        chunks = await super()._read_chunks(wanted)
        return [
            bytes([data[0] ^ 1]) + data[1:] if index == 3 and data else data
            for (_served, index), data in zip(wanted, chunks, strict=True)
        ]


class LyingService(FileService):
    """Sends ``extra`` bytes more than offered in chunk ``at`` (a real server, patched)."""

    extra = 1
    at = 3

    async def _read_chunks(self, wanted: list[tuple[_Served, int]]) -> list[bytes | None]:
        chunks = await super()._read_chunks(wanted)
        return [
            data + b"\0" * self.extra if index == self.at and data is not None else data
            for (_served, index), data in zip(wanted, chunks, strict=True)
        ]


@dataclass
class Lab:
    ctx: zmq.asyncio.Context
    tmp: Path
    sender_keys: Keys
    receiver_keys: Keys
    sender_events: Recorder
    receiver_events: Recorder
    authorize: Counter
    services: list[FileService] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def downloads(self) -> Path:
        return self.tmp / "downloads"

    def sender(
        self, cls: type[FileService] = FileService, port: int = 0, serve: bool = True
    ) -> FileService:
        service = cls(
            self.ctx,
            HOST,
            self.sender_keys.public,
            self.sender_keys.secret,
            self.tmp / "sender-downloads",
            self.sender_events,
            self.authorize,
        )
        service.start(port)
        self.services.append(service)
        if serve:
            self.serve(service)
        return service

    def serve(self, service: FileService) -> None:
        self.tasks.append(asyncio.create_task(service.serve()))

    async def sender_on(self, port: int, cls: type[FileService] = FileService) -> FileService:
        """A new sender on `port` (not serving yet), once the closed one has released it."""
        async with asyncio.timeout(WAIT_S):
            while True:
                try:
                    return self.sender(cls, port, serve=False)
                except zmq.ZMQError:
                    await asyncio.sleep(0.02)  # the old listener closes in zmq's I/O thread

    def receiver(self, **kwargs: Any) -> FileService:
        kwargs.setdefault("retry_s", 0.2)
        service = FileService(
            self.ctx,
            HOST,
            self.receiver_keys.public,
            self.receiver_keys.secret,
            self.downloads,
            self.receiver_events,
            lambda _offer_id, _key: False,
            **kwargs,
        )
        self.services.append(service)
        return service

    def listing(self) -> list[str]:
        return sorted(os.listdir(self.downloads)) if self.downloads.exists() else []


@contextlib.asynccontextmanager
async def lab(tmp: Path, authorize: Counter | None = None) -> AsyncIterator[Lab]:
    ctx = zmq.asyncio.Context()
    # In a thread: pyzmq's asyncio authenticator closes its socket before its cancelled
    # task has unregistered it, and Windows' select() fails on a closed socket (WinError
    # 10038) where Linux's epoll forgets it.
    auth = ThreadAuthenticator(zmq.Context.shadow(ctx.underlying))
    auth.start()
    auth.configure_curve(domain="*", location=zmq.auth.CURVE_ALLOW_ANY)
    the_lab = Lab(ctx, tmp, _keys(), _keys(), Recorder(), Recorder(), authorize or Counter())
    try:
        yield the_lab
    finally:
        for service in the_lab.services:
            await service.close()
        for task in the_lab.tasks:
            task.cancel()
        await asyncio.gather(*the_lab.tasks, return_exceptions=True)
        auth.stop()
        ctx.destroy(linger=0)


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:
        async with asyncio.timeout(4 * WAIT_S):
            await scenario()

    asyncio.run(bounded())


def _random_file(path: Path, size: int) -> str:
    data = os.urandom(size)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---- transfers ----------------------------------------------------------------------------


def test_20mb_file_arrives_intact_in_downloads(tmp_path: Path) -> None:
    source = tmp_path / "big.bin"
    digest = _random_file(source, 20 * MB)

    async def scenario() -> None:
        async with lab(tmp_path) as t:
            sender = t.sender()
            receiver = t.receiver()
            offer = await sender.prepare_offer(source, shared=False)
            assert (offer.name, offer.size, offer.sha256) == ("big.bin", 20 * MB, digest)
            assert offer.port == sender.port
            assert offer.server_key == t.sender_keys.public
            path = await receiver.download(offer)
            assert path == t.downloads / "big.bin"
            assert _sha256(path) == digest
            assert t.listing() == ["big.bin"]  # no .part left behind
            done = await t.receiver_events.wait("file_done", id=offer.offer_id)
            assert done == {
                "ev": "file_done",
                "id": offer.offer_id,
                "name": "big.bin",
                "path": str(path),
                "size": 20 * MB,
                "sha256": digest,
            }
            progress = t.receiver_events.of("file_progress")
            assert progress
            assert set(progress[0]) == {"ev", "id", "name", "done", "size", "rate", "eta"}
            # authorize() saw the receiver's authenticated CURVE key on every request.
            keys = {key for _id, key in t.authorize.calls}
            assert keys == {t.receiver_keys.public}
            assert len(t.authorize.calls) == offer.chunks

    run(scenario)


def test_same_name_twice_never_overwrites(tmp_path: Path) -> None:
    source = tmp_path / "notes.txt"
    source.write_bytes(b"second version\n")

    async def scenario() -> None:
        async with lab(tmp_path) as t:
            t.downloads.mkdir()
            (t.downloads / "notes.txt").write_bytes(b"mine, keep me\n")
            sender, receiver = t.sender(), t.receiver()
            first = await receiver.download(await sender.prepare_offer(source, shared=True))
            second = await receiver.download(await sender.prepare_offer(source, shared=True))
            assert first == t.downloads / "notes (1).txt"
            assert second == t.downloads / "notes (2).txt"
            assert (t.downloads / "notes.txt").read_bytes() == b"mine, keep me\n"
            assert second.read_bytes() == b"second version\n"

    run(scenario)


def test_empty_file(tmp_path: Path) -> None:
    source = tmp_path / "empty"
    source.write_bytes(b"")

    async def scenario() -> None:
        async with lab(tmp_path) as t:
            sender, receiver = t.sender(), t.receiver()
            path = await receiver.download(await sender.prepare_offer(source, shared=False))
            assert path is not None
            assert path.read_bytes() == b""

    run(scenario)


# ---- refusals before anything is written --------------------------------------------------


def test_unauthorized_key_is_refused_and_nothing_written(tmp_path: Path) -> None:
    source = tmp_path / "secret.txt"
    source.write_bytes(b"for someone else\n")
    someone_else = _keys().public

    async def scenario() -> None:
        async with lab(tmp_path, Counter(allowed={someone_else})) as t:
            sender, receiver = t.sender(), t.receiver()
            offer = await sender.prepare_offer(source, shared=False)
            assert await receiver.download(offer) is None
            failed = await t.receiver_events.wait("file_failed", id=offer.offer_id)
            assert failed["reason"] == "denied"
            assert t.listing() == []
            assert t.authorize.calls
            assert {key for _id, key in t.authorize.calls} == {t.receiver_keys.public}

    run(scenario)


def test_too_large_fails_before_writing(tmp_path: Path) -> None:
    source = tmp_path / "huge.iso"
    _random_file(source, 2 * MB)

    async def scenario() -> None:
        async with lab(tmp_path) as t:
            sender = t.sender()
            receiver = t.receiver(max_file_bytes=MB)
            offer = await sender.prepare_offer(source, shared=True)
            assert await receiver.download(offer) is None
            failed = await t.receiver_events.wait("file_failed", id=offer.offer_id)
            assert failed["reason"] == "too_large"
            assert "limit" in failed["message"]
            assert not t.downloads.exists()
            assert t.authorize.calls == []  # not a single request reached the sender

    run(scenario)


def test_sender_refuses_to_offer_too_large_or_odd_paths(tmp_path: Path) -> None:
    big = tmp_path / "big"
    _random_file(big, 2 * MB)

    async def scenario() -> None:
        async with lab(tmp_path) as t:
            sender = t.sender()
            sender.max_file_bytes = MB
            with pytest.raises(FileError, match="can be sent"):
                await sender.prepare_offer(big, shared=False)
            with pytest.raises(FileError, match="no such file"):
                await sender.prepare_offer(tmp_path / "missing", shared=False)
            with pytest.raises(FileError, match="not a regular file"):
                await sender.prepare_offer(tmp_path, shared=False)

    run(scenario)


def test_no_space_fails_before_writing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "video.mp4"
    _random_file(source, 2 * MB)
    real = shutil.disk_usage

    def nearly_full(path: Any) -> Any:
        usage = real(path)
        return usage._replace(free=lanchat.files.FREE_SPACE_MARGIN_BYTES + MB)

    monkeypatch.setattr(shutil, "disk_usage", nearly_full)

    async def scenario() -> None:
        async with lab(tmp_path) as t:
            sender, receiver = t.sender(), t.receiver()
            offer = await sender.prepare_offer(source, shared=False)
            assert await receiver.download(offer) is None
            failed = await t.receiver_events.wait("file_failed", id=offer.offer_id)
            assert failed["reason"] == "no_space"
            assert "free" in failed["message"]
            assert not t.downloads.exists()
            assert t.authorize.calls == []

    run(scenario)


def test_malicious_names_are_neutralised(tmp_path: Path) -> None:
    # Windows refuses control characters in file names; the bidi override it allows.
    source = tmp_path / ("\u202ered\u202e.txt" if oscompat.WINDOWS else "\x1b[31mred\u202e.txt")
    source.write_bytes(b"harmless\n")

    async def scenario() -> None:
        async with lab(tmp_path) as t:
            sender, receiver = t.sender(), t.receiver()
            offer = await sender.prepare_offer(source, shared=False)
            assert offer.name == "red.txt"
            # A hostile sender's offer never parses...
            evil = {**_offer_fields(offer), "name": "../../evil.sh"}
            with pytest.raises(OfferError):
                FileOffer(**evil)
            # ...and one forged past the checks still lands inside downloads.
            forged = object.__new__(FileOffer)
            for key, value in evil.items():
                object.__setattr__(forged, key, value)
            path = await receiver.download(forged)
            assert path == t.downloads / "evil.sh"
            assert t.listing() == ["evil.sh"]
            assert not (tmp_path / "evil.sh").exists()
            assert not (tmp_path.parent.parent / "evil.sh").exists()

    run(scenario)


def _offer_fields(offer: FileOffer) -> dict[str, Any]:
    return {name: getattr(offer, name) for name in FileOffer.__slots__}


# ---- resume, integrity, decline -----------------------------------------------------------


def test_resume_in_session_after_sender_restarts(tmp_path: Path) -> None:
    source = tmp_path / "movie.bin"
    digest = _random_file(source, 20 * MB)
    total = 20 * MB // CHUNK_BYTES

    async def scenario() -> None:
        async with lab(tmp_path) as t:
            first = t.sender(PausingService)
            assert isinstance(first, PausingService)
            first.pause_after = 30
            receiver = t.receiver()
            offer = await first.prepare_offer(source, shared=False)
            fetching = asyncio.create_task(receiver.download(offer))
            await t.receiver_events.wait("file_progress")
            async with asyncio.timeout(WAIT_S):
                await first.paused.wait()
            await first.close()  # the link drops mid-transfer
            second = await t.sender_on(offer.port, PausingService)
            assert isinstance(second, PausingService)
            await second.restore_offer(offer, source)
            t.serve(second)
            path = await fetching
            assert path is not None
            assert _sha256(path) == digest
            # The same download went on where the link dropped, not from the start.
            assert 0 not in second.indices
            assert max(second.indices) == total - 1

    run(scenario)


def test_resume_from_part_after_failed_attempt(tmp_path: Path) -> None:
    source = tmp_path / "disk.img"
    digest = _random_file(source, 12 * MB)
    total = 12 * MB // CHUNK_BYTES

    async def scenario() -> None:
        async with lab(tmp_path) as t:
            first = t.sender(PausingService)
            assert isinstance(first, PausingService)
            first.pause_after = 20
            receiver = t.receiver(stall_timeout_s=1.0, retry_s=0.1)
            offer = await first.prepare_offer(source, shared=False)
            assert await receiver.download(offer) is None
            failed = await t.receiver_events.wait("file_failed", id=offer.offer_id)
            assert failed["reason"] == "unreachable"
            part = t.downloads / f".disk.img.{offer.offer_id}.part"
            kept = part.stat().st_size
            assert kept > 0
            assert kept % CHUNK_BYTES == 0
            await first.close()
            second = await t.sender_on(offer.port, PausingService)
            assert isinstance(second, PausingService)
            await second.restore_offer(offer, source)
            t.serve(second)
            receiver.stall_timeout_s = WAIT_S  # the short one was for the first attempt only
            path = await receiver.download(offer)
            assert path == t.downloads / "disk.img", t.receiver_events.of("file_failed")
            assert _sha256(path) == digest
            assert second.served == total - kept // CHUNK_BYTES
            assert not part.exists()

    run(scenario)


def test_hash_mismatch_fails_and_deletes(tmp_path: Path) -> None:
    source = tmp_path / "data.bin"
    _random_file(source, 3 * MB)

    async def scenario() -> None:
        async with lab(tmp_path) as t:
            sender, receiver = t.sender(CorruptingService), t.receiver()
            offer = await sender.prepare_offer(source, shared=True)
            assert await receiver.download(offer) is None
            failed = await t.receiver_events.wait("file_failed", id=offer.offer_id)
            assert failed["reason"] == "hash_mismatch"
            assert t.listing() == []
            assert t.receiver_events.of("file_done") == []

    run(scenario)


@pytest.mark.parametrize(
    ("size", "at", "extra"),
    [
        (3 * MB, 3, 1),  # one byte too many in a middle chunk
        (3 * MB + 1000, 12, CHUNK_BYTES - 1000),  # a whole chunk where the last is short
        (3 * MB, 3, CHUNK_BYTES),  # twice a chunk: the most the socket takes in
    ],
)
def test_a_server_sending_more_than_offered_is_cut_off_and_leaves_nothing(
    tmp_path: Path, size: int, at: int, extra: int
) -> None:
    source = tmp_path / "data.bin"
    _random_file(source, size)

    async def scenario() -> None:
        async with lab(tmp_path) as t:
            sender = t.sender(LyingService)
            assert isinstance(sender, LyingService)
            sender.at, sender.extra = at, extra
            receiver = t.receiver()
            offer = await sender.prepare_offer(source, shared=True)
            assert offer.chunks == 13 if at == 12 else offer.chunks > at
            assert await receiver.download(offer) is None
            failed = await t.receiver_events.wait("file_failed", id=offer.offer_id)
            assert failed["reason"] == "too_large"
            assert t.listing() == []  # not even the hidden .part
            assert t.receiver_events.of("file_done") == []

    run(scenario)


def test_file_sockets_take_no_frame_larger_than_their_peer_may_send(tmp_path: Path) -> None:
    # What libzmq does with a frame over the limit is tested in tests/test_transport.py.
    source = tmp_path / "data.bin"
    _random_file(source, 1000)

    async def scenario() -> None:
        async with lab(tmp_path) as t:
            sender, receiver = t.sender(), t.receiver()
            offer = await sender.prepare_offer(source, shared=True)
            assert sender._router is not None
            assert sender._router.getsockopt(zmq.MAXMSGSIZE) == 1024  # requests only
            sock = receiver._client_socket(offer)
            try:
                assert sock.getsockopt(zmq.MAXMSGSIZE) == 2 * offer.chunk_size + 33
                assert sock.getsockopt(zmq.RCVHWM) == 64
            finally:
                sock.close(linger=0)

    run(scenario)


def test_decline_stops_a_running_download_and_deletes_its_part(tmp_path: Path) -> None:
    source = tmp_path / "slides.pdf"
    _random_file(source, 8 * MB)

    async def scenario() -> None:
        async with lab(tmp_path) as t:
            sender = t.sender(PausingService)
            assert isinstance(sender, PausingService)
            sender.pause_after = 20  # the first window goes through, then it hangs
            receiver = t.receiver()
            offer = await sender.prepare_offer(source, shared=False)
            fetching = asyncio.create_task(receiver.download(offer))
            await t.receiver_events.wait("file_progress")
            receiver.decline(offer.offer_id)
            assert await fetching is None
            failed = await t.receiver_events.wait("file_failed", id=offer.offer_id)
            assert failed["reason"] == "declined"
            assert t.listing() == []
            receiver.decline("ab" * 16)  # never fetched: just the event
            await t.receiver_events.wait("file_failed", id="ab" * 16, reason="declined")

    run(scenario)


def test_closing_the_receiver_cancels_and_keeps_the_part(tmp_path: Path) -> None:
    source = tmp_path / "talk.mp4"
    _random_file(source, 8 * MB)

    async def scenario() -> None:
        async with lab(tmp_path) as t:
            sender = t.sender(PausingService)
            assert isinstance(sender, PausingService)
            sender.pause_after = 20
            receiver = t.receiver()
            offer = await sender.prepare_offer(source, shared=False)
            fetching = asyncio.create_task(receiver.download(offer))
            await t.receiver_events.wait("file_progress")
            await receiver.close()
            assert await fetching is None
            failed = await t.receiver_events.wait("file_failed", id=offer.offer_id)
            assert failed["reason"] == "cancelled"
            assert t.listing() == [f".talk.mp4.{offer.offer_id}.part"]

    run(scenario)


def test_withdrawn_offer_fails_cleanly(tmp_path: Path) -> None:
    source = tmp_path / "gone.txt"
    source.write_bytes(b"x" * 1000)

    async def scenario() -> None:
        async with lab(tmp_path) as t:
            sender, receiver = t.sender(), t.receiver()
            offer = await sender.prepare_offer(source, shared=True)
            sender.withdraw(offer.offer_id)
            assert await receiver.download(offer) is None
            failed = await t.receiver_events.wait("file_failed", id=offer.offer_id)
            assert failed["reason"] == "withdrawn"
            assert t.listing() == []

    run(scenario)


def test_restore_refuses_a_changed_file(tmp_path: Path) -> None:
    source = tmp_path / "a.txt"
    source.write_bytes(b"one")

    async def scenario() -> None:
        async with lab(tmp_path) as t:
            sender = t.sender()
            offer = await sender.prepare_offer(source, shared=False)
            source.write_bytes(b"two")
            with pytest.raises(FileError, match="changed"):
                await sender.restore_offer(offer, source)

    run(scenario)


def test_never_binds_every_interface(tmp_path: Path) -> None:
    keys = _keys()
    ctx = zmq.asyncio.Context()
    try:
        with pytest.raises(ValueError, match="LAN address"):
            FileService(ctx, "0.0.0.0", keys.public, keys.secret, tmp_path, print, lambda *_: True)
    finally:
        ctx.destroy(linger=0)
