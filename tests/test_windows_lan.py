"""Windows CPython nodes (python.org's build, run in Wine) chatting on a virtual LAN.

Each node runs in its own network namespace with its own Wine prefix: Wine creates sockets in
its wineserver process, so one wineserver shared by two namespaces would put both nodes'
sockets in the first one's network. The prefixes are hard-linked copies of the one that
``../shared/tools/winepy.sh setup`` made (registry files copied: each wineserver rewrites its
own), so a copy costs milliseconds, not a gigabyte.

The interpreter and the project's Windows wheels come from ``winepy.sh setup`` and
``winepy.sh project .``; .ci/run does both. Elsewhere the test skips with the reason (or fails,
with LANCHAT_REQUIRE_WINE=1).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path, PureWindowsPath
from typing import TYPE_CHECKING

import pytest
from lannode import LanNode, wait_online

if TYPE_CHECKING:
    from collections.abc import Callable

    from vlan import VirtualLan

pytestmark = pytest.mark.lan

ROOT = Path(__file__).resolve().parents[1]
WINEPY_ROOT = Path(os.environ.get("WINEPY_ROOT", Path.home() / ".cache" / "winepy"))
PYTHON_EXE = WINEPY_ROOT / "python" / "python.exe"
START_S = 60.0  # Wine starts its services for a new prefix before Python runs


def _why_no_wine() -> str | None:
    if shutil.which("wine") is None:
        return "`wine` is not installed (../shared/tools/winepy.sh setup installs it)"
    if not PYTHON_EXE.exists() or not (WINEPY_ROOT / "prefix" / "system.reg").exists():
        return f"no Windows CPython in {WINEPY_ROOT} (run ../shared/tools/winepy.sh setup)"
    return None


def _windows_path(path: Path) -> str:
    return str(PureWindowsPath("Z:/", *path.resolve().parts[1:]))  # Wine maps / to Z:


@pytest.fixture
def windows_python(tmp_path: Path) -> Callable[[str], tuple[list[str], dict[str, str]]]:
    """``make(name) -> (argv, env)``: Windows CPython with a Wine prefix of its own."""
    why_not = _why_no_wine()
    if why_not and os.environ.get("LANCHAT_REQUIRE_WINE") == "1":
        pytest.fail(f"LANCHAT_REQUIRE_WINE=1 but {why_not}")
    if why_not:
        pytest.skip(why_not)

    def make(name: str) -> tuple[list[str], dict[str, str]]:
        prefix = tmp_path / f"wine-{name}"
        subprocess.run(["cp", "-al", str(WINEPY_ROOT / "prefix"), str(prefix)], check=True)
        for reg in prefix.glob("*.reg"):
            data = reg.read_bytes()
            reg.unlink()  # break the hard link: this prefix's wineserver rewrites its own
            reg.write_bytes(data)
        env = {
            **os.environ,
            "WINEPREFIX": str(prefix),
            "WINEDEBUG": "-all",
            "WINEDLLOVERRIDES": "mscoree,mshtml=",
            "WINEARCH": "win64",
            "PYTHONPATH": _windows_path(ROOT),
            "PYTHONUNBUFFERED": "1",
        }
        # python.exe cannot start with a regular file as stderr under Wine (WinError 6): the
        # node's stderr goes through a pipe to the log file.
        return ["bash", "-c", 'exec wine "$@" 2> >(cat >&2)', "wine", str(PYTHON_EXE)], env

    return make


def test_two_windows_nodes_chat_on_a_virtual_lan(
    vlan: Callable[..., VirtualLan],
    tmp_path: Path,
    windows_python: Callable[[str], tuple[list[str], dict[str, str]]],
) -> None:
    lan = vlan(2)
    started = time.monotonic()
    python, env = windows_python("ann")
    ann = LanNode(lan, 1, "ann", tmp_path / "ann", ["--mentor"], python=python, env=env)
    try:
        ann.wait("broker", lambda e: e.get("handle") == "ann", timeout=START_S)  # alone: ann
        python, env = windows_python("ben")
        # ben finds ann by mDNS (zeroconf's multicast works in Wine too, inside a namespace).
        ben = LanNode(lan, 2, "ben", tmp_path / "ben", python=python, env=env)
        try:
            ben.wait("broker", lambda e: e.get("handle") == "ann", timeout=START_S)
            wait_online(ann, {"ben"}, timeout=START_S)
            wait_online(ben, {"ann"}, timeout=START_S)
            ann.send(cmd="say", text="hello from windows ann")
            ben.send(cmd="say", text="hello from windows ben")
            for node, other in ((ann, ben), (ben, ann)):  # "public" is never our own
                event = node.wait("public", timeout=START_S)
                assert (event["from"], event["text"]) == (
                    other.handle,
                    f"hello from windows {other.handle}",
                ), node.stderr()
            assert ben.quit(timeout=START_S) == 0, ben.stderr()
        finally:
            if ben.proc.poll() is None:
                ben.kill()
        assert ann.quit(timeout=START_S) == 0, ann.stderr()
    finally:
        if ann.proc.poll() is None:
            ann.kill()
    print(f"two Windows nodes chatted in {time.monotonic() - started:.1f} s")
