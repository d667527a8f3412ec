"""Wire codec: round trips, canonical signed bytes, and strict decoding (DecodeError only)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lanchat.core import wire
from lanchat.core.wire import (
    MAX_FRAMES_BYTES,
    MAX_TEXT_CHARS,
    PROTOCOL_VERSION,
    Ack,
    Beat,
    DecodeError,
    Direct,
    Goodbye,
    Grant,
    Heartbeat,
    Hello,
    Kind,
    PeerEntry,
    Private,
    PrivateAck,
    Public,
    Redirect,
    Refused,
    Relay,
    Resend,
    Roster,
    Sync,
    Welcome,
    decode,
    decode_inner,
    encode,
    encode_inner,
    hello_of,
    signed_bytes,
)

KEY_A = bytes(range(32))
KEY_B = bytes(range(32, 64))
SIG = bytes(range(64))


def _hello() -> Hello:
    return Hello(
        handle="alice",
        room="lobby",
        mentor=True,
        id_key=KEY_A,
        curve_key=KEY_B,
        started_at=1700000000.125,
        priority=3,
        address="10.0.0.7",
        router_port=47001,
        info_port=47100,
    )


def _public(text: str = "héllo, wörld ✓ 🙂") -> Public:
    return Public(author=KEY_A, handle="alice", room="lobby", seq=7, text=text, sent_t=12.5)


# One filled-in example of every outer kind, with the signature it travels with.
EXAMPLES: list[tuple[Any, bytes]] = [
    (_hello(), SIG),
    (
        Welcome(epoch=2, broker_handle="bob", broker_key=KEY_B, pub_port=47002, bseq=9, since=3.5),
        b"",
    ),
    (Refused(code="handle_taken", message="choose another"), b""),
    (Heartbeat(t=1.25, status="away"), b""),
    (Beat(epoch=2, bseq=10, roster_version=4), b""),
    (
        Roster(
            epoch=2,
            version=5,
            broker_key=KEY_B,
            peers=(_hello().entry(SIG), _hello().entry(SIG, status="away")),
        ),
        b"",
    ),
    (
        wire.RosterDelta(
            epoch=2,
            base=5,
            version=7,
            broker_key=KEY_B,
            changed=(_hello().entry(SIG),),
            left=(KEY_A,),
        ),
        b"",
    ),
    (wire.Lookup(prefix="an", keys=(KEY_A,)), b""),
    (wire.Found(prefix="an", peers=(_hello().entry(SIG),), count=900), b""),
    (_public(), SIG),
    (Relay(epoch=2, bseq=11, inner=_public(), inner_sig=SIG, place=40), b""),
    (Ack(seq=7), b""),
    (wire.Have(top=12, authors=(wire.SeqRanges(author=KEY_A, ranges=(1, 4, 6, 9)),)), b""),
    (wire.Want(authors=(wire.SeqRanges(author=KEY_B, ranges=(5, 5)),)), b""),
    (Resend(epoch=2, first=3, last=9), b""),
    (Goodbye(reason="bye"), b""),
    (Direct(sender=KEY_A, recipient=KEY_B, box=b"\x00sealed\xff" * 10), SIG),
    (Grant(sender=KEY_A, recipient=KEY_B, box=b"\x00granted\xff" * 10), SIG),
    (
        Redirect(broker_key=KEY_A, curve_key=KEY_B, address="10.0.0.9", router_port=1, epoch=4),
        b"",
    ),
    (Sync(roster_version=-1), b""),
    (
        wire.Hand(
            hand_id="0123456789abcdef",
            topic="loops",
            anon=True,
            eph_key=KEY_B,
            raised_at=3.0,
        ),
        b"",
    ),
    (wire.Claim(hand_id="0123456789abcdef"), b""),
    (wire.HandDone(hand_id="0123456789abcdef"), b""),
    (
        wire.Queue(
            version=3,
            entries=(
                wire.QueueEntry(
                    hand_id="0123456789abcdef",
                    label="anon-0123",
                    topic="loops",
                    anon=True,
                    raised_at=3.0,
                    eph_key=KEY_B,
                    claimed_by="mentor",
                    claimed_key=KEY_A,
                ),
            ),
        ),
        b"",
    ),
    (
        wire.HandStatus(
            hand_id="0123456789abcdef", state="claimed", position=0, mentor="m", mentor_key=KEY_A
        ),
        b"",
    ),
    (wire.HelpMsg(hand_id="0123456789abcdef", to_mentor=True, box=b"sealed"), b""),
    (
        wire.PublicBatch(
            author=KEY_A, handle="alice", room="lobby", seq=8, texts=("a", "b"), sent_t=1.0
        ),
        SIG,
    ),
]


def test_a_batch_unpacks_into_ordinary_messages_and_relays() -> None:
    batch = wire.PublicBatch(
        author=KEY_A, handle="alice", room="lobby", seq=8, texts=("a", "b"), sent_t=1.0
    )
    assert batch.texts_by_id() == [
        (f"{KEY_A.hex()[:16]}:8", "a"),
        (f"{KEY_A.hex()[:16]}:9", "b"),
    ]
    # The same ids as the texts would have had, sent one by one.
    single = wire.Public(author=KEY_A, handle="alice", room="lobby", seq=9, text="b")
    assert single.texts_by_id() == [batch.texts_by_id()[1]]
    relay = Relay(epoch=1, bseq=2, inner=batch, inner_sig=SIG)
    assert decode(encode(relay))[0] == relay


@pytest.mark.parametrize(
    "texts", [(), tuple("x" for _ in range(wire.MAX_BATCH + 1)), ("y" * 4000,) * 9]
)
def test_empty_or_oversized_batches_are_refused(texts: tuple[str, ...]) -> None:
    batch = wire.PublicBatch(author=KEY_A, handle="a", room="r", seq=1, texts=texts, sent_t=1.0)
    with pytest.raises(DecodeError):
        decode(encode(batch, SIG))


def test_optional_key_fields_take_a_key_or_nothing() -> None:
    frames = encode(wire.HandStatus(hand_id="ab", state="waiting", mentor_key=b""))
    assert decode(frames)[0].mentor_key == b""  # type: ignore[union-attr]
    body = json.loads(frames[1])
    body["mentor_key"] = "AAAA"  # three bytes: neither empty nor a key
    with pytest.raises(DecodeError):
        decode([frames[0], json.dumps(body).encode(), b""])


def _ids(example: tuple[Any, bytes]) -> str:
    return type(example[0]).__name__


def test_examples_cover_every_outer_kind() -> None:
    inner = {Kind.PRIVATE, Kind.PRIVATE_ACK, Kind.SIGNAL}
    assert {type(m).KIND for m, _ in EXAMPLES} == set(Kind) - inner


@pytest.mark.parametrize("example", EXAMPLES, ids=_ids)
def test_every_kind_round_trips(example: tuple[Any, bytes]) -> None:
    msg, sig = example
    frames = encode(msg, sig)
    assert decode(frames) == (msg, sig)
    assert frames[0] == wire.MAGIC + bytes((PROTOCOL_VERSION, int(msg.KIND)))


@pytest.mark.parametrize("example", EXAMPLES, ids=_ids)
def test_frames_are_three_except_relay_six(example: tuple[Any, bytes]) -> None:
    msg, sig = example
    assert len(encode(msg, sig)) == (6 if isinstance(msg, Relay) else 3)


INNER_EXAMPLES: list[Any] = [
    Private(item="text", cseq=4, base=2, handle="bob", text="hi ✓", sent_t=1.5),
    PrivateAck(upto=9),
    wire.Signal(what="read", value=3),
]


def _generated_twin(cls: type[Any]) -> type[Any]:
    """The class plain ``@dataclass(frozen=True, slots=True)`` would make, to compare with."""
    fields = [(f.name, f.type, dataclasses.field(default=None)) for f in dataclasses.fields(cls)]
    twin = dataclasses.make_dataclass(cls.__name__, fields, frozen=True, slots=True)
    twin.__qualname__ = cls.__qualname__
    return twin


def _as_twin(msg: Any) -> Any:
    twin = _generated_twin(type(msg))
    return twin(**{f.name: getattr(msg, f.name) for f in dataclasses.fields(msg)})


@pytest.mark.parametrize(
    "msg", [m for m, _ in EXAMPLES] + INNER_EXAMPLES, ids=lambda m: type(m).__name__
)
def test_eq_hash_and_repr_are_those_dataclass_would_generate(msg: Any) -> None:
    twin = _as_twin(msg)
    assert repr(msg) == repr(twin)
    assert hash(msg) == hash(twin)
    copy = dataclasses.replace(msg)
    assert copy is not msg
    assert (copy == msg, copy != msg) == (True, False)
    assert hash(copy) == hash(msg)
    first = dataclasses.fields(msg)[0]
    changed = dataclasses.replace(msg, **{first.name: _other_value(getattr(msg, first.name))})
    assert (changed == msg, changed != msg) == (False, True)
    # Another class with the same fields is never equal, as with a generated __eq__.
    assert msg.__eq__(twin) is NotImplemented
    assert msg != twin
    with pytest.raises(dataclasses.FrozenInstanceError):
        msg.__setattr__(first.name, getattr(msg, first.name))
    assert not hasattr(msg, "__dict__")


def _other_value(value: Any) -> Any:
    """A value of the same type that differs from ``value``."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, tuple):
        return (*value, *value)
    assert isinstance(value, bytes)
    return value + b"x"


