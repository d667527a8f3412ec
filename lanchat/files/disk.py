"""Blocking file work of the file service (run in worker threads): read, hash, write, publish."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import stat
from typing import TYPE_CHECKING, Final

from lanchat import oscompat
from lanchat.core.files import unique_name

if TYPE_CHECKING:
    from pathlib import Path

    from lanchat.core.files import FileOffer

__all__ = ["FileError"]

_HASH_READ_BYTES: Final = 1024 * 1024


class FileError(Exception):
    """A file cannot be offered: missing, not a regular file, too large or unreadable."""


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
