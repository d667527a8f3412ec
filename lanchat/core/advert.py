"""What a node advertises over DNS-SD, and its compact TXT encoding (pure, stdlib only)."""

from __future__ import annotations

import base64
import ipaddress
import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "KEY_BYTES",
    "MAX_BROKER_EPOCH",
    "MAX_HANDLE_BYTES",
    "MAX_PRIORITY",
    "MAX_ROOM_BYTES",
    "MAX_TXT_BYTES",
    "PROTOCOL_VERSION",
    "RESERVED_TXT_BYTES",
    "SERVICE_TYPE",
    "Advert",
    "AdvertError",
    "txt_wire_size",
]

SERVICE_TYPE = "_lanchat._tcp.local."
PROTOCOL_VERSION = "1"
KEY_BYTES = 32
# Target size of the whole TXT record (length bytes included): an announcement
# with PTR+SRV+TXT+A then fits comfortably in one packet on any LAN.
# Guaranteed for every non-broker advert, and for brokers whose room name is
# at most 16 bytes; the absolute worst case (a broker in a 32-byte room with a
# 6-digit epoch) is 215 bytes, still one packet and far from the 255-byte
# limit of a single TXT string.
MAX_TXT_BYTES = 200
# Room left for keys the transport adds next to the advert (discovery's
# one-digit update serial, "n=0".."n=9").
RESERVED_TXT_BYTES = 4
# A DNS label is at most 63 bytes, and the handle is the instance label.
MAX_HANDLE_BYTES = 63
# The room rule of lanchat.core.handles (32 characters); the bounds of the
# numbers keep every other field at a fixed maximum width.
MAX_ROOM_BYTES = 32
MAX_PRIORITY = 99
MAX_BROKER_EPOCH = 999_999
# Ten integer digits covers Unix time until the year 2286.
_MAX_TIMESTAMP = 9_999_999_999.999

_INT_RE = re.compile(r"[0-9]{1,10}", re.ASCII)
_TIME_RE = re.compile(r"[0-9]{1,10}(?:\.[0-9]{1,3})?", re.ASCII)
_KEY_RE = re.compile(r"[A-Za-z0-9_-]{43}", re.ASCII)


class AdvertError(ValueError):
    """An advert (or its TXT record) is malformed or from an incompatible version."""


def _encode_key(key: bytes) -> str:
    return base64.urlsafe_b64encode(key).rstrip(b"=").decode("ascii")


def _decode_key(name: str, text: str) -> bytes:
    if not _KEY_RE.fullmatch(text):
        raise AdvertError(f"{name}: not a base64url {KEY_BYTES}-byte key")
    key = base64.urlsafe_b64decode(text + "=")
    # Several strings decode to the same 32 bytes (unused low bits in the last
    # character); accept only the canonical one so an advert has one spelling.
    if _encode_key(key) != text:
        raise AdvertError(f"{name}: non-canonical base64url")
    return key


def _format_time(value: float) -> str:
    return f"{value:.3f}"


def _check_label(name: str, value: str, max_bytes: int) -> None:
    if not isinstance(value, str):
        raise AdvertError(f"{name} must be text, got {value!r}")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError as exc:  # lone surrogates cannot go on the wire
        raise AdvertError(f"{name} {value!r} is not valid Unicode text") from exc
    if not 1 <= size <= max_bytes:
        raise AdvertError(f"{name} must be 1..{max_bytes} UTF-8 bytes, got {size}")
    if not value.isprintable() or value != value.strip():
        raise AdvertError(f"{name} {value!r} has control characters or outer whitespace")


def _check_int(name: str, value: int, low: int, high: int) -> None:
    # bool is an int subclass; a flag where a number belongs is a caller bug.
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise AdvertError(f"{name} must be an integer in {low}..{high}, got {value!r}")


def _check_time(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise AdvertError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value) or not 0 <= value <= _MAX_TIMESTAMP:
        raise AdvertError(f"{name} must be a Unix time in 0..{_MAX_TIMESTAMP}, got {value!r}")
    # TXT carries milliseconds; rounding here makes from_txt(to_txt(a)) == a.
    return round(float(value), 3)