def test_hello_and_its_roster_entry_are_never_equal() -> None:
    # Same field values where they overlap, different classes: as with generated __eq__.
    entry = _hello().entry(SIG)
    assert hello_of(entry) == _hello()
    assert entry != _hello()
    assert {_hello(), _hello(), hello_of(entry)} == {_hello()}


def test_relay_envelope_carries_the_public_frames_unchanged() -> None:
    pub = _public()
    frames = encode(Relay(epoch=3, bseq=42, inner=pub, inner_sig=SIG, place=7))
    assert frames[0] == b"LC\x01\x08"
    assert json.loads(frames[1]) == {"epoch": 3, "bseq": 42, "place": 7}
    assert frames[2] == b""
    assert frames[3:] == encode(pub, SIG)


def test_a_stored_envelope_is_carried_as_a_relay_of_epoch_0_without_decoding() -> None:
    pub = _public()
    envelope = wire.envelope_of(wire.signed_bytes(pub), SIG)
    assert wire.envelope_frames(envelope) == encode(pub, SIG)
    relay, _ = decode(wire.carried(9, envelope))
    assert relay == Relay(epoch=0, bseq=0, inner=pub, inner_sig=SIG, place=9)


@pytest.mark.parametrize(
    "ranges", [(), (1,), (3, 2), (0, 4), (1, 4, 3, 6), tuple(range(1, 2 * wire.MAX_RANGES + 3))]
)
def test_seq_ranges_are_positive_ascending_pairs(ranges: tuple[int, ...]) -> None:
    want = wire.Want(authors=(wire.SeqRanges(author=KEY_A, ranges=ranges),))
    with pytest.raises(DecodeError):
        decode(encode(want))


