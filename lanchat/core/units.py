"""Quantities for people, in one unit system everywhere (screens, errors, the CLI)."""

from __future__ import annotations

__all__ = ["human_size"]

_STEP = 1000  # powers of 1000, as file managers and disk makers count


def human_size(size: float) -> str:
    """Bytes for people: 512 B, 3.0 MB, 47.3 MB, 1.2 GB."""
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < _STEP or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= _STEP
    raise AssertionError("unreachable")
