"""Private chat between friends: consent (the friendship machine), end-to-end sealed items
through the broker on one reliable channel per friend (queued durably while they are
away), delivered and read receipts, typing hints."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any, Final

from lanchat import identity as ident
from lanchat.core import friendship as fs
from lanchat.core import wire
from lanchat.core.budget import Budgets
from lanchat.core.channel import ReliableChannel
from lanchat.core.handles import HandleError, handle_key, validate_handle
from lanchat.core.reliability import InboundChannel
from lanchat.core.text import check_text, clean_text, safe_label
from lanchat.room.context import CommandError
from lanchat.store import HistoryRecord, OutboxItem

if TYPE_CHECKING:
    from collections.abc import Callable

    from lanchat.room.context import RoomContext
    from lanchat.room.friends import Friendships
    from lanchat.room.membership import Membership
    from lanchat.room.peers import Peers

__all__ = ["PrivateChat", "conversation_of", "private_id"]

REQUEST_GAP_S: Final = 3.0  # a pending request is re-sent at most this often
REQUESTS_PER_MIN: Final = 20
REQUEST_WINDOW_S: Final = 60.0
# What others can make us store or show (the broker enforces the same per sender).
PENDING_IN_MAX: Final = 50  # chat requests waiting for our answer; the oldest goes
DIRECTS_IN_PER_S: Final = 200.0  # per sender, before we open anything
DIRECTS_IN_BURST: Final = 400.0
# A repeated typing hint refreshes the indicator (stale after ~5 s): at most this often.
TYPING_REPEAT_S: Final = 2.0


def conversation_of(key: bytes) -> str:
    """The history's name for the private conversation with ``key``."""
    return f"peer:{key.hex()}"


def private_id(sender: bytes, recipient: bytes, cseq: int) -> str:
    return f"{sender.hex()[:16]}>{recipient.hex()[:16]}:{cseq}"


