"""Errors a user can meet and fix, shared by the command line, the window, the workers and every layer.

They live at the bottom of the house so that data import, export, inference and training raise and
catch the same classes without importing one another: a fault is explained by whoever meets it.
"""
from __future__ import annotations


class UserError(Exception):
    """An error the user can fix; printed as one line, no traceback, exit code 2."""


class Fault(RuntimeError):
    """A failure with a user-facing message, an error ``kind`` of the protocol and a ``hint``.

    The training worker reports one as an ``error`` event of that kind (``studio.train.errors``
    names it ``TrainingFault``); the trust checks (``studio.safety``) raise it before anything loads.
    """

    kind = "internal"

    def __init__(self, message: str, hint: str, **details: object) -> None:
        super().__init__(message)
        self.hint = hint
        self.details = details


class LoadError(RuntimeError):
    """The base model cannot be loaded; the message says what to do (``hint``: the one-line action, where it
    is more precise than the worker's general one)."""

    def __init__(self, message: str = "", hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint
