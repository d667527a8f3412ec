"""Wire codec: every lanchat message as a frozen dataclass <-> ZeroMQ multipart frames.

A message is three frames: ``header`` (magic ``LC``, protocol version, kind), ``body``
(compact JSON object, bytes as unpadded base64url) and ``sig`` (64-byte Ed25519 signature
for signed kinds, empty otherwise). The broker's relay envelope puts a second message after
its own three frames.

Signatures cover :func:`signed_bytes`, a canonical re-encoding of the message, so what is
signed never depends on how a peer happened to format its JSON. Signing and verifying live
outside the core (``lanchat.identity``); the codec only hands over the bytes.

Decoding is strict: anything malformed, truncated, oversized, of another protocol version
or wrongly typed raises :class:`DecodeError` and nothing else.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import math
import operator
import typing
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, ClassVar

__all__ = [
    "MAGIC",
    "MAX_FRAMES_BYTES",
    "MAX_TEXT_CHARS",
    "PROTOCOL_VERSION",
    "Ack",
    "Beat",
    "Claim",
    "DecodeError",
    "Direct",
    "Found",
    "Goodbye",
    "Grant",
    "Hand",
    "HandDone",
    "HandStatus",
    "Have",
    "Heartbeat",
    "Hello",
    "HelpMsg",
    "Kind",
    "Lookup",
    "Message",
    "PeerEntry",
    "Private",
    "PrivateAck",
    "Public",
    "PublicBatch",
    "Queue",
    "QueueEntry",
    "Redirect",
    "Refused",
    "Relay",
    "Resend",
    "Roster",
    "RosterDelta",
    "SeqRanges",
    "Signal",
    "Sync",
    "Want",
    "Welcome",
    "carried",
    "decode",
    "decode_inner",
    "encode",
    "encode_inner",
    "envelope_frames",
    "envelope_of",
    "hello_of",
    "signed_bytes",
]

PROTOCOL_VERSION = 1
MAGIC = b"LC"
# Whole message, all frames together. Large enough for a 4,000-character text in any
# script (<= 16 KiB UTF-8), sealed and base64'd, or a roster of a hall: ~370 B a peer,
# so 1,000 laptops are ~370 KB (benchmarks/bench_broker.py; 256 KiB cut rooms at ~700).
MAX_FRAMES_BYTES = 1024 * 1024
MAX_TEXT_CHARS = 4000
SIGNATURE_BYTES = 64
KEY_BYTES = 32
CERT_BYTES = KEY_BYTES + 8 + SIGNATURE_BYTES  # lanchat.core.authority.MentorCert
_MAX_HANDLE = 32
_MAX_SHORT = 200


class DecodeError(ValueError):
    """Any frame sequence that is not a valid lanchat message."""


class Kind(IntEnum):
    HELLO = 1
    WELCOME = 2
    REFUSED = 3
    HEARTBEAT = 4
    BEAT = 5
    ROSTER = 6
    PUBLIC = 7
    RELAY = 8
    ACK = 9
    RESEND = 10
    GOODBYE = 11
    DIRECT = 12
    REDIRECT = 13
    SYNC = 14
    # The help queue (students raise hands, mentors claim them):
    HAND = 15
    CLAIM = 16
    HAND_DONE = 17
    QUEUE = 18
    HAND_STATUS = 19
    HELP_MSG = 22
    # Only ever inside a Direct's sealed box:
    PRIVATE = 20
    PRIVATE_ACK = 21
    SIGNAL = 23
    PUBLIC_BATCH = 24
    GRANT = 25
    # Anti-entropy for the public room (lanchat.core.antientropy):
    HAVE = 26
    WANT = 27
    # Room state as deltas, a hall's lookups (lanchat.core.relay):
    ROSTER_DELTA = 28
    LOOKUP = 29
    FOUND = 30


class _Record:
    """Equality, hash and repr of every message class, shared rather than generated.

    ``dataclass`` compiles every method it generates separately, and for these classes that
    compiling was the largest part of a node's own start-up (benchmarks/bench_startup.py).
    The classes say ``eq=False, repr=False`` only so that ``dataclass`` keeps these; the
    results are the generated ones': ``==`` compares the field tuples of two objects of the
    same class (``NotImplemented`` otherwise), ``hash`` is the hash of that tuple, and
    ``repr`` is ``Class(field=value, ...)`` (tests/test_wire.py checks all three).
    """

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        if other.__class__ is self.__class__:
            values = _field_values(self.__class__)
            return bool(values(self) == values(other))
        return NotImplemented

    def __hash__(self) -> int:
        return hash(_field_values(self.__class__)(self))

    def __repr__(self) -> str:
        names = _field_names(self.__class__)
        inner = ", ".join(f"{name}={getattr(self, name)!r}" for name in names)
        return f"{self.__class__.__qualname__}({inner})"


_FIELD_NAMES: dict[type[Any], tuple[str, ...]] = {}
_FIELD_VALUES: dict[type[Any], typing.Callable[[Any], tuple[Any, ...]]] = {}


def _field_names(cls: type[Any]) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in dataclasses.fields(cls))
    return names


def _field_values(cls: type[Any]) -> typing.Callable[[Any], tuple[Any, ...]]:
    """A function from an object of ``cls`` to the tuple of its field values."""
    values = _FIELD_VALUES.get(cls)
    if values is None:
        names = _field_names(cls)
        # attrgetter of two or more names returns the tuple itself, in C.
        values = operator.attrgetter(*names) if len(names) >= 2 else _one_or_no_field(names)
        _FIELD_VALUES[cls] = values
    return values


def _one_or_no_field(names: tuple[str, ...]) -> typing.Callable[[Any], tuple[Any, ...]]:
    def values(obj: Any) -> tuple[Any, ...]:
        return tuple(getattr(obj, name) for name in names)

    return values


def _key() -> Any:
    return field(default=b"", metadata={"len": KEY_BYTES})


def _short(limit: int = _MAX_SHORT) -> Any:
    return field(default="", metadata={"max": limit})


def _cert() -> Any:
    return field(default=b"", metadata={"len_or_empty": CERT_BYTES})


def _opt_sig() -> Any:
    return field(default=b"", metadata={"len_or_empty": SIGNATURE_BYTES})


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class PeerEntry(_Record):
    """One roster line: a peer's own signed Hello, so receivers can check the broker."""

    handle: str = _short(_MAX_HANDLE)
    room: str = _short(_MAX_HANDLE)
    mentor: bool = False
    id_key: bytes = _key()
    curve_key: bytes = _key()
    started_at: float = 0.0
    priority: int = 0
    address: str = _short(64)
    router_port: int = 0
    info_port: int = 0
    hello_sig: bytes = field(default=b"", metadata={"len": SIGNATURE_BYTES})
    status: str = _short(64)
    cert: bytes = _cert()


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class Hello(_Record):
    """Client -> broker: who I am. Signed by the identity key it names."""

    KIND: ClassVar[Kind] = Kind.HELLO
    SIGNED: ClassVar[bool] = True
    handle: str = _short(_MAX_HANDLE)
    room: str = _short(_MAX_HANDLE)
    mentor: bool = False
    id_key: bytes = _key()
    curve_key: bytes = _key()
    started_at: float = 0.0
    priority: int = 0
    address: str = _short(64)
    router_port: int = 0
    info_port: int = 0
    # A mentor's certificate (lanchat.core.authority.MentorCert), b"" for everyone else.
    cert: bytes = _cert()

    def entry(self, sig: bytes, status: str = "online") -> PeerEntry:
        return PeerEntry(
            handle=self.handle,
            room=self.room,
            mentor=self.mentor,
            id_key=self.id_key,
            curve_key=self.curve_key,
            started_at=self.started_at,
            priority=self.priority,
            address=self.address,
            router_port=self.router_port,
            info_port=self.info_port,
            hello_sig=sig,
            status=status,
            cert=self.cert,
        )