class PrivateChat:
    def __init__(
        self,
        ctx: RoomContext,
        membership: Membership,
        peers: Peers,
        friends: Friendships,
        on_file_offer: Callable[[bytes, str, str], None],
    ) -> None:
        self._ctx = ctx
        self._membership = membership
        self._peers = peers
        self._friends = friends
        self._on_file_offer = on_file_offer  # (sender, handle, offer JSON) from a friend
        self._channels: dict[bytes, ReliableChannel[wire.Private]] = {}
        self._all_loaded = False  # every queue of the store is in _channels
        self._last_request: dict[bytes, float] = {}
        self._request_times: list[float] = []
        self._directs_in: Budgets[bytes] = Budgets(DIRECTS_IN_PER_S, DIRECTS_IN_BURST)
        self._typing: dict[bytes, tuple[bool, float]] = {}  # last hint shown: (active, when)

    # ================================================================ handles and keys

    def check_other_handle(self, handle: str) -> None:
        """A command's handle argument: a valid handle, and not our own."""
        try:
            validate_handle(handle)
        except HandleError as exc:
            raise CommandError("bad_command", str(exc)) from None
        if handle_key(handle) == handle_key(self._ctx.cfg.handle):
            raise CommandError("bad_command", "that is your own handle")

    def key_for_handle(self, handle: str) -> bytes:
        """The identity key a handle stands for: the pinned one (trust on first use)."""
        self.check_other_handle(handle)
        pin = self._ctx.profile.state.pin_for_handle(handle)
        if pin is not None:
            return bytes.fromhex(pin.key)
        key = self._peers.online_key(handle)
        if key is None:
            raise CommandError(
                "unknown_handle", f"nobody called {handle!r} has been seen on this network"
            )
        return key

    # ================================================================ consent

    def friend_move(self, handle: str, move: fs.Move) -> None:
        key = self.key_for_handle(handle)
        known = self._peers.handle_of(key)
        name = known if known != "?" else handle
        if move is fs.Move.REQUEST:
            self._limit_requests(key, name)
        try:
            outcome = fs.apply(self._friends.of(key), move)
        except fs.IllegalTransition as exc:
            raise CommandError("bad_command", f"{name}: {exc}") from None
        self._friends.set(key, name, outcome.state)
        if outcome.send is not None:
            self._queue(key, outcome.send.value, "")
        if outcome.state == fs.Friendship.FRIEND and move in (fs.Move.ACCEPT, fs.Move.REQUEST):
            self._ctx.emit("accepted", by=self._ctx.cfg.handle, **{"with": name})

    def trust_new_key(self, handle: str, fingerprint: str) -> None:
        """Pin the key a handle uses now in place of the pinned one (a reinstall, a new
        laptop), once the user has compared its fingerprint with its owner out of band.

        The friendship of the old key is not carried over: the new key starts as a
        stranger, so a chat request is needed again. What was queued for the old key stays
        sealed to it and is never sent to the new one.
        """
        self.check_other_handle(handle)
        state = self._ctx.profile.state
        pin = state.pin_for_handle(handle)
        now_key = self._peers.online_key(handle)
        if now_key is None:
            raise CommandError("unknown_handle", f"{handle!r} is not online: nothing to trust")
        if pin is None or pin.key == now_key.hex():
            raise CommandError("bad_command", f"{handle!r} already uses the key you trust")
        wanted = ident.fingerprint(now_key)
        if fingerprint.strip().casefold() != wanted.casefold():
            raise CommandError(
                "fingerprint_mismatch",
                f"that is not the fingerprint of {handle!r}'s new key; compare it with them "
                "in person (they see theirs in their status bar)",
            )
        for old in [p for p in state.pins() if handle_key(p.handle) == handle_key(handle)]:
            state.remove_pin(old.key)
        state.set_pin(handle, now_key.hex(), self._ctx.wall())
        self._ctx.emit("trusted", handle=handle, fingerprint=wanted)

    def _limit_requests(self, key: bytes, name: str) -> None:
        """A pending request is re-sent at most every REQUEST_GAP_S; REQUESTS_PER_MIN in all."""
        now = self._ctx.clock()
        recent = [t for t in self._request_times if now - t < REQUEST_WINDOW_S]
        self._request_times = recent
        last = self._last_request.get(key)
        pending = self._friends.of(key) is fs.Friendship.PENDING_OUT
        if pending and last is not None and now - last < REQUEST_GAP_S:
            raise CommandError(
                "rate_limited", f"you asked {name} {now - last:.0f} s ago; wait a little"
            )
        if len(recent) >= REQUESTS_PER_MIN:
            raise CommandError("rate_limited", "too many chat requests; wait a minute")
        self._last_request[key] = now
        self._request_times.append(now)

    # ================================================================ sending

    def send(self, handle: str, text: str) -> str:
        key = self.key_for_handle(handle)
        text = check_text(text)
        if not self._friends.can_message(key):
            raise CommandError(
                "not_friends", f"you and {handle} are not friends: send a request first"
            )
        return self._queue(key, "text", text)

    def send_file_offer(self, key: bytes, offer_json: str) -> None:
        self._queue(key, "file", offer_json)

    def _channel(self, key: bytes) -> ReliableChannel[wire.Private]:
        """The channel with ``key``, loaded from the store the first time (the queue of
        what they have not acknowledged survives restarts)."""
        chan = self._channels.get(key)
        if chan is None:
            hist, key_hex = self._ctx.profile.history, key.hex()
            chan = ReliableChannel(inbound=InboundChannel(hist.max_seq(f"in:{key_hex}")))
            chan.outbound.next_cseq = hist.max_seq(f"out:{key_hex}") + 1
            for item in hist.outbox_for(key_hex):
                inner = wire.decode_inner(item.payload)
                if isinstance(inner, wire.Private):
                    chan.outbound.restore(item.cseq, inner)
            self._channels[key] = chan
        return chan

    def _queue(self, key: bytes, item: str, text: str) -> str:
        ctx = self._ctx
        hist, key_hex = ctx.profile.history, key.hex()
        chan = self._channel(key)
        sent_t = round(ctx.wall(), 3)
        cseq = chan.outbound.next_cseq
        private = wire.Private(
            item=item, cseq=cseq, base=0, handle=ctx.cfg.handle, text=text, sent_t=sent_t
        )
        chan.outbound.add(private)
        hist.set_seq(f"out:{key_hex}", cseq)
        payload = wire.encode_inner(private)
        hist.outbox_add(OutboxItem(peer_key=key_hex, cseq=cseq, payload=payload, created_t=sent_t))
        msg_id = private_id(ctx.me.key, key, cseq)
        if item == "text":
            ctx.store_outgoing(msg_id, conversation_of(key), text, sent_t)
        self.flush(key)
        return msg_id

    def flush(self, key: bytes) -> None:
        """Send everything queued for ``key`` (in order) if it is online now."""
        entry = self._peers.online.get(key)
        if entry is None or not self._membership.welcomed():
            return
        if self._all_loaded and key not in self._channels:
            return  # nothing ever queued for it (a roster of newcomers: no work per key)
        held = self._ctx.profile.state.pinned_key(entry.handle)
        if held is not None and held != key.hex():
            return  # impersonation suspected: hold everything back
        base, items = self._channel(key).outbound.pending()
        for _cseq, item in items:
            self._send_direct(key, wire.encode_inner(replace(item, base=base)))

    def flush_all(self) -> None:
        if not self._all_loaded:
            for peer in self._ctx.profile.history.outbox_peers():
                self._channel(bytes.fromhex(peer))
            self._all_loaded = True
        for key, chan in self._channels.items():
            if len(chan.outbound):
                self.flush(key)

    def _send_direct(self, key: bytes, plaintext: bytes) -> None:
        me = self._ctx.me
        direct = wire.Direct(sender=me.key, recipient=key, box=me.seal_to(key, plaintext))
        self._membership.send(wire.encode(direct, me.sign(wire.signed_bytes(direct))))

    # ================================================================ receiving

    def on_direct(self, msg: wire.Direct, sig: bytes) -> None:
        ctx = self._ctx
        if msg.recipient != ctx.me.key:
            ctx.count("direct_not_for_me")
            return
        if msg.sender not in self._peers.online:
            # Not in our roster (yet): we would have no name for it but the one it claims.
            # Unacknowledged, so an honest sender sends it again once we see it online.
            ctx.count("direct_from_stranger")
            return
        if not self._directs_in.take(msg.sender, ctx.clock()):
            ctx.count("direct_budget")
            return
        if not ident.verify(msg.sender, wire.signed_bytes(msg), sig):
            ctx.count("bad_signature")
            return
        try:
            inner = wire.decode_inner(ctx.me.open_from(msg.sender, msg.box))
        except (ident.CryptoError, wire.DecodeError):
            ctx.count("bad_box")
            return
        if isinstance(inner, wire.PrivateAck):
            self._on_ack(msg.sender, inner.upto)
            return
        if isinstance(inner, wire.Signal):
            self._on_signal(msg.sender, inner)
            return
        chan = self._channel(msg.sender).inbound
        for ready in chan.receive(inner.cseq, inner.base, inner):
            assert isinstance(ready, wire.Private)
            self._deliver(msg.sender, ready)
        ctx.profile.history.set_seq(f"in:{msg.sender.hex()}", chan.delivered_upto)
        self._send_direct(msg.sender, wire.encode_inner(wire.PrivateAck(upto=chan.delivered_upto)))

    def _deliver(self, sender: bytes, item: wire.Private) -> None:
        ctx = self._ctx
        handle = self._peers.handle_of(sender)
        if handle == "?":
            handle = safe_label(item.handle)
        state = self._friends.of(sender)
        if item.item == "text":
            if not fs.can_message(state):
                ctx.count("private_from_non_friend")
                if state is fs.Friendship.NONE:
                    # They still think we are friends (we unblocked or lost state): tell
                    # them, so their state follows and they can ask again.
                    self._queue(sender, fs.Notice.REJECT.value, "")
                return
            self._typing.pop(sender, None)  # a text ends its typing hint
            msg_id = private_id(sender, ctx.me.key, item.cseq)
            marks = self._peers.marks(sender, handle)
            shown = self.show(msg_id, conversation_of(sender), handle, sender.hex(), item, **marks)
            if shown and ctx.cfg.auto_read:
                self._send_signal(sender, "read", item.cseq)
            return
        if item.item == "file":
            if not fs.can_message(state):
                ctx.count("private_from_non_friend")
                return
            self._on_file_offer(sender, handle, item.text)
            return
        self._on_notice(sender, handle, state, fs.arrives_as(fs.Notice(item.item)))

    def _on_notice(self, sender: bytes, handle: str, state: fs.Friendship, move: fs.Move) -> None:
        """A friendship notice (request, accept, reject) from ``sender``."""
        ctx = self._ctx
        try:
            outcome = fs.apply(state, move)
        except fs.IllegalTransition:
            ctx.count("friendship_out_of_step")
            return
        if outcome.silenced:
            ctx.count("blocked")
            return
        if outcome.state is fs.Friendship.PENDING_IN and state is not fs.Friendship.PENDING_IN:
            self._make_room_for_a_request()
        self._friends.set(sender, handle, outcome.state)
        if outcome.send is not None:
            self._queue(sender, outcome.send.value, "")
        if move is fs.Move.GOT_REQUEST:
            if outcome.state == fs.Friendship.FRIEND and state != fs.Friendship.FRIEND:
                ctx.emit("accepted", by=handle)
            elif outcome.state == fs.Friendship.PENDING_IN and state != fs.Friendship.PENDING_IN:
                # A repeated request while one is pending is not news (no request floods).
                marks = self._peers.marks(sender, handle)
                marks["fingerprint"] = ident.fingerprint(sender)
                ctx.emit("request", **{"from": handle}, **marks)
        elif move is fs.Move.GOT_ACCEPT and state != fs.Friendship.FRIEND:
            ctx.emit("accepted", by=handle)
        elif move is fs.Move.GOT_REJECT:
            ctx.emit("rejected", by=handle)

    def _make_room_for_a_request(self) -> None:
        """At most PENDING_IN_MAX requests wait for an answer: the oldest goes unanswered
        (its sender may ask again), so strangers cannot make us store without end."""
        waiting = self._friends.pending_in()
        for key in waiting[: max(0, len(waiting) - PENDING_IN_MAX + 1)]:
            self._friends.set(key, self._peers.handle_of(key), fs.Friendship.NONE)
            self._ctx.count("request_dropped")

    def blocked(self, key: bytes) -> bool:
        return self._friends.blocked(key)

    def show(
        self,
        msg_id: str,
        conversation: str,
        who: str,
        sender_key: str,
        item: wire.Private,
        **extra: Any,
    ) -> bool:
        """Store an incoming private text and show it, unless it was seen before."""
        ctx = self._ctx
        record = HistoryRecord(
            id=msg_id,
            conversation=conversation,
            sender=who,
            sender_key=sender_key,
            text=item.text,
            sent_t=item.sent_t,
            received_t=ctx.wall(),
            outgoing=False,
        )
        if not ctx.profile.history.append(record):
            return False
        ctx.emit(
            "private",
            id=msg_id,
            **{"from": who},
            text=clean_text(item.text),
            sent_t=item.sent_t,
            **extra,
        )
        return True

    # ================================================================ receipts, typing

    def _on_ack(self, peer: bytes, upto: int) -> None:
        """The friend's node has everything up to ``upto``: say which messages arrived."""
        acked = self._channel(peer).outbound.ack(upto)
        if not acked:
            return
        self._ctx.profile.history.outbox_remove_upto(peer.hex(), upto)
        to = self._peers.handle_of(peer)
        for cseq, item in acked:
            if item.item == "text":
                msg_id = private_id(self._ctx.me.key, peer, cseq)
                self._ctx.emit("delivered", id=msg_id, to=to, upto=upto)

    def _on_signal(self, peer: bytes, signal: wire.Signal) -> None:
        ctx = self._ctx
        if not self._friends.can_message(peer):
            ctx.count("signal_from_non_friend")
            return
        who = self._peers.handle_of(peer)
        if signal.what == "typing":
            active, now = signal.value > 0, ctx.clock()
            shown, at = self._typing.get(peer, (None, -1e9))
            if shown is not active or now - at >= TYPING_REPEAT_S:  # else: not news
                self._typing[peer] = (active, now)
                ctx.emit("typing", **{"from": who}, active=active)
            return
        hist = ctx.profile.history
        counter = f"read:{peer.hex()}"
        before = hist.max_seq(counter)
        if signal.value <= before:
            return
        hist.set_seq(counter, signal.value)
        upto = min(signal.value, hist.max_seq(f"out:{peer.hex()}"))
        for cseq in range(before + 1, upto + 1):
            msg_id = private_id(ctx.me.key, peer, cseq)
            if hist.has(msg_id):  # a text of ours, not a request/accept
                ctx.emit("read", id=msg_id, by=who)

    def _send_signal(self, peer: bytes, what: str, value: int) -> None:
        setting = "receipts" if what == "read" else "typing"
        if not self._ctx.profile.state.get_setting(setting, True):
            return  # privacy: this profile does not tell
        if peer in self._peers.online:
            self._send_direct(peer, wire.encode_inner(wire.Signal(what=what, value=value)))

    def mark_read(self, handle: str) -> None:
        """Tell a friend we have seen their messages (the UI calls this when showing them)."""
        key = self.key_for_handle(handle)
        upto = self._ctx.profile.history.max_seq(f"in:{key.hex()}")
        if upto:
            self._send_signal(key, "read", upto)

    def typing(self, handle: str, active: bool) -> None:
        key = self.key_for_handle(handle)
        if not self._friends.can_message(key):
            raise CommandError("not_friends", f"you and {handle} are not friends")
        self._send_signal(key, "typing", int(active))

    # ================================================================ queries

    def friends(self) -> list[dict[str, Any]]:
        ctx = self._ctx
        out = []
        for key_hex, (handle, state) in sorted(
            ctx.profile.state.friendships().items(), key=lambda kv: kv[1][0].lower()
        ):
            key = bytes.fromhex(key_hex)
            out.append(
                {
                    "handle": handle,
                    "state": state,
                    "online": key in self._peers.online,
                    "fingerprint": ident.fingerprint(key),
                    "safety_code": ident.safety_code(ctx.me.key, key),
                }
            )
        return out
