"""`lanchat serve-install`: hand lanchat to every laptop in a room without internet.

Serves a wheelhouse (see lanchat/bundle.py) as a PEP 503 simple index over HTTP, read-only,
on the LAN address only, with a landing page at / that shows the one-line install command
per OS, and advertises it over DNS-SD (`_http._tcp`) so Bonjour/Avahi browsers list it.

One request per connection (Connection: close) keeps the server small; pip and browsers
reconnect as needed, and an install is some 20 requests.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import logging
import re
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final
from urllib.parse import unquote, urlsplit

from lanchat import __version__
from lanchat.core.installindex import (
    FILES_PATH,
    PIP_WHEEL_PATH,
    SIMPLE_PATH,
    ClientLimits,
    InstallCommands,
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
from lanchat.wheelhouse import scan

if TYPE_CHECKING:
    from collections.abc import Iterable

    from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

__all__ = [
    "DEFAULT_PORT",
    "HTTP_SERVICE_TYPE",
    "FoundServer",
    "InstallServer",
    "InstallServerError",
    "find_install_servers",
    "main",
    "start_install_server",
]

log = logging.getLogger(__name__)

DEFAULT_PORT: Final = 8765
HTTP_SERVICE_TYPE: Final = "_http._tcp.local."
# TXT keys: "path" is the DNS-SD convention for _http._tcp; "lanchat=install" tells
# `lanchat doctor` this web server is ours.
TXT_MARK: Final = {"lanchat": "install"}
REQUEST_HEAD_LIMIT: Final = 8192
REQUEST_HEAD_TIMEOUT_S: Final = 10.0
NAME_LOOKUP_TIMEOUT_S: Final = 1.0
SEND_CHUNK: Final = 256 * 1024

_REASONS = {
    200: "OK",
    301: "Moved Permanently",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
}


class InstallServerError(Exception):
    """The server cannot start (bad address, nothing to serve, port taken)."""


@dataclass(slots=True)
class _Response:
    status: int
    body: bytes = b""
    content_type: str = "text/html; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)
    file: Path | None = None
    size: int = 0


@dataclass(slots=True)
class InstallServer:
    """A running install server; `close()` stops serving and withdraws the advert."""

    url: str
    command: str  # the one line for any OS (issue #18's `install_server {url, command}`)
    commands: InstallCommands
    address: str
    port: int
    directory: Path
    files: list[WheelFile]
    refused: dict[str, str]
    _server: asyncio.Server
    _aiozc: AsyncZeroconf | None = None
    _info: AsyncServiceInfo | None = None
    _owns_zeroconf: bool = True

    async def close(self) -> None:
        if self._aiozc is not None:
            with contextlib.suppress(Exception):  # an advert that never made it is fine
                if self._info is not None:
                    await self._aiozc.async_unregister_service(self._info)
            if self._owns_zeroconf:
                await self._aiozc.async_close()
            self._aiozc = None
        self._server.close()
        await self._server.wait_closed()

    def event(self) -> dict[str, object]:
        """The headless `install_server` event: url and command, plus the lines per OS."""
        c = self.commands
        return {
            "ev": "install_server",
            "url": self.url,
            "command": self.command,
            "windows": c.windows,
            "unix": c.unix,
        }

    def banner(self) -> str:
        """What `lanchat serve-install` prints and the TUI shows: the lines for a projector."""
        c = self.commands
        by_address = f"http://{self.address}:{self.port}/"
        also = f" or {by_address}" if by_address != self.url else ""
        return "\n".join(
            [
                f"lanchat install server: {self.url}{also}  (open it in a browser for all the "
                "details)",
                f"Install: {c.command}",
                f"  Windows (PowerShell): {c.windows}   then: {c.windows_start}",
                f"  macOS, Linux:         {c.unix}   then: {c.unix_start}",
            ]
        )


def _check_address(address: str) -> ipaddress.IPv4Address:
    try:
        ip = ipaddress.IPv4Address(address)
    except ValueError:
        raise InstallServerError(f"{address!r} is not an IPv4 address") from None
    if ip.is_unspecified:
        raise InstallServerError("refusing to listen on every interface (0.0.0.0): name one")
    if not (ip.is_private or ip.is_loopback or ip.is_link_local):
        raise InstallServerError(f"{address} is not a LAN address: the server stays on the LAN")
    return ip


def _allowed_network(address: str) -> ipaddress.IPv4Network:
    """Clients must come from the interface's own subnet (a router forwarding more is refused)."""
    from lanchat.netif import NetifError, choose_address

    if ipaddress.IPv4Address(address).is_loopback:
        return ipaddress.IPv4Network("127.0.0.0/8")
    try:
        chosen = choose_address(address)
    except NetifError as exc:
        raise InstallServerError(str(exc)) from None
    return ipaddress.IPv4Network(f"{address}/{chosen.prefixlen}", strict=False)


