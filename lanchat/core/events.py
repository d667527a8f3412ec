"""The node's events, typed: one frozen dataclass per event of the headless contract
(docs/headless.md), and the one JSON encoding every front end reads. Pure.

A part says what happened with ``ctx.emit("peer_up", handle=..., ...)`` (or builds the
event itself and calls ``ctx.emit_event``): the fields are checked against the event's
type as it is built, and ``to_json`` writes what the headless front end prints and the TUI's
view model reads. Field names that are Python words carry a trailing underscore (``from_``,
``with_``, ``self_``); the encoding drops it. Fields marked ``optional`` are left out of the
encoding when None (the contract's "and X" fields); every other field is always written.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

__all__ = ["EVENT_TYPES", "Event", "UnknownEvent", "event_of"]


_OPTIONAL = {"optional": True}


@dataclass(frozen=True, slots=True)
class Event:
    EV: ClassVar[str] = ""

    def to_json(self, t: float) -> dict[str, Any]:
        """The event as the headless contract writes it (``"ev"`` and ``"t"`` first)."""
        out: dict[str, Any] = {"ev": self.EV, "t": t}
        for f in _fields_of(type(self)):
            value = getattr(self, f.name)
            if value is None and f.metadata.get("optional"):
                continue
            out[f.name.rstrip("_")] = value
        return out


_FIELDS: dict[type[Event], tuple[Any, ...]] = {}


def _fields_of(cls: type[Event]) -> tuple[Any, ...]:
    known = _FIELDS.get(cls)
    if known is None:
        known = _FIELDS[cls] = fields(cls)
    return known


class UnknownEvent(ValueError):
    pass


# ---- the room and its people -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Status(Event):
    EV: ClassVar[str] = "status"
    state: str
    text: str
    presence: str | None = field(default=None, metadata=_OPTIONAL)  # answer to setting our status
    online: int | None = field(default=None, metadata=_OPTIONAL)  # answer to the `status` command
    counters: dict[str, int] | None = field(default=None, metadata=_OPTIONAL)


@dataclass(frozen=True, slots=True)
class Ready(Event):
    EV: ClassVar[str] = "ready"
    handle: str
    fingerprint: str
    connect: str  # what others type after --connect to join through us


@dataclass(frozen=True, slots=True)
class Broker(Event):
    EV: ClassVar[str] = "broker"
    handle: str
    self_: bool
    epoch: int


@dataclass(frozen=True, slots=True)
class PeerUp(Event):
    EV: ClassVar[str] = "peer_up"
    handle: str
    mentor: bool
    status: str
    status_text: str


@dataclass(frozen=True, slots=True)
class PeerDown(Event):
    EV: ClassVar[str] = "peer_down"
    handle: str


@dataclass(frozen=True, slots=True)
class PeerStatus(Event):
    EV: ClassVar[str] = "peer_status"
    handle: str
    status: str
    text: str


@dataclass(frozen=True, slots=True)
class Who(Event):
    EV: ClassVar[str] = "who"
    peers: list[dict[str, Any]]
    # In a hall (over lanchat.core.relay.LAZY_FROM_CLIENTS): how many are connected.
    count: int | None = field(default=None, metadata=_OPTIONAL)


@dataclass(frozen=True, slots=True)
class Rooms(Event):
    EV: ClassVar[str] = "rooms"
    rooms: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Room(Event):
    EV: ClassVar[str] = "room"
    name: str


@dataclass(frozen=True, slots=True)
class Warning(Event):
    EV: ClassVar[str] = "warning"
    code: str
    message: str
    handle: str | None = field(default=None, metadata=_OPTIONAL)
    id: str | None = field(default=None, metadata=_OPTIONAL)  # the message it is about


@dataclass(frozen=True, slots=True)
class Authority(Event):
    """A mentor holds the room's mentor authority: the code to show the room."""

    EV: ClassVar[str] = "authority"
    fingerprint: str
    code: str


@dataclass(frozen=True, slots=True)
class MentorAdded(Event):
    EV: ClassVar[str] = "mentor_added"
    handle: str


@dataclass(frozen=True, slots=True)
class Trusted(Event):
    EV: ClassVar[str] = "trusted"
    handle: str
    fingerprint: str


@dataclass(frozen=True, slots=True)
class Storage(Event):
    """The disk takes writes again after an ``error`` ``storage``."""

    EV: ClassVar[str] = "storage"
    state: str
    saved: int
    message: str


@dataclass(frozen=True, slots=True)
class Error(Event):
    EV: ClassVar[str] = "error"
    code: str
    message: str


# ---- messages ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Public(Event):
    EV: ClassVar[str] = "public"
    id: str
    from_: str
    text: str
    sent_t: float
    order: list[Any]  # the message's place in the room's one order (compare as lists)
    impostor: bool | None = field(default=None, metadata=_OPTIONAL)  # not the pinned key
    fingerprint: str | None = field(default=None, metadata=_OPTIONAL)
    replay: bool | None = field(default=None, metadata=_OPTIONAL)


