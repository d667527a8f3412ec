"""`python -m lanchat` as a user runs it: options, refusals and exit codes (no network needed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from lanchat import __version__
from lanchat.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 30
EXIT_USAGE = 2


def lanchat(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    # Loopback stands in when the machine has no LAN interface; no test here gets that far
    # except the ones that must fail before touching the network.
    env = {**os.environ, "LANCHAT_ALLOW_LOOPBACK": "1"}
    return subprocess.run(
        [sys.executable, "-m", "lanchat", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        cwd=ROOT,
        env=env,
        check=False,
    )


def events(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def only_error(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The one event a refused headless start prints: an error."""
    got = events(done.stdout)
    assert len(got) == 1, got
    assert got[0]["ev"] == "error"
    assert isinstance(got[0]["t"], float)
    return got[0]


# ---------------------------------------------------------------- help and version


def test_version_prints_the_version() -> None:
    done = lanchat("--version")
    assert done.returncode == 0
    assert done.stdout.strip() == f"lanchat {__version__}"


def test_help_mentions_every_option() -> None:
    done = lanchat("--help")
    assert done.returncode == 0
    options = [opt for action in build_parser()._actions for opt in action.option_strings if opt]
    assert set(options) >= {
        "--help",
        "--version",
        "--handle",
        "--profile",
        "--mentor",
        "--room",
        "--interface",
        "--connect",
        "--headless",
        "--verbose",
    }
    for option in options:
        assert option in done.stdout, f"{option} missing from --help"
    assert "lanchat doctor" in done.stdout


# ---------------------------------------------------------------- refused starts, headless


def test_headless_without_a_handle_on_a_fresh_profile_exits_2(tmp_path: Path) -> None:
    done = lanchat("--headless", "--profile", str(tmp_path / "p"))
    assert done.returncode == EXIT_USAGE
    error = only_error(done)
    assert error["code"] == "bad_command"
    assert "--handle" in error["message"]


def test_headless_bad_handle_exits_2_saying_why(tmp_path: Path) -> None:
    done = lanchat("--headless", "--handle", "a b", "--profile", str(tmp_path / "p"))
    assert done.returncode == EXIT_USAGE
    error = only_error(done)
    assert error["code"] == "bad_command"
    assert "handle" in error["message"]
    assert "' '" in error["message"]  # names the offending character


def test_headless_malformed_room_code_exits_2_saying_why(tmp_path: Path) -> None:
    done = lanchat(
        "--headless", "--handle", "ann", "--profile", str(tmp_path / "p"), "--room-code", "1234"
    )
    assert done.returncode == EXIT_USAGE
    error = only_error(done)
    assert error["code"] == "bad_command"
    assert "--room-code '1234' is not a room code" in error["message"]


def test_headless_connect_beyond_the_lan_is_refused(tmp_path: Path) -> None:
    done = lanchat(
        "--headless", "--handle", "ann", "--profile", str(tmp_path / "p"), "--connect", "8.8.8.8"
    )
    assert done.returncode == EXIT_USAGE
    error = only_error(done)
    assert error["code"] == "bad_command"
    assert "8.8.8.8" in error["message"]
    assert "never talks beyond the LAN" in error["message"]


def test_headless_corrupt_state_file_is_reported_and_left_alone(tmp_path: Path) -> None:
    profile = tmp_path / "p"
    profile.mkdir()
    state = profile / "state.json"
    state.write_bytes(b'{"settings": {"1": {"key": "handle", "va')
    before = state.stat()
    done = lanchat("--headless", "--handle", "ann", "--profile", str(profile))
    assert done.returncode == EXIT_USAGE
    error = only_error(done)
    assert error["code"] == "profile_error"
    assert str(state) in error["message"]
    assert state.read_bytes() == b'{"settings": {"1": {"key": "handle", "va'
    assert state.stat().st_mtime_ns == before.st_mtime_ns
    assert not list(profile.glob("state.json.*"))  # no temp or replacement file either


# ---------------------------------------------------------------- refused starts, interactive

