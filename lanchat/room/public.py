"""The public room: what we say (signed, packed, sent until acknowledged), what the broker
relays to us (verified, de-duplicated, stored, shown), the gaps we ask it to fill, and the
anti-entropy that makes every node hold every message (lanchat.core.antientropy)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Final

from lanchat import identity as ident
from lanchat.core import wire
from lanchat.core.antientropy import Holdings, order_key
from lanchat.core.reliability import GapTracker, PublicOutbox
from lanchat.core.text import check_text, clean_text
from lanchat.room.context import PUBLIC
from lanchat.store import HistoryRecord

if TYPE_CHECKING:
    from collections.abc import Callable

    from lanchat.core.files import FileOffer
    from lanchat.room.context import RoomContext
    from lanchat.room.friends import Friendships
    from lanchat.room.hosting import Hosting
    from lanchat.room.membership import Membership
    from lanchat.room.peers import Peers

__all__ = ["PublicRoom"]

BACKLOG_REQUEST: Final = 200  # a newcomer asks for this many recent public messages
BACKLOG_KEPT: Final = 2000  # the broker's backlog (lanchat.core.relay.BACKLOG_SIZE)
RESEND_CHUNK: Final = 500  # the relay answers at most this many per Resend
POSITIONS_KEPT: Final = 8  # brokers we remember our place with, for an exact catch-up
ROOM_CONTACT_S: Final = 5.0  # with the room this recently: a failover, not a newcomer
STREAM_GAP_S: Final = 0.005  # texts closer than this to the previous pack are a stream...
PACK_DELAY_S: Final = 0.002  # ...and wait this long to be packed with the next ones
BURIED: Final = "blocked"  # the history's conversation for messages never to be shown
# Anti-entropy. A Have goes to every broker we join, and again this often (a message a
# broker lost between two summaries is found by the next one).
HAVE_PERIOD_S: Final = 30.0
CARRY_MAX: Final = 2000  # envelopes sent for one Have or Want; the next round sends more
ASKED_S: Final = 3.0  # a broker asks one node for a missing range, another after this
# A gap in one author's numbers: relays usually fill it within a Beat; after HOLE_ASK_S we
# ask the broker, and after WITHHELD_S we tell the user it may be withheld.
HOLE_ASK_S: Final = 1.5
WITHHELD_S: Final = 8.0
UNSEEN_S: Final = 5.0  # our acknowledged message not back from the broker's PUB by then


def count_of(pub: wire.Public | wire.PublicBatch) -> int:
    return len(pub.texts) if isinstance(pub, wire.PublicBatch) else 1


class PublicRoom:
    def __init__(
        self,
        ctx: RoomContext,
        membership: Membership,
        hosting: Hosting,
        peers: Peers,
        friends: Friendships,
        on_shared_offer: Callable[[bytes, str, str], None],
    ) -> None:
        self._ctx = ctx
        self._membership = membership
        self._hosting = hosting
        self._peers = peers
        self._friends = friends
        self._on_shared_offer = on_shared_offer  # (author, handle, offer JSON)
        history = ctx.profile.history
        self.outbox = PublicOutbox(next_seq=history.max_seq(PUBLIC) + 1)
        self.gap = GapTracker()
        # What we hold, per author: what our summaries say, and where a relay of ours
        # would count on from.
        self.holdings = Holdings()
        me = ctx.me.key
        for author_hex, seq, count, place in history.holdings():
            self.holdings.add(bytes.fromhex(author_hex), seq, count, place or 0)
        self._unplaced: dict[int, int] = {}  # our envelopes no broker placed yet: seq -> count
        for seq, count, envelope in history.unplaced(ctx.me.key_hex):
            # Said before we stopped, never placed: it goes out again (receivers drop
            # what they already have).
            self._unplaced[seq] = count
            self.outbox.add(seq, wire.envelope_frames(envelope), ctx.clock())
        self._handles: dict[bytes, str] = {me: ctx.cfg.handle}  # author -> handle it signed
        self._holes: dict[tuple[bytes, int, int], list[float]] = {}  # -> [seen, asked]
        self._warned: set[tuple[bytes, int]] = set()
        self._asked = Holdings()  # what we (as broker) asked clients for, recently
        self._asked_at = -1e9
        self._carried_back: set[tuple[bytes, int, int]] = set()
        self._last_have = -1e9
        # Acknowledged, but our relay has not come back: a broker that acks and does not
        # publish. seq -> when acknowledged.
        self._unseen: dict[int, float] = {}
        self._unpacked: list[tuple[int, str, float]] = []  # said, not yet signed and queued
        self._pump_scheduled = False
        self._last_pack = -1e9
        self._numbering: tuple[bytes, int] | None = None  # (broker, epoch) of our count
        # Where we were in the numbering of brokers we left: on return, catch up exactly.
        self._positions: dict[tuple[bytes, int], int] = {}
        self._last_room_contact = -1e9  # last relay or beat while others were online
        # What we asked a broker for when it welcomed us (epoch, first, last): those relays
        # are a catch-up, shown with "replay": true, not as live messages.
        self._catch_up: tuple[int, int, int] = (0, 1, 0)

    # ================================================================ what we say

    def say(self, text: str) -> str:
        ctx = self._ctx
        text = check_text(text)
        seq = self.outbox.allocate()
        sent_t = round(ctx.wall(), 3)
        msg_id = f"{ctx.me.key_hex[:16]}:{seq}"
        # One transaction for the counter and the text (the TUI calls us outside the
        # command loop's batch; inside it, this adds nothing).
        with ctx.profile.history.batch():
            ctx.profile.history.set_seq(PUBLIC, seq)
            ctx.profile.history.append(
                HistoryRecord(
                    msg_id,
                    PUBLIC,
                    ctx.cfg.handle,
                    ctx.me.key_hex,
                    text,
                    sent_t,
                    sent_t,
                    True,
                    None,
                    seq,
                )
            )
        # Packed and sent once the current burst of commands is done (see _pack).
        self._unpacked.append((seq, text, sent_t))
        if not self._pump_scheduled:
            self._pump_scheduled = True
            loop = asyncio.get_running_loop()
            if ctx.clock() - self._last_pack < STREAM_GAP_S:
                # A stream of texts (a bot, a paste): wait a moment for the next ones, so
                # they go out packed under one signature. A lone text goes at once.
                loop.call_later(PACK_DELAY_S, self.pump)
            else:
                loop.call_soon(self.pump)
        return msg_id

    def say_offer(self, offer: FileOffer) -> None:
        """A file shared with the room: a public message that carries the offer."""
        ctx = self._ctx
        seq = self.outbox.allocate()
        ctx.profile.history.set_seq(PUBLIC, seq)
        msg = wire.Public(
            author=ctx.me.key,
            handle=ctx.cfg.handle,
            room=ctx.cfg.room,
            seq=seq,
            text=f"shares the file {offer.name} ({offer.size:,} bytes)",
            sent_t=round(ctx.wall(), 3),
            offer=offer.to_json(),
        )
        sig = ctx.me.sign(wire.signed_bytes(msg))
        self._keep_own(msg, sig)
        self.outbox.add(seq, wire.encode(msg, sig), ctx.clock())
        self.pump()

    def pump(self) -> None:
        """Send queued public messages as far as the outbox window allows."""
        self._pump_scheduled = False
        if self._unpacked:
            self._pack()
        link = self._membership.link
        if link is None or link.welcome is None:
            return
        for frames in self.outbox.sendable(self._ctx.clock()):
            if not link.sockets.send_nowait(frames):
                break  # the socket queue is full: the stall timer puts them back in line

    def _pack(self) -> None:
        """Turn queued texts into signed messages: one per text, or a batch for a burst."""
        ctx = self._ctx
        now = ctx.clock()
        self._last_pack = now
        pending, self._unpacked = self._unpacked, []
        while pending:
            chunk = [pending.pop(0)]
            chars = len(chunk[0][1])
            while (
                pending
                and len(chunk) < wire.MAX_BATCH
                and pending[0][0] == chunk[-1][0] + 1
                and chars + len(pending[0][1]) <= wire.MAX_BATCH_CHARS
            ):
                chars += len(pending[0][1])
                chunk.append(pending.pop(0))
            seq, text, sent_t = chunk[0]
            msg: wire.Public | wire.PublicBatch
            if len(chunk) == 1:
                msg = wire.Public(
                    author=ctx.me.key,
                    handle=ctx.cfg.handle,
                    room=ctx.cfg.room,
                    seq=seq,
                    text=text,
                    sent_t=sent_t,
                )
            else:
                msg = wire.PublicBatch(
                    author=ctx.me.key,
                    handle=ctx.cfg.handle,
                    room=ctx.cfg.room,
                    seq=seq,
                    texts=tuple(t for _, t, _ in chunk),
                    sent_t=sent_t,
                )
            sig = ctx.me.sign(wire.signed_bytes(msg))
            self._keep_own(msg, sig)
            self.outbox.add(seq, wire.encode(msg, sig), now)

    def _keep_own(self, msg: wire.Public | wire.PublicBatch, sig: bytes) -> None:
        """Our signed envelope, stored: handed to whoever lacks it, for as long as we keep
        our history, and sent again at our next start if no broker placed it."""
        count = len(msg.texts) if isinstance(msg, wire.PublicBatch) else 1
        envelope = wire.envelope_of(wire.signed_bytes(msg), sig)
        self._ctx.profile.history.envelope_add(self._ctx.me.key_hex, msg.seq, count, None, envelope)
        self.holdings.add(msg.author, msg.seq, count)
        self._unplaced[msg.seq] = count
        self._hosting.recent.append((msg, sig, 0))

    def on_ack(self, msg: wire.Ack, now: float) -> None:
        if self.outbox.ack(msg.seq, now):
            if msg.seq in self._unplaced:
                self._unseen.setdefault(msg.seq, now)
            prefix = self._ctx.me.key_hex[:16]
            for seq in range(msg.seq, msg.seq + max(1, min(msg.count, wire.MAX_BATCH))):
                self._ctx.emit("sent", id=f"{prefix}:{seq}")

    def tick(self, now: float) -> None:
        self.outbox.overdue(now)
        self.pump()
        self.outbox.expire(now)
        self._check_holes(now)
        self._check_unseen(now)
        if now - self._last_have >= HAVE_PERIOD_S and self._membership.welcomed():
            self._send_have(now)

    # ================================================================ what the room says

    def on_relay(self, msg: wire.Relay, now: float) -> None:
        ctx = self._ctx
        live = msg.epoch != 0  # epoch 0: carried by anti-entropy, not in the numbering
        if live:
            if self._peers.online:
                self._last_room_contact = now
            _is_new, missing = self.gap.observe(msg.epoch, msg.bseq)
            if missing:
                self._membership.send(
                    wire.encode(wire.Resend(epoch=msg.epoch, first=missing[0], last=missing[1]))
                )
        pub = msg.inner
        if pub.author == ctx.me.key:
            self._own_placed(pub, msg.place, msg.inner_sig)
            return  # our own, already in our history
        if pub.room != ctx.cfg.room:
            ctx.count("wrong_room")
            return
        # Our own relay verified every signature before relaying it: no need to do it twice.
        from_own_relay = (
            live and self._hosting.relay is not None and self._membership.link_is_self()
        )
        signed = wire.signed_bytes(pub)
        if not from_own_relay and not ident.verify(pub.author, signed, msg.inner_sig):
            ctx.count("bad_signature")
            return
        if self._friends.blocked(pub.author) or self._friends.was_blocked(pub.author, pub.sent_t):
            ctx.count("blocked")
            self._bury(pub)
            return
        count = len(pub.texts) if isinstance(pub, wire.PublicBatch) else 1
        author_hex = pub.author.hex()
        history = ctx.profile.history
        if not self.holdings.add(pub.author, pub.seq, count, msg.place):
            self._known_again(pub, msg, count)
            return
        self._handles[pub.author] = pub.handle
        history.envelope_add(
            author_hex, pub.seq, count, msg.place or None, wire.envelope_of(signed, msg.inner_sig)
        )
        self._hosting.recent.append((pub, msg.inner_sig, msg.place))
        handle = self._peers.display_handle(pub.author, pub.handle)
        # Under a handle pinned to another key: marked, until the user trusts the key.
        marks = self._peers.marks(pub.author, handle)
        received = ctx.wall()
        epoch, first, last = self._catch_up
        replay = msg.epoch == epoch and first <= msg.bseq <= last
        shown_t = 0.0  # taken once, at the first text shown: a batch's texts show together
        append, sent_t, emit = history.append, pub.sent_t, ctx.emit_raw
        place = msg.place or None
        seq = pub.seq
        for msg_id, text in pub.texts_by_id():
            record = HistoryRecord(
                msg_id, PUBLIC, handle, author_hex, text, sent_t, received, False, place, seq
            )
            seq += 1
            if not append(record):
                continue  # seen before: at-least-once below, exactly-once here
            if isinstance(pub, wire.Public) and pub.offer:
                self._on_shared_offer(pub.author, handle, pub.offer)
            if not shown_t:
                shown_t = round(ctx.wall(), 6)
            # What ctx.emit("public", ...) writes, without its per-event clock and merge.
            event = {
                "ev": "public",
                "t": shown_t,
                "id": msg_id,
                "from": handle,
                "text": clean_text(text),
                "sent_t": sent_t,
                "order": list(order_key(msg.place, author_hex, record.seq)),
                **marks,
            }
            if replay:
                event["replay"] = True
            emit(event)

    def _bury(self, pub: wire.Public | wire.PublicBatch) -> None:
        """Remember a blocked author's message without its text, so that it is never
        shown, not even after an unblock, when the broker's catch-up brings it again."""
        append, author_hex = self._ctx.profile.history.append, pub.author.hex()
        for msg_id, _text in pub.texts_by_id():
            append(HistoryRecord(msg_id, BURIED, "", author_hex, "", pub.sent_t, 0.0, False))

    def _own_placed(self, pub: wire.Public | wire.PublicBatch, place: int, sig: bytes) -> None:
        """Our message came back from a broker with its place: our line moves there."""
        count = self._unplaced.get(pub.seq)
        if count is None:
            # Placed before: if a broker gave it another place, the smaller one wins.
            self._known_again(pub, wire.Relay(inner=pub, inner_sig=sig, place=place), count_of(pub))
            return
        if place < 1:
            return
        del self._unplaced[pub.seq]
        self.holdings.add(pub.author, pub.seq, count, place)
        self._ctx.profile.history.set_place(self._ctx.me.key_hex, pub.seq, count, place)
        for msg_id, _text in pub.texts_by_id():
            seq = int(msg_id.rsplit(":", 1)[1])
            self._ctx.emit(
                "placed", id=msg_id, order=list(order_key(place, self._ctx.me.key_hex, seq))
            )

    def _known_again(
        self, pub: wire.Public | wire.PublicBatch, msg: wire.Relay, count: int
    ) -> None:
        """A message we hold, relayed again: if the two places differ, the smaller wins
        everywhere (ours moves, or we carry ours back to the broker, once)."""
        if msg.place < 1:
            return
        author_hex = pub.author.hex()
        history = self._ctx.profile.history
        found = history.envelopes(author_hex, pub.seq, pub.seq)
        known = next((place for seq, _c, place, _e in found if seq == pub.seq), None)
        if known is None or known == msg.place:
            return
        if msg.place < known:
            history.set_place(author_hex, pub.seq, count, msg.place)
            for msg_id, _text in pub.texts_by_id():
                seq = int(msg_id.rsplit(":", 1)[1])
                order = list(order_key(msg.place, author_hex, seq))
                self._ctx.emit("placed", id=msg_id, order=order)
        elif (pub.author, pub.seq, msg.place) not in self._carried_back:
            self._carried_back.add((pub.author, pub.seq, msg.place))
            envelope = wire.envelope_of(wire.signed_bytes(pub), msg.inner_sig)
            self._membership.send(self._counted(wire.carried(known, envelope)))

    # ================================================================ anti-entropy

    def top_place(self) -> int:
        return self.holdings.top

    def _send_have(self, now: float) -> None:
        """Our summary to the broker: it sends what we lack and asks for what it lacks."""
        self._last_have = now
        if self._membership.link_is_self():
            return  # the broker's own node: its relay is fed from its history already
        authors = tuple(
            wire.SeqRanges(author=a, ranges=r[: wire.MAX_RANGES * 2])
            for a, r in self.holdings.summary()[: wire.MAX_AUTHORS]
        )
        self._membership.send(
            self._counted(wire.encode(wire.Have(top=self.holdings.top, authors=authors)))
        )

    def on_client_reconcile(self, rid: bytes, msg: wire.Have | wire.Want) -> None:
        """As broker: a client's summary (send what it lacks, ask what we lack) or request."""
        summary = [(e.author, e.ranges) for e in msg.authors]
        if isinstance(msg, wire.Want):
            self._carry(summary, lambda frames: self._hosting.send_to_client(rid, frames))
            # What we lack ourselves we ask of its author, once a while: it sends it to us
            # and we relay it to the room.
            self._ask(self.holdings.lacking(summary), self._hosting.rid_of, exclude=rid)
            return
        self._carry(
            self.holdings.extra(summary), lambda frames: self._hosting.send_to_client(rid, frames)
        )
        self._ask(self.holdings.lacking(summary), lambda _author: rid)

    def _ask(
        self,
        lacking: list[tuple[bytes, tuple[int, ...]]],
        whom: Callable[[bytes], bytes | None],
        exclude: bytes | None = None,
    ) -> None:
        """As broker: ask a client (``whom(author)``) for what we lack; one node per range,
        another one only if the first did not answer within ASKED_S."""
        now = self._ctx.clock()
        if now - self._asked_at > ASKED_S:
            self._asked, self._asked_at = Holdings(), now
        by_rid: dict[bytes, list[tuple[bytes, tuple[int, ...]]]] = {}
        for author, ranges in self._asked.lacking(lacking):
            target = whom(author)
            if target is None or target == exclude:
                continue
            by_rid.setdefault(target, []).append((author, ranges))
            for i in range(0, len(ranges), 2):
                self._asked.add(author, ranges[i], ranges[i + 1] - ranges[i] + 1)
        for target, ask in by_rid.items():
            want = wire.Want(authors=tuple(wire.SeqRanges(author=a, ranges=r) for a, r in ask))
            self._hosting.send_to_client(target, self._counted(wire.encode(want)))
            self._ctx.count("reconcile_asked")

    def on_want(self, msg: wire.Want) -> None:
        """The broker lacks these: we carry them to it (it relays them to the room). Ours
        that no broker placed go again as they were first sent (a broker gives them a
        place)."""
        self._carry([(e.author, e.ranges) for e in msg.authors], self._membership.send)
        history = self._ctx.profile.history
        for entry in msg.authors:
            if entry.author != self._ctx.me.key:
                continue
            for seq, _count, envelope in history.unplaced(self._ctx.me.key_hex):
                r = entry.ranges
                if any(r[i] <= seq <= r[i + 1] for i in range(0, len(r) - 1, 2)):
                    self._membership.send(self._counted(wire.envelope_frames(envelope)))

    def _carry(
        self, wanted: list[tuple[bytes, tuple[int, ...]]], send: Callable[[list[bytes]], object]
    ) -> None:
        history = self._ctx.profile.history
        sent = 0
        for author, ranges in wanted:
            for i in range(0, len(ranges) - 1, 2):
                for _seq, _count, place, envelope in history.envelopes(
                    author.hex(), ranges[i], ranges[i + 1]
                ):
                    if sent >= CARRY_MAX:
                        return
                    send(self._counted(wire.carried(place, envelope)))
                    sent += 1
        if sent:
            self._ctx.counters["carried_out"] = self._ctx.counters.get("carried_out", 0) + sent

    def _check_unseen(self, now: float) -> None:
        """Tell the author when a broker acknowledged a message of ours and nobody saw it
        (its relay never came back): the broker may be dropping it."""
        for seq, acked_at in list(self._unseen.items()):
            if seq not in self._unplaced:
                del self._unseen[seq]  # it came back: published
            elif now - acked_at >= UNSEEN_S and self._peers.online:
                del self._unseen[seq]
                self._ctx.emit(
                    "warning",
                    code="unseen",
                    handle=self._ctx.cfg.handle,
                    id=f"{self._ctx.me.key_hex[:16]}:{seq}",
                    message=f"the broker acknowledged your message but nobody has seen it "
                    f"after {UNSEEN_S:.0f} s: it may not have reached the room",
                )

    def _counted(self, frames: list[bytes]) -> list[bytes]:
        """Anti-entropy traffic we send, for the ``status`` counters (reconcile_bytes)."""
        counters = self._ctx.counters
        counters["reconcile_bytes"] = counters.get("reconcile_bytes", 0) + sum(map(len, frames))
        return frames

    def _check_holes(self, now: float) -> None:
        """Gaps in an author's numbers: ask the broker, and say so if they stay."""
        holes = {h for h in self.holdings.holes() if h[0] != self._ctx.me.key}
        for gone in set(self._holes) - holes:
            del self._holes[gone]
        ask: list[wire.SeqRanges] = []
        for hole in holes:
            seen_asked = self._holes.setdefault(hole, [now, -1e9])
            age = now - seen_asked[0]
            if age >= HOLE_ASK_S and now - seen_asked[1] >= HOLE_ASK_S * 2:
                seen_asked[1] = now
                ask.append(wire.SeqRanges(author=hole[0], ranges=(hole[1], hole[2])))
            if age >= WITHHELD_S and (hole[0], hole[1]) not in self._warned:
                self._warned.add((hole[0], hole[1]))
                handle = self._peers.display_handle(hole[0], self._handles.get(hole[0], "?"))
                missing = hole[2] - hole[1] + 1
                self._ctx.emit(
                    "warning",
                    code="withheld",
                    handle=handle,
                    message=f"{missing} message(s) of {handle} never reached us although "
                    "later ones did: the broker or the network may be withholding them",
                )
        if ask and self._membership.welcomed():
            want = wire.Want(authors=tuple(ask[: wire.MAX_AUTHORS]))
            self._membership.send(self._counted(wire.encode(want)))

    def on_beat(self, msg: wire.Beat, now: float) -> None:
        if self._peers.online:
            self._last_room_contact = now
        gap = self.gap.tail_gap(msg.epoch, msg.bseq)
        if gap:
            self._membership.send(
                wire.encode(wire.Resend(epoch=msg.epoch, first=gap[0], last=gap[1]))
            )

    def on_welcome(self, msg: wire.Welcome, now: float) -> None:
        """A broker welcomed us: where we are in its numbering, and what we still owe it."""
        numbering = (msg.broker_key, msg.epoch)
        if numbering != self._numbering:
            if self._numbering is not None and self.gap.epoch == self._numbering[1]:
                self._positions[self._numbering] = self.gap.next_bseq
                while len(self._positions) > POSITIONS_KEPT:
                    del self._positions[next(iter(self._positions))]
            self._numbering = numbering
            back_at = self._positions.pop(numbering, None)
            if back_at is None:
                self._welcome_backlog(msg, now)
            else:
                self.gap.reset(msg.epoch, back_at - 1)
        if self.gap.epoch == msg.epoch and self.gap.next_bseq <= msg.bseq:
            # A broker we were with before (we were away a moment: asleep, stopped, cut
            # off and our own broker meanwhile): ask for exactly what we missed, as far as
            # it keeps.
            self._request_relays(msg.epoch, self.gap.next_bseq, msg.bseq)
            self.gap.next_bseq = msg.bseq + 1
        for frames in self.outbox.for_new_broker(now, lambda seq: seq not in self._unplaced):
            self._membership.send(frames)
        self._send_have(now)
        self.pump()

    def _welcome_backlog(self, msg: wire.Welcome, now: float) -> None:
        self.gap.reset(msg.epoch, msg.bseq)
        # Recent public messages, for a newcomer or a node back from being away. Right after
        # a failover we already have them (the new broker's backlog is what its node
        # received, like ours), and a whole room asking at once would flood the new broker
        # just when it is busiest.
        with_the_room_just_now = now - self._last_room_contact < ROOM_CONTACT_S
        first = max(1, msg.bseq - BACKLOG_REQUEST + 1)
        if with_the_room_just_now:
            first = max(first, msg.first_live)  # only what it relayed before we got to it
        self._request_relays(msg.epoch, first, msg.bseq)

    def _request_relays(self, epoch: int, first: int, last: int) -> None:
        """Ask the broker again for relays first..last, in pieces it will answer."""
        first = max(first, last - BACKLOG_KEPT + 1, 1)
        self._catch_up = (epoch, first, last)
        while first <= last:
            upto = min(last, first + RESEND_CHUNK - 1)
            self._membership.send(wire.encode(wire.Resend(epoch=epoch, first=first, last=upto)))
            first = upto + 1
