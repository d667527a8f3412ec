"""The broker relay machine, driven with real identities and signatures (no sockets)."""

from __future__ import annotations

import dataclasses
import gc
from dataclasses import replace
from typing import Any

import pytest

from lanchat.core import relay as relay_mod
from lanchat.core import wire
from lanchat.core.relay import (
    BEAT_INTERVAL_S,
    BUSY_MAX_S,
    CLIENT_TIMEOUT_S,
    FIRST_CONTACTS_BURST,
    FIRST_CONTACTS_PER_S,
    HANDS_BURST,
    HANDS_PER_S,
    JOIN_BEAT_S,
    JOINS_BURST,
    MAX_CLIENTS,
    PROBE_WAIT_S,
    ROSTER_MIN_INTERVAL_S,
    SHARED_OFFERS_BURST,
    STATUS_CHANGES_BURST,
    BrokerRelay,
    Effect,
    Probe,
    Publish,
    Reconcile,
    ToClient,
)
from lanchat.identity import Identity, verify

ROOM = "lobby"
EPOCH = 3
T0 = 1000.0


# The handle each identity introduced itself with: its Publics must carry the same one.
HANDLES: dict[bytes, str] = {}


def signed_hello(
    ident: Identity,
    handle: str,
    *,
    room: str = ROOM,
    mentor: bool = False,
    priority: int = 0,
    started_at: float = 100.0,
) -> tuple[wire.Hello, bytes]:
    HANDLES[ident.key] = handle
    hello = wire.Hello(
        handle=handle,
        room=room,
        mentor=mentor,
        id_key=ident.key,
        curve_key=ident.curve_public,
        started_at=started_at,
        priority=priority,
        address="10.0.0.2",
        router_port=47001,
        info_port=47100,
    )
    return hello, ident.sign(wire.signed_bytes(hello))


def join(
    relay: BrokerRelay, rid: bytes, ident: Identity, handle: str, now: float = T0, **kw: Any
) -> list[Effect]:
    """Send a signed Hello over a connection authenticated with the Hello's curve key."""
    hello, sig = signed_hello(ident, handle, **kw)
    return relay.receive(rid, hello.curve_key, wire.encode(hello, sig), now)


def signed_public(
    ident: Identity, seq: int, text: str = "hi", *, room: str = ROOM
) -> tuple[wire.Public, bytes]:
    handle = HANDLES.get(ident.key, "x")
    pub = wire.Public(author=ident.key, handle=handle, room=room, seq=seq, text=text, sent_t=5.0)
    return pub, ident.sign(wire.signed_bytes(pub))


def send(
    relay: BrokerRelay, rid: bytes, msg: Any, sig: bytes = b"", now: float = T0
) -> list[Effect]:
    return relay.receive(rid, b"", wire.encode(msg, sig), now)


def post(
    relay: BrokerRelay, rid: bytes, ident: Identity, seq: int, now: float = T0
) -> list[Effect]:
    pub, sig = signed_public(ident, seq)
    return send(relay, rid, pub, sig, now)


def opened(effects: list[Effect]) -> list[tuple[bytes | None, Any]]:
    """``(rid or None for Publish, decoded message)`` per effect."""
    out: list[tuple[bytes | None, Any]] = []
    for eff in effects:
        assert not isinstance(eff, Reconcile | Probe)
        msg, _ = wire.decode(eff.frames)
        out.append((eff.rid if isinstance(eff, ToClient) else None, msg))
    return out


def handles(roster: wire.Roster) -> list[str]:
    return [p.handle for p in roster.peers]


@pytest.fixture
def broker() -> Identity:
    return Identity.generate()


@pytest.fixture
def alice() -> Identity:
    return Identity.generate()


@pytest.fixture
def bob() -> Identity:
    return Identity.generate()


@pytest.fixture
def relay(broker: Identity) -> BrokerRelay:
    return BrokerRelay(
        key=broker.key,
        handle="boss",
        room=ROOM,
        epoch=EPOCH,
        since=50.0,
        pub_port=47002,
        verify=verify,
    )


# ---------------------------------------------------------------- hello


def test_hello_gets_welcome_and_roster_and_roster_is_published(
    relay: BrokerRelay, alice: Identity
) -> None:
    hello, sig = signed_hello(alice, "alice")
    effects = relay.receive(b"r-a", alice.curve_public, wire.encode(hello, sig), T0)
    (to1, welcome), (to2, roster), (to3, published) = opened(effects)
    assert (to1, to2, to3) == (b"r-a", b"r-a", None)
    assert welcome == wire.Welcome(
        epoch=EPOCH, broker_handle="boss", broker_key=relay.key, pub_port=47002, bseq=0, since=50.0
    )
    assert roster == published
    assert roster.epoch == EPOCH
    assert roster.broker_key == relay.key
    assert roster.peers == (hello.entry(sig, "online"),)
    entry = roster.peers[0]
    assert verify(entry.id_key, wire.signed_bytes(wire.hello_of(entry)), entry.hello_sig)
    assert relay.client_count() == 1


def test_each_roster_change_has_a_new_version(
    relay: BrokerRelay, alice: Identity, bob: Identity
) -> None:
    v1 = opened(join(relay, b"r-a", alice, "alice"))[2][1].version
    v2 = opened(join(relay, b"r-b", bob, "bob", now=T0 + 1))[2][1].version
    assert v2 > v1
    assert relay.roster().version == v2