def hello_of(entry: PeerEntry) -> Hello:
    """The Hello a roster entry claims to carry (to verify its signature)."""
    return Hello(
        handle=entry.handle,
        room=entry.room,
        mentor=entry.mentor,
        id_key=entry.id_key,
        curve_key=entry.curve_key,
        started_at=entry.started_at,
        priority=entry.priority,
        address=entry.address,
        router_port=entry.router_port,
        info_port=entry.info_port,
        cert=entry.cert,
    )


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class Welcome(_Record):
    """Broker -> client: you are in; here is where to subscribe and what to expect."""

    KIND: ClassVar[Kind] = Kind.WELCOME
    SIGNED: ClassVar[bool] = False
    epoch: int = 0
    broker_handle: str = _short(_MAX_HANDLE)
    broker_key: bytes = _key()
    pub_port: int = 0
    bseq: int = 0
    since: float = 0.0
    # Relays numbered below this were carried over from the previous broker (the
    # backlog); from here on they were relayed by this one.
    first_live: int = 1


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class Refused(_Record):
    """Broker -> client: your Hello (or a later frame) was not accepted."""

    KIND: ClassVar[Kind] = Kind.REFUSED
    SIGNED: ClassVar[bool] = False
    code: str = _short(64)
    message: str = _short(500)


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class Heartbeat(_Record):
    """Client -> broker: still here."""

    KIND: ClassVar[Kind] = Kind.HEARTBEAT
    SIGNED: ClassVar[bool] = False
    t: float = 0.0
    status: str = _short(64)


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class Beat(_Record):
    """Broker -> everyone (PUB): still here, last sequence number, roster version."""

    KIND: ClassVar[Kind] = Kind.BEAT
    SIGNED: ClassVar[bool] = False
    epoch: int = 0
    bseq: int = 0
    roster_version: int = 0


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class Roster(_Record):
    """Broker -> everyone: who is connected, in succession order (first = next broker)."""

    KIND: ClassVar[Kind] = Kind.ROSTER
    SIGNED: ClassVar[bool] = False
    epoch: int = 0
    version: int = 0
    broker_key: bytes = _key()
    peers: tuple[PeerEntry, ...] = ()


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class RosterDelta(_Record):
    """Broker -> everyone (PUB): roster ``base`` became ``version`` (the Clone pattern).

    ``changed`` holds the entries that are new or changed (a join, a status change),
    ``left`` the identity keys no longer connected. A receiver whose roster is not
    ``base`` of this broker missed something: it asks for the whole roster (Sync). The
    succession order is the receiver's to compute (lanchat.core.election.succession).
    """

    KIND: ClassVar[Kind] = Kind.ROSTER_DELTA
    SIGNED: ClassVar[bool] = False
    epoch: int = 0
    base: int = 0
    version: int = 0
    broker_key: bytes = _key()
    changed: tuple[PeerEntry, ...] = ()
    left: tuple[bytes, ...] = ()
    # A hall (lanchat.core.relay.LAZY_FROM_CLIENTS): how many are connected, when the
    # entries are only those that matter to everyone (0: a room that lists everyone).
    # ``base`` -1: a snapshot of those entries, replacing the receiver's copy.
    count: int = 0
    # The broker's succession order, from its first (the broker) on: whoever takes over is
    # in it, in the order the broker ranked them (it alone knows who is verified).
    head: tuple[bytes, ...] = ()

    def check(self) -> None:
        if self.version <= self.base:
            raise DecodeError("a roster delta goes forward")
        if any(len(key) != KEY_BYTES for key in (*self.left, *self.head)):
            raise DecodeError(f"field 'left' holds {KEY_BYTES}-byte keys")


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class Lookup(_Record):
    """Client -> broker, in a hall: the entries of these keys, or of handles that start
    with ``prefix`` (case-insensitive; "" asks for none by prefix)."""

    KIND: ClassVar[Kind] = Kind.LOOKUP
    SIGNED: ClassVar[bool] = False
    prefix: str = _short(_MAX_HANDLE)
    keys: tuple[bytes, ...] = ()

    def check(self) -> None:
        if len(self.keys) > MAX_LOOKUP or any(len(k) != KEY_BYTES for k in self.keys):
            raise DecodeError(f"a lookup names at most {MAX_LOOKUP} {KEY_BYTES}-byte keys")


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class Found(_Record):
    """Broker -> client: the answer to a Lookup (at most MAX_LOOKUP entries)."""

    KIND: ClassVar[Kind] = Kind.FOUND
    SIGNED: ClassVar[bool] = False
    prefix: str = _short(_MAX_HANDLE)
    peers: tuple[PeerEntry, ...] = ()
    count: int = 0


