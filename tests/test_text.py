from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lanchat.core.text import (
    MAX_TEXT_CHARS,
    TextError,
    _clean_slowly,
    check_text,
    clean_text,
    safe_label,
)


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("hello", "hello"),
        ("a\x1b[31mred\x1b[0m", "ared"),
        ("\x1b[2J\x1b[Hwiped", "wiped"),
        ("\x9b31mc1", "c1"),
        ("\x1b]0;fake title\x07x", "x"),
        ("\x1b]8;;http://evil\x1b\\link\x1b]8;;\x1b\\", "link"),
        ("\x1bPdcs payload\x1b\\y", "y"),
        ("\x1b(Bq", "q"),
        ("\x1b]unterminated", "unterminated"),
        ("trailing\x1b", "trailing"),
        ("bell\x07 nul\x00 del\x7f nel\x85", "bell nul del nel"),
        ("a\r\nb\rc\nd", "a\nb\nc\nd"),
        ("line\u2028sep", "line\nsep"),
        ("tab\there", "tab    here"),
        ("user\u202egnp.exe", "usergnp.exe"),
        ("\u2066iso\u2069late", "isolate"),
        ("caf\u00e9 \U0001f600", "caf\u00e9 \U0001f600"),
        ("lone\ud800surrogate", "lonesurrogate"),
    ],
)
def test_clean_text(raw: str, clean: str) -> None:
    assert clean_text(raw) == clean


def test_safe_label_is_one_line() -> None:
    assert safe_label("evil\nSYSTEM: trust me\x1b[1m") == "evil SYSTEM: trust me"


def test_check_text_rejects_blank_and_long() -> None:
    with pytest.raises(TextError, match="empty"):
        check_text("\x1b[31m \n\t")
    with pytest.raises(TextError, match="too long: 4001 characters, at most 4000"):
        check_text("x" * (MAX_TEXT_CHARS + 1))
    assert check_text("x" * MAX_TEXT_CHARS) == "x" * MAX_TEXT_CHARS
    assert check_text("hi\x1b[0m") == "hi"
    assert issubclass(TextError, ValueError)


def test_hostile_input_is_cleaned_in_linear_time() -> None:
    for hostile in ("\x9d" * 100_000, "\x1b]" + "a" * 100_000, "\x1b[" + "1" * 100_000):
        assert "\x1b" not in clean_text(hostile)


_TRICKY = st.sampled_from(
    ["\x1b", "[", "]", "\\", "\x07", "\x9b", "\x9c", "\x9d", "\x90", "\r", "\n", "\t", "\u202e",
     "\u2028", "31", "m", ";", "P", "(", "\x00", "\x85"]
)  # fmt: skip
_TEXT = st.text() | st.lists(_TRICKY | st.characters(), max_size=40).map("".join)


@given(_TEXT)
def test_clean_text_output_is_safe_and_idempotent(raw: str) -> None:
    cleaned = clean_text(raw)
    assert all(unicodedata.category(char) != "Cc" or char == "\n" for char in cleaned)
    assert "\x1b" not in cleaned
    assert not set(cleaned) & set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
    assert clean_text(cleaned) == cleaned


@given(_TEXT)
def test_safe_label_has_no_line_breaks(raw: str) -> None:
    label = safe_label(raw)
    assert "\n" not in label
    assert all(unicodedata.category(char) != "Cc" for char in label)


# ---------------------------------------------------------------- the fast path

# Mostly printable text with a newline or an unsafe character here and there: the fast path
# must take only the texts that are printable apart from their newlines.
_PRINTABLE = st.characters(codec=None, exclude_categories=()).filter(str.isprintable)
_MOSTLY_PRINTABLE = st.lists(_PRINTABLE | st.just("\n") | _TRICKY, max_size=30).map("".join)


@given(_TEXT | _MOSTLY_PRINTABLE | st.text(_PRINTABLE | st.just("\n")))
def test_the_fast_path_gives_what_the_passes_give(raw: str) -> None:
    assert clean_text(raw) == _clean_slowly(raw)


@pytest.mark.parametrize(
    "raw",
    ["a\nb\tc", "a\nb\rc", "a\n\u202eb", "a\n\x1b[31mb", "x\n\ud800", "\n\u2028", "\n\x85"],
)
def test_newlines_with_something_to_clean_take_the_slow_path(raw: str) -> None:
    assert clean_text(raw) == _clean_slowly(raw) != raw


def test_the_passes_leave_every_printable_character_and_the_newline_alone() -> None:
    # All of Unicode at once: no printable character is removed, replaced or starts a
    # match, so a text made only of them (and newlines) is already clean.
    printable = "".join(c for c in map(chr, range(0x110000)) if c.isprintable())
    assert _clean_slowly(printable) == printable
    with_newlines = "\n".join(printable)
    assert _clean_slowly(with_newlines) == with_newlines
