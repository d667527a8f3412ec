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
        ("zero\u200bwidth\u200c non\u200djoiner", "zerowidth nonjoiner"),
        ("\ufeffbom and word\u2060joiner", "bom and wordjoiner"),
        ("marks\u200e\u200f\u061c", "marks"),
        ("soft\u00adhyphen", "softhyphen"),
        ("tag\U000e0041\U000e007fs", "tags"),
        ("para\u2029graph", "para\ngraph"),
        # An emoji ZWJ sequence falls apart into its emoji: U+200D must not reach events.
        ("\U0001f468\u200d\U0001f4bb", "\U0001f468\U0001f4bb"),
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
# Unicode categories that never survive cleaning (the newline aside): controls, format
# characters (zero-width, direction marks, bidi controls, tags), line and paragraph separators
# and surrogates.
_NEVER: frozenset[str] = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})
_INVISIBLE = st.sampled_from(
    ["\u200b", "\u200c", "\u200d", "\ufeff", "\u2060", "\u200e", "\u200f", "\u061c",
     "\u2028", "\u2029", "\u00ad", "\U000e0001", "\U000e0041", "\u2066", "\u202e"]
)  # fmt: skip
_FORMAT = st.characters(categories=["Cf", "Zl", "Zp"])
_TEXT = st.text() | st.lists(_TRICKY | _INVISIBLE | _FORMAT | st.characters(), max_size=40).map(
    "".join
)


@given(_TEXT)
def test_clean_text_output_is_safe_and_idempotent(raw: str) -> None:
    cleaned = clean_text(raw)
    assert all(unicodedata.category(char) not in _NEVER or char == "\n" for char in cleaned)
    assert "\x1b" not in cleaned
    assert not set(cleaned) & set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
    assert clean_text(cleaned) == cleaned


@given(_TEXT)
def test_safe_label_has_no_line_breaks(raw: str) -> None:
    label = safe_label(raw)
    assert "\n" not in label
    assert all(unicodedata.category(char) not in _NEVER for char in label)


# Legitimate text: anything but controls, format characters, separators and surrogates.
_LEGITIMATE = st.characters(exclude_categories=["Cc", "Cf", "Zl", "Zp", "Cs"]) | st.just("\n")


@given(st.lists(_LEGITIMATE | _INVISIBLE | _FORMAT, max_size=60))
def test_only_the_format_characters_and_separators_go(chars: list[str]) -> None:
    # Legitimate text with invisible characters sprinkled in comes out as the same text
    # without them (separators as newlines): nothing else is touched.
    expected = "".join(
        "\n" if unicodedata.category(c) in ("Zl", "Zp") else c
        for c in chars
        if unicodedata.category(c) != "Cf"
    )
    assert clean_text("".join(chars)) == expected


def test_every_format_character_of_this_python_is_removed() -> None:
    # The pattern's ranges are written out (building them at import would cost start-up
    # time); this keeps them in step with the Unicode tables of the Python running the tests.
    every = [chr(c) for c in range(0x110000) if unicodedata.category(chr(c)) in ("Cf", "Zl", "Zp")]
    assert len(every) > 150
    assert clean_text("".join(every)).replace("\n", "") == ""
    assert safe_label("a" + "".join(every) + "b").replace(" ", "") == "ab"


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
