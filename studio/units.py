"""How the studio writes sizes and durations for people: one home so the window and the CLI agree."""
from __future__ import annotations


def binary_bytes(n: float | None) -> str:
    """Bytes in binary units (GiB): memory budgets and predictions; "–" for no figure."""
    if n is None:
        return "–"
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit in ("B", "KiB") else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} TiB"


def human_count(n: float | None) -> str:
    """A count in k/M/B (tokens, parameters, downloads); "–" for no figure."""
    if n is None:
        return "–"
    n = float(n)
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}" if unit == "B" else f"{n / div:.1f}{unit}"
    return f"{n:.0f}"


def decimal_bytes(n: int) -> str:
    """Bytes in decimal units (MB), as file managers and the export CLI show file sizes."""
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"


human_bytes = binary_bytes  # the name the pages and studio.modelview use


def clock(seconds: float) -> str:
    """A duration as a clock (``m:ss`` or ``h:mm:ss``): elapsed and remaining time of a run."""
    seconds = max(0, int(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def number(value: object) -> float | None:
    """``value`` as a finite float, or None: worker events and run files may carry anything."""
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return v if v == v and abs(v) != float("inf") else None


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
