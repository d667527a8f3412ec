"""The errors of a profile, and the plain words for a disk that refuses a write."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["ProfileCorrupt", "ProfileError", "ProfileLocked"]

_LOCKED_ADVICE = (
    "another lanchat is already running with this profile; close it or use --profile DIR"
)


class ProfileError(Exception):
    """A profile cannot be opened or used."""


class ProfileLocked(ProfileError):
    """Another process (or another Profile in this process) holds the profile lock."""

    def __init__(self, path: Path, pid: int | None) -> None:
        holder = f"PID {pid}" if pid is not None else "an unknown PID"
        super().__init__(f"profile {path} is locked by {holder}: {_LOCKED_ADVICE}")
        self.path = path
        self.pid = pid


class ProfileCorrupt(ProfileError):
    """A profile file exists but is unreadable or not ours; it was left untouched."""

    def __init__(self, path: Path, reason: str, extra_advice: str = "") -> None:
        super().__init__(
            f"{path}: {reason}. Move it aside (e.g. mv {path} {path}.bad{extra_advice}) "
            "to start fresh; nothing was overwritten"
        )
        self.path = path
        self.reason = reason


def _plain_disk_error(exc: BaseException, directory: Path) -> str:
    text = str(exc).lower()
    if "full" in text or "no space" in text:
        what = "the disk is full"
    elif "readonly" in text or "read-only" in text:
        what = "the profile became read-only"
    else:
        what = f"the disk reported an error ({exc})"
    return (
        f"cannot save history in {directory}: {what}. New messages are kept in memory and "
        "saved as soon as the disk takes them again; they are lost if lanchat stops before"
    )