MAX_LOOKUP = 256


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class Public(_Record):
    """A message to the whole room. Signed by its author; the broker cannot forge it."""

    KIND: ClassVar[Kind] = Kind.PUBLIC
    SIGNED: ClassVar[bool] = True
    author: bytes = _key()
    handle: str = _short(_MAX_HANDLE)
    room: str = _short(_MAX_HANDLE)
    seq: int = 0
    text: str = field(default="", metadata={"max": MAX_TEXT_CHARS})
    sent_t: float = 0.0
    # A file shared with the room: the offer (JSON, lanchat.core.files.FileOffer), signed
    # with the text so nobody can swap where receivers fetch it from.
    offer: str = _short(1000)

    @property
    def msg_id(self) -> str:
        return f"{self.author.hex()[:16]}:{self.seq}"

    def texts_by_id(self) -> list[tuple[str, str]]:
        """``(message id, text)``: the same shape as a batch's, for one receive path."""
        return [(self.msg_id, self.text)]


MAX_BATCH = 64
MAX_BATCH_CHARS = 32_000


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class PublicBatch(_Record):
    """Several consecutive public messages of one author under one signature.

    An author that has many messages queued (a bot, a paste, a burst after a failover)
    packs them: one signature, one frame, one relay for up to MAX_BATCH messages. Each
    text keeps its own id, ``author:seq+i``, so receivers see ordinary messages.
    """

    KIND: ClassVar[Kind] = Kind.PUBLIC_BATCH
    SIGNED: ClassVar[bool] = True
    author: bytes = _key()
    handle: str = _short(_MAX_HANDLE)
    room: str = _short(_MAX_HANDLE)
    seq: int = 0
    texts: tuple[str, ...] = ()
    sent_t: float = 0.0

    def texts_by_id(self) -> list[tuple[str, str]]:
        """``(message id, text)`` of each text: the ids a Public of that seq would have.

        The receive path of every public text: no message object per text, one hex.
        """
        prefix = self.author.hex()[:16]
        return [(f"{prefix}:{self.seq + i}", text) for i, text in enumerate(self.texts)]

    @property
    def msg_id(self) -> str:
        return f"{self.author.hex()[:16]}:{self.seq}+{len(self.texts)}"

    def check(self) -> None:
        if not 1 <= len(self.texts) <= MAX_BATCH:
            raise DecodeError(f"a batch holds 1 to {MAX_BATCH} messages")
        if sum(len(t) for t in self.texts) > MAX_BATCH_CHARS:
            raise DecodeError(f"a batch holds at most {MAX_BATCH_CHARS} characters")


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class Relay(_Record):
    """Broker -> everyone (PUB): a Public stamped with the broker's sequence number.

    ``place`` is the message's place in the room's order (lanchat.core.antientropy), given
    by the broker that accepted it first and kept wherever it travels. A Relay with epoch
    0 is not part of a broker's live numbering: a message carried by anti-entropy (a node
    answering a Want, or carrying what a broker lacks to it).
    """

    KIND: ClassVar[Kind] = Kind.RELAY
    SIGNED: ClassVar[bool] = False
    epoch: int = 0
    bseq: int = 0
    inner: Public | PublicBatch = field(default_factory=Public)
    inner_sig: bytes = field(default=b"", metadata={"len": SIGNATURE_BYTES})
    place: int = 0


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class Ack(_Record):
    """Broker -> author: your Public (or batch) starting at ``seq`` is stored and relayed."""

    KIND: ClassVar[Kind] = Kind.ACK
    SIGNED: ClassVar[bool] = False
    seq: int = 0
    count: int = 1


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class Resend(_Record):
    """Client -> broker: I missed relays first..last (inclusive) of this epoch."""

    KIND: ClassVar[Kind] = Kind.RESEND
    SIGNED: ClassVar[bool] = False
    epoch: int = 0
    first: int = 0
    last: int = 0


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class Goodbye(_Record):
    """Either way: I am leaving now (clean exit, so nobody waits for a timeout)."""

    KIND: ClassVar[Kind] = Kind.GOODBYE
    SIGNED: ClassVar[bool] = False
    reason: str = _short()


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class Direct(_Record):
    """Sender -> broker -> recipient: a sealed (NaCl Box) Private or PrivateAck, signed."""

    KIND: ClassVar[Kind] = Kind.DIRECT
    SIGNED: ClassVar[bool] = True
    sender: bytes = _key()
    recipient: bytes = _key()
    box: bytes = field(default=b"", metadata={"max": 64 * 1024})


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class Grant(_Record):
    """Mentor -> broker -> a new mentor: the room's authority and a certificate for the
    recipient, sealed (NaCl Box) to its identity; routed like a Direct."""

    KIND: ClassVar[Kind] = Kind.GRANT
    SIGNED: ClassVar[bool] = True
    sender: bytes = _key()
    recipient: bytes = _key()
    box: bytes = field(default=b"", metadata={"max": 1024})


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class Redirect(_Record):
    """Broker -> its clients: another broker won the merge; move there."""

    KIND: ClassVar[Kind] = Kind.REDIRECT
    SIGNED: ClassVar[bool] = False
    broker_key: bytes = _key()
    curve_key: bytes = _key()
    address: str = _short(64)
    router_port: int = 0
    epoch: int = 0


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class Sync(_Record):
    """Client -> broker: send me the roster (mine is older than your Beat says)."""

    KIND: ClassVar[Kind] = Kind.SYNC
    SIGNED: ClassVar[bool] = False
    roster_version: int = 0


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class SeqRanges(_Record):
    """One author's message numbers, as flattened inclusive ranges (first, last, ...)."""

    author: bytes = _key()
    ranges: tuple[int, ...] = ()

    def check(self) -> None:
        r = self.ranges
        if not r or len(r) % 2 or len(r) > MAX_RANGES * 2:
            raise DecodeError(f"ranges are 1 to {MAX_RANGES} pairs of numbers")
        if any(n < 1 for n in r) or any(r[i] > r[i + 1] for i in range(len(r) - 1)):
            raise DecodeError("ranges must be positive and ascending")


