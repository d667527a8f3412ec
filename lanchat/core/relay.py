"""The broker's relay as a sans-IO state machine: frames and time in, effects out.

The node that wins the election feeds this machine every frame its ROUTER socket receives
(with the CURVE key that the transport authenticated) and a ``tick`` a few times a second.
It answers with effects: frames for one client (ROUTER) or for everyone (PUB).

What it enforces, so a misbehaving client cannot hurt the others:
- a client speaks only after a Hello signed by the identity key it claims, sent over a
  connection authenticated with the CURVE key that Hello names (nobody speaks as another);
- a handle is held by one identity key at a time (case-insensitive);
- every Public is signed by its author and relayed once (replays are acknowledged, not
  relayed again); every Direct is signed by its sender and routed only to its recipient;
- a token bucket per client bounds how fast one client can make the broker relay;
- a student has at most MAX_HANDS_PER_STUDENT hands up, counted per identity key
  (lanchat.core.helpqueue), whatever its client claims to enforce;
- malformed frames are dropped and counted;
- one connection speaks for one identity, and every kind of message a node can make
  others store or show has a budget per identity (and Directs one per recipient for
  strangers), at the end of this file.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from lanchat.core import wire
from lanchat.core.budget import Budgets
from lanchat.core.election import Candidate, succession
from lanchat.core.handles import HandleError, handle_key, validate_handle
from lanchat.core.helpqueue import HelpQueue, QueueError

__all__ = [
    "BEAT_INTERVAL_S",
    "CLIENT_TIMEOUT_S",
    "JOIN_BEAT_S",
    "BrokerRelay",
    "Effect",
    "Probe",
    "Publish",
    "Reconcile",
    "ToClient",
    "Verify",
]

Verify = Callable[[bytes, bytes, bytes], bool]
"""``verify(identity_key, data, signature)``; injected so the core needs no crypto library."""

BEAT_INTERVAL_S = 0.4
JOIN_BEAT_S = 0.1  # a Beat this soon after someone joins (see _hello)
ROSTER_MIN_INTERVAL_S = 0.05  # a room of a few: a wave of joins is announced together
# Every client decodes the whole roster, so one roster costs the room O(size^2): the
# interval grows with the square of the size, which keeps that cost per second flat. 100
# laptops: at most two rosters a second; 31 or fewer: the minimum interval; never longer
# than ROSTER_MAX_INTERVAL_S (a newcomer waits that long at most to be seen).
ROSTER_S_PER_CLIENT_SQUARED = 0.000_05
ROSTER_MAX_INTERVAL_S = 1.0
# From this many clients on, a change goes out as a RosterDelta (what changed since the
# last published roster) instead of the whole roster: a join then costs the room O(N)
# bytes, not O(N^2). Below it the whole roster is a few KB, as small as a delta's framing.
DELTA_FROM_CLIENTS = 8
# A hall: from this many clients on, nobody is sent everyone. A member holds the count,
# the head of the succession (mentors first: who takes over), every mentor and the recent
# speakers; others only when it looks them up. Giving each of 1,000 members an entry for
# each other (~370 B) would move ~370 MB: minutes of a crowded Wi-Fi's capacity.
LAZY_FROM_CLIENTS = 150
LAZY_HEAD = 8
LAZY_MENTORS_MAX = 64
LAZY_SPEAKERS = 32
HALL_BEAT_INTERVAL_S = 1.0
CLIENT_TIMEOUT_S = 2.0
# A client silent for CLIENT_TIMEOUT_S is probed before it is reported gone: a TCP connect
# to its info port. Its kernel answers for it even when the process gets no CPU (a
# 100-laptop start, SIGSTOP): busy, not gone, until BUSY_MAX_S of silence. A closed port
# (the process died) is gone at once; no answer to the connect within PROBE_CONNECT_S
# (the laptop left) too. PROBE_WAIT_S is only a backstop for an answer that never comes
# back, generous because a starved broker handles even a prompt answer late.
BUSY_MAX_S = 60.0
PROBE_CONNECT_S = 2.0
PROBE_WAIT_S = 4.0
BACKLOG_SIZE = 2000
RESEND_MAX = 500
SEEN_IDS_MAX = 50_000
# One client may make the broker relay this many messages per second (burst the same).
RATE_PER_CLIENT = 10_000.0
# Budgets (see "budgets" below). A roster of MAX_CLIENTS entries stays under the largest
# frame a client takes (wire: ~370 bytes an entry, MAX_FRAMES_BYTES 1 MiB); from
# LAZY_FROM_CLIENTS on nobody is sent the whole roster anyway (a hall).
MAX_CLIENTS = 2000
# New identities admitted: a failover of a whole hall of 1,000 is the burst (all of them
# come to the successor at once: benchmarks/bench_broker.py), then 50 a second.
JOINS_PER_S = 50.0
JOINS_BURST = 1200.0
DIRECTS_PER_S = 200.0  # per sender identity: texts, receipts, typing, acks, offers
DIRECTS_BURST = 400.0
FIRST_CONTACTS_PER_S = 5.0  # per recipient: Directs between two keys never paired yet
FIRST_CONTACTS_BURST = 30.0
PAIRS_KEPT = 50_000
HANDS_PER_S = 0.5  # raises per identity (3 kept at most: see helpqueue)
HANDS_BURST = 10.0
STATUS_CHANGES_PER_S = 1.0  # per identity; every change is a roster to everyone
STATUS_CHANGES_BURST = 5.0
SHARED_OFFERS_PER_S = 1.0  # public messages carrying a file offer, per identity
SHARED_OFFERS_BURST = 10.0


@dataclass(frozen=True, slots=True)
class ToClient:
    rid: bytes
    frames: list[bytes]


@dataclass(frozen=True, slots=True)
class Publish:
    frames: list[bytes]


@dataclass(frozen=True, slots=True)
class Reconcile:
    """A client's summary (Have) or request (Want): the broker's node answers it from its
    history (lanchat.room.public), which this machine does not hold."""

    rid: bytes
    msg: wire.Have | wire.Want


@dataclass(frozen=True, slots=True)
class Probe:
    """Is this silent client's node still there? Answer with :meth:`BrokerRelay.probed`."""

    rid: bytes
    address: str
    port: int


