"""Desktop notifications through ``notify-send`` (Linux) or ``osascript`` (macOS), if present.

Optional and never blocking: the command runs as an asyncio subprocess that nothing on the
screen's path waits for, and when neither command is installed there are no notifications
(the terminal bell and the sidebar still say it). Texts go to the command as separate
arguments, never through a shell or a script's source, so nothing in them is interpreted.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import subprocess
import sys
from typing import TYPE_CHECKING, Final, Protocol

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["DesktopNotifier", "Notifier"]

log = logging.getLogger("lanchat.ui")

MAX_RUNNING: Final = 2  # a burst of messages does not start a burst of processes
RUN_TIMEOUT_S: Final = 10.0
TITLE_CHARS: Final = 60
BODY_CHARS: Final = 200

# AppleScript reads the texts from its arguments: quotes in a message cannot end a string.
_APPLESCRIPT: Final = (
    "on run argv",
    "display notification (item 2 of argv) with title (item 1 of argv)",
    "end run",
)


class Notifier(Protocol):
    def notify(self, title: str, body: str) -> None: ...


class DesktopNotifier:
    """Runs one desktop-notification command per call, in the background."""

    def __init__(self, argv: Callable[[str, str], list[str]]) -> None:
        self._argv = argv
        self._running: set[asyncio.Task[None]] = set()

    @classmethod
    def find(
        cls,
        which: Callable[[str], str | None] = shutil.which,
        platform: str = sys.platform,
    ) -> DesktopNotifier | None:
        """The notifier this system has, or None."""
        if platform == "darwin":
            osascript = which("osascript")
            if osascript:
                return cls(lambda title, body: _osascript(osascript, title, body))
        notify_send = which("notify-send")
        if notify_send:
            return cls(lambda title, body: [notify_send, "--app-name=lanchat", "--", title, body])
        return None

    def notify(self, title: str, body: str) -> None:
        if len(self._running) >= MAX_RUNNING:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        argv = self._argv(_clip(title, TITLE_CHARS) or "lanchat", _clip(body, BODY_CHARS))
        task = loop.create_task(_run(argv))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def drain(self) -> None:
        """Wait for the notifications under way (tests; nothing on the screen's path)."""
        while self._running:
            await asyncio.gather(*self._running, return_exceptions=True)


def _osascript(exe: str, title: str, body: str) -> list[str]:
    argv = [exe]
    for line in _APPLESCRIPT:
        argv += ["-e", line]
    return [*argv, title, body]


def _clip(text: str, chars: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= chars else flat[: chars - 1] + "…"


async def _run(argv: list[str]) -> None:
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C in the terminal is not for it
        )
        try:
            await asyncio.wait_for(proc.wait(), RUN_TIMEOUT_S)
        except TimeoutError:
            proc.kill()
            await proc.wait()
    except (OSError, ValueError) as exc:
        log.debug("desktop notification failed: %s", exc)