MAX_RANGES = 64  # per author in a Have or Want: more holes than that go in the next round
MAX_AUTHORS = 1000


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class Have(_Record):
    """Client -> broker: the public messages I hold (per author), and the highest place
    I have seen. The broker sends what I lack and asks (Want) for what it lacks."""

    KIND: ClassVar[Kind] = Kind.HAVE
    SIGNED: ClassVar[bool] = False
    top: int = 0
    authors: tuple[SeqRanges, ...] = ()

    def check(self) -> None:
        if len(self.authors) > MAX_AUTHORS:
            raise DecodeError(f"a Have lists at most {MAX_AUTHORS} authors")


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class Want(_Record):
    """Either way: send me these public messages (each as a Relay of epoch 0)."""

    KIND: ClassVar[Kind] = Kind.WANT
    SIGNED: ClassVar[bool] = False
    authors: tuple[SeqRanges, ...] = ()

    def check(self) -> None:
        if len(self.authors) > MAX_AUTHORS:
            raise DecodeError(f"a Want lists at most {MAX_AUTHORS} authors")


def _hand_id() -> Any:
    return field(default="", metadata={"max": 32})


def _opt_key() -> Any:
    # A key, or b"" where it must not be told (the student of an anonymous hand).
    return field(default=b"", metadata={"len_or_empty": KEY_BYTES})


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class Hand(_Record):
    """Student -> broker: I raise (or, after a failover, re-raise) my hand.

    ``eph_key`` is a per-hand X25519 key: the conversation with the mentor is sealed to it,
    so for an anonymous hand the mentor never learns who the student is.
    ``claimed_by`` restores a claim a previous broker had granted.
    """

    KIND: ClassVar[Kind] = Kind.HAND
    SIGNED: ClassVar[bool] = False
    hand_id: str = _hand_id()
    topic: str = _short()
    anon: bool = False
    eph_key: bytes = _key()
    raised_at: float = 0.0
    claimed_by: bytes = _opt_key()
    claim_sig: bytes = _opt_sig()  # the claiming mentor's signature (Claim.sig)
    # The student's identity signature of lanchat.core.authority.hand_payload; empty for an
    # anonymous hand (it would name the student).
    sig: bytes = _opt_sig()


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class Claim(_Record):
    """Mentor -> broker: I take this hand."""

    KIND: ClassVar[Kind] = Kind.CLAIM
    SIGNED: ClassVar[bool] = False
    hand_id: str = _hand_id()
    # The mentor's identity signature of lanchat.core.authority.claim_payload for this
    # hand's per-hand key: the student seals to the mentor only with it.
    sig: bytes = _opt_sig()


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class HandDone(_Record):
    """Student or claiming mentor -> broker: this hand is resolved (or lowered)."""

    KIND: ClassVar[Kind] = Kind.HAND_DONE
    SIGNED: ClassVar[bool] = False
    hand_id: str = _hand_id()


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class QueueEntry(_Record):
    hand_id: str = _hand_id()
    label: str = _short(_MAX_HANDLE)  # the handle, or a pseudonym for an anonymous hand
    topic: str = _short()
    anon: bool = False
    raised_at: float = 0.0
    eph_key: bytes = _key()
    student_key: bytes = _opt_key()  # empty for anonymous hands
    claimed_by: str = _short(_MAX_HANDLE)  # the mentor's handle, "" while waiting
    claimed_key: bytes = _opt_key()
    hand_sig: bytes = _opt_sig()  # the student's Hand.sig (empty for anonymous hands)


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class Queue(_Record):
    """Broker -> each mentor: the whole help queue, oldest hand first."""

    KIND: ClassVar[Kind] = Kind.QUEUE
    SIGNED: ClassVar[bool] = False
    version: int = 0
    entries: tuple[QueueEntry, ...] = ()


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class HandStatus(_Record):
    """Broker -> the student: where your hand stands (waiting, claimed, done)."""

    KIND: ClassVar[Kind] = Kind.HAND_STATUS
    SIGNED: ClassVar[bool] = False
    hand_id: str = _hand_id()
    state: str = _short(16)
    position: int = 0
    mentor: str = _short(_MAX_HANDLE)
    mentor_key: bytes = _opt_key()
    claim_sig: bytes = _opt_sig()  # the claiming mentor's Claim.sig


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class HelpMsg(_Record):
    """Student <-> claiming mentor, routed by the broker by hand id; sealed end to end
    between the student's per-hand key and the mentor's identity (box) key."""

    KIND: ClassVar[Kind] = Kind.HELP_MSG
    SIGNED: ClassVar[bool] = False
    hand_id: str = _hand_id()
    to_mentor: bool = True
    box: bytes = field(default=b"", metadata={"max": 64 * 1024})


