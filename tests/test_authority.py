"""Mentor certificates, room codes and claims (lanchat.core.authority), and what the relay
does with them: only a Hello whose certificate holds is a mentor's."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lanchat.core import authority as auth
from lanchat.core import wire
from lanchat.core.relay import BrokerRelay
from lanchat.identity import Identity, verify

ROOM = "workshop"
NOW = 1_800_000_000.0


def issue(authority: Identity, mentor: Identity, handle: str = "mia", **kw: object) -> bytes:
    fields: dict[str, object] = {
        "room": ROOM,
        "handle": handle,
        "key": mentor.key,
        "expires": int(NOW) + 3600,
        **kw,
    }
    return auth.MentorCert.issue(authority.sign, authority.key, **fields).encode()  # type: ignore[arg-type]


def check(data: bytes, mentor: Identity, handle: str = "mia", **kw: object) -> bool:
    fields: dict[str, object] = {"room": ROOM, "handle": handle, "key": mentor.key, "now": NOW}
    fields.update(kw)
    return auth.check_cert(data, verify=verify, **fields) is not None  # type: ignore[arg-type]


def test_a_certificate_holds_for_its_room_handle_key_and_time_only() -> None:
    authority, mia, eve = Identity.generate(), Identity.generate(), Identity.generate()
    cert = issue(authority, mia)
    assert len(cert) == auth.CERT_BYTES == wire.CERT_BYTES
    assert check(cert, mia)
    assert check(cert, mia, handle="MIA")  # handles are held case-insensitively
    assert not check(cert, eve)  # another key
    assert not check(cert, mia, handle="mio")
    assert not check(cert, mia, room="other")
    assert not check(cert, mia, now=NOW + 3600)  # expired
    assert auth.MentorCert.decode(cert).authority == authority.key


def test_a_certificate_signed_by_anyone_else_or_altered_does_not_hold() -> None:
    authority, mia = Identity.generate(), Identity.generate()
    cert = bytearray(issue(authority, mia))
    for i in (0, 32, 39, 40, len(cert) - 1):  # authority, expiry, signature
        altered = bytearray(cert)
        altered[i] ^= 1
        assert not check(bytes(altered), mia)
    # A self-made authority makes a valid certificate, of *another* authority: who the room's
    # authority is, is the pin's question (lanchat.room.trust), not the certificate's.
    rogue = Identity.generate()
    own = auth.check_cert(
        issue(rogue, mia), room=ROOM, handle="mia", key=mia.key, now=NOW, verify=verify
    )
    assert own is not None
    assert own.authority == rogue.key != authority.key
    assert not check(b"", mia)
    assert not check(b"x" * 10, mia)


def test_a_room_code_has_sixty_bits_and_forgives_how_it_is_typed() -> None:
    key = Identity.generate().key
    code = auth.room_code(key)
    assert re.fullmatch(r"[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}", code)
    assert auth.CODE_BITS >= 50
    assert auth.code_matches(key, code)
    assert auth.code_matches(key, code.lower().replace("-", " "))
    typed = code.replace("0", "O").replace("1", "l")
    assert auth.code_matches(key, typed)
    assert not auth.code_matches(Identity.generate().key, code)
    assert auth.normalise_code("too short") is None
    assert auth.normalise_code("UUUU-UUUU-UUUU") is None  # U is not in the alphabet


@given(st.binary(min_size=32, max_size=32))
def test_every_code_normalises_to_itself(key: bytes) -> None:
    code = auth.room_code(key)
    assert auth.normalise_code(code) == code


def test_the_authority_pinned_on_first_sight_is_the_code_s_then_the_broker_s() -> None:
    a, b, c = (Identity.generate().key for _ in range(3))
    assert auth.choose_authority([a, b], broker=b, code=None) == b
    assert auth.choose_authority([a, b], broker=None, code=None) == a
    assert auth.choose_authority([a, b], broker=b, code=auth.room_code(a)) == a
    assert auth.choose_authority([a, b], broker=b, code=auth.room_code(c)) is None
    assert auth.choose_authority([], broker=None, code=None) is None


def test_a_claim_is_bound_to_the_hand_and_its_key() -> None:
    mia = Identity.generate()
    payload = auth.claim_payload(ROOM, "00aa11bb", b"e" * 32)
    sig = mia.sign(payload)
    assert verify(mia.key, payload, sig)
    for other in (
        auth.claim_payload(ROOM, "00aa11bc", b"e" * 32),
        auth.claim_payload(ROOM, "00aa11bb", b"f" * 32),
        auth.claim_payload("other", "00aa11bb", b"e" * 32),
    ):
        assert not verify(mia.key, other, sig)


# ---------------------------------------------------------------- the relay


def _hello(ident: Identity, handle: str, cert: bytes = b"", mentor: bool = True) -> list[bytes]:
    hello = wire.Hello(
        handle=handle,
        room=ROOM,
        mentor=mentor,
        id_key=ident.key,
        curve_key=ident.curve_public,
        started_at=1.0,
        address="10.0.0.2",
        router_port=47001,
        info_port=47100,
        cert=cert,
    )
    return wire.encode(hello, ident.sign(wire.signed_bytes(hello)))


@pytest.fixture
def authority() -> Identity:
    return Identity.generate()


@pytest.fixture
def relay(authority: Identity) -> BrokerRelay:
    def mentor_check(hello: wire.Hello) -> bool:
        found = auth.check_cert(
            hello.cert,
            room=ROOM,
            handle=hello.handle,
            key=hello.id_key,
            now=NOW,
            verify=verify,
        )
        return found is not None and found.authority == authority.key

    return BrokerRelay(
        key=b"k" * 32,
        handle="boss",
        room=ROOM,
        epoch=1,
        since=1.0,
        pub_port=47002,
        verify=verify,
        mentor_check=mentor_check,
    )


def kinds(effects: list) -> list[tuple[str, object]]:  # type: ignore[type-arg]
    out = []
    for eff in effects:
        msg, _ = wire.decode(eff.frames)
        out.append((type(msg).__name__, getattr(msg, "code", None)))
    return out


def test_only_a_certified_mentor_gets_the_queue_and_ranks_as_one(
    relay: BrokerRelay, authority: Identity
) -> None:
    mia, zed, stu = Identity.generate(), Identity.generate(), Identity.generate()
    got = kinds(
        relay.receive(b"r-m", mia.curve_public, _hello(mia, "mia", issue(authority, mia)), NOW)
    )
    assert ("Queue", None) in got
    rogue_cert = issue(Identity.generate(), zed, handle="zed")
    got = kinds(relay.receive(b"r-z", zed.curve_public, _hello(zed, "zed", rogue_cert), NOW))
    assert ("Queue", None) not in got
    assert ("Refused", "mentor_unverified") in got
    relay.receive(b"r-s", stu.curve_public, _hello(stu, "stu", mentor=False), NOW)
    # Succession: mentors by certificate only (zed's claim counts for nothing).
    assert [p.handle for p in relay.roster().peers][:1] == ["mia"]
    hand = wire.Hand(hand_id="00aa11bb", topic="t", eph_key=b"e" * 32, raised_at=1.0)
    effects = relay.receive(b"r-s", b"", wire.encode(hand), NOW)
    assert {eff.rid for eff in effects if hasattr(eff, "rid")} == {b"r-m", b"r-s"}  # type: ignore[union-attr]
    refused = kinds(relay.receive(b"r-z", b"", wire.encode(wire.Claim(hand_id="00aa11bb")), NOW))
    assert refused == [("Refused", "queue")]
    payload = auth.claim_payload(ROOM, "00aa11bb", b"e" * 32)
    claim = wire.Claim(hand_id="00aa11bb", sig=mia.sign(payload))
    effects = relay.receive(b"r-m", b"", wire.encode(claim), NOW)
    statuses = [
        m for m, _ in (wire.decode(e.frames) for e in effects) if isinstance(m, wire.HandStatus)
    ]
    assert [(s.state, s.mentor_key, s.claim_sig) for s in statuses] == [
        ("claimed", mia.key, claim.sig)
    ]


def test_a_grant_is_routed_to_its_recipient_only(relay: BrokerRelay, authority: Identity) -> None:
    mia, max_ = Identity.generate(), Identity.generate()
    relay.receive(b"r-m", mia.curve_public, _hello(mia, "mia", issue(authority, mia)), NOW)
    relay.receive(b"r-x", max_.curve_public, _hello(max_, "max"), NOW)
    grant = wire.Grant(sender=mia.key, recipient=max_.key, box=b"sealed")
    frames = wire.encode(grant, mia.sign(wire.signed_bytes(grant)))
    effects = relay.receive(b"r-m", b"", frames, NOW)
    assert [(getattr(e, "rid", None), e.frames) for e in effects] == [(b"r-x", frames)]
    forged = wire.Grant(sender=max_.key, recipient=mia.key, box=b"sealed")
    assert relay.receive(b"r-m", b"", wire.encode(forged, mia.sign(b"x")), NOW) == []


def test_the_tui_shows_the_room_code_and_new_mentors() -> None:
    from lanchat.ui.commands import Command, InputContext, parse_input
    from lanchat.ui.model import ViewModel

    parsed = parse_input("/mentor add max", InputContext(conversation=None))
    assert parsed == Command({"cmd": "add_mentor", "handle": "max"})
    model = ViewModel("mia", ROOM, mentor=True)
    model.apply({"ev": "authority", "t": 1.0, "fingerprint": "ab", "code": "7KQ2-M9XD-R4TB"})
    model.apply({"ev": "peer_up", "t": 2.0, "handle": "max", "mentor": False})
    model.apply({"ev": "mentor_added", "t": 3.0, "handle": "max"})
    assert model._peer("max").mentor
    text = " ".join(line.text for line in model.current_conversation.lines)
    assert "7KQ2-M9XD-R4TB" in text
    assert "max is now a mentor" in text