def test_hello_entry_and_hello_of_are_inverse() -> None:
    entry = _hello().entry(SIG, status="busy")
    assert entry.hello_sig == SIG
    assert entry.status == "busy"
    assert hello_of(entry) == _hello()


def test_body_is_compact_sorted_json_with_unpadded_base64url() -> None:
    frames = encode(Direct(sender=KEY_A, recipient=KEY_B, box=b"\xfb\xff"), SIG)
    body = frames[1].decode()
    assert body == json.dumps(json.loads(body), separators=(",", ":"), sort_keys=True)
    assert '"box":"-_8"' in body  # urlsafe alphabet, no "=" padding


def test_private_items_round_trip_inside() -> None:
    for item in ("request", "accept", "reject", "text"):
        msg = Private(item=item, cseq=4, base=2, handle="bob", text="hi ✓", sent_t=1.5)
        assert decode_inner(encode_inner(msg)) == msg
    assert decode_inner(encode_inner(PrivateAck(upto=9))) == PrivateAck(upto=9)


def test_decode_inner_rejects_unknown_item_outer_kind_and_oversize() -> None:
    with pytest.raises(DecodeError, match="unknown private item"):
        decode_inner(encode_inner(Private(item="steal")))
    with pytest.raises(DecodeError, match="not allowed here"):
        decode_inner(signed_bytes(Ack(seq=1)))
    with pytest.raises(DecodeError, match="bad magic"):
        decode_inner(b"XX")
    with pytest.raises(DecodeError, match="too large"):
        decode_inner(b"x" * (MAX_FRAMES_BYTES + 1))


# ---------------------------------------------------------------- encode refuses