def test_hello_over_a_connection_with_another_key_is_refused(
    relay: BrokerRelay, alice: Identity, bob: Identity
) -> None:
    hello, sig = signed_hello(alice, "alice")
    effects = relay.receive(b"r-a", bob.curve_public, wire.encode(hello, sig), T0)
    [(rid, refused)] = opened(effects)
    assert rid == b"r-a"
    assert refused.code == "bad_hello"
    assert relay.counters == {"hello_key_mismatch": 1}
    assert relay.client_count() == 0


def test_hello_with_a_bad_signature_is_refused_and_counted(
    relay: BrokerRelay, alice: Identity, bob: Identity
) -> None:
    hello, _ = signed_hello(alice, "alice")
    forged = bob.sign(wire.signed_bytes(hello))
    [(_, refused)] = opened(relay.receive(b"r-a", hello.curve_key, wire.encode(hello, forged), T0))
    assert refused.code == "bad_hello"
    # A signature of another Hello by the right key does not verify either.
    _, other_sig = signed_hello(alice, "alice2")
    [(_, refused2)] = opened(
        relay.receive(b"r-a", hello.curve_key, wire.encode(hello, other_sig), T0)
    )
    assert refused2.code == "bad_hello"
    assert relay.counters == {"bad_signature": 2}
    assert relay.client_count() == 0


def test_hello_for_another_room_is_refused(relay: BrokerRelay, alice: Identity) -> None:
    [(_, refused)] = opened(join(relay, b"r-a", alice, "alice", room="attic"))
    assert refused.code == "wrong_room"
    assert ROOM in refused.message
    assert relay.client_count() == 0


@pytest.mark.parametrize("handle", ["", "al ice", "jos\u00e9", "bob\x1b[31m"])
def test_hello_with_an_invalid_handle_is_refused(
    relay: BrokerRelay, alice: Identity, handle: str
) -> None:
    [(_, refused)] = opened(join(relay, b"r-a", alice, handle))
    assert refused.code == "bad_handle"
    assert relay.client_count() == 0


def test_handle_of_another_key_is_refused_case_insensitively(
    relay: BrokerRelay, alice: Identity, bob: Identity
) -> None:
    join(relay, b"r-a", alice, "Alice")
    [(rid, refused)] = opened(join(relay, b"r-b", bob, "aLICE"))
    assert rid == b"r-b"
    assert refused.code == "handle_taken"
    assert relay.counters == {"handle_taken": 1}
    assert handles(relay.roster()) == ["Alice"]


def test_same_key_may_hello_again_on_the_same_connection(
    relay: BrokerRelay, alice: Identity
) -> None:
    join(relay, b"r-a", alice, "alice")
    effects = join(relay, b"r-a", alice, "alice", now=T0 + 1)
    assert isinstance(opened(effects)[0][1], wire.Welcome)
    assert relay.client_count() == 1


def test_same_key_reconnecting_on_a_new_connection_replaces_the_old(
    relay: BrokerRelay, alice: Identity, bob: Identity
) -> None:
    join(relay, b"r-b", bob, "bob")
    join(relay, b"r-a1", alice, "alice")
    effects = join(relay, b"r-a2", alice, "alice", now=T0 + 1)
    assert isinstance(opened(effects)[0][1], wire.Welcome)
    assert relay.client_count() == 2
    assert sorted(handles(relay.roster())) == ["alice", "bob"]
    # Directs now go to the new connection, and the old one must introduce itself again.
    direct = wire.Direct(sender=bob.key, recipient=alice.key, box=b"sealed")
    [routed] = send(relay, b"r-b", direct, bob.sign(wire.signed_bytes(direct)), T0 + 1)
    assert isinstance(routed, ToClient)
    assert routed.rid == b"r-a2"
    [(_, refused)] = opened(post(relay, b"r-a1", alice, 1, T0 + 1))
    assert refused.code == "hello_first"


# ---------------------------------------------------------------- before hello, malformed


def test_frames_before_hello_are_refused_with_hello_first(
    relay: BrokerRelay, alice: Identity
) -> None:
    [(rid, refused)] = opened(post(relay, b"r-a", alice, 1))
    assert rid == b"r-a"
    assert refused.code == "hello_first"
    [(_, refused2)] = opened(send(relay, b"r-a", wire.Heartbeat(t=1.0)))
    assert refused2.code == "hello_first"
    assert relay.bseq == 0
    assert send(relay, b"r-a", wire.Goodbye()) == []  # nothing to refuse on the way out


@pytest.mark.parametrize(
    "frames",
    [[], [b"garbage"], [b"LC\x01\x09", b"{", b""], [b"LC\x02\x09", b'{"seq":1}', b""]],
    ids=["empty", "one", "bad-json", "other-version"],
)
def test_malformed_frames_are_counted_without_effects(
    relay: BrokerRelay, alice: Identity, frames: list[bytes]
) -> None:
    join(relay, b"r-a", alice, "alice")
    version = relay.roster_version
    assert relay.receive(b"r-a", alice.curve_public, frames, T0) == []
    assert relay.receive(b"r-x", b"", frames, T0) == []
    assert relay.counters == {"malformed": 2}
    assert relay.roster_version == version
    assert relay.client_count() == 1


def test_unexpected_kind_from_a_client_is_dropped(relay: BrokerRelay, alice: Identity) -> None:
    join(relay, b"r-a", alice, "alice")
    assert send(relay, b"r-a", wire.Ack(seq=1)) == []
    assert send(relay, b"r-a", wire.Beat(epoch=EPOCH)) == []
    assert relay.counters == {"unexpected_kind": 2}


# ---------------------------------------------------------------- public