async def _mdns_name(address: str) -> str | None:
    """`<hostname>.local` if this machine's resolver maps it to `address` (Bonjour/Avahi on)."""
    label = socket.gethostname().split(".")[0]
    if not label:
        return None
    name = f"{label}.local"
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(name, None, family=socket.AF_INET), NAME_LOOKUP_TIMEOUT_S
        )
    except (OSError, TimeoutError):
        return None
    return name if any(info[4][0] == address for info in infos) else None


def _version_key(filename: str) -> tuple[int, ...]:
    parsed = parse_wheel_name(filename)
    version = parsed.version if parsed else ""
    return tuple(int(part) for part in re.findall(r"\d+", version))


def _newest(files: Iterable[WheelFile]) -> WheelFile | None:
    return max(files, key=lambda f: _version_key(f.filename), default=None)


class _Site:
    """Routing for one wheelhouse: request target -> response (no I/O but the file to send)."""

    def __init__(self, directory: Path, files: list[WheelFile]) -> None:
        self._directory = directory
        self._files = files
        self._by_name = {f.filename: f for f in files}
        self.pip_wheel = _newest(f for f in files if f.project == "pip")
        self.landing = b""  # set once the port (part of every command on it) is known
        self._projects = render_projects(files)

    def respond(self, method: str, target: str) -> _Response:
        if method not in ("GET", "HEAD"):
            return _Response(405, b"read-only\n", "text/plain", {"Allow": "GET, HEAD"})
        path = unquote(urlsplit(target).path)
        if path in ("/", "/index.html") and self.landing:
            return _Response(200, self.landing)
        if path == SIMPLE_PATH.rstrip("/"):
            return _Response(301, headers={"Location": SIMPLE_PATH})
        if path == SIMPLE_PATH:
            return _Response(200, self._projects)
        if path.startswith(SIMPLE_PATH):
            name = path[len(SIMPLE_PATH) :].strip("/")
            if "/" in name or not name:
                return _Response(404, b"not found\n", "text/plain")
            if name != normalize(name) or not path.endswith("/"):
                return _Response(301, headers={"Location": f"{SIMPLE_PATH}{normalize(name)}/"})
            page = render_project(name, self._files)
            if page is None:
                return _Response(404, b"no such project here\n", "text/plain")
            return _Response(200, page)
        if path.startswith(FILES_PATH) or path == PIP_WHEEL_PATH:
            # Only names the scan listed: nothing else on disk is reachable.
            wheel = (
                self.pip_wheel
                if path == PIP_WHEEL_PATH
                else self._by_name.get(path[len(FILES_PATH) :])
            )
            if wheel is None:
                return _Response(404, b"not found\n", "text/plain")
            return _Response(
                200,
                content_type="application/octet-stream",
                file=self._directory / wheel.filename,
                size=wheel.size,
            )
        return _Response(404, b"not found\n", "text/plain")


