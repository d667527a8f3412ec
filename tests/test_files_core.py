"""The pure file-transfer core: offers, safe names, unique names, progress."""

from __future__ import annotations

import json
import string
import unicodedata
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lanchat.core.files import (
    CHUNK_BYTES,
    MAX_CHUNK_BYTES,
    MAX_NAME_BYTES,
    MAX_OFFER_CHARS,
    MAX_OFFERS_PER_SENDER,
    FileOffer,
    IncomingOffers,
    OfferError,
    Progress,
    chunk_count,
    chunk_span,
    safe_filename,
    unique_name,
)

HEX = "0123456789abcdef"


def _offer(**changes: Any) -> FileOffer:
    base = FileOffer(
        offer_id="0123456789abcdef" * 2,
        name="report.pdf",
        size=1_000_000,
        sha256="ab" * 32,
        address="192.168.1.20",
        port=47200,
        server_key=bytes(range(32)),
        chunk_size=CHUNK_BYTES,
        shared=False,
    )
    return replace(base, **changes)


safe_names = st.text(min_size=1, max_size=200).map(safe_filename)
offers = st.builds(
    FileOffer,
    offer_id=st.text(HEX, min_size=32, max_size=32),
    name=safe_names,
    size=st.integers(0, 2**63 - 1),
    sha256=st.text(HEX, min_size=64, max_size=64),
    address=st.ip_addresses(v=4)
    .filter(lambda a: not a.is_unspecified and not a.is_multicast)
    .map(str),
    port=st.integers(1, 65535),
    server_key=st.binary(min_size=32, max_size=32),
    chunk_size=st.integers(4096, MAX_CHUNK_BYTES),
    shared=st.booleans(),
)


# ---- offers --------------------------------------------------------------------------------


@given(offers)
def test_offer_json_round_trip_and_is_compact(offer: FileOffer) -> None:
    text = offer.to_json()
    assert len(text) < MAX_OFFER_CHARS
    assert len(text.encode()) < MAX_OFFER_CHARS
    assert FileOffer.from_json(text) == offer


def test_largest_offer_fits() -> None:
    widest = "\U0001f600" * (MAX_NAME_BYTES // 4)
    offer = _offer(name=safe_filename(widest), size=2**63 - 1, address="255.255.255.254")
    assert len(offer.to_json()) < MAX_OFFER_CHARS


@given(st.text(max_size=2000))
def test_garbage_text_raises_offer_error(text: str) -> None:
    with pytest.raises(OfferError):
        FileOffer.from_json(text)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=6,
)


@given(st.sampled_from(["id", "name", "size", "sha256", "addr", "port", "key", "chunk", "shared"]),
       json_values)  # fmt: skip
def test_any_wrong_field_raises_offer_error(key: str, value: Any) -> None:
    data = json.loads(_offer().to_json())
    if data[key] == value and type(data[key]) is type(value):
        return
    data[key] = value
    try:
        parsed = FileOffer.from_json(json.dumps(data))
    except OfferError:
        return
    # The few values that are also valid must survive unchanged.
    assert json.loads(parsed.to_json())[key] == value


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("id", "0123456789ABCDEF" * 2),  # upper case
        ("id", "ab" * 15),
        ("size", -1),
        ("size", True),
        ("size", 1.0),
        ("size", 2**63),
        ("sha256", "ab" * 31),
        ("addr", "0.0.0.0"),
        ("addr", "224.0.0.251"),
        ("addr", "::1"),
        ("addr", "192.168.001.020"),
        ("addr", "example.org"),
        ("port", 0),
        ("port", 65536),
        ("port", "47200"),
        ("key", "00" * 31),
        ("key", "zz" * 32),
        ("chunk", 0),
        ("chunk", MAX_CHUNK_BYTES + 1),
        ("shared", 1),
        ("name", "../../etc/passwd"),
        ("name", ".bashrc"),
        ("name", "a\x1b[2Jb"),
        ("name", ""),
        ("name", "CON.txt"),
        ("name", None),
    ],
)
def test_bad_fields_are_rejected(key: str, value: Any) -> None:
    data = json.loads(_offer().to_json())
    data[key] = value
    with pytest.raises(OfferError):
        FileOffer.from_json(json.dumps(data))


