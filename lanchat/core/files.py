"""File transfer, the pure part: offers, safe file names, progress arithmetic.

A sender describes a file with a :class:`FileOffer` (delivered by the node over its private
or signed public channel); the receiver fetches it chunk by chunk from the sender's file
server. Nothing here touches the disk, the network or the clock.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from lanchat.core.text import clean_text

if TYPE_CHECKING:
    from collections.abc import Collection

__all__ = [
    "CHUNK_BYTES",
    "MAX_CHUNK_BYTES",
    "MAX_FILE_BYTES",
    "MAX_NAME_BYTES",
    "MAX_OFFERS_KEPT",
    "MAX_OFFERS_PER_SENDER",
    "MAX_OFFER_CHARS",
    "MIN_CHUNK_BYTES",
    "PROGRESS_INTERVAL_S",
    "WINDOW_CHUNKS",
    "FileOffer",
    "IncomingOffers",
    "OfferError",
    "Progress",
    "chunk_count",
    "chunk_span",
    "safe_filename",
    "unique_name",
]

MAX_FILE_BYTES: Final = 4 * 1024**3  # receivers refuse bigger offers unless configured otherwise
CHUNK_BYTES: Final = 256 * 1024
# Chunk sizes a receiver accepts: the window times this bounds its memory per transfer.
MIN_CHUNK_BYTES: Final = 4 * 1024
MAX_CHUNK_BYTES: Final = 4 * 1024 * 1024
WINDOW_CHUNKS: Final = 16  # requests in flight: enough to keep a LAN link busy between replies
MAX_NAME_BYTES: Final = 128
MAX_OFFER_CHARS: Final = 1000
PROGRESS_INTERVAL_S: Final = 0.5
# Offers a receiver keeps until they are accepted or declined: per sender, then in all.
# Beyond either, the oldest goes (a real sender can offer it again); a node offering
# thousands of files costs the others a bounded amount of memory.
MAX_OFFERS_PER_SENDER: Final = 20
MAX_OFFERS_KEPT: Final = 500
# The offer format carries sizes up to this; MAX_FILE_BYTES is the receiver's own policy.
_MAX_SIZE_FIELD: Final = 2**63 - 1
# Smoothing time constant of the transfer rate: long enough to hide chunk bursts, short
# enough that the time left follows a real change of speed within a few seconds.
_RATE_TAU_S: Final = 2.0
_KEY_BYTES: Final = 32

_HEX32: Final = re.compile(r"[0-9a-f]{32}")
_HEX64: Final = re.compile(r"[0-9a-f]{64}")
_RESERVED_CHARS: Final = re.compile(r'[<>:"|?*\x00]')
_WINDOWS_RESERVED: Final = frozenset(
    {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"}
    | {f"{port}{n}" for port in ("COM", "LPT") for n in "0123456789¹²³"}
)
# A suffix longer than this is not treated as an extension worth keeping when truncating.
_MAX_EXT_CHARS: Final = 16
_FALLBACK_NAME: Final = "file"
_FIELDS: Final = frozenset(
    {"id", "name", "size", "sha256", "addr", "port", "key", "chunk", "shared"}
)


class OfferError(ValueError):
    """A file offer is malformed: wrong type, out of range, bad hex or an unsafe name."""


# ---- file names ----------------------------------------------------------------------------


def safe_filename(name: str) -> str:
    """A name that is safe to create inside a downloads folder on any common OS.

    Only the last path component survives (``/`` and ``\\`` both count as separators), so
    ``../`` and absolute paths cannot leave the folder; leading dots go, so nothing turns
    into a hidden file or ``..``. The result is idempotent: safe names map to themselves.
    """
    name = re.split(r"[/\\]", name)[-1]
    # Also drops format characters (zero-width joiners, BOMs ...) that can hide a different name.
    name = clean_text(name)
    name = _RESERVED_CHARS.sub("_", name)
    name = " ".join(name.split())
    # Windows silently drops trailing dots and spaces: "a.txt." would become "a.txt".
    name = name.lstrip(". ").rstrip(". ")
    name = _cap_bytes(name)
    stem = name.split(".", 1)[0]
    if stem.upper().rstrip(" ") in _WINDOWS_RESERVED:
        name = _cap_bytes("_" + name)
    return name or _FALLBACK_NAME


def _cap_bytes(name: str) -> str:
    if len(name.encode()) <= MAX_NAME_BYTES:
        return name
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem or len(ext) > _MAX_EXT_CHARS:
        stem, ext = name, ""
    suffix = f".{ext}" if ext else ""
    room = MAX_NAME_BYTES - len(suffix.encode())
    # errors="ignore" drops a multi-byte character cut in half at the boundary.
    cut = stem.encode()[:room].decode(errors="ignore").rstrip(". ")
    return f"{cut}{suffix}" if cut else _cut_plain(name)


def _cut_plain(name: str) -> str:
    return name.encode()[:MAX_NAME_BYTES].decode(errors="ignore").rstrip(". ")


def unique_name(existing: Collection[str], name: str) -> str:
    """``name``, or ``stem (1).ext``, ``stem (2).ext`` ... : the first not in ``existing``.

    Compared case-insensitively: on macOS and Windows "Report.pdf" and "report.pdf" are the
    same file.
    """
    taken = {entry.casefold() for entry in existing}
    if name.casefold() not in taken:
        return name
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        stem, ext = name, ""
    suffix = f".{ext}" if ext else ""
    n = 1
    while True:
        candidate = f"{stem} ({n}){suffix}"
        if candidate.casefold() not in taken:
            return candidate
        n += 1


# ---- offers --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FileOffer:
    """What a receiver needs to fetch and verify one file; invalid values raise OfferError."""

    offer_id: str
    name: str
    size: int
    sha256: str
    address: str
    port: int
    server_key: bytes
    chunk_size: int
    shared: bool

    def __post_init__(self) -> None:
        _check_hex(self.offer_id, _HEX32, "offer id")
        if not isinstance(self.name, str) or self.name != safe_filename(self.name):
            raise OfferError(f"unsafe file name: {self.name!r}")
        _check_int(self.size, 0, _MAX_SIZE_FIELD, "size")
        _check_hex(self.sha256, _HEX64, "sha256")
        _check_address(self.address)
        _check_int(self.port, 1, 65535, "port")
        if type(self.server_key) is not bytes or len(self.server_key) != _KEY_BYTES:
            raise OfferError(f"server key must be {_KEY_BYTES} bytes")
        _check_int(self.chunk_size, MIN_CHUNK_BYTES, MAX_CHUNK_BYTES, "chunk size")
        if type(self.shared) is not bool:
            raise OfferError("shared must be a boolean")

    @property
    def chunks(self) -> int:
        return chunk_count(self.size, self.chunk_size)

    def to_json(self) -> str:
        return json.dumps(
            {
                "id": self.offer_id,
                "name": self.name,
                "size": self.size,
                "sha256": self.sha256,
                "addr": self.address,
                "port": self.port,
                "key": self.server_key.hex(),
                "chunk": self.chunk_size,
                "shared": self.shared,
            },
            separators=(",", ":"),
            ensure_ascii=False,
        )

    @classmethod
    def from_json(cls, text: str) -> FileOffer:
        if not isinstance(text, str) or len(text) > MAX_OFFER_CHARS:
            raise OfferError("an offer is a JSON text of at most 1000 characters")
        try:
            data: Any = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise OfferError(f"offer is not JSON: {exc}") from None
        if not isinstance(data, dict) or set(data) != _FIELDS:
            raise OfferError(f"an offer is an object with exactly the keys {sorted(_FIELDS)}")
        key = data["key"]
        if not isinstance(key, str) or not _HEX64.fullmatch(key):
            raise OfferError("server key must be 64 lowercase hex characters")
        return cls(
            offer_id=data["id"],
            name=data["name"],
            size=data["size"],
            sha256=data["sha256"],
            address=data["addr"],
            port=data["port"],
            server_key=bytes.fromhex(key),
            chunk_size=data["chunk"],
            shared=data["shared"],
        )


class IncomingOffers:
    """Offers received from others, by offer id, bounded per sender and in all.

    An offer id another sender already holds is refused (ids are random, so only a sender
    that copied someone's offer would collide, to take it over).
    """

    def __init__(
        self, per_sender: int = MAX_OFFERS_PER_SENDER, total: int = MAX_OFFERS_KEPT
    ) -> None:
        self._per_sender = per_sender
        self._total = total
        self._offers: OrderedDict[str, tuple[FileOffer, bytes]] = OrderedDict()  # oldest first
        self._by_sender: dict[bytes, OrderedDict[str, None]] = {}
        self.dropped = 0  # offers that made room for newer ones

    def add(self, offer: FileOffer, sender: bytes) -> bool:
        """Keep ``offer`` from ``sender``; False if it is not new (a repeat, or a taken id)."""
        if offer.offer_id in self._offers:
            return False
        mine = self._by_sender.get(sender)
        if mine is not None and len(mine) >= self._per_sender:
            self._forget(next(iter(mine)))
            self.dropped += 1
        elif len(self._offers) >= self._total:
            self._forget(next(iter(self._offers)))
            self.dropped += 1
        self._offers[offer.offer_id] = (offer, sender)
        self._by_sender.setdefault(sender, OrderedDict())[offer.offer_id] = None
        return True

    def get(self, offer_id: str) -> tuple[FileOffer, bytes] | None:
        """``(offer, sender)``, or None if unknown (never offered, declined or dropped)."""
        return self._offers.get(offer_id)

    def pop(self, offer_id: str) -> tuple[FileOffer, bytes] | None:
        known = self._offers.get(offer_id)
        if known is not None:
            self._forget(offer_id)
        return known

    def __len__(self) -> int:
        return len(self._offers)

    def senders(self) -> int:
        return len(self._by_sender)

    def _forget(self, offer_id: str) -> None:
        _offer, sender = self._offers.pop(offer_id)
        mine = self._by_sender[sender]
        del mine[offer_id]
        if not mine:
            del self._by_sender[sender]


def _check_hex(value: object, pattern: re.Pattern[str], what: str) -> None:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise OfferError(f"{what} must be lowercase hex")


def _check_int(value: object, low: int, high: int, what: str) -> None:
    # type() rather than isinstance(): JSON true/false must not pass as 1/0.
    if type(value) is not int or not low <= value <= high:
        raise OfferError(f"{what} must be an integer in {low}..{high}")


def _check_address(value: object) -> None:
    if not isinstance(value, str):
        raise OfferError("address must be a string")
    try:
        addr = ipaddress.IPv4Address(value)
    except ValueError:
        raise OfferError(f"address is not an IPv4 address: {value!r}") from None
    if addr.is_unspecified or addr.is_multicast or str(addr) != value:
        raise OfferError(f"address is not a host address: {value!r}")


def chunk_count(size: int, chunk_size: int) -> int:
    return -(-size // chunk_size)


def chunk_span(size: int, chunk_size: int, index: int) -> tuple[int, int]:
    """(offset, length) of chunk ``index``; ValueError outside the file."""
    if not 0 <= index < chunk_count(size, chunk_size):
        raise ValueError(f"chunk {index} is outside a {size}-byte file")
    offset = index * chunk_size
    return offset, min(chunk_size, size - offset)


# ---- progress ------------------------------------------------------------------------------


class Progress:
    """Transfer rate (smoothed) and time left, from ``(now, done)`` samples."""

    __slots__ = ("_last_done", "_last_report", "_last_t", "_rate", "done", "size")

    def __init__(self, size: int, now: float, done: int = 0) -> None:
        self.size = size
        self.done = done
        self._last_t = now
        self._last_done = done
        self._rate: float | None = None
        self._last_report: float | None = None

    def update(self, now: float, done: int) -> None:
        dt = now - self._last_t
        if dt <= 0:  # same instant: remember the bytes, rate them with the next sample
            self.done = done
            return
        sample = (done - self._last_done) / dt
        if self._rate is None:
            self._rate = sample
        else:
            # Exponential smoothing weighted by elapsed time, so irregular samples average fairly.
            alpha = 1.0 - math.exp(-dt / _RATE_TAU_S)
            self._rate += alpha * (sample - self._rate)
        self.done = done
        self._last_t = now
        self._last_done = done

    @property
    def rate(self) -> float:
        """Bytes per second; 0.0 until two samples are apart in time."""
        return self._rate or 0.0

    @property
    def eta(self) -> float | None:
        """Seconds left at the current rate; None while the rate is unknown or zero."""
        if self.done >= self.size:
            return 0.0
        if not self._rate or self._rate <= 0:
            return None
        return (self.size - self.done) / self._rate

    def should_report(self, now: float) -> bool:
        """True at most once per PROGRESS_INTERVAL_S; a True answer counts as reported."""
        if self._last_report is not None and now - self._last_report < PROGRESS_INTERVAL_S:
            return False
        self._last_report = now
        return True
