"""The errors an export can meet, each with the event kind, a one-line message and a hint."""
from __future__ import annotations

from typing import Callable


class ExportError(Exception):
    """An export that cannot go on; ``kind`` is the worker protocol's error kind."""

    kind = "internal"

    def __init__(self, message: str, hint: str = "", kind: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        if kind:
            self.kind = kind


class ConfigError(ExportError):
    """The run folder, the base model or the options do not allow this export."""

    kind = "config"


class UnsupportedModel(ConfigError):
    """An architecture, tokenizer or adapter shape this exporter does not handle (raised before any work)."""


class DiskError(ExportError):
    """Not enough space, or a write failed."""

    kind = "io"


class VerificationFailed(ExportError):
    """What was written does not behave like the model it came from."""

    kind = "internal"


class Cancelled(ExportError):
    """The user asked to stop; nothing is left under the final name."""

    kind = "cancelled"


# (phase, done, total) -> None; raises Cancelled when the user asked to stop.
Progress = Callable[[str, int, int], None]


def no_progress(phase: str, done: int, total: int) -> None:
    """The default progress callback: silent."""