class _Handler:
    def __init__(self, site: _Site, network: ipaddress.IPv4Network, limits: ClientLimits) -> None:
        self._site = site
        self._network = network
        self._limits = limits

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = str(writer.get_extra_info("peername")[0])
        try:
            if self._limits.connect(peer, time.monotonic()) is not None:
                return  # beyond its connection cap: hang up at once, read nothing
            try:
                await self._one_request(reader, writer, peer)
            finally:
                self._limits.disconnect(peer)
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError, ValueError):
            pass  # the client went away or spoke nonsense: nothing to answer
        finally:
            writer.close()
            with contextlib.suppress(OSError, ConnectionError):
                await writer.wait_closed()

    async def _one_request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str
    ) -> None:
        # The request is read before any answer, refusals too: closing a socket with unread
        # data resets it, and the client would see a reset instead of the reason.
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_HEAD_TIMEOUT_S)
        except asyncio.LimitOverrunError:
            await self._send(writer, "GET", _Response(431, b"header too large\n", "text/plain"))
            return
        if ipaddress.IPv4Address(peer) not in self._network:
            await self._send(writer, "GET", _Response(403, b"LAN only\n", "text/plain"))
            return
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = request_line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            await self._send(writer, "GET", _Response(400, b"bad request\n", "text/plain"))
            return
        method, target, _version = parts
        refusal = self._limits.request(peer, time.monotonic())
        if refusal is not None:
            await self._refuse(writer, peer, refusal)
            return
        response = self._site.respond(method, target)
        if response.file is not None and method == "GET":
            refusal = self._limits.send(peer, response.size, time.monotonic())
            if refusal is not None:
                await self._refuse(writer, peer, refusal)
                return
        await self._send(writer, method, response)

    async def _refuse(self, writer: asyncio.StreamWriter, peer: str, refusal: Refusal) -> None:
        retry = self._limits.retry_after_s(peer, refusal, time.monotonic())
        body = f"{refusal.value}: try again in {retry} s\n".encode()
        await self._send(
            writer, "GET", _Response(429, body, "text/plain", {"Retry-After": str(retry)})
        )

    async def _send(self, writer: asyncio.StreamWriter, method: str, response: _Response) -> None:
        length = response.size if response.file is not None else len(response.body)
        headers = {
            "Content-Type": response.content_type,
            "Content-Length": str(length),
            "Connection": "close",
            "Cache-Control": "no-cache",
            "X-Content-Type-Options": "nosniff",
            **response.headers,
        }
        status = f"HTTP/1.1 {response.status} {_REASONS.get(response.status, 'Status')}\r\n"
        head = status + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        writer.write(head.encode("latin-1"))
        if method == "HEAD":
            await writer.drain()
            return
        if response.file is None:
            writer.write(response.body)
            await writer.drain()
            return
        with response.file.open("rb") as f:
            while chunk := f.read(SEND_CHUNK):
                writer.write(chunk)
                await writer.drain()  # back-pressure: a slow client gets a slow stream


async def _advertise(
    address: str, port: int, shared: AsyncZeroconf | None
) -> tuple[AsyncZeroconf, AsyncServiceInfo]:
    from zeroconf import IPVersion
    from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

    label = "".join(c if c.isalnum() or c == "-" else "-" for c in socket.gethostname())
    label = label.split(".")[0].strip("-")[:40] or "mentor"
    aiozc = shared or AsyncZeroconf(interfaces=[address], ip_version=IPVersion.V4Only)
    info = AsyncServiceInfo(
        HTTP_SERVICE_TYPE,
        f"lanchat install on {label}.{HTTP_SERVICE_TYPE}",
        addresses=[socket.inet_aton(address)],
        port=port,
        properties={"path": "/", **TXT_MARK, "index": SIMPLE_PATH, "version": __version__},
        # Our own host name: claiming the machine's <hostname>.local next to Avahi or
        # Bonjour with other addresses would make them rename the machine.
        server=f"lanchat-install-{label}.local.",
    )
    try:
        await aiozc.async_register_service(info, allow_name_change=True)
    except BaseException:
        if shared is None:
            await aiozc.async_close()
        raise
    return aiozc, info