Effect = ToClient | Publish | Reconcile | Probe


@dataclass(slots=True)
class _Client:
    hello: wire.Hello
    sig: bytes
    last_seen: float
    status: str = "online"
    mentor: bool = False  # a mentor by certificate (mentor_check), not by its own say
    tokens: float = RATE_PER_CLIENT
    refilled: float = 0.0
    probed_at: float | None = None  # a probe is out
    busy_since: float | None = None  # silent, but its node answered a probe

    def take_token(self, now: float, cost: int = 1) -> bool:
        self.tokens = min(RATE_PER_CLIENT, self.tokens + (now - self.refilled) * RATE_PER_CLIENT)
        self.refilled = now
        if self.tokens < cost:
            return False
        self.tokens -= cost
        return True


# Encoded once: thousands of newcomers may be refused in a second.
_BUSY = wire.encode(wire.Refused(code="busy", message="too many newcomers; try again in a moment"))
_ROOM_FULL = wire.encode(
    wire.Refused(code="room_full", message=f"this room has {MAX_CLIENTS} members already")
)


@dataclass(slots=True)
class _RelayBudgets:
    joins: Budgets[bytes] = field(default_factory=lambda: Budgets(JOINS_PER_S, JOINS_BURST))
    directs: Budgets[bytes] = field(default_factory=lambda: Budgets(DIRECTS_PER_S, DIRECTS_BURST))
    first_contacts: Budgets[bytes] = field(
        default_factory=lambda: Budgets(FIRST_CONTACTS_PER_S, FIRST_CONTACTS_BURST)
    )
    hands: Budgets[bytes] = field(default_factory=lambda: Budgets(HANDS_PER_S, HANDS_BURST))
    status: Budgets[bytes] = field(
        default_factory=lambda: Budgets(STATUS_CHANGES_PER_S, STATUS_CHANGES_BURST)
    )
    shared_offers: Budgets[bytes] = field(
        default_factory=lambda: Budgets(SHARED_OFFERS_PER_S, SHARED_OFFERS_BURST)
    )
    # Pairs of keys (in either direction) a Direct already went between.
    pairs: OrderedDict[tuple[bytes, bytes], None] = field(default_factory=OrderedDict)


