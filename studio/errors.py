"""Errors a user can meet and fix, shared by the command line, the window and the workers."""
from __future__ import annotations


class UserError(Exception):
    """An error the user can fix; printed as one line, no traceback, exit code 2."""
