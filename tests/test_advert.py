"""Advert: validation and the compact TXT encoding."""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lanchat.core.advert import (
    MAX_BROKER_EPOCH,
    MAX_PRIORITY,
    MAX_ROOM_BYTES,
    MAX_TXT_BYTES,
    RESERVED_TXT_BYTES,
    Advert,
    AdvertError,
    txt_wire_size,
)

ID_KEY = bytes(range(32))
CURVE_KEY = bytes(range(100, 132))


def make(**changes: Any) -> Advert:
    fields: dict[str, Any] = {
        "handle": "ann",
        "room": "lobby",
        "address": "192.168.1.20",
        "id_key": ID_KEY,
        "curve_key": CURVE_KEY,
        "router_port": 5555,
        "pub_port": 5556,
        "mentor": False,
        "priority": 0,
        "started_at": 1_760_000_000.123,
    }
    return Advert(**(fields | changes))


def raw(txt: dict[str, str]) -> dict[bytes, bytes | None]:
    return {k.encode(): v.encode() for k, v in txt.items()}


def roundtrip(advert: Advert) -> Advert:
    return Advert.from_txt(advert.handle, advert.address, raw(advert.to_txt()))


# ---- encoding -----------------------------------------------------------------


def test_txt_is_compact_and_readable() -> None:
    txt = make(mentor=True, priority=3).to_txt()
    assert txt == {
        "v": "1",
        "id": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8",
        "ck": "ZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXp7fH1-f4CBgoM",
        "rp": "5555",
        "pp": "5556",
        "m": "1",
        "room": "lobby",
        "pri": "3",
        "st": "1760000000.123",
    }


def test_broker_fields_appear_only_for_a_broker() -> None:
    txt = make(broker_epoch=4, broker_since=1_760_000_100.5).to_txt()
    assert (txt["be"], txt["bs"]) == ("4", "1760000100.500")
    assert "be" not in make().to_txt()
    assert roundtrip(make(broker_epoch=4, broker_since=1_760_000_100.5)).is_broker


def test_roundtrip_of_an_example() -> None:
    advert = make(mentor=True, broker_epoch=2, broker_since=1_760_000_050.0)
    assert roundtrip(advert) == advert


def _worst(**changes: Any) -> Advert:
    return make(
        handle="h" * 63,
        router_port=65535,
        pub_port=65535,
        mentor=True,
        priority=MAX_PRIORITY,
        started_at=9_999_999_999.999,
        **changes,
    )


def test_txt_stays_within_the_budget() -> None:
    # Every non-broker, whatever its room, and brokers in rooms of up to 16 bytes.
    student = _worst(room="r" * MAX_ROOM_BYTES)
    broker = _worst(room="r" * 16, broker_epoch=MAX_BROKER_EPOCH, broker_since=9_999_999_999.999)
    for advert in (student, broker):
        txt = advert.to_txt()
        assert txt_wire_size(txt) + RESERVED_TXT_BYTES <= MAX_TXT_BYTES
        assert all(len(f"{k}={v}".encode()) <= 255 for k, v in txt.items())
    # The documented absolute worst case (see MAX_TXT_BYTES).
    everything = dataclasses.replace(broker, room="r" * MAX_ROOM_BYTES)
    assert txt_wire_size(everything.to_txt()) + RESERVED_TXT_BYTES == 215


def test_times_are_kept_to_the_millisecond() -> None:
    advert = make(started_at=1_760_000_000.123456)
    assert advert.started_at == 1_760_000_000.123
    assert roundtrip(advert) == advert


def test_unknown_keys_are_ignored() -> None:
    txt = raw(make().to_txt()) | {b"n": b"7", b"future": None, b"x": b"\xff"[:0]}
    assert Advert.from_txt("ann", "192.168.1.20", txt) == make()


# ---- validation ---------------------------------------------------------------


@pytest.mark.parametrize(
    "changes",
    [
        {"handle": ""},
        {"handle": "x" * 64},
        {"handle": "é" * 32},  # 64 bytes
        {"handle": "bad\nname"},
        {"handle": " ann"},
        {"handle": "\ud800"},
        {"room": ""},
        {"room": "r" * (MAX_ROOM_BYTES + 1)},
        {"address": "10.0.0"},
        {"address": "fe80::1"},
        {"address": "10.0.0.256"},
        {"id_key": b"\x00" * 31},
        {"curve_key": b"\x00" * 33},
        {"router_port": 0},
        {"pub_port": 65536},
        {"router_port": True},
        {"mentor": 1},
        {"priority": -1},
        {"priority": MAX_PRIORITY + 1},
        {"broker_epoch": MAX_BROKER_EPOCH + 1},
        {"started_at": float("nan")},
        {"started_at": float("inf")},
        {"started_at": -1.0},
        {"broker_since": 1e10},
    ],
)
def test_invalid_fields_raise_advert_error(changes: dict[str, Any]) -> None:
    with pytest.raises(AdvertError):
        make(**changes)


