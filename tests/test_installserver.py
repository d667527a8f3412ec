"""The install server over real HTTP on loopback: index pages, files, refusals, limits."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import ipaddress
import re
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from lanchat.bundle import bundle
from lanchat.core.installindex import LimitPolicy
from lanchat.installserver import InstallServer, InstallServerError, start_install_server

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Coroutine
    from pathlib import Path

LOOPBACK = "127.0.0.1"
TIMEOUT_S = 5.0


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This machine's wheels, repacked from what is installed (no network)."""
    directory = tmp_path_factory.mktemp("wheelhouse")
    result = bundle(directory, [], from_installed=True, progress=lambda _line: None)
    assert not result.missing, result.missing
    return directory


async def _get(
    server: InstallServer, path: str, method: str = "GET", extra: str = ""
) -> tuple[int, dict[str, str], bytes]:
    async with asyncio.timeout(TIMEOUT_S):
        reader, writer = await asyncio.open_connection(server.address, server.port)
        writer.write(f"{method} {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode())
        await writer.drain()
        raw = await reader.read()  # the server closes after one response
        writer.close()
        await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split(" ")[1]), headers, body


def run_async(test: Callable[..., Coroutine[object, object, None]]) -> Callable[..., None]:
    """Run an async test body on a fresh event loop (fixtures stay synchronous)."""

    @functools.wraps(test)
    def run(*args: object, **kwargs: object) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


@contextlib.asynccontextmanager
async def serving(wheelhouse: Path, **options: object) -> AsyncIterator[InstallServer]:
    running = await start_install_server(wheelhouse, LOOPBACK, 0, advertise=False, **options)  # type: ignore[arg-type]
    try:
        yield running
    finally:
        await running.close()


@run_async
async def test_landing_page_and_index_answer(wheelhouse: Path) -> None:
    async with serving(wheelhouse) as server:
        status, headers, body = await _get(server, "/")
        assert status == 200
        assert headers["Content-Type"].startswith("text/html")
        assert server.commands.windows.encode() in body
        assert server.command == (
            f"python -m pip install --index-url http://{LOOPBACK}:{server.port}/simple/ "
            f"--trusted-host {LOOPBACK} lanchat"
        )
        status, _, body = await _get(server, "/simple/")
        assert status == 200
        assert b'href="/simple/lanchat/"' in body
        assert b'href="/simple/prompt-toolkit/"' in body


@run_async
async def test_every_listed_file_downloads_with_its_hash(wheelhouse: Path) -> None:
    async with serving(wheelhouse) as server:
        status, _, page = await _get(server, "/simple/pyzmq/")
        assert status == 200
        links = re.findall(rb'href="(/files/[^"#]+)#sha256=([0-9a-f]{64})"', page)
        assert links, page
        for path, digest in links:
            status, headers, body = await _get(server, path.decode())
            assert status == 200
            assert int(headers["Content-Length"]) == len(body)
            assert hashlib.sha256(body).hexdigest() == digest.decode()
        status, headers, body = await _get(server, links[0][0].decode(), method="HEAD")
        assert (status, body) == (200, b"")
        assert int(headers["Content-Length"]) > 0