def test_encode_refuses_inner_only_kinds() -> None:
    with pytest.raises(ValueError, match="only sealed inside a Direct"):
        encode(Private(item="text"))
    with pytest.raises(ValueError, match="only sealed inside a Direct"):
        encode(PrivateAck(upto=1))


def test_encode_refuses_wrong_signature_presence() -> None:
    with pytest.raises(ValueError, match="needs a signature"):
        encode(_public())
    with pytest.raises(ValueError, match="needs a signature"):
        encode(_public(), SIG[:63])
    with pytest.raises(ValueError, match="needs no signature"):
        encode(Ack(seq=1), SIG)
    with pytest.raises(ValueError, match="needs a signature"):
        encode(Relay(inner=_public(), inner_sig=b""))


# ---------------------------------------------------------------- signed bytes


def test_signed_bytes_is_header_plus_canonical_body() -> None:
    pub = _public()
    frames = encode(pub, SIG)
    assert signed_bytes(pub) == frames[0] + frames[1]


def test_signed_bytes_changes_with_every_field() -> None:
    pub = _public()
    changed = {
        "author": KEY_B,
        "handle": "mallory",
        "room": "other",
        "seq": 8,
        "text": "hello",
        "sent_t": 12.75,
        "offer": '{"other": "place"}',
    }
    assert set(changed) == {f.name for f in dataclasses.fields(Public)}
    for name, value in changed.items():
        assert signed_bytes(dataclasses.replace(pub, **{name: value})) != signed_bytes(pub), name


def test_signed_bytes_ignores_how_the_peer_formatted_its_json() -> None:
    pub = _public()
    frames = encode(pub, SIG)
    spaced = json.dumps(json.loads(frames[1]), indent=2, ensure_ascii=True).encode()
    msg, _ = decode([frames[0], spaced, SIG])
    assert msg == pub
    assert signed_bytes(msg) == signed_bytes(pub)


# ---------------------------------------------------------------- strict decoding


_DROP = object()


def _frames_with_body(msg: Any, sig: bytes, **changes: Any) -> list[bytes]:
    """``msg``'s frames with body fields replaced or added (``changes``), or removed (_DROP)."""
    frames = encode(msg, sig)
    body = json.loads(frames[1])
    for name, value in changes.items():
        if value is _DROP:
            del body[name]
        else:
            body[name] = value
    return [frames[0], json.dumps(body).encode(), frames[2]]


def _with_raw_body(msg: Any, sig: bytes, body: bytes) -> list[bytes]:
    frames = encode(msg, sig)
    return [frames[0], body, frames[2]]