PRIVATE_ITEMS = frozenset({"request", "accept", "reject", "text", "file"})


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class Private(_Record):
    """Inside a Direct: one item of a private conversation, numbered per sender->recipient.

    ``base`` is the lowest number the sender still holds unacknowledged; everything below
    was already acknowledged, so a receiver may skip ahead to it.
    """

    KIND: ClassVar[Kind] = Kind.PRIVATE
    SIGNED: ClassVar[bool] = False
    item: str = _short(16)
    cseq: int = 0
    base: int = 0
    handle: str = _short(_MAX_HANDLE)
    text: str = field(default="", metadata={"max": MAX_TEXT_CHARS})
    sent_t: float = 0.0


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class PrivateAck(_Record):
    """Inside a Direct: I have every item of yours up to and including ``upto``."""

    KIND: ClassVar[Kind] = Kind.PRIVATE_ACK
    SIGNED: ClassVar[bool] = False
    upto: int = 0


SIGNALS = frozenset({"typing", "read"})


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class Signal(_Record):
    """Inside a Direct: a hint that is not worth queueing (typing now; read up to item N).

    Not numbered and never re-sent: a lost one is covered by the next.
    """

    KIND: ClassVar[Kind] = Kind.SIGNAL
    SIGNED: ClassVar[bool] = False
    what: str = _short(16)
    value: int = 0