def test_public_is_relayed_with_increasing_bseq_and_acked(
    relay: BrokerRelay, alice: Identity
) -> None:
    join(relay, b"r-a", alice, "alice")
    for seq in (1, 2, 3):
        pub, sig = signed_public(alice, seq)
        [(to_all, relayed), (to_author, ack)] = opened(send(relay, b"r-a", pub, sig))
        assert to_all is None
        assert relayed == wire.Relay(epoch=EPOCH, bseq=seq, inner=pub, inner_sig=sig, place=seq)
        assert (to_author, ack) == (b"r-a", wire.Ack(seq=seq))
    assert relay.bseq == 3


def test_replayed_public_is_acked_but_not_relayed_again(
    relay: BrokerRelay, alice: Identity
) -> None:
    join(relay, b"r-a", alice, "alice")
    post(relay, b"r-a", alice, 1)
    [(to, placed), (_, ack)] = opened(post(relay, b"r-a", alice, 1, T0 + 5))
    # Acknowledged again, with its place to the author only (epoch 0: not renumbered).
    assert to == b"r-a"
    assert (placed.epoch, placed.place, placed.inner.seq) == (0, 1, 1)
    assert ack == wire.Ack(seq=1)
    assert relay.bseq == 1
    assert relay.counters == {"duplicate": 1}


def test_public_signed_by_someone_else_or_forged_is_dropped(
    relay: BrokerRelay, alice: Identity, bob: Identity
) -> None:
    join(relay, b"r-a", alice, "alice")
    join(relay, b"r-b", bob, "bob")
    # Bob's own, validly signed message sent over Alice's connection.
    pub_b, sig_b = signed_public(bob, 1)
    assert send(relay, b"r-a", pub_b, sig_b) == []
    # Alice's message for another room.
    pub_room, sig_room = signed_public(alice, 1, room="attic")
    assert send(relay, b"r-a", pub_room, sig_room) == []
    # Alice's message with a signature by Bob, and a signature of another text.
    pub_a, _ = signed_public(alice, 1)
    _, other_sig = signed_public(alice, 1, "other text")
    assert send(relay, b"r-a", pub_a, bob.sign(wire.signed_bytes(pub_a))) == []
    assert send(relay, b"r-a", pub_a, other_sig) == []
    assert relay.bseq == 0
    assert relay.counters == {"public_not_own": 2, "bad_signature": 2}


