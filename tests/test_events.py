"""The typed events (lanchat/core/events.py) are the headless contract: one type per row of
docs/headless.md's event table, with exactly its fields, and one encoding."""

from __future__ import annotations

import logging
import re
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from lanchat.core import events
from lanchat.room.context import NodeConfig, RoomContext

FIELD = r"`(\w+)(?::[^`]*)?`"  # `name`, or `name: [{...}]` for a list of records
DOC = Path(__file__).resolve().parents[1] / "docs" / "headless.md"


def contract() -> dict[str, tuple[set[str], set[str]]]:
    """event -> (fields always written, fields written when they apply), from the doc."""
    section = DOC.read_text().split("## Events", 1)[1].splitlines()
    start = next(i for i, line in enumerate(section) if line.startswith("| event |"))
    table = []
    for line in section[start:]:
        if not line.startswith("|"):
            break
        table.append(line)
    rows: dict[str, tuple[set[str], set[str]]] = {}
    for line in table:
        cells = [c.strip() for c in line.strip("|").split("|")]
        name = re.fullmatch(r"`(\w+)`", cells[0])
        if len(cells) < 3 or name is None:
            continue
        described = cells[1]
        # "(and `x`)": written when it applies; any other parenthesis lists values.
        optional_parts = " ".join(re.findall(r"\(and ([^)]*)\)", described))
        required = set(re.findall(FIELD, re.sub(r"\([^)]*\)", "", described)))
        rows[name.group(1)] = (required, set(re.findall(FIELD, optional_parts)))
    return rows


def encoded_names(cls: type[events.Event]) -> tuple[set[str], set[str]]:
    required, optional = set(), set()
    for f in fields(cls):
        (optional if f.metadata.get("optional") else required).add(f.name.rstrip("_"))
    return required, optional


def test_every_event_of_the_contract_has_a_type_with_its_fields() -> None:
    documented = contract()
    assert set(documented) == set(events.EVENT_TYPES)
    for name, (required, optional) in documented.items():
        have_required, have_optional = encoded_names(events.EVENT_TYPES[name])
        assert required == have_required, name
        assert optional <= have_optional, name


def test_optional_fields_are_left_out_and_names_lose_their_underscore() -> None:
    order = [3, "a" * 16, 1]
    live = events.event_of(
        "public", {"id": "a:1", "from": "ann", "text": "hi", "sent_t": 1.5, "order": order}
    )
    assert live.to_json(2.0) == {
        "ev": "public",
        "t": 2.0,
        "id": "a:1",
        "from": "ann",
        "text": "hi",
        "sent_t": 1.5,
        "order": order,
    }
    replayed = events.Public(id="a:1", from_="ann", text="hi", sent_t=1.5, order=order, replay=True)
    assert replayed.to_json(2.0)["replay"] is True
    # A required field that is None is still written: file_offered to the whole room.
    room_share = events.FileOffered(id="f", name="n", size=1, to=None)
    assert room_share.to_json(0.0)["to"] is None
    assert events.Broker(handle="mia", self_=True, epoch=3).to_json(0.0)["self"] is True


def test_an_event_outside_the_contract_is_refused_by_its_type() -> None:
    with pytest.raises(events.UnknownEvent):
        events.event_of("party", {})
    with pytest.raises(TypeError):
        events.event_of("sent", {"id": "x", "colour": "red"})
    with pytest.raises(TypeError):
        events.event_of("sent", {})


def test_the_context_checks_every_event_and_never_loses_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from lanchat.identity import Identity
    from lanchat.store import Profile

    out: list[dict[str, Any]] = []
    profile = Profile.open(tmp_path)
    try:
        ctx = RoomContext(
            NodeConfig("ann", "room", "127.0.0.1"),
            Identity.generate(),
            profile,
            out.append,
            wall=lambda: 7.0,
        )
        ctx.emit("sent", id="a:1")
        ctx.emit_event(events.PeerDown(handle="bob"))
        with caplog.at_level(logging.ERROR, logger="lanchat"):
            ctx.emit("sent", id="a:2", extra=1)  # a bug: logged, still delivered
    finally:
        profile.close()
    assert out == [
        {"ev": "sent", "t": 7.0, "id": "a:1"},
        {"ev": "peer_down", "t": 7.0, "handle": "bob"},
        {"ev": "sent", "t": 7.0, "id": "a:2", "extra": 1},
    ]
    assert "does not fit the contract" in caplog.text


@pytest.mark.parametrize("texts", [("hi",), ("one", "two \x1b[31mred", "three")])
def test_the_public_fast_path_writes_what_the_typed_event_encodes(
    tmp_path: Path, texts: tuple[str, ...]
) -> None:
    """A receiver formats `public` events directly (the hot path); they must be exactly the
    typed event's encoding."""
    from lanchat.core import wire
    from lanchat.identity import Identity
    from lanchat.inmemory import MemoryLan
    from lanchat.node import Node
    from lanchat.store import Profile

    out: list[dict[str, Any]] = []
    me, author, lan = Identity.generate(), Identity.generate(), MemoryLan()
    profile = Profile.open(tmp_path)
    try:
        config = NodeConfig("ann", "room", "127.0.0.5", info_port=0)
        node = Node(
            config,
            profile,
            me,
            out.append,
            transport=lan.transport(config.address, me.curve_public),
            discovery=lan.discovery,
        )
        node.public.gap.reset(1, 0)
        inner: wire.Public | wire.PublicBatch
        if len(texts) == 1:
            inner = wire.Public(
                author=author.key, handle="bob", room="room", seq=1, text=texts[0], sent_t=1.25
            )
        else:
            inner = wire.PublicBatch(
                author=author.key, handle="bob", room="room", seq=1, texts=texts, sent_t=1.25
            )
        sig = author.sign(wire.signed_bytes(inner))
        node.public.on_relay(wire.Relay(epoch=1, bseq=1, inner=inner, inner_sig=sig), 0.0)
    finally:
        profile.close()
    assert len(out) == len(texts)
    for event in out:
        typed = events.event_of("public", {k: v for k, v in event.items() if k not in ("ev", "t")})
        assert typed.to_json(event["t"]) == event
        assert list(typed.to_json(event["t"])) == list(event)  # the same order of keys
