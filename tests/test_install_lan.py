"""A room without internet: a laptop without lanchat installs it from the mentor and joins.

Host 1 (the mentor) serves a wheelhouse built by `lanchat bundle --from-installed` (this
machine's platform, no download) with `lanchat serve-install`, and runs lanchat. Host 2 has
only Python: a fresh virtual environment, no pip configuration, no cache, no route to any
index. It runs exactly the line the mentor's server printed, then the installed lanchat joins
host 1's room. A real headless Chromium on host 2 loads the landing page; its screenshot is
kept as <tmp>/lanchat-artefacts/install-landing.png (printed; LANCHAT_ARTEFACT_DIR chooses
another folder).
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING

import pytest
from lannode import LanNode
from vlan import reader_for

if TYPE_CHECKING:
    from collections.abc import Callable

    from vlan import VirtualLan

pytestmark = pytest.mark.lan

WAIT_S = 20.0
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
)


def _lines(stream: IO[str], count: int, timeout: float) -> list[str]:
    """The first `count` lines of `stream`, or TimeoutError (a thread does the blocking read)."""
    got: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in stream:
            got.put(line.rstrip("\n"))

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + timeout
    lines = []
    while len(lines) < count:
        try:
            lines.append(got.get(timeout=max(0.0, deadline - time.monotonic())))
        except queue.Empty:
            raise TimeoutError(f"got only {lines} within {timeout} s") from None
    return lines


def _student_env(home: Path, venv: Path) -> dict[str, str]:
    """A laptop with only Python: no pip settings or cache of ours, nothing from this checkout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") and k != "PYTHONPATH"}
    env.update(
        HOME=str(home),
        PATH=f"{venv / 'bin'}{os.pathsep}{env['PATH']}",
        PIP_CONFIG_FILE=os.devnull,  # the machine's pip.conf names local indexes
        XDG_CACHE_HOME=str(home / ".cache"),
    )
    return env


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_a_laptop_without_lanchat_installs_it_from_the_mentor_and_joins(
    vlan: Callable[..., VirtualLan], tmp_path: Path
) -> None:
    lan = vlan(2)
    house = tmp_path / "wheelhouse"
    bundled = subprocess.run(
        [sys.executable, "-m", "lanchat", "bundle", "--from-installed", "--dir", str(house)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert bundled.returncode == 0, bundled.stdout + bundled.stderr
    assert "every file verified" in bundled.stdout

    # Host 1: the mentor serves the wheelhouse and runs lanchat.
    server_err = tmp_path / "serve.stderr"
    with server_err.open("w") as err:
        server = lan.spawn(
            1,
            [sys.executable, "-m", "lanchat", "serve-install", "--dir", str(house)],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    assert server.stdout is not None
    try:
        banner = _lines(server.stdout, 2, WAIT_S)
    except TimeoutError:
        raise AssertionError(server_err.read_text()) from None
    url = banner[0].split()[3]
    command = banner[1].removeprefix("Install: ")
    assert url == f"http://{lan.ip(1)}:8765/"  # no mDNS name resolves in the lab: the address
    assert command == (
        f"python -m pip install --index-url {url}simple/ --trusted-host {lan.ip(1)} lanchat"
    )
    ann = LanNode(lan, 1, "ann", tmp_path / "ann", ["--mentor"])

    # Host 2: only Python. A fresh venv, then exactly the printed line.
    home = tmp_path / "student"
    home.mkdir()
    venv = home / "venv"
    env = _student_env(home, venv)
    made = lan.run(2, [sys.executable, "-m", "venv", str(venv)], env=env, cwd=home, timeout=120)
    assert made.returncode == 0, made.stderr
    started = time.monotonic()
    installed = lan.run(2, ["sh", "-c", command], env=env, cwd=home, timeout=180)
    install_s = time.monotonic() - started
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert f"{url}files/lanchat-" in installed.stdout
    print(f"\ninstall on host 2 took {install_s:.1f} s")

    version = lan.run(2, [str(venv / "bin" / "lanchat"), "--version"], env=env, cwd=home)
    assert version.stdout.strip() == "lanchat 0.1.0", version.stderr
    where = lan.run(
        2, ["python", "-c", "import lanchat; print(lanchat.__file__)"], env=env, cwd=home
    )
    assert where.stdout.startswith(str(venv)), where.stdout  # the installed copy, not ours

    # The installed lanchat joins host 1's room.
    ben_err = tmp_path / "ben.stderr"
    with ben_err.open("w") as err:
        ben = lan.spawn(
            2,
            [
                str(venv / "bin" / "lanchat"),
                "--headless",
                "--handle",
                "ben",
                "--profile",
                str(tmp_path / "ben"),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            env=env,
            cwd=home,
        )
    events = reader_for(ben.stdout)  # type: ignore[arg-type]
    broker = events.wait_for(lambda e: e.get("ev") == "broker", WAIT_S)
    assert broker["handle"] == "ann"
    ann.wait("peer_up", lambda e: e["handle"] == "ben", timeout=WAIT_S)
    ann.send(cmd="say", text="welcome, installed from my laptop")
    heard = events.wait_for(lambda e: e.get("ev") == "public", WAIT_S)
    assert heard["text"] == "welcome, installed from my laptop"

    # lanchat doctor on host 2 finds the install server (DNS-SD) and reaches it.
    doctor = lan.run(
        2,
        [str(venv / "bin" / "lanchat"), "doctor", "--json", "--listen", "2.0"],
        env=env,
        cwd=home,
        timeout=60,
    )
    report = json.loads(doctor.stdout)
    assert {"url": url, "reachable": True} in [
        {"url": s["url"], "reachable": s["reachable"]} for s in report["install_servers"]
    ], (report, doctor.stderr)

    # The landing page in a real browser on host 2.
    chromium = shutil.which("chromium")
    if chromium is None and os.environ.get("LANCHAT_REQUIRE_LAN") != "1":
        pytest.skip("chromium is not installed (Debian package chromium)")
    assert chromium is not None, "CI must install chromium (.ci/run)"
    # Outside pytest's temporary folders, which later runs of anyone's tests rotate away.
    default = Path(tempfile.gettempdir()) / "lanchat-artefacts"
    artefacts = Path(os.environ.get("LANCHAT_ARTEFACT_DIR", default))
    artefacts.mkdir(parents=True, exist_ok=True)
    shot = artefacts / "install-landing.png"
    browse = [chromium, *CHROMIUM_FLAGS, "--window-size=1200,1300"]
    dom = lan.run(
        2, [*browse, f"--user-data-dir={tmp_path / 'chrome1'}", "--dump-dom", url], timeout=60
    )
    page = dom.stdout
    assert "Install lanchat" in page, dom.stderr[-2000:]
    for line in (banner[1], f"py -m pip install --index-url {url}simple/"):
        assert line.removeprefix("Install: ").split(" --trusted-host")[0] in page
    assert "~/lanchat-env/bin/lanchat" in page
    taken = lan.run(
        2,
        [*browse, f"--user-data-dir={tmp_path / 'chrome2'}", f"--screenshot={shot}", url],
        timeout=60,
    )
    assert shot.exists(), taken.stderr[-2000:]
    assert _png_size(shot) == (1200, 1300)
    assert shot.stat().st_size > 20_000  # a rendered page, not a blank one
    print(f"landing page screenshot: {shot}")

    ben.stdin.close()  # type: ignore[union-attr]
    assert ben.wait(timeout=10) == 0
    ann.quit()
    server.terminate()
    assert server.wait(timeout=10) == 0
