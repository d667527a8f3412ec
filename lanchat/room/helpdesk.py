"""The help queue: a student's raised hands, a mentor's claims, the room's queue as the
broker keeps it, and each hand's private session (sealed to a per-hand key, one reliable
channel each way)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Final

from lanchat import identity as ident
from lanchat.core import authority as auth
from lanchat.core import wire
from lanchat.core.channel import ReliableChannel
from lanchat.core.text import check_text, clean_text, safe_label
from lanchat.room.context import CommandError

if TYPE_CHECKING:
    from lanchat.room.context import RoomContext
    from lanchat.room.membership import Membership
    from lanchat.room.peers import Peers
    from lanchat.room.private import PrivateChat

__all__ = ["Helpdesk"]

MAX_OPEN_HANDS: Final = 3
# After joining a new broker (a failover), how long a claim missing from its queue is taken
# for one whose student has not raised its hand with that broker yet.
CLAIM_SETTLE_S: Final = 5.0
TOPIC_MAX_CHARS: Final = 200


@dataclass(slots=True, eq=False)
class _Session:
    """One side of a hand's conversation: sealed with ``box``, on one reliable channel."""

    box: ident.SessionBox | None = None
    channel: ReliableChannel[wire.Private] = field(default_factory=ReliableChannel)


@dataclass(slots=True, eq=False)
class _MyHand:
    hand_id: str
    topic: str
    anon: bool
    eph: ident.EphemeralKey
    raised_at: float
    state: str = "raised"
    mentor: str = ""
    mentor_key: bytes = b""
    claim_sig: bytes = b""
    held: bool = False  # anonymous, not sent: our broker is no verified mentor
    position: int = 0
    session: _Session = field(default_factory=_Session)


@dataclass(slots=True, eq=False)
class _Claimed:
    entry: wire.QueueEntry
    session: _Session = field(default_factory=_Session)


