from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lanchat.core.handles import (
    DEFAULT_ROOM,
    MAX_NAME_CHARS,
    HandleError,
    RoomError,
    handle_key,
    room_key,
    suggest_handle,
    validate_handle,
    validate_room,
)


@pytest.mark.parametrize("handle", ["a", "Alice", "bob_42", "x-y.z", "A" * 32, "_", "0"])
def test_valid_handles_are_returned_unchanged(handle: str) -> None:
    assert validate_handle(handle) == handle
    assert validate_room(handle) == handle


@pytest.mark.parametrize(
    ("handle", "problem"),
    [
        ("", "it is empty"),
        ("a" * 33, "it has 33 characters"),
        ("al ice", "character 3 (' ') is not allowed"),
        ("bob\x1b[31m", r"character 4 ('\x1b') is not allowed"),
        ("jos\u00e9", "character 4 ('\u00e9') is not allowed"),
        ("evil\u202e", r"character 5 ('\u202e') is not allowed"),
        ("a\n", r"character 2 ('\n') is not allowed"),
        ("\uff41", "character 1 ('\uff41') is not allowed"),  # fullwidth 'a' is not ASCII
    ],
)
def test_invalid_handles_say_what_is_allowed(handle: str, problem: str) -> None:
    with pytest.raises(HandleError) as info:
        validate_handle(handle)
    message = str(info.value)
    assert message.startswith("a handle is 1-32 characters: letters, digits, _ - .; ")
    assert message.endswith(problem)
    assert message.isprintable()  # control characters are shown escaped


def test_room_errors_name_rooms() -> None:
    with pytest.raises(RoomError, match=r"^a room name is 1-32 characters"):
        validate_room("no spaces")
    assert issubclass(HandleError, ValueError)
    assert issubclass(RoomError, ValueError)
    assert validate_room(DEFAULT_ROOM) == "lobby"


def test_keys_are_case_insensitive() -> None:
    assert handle_key("Alice") == handle_key("aLICE")
    assert room_key("Lobby") == room_key(DEFAULT_ROOM)


@pytest.mark.parametrize(
    ("login", "handle"),
    [
        ("alice", "alice"),
        ("Jos\u00e9 N\u00fa\u00f1ez", "Jose_Nunez"),
        ("DOMAIN\\bob", "DOMAINbob"),
        ("", "guest"),
        ("\u674e\u96f7", "guest"),
        ("...", "guest"),
        ("x" * 40, "x" * 32),
        ("  mentor  ", "mentor"),
    ],
)
def test_suggest_handle_examples(login: str, handle: str) -> None:
    assert suggest_handle(login) == handle


@given(st.text())
def test_suggest_handle_is_always_valid(login: str) -> None:
    handle = suggest_handle(login)
    assert validate_handle(handle) == handle
    assert len(handle) <= MAX_NAME_CHARS