async def _listen(handler: _Handler, address: str, port: int) -> asyncio.Server:
    # No reuse_address: asyncio sets it on Unix, and on Windows it would let another socket
    # take a port in use.
    return await asyncio.start_server(handler, host=address, port=port, limit=REQUEST_HEAD_LIMIT)


async def start_install_server(
    directory: Path,
    interface_ip: str,
    port: int = DEFAULT_PORT,
    *,
    advertise: bool = True,
    use_mdns_name: bool = True,
    policy: LimitPolicy | None = None,
    clients: ipaddress.IPv4Network | None = None,
    any_port_if_taken: bool = False,
    zeroconf: AsyncZeroconf | None = None,
) -> InstallServer:
    """Serve `directory` on `interface_ip:port` (0: any free port) until `close()`.

    Only clients in `clients` are answered (default: the interface's own subnet). With
    `any_port_if_taken`, a taken `port` is replaced by a free one (every printed line carries
    the port). `zeroconf`: an instance to advertise on (a running node's), left open by
    `close()`; by default the server makes and closes its own.

    Raises InstallServerError if the address is not a LAN address, the wheelhouse has no
    lanchat wheel, or the port is taken.
    """
    _check_address(interface_ip)
    network = clients or _allowed_network(interface_ip)
    if not directory.is_dir():
        raise InstallServerError(f"no wheelhouse at {directory}: run `lanchat bundle` first")
    found = await asyncio.to_thread(scan, directory)
    if not any(f.project == "lanchat" for f in found.files):
        raise InstallServerError(
            f"no lanchat wheel in {directory}: run `lanchat bundle` (while online) first"
        )
    site = _Site(directory, found.files)
    handler = _Handler(site, network, ClientLimits(policy or LimitPolicy()))
    try:
        server = await _listen(handler, interface_ip, port)
    except OSError as exc:
        if not any_port_if_taken or port == 0:
            raise InstallServerError(f"cannot listen on {interface_ip}:{port}: {exc}") from None
        try:
            server = await _listen(handler, interface_ip, 0)
        except OSError as again:
            raise InstallServerError(f"cannot listen on {interface_ip}: {again}") from None
    bound_port = int(server.sockets[0].getsockname()[1])
    name = await _mdns_name(interface_ip) if use_mdns_name else None
    commands = install_commands(
        name or interface_ip, bound_port, serves_pip=site.pip_wheel is not None
    )
    # Set before anyone learns the port (with port 0, no one can know it before this returns).
    site.landing = render_landing(
        commands,
        version=__version__,
        platforms=describe_platforms(found.files),
        address_url=f"http://{interface_ip}:{bound_port}/" if name else None,
    )
    running = InstallServer(
        url=commands.url,
        command=commands.command,
        commands=commands,
        address=interface_ip,
        port=bound_port,
        directory=directory,
        files=found.files,
        refused=found.refused,
        _server=server,
    )
    if advertise:
        try:
            running._aiozc, running._info = await _advertise(interface_ip, bound_port, zeroconf)
            running._owns_zeroconf = zeroconf is None
        except Exception as exc:  # serving matters more than being listed by browsers
            log.warning("could not advertise the install server over DNS-SD: %s", exc)
    return running


