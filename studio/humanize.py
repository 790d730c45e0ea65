"""Figures in words for the window: bytes, counts, time left.

Here rather than in ``ui`` so that the core's text for a page (``studio.modelview``,
``studio.data.display``) can be built and tested without Qt; ``ui.widgets.common`` re-exports them.
"""
from __future__ import annotations


def human_bytes(n: float | None) -> str:
    if n is None:
        return "–"
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit in ("B", "KiB") else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} TiB"


def human_count(n: float | None) -> str:
    if n is None:
        return "–"
    n = float(n)
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}" if unit == "B" else f"{n / div:.1f}{unit}"
    return f"{n:.0f}"


def human_eta(seconds: float | None) -> str:
    """Time left of a download: seconds under 90 s, minutes under 90 min, then hours."""
    if seconds is None:
        return "estimating time left"
    seconds = int(seconds)
    if seconds < 90:
        return f"{seconds} s left"
    if seconds < 5400:
        return f"{round(seconds / 60)} min left"
    return f"{seconds / 3600:.1f} h left"