@run_async
async def test_pip_wheel_is_served_and_runs_as_pip(wheelhouse: Path, tmp_path: Path) -> None:
    async with serving(wheelhouse) as server:
        status, _, body = await _get(server, "/pip.whl")
    assert "/pip.whl" in server.commands.unix_fallback
    assert status == 200
    wheel = tmp_path / "pip.whl"
    wheel.write_bytes(body)
    ran = subprocess.run(
        [sys.executable, f"{wheel}/pip", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ran.stdout.startswith("pip "), ran.stderr
    assert f"from {wheel / 'pip'}" in ran.stdout  # pip.whl\pip on Windows


@run_async
async def test_names_are_normalized_by_redirect(wheelhouse: Path) -> None:
    async with serving(wheelhouse) as server:
        status, headers, _ = await _get(server, "/simple/Prompt_Toolkit/")
        assert (status, headers["Location"]) == (301, "/simple/prompt-toolkit/")
        status, headers, _ = await _get(server, "/simple/lanchat")
        assert (status, headers["Location"]) == (301, "/simple/lanchat/")


@pytest.mark.parametrize(
    "path",
    ["/simple/nosuch/", "/files/SHA256SUMS", "/files/../SHA256SUMS", "/files/%2e%2e/SHA256SUMS"],
)
@run_async
async def test_nothing_else_on_disk_is_reachable(wheelhouse: Path, path: str) -> None:
    async with serving(wheelhouse) as server:
        status, _, _ = await _get(server, path)
        assert status == 404


@run_async
async def test_read_only(wheelhouse: Path) -> None:
    async with serving(wheelhouse) as server:
        status, headers, _ = await _get(server, "/simple/", method="POST")
        assert (status, headers["Allow"]) == (405, "GET, HEAD")


@run_async
async def test_request_rate_is_limited_per_client(wheelhouse: Path) -> None:
    policy = LimitPolicy(requests_per_s=0.001, request_burst=3)
    running = await start_install_server(wheelhouse, LOOPBACK, 0, advertise=False, policy=policy)
    try:
        statuses = [(await _get(running, "/simple/"))[0] for _ in range(3)]
        status, headers, _ = await _get(running, "/simple/")
    finally:
        await running.close()
    assert statuses == [200, 200, 200]
    assert status == 429
    assert int(headers["Retry-After"]) >= 1


@run_async
async def test_download_budget_is_limited_per_client(wheelhouse: Path) -> None:
    lanchat_wheel = next(wheelhouse.glob("lanchat-*.whl"))
    policy = LimitPolicy(bytes_per_window=lanchat_wheel.stat().st_size + 10)
    running = await start_install_server(wheelhouse, LOOPBACK, 0, advertise=False, policy=policy)
    try:
        first, _, _ = await _get(running, f"/files/{lanchat_wheel.name}")
        second, _, body = await _get(running, f"/files/{lanchat_wheel.name}")
        page, _, _ = await _get(running, "/simple/")  # pages do not count against it
    finally:
        await running.close()
    assert (first, second, page) == (200, 429, 200)
    assert b"download budget" in body


@run_async
async def test_clients_outside_the_subnet_are_refused(wheelhouse: Path) -> None:
    running = await start_install_server(
        wheelhouse, LOOPBACK, 0, advertise=False, clients=ipaddress.IPv4Network("10.0.0.0/8")
    )
    try:
        status, _, _ = await _get(running, "/")
    finally:
        await running.close()
    assert status == 403


@pytest.mark.parametrize(
    ("address", "why"),
    [("0.0.0.0", "every interface"), ("8.8.8.8", "not a LAN address"), ("nonsense", "IPv4")],
)
@run_async
async def test_refuses_addresses_beyond_the_lan(wheelhouse: Path, address: str, why: str) -> None:
    with pytest.raises(InstallServerError, match=why):
        await start_install_server(wheelhouse, address, 0, advertise=False)


@run_async
async def test_refuses_a_wheelhouse_without_lanchat(tmp_path: Path) -> None:
    with pytest.raises(InstallServerError, match="lanchat bundle"):
        await start_install_server(tmp_path, LOOPBACK, 0, advertise=False)


@run_async
async def test_a_file_changed_after_bundling_is_not_served(
    wheelhouse: Path, tmp_path: Path
) -> None:
    for path in wheelhouse.iterdir():
        (tmp_path / path.name).write_bytes(path.read_bytes())
    victim = next(tmp_path.glob("tinydb-*.whl"))
    victim.write_bytes(victim.read_bytes() + b"tampered")
    running = await start_install_server(tmp_path, LOOPBACK, 0, advertise=False)
    try:
        status, _, _ = await _get(running, "/simple/tinydb/")
    finally:
        await running.close()
    assert status == 404
    assert "hash differs" in running.refused[victim.name]


@run_async
async def test_a_taken_port_is_an_error_or_replaced_by_a_free_one(wheelhouse: Path) -> None:
    async with serving(wheelhouse) as first:
        with pytest.raises(InstallServerError, match="cannot listen"):
            await start_install_server(wheelhouse, LOOPBACK, first.port, advertise=False)
        second = await start_install_server(
            wheelhouse, LOOPBACK, first.port, advertise=False, any_port_if_taken=True
        )
        try:
            assert second.port != first.port
            assert f":{second.port}/simple/" in second.command
            status, _, _ = await _get(second, "/simple/lanchat/")
        finally:
            await second.close()
    assert status == 200


@run_async
async def test_headless_event(wheelhouse: Path) -> None:
    async with serving(wheelhouse) as server:
        event = server.event()
    assert event["ev"] == "install_server"
    assert event["url"] == server.url
    assert event["command"] == server.command
    assert event["unix"] == server.commands.unix
