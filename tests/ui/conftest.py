from __future__ import annotations

import sys
from pathlib import Path

import pytest

FAKE = Path(__file__).resolve().parent / "fake_workers" / "fake_worker.py"


@pytest.fixture
def fake_argv():
    """The command line of the fake worker in a given mode."""
    def make(mode: str, *args: str) -> list[str]:
        return [sys.executable, str(FAKE), mode, *map(str, args)]
    return make