@dataclass(frozen=True, slots=True)
class Advert:
    """One node's DNS-SD advertisement; validated on construction."""

    handle: str
    room: str
    address: str
    id_key: bytes
    curve_key: bytes
    router_port: int
    pub_port: int
    mentor: bool
    priority: int
    started_at: float
    broker_epoch: int = 0
    broker_since: float = 0.0

    def __post_init__(self) -> None:
        _check_label("handle", self.handle, MAX_HANDLE_BYTES)
        _check_label("room", self.room, MAX_ROOM_BYTES)
        try:
            address = str(ipaddress.IPv4Address(self.address))
        except (ipaddress.AddressValueError, TypeError) as exc:
            raise AdvertError(f"address {self.address!r} is not an IPv4 address") from exc
        for name, key in (("id_key", self.id_key), ("curve_key", self.curve_key)):
            if not isinstance(key, bytes) or len(key) != KEY_BYTES:
                raise AdvertError(f"{name} must be {KEY_BYTES} bytes")
        _check_int("router_port", self.router_port, 1, 65535)
        _check_int("pub_port", self.pub_port, 1, 65535)
        if not isinstance(self.mentor, bool):
            raise AdvertError(f"mentor must be a bool, got {self.mentor!r}")
        _check_int("priority", self.priority, 0, MAX_PRIORITY)
        _check_int("broker_epoch", self.broker_epoch, 0, MAX_BROKER_EPOCH)
        # Frozen: normalise through object.__setattr__ (the documented idiom).
        object.__setattr__(self, "address", address)
        object.__setattr__(self, "started_at", _check_time("started_at", self.started_at))
        object.__setattr__(self, "broker_since", _check_time("broker_since", self.broker_since))

    @property
    def is_broker(self) -> bool:
        return self.broker_epoch > 0

    def to_txt(self) -> dict[str, str]:
        """The TXT properties (see MAX_TXT_BYTES for the size they stay within).

        `be` and `bs` are left out while both are zero: most nodes never run a
        broker, and the 28 bytes keep their adverts small.
        """
        txt = {
            "v": PROTOCOL_VERSION,
            "id": _encode_key(self.id_key),
            "ck": _encode_key(self.curve_key),
            "rp": str(self.router_port),
            "pp": str(self.pub_port),
            "m": "1" if self.mentor else "0",
            "room": self.room,
            "pri": str(self.priority),
            "st": _format_time(self.started_at),
        }
        if self.broker_epoch or self.broker_since:
            txt["be"] = str(self.broker_epoch)
            txt["bs"] = _format_time(self.broker_since)
        return txt

    @classmethod
    def from_txt(cls, handle: str, address: str, txt: Mapping[bytes, bytes | None]) -> Advert:
        """Parse a peer's TXT properties; raise AdvertError on anything malformed.

        Unknown keys are ignored so later versions can add fields without
        breaking version-1 readers.
        """
        fields: dict[str, str | None] = {}
        for raw_key, raw_value in txt.items():
            try:
                key = raw_key.decode("ascii")
                fields[key] = None if raw_value is None else raw_value.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise AdvertError(f"TXT entry {raw_key!r} is not valid text") from exc

        def need(key: str, default: str | None = None) -> str:
            if key not in fields and default is not None:
                return default
            value = fields.get(key)
            if value is None:
                raise AdvertError(f"TXT lacks a value for {key!r}")
            return value

        def integer(key: str, default: str | None = None) -> int:
            text = need(key, default)
            if not _INT_RE.fullmatch(text):
                raise AdvertError(f"{key}={text!r} is not a decimal integer")
            return int(text)

        def timestamp(key: str, default: str | None = None) -> float:
            text = need(key, default)
            if not _TIME_RE.fullmatch(text):
                raise AdvertError(f"{key}={text!r} is not a time")
            return float(text)

        version = need("v")
        if version != PROTOCOL_VERSION:
            raise AdvertError(f"protocol version {version!r}, we speak {PROTOCOL_VERSION!r}")
        mentor = need("m")
        if mentor not in ("0", "1"):
            raise AdvertError(f"m={mentor!r} is not 0 or 1")
        return cls(
            handle=handle,
            room=need("room"),
            address=address,
            id_key=_decode_key("id", need("id")),
            curve_key=_decode_key("ck", need("ck")),
            router_port=integer("rp"),
            pub_port=integer("pp"),
            mentor=mentor == "1",
            priority=integer("pri"),
            started_at=timestamp("st"),
            broker_epoch=integer("be", default="0"),
            broker_since=timestamp("bs", default="0"),
        )


def txt_wire_size(txt: Mapping[str, str]) -> int:
    """Bytes the properties take in a DNS TXT record (one length byte per 'key=value')."""
    return sum(1 + len(key.encode()) + 1 + len(value.encode()) for key, value in txt.items())