Message = (
    Hello
    | Welcome
    | Refused
    | Heartbeat
    | Beat
    | Roster
    | RosterDelta
    | Lookup
    | Found
    | Public
    | PublicBatch
    | Relay
    | Ack
    | Resend
    | Goodbye
    | Direct
    | Grant
    | Redirect
    | Sync
    | Have
    | Want
    | Hand
    | Claim
    | HandDone
    | Queue
    | HandStatus
    | HelpMsg
    | Private
    | PrivateAck
    | Signal
)

_OUTER: dict[Kind, type[Any]] = {
    cls.KIND: cls
    for cls in (
        Hello,
        Welcome,
        Refused,
        Heartbeat,
        Beat,
        Roster,
        RosterDelta,
        Lookup,
        Found,
        Public,
        PublicBatch,
        Relay,
        Ack,
        Resend,
        Goodbye,
        Direct,
        Grant,
        Redirect,
        Sync,
        Have,
        Want,
        Hand,
        Claim,
        HandDone,
        Queue,
        HandStatus,
        HelpMsg,
    )
}
_INNER: dict[Kind, type[Any]] = {cls.KIND: cls for cls in (Private, PrivateAck, Signal)}


# ---------------------------------------------------------------- field conversion


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    if not text.isascii():
        raise DecodeError("bytes field is not base64url")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise DecodeError("bytes field is not base64url") from exc
    if _b64(data) != text:  # one spelling per value: unpadded, canonical
        raise DecodeError("bytes field is not canonical base64url")
    return data


_HINTS: dict[type[Any], dict[str, Any]] = {}


def _hints(cls: type[Any]) -> dict[str, Any]:
    hints = _HINTS.get(cls)
    if hints is None:
        hints = typing.get_type_hints(cls)
        _HINTS[cls] = hints
    return hints


def _to_json(value: Any) -> Any:
    if isinstance(value, str | int | float):  # the common case first (bool is an int)
        return value
    if isinstance(value, bytes):
        return _b64(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple):
        return [_to_json(v) for v in value]
    return value


