"""Desktop notifications: ``notify-send`` (Linux), ``osascript`` (macOS Notification Center)
or Windows PowerShell (a Windows toast), whichever this system has.

Optional and never blocking: the command runs in a worker thread that nothing on the
screen's path waits for (a thread, not an asyncio subprocess: Windows' selector loop, which
lanchat needs, cannot run subprocesses), and when no command is installed there are no
notifications (the terminal bell and the sidebar still say it). Texts go to the command as
separate arguments or environment variables, never through a shell or a script's source,
so nothing in them is interpreted.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
import sys
from typing import TYPE_CHECKING, Final, Protocol

from lanchat import oscompat

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


# The toast's texts come from the environment and become XML text nodes: never markup, never
# PowerShell source. Windows PowerShell 5.1 (in every Windows 10/11) reaches the WinRT API.
_TOAST: Final = "; ".join(
    (
        "$ErrorActionPreference = 'Stop'",
        "$m = [Windows.UI.Notifications.ToastNotificationManager, Windows.UI.Notifications,"
        " ContentType = WindowsRuntime]",
        "$x = $m::GetTemplateContent([Windows.UI.Notifications.ToastTemplateType]::ToastText02)",
        "$t = $x.GetElementsByTagName('text')",
        "[void]$t.Item(0).AppendChild($x.CreateTextNode($env:LANCHAT_TITLE))",
        "[void]$t.Item(1).AppendChild($x.CreateTextNode($env:LANCHAT_BODY))",
        "$n = [Windows.UI.Notifications.ToastNotification]::new($x)",
        # The app id PowerShell registers for itself: toasts need a registered sender.
        "$m::CreateToastNotifier("
        "'{1AC14E77-02E7-4E5D-B744-2EB1AE5198B7}\\WindowsPowerShell\\v1.0\\powershell.exe'"
        ").Show($n)",
    )
)


class Notifier(Protocol):
    def notify(self, title: str, body: str) -> None: ...


class DesktopNotifier:
    """Runs one desktop-notification command per call, in the background."""

    def __init__(
        self,
        argv: Callable[[str, str], list[str]],
        env: Callable[[str, str], dict[str, str]] | None = None,
    ) -> None:
        self._argv = argv
        self._env = env  # extra environment variables, for commands that read texts there
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
        if platform == "win32":
            powershell = which("powershell")  # Windows PowerShell; pwsh 7 has no WinRT types
            if powershell:
                command = [powershell, "-NoProfile", "-NonInteractive", "-Command", _TOAST]
                return cls(
                    lambda _title, _body: command,
                    lambda title, body: {"LANCHAT_TITLE": title, "LANCHAT_BODY": body},
                )
            return None
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
        title, body = _clip(title, TITLE_CHARS) or "lanchat", _clip(body, BODY_CHARS)
        env = {**os.environ, **self._env(title, body)} if self._env else None
        task = loop.create_task(asyncio.to_thread(_run, self._argv(title, body), env))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def drain(self) -> None:
        """Wait for the notifications under way (tests; nothing on the screen's path)."""
        while self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
            # Their done callbacks have not run yet if they were done already: without this,
            # a finished notification would keep this loop spinning without ever yielding.
            self._running.difference_update([task for task in self._running if task.done()])


def _osascript(exe: str, title: str, body: str) -> list[str]:
    argv = [exe]
    for line in _APPLESCRIPT:
        argv += ["-e", line]
    return [*argv, title, body]


def _clip(text: str, chars: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= chars else flat[: chars - 1] + "…"


def _run(argv: list[str], env: dict[str, str] | None) -> None:
    try:
        subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
            timeout=RUN_TIMEOUT_S,  # then killed
            check=False,
            **oscompat.detached(),  # Ctrl-C in the terminal is not for it
        )
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        log.debug("desktop notification failed: %s", exc)
