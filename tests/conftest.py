"""Shared pytest fixtures."""

from __future__ import annotations

import asyncio
import os
import sys
import warnings
from typing import TYPE_CHECKING

import pytest
from vlan import VirtualLan, make_prefix, missing_requirements, remove_stale_labs

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator


if sys.platform == "win32":
    # The tests run loops with asyncio.run; lanchat itself asks for the selector loop
    # (lanchat.oscompat.run): the default proactor loop has no add_reader for zmq.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # policies: deprecated in 3.14
        asyncio.set_event_loop_policy(asyncio.WindowsSelectorEventLoopPolicy())


# ---- virtual LANs (tests/vlan.py) -------------------------------------------


@pytest.fixture
def vlan() -> Iterator[Callable[..., VirtualLan]]:
    """A factory `make(hosts, subnet=...) -> VirtualLan`; every lab is torn down after the test."""
    why_not = missing_requirements()
    if why_not and os.environ.get("LANCHAT_REQUIRE_LAN") == "1":
        pytest.fail(f"LANCHAT_REQUIRE_LAN=1 but virtual LANs are unavailable: {why_not}")
    if why_not:
        pytest.skip(f"virtual LAN tests need root and iproute2 (ip netns): {why_not}")
    remove_stale_labs()  # once per process: labs of crashed earlier runs
    labs: list[VirtualLan] = []

    def make(hosts: int, subnet: str = "10.77.0.0/24") -> VirtualLan:
        lab = VirtualLan(make_prefix(), hosts, subnet)
        labs.append(lab)
        return lab.up()

    try:
        yield make
    finally:
        errors = []
        for lab in reversed(labs):
            try:
                lab.down()
            except Exception as exc:  # tear the others down anyway
                errors.append(exc)
        if errors:
            raise errors[0]