# These fail before the screen starts, so they need no terminal: one line on stderr.


def test_interactive_bad_handle_exits_2_with_one_clear_line(tmp_path: Path) -> None:
    done = lanchat("--handle", "a b", "--profile", str(tmp_path / "p"))
    assert done.returncode == EXIT_USAGE
    assert done.stdout == ""
    assert done.stderr.startswith("lanchat: a handle is 1-32 characters")
    assert "' '" in done.stderr
    assert "Traceback" not in done.stderr


def test_interactive_connect_beyond_the_lan_is_refused_before_asking_anything(
    tmp_path: Path,
) -> None:
    # Fresh profile and no --handle: the check comes before the first-run handle question.
    done = lanchat("--profile", str(tmp_path / "p"), "--connect", "8.8.8.8")
    assert done.returncode == EXIT_USAGE
    assert "never talks beyond the LAN" in done.stderr
    assert "Choose a handle" not in done.stdout


def test_interactive_corrupt_state_file_is_reported_and_left_alone(tmp_path: Path) -> None:
    profile = tmp_path / "p"
    profile.mkdir()
    state = profile / "state.json"
    state.write_text("not json at all")
    done = lanchat("--handle", "ann", "--profile", str(profile))
    assert done.returncode == EXIT_USAGE
    assert done.stderr.startswith(f"lanchat: {state}: not valid JSON")
    assert state.read_text() == "not json at all"


# ---------------------------------------------------------------- wiring


def test_the_screen_does_not_import_the_command_line() -> None:
    code = "import sys, lanchat.ui.app; print('lanchat.cli' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert done.stdout.strip() == "False"


# A stand-in for one front end, run in a child process: reports where logging goes.
_ROOT_HANDLERS = """
import logging, sys
import lanchat.cli, lanchat.ui.app

def report(*_args):
    handlers = logging.getLogger().handlers
    print([type(h).__name__ for h in handlers], any(
        getattr(h, "stream", None) is sys.stderr for h in handlers))
    return 0

lanchat.ui.app.run_interactive = report
lanchat.cli._headless = report
sys.exit(lanchat.cli.main(sys.argv[1:]))
"""


@pytest.mark.parametrize(
    ("args", "to_stderr"),
    [(["--headless", "--handle", "bot"], True), (["--handle", "ann"], False)],
)
def test_only_headless_mode_logs_to_stderr(args: list[str], to_stderr: bool) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _ROOT_HANDLERS, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=TIMEOUT_S,
        check=True,
    )
    assert done.stdout.strip().endswith(str(to_stderr)), done.stdout


# Runs a headless start up to the event loop, then lists what it imported that only the
# screen, the doctor or an interactive first run needs (each costs start-up CPU).
_HEADLESS_IMPORTS = """
import json, sys
import lanchat.cli, lanchat.oscompat

def report(coro):
    coro.close()
    unwanted = ("prompt_toolkit", "lanchat.ui", "lanchat.doctor", "getpass")
    print(json.dumps(sorted(name for name in unwanted if name in sys.modules)))
    return 0

lanchat.oscompat.run = report  # how every front end runs its loop
sys.exit(lanchat.cli.main(sys.argv[1:]))
"""


def test_a_headless_start_imports_only_what_it_uses(tmp_path: Path) -> None:
    args = ["--headless", "--handle", "bot", "--profile", str(tmp_path / "p")]
    done = subprocess.run(
        [sys.executable, "-c", _HEADLESS_IMPORTS, *args, "--interface", "127.0.0.1"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == []


@pytest.mark.parametrize(
    ("platform", "words"),
    [
        ("win32", "Private networks"),
        ("darwin", "Local Network"),
        ("linux", "UDP port 5353"),
    ],
)
def test_doctor_gives_firewall_advice_for_the_os_it_runs_on(platform: str, words: str) -> None:
    from lanchat.doctor import firewall_advice

    advice = firewall_advice("multicast", platform)
    assert words in advice
    assert "--connect HOST" in advice  # the way around a firewall that cannot be changed
