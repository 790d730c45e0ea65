"""Where the managed runtime lives on disk, and the interpreter a finished setup left there.

The launcher (``studio.procs``) asks this to pick the workers' Python; ``studio.runtime`` (setup,
doctor, state) uses the launcher, so these few facts stand below both. Never imports torch.
"""
from __future__ import annotations

import os
from pathlib import Path

from studio import paths
from studio.fsutil import read_json

MARKER = "lora-studio-runtime.json"


def runtime_dir() -> Path:
    return paths.data_dir() / "runtime"


def venv_python(root: Path) -> Path:
    return root / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def marker(root: Path | None = None) -> dict | None:
    data = read_json((root or runtime_dir()) / MARKER)
    return data if isinstance(data, dict) and data.get("complete") else None


def runtime_python() -> Path | None:
    """The runtime's interpreter if a setup finished there and the interpreter still exists."""
    root = runtime_dir()
    if marker(root) is None:
        return None
    python = venv_python(root)
    return python if python.exists() else None