def _from_json(tp: Any, meta: typing.Mapping[str, Any], raw: Any, name: str) -> Any:
    if tp is bool:
        if not isinstance(raw, bool):
            raise DecodeError(f"field {name!r} must be a boolean")
        return raw
    if tp is int:
        if not isinstance(raw, int) or isinstance(raw, bool):
            raise DecodeError(f"field {name!r} must be an integer")
        if not -(2**63) <= raw < 2**63:
            raise DecodeError(f"field {name!r} is out of range")
        return raw
    if tp is float:
        if not isinstance(raw, int | float) or isinstance(raw, bool):
            raise DecodeError(f"field {name!r} must be a number")
        try:
            value = float(raw)
        except OverflowError:
            raise DecodeError(f"field {name!r} is out of range") from None
        if not math.isfinite(value):
            raise DecodeError(f"field {name!r} must be finite")
        return value
    if tp is str:
        if not isinstance(raw, str):
            raise DecodeError(f"field {name!r} must be a string")
        if len(raw) > meta.get("max", MAX_TEXT_CHARS):
            raise DecodeError(f"field {name!r} is too long")
        try:
            raw.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: could never be signed or shown
            raise DecodeError(f"field {name!r} is not valid Unicode") from None
        return raw
    if tp is bytes:
        if not isinstance(raw, str):
            raise DecodeError(f"field {name!r} must be base64url text")
        data = _unb64(raw)
        want = meta.get("len")
        if want is not None and len(data) != want:
            raise DecodeError(f"field {name!r} must be {want} bytes")
        want = meta.get("len_or_empty")
        if want is not None and len(data) not in (0, want):
            raise DecodeError(f"field {name!r} must be {want} bytes or empty")
        if len(data) > meta.get("max", 1 << 20):
            raise DecodeError(f"field {name!r} is too long")
        return data
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _object(tp, raw)
    origin = typing.get_origin(tp)
    if origin is tuple:
        (item_tp, _ellipsis) = typing.get_args(tp)
        if not isinstance(raw, list):
            raise DecodeError(f"field {name!r} must be a list")
        return tuple(_from_json(item_tp, {}, item, name) for item in raw)
    raise DecodeError(f"field {name!r} has an unsupported type")  # pragma: no cover


def _object(cls: type[Any], raw: Any) -> Any:
    if not isinstance(raw, dict):
        raise DecodeError(f"{cls.__name__} body must be a JSON object")
    fields = dataclasses.fields(cls)
    names = {f.name for f in fields}
    unknown = set(raw) - names
    if unknown:
        raise DecodeError(f"{cls.__name__} has unknown field(s) {sorted(unknown)!r}")
    missing = names - set(raw)
    if missing:
        raise DecodeError(f"{cls.__name__} is missing field(s) {sorted(missing)!r}")
    hints = _hints(cls)
    values = {f.name: _from_json(hints[f.name], f.metadata, raw[f.name], f.name) for f in fields}
    obj = cls(**values)
    check = getattr(obj, "check", None)
    if check is not None:
        check()  # rules that span fields
    return obj


def _reject_constant(name: str) -> Any:
    raise DecodeError(f"JSON constant {name} is not allowed")


