"""Cleaning untrusted text before it is shown or sent: no terminal escapes, no spoofing."""

from __future__ import annotations

import re
from typing import Final

__all__ = ["MAX_TEXT_CHARS", "TAB_SPACES", "TextError", "check_text", "clean_text", "safe_label"]

MAX_TEXT_CHARS: Final = 4000
TAB_SPACES: Final = 4

# Whole escape sequences go first, so their printable tail ("[31m") does not leak into the text.
# Possessive quantifiers (*+) keep this linear on hostile input.
_ESCAPE_SEQUENCE: Final = re.compile(
    r"(?:\x1b\[|\x9b)[\x30-\x3f]*+[\x20-\x2f]*+[\x40-\x7e]?"  # CSI: colours, cursor moves
    # OSC, DCS, SOS, PM, APC: a string up to BEL or ST; unterminated, only the opener goes.
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])(?:[^\x07\x1b\x90\x98\x9b-\x9f]*+(?:\x07|\x1b\\|\x9c))?"
    r"|\x1b[\x20-\x2f]*+[\x30-\x7e]"  # any other escape (charset switches, keypad modes, ...)
)
# Left after that: C0/C1 controls (minus \n), DEL, lone surrogates that cannot be encoded, and
# every format character (Unicode category Cf): bidi embeddings, overrides, isolates and marks
# that make text read differently from how it is stored; zero-width spaces, joiners and BOMs
# that make two different names look the same; tag characters that hide text. That includes
# U+200D, so an emoji ZWJ sequence shows as its separate emoji: one invisible character in a
# name is enough to impersonate someone. The ranges are those of Unicode 15.1 (a test checks
# them against the running Python's tables).
_FORMAT_CHARS: Final = (
    "\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f"
    "\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\U000110bd\U000110cd"
    "\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001"
    "\U000e0020-\U000e007f"
)
# A run at a time: each match costs more than the characters in it (a 4,000-character text
# of zero-width characters: this pass takes 19 us rather than 430 us).
_UNSAFE_CHARS: Final = re.compile(f"[\x00-\x09\x0b-\x1f\x7f-\x9f\ud800-\udfff{_FORMAT_CHARS}]+")
_NEWLINES: Final = re.compile("\r\n?|[\u2028\u2029]")


class TextError(ValueError):
    """A message is empty or too long once cleaned."""


def clean_text(text: str) -> str:
    """``text`` without escapes, controls (except newline) or format characters; tabs as spaces.

    Line and paragraph separators (U+2028, U+2029) and CR become newlines.
    """
    # Every character the passes below remove, replace or start a match with is
    # non-printable (C0/C1 controls, DEL, CR, tab, U+2028/U+2029, format characters, surrogates).
    # The newline is non-printable too, but they keep it: text that is printable apart from
    # its newlines has nothing to clean, and ordinary chat text skips the regex passes.
    if text.isprintable() or ("\n" in text and text.replace("\n", "").isprintable()):
        return text
    return _clean_slowly(text)


def _clean_slowly(text: str) -> str:
    """The cleaning passes themselves, for text that may need them."""
    text = _NEWLINES.sub("\n", text)
    text = _ESCAPE_SEQUENCE.sub("", text)
    text = text.replace("\t", " " * TAB_SPACES)
    return _UNSAFE_CHARS.sub("", text)


def check_text(text: str) -> str:
    """The cleaned message, or TextError if it is blank or longer than MAX_TEXT_CHARS."""
    cleaned = clean_text(text)
    if not cleaned.strip():
        raise TextError("message is empty")
    if len(cleaned) > MAX_TEXT_CHARS:
        raise TextError(f"message is too long: {len(cleaned)} characters, at most {MAX_TEXT_CHARS}")
    return cleaned


def safe_label(text: str) -> str:
    """A one-line form for handles, room and file names in the UI."""
    return clean_text(text).replace("\n", " ")
