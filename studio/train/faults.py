"""TEST-ONLY fault injection for tests/faults/: read once from ``LORA_STUDIO_TEST_FAULT``.

A CPU has no out-of-memory error to provoke and a test disk is never full, so the fault tests
ask the worker to raise the real exception at a chosen point. Unset (always, outside tests),
every function here answers False. Syntax: ``KIND@WHERE[xN]`` joined by commas, e.g.
``oom@step=3x2`` (out of memory on the first two attempts at step 3), ``nan@step=5``,
``enospc@save=4``, ``oom@load``.
"""
from __future__ import annotations

import os

ENV = "LORA_STUDIO_TEST_FAULT"


def _parse(spec: str) -> dict[tuple[str, str], int]:
    out: dict[tuple[str, str], int] = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        kind, _, where = item.partition("@")
        where, _, times = where.partition("x")
        out[(kind, where)] = int(times or 1)
    return out


_pending = _parse(os.environ.get(ENV, ""))


def due(kind: str, where: str) -> bool:
    """True (once per remaining count) when a test asked for ``kind`` at ``where``."""
    left = _pending.get((kind, where), 0)
    if left <= 0:
        return False
    _pending[(kind, where)] = left - 1
    return True
