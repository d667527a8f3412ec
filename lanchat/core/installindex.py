"""The install server's pure half: a PEP 503 simple index, the landing page, per-client limits.

No sockets and no clock: the server (lanchat/installserver.py) reads the wheelhouse, passes
the time in, and writes the bytes these functions return.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from enum import Enum
from typing import Final

__all__ = [
    "FILES_PATH",
    "PIP_WHEEL_PATH",
    "SIMPLE_PATH",
    "ClientLimits",
    "InstallCommands",
    "LimitPolicy",
    "Refusal",
    "WheelFile",
    "WheelName",
    "describe_platforms",
    "install_commands",
    "normalize",
    "parse_wheel_name",
    "render_landing",
    "render_project",
    "render_projects",
]

FILES_PATH: Final = "/files/"
# pip's own wheel, for laptops whose Python has no pip (Debian and Ubuntu without python3-pip
# and python3-venv): a pip wheel runs as `python3 pip.whl/pip`.
PIP_WHEEL_PATH: Final = "/pip.whl"
SIMPLE_PATH: Final = "/simple/"
# Where the landing page and the printed commands put the virtual environment on macOS and
# Linux: a venv sidesteps "externally managed environment" (PEP 668: Homebrew, Debian,
# Ubuntu), needs no administrator, and `rm -r` undoes it.
VENV_DIR: Final = "~/lanchat-env"

_NAME_RUN = re.compile(r"[-_.]+")
# {distribution}-{version}(-{build})?-{python}-{abi}-{platform}.whl (PEP 427)
_WHEEL = re.compile(
    r"^(?P<name>[A-Za-z0-9](?:[A-Za-z0-9._]*[A-Za-z0-9])?)-(?P<version>[^-]+)"
    r"(?:-(?P<build>\d[^-]*))?-(?P<python>[^-]+)-(?P<abi>[^-]+)-(?P<platform>[^-]+)\.whl$"
)


def normalize(name: str) -> str:
    """PEP 503 name normalization: runs of -, _ and . become one -, lower case."""
    return _NAME_RUN.sub("-", name).lower()


@dataclass(frozen=True, slots=True)
class WheelName:
    """The parts of a wheel's file name."""

    project: str  # normalized
    version: str
    python: str
    abi: str
    platform: str


def parse_wheel_name(filename: str) -> WheelName | None:
    """The parts of a wheel file name, or None if it is not one."""
    m = _WHEEL.match(filename)
    if m is None:
        return None
    return WheelName(normalize(m["name"]), m["version"], m["python"], m["abi"], m["platform"])


@dataclass(frozen=True, slots=True)
class WheelFile:
    """One wheel the index offers."""

    filename: str
    sha256: str
    size: int
    requires_python: str = ""

    @property
    def project(self) -> str:
        parsed = parse_wheel_name(self.filename)
        assert parsed is not None, self.filename
        return parsed.project


_CPYTHON_ABI = re.compile(r"^cp3(\d+)$")


def _system(platform: str) -> list[str]:
    arch = "aarch64" if platform.endswith(("aarch64", "arm64")) else "x86_64"
    if platform.startswith("win"):
        return [f"Windows {'arm64' if arch == 'aarch64' else 'x86_64'}"]
    if platform.startswith("macosx"):
        if platform.endswith("universal2"):
            return ["macOS arm64", "macOS x86_64"]
        return [f"macOS {'arm64' if arch == 'aarch64' else 'x86_64'}"]
    if "linux" in platform:
        return [f"Linux {arch}"]
    return []


def describe_platforms(files: list[WheelFile]) -> list[str]:
    """Which Pythons and systems a set of wheels serves, e.g. ["Python 3.11, 3.12", "Linux x86_64"].

    Pythons come from version-specific binary wheels (cp312-cp312); systems from binary
    platform tags. Pure-Python wheels say nothing about either.
    """
    pythons: set[int] = set()
    systems: set[str] = set()
    for f in files:
        parsed = parse_wheel_name(f.filename)
        if parsed is None:
            continue
        for abi in parsed.abi.split("."):
            if m := _CPYTHON_ABI.match(abi):
                pythons.add(int(m[1]))
        for platform in parsed.platform.split("."):
            if platform != "any":
                systems.update(_system(platform))
    described = sorted(systems)
    if pythons:
        described.insert(0, "Python " + ", ".join(f"3.{minor}" for minor in sorted(pythons)))
    return described


def _page(title: str, body: str) -> bytes:
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f'<meta name="pypi:repository-version" content="1.0"><title>{html.escape(title)}'
        f"</title></head><body>\n{body}</body></html>\n"
    ).encode()


