"""The fallback beacon: a node's advert as one signed UDP broadcast, and its budget (pure).

Guest and school Wi-Fi often drop multicast (mDNS) between laptops while still passing
broadcast; there, nodes find each other by a small broadcast to the subnet's broadcast
address carrying the same facts as the mDNS advert, signed with the node's identity key
(Ed25519). Like an advert, a beacon is a hint: the CURVE handshake with the broker and the
signed Hello are what is verified; the signature only stops one laptop from speaking for
another key (and a replay from rolling a node's facts back: see ``sent_at``).

Packet (at most MAX_PACKET bytes)::

    b"LCB1" | strings, each one length byte + b"key=value" (UTF-8) | 64-byte signature

The strings are the advert's TXT properties (``Advert.to_txt``) plus ``h`` (handle), ``a``
(address: must be the packet's source), ``t`` (the sender's wall clock when sent, ms:
larger in every beacon of one key), ``ttl`` (seconds the facts stay valid), and ``bye=1``
in the last beacon of a node that quits. Unknown keys are kept in ``Beacon.extra`` (they
are signed too): later versions add optional fields (a certificate, say) without breaking
this one. The signature covers everything before it. ``b"LCQ1"`` alone is a query
(``lanchat doctor`` asks who is there): nodes answer with a beacon, within their budget.

The budget (``BeaconPlan``): a node broadcasts only while mDNS does not show it every other
node (nobody in its mDNS view, or someone known only by beacon), at most one packet per
``interval`` (FAST_S, longer in a big room so that the room's beacons stay under
1/SHARE_S packets a second); otherwise one keep-alive per KEEPALIVE_S. Answers (a query, a
newcomer heard only by beacon, our advert changed) go out sooner, but never two packets
within MIN_GAP_S.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from lanchat.core.advert import Advert, AdvertError

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "FAST_S",
    "KEEPALIVE_S",
    "MAGIC",
    "MAX_PACKET",
    "MIN_GAP_S",
    "QUERY",
    "SHARE_S",
    "Beacon",
    "BeaconError",
    "BeaconPlan",
    "decode",
    "encode",
    "is_query",
]

MAGIC: Final = b"LCB1"
QUERY: Final = b"LCQ1"
SIGNATURE_BYTES: Final = 64
# One Ethernet frame with room to spare; an advert's beacon is ~330 bytes at most.
MAX_PACKET: Final = 1200
FAST_S: Final = 3.0  # while mDNS does not show us everyone: one beacon per this long
SHARE_S: Final = 0.1  # ...or per (known nodes x this): a room's beacons stay under 10/s
MAX_FAST_S: Final = 30.0
KEEPALIVE_S: Final = 60.0  # while mDNS works: one slow keep-alive (covers a lost answer)
MIN_GAP_S: Final = 1.0  # never two beacons of ours within this long, answers included
TTL_FACTOR: Final = 3  # a beacon's facts stay valid for three of its intervals (+ 1 s)
_RESERVED = frozenset({"h", "a", "t", "ttl", "bye"})


class BeaconError(ValueError):
    """Not a beacon, malformed, not from its source address, or a bad signature."""


@dataclass(frozen=True, slots=True)
class Beacon:
    advert: Advert
    sent_at: float
    ttl_s: float
    bye: bool = False
    extra: dict[str, str] = field(default_factory=dict)


def is_query(data: bytes) -> bool:
    return data == QUERY


def _strings(pairs: dict[str, str]) -> bytes:
    out = bytearray()
    for key, value in pairs.items():
        item = f"{key}={value}".encode()
        if len(item) > 255:
            raise BeaconError(f"beacon field {key!r} is longer than 255 bytes")
        out.append(len(item))
        out += item
    return bytes(out)


def encode(
    advert: Advert,
    sent_at: float,
    ttl_s: float,
    sign: Callable[[bytes], bytes],
    *,
    bye: bool = False,
    extra: dict[str, str] | None = None,
) -> bytes:
    """The signed packet for ``advert`` (``sign``: the identity's Ed25519 signature)."""
    pairs = {"h": advert.handle, "a": advert.address, **advert.to_txt()}
    pairs["t"] = f"{sent_at:.3f}"
    pairs["ttl"] = str(max(1, math.ceil(ttl_s)))
    if bye:
        pairs["bye"] = "1"
    for key, value in (extra or {}).items():
        if key in pairs or key in _RESERVED:
            raise BeaconError(f"extra field {key!r} collides with a beacon field")
        pairs[key] = value
    body = MAGIC + _strings(pairs)
    packet = body + sign(body)
    if len(packet) > MAX_PACKET:
        raise BeaconError(f"beacon of {len(packet)} bytes exceeds {MAX_PACKET}")
    return packet


def decode(data: bytes, source: str, verify: Callable[[bytes, bytes, bytes], bool]) -> Beacon:
    """Parse and check a packet from ``source`` (``verify(key, data, signature)``)."""
    if len(data) > MAX_PACKET or not data.startswith(MAGIC):
        raise BeaconError("not a lanchat beacon")
    if len(data) < len(MAGIC) + SIGNATURE_BYTES:
        raise BeaconError("truncated beacon")
    body, signature = data[:-SIGNATURE_BYTES], data[-SIGNATURE_BYTES:]
    fields: dict[bytes, bytes | None] = {}
    pos = len(MAGIC)
    while pos < len(body):
        size = body[pos]
        item = body[pos + 1 : pos + 1 + size]
        if len(item) != size or b"=" not in item:
            raise BeaconError("malformed beacon field")
        key, _, value = item.partition(b"=")
        if key in fields:
            raise BeaconError(f"beacon field {key!r} given twice")
        fields[key] = value
        pos += 1 + size
    try:
        text = {k.decode("ascii"): (v or b"").decode("utf-8") for k, v in fields.items()}
        handle, address = text["h"], text["a"]
        sent_at, ttl_s = float(text["t"]), float(text["ttl"])
    except (KeyError, UnicodeDecodeError, ValueError) as exc:
        raise BeaconError(f"beacon lacks or garbles a field: {exc}") from exc
    if address != source:
        raise BeaconError(f"beacon for {address} came from {source}")
    if not (math.isfinite(sent_at) and math.isfinite(ttl_s) and 0 < ttl_s <= 3600):
        raise BeaconError("beacon time or ttl out of range")
    try:
        advert = Advert.from_txt(handle, address, fields)
    except AdvertError as exc:
        raise BeaconError(str(exc)) from exc
    if not verify(advert.id_key, body, signature):
        raise BeaconError("bad beacon signature")
    known = {*advert.to_txt(), *_RESERVED}
    extra = {k: v for k, v in text.items() if k not in known}
    return Beacon(advert, sent_at, ttl_s, text.get("bye") == "1", extra)


@dataclass(slots=True)
class BeaconPlan:
    """When this node broadcasts (time passed in; see the module's budget)."""

    last_sent: float = -math.inf
    urgent: bool = False  # an answer is owed (a query, a newcomer, our advert changed)

    @staticmethod
    def fast(mdns_peers: int, beacon_only: int) -> bool:
        """Whether mDNS leaves anyone out: nobody in its view, or someone heard only by us."""
        return mdns_peers == 0 or beacon_only > 0

    @staticmethod
    def interval(fast: bool, known: int) -> float:
        if fast:
            return min(MAX_FAST_S, max(FAST_S, known * SHARE_S))
        return max(KEEPALIVE_S, known * SHARE_S)

    def ttl(self, fast: bool, known: int) -> float:
        return TTL_FACTOR * self.interval(fast, known) + 1.0

    def due(self, now: float, fast: bool, known: int) -> bool:
        since = now - self.last_sent
        if since < MIN_GAP_S:
            return False
        return self.urgent or since >= self.interval(fast, known)

    def sent(self, now: float) -> None:
        self.last_sent = now
        self.urgent = False