@dataclass(frozen=True, slots=True)
class Placed(Event):
    """Our own public message got its place in the room's order: its line moves there."""

    EV: ClassVar[str] = "placed"
    id: str
    order: list[Any]


@dataclass(frozen=True, slots=True)
class Private(Event):
    EV: ClassVar[str] = "private"
    id: str
    from_: str
    text: str
    sent_t: float
    hand: str | None = field(default=None, metadata=_OPTIONAL)
    impostor: bool | None = field(default=None, metadata=_OPTIONAL)
    fingerprint: str | None = field(default=None, metadata=_OPTIONAL)


@dataclass(frozen=True, slots=True)
class Sent(Event):
    EV: ClassVar[str] = "sent"
    id: str


@dataclass(frozen=True, slots=True)
class Delivered(Event):
    EV: ClassVar[str] = "delivered"
    id: str
    to: str
    upto: int


@dataclass(frozen=True, slots=True)
class Read(Event):
    EV: ClassVar[str] = "read"
    id: str
    by: str


@dataclass(frozen=True, slots=True)
class Typing(Event):
    EV: ClassVar[str] = "typing"
    from_: str
    active: bool


@dataclass(frozen=True, slots=True)
class History(Event):
    EV: ClassVar[str] = "history"
    with_: str | None
    messages: list[dict[str, Any]]


# ---- friendship and settings ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Request(Event):
    EV: ClassVar[str] = "request"
    from_: str
    fingerprint: str
    impostor: bool | None = field(default=None, metadata=_OPTIONAL)


@dataclass(frozen=True, slots=True)
class Accepted(Event):
    EV: ClassVar[str] = "accepted"
    by: str
    with_: str | None = field(default=None, metadata=_OPTIONAL)  # when we accepted


@dataclass(frozen=True, slots=True)
class Rejected(Event):
    EV: ClassVar[str] = "rejected"
    by: str


@dataclass(frozen=True, slots=True)
class Friends(Event):
    EV: ClassVar[str] = "friends"
    friends: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Settings(Event):
    EV: ClassVar[str] = "settings"
    receipts: bool
    typing: bool


# ---- files ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FileOffer(Event):
    EV: ClassVar[str] = "file_offer"
    id: str
    from_: str
    name: str
    size: int
    sha256: str
    fingerprint: str
    shared: bool
    impostor: bool | None = field(default=None, metadata=_OPTIONAL)


@dataclass(frozen=True, slots=True)
class FileOffered(Event):
    EV: ClassVar[str] = "file_offered"
    id: str
    name: str
    size: int
    to: str | None


@dataclass(frozen=True, slots=True)
class FileFetched(Event):
    EV: ClassVar[str] = "file_fetched"
    id: str
    by: str


@dataclass(frozen=True, slots=True)
class FileProgress(Event):
    EV: ClassVar[str] = "file_progress"
    id: str
    name: str
    done: int
    size: int
    rate: int
    eta: float | None


@dataclass(frozen=True, slots=True)
class FileDone(Event):
    EV: ClassVar[str] = "file_done"
    id: str
    name: str
    path: str
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class FileFailed(Event):
    EV: ClassVar[str] = "file_failed"
    id: str
    name: str
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class InstallServer(Event):
    EV: ClassVar[str] = "install_server"
    url: str
    command: str
    windows: str
    unix: str


# ---- the help queue ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hand(Event):
    """One of our hands changed (a student's), or one we helped ended (a mentor's)."""

    EV: ClassVar[str] = "hand"
    id: str
    state: str
    position: int | None = field(default=None, metadata=_OPTIONAL)
    mentor: str | None = field(default=None, metadata=_OPTIONAL)
    anon: bool | None = field(default=None, metadata=_OPTIONAL)
    topic: str | None = field(default=None, metadata=_OPTIONAL)
    who: str | None = field(default=None, metadata=_OPTIONAL)


@dataclass(frozen=True, slots=True)
class Queue(Event):
    EV: ClassVar[str] = "queue"
    entries: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Claimed(Event):
    EV: ClassVar[str] = "claimed"
    id: str
    who: str
    anon: bool
    topic: str


EVENT_TYPES: dict[str, type[Event]] = {
    cls.EV: cls
    for cls in Event.__subclasses__()  # every event defined above
}


def event_of(name: str, fields_: dict[str, Any]) -> Event:
    """The typed event ``name`` with these (encoded) field names; raises UnknownEvent for
    a name the contract does not have and TypeError for fields its type does not have."""
    cls = EVENT_TYPES.get(name)
    if cls is None:
        raise UnknownEvent(f"no event {name!r} in the contract")
    return cls(**{_PY_NAMES.get(k, k): v for k, v in fields_.items()})


_PY_NAMES = {"from": "from_", "with": "with_", "self": "self_"}