def render_projects(files: list[WheelFile]) -> bytes:
    """/simple/: one link per project (PEP 503)."""
    projects = sorted({f.project for f in files})
    links = "".join(f'<a href="{SIMPLE_PATH}{p}/">{html.escape(p)}</a><br>\n' for p in projects)
    return _page("Simple index", links)


def render_project(project: str, files: list[WheelFile]) -> bytes | None:
    """/simple/<project>/: its files, each with a sha256 fragment pip checks; None if unknown."""
    mine = sorted((f for f in files if f.project == project), key=lambda f: f.filename)
    if not mine:
        return None
    links = []
    for f in mine:
        requires = (
            f' data-requires-python="{html.escape(f.requires_python)}"' if f.requires_python else ""
        )
        links.append(
            f'<a href="{FILES_PATH}{html.escape(f.filename)}#sha256={f.sha256}"{requires}>'
            f"{html.escape(f.filename)}</a><br>\n"
        )
    return _page(f"Links for {project}", "".join(links))


@dataclass(frozen=True, slots=True)
class InstallCommands:
    """What a student types, per OS: the install line and how to start lanchat after it."""

    url: str  # the landing page
    index_url: str
    command: str  # any OS, inside an existing Python environment
    windows: str
    windows_start: str
    unix: str  # macOS and Linux
    unix_start: str
    unix_fallback: str  # Debian/Ubuntu without python3-venv (and without pip, if we serve pip)


def install_commands(host: str, port: int, *, serves_pip: bool = False) -> InstallCommands:
    """The exact lines for an index at http://host:port/ (host: an mDNS name or an IPv4 address).

    `serves_pip`: the server has pip's wheel at PIP_WHEEL_PATH, so the fallback line need not
    rely on a pip being installed.
    """
    base = f"http://{host}:{port}"
    index = f"{base}{SIMPLE_PATH}"
    # pip ignores a plain-HTTP index unless its host is trusted; there is no TLS on a LAN
    # without internet, and pip still checks every file against the index's sha256.
    pip_args = f"--index-url {index} --trusted-host {host} lanchat"
    user_install = f"install --user --break-system-packages {pip_args}"
    if serves_pip:
        wheel = "/tmp/lanchat-pip.whl"
        fallback = (
            f"python3 -c \"import urllib.request as u; u.urlretrieve('{base}{PIP_WHEEL_PATH}', "
            f"'{wheel}')\" && python3 {wheel}/pip {user_install}"
        )
    else:
        fallback = f"python3 -m pip {user_install}"
    return InstallCommands(
        url=f"{base}/",
        index_url=index,
        command=f"python -m pip install {pip_args}",
        windows=f"py -m pip install {pip_args}",
        windows_start="py -m lanchat",
        unix=f"python3 -m venv {VENV_DIR} && {VENV_DIR}/bin/python -m pip install {pip_args}",
        unix_start=f"{VENV_DIR}/bin/lanchat",
        unix_fallback=fallback,
    )


_LANDING_CSS = """
body { font-family: system-ui, sans-serif; max-width: 62rem; margin: 2rem auto; padding: 0 1rem;
       color: #1d1d1f; background: #fafafa; line-height: 1.4; }
h1 { font-size: 2.2rem; margin-bottom: .2rem; }
h2 { font-size: 1.4rem; margin: 1.6rem 0 .4rem; }
.cmd { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 1.15rem;
       background: #1d1d1f; color: #f5f5f7; padding: .8rem 1rem; border-radius: .5rem;
       user-select: all; overflow-wrap: anywhere; }
.start { font-family: ui-monospace, Menlo, Consolas, monospace; font-weight: bold; }
.note { color: #555; font-size: .95rem; }
footer { margin-top: 2.5rem; color: #777; font-size: .85rem; }
"""