BAD_FRAMES: dict[str, list[bytes]] = {
    "no frames": [],
    "one frame": [b"LC\x01\x09"],
    "two frames": encode(Ack(seq=1))[:2],
    "four frames": [*encode(Ack(seq=1)), b""],
    "six non-relay frames": encode(Ack(seq=1)) * 2,
    "bad magic": [b"XX\x01\x09", b'{"seq":1}', b""],
    "short header": [b"LC\x01", b'{"seq":1}', b""],
    "long header": [b"LC\x01\x09\x00", b'{"seq":1}', b""],
    "unknown kind": [b"LC\x01\x63", b'{"seq":1}', b""],
    "inner kind outside": [b"LC\x01\x15", b'{"upto":1}', b""],
    "relay in three frames": [b"LC\x01\x08", b'{"epoch":1,"bseq":1}', b""],
    "missing field": _frames_with_body(Ack(seq=1), b"", seq=_DROP),
    "unknown field": _frames_with_body(Ack(seq=1), b"", extra=1),
    "int as string": _frames_with_body(Ack(seq=1), b"", seq="1"),
    "int as float": _frames_with_body(Ack(seq=1), b"", seq=1.0),
    "bool as int": _frames_with_body(Ack(seq=1), b"", seq=True),
    "int as bool": _frames_with_body(_hello(), SIG, mentor=1),
    "bool as float": _frames_with_body(Heartbeat(), b"", t=False),
    "int out of range": _frames_with_body(Ack(seq=1), b"", seq=2**63),
    "string as list": _frames_with_body(Goodbye(), b"", reason=["x"]),
    "null field": _with_raw_body(Goodbye(), b"", b'{"reason":null}'),
    "body is a list": _with_raw_body(Ack(seq=1), b"", b"[1]"),
    "body is empty": _with_raw_body(Ack(seq=1), b"", b""),
    "NaN": _with_raw_body(Heartbeat(), b"", b'{"status":"","t":NaN}'),
    "Infinity": _with_raw_body(Heartbeat(), b"", b'{"status":"","t":Infinity}'),
    "-Infinity": _with_raw_body(Heartbeat(), b"", b'{"status":"","t":-Infinity}'),
    "overflowing float": _with_raw_body(Heartbeat(), b"", b'{"status":"","t":1e999}'),
    "non-UTF-8 body": _with_raw_body(Goodbye(), b"", b'{"reason":"\xff"}'),
    "deeply nested": _with_raw_body(Goodbye(), b"", b'{"reason":' + b"[" * 100_000 + b"}"),
    "nested peers": _with_raw_body(
        Roster(), b"", b'{"epoch":0,"version":0,"broker_key":"","peers":' + b"[" * 50_000
    ),
    "text too long": encode(_public("x" * (MAX_TEXT_CHARS + 1)), SIG),
    "handle too long": encode(dataclasses.replace(_hello(), handle="a" * 33), SIG),
    "key too short": encode(dataclasses.replace(_public(), author=KEY_A[:31]), SIG),
    "key too long": encode(dataclasses.replace(_public(), author=KEY_A + b"\x00"), SIG),
    "key not base64": _frames_with_body(_public(), SIG, author="!" * 43),
    "key not ascii": _frames_with_body(_public(), SIG, author="ÄÄÄÄ"),
    "base64 bad length": _frames_with_body(_public(), SIG, author="A"),
    "box too long": encode(Direct(sender=KEY_A, recipient=KEY_B, box=b"x" * 65537), SIG),
    "signed without sig": [*encode(_public(), SIG)[:2], b""],
    "signed with short sig": [*encode(_public(), SIG)[:2], SIG[:63]],
    "unsigned with sig": [*encode(Ack(seq=1))[:2], SIG],
    "peer entry wrong type": _frames_with_body(Roster(broker_key=KEY_B), b"", peers=[1]),
    "peer entry bad sig len": _frames_with_body(
        Roster(broker_key=KEY_B),
        b"",
        peers=[{**json.loads(encode(_hello(), SIG)[1]), "hello_sig": "", "status": ""}],
    ),
    "peers not a list": _frames_with_body(Roster(broker_key=KEY_B), b"", peers={}),
    "oversized": [b"LC\x01\x0b", b'{"reason":"' + b"x" * MAX_FRAMES_BYTES + b'"}', b""],
}


@pytest.mark.parametrize("frames", BAD_FRAMES.values(), ids=BAD_FRAMES.keys())
def test_malformed_frames_raise_decode_error(frames: list[bytes]) -> None:
    with pytest.raises(DecodeError):
        decode(frames)


def test_text_at_the_limit_is_accepted() -> None:
    pub = _public("x" * MAX_TEXT_CHARS)
    assert decode(encode(pub, SIG))[0] == pub


def test_other_protocol_version_is_named_in_the_error() -> None:
    frames = encode(Ack(seq=1))
    frames[0] = b"LC\x02\x09"
    with pytest.raises(DecodeError, match=r"protocol version 2 .*speaks 1"):
        decode(frames)


def test_oversize_is_checked_over_all_frames_together() -> None:
    third = MAX_FRAMES_BYTES // 3 + 1
    with pytest.raises(DecodeError, match="larger than"):
        decode([b"a" * third, b"b" * third, b"c" * third])


def test_non_bytes_frames_raise_decode_error() -> None:
    with pytest.raises(DecodeError):
        decode([b"LC\x01\x09", "text", b""])  # type: ignore[list-item]


def _relay_frames() -> list[bytes]:
    return encode(Relay(epoch=1, bseq=2, inner=_public(), inner_sig=SIG))


BAD_RELAYS: dict[str, list[bytes]] = {
    "signed envelope": [*_relay_frames()[:2], SIG, *_relay_frames()[3:]],
    "extra meta field": [_relay_frames()[0], b'{"epoch":1,"bseq":2,"x":0}', *_relay_frames()[2:]],
    "missing meta field": [_relay_frames()[0], b'{"epoch":1}', *_relay_frames()[2:]],
    "meta not object": [_relay_frames()[0], b"[1,2]", *_relay_frames()[2:]],
    "bool bseq": [_relay_frames()[0], b'{"epoch":1,"bseq":true}', *_relay_frames()[2:]],
    "inner not public": [*_relay_frames()[:3], *encode(Ack(seq=1))],
    "inner unsigned": [*_relay_frames()[:5], b""],
    "inner relay": [*_relay_frames()[:3], *_relay_frames()[:3]],
    "non-UTF-8 meta": [_relay_frames()[0], b"\xff", *_relay_frames()[2:]],
}


