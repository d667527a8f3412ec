"""The install server's pure half: index pages, commands, landing page, per-client limits."""

from __future__ import annotations

import re

import pytest

from lanchat.core.installindex import (
    ClientLimits,
    LimitPolicy,
    Refusal,
    WheelFile,
    describe_platforms,
    install_commands,
    normalize,
    parse_wheel_name,
    render_landing,
    render_project,
    render_projects,
)

FILES = [
    WheelFile("lanchat-0.1.0-py3-none-any.whl", "a" * 64, 10, ">=3.11"),
    WheelFile("prompt_toolkit-3.0.53-py3-none-any.whl", "b" * 64, 20),
    WheelFile("pyzmq-27.3.0-cp312-abi3-win_amd64.whl", "c" * 64, 30),
    WheelFile("zeroconf-0.154.0-cp313-cp313-macosx_11_0_arm64.whl", "d" * 64, 40),
    WheelFile(
        "cffi-2.1.1-cp311-cp311-manylinux2014_aarch64.manylinux_2_17_aarch64.whl", "e" * 64, 50
    ),
]


@pytest.mark.parametrize(
    ("name", "expected"),
    [("prompt_toolkit", "prompt-toolkit"), ("PyNaCl", "pynacl"), ("a.-_b", "a-b")],
)
def test_normalize_follows_pep_503(name: str, expected: str) -> None:
    assert normalize(name) == expected


def test_parse_wheel_name() -> None:
    parsed = parse_wheel_name("prompt_toolkit-3.0.53-1-py3-none-any.whl")
    assert parsed is not None
    assert (parsed.project, parsed.version, parsed.platform) == ("prompt-toolkit", "3.0.53", "any")
    assert parse_wheel_name("lanchat-0.1.0.tar.gz") is None
    assert parse_wheel_name("../SHA256SUMS") is None


def test_project_list_links_every_project_once() -> None:
    page = render_projects(FILES).decode()
    links = re.findall(r'href="([^"]+)"', page)
    assert links == [
        "/simple/cffi/",
        "/simple/lanchat/",
        "/simple/prompt-toolkit/",
        "/simple/pyzmq/",
        "/simple/zeroconf/",
    ]


def test_project_page_carries_hash_and_requires_python() -> None:
    page = render_project("lanchat", FILES)
    assert page is not None
    text = page.decode()
    assert f'href="/files/lanchat-0.1.0-py3-none-any.whl#sha256={"a" * 64}"' in text
    assert 'data-requires-python="&gt;=3.11"' in text
    assert "prompt_toolkit" not in text
    assert render_project("nosuch", FILES) is None


def test_install_commands_name_the_index_and_trust_the_host() -> None:
    c = install_commands("10.0.0.5", 8765)
    index = "http://10.0.0.5:8765/simple/"
    assert c.url == "http://10.0.0.5:8765/"
    assert c.command == f"python -m pip install --index-url {index} --trusted-host 10.0.0.5 lanchat"
    assert c.windows.startswith("py -m pip install --index-url ")
    assert c.unix.startswith("python3 -m venv ~/lanchat-env && ~/lanchat-env/bin/python -m pip")
    assert c.unix_start == "~/lanchat-env/bin/lanchat"
    for line in (c.command, c.windows, c.unix, c.unix_fallback):
        assert f"--index-url {index} --trusted-host 10.0.0.5 lanchat" in line


def test_fallback_line_brings_its_own_pip_when_the_server_has_one() -> None:
    without = install_commands("10.0.0.5", 8765)
    assert without.unix_fallback.startswith("python3 -m pip install --user --break-system-packages")
    served = install_commands("10.0.0.5", 8765, serves_pip=True).unix_fallback
    assert "'http://10.0.0.5:8765/pip.whl'" in served
    assert "&& python3 /tmp/lanchat-pip.whl/pip install --user --break-system-packages" in served


def test_landing_page_shows_each_os_and_the_address_fallback() -> None:
    c = install_commands("mentor.local", 8765)
    page = render_landing(
        c, version="0.1.0", platforms=["Linux x86_64"], address_url="http://10.0.0.5:8765/"
    ).decode()
    for heading in ("Windows (PowerShell)", "macOS (Terminal)", "Linux (terminal)"):
        assert heading in page
    assert c.windows in page
    assert c.unix.replace("&", "&amp;") in page
    assert "py -m lanchat" in page
    assert "Wheels here for: Linux x86_64." in page
    assert 'href="http://10.0.0.5:8765/"' in page
    assert "<script" not in page  # nothing to fetch, nothing to run


def test_describe_platforms() -> None:
    assert describe_platforms(FILES) == [
        "Python 3.11, 3.13",
        "Linux aarch64",
        "Windows x86_64",
        "macOS arm64",
    ]


def test_connections_are_capped_per_client() -> None:
    limits = ClientLimits(LimitPolicy(max_connections=2))
    assert limits.connect("10.0.0.2", 0.0) is None
    assert limits.connect("10.0.0.2", 0.0) is None
    assert limits.connect("10.0.0.2", 0.0) is Refusal.TOO_MANY_CONNECTIONS
    assert limits.connect("10.0.0.3", 0.0) is None  # another client is not affected
    limits.disconnect("10.0.0.2")
    assert limits.connect("10.0.0.2", 0.0) is None


def test_requests_drain_a_bucket_that_refills_with_time() -> None:
    limits = ClientLimits(LimitPolicy(requests_per_s=2.0, request_burst=3))
    assert [limits.request("c", 0.0) for _ in range(4)] == [
        None,
        None,
        None,
        Refusal.TOO_MANY_REQUESTS,
    ]
    assert limits.retry_after_s("c", Refusal.TOO_MANY_REQUESTS, 0.0) == 1
    assert limits.request("c", 0.4) is Refusal.TOO_MANY_REQUESTS  # 0.8 of a token
    assert limits.request("c", 0.5) is None
    assert limits.request("other", 0.5) is None


def test_byte_budget_resets_with_the_window() -> None:
    limits = ClientLimits(LimitPolicy(bytes_per_window=100, window_s=60.0))
    assert limits.send("c", 60, 0.0) is None
    assert limits.send("c", 60, 1.0) is Refusal.TOO_MANY_BYTES  # would make 120
    assert limits.send("c", 40, 1.0) is None
    assert limits.retry_after_s("c", Refusal.TOO_MANY_BYTES, 1.0) == 60
    assert limits.send("c", 100, 60.0) is None  # a new window