def render_landing(
    commands: InstallCommands,
    *,
    version: str,
    platforms: list[str],
    address_url: str | None = None,
) -> bytes:
    """The page at /: one install line per OS (click selects it) and how to start lanchat.

    ``address_url``: the same server by IP address, shown when the commands use an mDNS name
    that a laptop without mDNS name resolution cannot look up.
    """
    e = html.escape
    fallback_name = (
        f'<p class="note">Your laptop cannot find <b>{e(commands.url)}</b>? Open '
        f'<a href="{e(address_url)}">{e(address_url)}</a> instead and use the lines there.</p>'
        if address_url
        else ""
    )
    body = f"""<h1>Install lanchat</h1>
<p>No internet needed: this laptop serves lanchat {e(version)} and everything it needs.
Python 3.11 or newer must be installed. Copy the line for your system into a terminal
(a click selects it).</p>
<p>Wheels here for: {e(" · ".join(platforms)) or "none yet"}.</p>
{fallback_name}
<h2 id="windows">Windows (PowerShell)</h2>
<div class="cmd">{e(commands.windows)}</div>
<p>Then start it: <span class="start">{e(commands.windows_start)}</span></p>
<h2 id="macos">macOS (Terminal)</h2>
<div class="cmd">{e(commands.unix)}</div>
<p>Then start it: <span class="start">{e(commands.unix_start)}</span></p>
<h2 id="linux">Linux (terminal)</h2>
<div class="cmd">{e(commands.unix)}</div>
<p>Then start it: <span class="start">{e(commands.unix_start)}</span></p>
<p class="note">Debian or Ubuntu says <i>ensurepip is not available</i> (no python3-venv)?
Use this line instead:</p>
<div class="cmd">{e(commands.unix_fallback)}</div>
<p>Then start it: <span class="start">python3 -m lanchat</span></p>
<h2 id="other">Already in a virtual environment?</h2>
<div class="cmd">{e(commands.command)}</div>
<footer>Package index: <a href="{e(commands.index_url)}">{e(commands.index_url)}</a>,
served read-only from a mentor's laptop on this network.</footer>
"""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Install lanchat</title><style>{_LANDING_CSS}</style></head><body>\n"
        f"{body}</body></html>\n"
    ).encode()


# ---- per-client limits --------------------------------------------------------------


class Refusal(Enum):
    """Why a client's request is refused (each maps to one HTTP status)."""

    TOO_MANY_CONNECTIONS = "too many connections"
    TOO_MANY_REQUESTS = "too many requests"
    TOO_MANY_BYTES = "download budget used up"


@dataclass(frozen=True, slots=True)
class LimitPolicy:
    """Limits per client address: sized so a whole classroom installing at once never hits them
    (one install is some 20 requests and a few MB), while one runaway script cannot starve the
    room or fill the mentor's uplink."""

    max_connections: int = 8
    requests_per_s: float = 10.0
    request_burst: int = 100
    bytes_per_window: int = 256 * 1024 * 1024
    window_s: float = 600.0


@dataclass(slots=True)
class _Client:
    connections: int = 0
    tokens: float = 0.0
    refilled_at: float = 0.0
    window_start: float = 0.0
    bytes_in_window: int = 0


@dataclass(slots=True)
class ClientLimits:
    """Connection count, a request token bucket and a byte budget per window, per client."""

    policy: LimitPolicy = field(default_factory=LimitPolicy)
    _clients: dict[str, _Client] = field(default_factory=dict)

    def _client(self, client: str, now: float) -> _Client:
        state = self._clients.get(client)
        if state is None:
            state = _Client(tokens=self.policy.request_burst, refilled_at=now, window_start=now)
            self._clients[client] = state
        return state

    def connect(self, client: str, now: float) -> Refusal | None:
        """A connection opens; refused (and not counted) beyond max_connections."""
        state = self._client(client, now)
        if state.connections >= self.policy.max_connections:
            return Refusal.TOO_MANY_CONNECTIONS
        state.connections += 1
        return None

    def disconnect(self, client: str) -> None:
        state = self._clients.get(client)
        if state is not None and state.connections > 0:
            state.connections -= 1

    def request(self, client: str, now: float) -> Refusal | None:
        """A request arrives; it costs one token (refilled at requests_per_s up to the burst)."""
        state = self._client(client, now)
        elapsed = max(0.0, now - state.refilled_at)
        state.tokens = min(
            float(self.policy.request_burst), state.tokens + elapsed * self.policy.requests_per_s
        )
        state.refilled_at = now
        if state.tokens < 1.0:
            return Refusal.TOO_MANY_REQUESTS
        state.tokens -= 1.0
        return None

    def send(self, client: str, size: int, now: float) -> Refusal | None:
        """`size` bytes are about to be sent; refused if they would exceed the window's budget."""
        state = self._client(client, now)
        if now - state.window_start >= self.policy.window_s:
            state.window_start = now
            state.bytes_in_window = 0
        if state.bytes_in_window + size > self.policy.bytes_per_window:
            return Refusal.TOO_MANY_BYTES
        state.bytes_in_window += size
        return None

    def retry_after_s(self, client: str, refusal: Refusal, now: float) -> int:
        """A Retry-After for a refusal (whole seconds, at least 1)."""
        state = self._client(client, now)
        if refusal is Refusal.TOO_MANY_BYTES:
            return max(1, int(state.window_start + self.policy.window_s - now) + 1)
        if refusal is Refusal.TOO_MANY_REQUESTS:
            return max(1, int((1.0 - state.tokens) / self.policy.requests_per_s) + 1)
        return 1