@pytest.mark.parametrize("frames", BAD_RELAYS.values(), ids=BAD_RELAYS.keys())
def test_malformed_relays_raise_decode_error(frames: list[bytes]) -> None:
    with pytest.raises(DecodeError):
        decode(frames)


def test_relay_header_with_trailing_bytes_is_rejected() -> None:
    frames = _relay_frames()
    frames[0] += b"junk"
    with pytest.raises(DecodeError):
        decode(frames)


@pytest.mark.parametrize(
    "text",
    [
        wire._b64(KEY_A) + "=",
        wire._b64(b"\xfb" + KEY_A[1:]).replace("-", "+"),
        wire._b64(KEY_A)[:-1] + "9",  # "8" with a nonzero padding bit: the same 32 bytes
    ],
)
def test_non_canonical_base64_is_rejected(text: str) -> None:
    with pytest.raises(DecodeError):
        decode(_frames_with_body(_public(), SIG, author=text))


def test_huge_integer_in_a_float_field_raises_decode_error() -> None:
    frames = _with_raw_body(Heartbeat(), b"", b'{"status":"","t":1' + b"0" * 400 + b"}")
    with pytest.raises(DecodeError):
        decode(frames)


def test_lone_surrogate_in_a_string_raises_decode_error() -> None:
    frames = encode(_public(), SIG)
    frames[1] = frames[1].replace(b'"text":"', b'"text":"\\ud800')
    with pytest.raises(DecodeError):
        decode(frames)


# ---------------------------------------------------------------- properties

keys = st.binary(min_size=32, max_size=32)
sigs = st.binary(min_size=64, max_size=64)
ints = st.integers(min_value=-(2**63), max_value=2**63 - 1)
floats = st.floats(allow_nan=False, allow_infinity=False)
flags = st.booleans()


def texts(max_size: int) -> st.SearchStrategy[str]:
    return st.text(max_size=max_size)


def _hello_fields() -> dict[str, st.SearchStrategy[Any]]:
    return {
        "handle": texts(32),
        "room": texts(32),
        "mentor": flags,
        "id_key": keys,
        "curve_key": keys,
        "started_at": floats,
        "priority": ints,
        "address": texts(64),
        "router_port": ints,
        "info_port": ints,
    }


hellos = st.builds(Hello, **_hello_fields())
entries = st.builds(PeerEntry, **_hello_fields(), hello_sig=sigs, status=texts(64))
publics = st.builds(
    Public,
    author=keys,
    handle=texts(32),
    room=texts(32),
    seq=ints,
    text=texts(MAX_TEXT_CHARS),
    sent_t=floats,
)

signed_messages = st.one_of(
    st.tuples(hellos, sigs),
    st.tuples(publics, sigs),
    st.tuples(
        st.builds(Direct, sender=keys, recipient=keys, box=st.binary(max_size=512)),
        sigs,
    ),
)
unsigned_messages = st.one_of(
    st.builds(
        Welcome,
        epoch=ints,
        broker_handle=texts(32),
        broker_key=keys,
        pub_port=ints,
        bseq=ints,
        since=floats,
    ),
    st.builds(Refused, code=texts(64), message=texts(500)),
    st.builds(Heartbeat, t=floats, status=texts(64)),
    st.builds(Beat, epoch=ints, bseq=ints, roster_version=ints),
    st.builds(
        Roster,
        epoch=ints,
        version=ints,
        broker_key=keys,
        peers=st.lists(entries, max_size=3).map(tuple),
    ),
    st.builds(Relay, epoch=ints, bseq=ints, inner=publics, inner_sig=sigs),
    st.builds(Ack, seq=ints),
    st.builds(Resend, epoch=ints, first=ints, last=ints),
    st.builds(Goodbye, reason=texts(200)),
    st.builds(
        Redirect,
        broker_key=keys,
        curve_key=keys,
        address=texts(64),
        router_port=ints,
        epoch=ints,
    ),
    st.builds(Sync, roster_version=ints),
)
messages = st.one_of(signed_messages, st.tuples(unsigned_messages, st.just(b"")))
inner_messages = st.one_of(
    st.builds(
        Private,
        item=st.sampled_from(sorted(wire.PRIVATE_ITEMS)),
        cseq=ints,
        base=ints,
        handle=texts(32),
        text=texts(MAX_TEXT_CHARS),
        sent_t=floats,
    ),
    st.builds(PrivateAck, upto=ints),
)


