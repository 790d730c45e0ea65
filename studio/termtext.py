"""Text read from disk made safe to print on a terminal (run names, labels, notes, errors, model ids).

A run folder, its labels.json or queue.json can hold anything: an escape sequence that clears the
screen or rewrites the title, a bidirectional override that shows ``evil`` as ``live``, a newline
that forges a row of ``runs list``, or bytes that are not UTF-8 (a folder name decoded with
surrogates, which ``print`` cannot even encode). ``printable`` writes every such character as its
visible Python escape (``\\x1b``, ``\\u202e``), so the user sees that it is there and nothing acts on it.
"""
from __future__ import annotations

import unicodedata
from typing import Any

# Control (Cc: C0, DEL, C1), format (Cf: bidi overrides, zero-width), surrogate (Cs: undecodable
# bytes of a file name), unassigned-private (Co) and line/paragraph separators (Zl, Zp).
_UNSAFE = frozenset(("Cc", "Cf", "Cs", "Co", "Zl", "Zp"))


def printable(value: Any, limit: int | None = None) -> str:
    """``value`` as one line of harmless text; cut to ``limit`` characters (with an ellipsis) when given."""
    text = value if isinstance(value, str) else str(value)
    if limit is not None and len(text) > limit:
        text = text[: max(0, limit - 1)]
        cut = True
    else:
        cut = False
    out = "".join(_escape(ch) if unicodedata.category(ch) in _UNSAFE else ch for ch in text)
    return out + "…" if cut else out


def unsafe(text: str) -> bool:
    """Whether ``text`` holds a character ``printable`` would escape: one that acts on a terminal or
    hides itself (a name from a server holding one is refused, ``studio.hub.checked_name``)."""
    return any(unicodedata.category(ch) in _UNSAFE for ch in text)


def _escape(ch: str) -> str:
    code = ord(ch)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (os.fsdecode's surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    return ascii(ch)[1:-1]


def json_text(obj: Any, indent: int | None = 1) -> str:
    """``json.dumps`` for a terminal: non-ASCII text stays readable, but every character ``printable``
    escapes is written as a JSON ``\\uXXXX`` escape, so the output parses to the same values."""
    import json

    text = json.dumps(obj, indent=indent, ensure_ascii=False)  # escapes C0 inside strings; its own newlines stay
    return "".join(_json_escape(ch) if ch != "\n" and unicodedata.category(ch) in _UNSAFE else ch for ch in text)


def _json_escape(ch: str) -> str:
    """JSON's escape of one character; beyond U+FFFF (private use planes, tag characters) a surrogate pair."""
    code = ord(ch)
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    code -= 0x10000
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def shell_arg(value: Any) -> str:
    """``value`` as one argument of a command the user copies into this platform's terminal, printable:
    POSIX shell quoting, or on Windows the rules Windows programs split their command line by (double
    quotes where needed; single quotes mean nothing to cmd.exe)."""
    import os
    import shlex
    import subprocess

    text = str(value)
    return printable(subprocess.list2cmdline([text]) if os.name == "nt" else shlex.quote(text))