class Helpdesk:
    def __init__(
        self, ctx: RoomContext, membership: Membership, private: PrivateChat, peers: Peers
    ) -> None:
        self._ctx = ctx
        self._membership = membership
        self._peers = peers
        self._private = private  # shows a session's texts like private ones
        self.my_hands: dict[str, _MyHand] = {}  # as a student
        self.my_claims: dict[str, _Claimed] = {}  # as a mentor
        # Hands (ours or claimed) we asked to resolve; the broker's answer removes them
        # from my_hands / my_claims. Asked again of each new broker until then: the ask
        # may have gone nowhere (no broker at that moment) or to a broker that died.
        self._done_asked: set[str] = set()
        self.queue: wire.Queue | None = None
        # When a new broker welcomed us: its first queues come before the students have
        # raised their hands with it again, so a claim missing from them is not over.
        self._rejoined_at = -1e9

    # ================================================================ commands

    def raise_hand(self, topic: str, anon: bool) -> str:
        topic = check_text(topic) if topic.strip() else ""
        if len(topic) > TOPIC_MAX_CHARS:
            raise CommandError("bad_command", f"a topic is at most {TOPIC_MAX_CHARS} characters")
        open_hands = [h for h in self.my_hands.values() if h.state != "done"]
        if len(open_hands) >= MAX_OPEN_HANDS:
            raise CommandError(
                "queue", f"you already have {MAX_OPEN_HANDS} hands up; /done one first"
            )
        hand = _MyHand(
            hand_id=secrets.token_hex(8),
            topic=topic,
            anon=anon,
            eph=ident.EphemeralKey(),
            raised_at=round(self._ctx.wall(), 3),
        )
        self.my_hands[hand.hand_id] = hand
        self._send_hand(hand)
        self._ctx.emit("hand", id=hand.hand_id, state="raised", anon=anon, topic=topic)
        return hand.hand_id

    def _broker_is_mentor(self) -> bool:
        link = self._membership.link
        return link is not None and self._peers.is_mentor(link.target.key)

    def _send_hand(self, hand: _MyHand) -> None:
        if hand.anon and not self._broker_is_mentor():
            # The broker knows which connection raised a hand: an anonymous one goes only
            # to a broker that is a verified mentor (resume_held sends it when there is one).
            self._ctx.count("anon_hand_held")
            hand.held = True
            return
        hand.held = False
        msg = wire.Hand(
            hand_id=hand.hand_id,
            topic=hand.topic,
            anon=hand.anon,
            eph_key=hand.eph.public,
            raised_at=hand.raised_at,
            claimed_by=hand.mentor_key,
            claim_sig=hand.claim_sig,
            sig=b""
            if hand.anon
            else self._ctx.me.sign(
                auth.hand_payload(self._ctx.cfg.room, hand.hand_id, hand.eph.public)
            ),
        )
        self._membership.send(wire.encode(msg))

    def resume_held(self) -> None:
        """A roster came: if our broker is (now known to be) a verified mentor, anonymous
        hands we held back go (their session texts follow with the next resend)."""
        if not self._broker_is_mentor():
            return
        for hand in self.my_hands.values():
            if hand.held:
                self._send_hand(hand)

    def _claim_msg(self, hand_id: str, eph_key: bytes) -> wire.Claim:
        ctx = self._ctx
        sig = ctx.me.sign(auth.claim_payload(ctx.cfg.room, hand_id, eph_key))
        return wire.Claim(hand_id=hand_id, sig=sig)

    def _check_mentor(self) -> None:
        if not self._ctx.cfg.mentor:
            raise CommandError("queue", "only mentors (lanchat --mentor) can claim hands")
        if not self._peers.is_mentor(self._ctx.me.key):
            raise CommandError(
                "queue",
                "this room does not know you as a mentor yet (no certificate from its "
                "mentor authority): ask a mentor to add you (/mentor add "
                f"{self._ctx.cfg.handle})",
            )

    def claim(self, hand_id: object, n: object) -> None:
        self._check_mentor()
        entries = self._visible_entries()
        if isinstance(n, int) and not isinstance(n, bool):
            if not 1 <= n <= len(entries):
                raise CommandError("queue", f"there is no hand number {n} in the queue")
            hand_id = entries[n - 1].hand_id
        if not isinstance(hand_id, str):
            raise CommandError("bad_command", "'claim' needs 'id' (a hand id) or 'n' (its number)")
        entry = next((e for e in entries if e.hand_id == hand_id), None)
        if entry is None:
            raise CommandError("queue", "no such hand in the queue (claimed by another mentor?)")
        self._membership.send(wire.encode(self._claim_msg(hand_id, entry.eph_key)))

    def done(self, hand_id: str | None) -> None:
        mine = [h for h in self.my_hands if self.my_hands[h].state != "done"]
        candidates = mine + list(self.my_claims)
        if hand_id is None:
            if len(candidates) != 1:
                raise CommandError("bad_command", "which hand? give its 'id'")
            hand_id = candidates[0]
        if hand_id not in candidates:
            raise CommandError("queue", "that is not one of your hands or claims")
        self._done_asked.add(hand_id)
        self._membership.send(wire.encode(wire.HandDone(hand_id=hand_id)))

    def on_new_broker(self) -> None:
        """A broker welcomed us: it learns our hands, claims and pending resolutions."""
        self._rejoined_at = self._ctx.clock()
        send = self._membership.send
        for hand in self.my_hands.values():
            self._send_hand(hand)
        for hand_id, claim in self.my_claims.items():
            send(wire.encode(self._claim_msg(hand_id, claim.entry.eph_key)))
        self._done_asked &= self.my_hands.keys() | self.my_claims.keys()
        for hand_id in self._done_asked:
            send(wire.encode(wire.HandDone(hand_id=hand_id)))

    # ================================================================ the queue

    def _visible_entries(self) -> list[wire.QueueEntry]:
        # A hand another mentor claimed is theirs: it leaves everyone else's queue.
        me = self._ctx.me.key
        return [
            e
            for e in (self.queue.entries if self.queue else ())
            if not e.claimed_key or e.claimed_key == me
        ]

    def on_queue(self, msg: wire.Queue) -> None:
        if self.queue is not None and msg.version == self.queue.version and msg == self.queue:
            return
        ctx = self._ctx
        self.queue = msg
        for entry in msg.entries:
            if entry.claimed_key == ctx.me.key and entry.hand_id not in self.my_claims:
                if not self._hand_holds(entry):
                    # A per-hand key the student did not sign: a broker's word only. We
                    # seal nothing to it (our claim stays with the broker, unused).
                    ctx.count("hand_unverified")
                    continue
                self.my_claims[entry.hand_id] = _Claimed(entry=entry)
                ctx.emit(
                    "claimed",
                    id=entry.hand_id,
                    who=safe_label(entry.label),
                    anon=entry.anon,
                    topic=clean_text(entry.topic),
                )
        live = {e.hand_id: e for e in msg.entries}
        settling = self.settling()
        for hand_id, claim in list(self.my_claims.items()):
            now_queued = live.get(hand_id)
            if now_queued is None:
                if settling:
                    continue  # its student has not raised it with this broker yet
                self._end_claim(hand_id)
            elif not now_queued.claimed_key:
                # Raised again with a broker that did not have our claim yet: claim it
                # again (the same session goes on; its numbering is kept).
                self._membership.send(wire.encode(self._claim_msg(hand_id, claim.entry.eph_key)))
        self.emit_queue()

    def settling(self) -> bool:
        """Just joined a broker: its queue is still being rebuilt from the hands re-sent."""
        return self._ctx.clock() - self._rejoined_at < CLAIM_SETTLE_S

    def _end_claim(self, hand_id: str) -> None:
        claim = self.my_claims.pop(hand_id)
        self._ctx.emit("hand", id=hand_id, state="done", who=safe_label(claim.entry.label))

    def show_queue(self) -> None:
        """The ``queue`` command: the queue, to a mentor the room knows as one."""
        if self._ctx.cfg.mentor:
            self._check_mentor()
        self.emit_queue()

    def emit_queue(self) -> None:
        now = self._ctx.wall()
        self._ctx.emit(
            "queue",
            entries=[
                {
                    "n": i,
                    "id": e.hand_id,
                    "who": safe_label(e.label),
                    "topic": clean_text(e.topic),
                    "anon": e.anon,
                    "waiting_s": round(max(0.0, now - e.raised_at), 1),
                    "claimed_by": safe_label(e.claimed_by),
                }
                for i, e in enumerate(self._visible_entries(), start=1)
            ],
        )

    def on_hand_status(self, msg: wire.HandStatus) -> None:
        hand = self.my_hands.get(msg.hand_id)
        if hand is None:
            if msg.state == "done" and msg.hand_id in self.my_claims:
                self._end_claim(msg.hand_id)  # resolved: the broker says so to its mentor
            return
        if msg.state == "claimed" and not self._claim_holds(hand, msg):
            # A claim we cannot check (no verified mentor signed it for this hand's key):
            # a broker's word only. Nothing is sealed to that key; the hand stays waiting.
            self._ctx.count("claim_unverified")
            return
        changed = (msg.state, msg.position, msg.mentor) != (hand.state, hand.position, hand.mentor)
        hand.state, hand.position = msg.state, msg.position
        if msg.state == "claimed" and hand.mentor_key != msg.mentor_key:
            hand.mentor, hand.mentor_key = msg.mentor, msg.mentor_key
            hand.claim_sig = msg.claim_sig
            hand.session = _Session(box=hand.eph.session_with_identity(msg.mentor_key))
        if changed:
            self._ctx.emit(
                "hand",
                id=hand.hand_id,
                state=msg.state,
                position=msg.position,
                mentor=safe_label(hand.mentor),
            )
        if msg.state == "done":
            del self.my_hands[msg.hand_id]

    def _hand_holds(self, entry: wire.QueueEntry) -> bool:
        """The hand's per-hand key is the student's: signed by it, or, for an anonymous
        hand (which names nobody), given by a broker that is a verified mentor."""
        if entry.anon:
            return self._broker_is_mentor()
        data = auth.hand_payload(self._ctx.cfg.room, entry.hand_id, entry.eph_key)
        return bool(entry.student_key) and ident.verify(entry.student_key, data, entry.hand_sig)

    def _claim_holds(self, hand: _MyHand, msg: wire.HandStatus) -> bool:
        """Claimed by a verified mentor, who signed the claim for this hand's own key."""
        data = auth.claim_payload(self._ctx.cfg.room, hand.hand_id, hand.eph.public)
        return (
            bool(msg.mentor_key)
            and self._peers.is_mentor(msg.mentor_key)
            and ident.verify(msg.mentor_key, data, msg.claim_sig)
        )

    # ================================================================ sessions

    def session_for(self, label: str) -> tuple[str, _Session, bool] | None:
        """(hand id, session, to_mentor) if ``label`` names our help-session partner."""
        wanted = label.casefold()
        for hand in self.my_hands.values():
            if hand.state == "claimed" and hand.mentor.casefold() == wanted:
                return hand.hand_id, hand.session, True
        for hand_id, claim in self.my_claims.items():
            if claim.entry.label.casefold() == wanted:
                return hand_id, self._claim_session(claim), False
        return None

    def _claim_session(self, claim: _Claimed) -> _Session:
        if claim.session.box is None:
            claim.session.box = ident.session_with_ephemeral(self._ctx.me, claim.entry.eph_key)
        return claim.session

    def send(self, target: tuple[str, _Session, bool], text: str) -> str:
        """A text in a help session (``target`` from session_for); returns its id."""
        hand_id, session, to_mentor = target
        ctx = self._ctx
        text = check_text(text)
        label = ctx.cfg.handle
        if to_mentor and self.my_hands[hand_id].anon:
            label = ""
        sent_t = round(ctx.wall(), 3)
        cseq = session.channel.outbound.next_cseq
        session.channel.outbound.add(
            wire.Private(item="text", cseq=cseq, base=0, handle=label, text=text, sent_t=sent_t)
        )
        self._flush(hand_id, session, to_mentor)
        msg_id = f"hand:{hand_id}:{'s' if to_mentor else 'm'}:{cseq}"
        ctx.store_outgoing(msg_id, f"hand:{hand_id}", text, sent_t)
        return msg_id

    def _flush(self, hand_id: str, session: _Session, to_mentor: bool) -> None:
        box = session.box
        if box is None:
            return
        hand = self.my_hands.get(hand_id) if to_mentor else None
        if hand is not None and hand.anon and not self._broker_is_mentor():
            return  # held, as the hand itself (see _send_hand)
        base, items = session.channel.outbound.pending()
        for _cseq, item in items:
            payload = wire.encode_inner(replace(item, base=base))
            msg = wire.HelpMsg(hand_id=hand_id, to_mentor=to_mentor, box=box.seal(payload))
            self._membership.send(wire.encode(msg))

    def flush_all(self) -> None:
        for hand in self.my_hands.values():
            self._flush(hand.hand_id, hand.session, True)
        for hand_id, claim in self.my_claims.items():
            self._flush(hand_id, claim.session, False)

    def on_help_msg(self, msg: wire.HelpMsg) -> None:
        ctx = self._ctx
        if msg.to_mentor:
            claim = self.my_claims.get(msg.hand_id)
            if claim is None:
                ctx.count("help_unknown")
                return
            session, who, reply_to_mentor = self._claim_session(claim), claim.entry.label, False
        else:
            hand = self.my_hands.get(msg.hand_id)
            if hand is None or hand.session.box is None:
                ctx.count("help_unknown")
                return
            session, who, reply_to_mentor = hand.session, hand.mentor, True
        box = session.box
        assert box is not None
        try:
            inner = wire.decode_inner(box.open(msg.box))
        except (ident.CryptoError, wire.DecodeError):
            ctx.count("bad_box")
            return
        if isinstance(inner, wire.PrivateAck):
            session.channel.outbound.ack(inner.upto)
            return
        if isinstance(inner, wire.Signal):
            return  # no typing/read hints in help sessions
        author = "s" if msg.to_mentor else "m"  # the student wrote it, or the mentor
        inbound = session.channel.inbound
        for ready in inbound.receive(inner.cseq, inner.base, inner):
            assert isinstance(ready, wire.Private)
            msg_id = f"hand:{msg.hand_id}:{author}:{ready.cseq}"
            self._private.show(
                msg_id, f"hand:{msg.hand_id}", safe_label(who), "", ready, hand=msg.hand_id
            )
        ack = wire.encode_inner(wire.PrivateAck(upto=inbound.delivered_upto))
        reply = wire.HelpMsg(hand_id=msg.hand_id, to_mentor=reply_to_mentor, box=box.seal(ack))
        self._membership.send(wire.encode(reply))