@given(messages)
def test_random_valid_messages_round_trip(example: tuple[Any, bytes]) -> None:
    msg, sig = example
    frames = encode(msg, sig)
    decoded, got_sig = decode(frames)
    assert (decoded, got_sig) == (msg, sig)
    assert signed_bytes(decoded) == signed_bytes(msg)
    assert encode(decoded, got_sig) == frames


@given(inner_messages)
def test_random_inner_messages_round_trip(msg: Private | PrivateAck) -> None:
    plaintext = encode_inner(msg)
    assert decode_inner(plaintext) == msg
    assert encode_inner(decode_inner(plaintext)) == plaintext


@given(messages)
def test_signed_bytes_is_deterministic(example: tuple[Any, bytes]) -> None:
    msg, _ = example
    rebuilt = type(msg)(**{f.name: getattr(msg, f.name) for f in dataclasses.fields(msg)})
    assert signed_bytes(rebuilt) == signed_bytes(msg)
    assert signed_bytes(msg).startswith(wire.MAGIC + bytes((PROTOCOL_VERSION, msg.KIND)))


def _decodes_or_decode_error(frames: list[bytes]) -> None:
    try:
        msg, sig = decode(frames)
    except DecodeError:
        return
    assert isinstance(msg, tuple(wire._OUTER.values()))
    assert isinstance(sig, bytes)


headers = st.one_of(
    st.binary(max_size=6),
    st.builds(
        lambda kind: wire.MAGIC + bytes((PROTOCOL_VERSION, kind)),
        st.integers(min_value=0, max_value=255),
    ),
)


@given(st.lists(st.binary(max_size=64), max_size=8))
def test_random_frames_decode_or_raise_decode_error(frames: list[bytes]) -> None:
    _decodes_or_decode_error(frames)


@given(headers, st.lists(st.binary(max_size=64), max_size=7))
def test_random_bodies_behind_real_headers_decode_or_raise_decode_error(
    header: bytes, rest: list[bytes]
) -> None:
    _decodes_or_decode_error([header, *rest])


@st.composite
def mutated_frames(draw: st.DrawFn) -> list[bytes]:
    msg, sig = draw(messages)
    frames = [bytearray(f) for f in encode(msg, sig)]
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        index = draw(st.integers(min_value=0, max_value=len(frames) - 1))
        frame = frames[index]
        action = draw(st.sampled_from(["flip", "truncate", "insert", "drop_frame"]))
        if action == "drop_frame":
            del frames[index]
            if not frames:
                break
        elif action == "truncate":
            del frame[draw(st.integers(min_value=0, max_value=len(frame))) :]
        elif action == "insert":
            at = draw(st.integers(min_value=0, max_value=len(frame)))
            frame[at:at] = draw(st.binary(min_size=1, max_size=4))
        elif frame:
            at = draw(st.integers(min_value=0, max_value=len(frame) - 1))
            frame[at] = draw(st.integers(min_value=0, max_value=255))
    return [bytes(f) for f in frames]


@settings(max_examples=300)
@given(mutated_frames())
def test_mutated_valid_frames_decode_or_raise_decode_error(frames: list[bytes]) -> None:
    _decodes_or_decode_error(frames)


@given(inner_messages, st.data())
def test_mutated_inner_plaintext_decodes_or_raises_decode_error(
    msg: Private | PrivateAck, data: st.DataObject
) -> None:
    plaintext = bytearray(encode_inner(msg))
    at = data.draw(st.integers(min_value=0, max_value=len(plaintext) - 1))
    plaintext[at] = data.draw(st.integers(min_value=0, max_value=255))
    cut = data.draw(st.integers(min_value=0, max_value=len(plaintext)))
    try:
        decoded = decode_inner(bytes(plaintext[:cut]))
    except DecodeError:
        return
    assert isinstance(decoded, Private | PrivateAck)