def test_rate_limit_drops_without_ack_and_refills_with_time(
    relay: BrokerRelay, alice: Identity, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(relay_mod, "RATE_PER_CLIENT", 2.0)
    join(relay, b"r-a", alice, "alice")
    assert len(post(relay, b"r-a", alice, 1)) == 2
    assert len(post(relay, b"r-a", alice, 2)) == 2
    assert post(relay, b"r-a", alice, 3) == []
    assert relay.counters == {"rate_limited": 1}
    assert relay.bseq == 2
    # Half a second later one token is back: the author's re-send of seq 3 goes through.
    [(_, relayed), (_, ack)] = opened(post(relay, b"r-a", alice, 3, T0 + 0.5))
    assert (relayed.bseq, relayed.inner.seq, ack) == (3, 3, wire.Ack(seq=3))


def test_rate_limit_applies_per_client(
    relay: BrokerRelay, alice: Identity, bob: Identity, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(relay_mod, "RATE_PER_CLIENT", 1.0)
    join(relay, b"r-a", alice, "alice")
    join(relay, b"r-b", bob, "bob")
    assert post(relay, b"r-a", alice, 1) != []
    assert post(relay, b"r-a", alice, 2) == []
    assert post(relay, b"r-b", bob, 1) != []


# ---------------------------------------------------------------- direct


def _direct(sender: Identity, recipient: bytes) -> tuple[wire.Direct, bytes]:
    msg = wire.Direct(sender=sender.key, recipient=recipient, box=b"\x01sealed")
    return msg, sender.sign(wire.signed_bytes(msg))


def test_direct_is_routed_only_to_the_recipient(
    relay: BrokerRelay, alice: Identity, bob: Identity, broker: Identity
) -> None:
    join(relay, b"r-boss", broker, "boss")
    join(relay, b"r-a", alice, "alice")
    join(relay, b"r-b", bob, "bob")
    msg, sig = _direct(alice, bob.key)
    frames = wire.encode(msg, sig)
    assert relay.receive(b"r-a", b"", frames, T0) == [ToClient(b"r-b", frames)]


def test_direct_with_another_sender_or_forged_signature_is_dropped(
    relay: BrokerRelay, alice: Identity, bob: Identity
) -> None:
    join(relay, b"r-a", alice, "alice")
    join(relay, b"r-b", bob, "bob")
    as_bob, bob_sig = _direct(bob, alice.key)
    assert send(relay, b"r-a", as_bob, bob_sig) == []  # Alice's connection, Bob's Direct
    msg, _ = _direct(alice, bob.key)
    assert send(relay, b"r-a", msg, bob.sign(wire.signed_bytes(msg))) == []
    assert relay.counters == {"direct_not_own": 1, "bad_signature": 1}


def test_direct_to_an_offline_recipient_is_dropped(
    relay: BrokerRelay, alice: Identity, bob: Identity
) -> None:
    join(relay, b"r-a", alice, "alice")
    msg, sig = _direct(alice, bob.key)
    assert send(relay, b"r-a", msg, sig) == []
    join(relay, b"r-b", bob, "bob")
    send(relay, b"r-b", wire.Goodbye())
    assert send(relay, b"r-a", msg, sig) == []
    assert relay.counters == {"recipient_offline": 2}


# ---------------------------------------------------------------- resend, seed


def _bseqs(effects: list[Effect]) -> list[int]:
    return [msg.bseq for _, msg in opened(effects)]


def test_resend_returns_the_requested_backlog_range(relay: BrokerRelay, alice: Identity) -> None:
    join(relay, b"r-a", alice, "alice")
    relayed = [post(relay, b"r-a", alice, seq)[0].frames for seq in range(1, 6)]
    effects = send(relay, b"r-a", wire.Resend(epoch=EPOCH, first=2, last=4))
    assert effects == [ToClient(b"r-a", f) for f in relayed[1:4]]
    assert _bseqs(send(relay, b"r-a", wire.Resend(epoch=EPOCH, first=4, last=99))) == [4, 5]


def test_resend_of_another_epoch_or_reversed_range_is_dropped(
    relay: BrokerRelay, alice: Identity
) -> None:
    join(relay, b"r-a", alice, "alice")
    post(relay, b"r-a", alice, 1)
    assert send(relay, b"r-a", wire.Resend(epoch=EPOCH - 1, first=1, last=1)) == []
    assert send(relay, b"r-a", wire.Resend(epoch=EPOCH, first=2, last=1)) == []
    assert relay.counters == {"bad_resend": 2}


def test_resend_is_capped_and_the_backlog_bounded(
    relay: BrokerRelay, alice: Identity, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(relay_mod, "RESEND_MAX", 3)
    monkeypatch.setattr(relay_mod, "BACKLOG_SIZE", 4)
    bounded = BrokerRelay(
        key=relay.key, handle="boss", room=ROOM, epoch=EPOCH, since=0.0, pub_port=1, verify=verify
    )
    join(bounded, b"r-a", alice, "alice")
    for seq in range(1, 7):
        post(bounded, b"r-a", alice, seq)
    assert _bseqs(send(bounded, b"r-a", wire.Resend(epoch=EPOCH, first=1, last=6))) == [3]
    assert _bseqs(send(bounded, b"r-a", wire.Resend(epoch=EPOCH, first=3, last=6))) == [3, 4, 5]


def test_seed_makes_earlier_messages_resendable_and_relays_an_authors_resend_once(
    relay: BrokerRelay, alice: Identity, bob: Identity
) -> None:
    history = [signed_public(alice, 1), signed_public(bob, 1), signed_public(alice, 2)]
    placed = [(m, s, p) for p, (m, s) in enumerate(history, start=1)]
    relay.seed([*placed, placed[0], (*signed_public(bob, 2, room="attic"), 9)])
    assert relay.bseq == 3  # the repeat and the other room's message are not kept
    join(relay, b"r-a", alice, "alice")
    resent = opened(send(relay, b"r-a", wire.Resend(epoch=EPOCH, first=1, last=3)))
    assert [(m.inner, m.inner_sig) for _, m in resent] == history
    # Alice's outbox re-sends her message to the new broker: someone may have missed it
    # when the old broker died, so it goes out once more (receivers drop duplicates) ...
    [(to, relayed), (_, ack)] = opened(post(relay, b"r-a", alice, 2))
    assert to is None
    assert relayed.inner.seq == 2
    assert relayed.place == 3  # the place it had, not a new one
    assert ack == wire.Ack(seq=2)
    assert relay.bseq == 4
    # ... and only once.
    assert [m for _, m in opened(post(relay, b"r-a", alice, 2))][1:] == [wire.Ack(seq=2)]
    assert relay.bseq == 4


# ---------------------------------------------------------------- tick, roster, goodbye


def test_tick_publishes_a_beat_every_interval(relay: BrokerRelay, alice: Identity) -> None:
    join(relay, b"r-a", alice, "alice")
    post(relay, b"r-a", alice, 1)
    [(to, beat)] = opened(relay.tick(T0))
    assert to is None
    assert beat == wire.Beat(epoch=EPOCH, bseq=1, roster_version=relay.roster_version)
    assert relay.tick(T0 + BEAT_INTERVAL_S / 2) == []
    assert len(relay.tick(T0 + BEAT_INTERVAL_S)) == 1
    assert relay.tick(T0 + BEAT_INTERVAL_S * 1.5) == []


def test_silent_clients_time_out_and_the_roster_is_republished(
    relay: BrokerRelay, alice: Identity, bob: Identity
) -> None:
    join(relay, b"r-a", alice, "alice")
    join(relay, b"r-b", bob, "bob", now=T0 + ROSTER_MIN_INTERVAL_S)
    relay.tick(T0 + ROSTER_MIN_INTERVAL_S)
    send(relay, b"r-b", wire.Heartbeat(t=1.0, status="online"), now=T0 + 1.5)
    relay.tick(T0 + 1.0)  # the relay ticks all the time (a gap would mean it was asleep)
    # Not yet at the timeout itself (strictly longer), only a Beat.
    assert [type(m) for _, m in opened(relay.tick(T0 + CLIENT_TIMEOUT_S))] == [wire.Beat]
    # Silent: its node is probed before it is reported gone.
    effects = relay.tick(T0 + CLIENT_TIMEOUT_S + BEAT_INTERVAL_S)
    assert effects[0] == Probe(b"r-a", "10.0.0.2", 47100)
    [(_, beat)] = opened(effects[1:])
    assert isinstance(beat, wire.Beat)
    # Nothing listens there any more (the process died): gone at once.
    later = T0 + CLIENT_TIMEOUT_S + BEAT_INTERVAL_S + 0.01
    msgs = [m for _, m in opened(relay.probed(b"r-a", False, later))]
    assert [type(m) for m in msgs] == [wire.Roster]
    assert handles(msgs[0]) == ["bob"]
    assert relay.counters == {"client_timeout": 1}
    [(_, refused)] = opened(post(relay, b"r-a", alice, 1, T0 + 3))
    assert refused.code == "hello_first"


def test_any_frame_counts_as_a_sign_of_life(relay: BrokerRelay, alice: Identity) -> None:
    join(relay, b"r-a", alice, "alice")
    relay.tick(T0)
    post(relay, b"r-a", alice, 1, T0 + 1.9)
    assert [type(m) for _, m in opened(relay.tick(T0 + 3.0))] == [wire.Beat]
    assert relay.client_count() == 1


def test_roster_lists_the_broker_first_then_mentors(relay: BrokerRelay, broker: Identity) -> None:
    people = [Identity.generate() for _ in range(4)]
    join(relay, b"r-0", people[0], "oldest", started_at=1.0)
    join(relay, b"r-1", people[1], "mentor", mentor=True, started_at=300.0)
    join(relay, b"r-boss", broker, "boss", started_at=500.0)
    join(relay, b"r-2", people[2], "keen", priority=5, started_at=200.0)
    join(relay, b"r-3", people[3], "young", started_at=400.0)
    assert handles(relay.roster()) == ["boss", "mentor", "keen", "oldest", "young"]


def test_heartbeat_with_a_new_status_republishes_the_roster(
    relay: BrokerRelay, alice: Identity
) -> None:
    join(relay, b"r-a", alice, "alice")
    [(to, roster)] = opened(send(relay, b"r-a", wire.Heartbeat(t=1.0, status="away"), now=T0 + 1))
    assert to is None
    assert roster.peers[0].status == "away"
    assert send(relay, b"r-a", wire.Heartbeat(t=2.0, status="away"), now=T0 + 2) == []
    # A later Hello on the same connection keeps the status.
    join(relay, b"r-a", alice, "alice")
    assert relay.roster().peers[0].status == "away"


def test_sync_sends_the_roster_to_the_asker(relay: BrokerRelay, alice: Identity) -> None:
    join(relay, b"r-a", alice, "alice")
    [(to, roster)] = opened(send(relay, b"r-a", wire.Sync(roster_version=-1)))
    assert to == b"r-a"
    assert roster == relay.roster()


def test_sync_is_not_answered_to_a_client_with_all_that_was_published(
    relay: BrokerRelay, alice: Identity, bob: Identity
) -> None:
    join(relay, b"r-a", alice, "alice")
    effects = opened(join(relay, b"r-b", bob, "bob"))
    # In a wave of joins, the newcomer's roster comes with the next (coalesced) publish.
    assert not [m for to, m in effects if isinstance(m, wire.Roster)]
    assert send(relay, b"r-b", wire.Sync(roster_version=relay.roster_version)) == []
    # a client that missed a publish gets the last one published (encoded once)
    [(to, roster)] = opened(send(relay, b"r-b", wire.Sync(roster_version=-1)))
    assert to == b"r-b"
    assert sorted(handles(roster)) == ["alice"]
    published = opened(relay.tick(T0 + ROSTER_MIN_INTERVAL_S))
    rosters = [(to, sorted(handles(m))) for to, m in published if isinstance(m, wire.Roster)]
    assert rosters == [(None, ["alice", "bob"]), (b"r-b", ["alice", "bob"])]


def test_goodbye_removes_the_client(relay: BrokerRelay, alice: Identity, bob: Identity) -> None:
    join(relay, b"r-a", alice, "alice")
    join(relay, b"r-b", bob, "bob")
    [roster] = [m for to, m in opened(send(relay, b"r-a", wire.Goodbye(), now=T0 + 1)) if not to]
    assert handles(roster) == ["bob"]
    assert relay.client_count() == 1
    # The handle is free again, for anyone.
    carol = Identity.generate()
    assert isinstance(opened(join(relay, b"r-c", carol, "alice"))[0][1], wire.Welcome)


def test_close_and_redirect_publish_to_everyone(relay: BrokerRelay) -> None:
    assert opened(relay.close("bye")) == [(None, wire.Goodbye(reason="bye"))]
    to = wire.Redirect(broker_key=b"k" * 32, curve_key=b"c" * 32, address="10.0.0.9", epoch=7)
    [eff] = relay.redirect(to)
    assert isinstance(eff, Publish)
    assert wire.decode(eff.frames) == (to, b"")


def test_a_redirect_also_reaches_each_client_directly(relay: BrokerRelay) -> None:
    # A client that has only just joined may not be subscribed yet: PUB alone can miss it.
    opened(join(relay, b"r-a", Identity.generate(), "alice"))
    to = wire.Redirect(broker_key=b"k" * 32, curve_key=b"c" * 32, address="10.0.0.9", epoch=7)
    assert opened(relay.redirect(to)) == [(None, to), (b"r-a", to)]


def test_a_wave_of_joins_is_published_as_one_roster(relay: BrokerRelay) -> None:
    people = [Identity.generate() for _ in range(3)]
    first = opened(join(relay, b"r-0", people[0], "p0"))
    assert [type(m) for to, m in first if to is None] == [wire.Roster]
    for i in (1, 2):
        effects = opened(join(relay, f"r-{i}".encode(), people[i], f"p{i}"))
        # Everyone waits for the next one, the newcomer too (it gets it directly then).
        assert [to for to, m in effects if isinstance(m, wire.Roster)] == []
    [first_roster] = [m for to, m in first if to is None]
    assert relay.roster_due() == T0 + ROSTER_MIN_INTERVAL_S
    early = [m for _, m in opened(relay.tick(T0 + ROSTER_MIN_INTERVAL_S / 2))]
    assert not any(isinstance(m, wire.Roster) for m in early)
    # A Beat never announces a version nobody was sent (that would make all ask for it).
    beats = [m for m in early if isinstance(m, wire.Beat)]
    assert all(b.roster_version == first_roster.version for b in beats)
    published = opened(relay.tick(T0 + ROSTER_MIN_INTERVAL_S))
    assert [to for to, _ in published] == [None, b"r-1", b"r-2"]
    roster = published[0][1]
    assert isinstance(roster, wire.Roster)
    assert sorted(handles(roster)) == ["p0", "p1", "p2"]
    assert relay.roster_due() is None


@pytest.mark.parametrize(("size", "interval"), [(20, 0.05), (40, 0.08), (100, 0.5), (150, 1.0)])
def test_rosters_are_spaced_by_the_square_of_the_room_size(
    relay: BrokerRelay, size: int, interval: float
) -> None:
    """A roster costs each of the n clients O(n) to decode: n^2 for the room. A room of
    20 hears of a newcomer at the minimum interval, one of 100 twice a second at most, and
    none waits more than a second."""
    for i in range(size):
        join(relay, b"r-%d" % i, Identity.generate(), f"p{i}")
    assert relay.client_count() == size
    due = relay.roster_due()
    assert due is not None
    assert due - T0 == pytest.approx(interval)


def test_the_roster_is_encoded_once_per_version(relay: BrokerRelay, alice: Identity) -> None:
    join(relay, b"r-a", alice, "alice")
    sync = wire.encode(wire.Sync(roster_version=0))
    [first] = relay.receive(b"r-a", alice.curve_public, sync, T0)
    [again] = relay.receive(b"r-a", alice.curve_public, sync, T0)
    assert again.frames is first.frames  # the same encoding, not a second one
    join(relay, b"r-b", Identity.generate(), "bob", now=T0 + 1)
    [after] = relay.receive(b"r-a", alice.curve_public, sync, T0 + 1)
    roster = wire.decode(after.frames)[0]
    assert isinstance(roster, wire.Roster)
    assert sorted(handles(roster)) == ["alice", "bob"]
    assert roster.version == relay.roster_version


def test_a_broker_that_was_asleep_does_not_time_out_its_clients(
    relay: BrokerRelay, alice: Identity
) -> None:
    join(relay, b"r-a", alice, "alice")
    relay.tick(T0)
    # Nothing ran for 30 s (a closed lid): on waking up, alice gets a fresh chance.
    assert [type(m) for _, m in opened(relay.tick(T0 + 30))] == [wire.Beat]
    assert relay.client_count() == 1
    # Still silent after that: she times out as usual (her node probed, and gone).
    relay.tick(T0 + 30.5)
    assert relay.client_count() == 1
    [probe] = [e for e in relay.tick(T0 + 31.1) if isinstance(e, Probe)]
    assert next(type(m) for _, m in opened(relay.probed(probe.rid, False, T0 + 31.2))) is (
        wire.Roster
    )
    assert relay.client_count() == 0


def test_a_join_brings_the_next_beat_forward(relay: BrokerRelay) -> None:
    # A newcomer's SUB connects just after its Welcome and may miss the roster published
    # meanwhile: the early Beat tells it which version to ask for.
    join(relay, b"r-0", Identity.generate(), "p0")
    relay.tick(T0)  # the regular Beat
    assert relay.next_due() == T0 + BEAT_INTERVAL_S
    join(relay, b"r-1", Identity.generate(), "p1", now=T0 + 0.01)
    assert relay.next_due() <= T0 + 0.01 + JOIN_BEAT_S
    beats = [m for _, m in opened(relay.tick(T0 + 0.01 + JOIN_BEAT_S)) if isinstance(m, wire.Beat)]
    assert len(beats) == 1


# ---------------------------------------------------------------- hostile help queue


def test_ten_thousand_raised_hands_from_one_identity_leave_three(
    relay: BrokerRelay, alice: Identity, bob: Identity
) -> None:
    join(relay, b"r-m", bob, "mentor", mentor=True)
    join(relay, b"r-s", alice, "student")
    objects: list[int] = []
    for i in range(10_000):
        hand = wire.Hand(
            hand_id=f"{i:08x}",
            topic="t" * 200,
            anon=i % 2 == 0,  # anonymous hands count against the same identity
            eph_key=bytes([i % 251]) * 32,
            raised_at=float(i),
        )
        if i == 5_000:
            # The same identity on a new connection (a reconnect) shares the count.
            join(relay, b"r-s2", alice, "student")
        rid = b"r-s" if i < 5_000 else b"r-s2"
        effects = send(relay, rid, hand, now=T0 + i / 1_000)  # 10,000 in 10 s
        if i >= 3:
            # Within the identity's hand budget, a refusal; beyond it, nothing at all.
            assert [(to, type(m)) for to, m in opened(effects)] in ([(rid, wire.Refused)], [])
        if i in (1_000, 9_999):
            gc.collect()
            objects.append(len(gc.get_objects()))
    entries = relay._queue.snapshot().entries
    assert [e.hand_id for e in entries] == [f"{i:08x}" for i in range(3)]
    refused, dropped = relay.counters["queue_refused"], relay.counters["hand_budget"]
    assert refused + dropped == 9_997
    assert refused <= HANDS_BURST + 10 * HANDS_PER_S
    # Nothing is kept per refused hand (a kept one is a record and its topic, 9,000 of them
    # thousands of objects).
    assert objects[1] - objects[0] < 100


def _apply(keys: set[bytes], version: int, delta: wire.RosterDelta) -> set[bytes]:
    """The keys a client holds after applying ``delta`` to its copy (as room/peers does)."""
    assert delta.base <= version < delta.version
    return (keys - set(delta.left)) | {e.id_key for e in delta.changed}


def test_in_a_room_of_ten_a_join_is_published_as_a_delta_of_one_entry(
    relay: BrokerRelay,
) -> None:
    people = [Identity.generate() for _ in range(12)]
    for i in range(10):
        join(relay, b"r-%d" % i, people[i], f"p{i}")
    relay.tick(T0 + 1)  # the coalesced wave goes out
    sync = send(relay, b"r-0", wire.Sync(roster_version=-1), now=T0 + 1)
    [(_, held)] = opened(sync)
    assert isinstance(held, wire.Roster)
    keys, version = {e.id_key for e in held.peers}, held.version
    effects = join(relay, b"r-10", people[10], "p10", now=T0 + 3)
    [pub] = [e for e in effects if isinstance(e, Publish)]
    delta = wire.decode(pub.frames)[0]
    assert isinstance(delta, wire.RosterDelta)
    assert [e.handle for e in delta.changed] == ["p10"]
    assert delta.left == ()
    # O(N) for the room, not O(N^2): one entry (and the succession's head if it changed,
    # at most 9 keys), not the whole roster.
    assert len(delta.head) <= 9
    assert sum(map(len, pub.frames)) * 4 < sum(map(len, wire.encode(relay.roster())))
    keys, version = _apply(keys, version, delta), delta.version
    send(relay, b"r-3", wire.Goodbye(reason="bye"), now=T0 + 3.01)  # coalesced
    [pub] = [
        e for e in relay.tick(T0 + 4) if isinstance(e, Publish) and e.frames[0] == pub.frames[0]
    ]
    delta = wire.decode(pub.frames)[0]
    assert isinstance(delta, wire.RosterDelta)
    assert (delta.changed, delta.left) == ((), (people[3].key,))
    assert _apply(keys, version, delta) == {e.id_key for e in relay.roster().peers}


def test_a_lookup_answers_keys_and_handle_prefixes_with_the_count(relay: BrokerRelay) -> None:
    people = [Identity.generate() for _ in range(4)]
    for i, name in enumerate(("anna", "Andy", "bob", "carl")):
        join(relay, b"r-%d" % i, people[i], name)
    ask = wire.Lookup(prefix="AN", keys=(people[3].key,))
    [(to, found)] = opened(send(relay, b"r-2", ask, now=T0 + 1))
    assert to == b"r-2"
    assert isinstance(found, wire.Found)
    assert [e.handle for e in found.peers] == ["Andy", "anna", "carl"]
    assert (found.prefix, found.count) == ("AN", 4)
    [(_, none)] = opened(send(relay, b"r-2", wire.Lookup(), now=T0 + 1))
    assert none.peers == ()


# ---------------------------------------------------------------- budgets


def test_a_connection_speaks_for_one_identity(
    relay: BrokerRelay, alice: Identity, bob: Identity
) -> None:
    join(relay, b"r-a", alice, "alice")
    hello, _sig = signed_hello(bob, "bob")
    # Bob's Hello over Alice's connection (same transport key, as a rogue reusing it).
    bob_hello = replace(hello, curve_key=alice.curve_public)
    bob_sig = bob.sign(wire.signed_bytes(bob_hello))
    effects = relay.receive(b"r-a", alice.curve_public, wire.encode(bob_hello, bob_sig), T0)
    assert [(to, m.code) for to, m in opened(effects)] == [(b"r-a", "identity_bound")]
    assert relay.counters["hello_rebind"] == 1
    assert [p.handle for p in relay.roster().peers] == ["alice"]
    # The same identity again on its own connection: a changed Hello, welcome.
    assert any(isinstance(m, wire.Welcome) for _, m in opened(join(relay, b"r-a", alice, "al")))


def test_throwaway_identities_share_one_recipients_first_contact_budget(
    relay: BrokerRelay, alice: Identity
) -> None:
    join(relay, b"r-a", alice, "alice")
    friend = Identity.generate()
    join(relay, b"r-f", friend, "friend")
    msg, sig = _direct(friend, alice.key)
    assert send(relay, b"r-f", msg, sig) != []  # a first contact, within budget: a pair now
    passed = 0
    for i in range(300):  # 300 strangers in 1 s, each one request
        stranger = Identity.generate()
        now = T0 + i / 300
        join(relay, f"r-{i}".encode(), stranger, f"s{i}", now=now)
        msg, sig = _direct(stranger, alice.key)
        passed += bool(send(relay, f"r-{i}".encode(), msg, sig, now=now))
        # An established pair is not held up by the flood.
        msg, sig = _direct(friend, alice.key)
        assert send(relay, b"r-f", msg, sig, now=now) != []
    assert passed <= FIRST_CONTACTS_BURST + FIRST_CONTACTS_PER_S
    assert relay.counters["first_contact_budget"] == 300 - passed


def test_room_size_and_join_rate_are_bounded(relay: BrokerRelay) -> None:
    welcomed = 0
    for i in range(MAX_CLIENTS + 50):
        # Slower than the join rate (and no tick: nobody times out).
        effects = join(relay, f"r-{i}".encode(), Identity.generate(), f"n{i}", now=T0 + i / 10)
        welcomed += any(isinstance(m, wire.Welcome) for _, m in opened(effects))
    assert welcomed == MAX_CLIENTS
    assert relay.counters["room_full"] == 50
    fresh = BrokerRelay(
        key=b"k" * 32, handle="boss", room=ROOM, epoch=1, since=0.0, pub_port=1, verify=verify
    )
    welcomed = sum(
        any(
            isinstance(m, wire.Welcome)
            for _, m in opened(join(fresh, f"r-{i}".encode(), Identity.generate(), f"n{i}"))
        )
        for i in range(int(JOINS_BURST) + 20)
    )
    assert welcomed == JOINS_BURST  # all at one instant: the burst, then "busy"
    assert fresh.counters["join_budget"] == 20


def test_status_changes_and_shared_offers_have_a_budget(
    relay: BrokerRelay, alice: Identity
) -> None:
    join(relay, b"r-a", alice, "alice")
    for i in range(1_000):
        send(relay, b"r-a", wire.Heartbeat(t=0.0, status=f"busy:{i}"), now=T0 + i / 1_000)
    assert relay.counters["status_budget"] >= 1_000 - STATUS_CHANGES_BURST - 2
    offers = 0
    for i in range(1_000):
        pub = wire.Public(
            author=alice.key,
            handle="alice",
            room=ROOM,
            seq=i + 1,
            text="shares",
            sent_t=5.0,
            offer='{"id": "x"}',
        )
        effects = send(relay, b"r-a", pub, alice.sign(wire.signed_bytes(pub)), now=T0 + 1)
        offers += any(isinstance(e, Publish) for e in effects)
    assert offers == SHARED_OFFERS_BURST
    assert relay.counters["offer_budget"] == 1_000 - SHARED_OFFERS_BURST


# ---------------------------------------------------------------- anti-entropy


def carried(msg: wire.Public, sig: bytes, place: int) -> list[bytes]:
    return wire.carried(place, wire.envelope_of(wire.signed_bytes(msg), sig))


def test_places_count_on_from_the_highest_seen_and_a_carried_message_keeps_its_place(
    relay: BrokerRelay, alice: Identity, bob: Identity
) -> None:
    join(relay, b"r-a", alice, "alice")
    join(relay, b"r-b", bob, "bob")
    relay.clock = 10  # the node's history held place 10
    [(_, first), _ack] = opened(post(relay, b"r-a", alice, 1))
    assert first.place == 11
    # Bob carries a message of the other half of a partition: placed 14 there.
    pub, sig = signed_public(alice, 2)
    [(to, relayed)] = opened(relay.receive(b"r-b", bob.curve_public, carried(pub, sig, 14), T0))
    assert to is None
    assert relayed.place == 14
    assert relayed.bseq == first.bseq + 1
    assert relay.counters["carried"] == 1
    # Carried again, by anyone, at the same or a later place: nothing.
    assert relay.receive(b"r-a", alice.curve_public, carried(pub, sig, 14), T0) == []
    assert relay.receive(b"r-a", alice.curve_public, carried(pub, sig, 20), T0) == []
    # At a smaller place: relayed again, the smaller place wins.
    [(_, again)] = opened(relay.receive(b"r-a", alice.curve_public, carried(pub, sig, 12), T0))
    assert again.place == 12
    # The next fresh message counts on from above everything seen.
    [(_, nxt), _ack] = opened(post(relay, b"r-a", alice, 3))
    assert nxt.place == 15


def test_a_carried_message_with_a_bad_signature_is_dropped(
    relay: BrokerRelay, alice: Identity, bob: Identity
) -> None:
    join(relay, b"r-b", bob, "bob")
    pub, sig = signed_public(alice, 1)
    forged = dataclasses.replace(pub, text="x")
    assert relay.receive(b"r-b", bob.curve_public, carried(forged, sig, 3), T0) == []
    assert relay.counters["bad_signature"] == 1


def test_a_clients_have_and_want_go_to_the_node_and_raise_the_clock(
    relay: BrokerRelay, alice: Identity
) -> None:
    join(relay, b"r-a", alice, "alice")
    have = wire.Have(top=50, authors=(wire.SeqRanges(author=alice.key, ranges=(1, 3)),))
    assert relay.receive(b"r-a", alice.curve_public, wire.encode(have), T0) == [
        Reconcile(b"r-a", have)
    ]
    assert relay.clock == 50
    want = wire.Want(authors=(wire.SeqRanges(author=alice.key, ranges=(2, 2)),))
    assert relay.receive(b"r-a", alice.curve_public, wire.encode(want), T0) == [
        Reconcile(b"r-a", want)
    ]


def test_a_silent_client_whose_node_answers_is_busy_not_gone_until_busy_max(
    relay: BrokerRelay, alice: Identity
) -> None:
    join(relay, b"r-a", alice, "alice")
    relay.tick(T0)
    now = T0
    probes = 0
    while relay.client_count():
        now += BEAT_INTERVAL_S
        for eff in relay.tick(now):
            if isinstance(eff, Probe):
                probes += 1
                assert relay.probed(eff.rid, True, now + 0.01) == []  # a starved node
        assert now < T0 + BUSY_MAX_S + CLIENT_TIMEOUT_S * 2, "kept for ever"
    assert now > T0 + BUSY_MAX_S  # kept while busy, then gone all the same
    assert probes >= BUSY_MAX_S // (CLIENT_TIMEOUT_S + BEAT_INTERVAL_S) - 1
    assert relay.counters["busy_kept"] == probes


def test_a_probe_that_never_comes_back_is_gone(relay: BrokerRelay, alice: Identity) -> None:
    join(relay, b"r-a", alice, "alice")
    relay.tick(T0)
    t = T0
    probes: list[Probe] = []
    while not probes:
        t += BEAT_INTERVAL_S
        probes = [e for e in relay.tick(t) if isinstance(e, Probe)]
    probed_at = t
    while t < probed_at + PROBE_WAIT_S - BEAT_INTERVAL_S:
        t += BEAT_INTERVAL_S
        relay.tick(t)
        assert relay.client_count() == 1
    relay.tick(probed_at + PROBE_WAIT_S + 0.1)
    assert relay.client_count() == 0
    assert relay.probed(b"r-a", True, t + 2) == []  # too late: nothing happens