def _body(msg: Any) -> bytes:
    body = {f.name: _to_json(getattr(msg, f.name)) for f in dataclasses.fields(msg)}
    return json.dumps(body, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()


def _header(kind: Kind) -> bytes:
    return MAGIC + bytes((PROTOCOL_VERSION, int(kind)))


# ---------------------------------------------------------------- public API


def signed_bytes(msg: Message) -> bytes:
    """The canonical bytes a signature over ``msg`` covers."""
    return _header(msg.KIND) + _body(msg)


def encode(msg: Message, sig: bytes = b"") -> list[bytes]:
    """Frames for ``msg``; ``sig`` is required exactly for signed kinds."""
    if msg.KIND in _INNER:
        raise ValueError(f"{type(msg).__name__} travels only sealed inside a Direct")
    if bool(sig) != msg.SIGNED or (sig and len(sig) != SIGNATURE_BYTES):
        raise ValueError(f"{type(msg).__name__} needs {'a' if msg.SIGNED else 'no'} signature")
    if isinstance(msg, Relay):
        relay_body = json.dumps(
            {"bseq": msg.bseq, "epoch": msg.epoch, "place": msg.place}, separators=(",", ":")
        ).encode()
        return [_header(Kind.RELAY), relay_body, b"", *encode(msg.inner, msg.inner_sig)]
    return [_header(msg.KIND), _body(msg), sig]


def carried(place: int, envelope: bytes) -> list[bytes]:
    """The frames of a Relay of epoch 0 (anti-entropy) for a stored envelope, without
    decoding it: ``envelope`` is header (4) + signature (64) + body, as :func:`envelope_of`
    makes it."""
    body = json.dumps({"bseq": 0, "epoch": 0, "place": place}, separators=(",", ":")).encode()
    sig_end = 4 + SIGNATURE_BYTES
    return [_header(Kind.RELAY), body, b"", envelope[:4], envelope[sig_end:], envelope[4:sig_end]]


def envelope_of(signed: bytes, sig: bytes) -> bytes:
    """One blob for a signed public message: header + signature + body (``signed`` is
    :func:`signed_bytes`, the header and body)."""
    return signed[:4] + sig + signed[4:]


def envelope_frames(envelope: bytes) -> list[bytes]:
    """The three frames of the message an envelope holds."""
    sig_end = 4 + SIGNATURE_BYTES
    return [envelope[:4], envelope[sig_end:], envelope[4:sig_end]]


def encode_inner(msg: Private | PrivateAck | Signal) -> bytes:
    """Plaintext for a Direct's box: header and body in one byte string."""
    return _header(msg.KIND) + _body(msg)


def _check_header(header: bytes) -> Kind:
    if len(header) != 4 or header[:2] != MAGIC:
        raise DecodeError("not a lanchat frame (bad magic)")
    if header[2] != PROTOCOL_VERSION:
        raise DecodeError(
            f"protocol version {header[2]} is not supported (this node speaks {PROTOCOL_VERSION})"
        )
    try:
        return Kind(header[3])
    except ValueError:
        raise DecodeError(f"unknown message kind {header[3]}") from None


def _parse_body(body: bytes) -> Any:
    try:
        return json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except DecodeError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise DecodeError("body is not UTF-8 JSON") from exc


def _decode_one(frames: typing.Sequence[bytes], table: dict[Kind, type[Any]]) -> tuple[Any, bytes]:
    header, body, sig = frames
    kind = _check_header(header)
    cls = table.get(kind)
    if cls is None or cls is Relay:
        raise DecodeError(f"message kind {kind.name} is not allowed here")
    if cls.SIGNED and len(sig) != SIGNATURE_BYTES:
        raise DecodeError(f"{cls.__name__} must carry a {SIGNATURE_BYTES}-byte signature")
    if not cls.SIGNED and sig:
        raise DecodeError(f"{cls.__name__} must not carry a signature")
    return _object(cls, _parse_body(body)), sig


def decode(frames: typing.Sequence[bytes]) -> tuple[Message, bytes]:
    """``(message, signature)`` from frames; the signature is ``b""`` for unsigned kinds."""
    try:
        frames = [bytes(f) for f in frames]
    except TypeError as exc:
        raise DecodeError("frames must be bytes") from exc
    if sum(len(f) for f in frames) > MAX_FRAMES_BYTES:
        raise DecodeError(f"message is larger than {MAX_FRAMES_BYTES} bytes")
    if len(frames) == 6 and frames[0] == _header(Kind.RELAY):
        if frames[2]:
            raise DecodeError("Relay must not carry a signature")
        meta = _parse_body(frames[1])
        if not isinstance(meta, dict) or set(meta) != {"epoch", "bseq", "place"}:
            raise DecodeError("Relay body must be {epoch, bseq, place}")
        epoch = _from_json(int, {}, meta["epoch"], "epoch")
        bseq = _from_json(int, {}, meta["bseq"], "bseq")
        place = _from_json(int, {}, meta["place"], "place")
        inner, inner_sig = _decode_one(
            frames[3:], {Kind.PUBLIC: Public, Kind.PUBLIC_BATCH: PublicBatch}
        )
        relay = Relay(epoch=epoch, bseq=bseq, inner=inner, inner_sig=inner_sig, place=place)
        return relay, b""
    if len(frames) != 3:
        raise DecodeError(f"expected 3 frames, got {len(frames)}")
    msg, sig = _decode_one(frames, _OUTER)
    return typing.cast("Message", msg), sig


def decode_inner(plaintext: bytes) -> Private | PrivateAck | Signal:
    """The Private, PrivateAck or Signal sealed inside a Direct."""
    if len(plaintext) > MAX_FRAMES_BYTES:
        raise DecodeError("sealed item is too large")
    msg, _ = _decode_one([plaintext[:4], plaintext[4:], b""], _INNER)
    if isinstance(msg, Private) and msg.item not in PRIVATE_ITEMS:
        raise DecodeError(f"unknown private item {msg.item!r}")
    if isinstance(msg, Signal) and msg.what not in SIGNALS:
        raise DecodeError(f"unknown signal {msg.what!r}")
    return typing.cast("Private | PrivateAck | Signal", msg)