async def _serve(args: argparse.Namespace) -> int:
    from lanchat.netif import NetifError, choose_address
    from lanchat.wheelhouse import default_dir

    try:
        address = choose_address(args.interface).address
    except NetifError as exc:
        print(f"lanchat serve-install: {exc}", file=sys.stderr)
        return 1
    directory: Path = args.dir or default_dir(args.profile)
    try:
        # The default port taken (a second server?): any free one will do.
        server = await start_install_server(
            directory, address, args.port, any_port_if_taken=args.port == DEFAULT_PORT
        )
    except InstallServerError as exc:
        print(f"lanchat serve-install: {exc}", file=sys.stderr)
        return 1
    for name, why in sorted(server.refused.items()):
        print(f"not serving {name}: {why}", file=sys.stderr)
    print(server.banner(), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # Windows: Ctrl-C only
            loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await server.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="lanchat serve-install",
        description="Serve lanchat and its dependencies to the laptops on this LAN (no "
        "internet needed): a package index plus a page with the install command per OS. "
        "Run `lanchat bundle` first, while online.",
    )
    parser.add_argument("--dir", type=Path, metavar="DIR", help="the wheelhouse to serve")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, metavar="P", help=f"TCP port ({DEFAULT_PORT})"
    )
    parser.add_argument("--interface", metavar="IP", help="serve on this address or interface")
    parser.add_argument(
        "--profile", type=Path, metavar="DIR", help="profile whose wheelhouse to serve"
    )
    args = parser.parse_args(argv)
    try:
        return asyncio.run(_serve(args))
    except KeyboardInterrupt:
        return 0


# ---- finding one (lanchat doctor) ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FoundServer:
    """An install server advertised on the LAN, and whether its index answered."""

    name: str
    url: str
    version: str
    reachable: bool


async def _index_answers(host: str, port: int, timeout_s: float) -> bool:
    """Whether GET /simple/lanchat/ returns 200 (the one page every install needs)."""
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(host, port)
            try:
                writer.write(
                    f"GET {SIMPLE_PATH}lanchat/ HTTP/1.1\r\nHost: {host}:{port}\r\n"
                    "Connection: close\r\n\r\n".encode()
                )
                await writer.drain()
                status = await reader.readline()
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
    except (OSError, TimeoutError):
        return False
    return status.split(b" ")[1:2] == [b"200"]


async def find_install_servers(
    address: str, listen_s: float, timeout_s: float = 2.0
) -> list[FoundServer]:
    """Browse `_http._tcp` on the interface at `address` for lanchat install servers."""
    from zeroconf import DNSQuestionType, IPVersion, ServiceStateChange, Zeroconf
    from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

    aiozc = AsyncZeroconf(interfaces=[address], ip_version=IPVersion.V4Only)
    names: set[str] = set()
    # QM, not zeroconf's default QU for a first query: a unicast answer goes to port 5353,
    # where the kernel hands it to one socket only, and another mDNS stack on this laptop (a
    # running lanchat, Avahi, Bonjour) may be the one that gets it.
    qm = DNSQuestionType.QM

    def on_change(
        zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        if state_change is not ServiceStateChange.Removed:
            names.add(name)

    browser = AsyncServiceBrowser(
        aiozc.zeroconf, HTTP_SERVICE_TYPE, handlers=[on_change], question_type=qm
    )
    try:
        await asyncio.sleep(listen_s)  # a survey: listen for a fixed window
        # Printers and NAS boxes advertise _http._tcp too: resolve them all at once.
        infos = [AsyncServiceInfo(HTTP_SERVICE_TYPE, name) for name in sorted(names)]
        resolved = await asyncio.gather(
            *(i.async_request(aiozc.zeroconf, 1000, question_type=qm) for i in infos)
        )
        found: list[tuple[str, str, int, str]] = []
        for info, ok in zip(infos, resolved, strict=True):
            if not ok or info.port is None:
                continue
            props = {
                k.decode(errors="replace"): (v or b"").decode(errors="replace")
                for k, v in info.properties.items()
            }
            addresses = info.parsed_addresses(IPVersion.V4Only)
            if props.get("lanchat") != TXT_MARK["lanchat"] or not addresses:
                continue
            found.append((info.name, addresses[0], info.port, props.get("version", "?")))
    finally:
        await browser.async_cancel()
        await aiozc.async_close()
    answers = await asyncio.gather(*(_index_answers(a, p, timeout_s) for _, a, p, _ in found))
    return [
        FoundServer(name.removesuffix(f".{HTTP_SERVICE_TYPE}"), f"http://{a}:{p}/", v, ok)
        for (name, a, p, v), ok in zip(found, answers, strict=True)
    ]