def test_missing_extra_and_oversized_are_rejected() -> None:
    data = json.loads(_offer().to_json())
    with pytest.raises(OfferError):
        FileOffer.from_json(json.dumps({k: v for k, v in data.items() if k != "port"}))
    with pytest.raises(OfferError):
        FileOffer.from_json(json.dumps({**data, "extra": 1}))
    with pytest.raises(OfferError):
        FileOffer.from_json(json.dumps([data]))
    with pytest.raises(OfferError):
        FileOffer.from_json(" " * MAX_OFFER_CHARS + json.dumps(data))
    with pytest.raises(OfferError):
        FileOffer.from_json("[" * 900 + "]" * 90)


def test_offer_error_is_a_value_error() -> None:
    assert issubclass(OfferError, ValueError)
    with pytest.raises(ValueError, match="unsafe file name"):
        _offer(name="a/b")


# ---- chunks --------------------------------------------------------------------------------


def test_chunk_arithmetic() -> None:
    assert chunk_count(0, 10) == 0
    assert chunk_count(1, 10) == 1
    assert chunk_count(20, 10) == 2
    assert chunk_count(21, 10) == 3
    assert chunk_span(21, 10, 2) == (20, 1)
    assert _offer(size=CHUNK_BYTES * 3 + 1).chunks == 4
    with pytest.raises(ValueError, match="outside"):
        chunk_span(20, 10, 2)
    with pytest.raises(ValueError, match="outside"):
        chunk_span(20, 10, -1)


# ---- safe names ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "safe"),
    [
        ("../../etc/passwd", "passwd"),
        ("/abs/x", "x"),
        ("C:\\x\\y.txt", "y.txt"),
        ("..", "file"),
        (".", "file"),
        ("../", "file"),
        (".bashrc", "bashrc"),
        ("...hidden.txt", "hidden.txt"),
        ("\x1b[31mred\x1b[0m.txt", "red.txt"),
        ("a\x00b\x07c.txt", "abc.txt"),
        ("evil\u202etxt.exe", "eviltxt.exe"),
        ("zero\u200bwidth.txt", "zerowidth.txt"),
        ("line\nbreak\ttab.txt", "line break tab.txt"),
        ('a<b>c:d"e|f?g*h.txt', "a_b_c_d_e_f_g_h.txt"),
        ("  lots   of\u00a0space  .txt", "lots of space .txt"),
        ("trailing dot.", "trailing dot"),
        ("CON.txt", "_CON.txt"),
        ("con", "_con"),
        ("com1.tar.gz", "_com1.tar.gz"),
        ("LPT9", "_LPT9"),
        ("CONSOLE.txt", "CONSOLE.txt"),
        ("", "file"),
        ("   ", "file"),
        ("\x1b\x1b", "file"),
        ("résumé 😀.pdf", "résumé 😀.pdf"),
    ],
)
def test_safe_filename(raw: str, safe: str) -> None:
    assert safe_filename(raw) == safe


def test_long_names_keep_their_extension() -> None:
    name = safe_filename("x" * 300 + ".tar")
    assert len(name.encode()) == MAX_NAME_BYTES
    assert name.endswith("x.tar")
    wide = safe_filename("é" * 300 + ".txt")
    assert len(wide.encode()) <= MAX_NAME_BYTES
    assert wide.endswith("é.txt")
    odd_ext = safe_filename("a." + "b" * 300)  # not a real extension: plain truncation
    assert len(odd_ext.encode()) == MAX_NAME_BYTES
    assert odd_ext.startswith("a.b")


@given(st.text())
def test_safe_filename_properties(raw: str) -> None:
    name = safe_filename(raw)
    assert name
    assert safe_filename(name) == name  # idempotent: an offer's name can be re-checked
    assert len(name.encode()) <= MAX_NAME_BYTES
    assert not name.startswith((".", " "))
    assert not name.endswith((".", " "))
    assert not set(name) & set('/\\<>:"|?*')
    # No controls, formatting, surrogates or line breaks; unassigned code points may stay
    # (a newer Unicode's emoji should not be mangled by an older receiver).
    unsafe = {"Cc", "Cf", "Cs", "Zl", "Zp"}
    assert not [ch for ch in name if unicodedata.category(ch) in unsafe]


@given(st.lists(st.sampled_from(string.ascii_letters + "./\\\x00\x1b[ ."), max_size=40))
def test_safe_filename_never_yields_a_path(chars: list[str]) -> None:
    name = safe_filename("".join(chars))
    assert name not in (".", "..")
    assert "/" not in name
    assert "\\" not in name


# ---- unique names --------------------------------------------------------------------------


