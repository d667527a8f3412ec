"""The public room: what we say (signed, packed, sent until acknowledged), what the broker
relays to us (verified, de-duplicated, stored, shown), and the gaps we ask it to fill."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Final

from lanchat import identity as ident
from lanchat.core import wire
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
        self.outbox = PublicOutbox(next_seq=ctx.profile.history.max_seq(PUBLIC) + 1)
        self.gap = GapTracker()
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
            ctx.store_outgoing(msg_id, PUBLIC, text, sent_t)
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
        self.outbox.add(seq, wire.encode(msg, sig), ctx.clock())
        self._hosting.recent.append((msg, sig))
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
            self.outbox.add(seq, wire.encode(msg, sig), now)
            self._hosting.recent.append((msg, sig))

    def on_ack(self, msg: wire.Ack, now: float) -> None:
        if self.outbox.ack(msg.seq, now):
            prefix = self._ctx.me.key_hex[:16]
            for seq in range(msg.seq, msg.seq + max(1, min(msg.count, wire.MAX_BATCH))):
                self._ctx.emit("sent", id=f"{prefix}:{seq}")

    def tick(self, now: float) -> None:
        self.outbox.overdue(now)
        self.pump()
        self.outbox.expire(now)

    # ================================================================ what the room says

    def on_relay(self, msg: wire.Relay, now: float) -> None:
        ctx = self._ctx
        if self._peers.online:
            self._last_room_contact = now
        _is_new, missing = self.gap.observe(msg.epoch, msg.bseq)
        if missing:
            self._membership.send(
                wire.encode(wire.Resend(epoch=msg.epoch, first=missing[0], last=missing[1]))
            )
        pub = msg.inner
        if pub.author == ctx.me.key:
            return  # our own, already in our history
        if pub.room != ctx.cfg.room:
            ctx.count("wrong_room")
            return
        # Our own relay verified every signature before relaying it: no need to do it twice.
        from_own_relay = self._hosting.relay is not None and self._membership.link_is_self()
        if not from_own_relay and not ident.verify(
            pub.author, wire.signed_bytes(pub), msg.inner_sig
        ):
            ctx.count("bad_signature")
            return
        if self._friends.blocked(pub.author) or self._friends.was_blocked(pub.author, pub.sent_t):
            ctx.count("blocked")
            self._bury(pub)
            return
        self._hosting.recent.append((pub, msg.inner_sig))
        handle = self._peers.display_handle(pub.author, pub.handle)
        # Under a handle pinned to another key: marked, until the user trusts the key.
        marks = self._peers.marks(pub.author, handle)
        received = ctx.wall()
        epoch, first, last = self._catch_up
        replay = msg.epoch == epoch and first <= msg.bseq <= last
        shown_t = 0.0  # taken once, at the first text shown: a batch's texts show together
        author_hex = pub.author.hex()
        append, sent_t, emit = ctx.profile.history.append, pub.sent_t, ctx.emit_raw
        for msg_id, text in pub.texts_by_id():
            record = HistoryRecord(
                msg_id, PUBLIC, handle, author_hex, text, sent_t, received, False
            )
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
        for frames in self.outbox.for_new_broker(now):
            self._membership.send(frames)
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