@dataclass(slots=True)
class BrokerRelay:
    key: bytes
    handle: str
    room: str
    epoch: int
    since: float
    pub_port: int
    verify: Verify
    # Whether a Hello's mentor claim holds (its certificate, lanchat.core.authority);
    # None takes the claim as it is (tests of the relay alone).
    mentor_check: Callable[[wire.Hello], bool] | None = None
    bseq: int = 0
    # The room's order (lanchat.core.antientropy): the last place given, never below a
    # place this relay has seen.
    clock: int = 0
    first_live: int = 1
    roster_version: int = 0
    counters: dict[str, int] = field(default_factory=dict)
    _clients: dict[bytes, _Client] = field(default_factory=dict)
    _rid_by_key: dict[bytes, bytes] = field(default_factory=dict)
    _backlog: deque[tuple[int, list[bytes]]] = field(
        default_factory=lambda: deque(maxlen=BACKLOG_SIZE)
    )
    _seen: OrderedDict[str, int] = field(default_factory=OrderedDict)  # id -> place
    _queue: HelpQueue = field(default_factory=HelpQueue)
    _seeded: dict[str, int] = field(default_factory=dict)  # id -> place
    _next_beat: float = 0.0
    _last_tick: float = -1e9
    _roster_sent: float = -1e9
    _roster_dirty: bool = False
    _published: int = 0
    _roster_encoded: tuple[int, list[bytes]] = (-1, [])  # (version, frames)
    # Since the last published roster: who joined or changed, who left (see _delta_frames).
    _touched: set[bytes] = field(default_factory=set)
    _gone: set[bytes] = field(default_factory=set)
    _speakers: OrderedDict[bytes, None] = field(default_factory=OrderedDict)
    _view: frozenset[bytes] = frozenset()  # the hall's shared entries at the last publish
    _published_head: tuple[bytes, ...] = ()
    _budgets: _RelayBudgets = field(default_factory=_RelayBudgets)
    _roster_waiting: list[bytes] = field(default_factory=list)  # newcomers, for the next

    # ------------------------------------------------------------ inputs

    def seed(self, history: Iterable[tuple[wire.Public | wire.PublicBatch, bytes, int]]) -> None:
        """Carry recent public messages over a failover, so late joiners still see them.

        Seeded messages are not counted as relayed: what this broker's node received, some
        other node may have missed when the old broker died. When their author sends them
        again (it re-sends its recent messages to every new broker), they go out once more,
        and receivers drop what they already have.
        """
        for msg, sig, place in history:
            self.clock = max(self.clock, place)
            if msg.room == self.room and place > 0 and msg.msg_id not in self._seeded:
                self._seeded[msg.msg_id] = place
                self._append_relay(msg, sig, place)
        self.first_live = self.bseq + 1

    def receive(
        self, rid: bytes, transport_key: bytes, frames: list[bytes], now: float
    ) -> list[Effect]:
        try:
            msg, sig = wire.decode(frames)
        except wire.DecodeError:
            return self._drop("malformed")
        client = self._clients.get(rid)
        if isinstance(msg, wire.Hello):
            return self._hello(rid, transport_key, msg, sig, now)
        if client is None:
            if isinstance(msg, wire.Goodbye):
                return []
            # Typically a client of the previous broker: tell it to introduce itself.
            return [self._refuse(rid, "hello_first", "send a Hello first")]
        client.last_seen = now
        client.busy_since = None
        if isinstance(msg, wire.Heartbeat):
            if msg.status != client.status and self._status_budget(client, now):
                client.status = msg.status
                self._touched.add(client.hello.id_key)
                return self._roster_changed(now)
            return []
        if isinstance(msg, wire.Public | wire.PublicBatch):
            return self._public(rid, client, msg, sig, now)
        if isinstance(msg, wire.Direct | wire.Grant):
            return self._direct(client, msg, sig, frames, now)
        if isinstance(msg, wire.Resend):
            return self._resend(rid, msg)
        if isinstance(msg, wire.Relay):
            return self._carried(msg)
        if isinstance(msg, wire.Have):
            self.clock = max(self.clock, msg.top)
            return [Reconcile(rid, msg)]
        if isinstance(msg, wire.Want):
            return [Reconcile(rid, msg)]
        if isinstance(msg, wire.Sync):
            if msg.roster_version >= self._published:
                # It has all we published, or newer (its copy at joining): what changed
                # since goes out with the next publish. After a failover, a whole room of
                # newcomers asks at once, as each subscription comes up.
                return []
            return [ToClient(rid, self._sync_frames())]
        if isinstance(msg, wire.Lookup):
            return self._lookup(rid, client, msg, now)
        if isinstance(msg, wire.Goodbye):
            left = self._forget(rid)
            effects: list[Effect] = self._roster_changed(now)
            if left is not None:
                # Left for good: its claims go back to waiting, its own hands are withdrawn.
                self._queue.release_mentor(left.hello.id_key)
                self._queue.drop_student(left.hello.id_key)
                effects += self._queue_effects()
            return effects
        if isinstance(msg, wire.Hand | wire.Claim | wire.HandDone | wire.HelpMsg):
            if isinstance(msg, wire.Hand) and not self._hand_budget(client, now):
                return []
            return self._help(rid, client, msg, frames)
        return self._drop("unexpected_kind")

    def tick(self, now: float) -> list[Effect]:
        effects: list[Effect] = []
        if now - self._last_tick > CLIENT_TIMEOUT_S / 2:
            # The broker itself did not run (lid closed, stopped): its clients did nothing
            # wrong, so nobody times out for that gap.
            for client in self._clients.values():
                client.last_seen = max(client.last_seen, now - CLIENT_TIMEOUT_S / 2)
        self._last_tick = now
        gone = []
        for rid, c in self._clients.items():
            if now - c.last_seen <= CLIENT_TIMEOUT_S:
                continue
            if c.probed_at is not None:
                if now - c.probed_at > PROBE_WAIT_S:
                    gone.append(rid)  # the probe's answer never came back
            elif (c.busy_since is None or now - c.busy_since < BUSY_MAX_S) and c.hello.info_port:
                c.probed_at = now
                effects.append(Probe(rid, c.hello.address, c.hello.info_port))
            else:
                gone.append(rid)
        for rid in gone:
            self._forget(rid)
            self._count("client_timeout")
        due = self.roster_due()
        if gone or (due is not None and now >= due):
            effects += self._roster_changed(now)
        if now >= self._next_beat:
            self._next_beat = now + self._beat_interval()
            # The version everyone can have: a coalesced change is not announced until sent,
            # or every client would ask for it (Sync) at once.
            beat = wire.Beat(epoch=self.epoch, bseq=self.bseq, roster_version=self._published)
            effects.append(Publish(wire.encode(beat)))
        return effects

    def probed(self, rid: bytes, alive: bool, now: float) -> list[Effect]:
        """The answer to a :class:`Probe`: busy (kept, and asked again later) or gone."""
        client = self._clients.get(rid)
        if client is None or client.probed_at is None:
            return []
        client.probed_at = None
        if alive:
            if client.busy_since is None:
                client.busy_since = client.last_seen
            client.last_seen = now
            self._count("busy_kept")
            return []
        self._forget(rid)
        self._count("client_timeout")
        return self._roster_changed(now)

    def close(self, reason: str = "broker leaving") -> list[Effect]:
        return [Publish(wire.encode(wire.Goodbye(reason=reason)))]

    def redirect(self, to: wire.Redirect) -> list[Effect]:
        # Also to each client directly: one that joined a moment ago may not have its
        # subscription through yet (PUB drops for it), and a missed redirect splits the room.
        frames = wire.encode(to)
        return [Publish(frames), *(ToClient(rid, frames) for rid in self._clients)]

    # ------------------------------------------------------------ queries

    def roster(self) -> wire.Roster:
        cands = {
            c.hello.id_key: Candidate(
                key=c.hello.id_key,
                mentor=c.mentor,
                priority=c.hello.priority,
                started_at=c.hello.started_at,
            )
            for c in self._clients.values()
        }
        by_key = {c.hello.id_key: c for c in self._clients.values()}
        order = succession(cands.values(), self.key)
        peers = tuple(
            by_key[c.key].hello.entry(by_key[c.key].sig, by_key[c.key].status) for c in order
        )
        return wire.Roster(
            epoch=self.epoch, version=self.roster_version, broker_key=self.key, peers=peers
        )

    def rid_of(self, key: bytes) -> bytes | None:
        """The connection of the client with this identity key, if it is connected."""
        return self._rid_by_key.get(key)

    def client_count(self) -> int:
        return len(self._clients)

    # ------------------------------------------------------------ handlers

    def _hello(
        self, rid: bytes, transport_key: bytes, hello: wire.Hello, sig: bytes, now: float
    ) -> list[Effect]:
        if hello.curve_key != transport_key:
            self._count("hello_key_mismatch")
            return [self._refuse(rid, "bad_hello", "Hello does not match the connection's key")]
        refused = self._admission(rid, hello, now)  # first: a flood of newcomers costs little
        if refused is not None:
            return [refused]
        if not self.verify(hello.id_key, wire.signed_bytes(hello), sig):
            self._count("bad_signature")
            return [self._refuse(rid, "bad_hello", "Hello signature does not verify")]
        if hello.room != self.room:
            return [self._refuse(rid, "wrong_room", f"this broker serves room {self.room!r}")]
        try:
            validate_handle(hello.handle)
        except HandleError as exc:
            return [self._refuse(rid, "bad_handle", str(exc))]
        wanted = handle_key(hello.handle)
        replaced = []
        for other_rid, other in self._clients.items():
            same_name = handle_key(other.hello.handle) == wanted
            if same_name and other.hello.id_key != hello.id_key:
                self._count("handle_taken")
                return [
                    self._refuse(
                        rid,
                        "handle_taken",
                        f"the handle {hello.handle!r} is already used by another person "
                        "on this network; choose another one",
                    )
                ]
            if other.hello.id_key == hello.id_key and other_rid != rid:
                replaced.append(other_rid)  # the same person reconnected (new socket)
        for old_rid in replaced:
            self._forget(old_rid)
        known = self._clients.get(rid)
        status = known.status if known else "online"
        check = self.mentor_check
        mentor = hello.mentor and (check is None or check(hello))
        self._clients[rid] = _Client(
            hello=hello, sig=sig, last_seen=now, status=status, mentor=mentor
        )
        self._clients[rid].refilled = now
        self._rid_by_key[hello.id_key] = rid
        self._touched.add(hello.id_key)
        # The newcomer's SUB connects a moment after its Welcome and misses whatever is
        # published meanwhile (the roster of the next one to join): an early Beat tells it
        # which roster version and relay it should have, and it asks for what it lacks.
        if not self._lazy():
            # Not in a hall: there, a join storm would make it ten Beats a second to
            # everyone (15 Mbit/s at 1,000), and the snapshot comes directly anyway.
            self._next_beat = min(self._next_beat, now + JOIN_BEAT_S)
        welcome = wire.Welcome(
            epoch=self.epoch,
            broker_handle=self.handle,
            broker_key=self.key,
            pub_port=self.pub_port,
            bseq=self.bseq,
            since=self.since,
            first_live=self.first_live,
        )
        published = self._roster_changed(now)
        # The roster goes to the newcomer directly too: its SUB may not be connected yet,
        # and in a wave of joins the published one is held back a moment (see below).
        effects: list[Effect] = [ToClient(rid, wire.encode(welcome)), *self._roster_to(rid)]
        effects += published
        if mentor:
            effects.append(ToClient(rid, wire.encode(self._queue.snapshot())))
        elif hello.mentor:
            # A mentor by its own say only: no queue, and it is told so.
            self._count("mentor_unverified")
            effects.append(
                self._refuse(rid, "mentor_unverified", "no valid mentor certificate for this room")
            )
        return effects

    def _public(
        self,
        rid: bytes,
        client: _Client,
        msg: wire.Public | wire.PublicBatch,
        sig: bytes,
        now: float,
    ) -> list[Effect]:
        if (
            msg.author != client.hello.id_key
            or msg.room != self.room
            or msg.handle != client.hello.handle
        ):
            return self._drop("public_not_own")
        if not self._shared_offer_budget(client, msg, now):
            return []  # no Ack: as rate limited (and before the costly signature check)
        if not self.verify(msg.author, wire.signed_bytes(msg), sig):
            return self._drop("bad_signature")
        count = len(msg.texts) if isinstance(msg, wire.PublicBatch) else 1
        ack = ToClient(rid, wire.encode(wire.Ack(seq=msg.seq, count=count)))
        place = self._seen.get(msg.msg_id)
        if place is not None:
            self._count("duplicate")
            # Its place, to the author only: it may never have seen its relay (it stopped
            # right after our Ack), and it places its own line by it.
            placed = wire.Relay(epoch=0, bseq=0, inner=msg, inner_sig=sig, place=place)
            return [ToClient(rid, wire.encode(placed)), ack]
        if not client.take_token(now, count):
            # No Ack: the author keeps it in its outbox and sends it again later.
            return self._drop("rate_limited")
        place = self._seeded.pop(msg.msg_id, 0)
        if not place:
            self.clock += 1
            place = self.clock
        self._remember(msg.msg_id, place)
        self._spoke(msg.author)
        frames = self._append_relay(msg, sig, place)
        return [Publish(frames), ack]

    def _carried(self, msg: wire.Relay) -> list[Effect]:
        """A message some node holds and this relay lacked (anti-entropy): relayed once,
        at the place it already has; again only if that place is smaller than the one we
        knew (the smaller wins everywhere)."""
        inner = msg.inner
        if inner.room != self.room or msg.place < 1:
            return self._drop("carried_bad")
        known = self._seen.get(inner.msg_id) or self._seeded.get(inner.msg_id)
        if known is not None and known <= msg.place:
            return self._drop("carried_known")
        if not self.verify(inner.author, wire.signed_bytes(inner), msg.inner_sig):
            return self._drop("bad_signature")
        self._seeded.pop(inner.msg_id, None)
        self._seen.pop(inner.msg_id, None)
        self._remember(inner.msg_id, msg.place)
        self.clock = max(self.clock, msg.place)
        self._count("carried")
        return [Publish(self._append_relay(inner, msg.inner_sig, msg.place))]

    def _direct(
        self,
        client: _Client,
        msg: wire.Direct | wire.Grant,
        sig: bytes,
        frames: list[bytes],
        now: float,
    ) -> list[Effect]:
        if msg.sender != client.hello.id_key:
            return self._drop("direct_not_own")
        target = self._rid_by_key.get(msg.recipient)
        if target is None:
            # The sender keeps the item queued and sends it again when the peer is back.
            return self._drop("recipient_offline")
        if not client.take_token(now):
            return self._drop("rate_limited")
        pair = (min(msg.sender, msg.recipient), max(msg.sender, msg.recipient))
        first = pair not in self._budgets.pairs
        if not self._direct_budget(msg, now):
            return []  # as rate limited: the sender's channel sends it again
        if not self.verify(msg.sender, wire.signed_bytes(msg), sig):
            return self._drop("bad_signature")
        if first and self._lazy():
            # A hall: the recipient may not hold the sender (it opens Directs only from
            # members it holds): its entry first, as if it had looked it up.
            entry = client.hello.entry(client.sig, client.status)
            found = wire.Found(peers=(entry,), count=len(self._clients))
            return [ToClient(target, wire.encode(found)), ToClient(target, list(frames))]
        return [ToClient(target, list(frames))]

    def _help(
        self,
        rid: bytes,
        client: _Client,
        msg: wire.Hand | wire.Claim | wire.HandDone | wire.HelpMsg,
        frames: list[bytes],
    ) -> list[Effect]:
        key = client.hello.id_key
        try:
            if isinstance(msg, wire.Hand):
                mentors = {
                    c.hello.id_key: c.hello.handle for c in self._clients.values() if c.mentor
                }
                self._queue.raise_hand(msg, key, client.hello.handle, mentors)
            elif isinstance(msg, wire.Claim):
                if not client.mentor:
                    raise QueueError("only mentors can claim hands")
                self._queue.claim(msg.hand_id, key, client.hello.handle, msg.sig)
            elif isinstance(msg, wire.HandDone):
                record = self._queue.done(msg.hand_id, key)
                done = wire.HandStatus(
                    hand_id=record.hand_id, state="done", mentor=record.mentor_handle
                )
                effects = self._queue_effects()
                for target in {record.student_key, record.mentor_key} - {b""}:
                    target_rid = self._rid_by_key.get(target)
                    if target_rid is not None:
                        effects.append(ToClient(target_rid, wire.encode(done)))
                return effects
            else:
                session = self._queue.get(msg.hand_id)
                if session is None or not session.mentor_key:
                    return self._drop("help_no_session")
                if msg.to_mentor and key == session.student_key:
                    target = session.mentor_key
                elif not msg.to_mentor and key == session.mentor_key:
                    target = session.student_key
                else:
                    return self._drop("help_not_party")
                target_rid = self._rid_by_key.get(target)
                if target_rid is None:
                    return self._drop("recipient_offline")
                return [ToClient(target_rid, list(frames))]
        except QueueError as exc:
            # One answer per refused request and nothing stored: a student raising hands
            # in a loop gets a refusal each (at the budget of its connection), mentors
            # hear nothing of it.
            self._count("queue_refused")
            return [self._refuse(rid, "queue", str(exc))]
        return self._queue_effects()

    def _queue_effects(self) -> list[Effect]:
        """The queue to every mentor; each student's own standing to that student."""
        snapshot = wire.encode(self._queue.snapshot())
        effects: list[Effect] = [
            ToClient(rid, snapshot) for rid, c in self._clients.items() if c.mentor
        ]
        for record in self._queue.ordered():
            student_rid = self._rid_by_key.get(record.student_key)
            if student_rid is None:
                continue
            status = wire.HandStatus(
                hand_id=record.hand_id,
                state="claimed" if record.mentor_key else "waiting",
                position=self._queue.position(record.hand_id),
                mentor=record.mentor_handle,
                mentor_key=record.mentor_key,
                claim_sig=record.claim_sig,
            )
            effects.append(ToClient(student_rid, wire.encode(status)))
        return effects

    def _resend(self, rid: bytes, msg: wire.Resend) -> list[Effect]:
        if msg.epoch != self.epoch or msg.last < msg.first:
            return self._drop("bad_resend")
        last = min(msg.last, msg.first + RESEND_MAX - 1)
        return [
            ToClient(rid, frames) for bseq, frames in self._backlog if msg.first <= bseq <= last
        ]

    # ------------------------------------------------------------ helpers

    def _append_relay(
        self, msg: wire.Public | wire.PublicBatch, sig: bytes, place: int
    ) -> list[bytes]:
        self.bseq += 1
        relay = wire.Relay(epoch=self.epoch, bseq=self.bseq, inner=msg, inner_sig=sig, place=place)
        frames = wire.encode(relay)
        self._backlog.append((self.bseq, frames))
        return frames

    def _remember(self, msg_id: str, place: int) -> bool:
        if msg_id in self._seen:
            return False
        self._seen[msg_id] = place
        if len(self._seen) > SEEN_IDS_MAX:
            self._seen.popitem(last=False)
        return True

    def _forget(self, rid: bytes) -> _Client | None:
        client = self._clients.pop(rid, None)
        if client is not None and self._rid_by_key.get(client.hello.id_key) == rid:
            del self._rid_by_key[client.hello.id_key]
            self._gone.add(client.hello.id_key)
        return client

    def roster_due(self) -> float | None:
        """When a coalesced roster change should go out (call `tick` then), if one waits."""
        if not self._roster_dirty:
            return None
        return self._roster_sent + self._roster_interval()

    def next_due(self) -> float:
        """When `tick` has something to do next (a roster, a Beat), at the latest."""
        roster = self.roster_due()
        return self._next_beat if roster is None else min(roster, self._next_beat)

    def _roster_interval(self) -> float:
        size = len(self._clients)
        spaced = min(ROSTER_MAX_INTERVAL_S, ROSTER_S_PER_CLIENT_SQUARED * size * size)
        return max(ROSTER_MIN_INTERVAL_S, spaced)

    def _roster_changed(self, now: float) -> list[Effect]:
        """Publish the new roster, at most once per `_roster_interval()`.

        The roster grows with the room and every change goes to everyone, so a wave of
        100 laptops joining would cost 100 x 100 rosters; coalescing keeps it to a few,
        while a single change (someone left) still goes out at once.
        """
        self.roster_version += 1
        if now < self._roster_sent + self._roster_interval():
            self._roster_dirty = True
            return []
        self._roster_dirty = False
        self._roster_sent = now
        base, self._published = self._published, self.roster_version
        frames = self._delta_frames(base)
        waiting, self._roster_waiting = self._roster_waiting, []
        # Newcomers of the wave: the whole roster (a hall's snapshot), not the delta.
        whole = self._snapshot_frames() if waiting else frames
        return [Publish(frames), *(ToClient(r, whole) for r in waiting if r in self._clients)]

    def _delta_frames(self, base: int) -> list[bytes]:
        """What everyone gets for the new version: the changes since version ``base`` (the
        last published), or in a small room the whole roster as before.

        ``changed`` lists everyone who joined or changed since ``base`` as they are now,
        ``left`` everyone who was connected at some point since and is not now, so a
        client holding any version from ``base`` on (a newcomer's copy at joining) can
        apply it; a client holding another asks for the whole roster (Sync).
        """
        touched, gone = self._touched, self._gone
        self._touched, self._gone = set(), set()
        if len(self._clients) < DELTA_FROM_CLIENTS or (self._view and not self._lazy()):
            # A small room; or a hall that shrank below LAZY_FROM_CLIENTS: its members
            # hold only part of it, so once the whole roster, then deltas again.
            self._view, self._published_head = frozenset(), ()
            return self._roster_frames()
        by_key = {c.hello.id_key: c for c in self._clients.values()}
        count = 0
        if self._lazy():
            # A hall: only the shared entries (newly shared ones in full), and the count.
            view = self._hall_view()
            touched = (touched & view) | (view - self._view)
            self._view, count = view, len(by_key)
        changed = tuple(
            by_key[key].hello.entry(by_key[key].sig, by_key[key].status)
            for key in sorted(touched)
            if key in by_key
        )
        left = tuple(sorted(key for key in gone if key not in by_key))
        delta = wire.RosterDelta(
            epoch=self.epoch,
            base=base,
            version=self.roster_version,
            broker_key=self.key,
            changed=changed,
            left=left,
            count=count,
            head=self._head_if_changed(),
        )
        return wire.encode(delta)

    # ------------------------------------------------------------ a hall (lazy lists)

    def _beat_interval(self) -> float:
        # A hall: every Beat goes to everyone (~190 B on the air each: 3.8 Mbit/s at 1,000
        # every 0.4 s); clients give a connected broker 8 s of Beat silence.
        return HALL_BEAT_INTERVAL_S if self._lazy() else BEAT_INTERVAL_S

    def _lazy(self) -> bool:
        return len(self._clients) >= LAZY_FROM_CLIENTS

    def _spoke(self, author: bytes) -> None:
        self._speakers[author] = None
        self._speakers.move_to_end(author)
        if len(self._speakers) > LAZY_SPEAKERS:
            self._speakers.popitem(last=False)

    def _hall_view(self) -> frozenset[bytes]:
        """The entries every member of a hall holds: the broker, the head of the
        succession, the mentors (at most LAZY_MENTORS_MAX) and the recent speakers."""
        head = list(self._head())
        mentors = [c.hello.id_key for c in self._clients.values() if c.mentor]
        speakers = [k for k in self._speakers if k in self._rid_by_key]
        return frozenset(head + mentors[:LAZY_MENTORS_MAX] + speakers)

    def _lookup(self, rid: bytes, client: _Client, msg: wire.Lookup, now: float) -> list[Effect]:
        """A hall's member asks for whom it does not hold: keys (its friends, requests),
        or handles by prefix (`who an`, Tab completion); at most MAX_LOOKUP entries."""
        if not client.take_token(now, 1 + len(msg.keys)):
            return self._drop("rate_limited")
        wanted = set(msg.keys)
        prefix = handle_key(msg.prefix) if msg.prefix else None
        found = [
            c.hello.entry(c.sig, c.status)
            for c in self._clients.values()
            if c.hello.id_key in wanted
            or (prefix is not None and handle_key(c.hello.handle).startswith(prefix))
        ]
        found.sort(key=lambda e: handle_key(e.handle))
        answer = wire.Found(
            prefix=msg.prefix, peers=tuple(found[: wire.MAX_LOOKUP]), count=len(self._clients)
        )
        return [ToClient(rid, wire.encode(answer))]

    def _head(self) -> tuple[bytes, ...]:
        """The broker and the next LAZY_HEAD of the succession, as `roster` ranks them,
        without building the whole roster (a join storm asks once per newcomer): O(N)."""
        cands = (
            Candidate(c.hello.id_key, c.mentor, c.hello.priority, c.hello.started_at)
            for c in self._clients.values()
            if c.hello.id_key != self.key
        )
        best = heapq.nsmallest(LAZY_HEAD, cands, key=Candidate.rank)
        return (self.key, *(c.key for c in best))

    def _head_if_changed(self) -> tuple[bytes, ...]:
        # In a delta only when it changed since the last publish (9 keys: ~400 B to each).
        head = self._head()
        if head == self._published_head:
            return ()
        self._published_head = head
        return head

    def _snapshot_frames(self, newcomer: bytes | None = None) -> list[bytes]:
        """For a newcomer or a client that found a gap: the whole roster, or in a hall the
        shared entries (and the newcomer's own) as a snapshot delta with the count."""
        if not self._lazy():
            return self._roster_frames()
        keys = self._hall_view() | ({newcomer} if newcomer is not None else set())
        by_key = {c.hello.id_key: c for c in self._clients.values() if c.hello.id_key in keys}
        snapshot = wire.RosterDelta(
            epoch=self.epoch,
            base=-1,
            version=self.roster_version,
            broker_key=self.key,
            changed=tuple(c.hello.entry(c.sig, c.status) for c in by_key.values()),
            count=len(self._clients),
            head=self._head(),
        )
        return wire.encode(snapshot)

    def _roster_frames(self) -> list[bytes]:
        """The roster, encoded once per version: after a failover a whole room of newcomers
        asks for it at once (100 entries: ~1 ms to build and encode)."""
        version, frames = self._roster_encoded
        if version != self.roster_version:
            frames = wire.encode(self.roster())
            self._roster_encoded = (self.roster_version, frames)
        return frames

    def _refuse(self, rid: bytes, code: str, message: str) -> ToClient:
        return ToClient(rid, wire.encode(wire.Refused(code=code, message=message)))

    def _drop(self, reason: str) -> list[Effect]:
        self._count(reason)
        return []

    def _count(self, reason: str) -> None:
        self.counters[reason] = self.counters.get(reason, 0) + 1

    # ------------------------------------------------------------ budgets
    # What one identity may make the others store or show, whatever its client claims to
    # enforce. A message over budget is dropped and counted, unanswered: an honest sender's
    # reliable channel or outbox sends it again later, a flooding one learns nothing.

    def _admission(self, rid: bytes, hello: wire.Hello, now: float) -> ToClient | None:
        """One identity per connection; new identities within the room's size and join rate.

        A client that re-sent Hello under fresh keys could otherwise speak as thousands of
        throwaway identities over one connection (each one a chat request to someone).
        """
        bound = self._clients.get(rid)
        if bound is not None and bound.hello.id_key != hello.id_key:
            self._count("hello_rebind")
            return self._refuse(rid, "identity_bound", "this connection speaks for another key")
        if hello.id_key in self._rid_by_key:
            return None  # known here: a reconnect, a changed Hello
        if len(self._clients) >= MAX_CLIENTS:
            self._count("room_full")
            return ToClient(rid, _ROOM_FULL)
        if not self._budgets.joins.take(b"", now):
            self._count("join_budget")
            return ToClient(rid, _BUSY)
        return None

    def _direct_budget(self, msg: wire.Direct | wire.Grant, now: float) -> bool:
        """Per sender; and per recipient for pairs that never spoke: throwaway identities each
        sending one chat request share the recipient's budget, not one each."""
        budgets = self._budgets
        if not budgets.directs.take(msg.sender, now):
            self._count("direct_budget")
            return False
        pair = (min(msg.sender, msg.recipient), max(msg.sender, msg.recipient))
        if pair in budgets.pairs:
            budgets.pairs.move_to_end(pair)
            return True
        if not budgets.first_contacts.take(msg.recipient, now):
            self._count("first_contact_budget")
            return False
        budgets.pairs[pair] = None
        if len(budgets.pairs) > PAIRS_KEPT:
            budgets.pairs.popitem(last=False)
        return True

    def _hand_budget(self, client: _Client, now: float) -> bool:
        """Raises beyond it are dropped unanswered (those within get a Refused if refused)."""
        if self._budgets.hands.take(client.hello.id_key, now):
            return True
        self._count("hand_budget")
        return False

    def _status_budget(self, client: _Client, now: float) -> bool:
        """A change over budget waits: every Heartbeat repeats the status, so it comes in later."""
        if self._budgets.status.take(client.hello.id_key, now):
            return True
        self._count("status_budget")
        return False

    def _shared_offer_budget(
        self, client: _Client, msg: wire.Public | wire.PublicBatch, now: float
    ) -> bool:
        if not isinstance(msg, wire.Public) or not msg.offer:
            return True
        if self._budgets.shared_offers.take(client.hello.id_key, now):
            return True
        self._count("offer_budget")
        return False

    def _roster_to(self, rid: bytes) -> list[Effect]:
        """The roster for a newcomer: the one just published, else the next one.

        Encoding a roster costs O(size); one for every newcomer (a roster version each) made
        a stream of joins (throwaway identities) cost the broker O(size) per join.
        """
        if not self._roster_dirty:
            # Published now: the whole roster (encoded once per version; a delta went out),
            # or in a hall the snapshot of the shared entries.
            return [ToClient(rid, self._snapshot_frames())]
        self._roster_waiting.append(rid)
        return []

    def _sync_frames(self) -> list[bytes]:
        """For a client that found a gap: in a hall the snapshot, else the roster."""
        return self._snapshot_frames() if self._lazy() else self._published_frames()

    def _published_frames(self) -> list[bytes]:
        """The last roster published (what a Sync asks for), encoded once."""
        version, frames = self._roster_encoded
        return frames if version >= self._published else self._roster_frames()