def test_unique_name() -> None:
    assert unique_name([], "a.txt") == "a.txt"
    assert unique_name(["a.txt"], "a.txt") == "a (1).txt"
    assert unique_name(["a.txt", "a (1).txt"], "a.txt") == "a (2).txt"
    assert unique_name({"A.TXT"}, "a.txt") == "a (1).txt"  # case-insensitive file systems
    assert unique_name(["notes"], "notes") == "notes (1)"
    assert unique_name(["x.tar.gz"], "x.tar.gz") == "x.tar (1).gz"
    assert unique_name(["b.txt"], "a.txt") == "a.txt"


@given(st.sets(st.sampled_from(["f.txt", *(f"f ({n}).txt" for n in range(1, 30))])))
def test_unique_name_is_never_taken(existing: set[str]) -> None:
    assert unique_name(existing, "f.txt") not in existing


# ---- progress ------------------------------------------------------------------------------


def test_progress_rate_and_eta() -> None:
    progress = Progress(size=1000, now=10.0)
    assert progress.rate == 0.0
    assert progress.eta is None
    progress.update(11.0, 100)
    assert progress.rate == pytest.approx(100.0)
    assert progress.eta == pytest.approx(9.0)
    for step in range(2, 6):  # steady 100 B/s stays 100 B/s
        progress.update(10.0 + step, 100 * step)
    assert progress.rate == pytest.approx(100.0)
    assert progress.eta == pytest.approx(5.0)
    progress.update(16.0, 800)  # a burst moves the rate, smoothed, towards 300 B/s
    assert 100.0 < progress.rate < 300.0
    progress.update(17.0, 1000)
    assert progress.eta == 0.0


def test_progress_from_a_resumed_offset_counts_new_bytes_only() -> None:
    progress = Progress(size=10_000, now=0.0, done=8_000)
    progress.update(2.0, 9_000)
    assert progress.rate == pytest.approx(500.0)
    assert progress.eta == pytest.approx(2.0)


def test_progress_same_instant_samples_do_not_divide_by_zero() -> None:
    progress = Progress(size=100, now=1.0)
    progress.update(1.0, 50)
    assert progress.done == 50
    assert progress.rate == 0.0
    progress.update(2.0, 60)
    assert progress.rate == pytest.approx(60.0)


def test_progress_reports_at_most_twice_a_second() -> None:
    progress = Progress(size=100, now=0.0)
    assert progress.should_report(0.0)
    assert not progress.should_report(0.2)
    assert not progress.should_report(0.49)
    assert progress.should_report(0.5)
    assert not progress.should_report(0.9)
    assert progress.should_report(1.2)


# ---- offers kept by a receiver --------------------------------------------------------------


def _offer_n(n: int) -> FileOffer:
    return FileOffer(
        offer_id=f"{n:032x}",
        name=f"f{n}.txt",
        size=n,
        sha256="0" * 64,
        address="10.0.0.2",
        port=47200,
        server_key=bytes(32),
        chunk_size=CHUNK_BYTES,
        shared=True,
    )


def test_ten_thousand_offers_from_one_sender_keep_only_its_newest() -> None:
    book = IncomingOffers()
    friend, flooder = b"f" * 32, b"x" * 32
    assert book.add(_offer_n(1_000_000), friend)
    for n in range(10_000):
        assert book.add(_offer_n(n), flooder)
    assert len(book) == MAX_OFFERS_PER_SENDER + 1
    assert book.get(f"{1_000_000:032x}") is not None  # the friend's offer is untouched
    assert book.get(f"{9_999:032x}") is not None
    assert book.get(f"{0:032x}") is None
    assert book.dropped == 10_000 - MAX_OFFERS_PER_SENDER


def test_many_senders_keep_at_most_the_total_oldest_going_first() -> None:
    book = IncomingOffers(per_sender=3, total=10)
    for n in range(40):
        assert book.add(_offer_n(n), bytes([n]) * 32)
    assert len(book) == 10
    assert book.senders() == 10
    assert [book.get(f"{n:032x}") is not None for n in (29, 30, 39)] == [False, True, True]


def test_a_repeated_or_copied_offer_id_is_not_new() -> None:
    book = IncomingOffers()
    offer = _offer_n(7)
    assert book.add(offer, b"a" * 32)
    assert not book.add(offer, b"a" * 32)
    assert not book.add(offer, b"b" * 32)  # someone else's id: not taken over
    assert book.get(offer.offer_id) == (offer, b"a" * 32)
    assert book.pop(offer.offer_id) == (offer, b"a" * 32)
    assert book.pop(offer.offer_id) is None
    assert len(book) == 0
    assert book.senders() == 0