def test_advert_error_is_a_value_error() -> None:
    assert issubclass(AdvertError, ValueError)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("v", "2"),
        ("v", None),
        ("id", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh"),  # 42 chars
        ("id", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="),  # padded
        ("id", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh+"),  # not url-safe
        ("id", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh9"),  # non-canonical last char
        ("ck", "!" * 43),
        ("rp", "0"),
        ("rp", "65536"),
        ("rp", "+80"),
        ("rp", " 80"),
        ("rp", "8_0"),
        ("pp", "٨٠"),  # Arabic-Indic digits: int() would accept them
        ("pp", ""),
        ("pri", "0x1"),
        ("pri", "100"),
        ("m", "yes"),
        ("m", None),
        ("room", ""),
        ("st", "nan"),
        ("st", "1e9"),
        ("st", "-5.0"),
        ("st", "1760000000.1234"),
        ("be", "-1"),
        ("bs", "soon"),
    ],
)
def test_malformed_txt_raises_advert_error(key: str, value: str | None) -> None:
    txt: dict[bytes, bytes | None] = raw(make().to_txt())
    txt[key.encode()] = None if value is None else value.encode()
    with pytest.raises(AdvertError):
        Advert.from_txt("ann", "192.168.1.20", txt)


@pytest.mark.parametrize("key", ["v", "id", "ck", "rp", "pp", "m", "room", "pri", "st"])
def test_missing_key_raises_advert_error(key: str) -> None:
    txt = raw(make().to_txt())
    del txt[key.encode()]
    with pytest.raises(AdvertError, match=key):
        Advert.from_txt("ann", "192.168.1.20", txt)


def test_undecodable_bytes_raise_advert_error() -> None:
    with pytest.raises(AdvertError):
        Advert.from_txt("ann", "192.168.1.20", raw(make().to_txt()) | {b"room": b"\xff"})
    with pytest.raises(AdvertError):
        Advert.from_txt("ann", "192.168.1.20", raw(make().to_txt()) | {b"\xe9": b"1"})


def test_bad_handle_or_address_from_the_network_raise_advert_error() -> None:
    with pytest.raises(AdvertError):
        Advert.from_txt("", "192.168.1.20", raw(make().to_txt()))
    with pytest.raises(AdvertError):
        Advert.from_txt("ann", "not-an-ip", raw(make().to_txt()))


# ---- properties ---------------------------------------------------------------

_label = st.text(
    st.characters(codec="utf-8", exclude_categories=("C", "Zl", "Zp", "Zs")),
    min_size=1,
    max_size=8,
)
_time = st.floats(min_value=0, max_value=9_999_999_999.999, allow_nan=False)
_port = st.integers(1, 65535)

adverts = st.builds(
    Advert,
    handle=_label,
    room=_label,
    address=st.ip_addresses(v=4).map(str),
    id_key=st.binary(min_size=32, max_size=32),
    curve_key=st.binary(min_size=32, max_size=32),
    router_port=_port,
    pub_port=_port,
    mentor=st.booleans(),
    priority=st.integers(0, MAX_PRIORITY),
    started_at=_time,
    broker_epoch=st.integers(0, MAX_BROKER_EPOCH),
    broker_since=_time,
)


@given(adverts)
def test_roundtrip(advert: Advert) -> None:
    assert roundtrip(advert) == advert


@given(
    st.dictionaries(
        st.binary(max_size=6) | st.sampled_from([b"v", b"id", b"ck", b"rp", b"st", b"m"]),
        st.none() | st.binary(max_size=50),
        max_size=14,
    ),
    st.text(max_size=70),
    st.text(max_size=20),
)
def test_garbage_raises_only_advert_error(
    txt: dict[bytes, bytes | None], handle: str, address: str
) -> None:
    with contextlib.suppress(AdvertError):
        Advert.from_txt(handle, address, txt)


@given(
    adverts,
    st.sampled_from(["v", "id", "ck", "rp", "pp", "m", "room", "pri", "st", "be", "bs"]),
    st.none() | st.binary(max_size=60),
)
def test_one_corrupted_value_parses_or_raises_advert_error(
    advert: Advert, key: str, value: bytes | None
) -> None:
    txt = raw(advert.to_txt()) | {key.encode(): value}
    try:
        parsed = Advert.from_txt(advert.handle, advert.address, txt)
    except AdvertError:
        return
    assert isinstance(parsed, Advert)
