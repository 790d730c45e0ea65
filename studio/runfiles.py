"""Reading the JSON files of a run folder (and the queue) without trusting their shape.

A run folder's ``state.json``, ``recipe.json``, ``labels.json`` and ``adapter/lora_studio.json``
are written by the studio, but a crash, a hand edit, a sync tool or an attacker can leave a list
where an object belongs or a string where a number does. One such run must not take every other
run down with it: the readers here raise ``Damaged``, which names the run, the file and the field,
and the listings skip that run with that line. A file that is not a regular file (a FIFO would
block the reader forever) or is far larger than the studio ever writes is damaged too.
"""
from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path
from typing import Any

from studio.errors import UserError
from studio.termtext import printable

SMALL = 4 << 20    # state.json, recipe.json, labels.json, .trashed.json: a few KiB when the studio writes them
LARGE = 64 << 20   # adapter/lora_studio.json (it carries the evaluation's answers), queue.json (recipes, plans)

_KINDS = {
    "object": (dict,), "list": (list,), "string": (str,), "number": (int, float), "integer": (int,),
}


class Damaged(UserError):
    """A file of a run folder (or the queue) that cannot be what the studio wrote; the message names it."""

    def __init__(self, where: Path | str, what: str) -> None:
        self.where, self.what = str(where), what
        super().__init__(f"{printable(where)}: {what}")


def load(path: Path, limit: int = SMALL, missing: Any = None) -> Any:
    """The parsed JSON of ``path``; ``missing`` when it does not exist; ``Damaged`` when it cannot be read."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        return missing
    except OSError as e:
        raise Damaged(path, f"cannot be read ({e.strerror or e})") from None
    if not stat.S_ISREG(st.st_mode):
        raise Damaged(path, "is not a regular file (a folder, a FIFO or a device)")
    if st.st_size > limit:
        raise Damaged(path, f"is {st.st_size / 2**20:.1f} MiB, more than the {limit >> 20} MiB the studio ever "
                            "writes there")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # swapped for a FIFO since stat: no hang
        with os.fdopen(fd, "rb") as fh:
            data = fh.read(limit + 1)
        return json.loads(data.decode("utf-8"))
    except FileNotFoundError:
        return missing
    except OSError as e:
        raise Damaged(path, f"cannot be read ({e.strerror or e})") from None
    except UnicodeDecodeError as e:
        raise Damaged(path, f"is not UTF-8 text (byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise Damaged(path, f"is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}; cut short?)") from None
    except RecursionError:
        raise Damaged(path, "is nested too deeply to be a file the studio wrote") from None
    except ValueError as e:  # an integer of thousands of digits: Python's int parsing limit
        raise Damaged(path, f"holds a value the studio never writes ({printable(e, limit=120)})") from None


def load_object(path: Path, limit: int = SMALL) -> dict | None:
    """``load`` of a file that must hold one JSON object; None when it does not exist."""
    raw = load(path, limit)
    if raw is not None and not isinstance(raw, dict):
        raise Damaged(path, f"holds {_kind_of(raw)}, expected a JSON object")
    return raw


def get(obj: dict, dotted: str, kind: str, where: Path | str) -> Any:
    """``obj["a"]["b"]`` for ``"a.b"``, checked to be ``kind`` (None when missing or null)."""
    value: Any = obj
    walked: list[str] = []
    for key in dotted.split("."):
        if value is None:
            return None
        if not isinstance(value, dict):
            raise Damaged(where, f"'{'.'.join(walked)}' is {_kind_of(value)}, expected an object")
        walked.append(key)
        value = value.get(key)
    if value is None:
        return None
    if not isinstance(value, _KINDS[kind]) or isinstance(value, bool) and kind in ("number", "integer"):
        raise Damaged(where, f"'{dotted}' is {_kind_of(value)}, expected {_article(kind)}")
    return value


def finite(value: Any) -> bool:
    """A real number (not a bool) that is neither NaN nor infinite."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return abs(value) < 1e300 if isinstance(value, int) else math.isfinite(value)  # a 400-digit int: no float


def _kind_of(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
             float: "a number", type(None): "null"}
    shown = printable(json.dumps(value, ensure_ascii=False, default=str), limit=40)
    return f"{names.get(type(value), type(value).__name__)} ({shown})"


def _article(kind: str) -> str:
    return {"object": "an object", "integer": "an integer"}.get(kind, f"a {kind}")
