"""Whether the managed runtime is ready (its lock, its state for the GUI); never imports torch.

Where it lives and which interpreter a finished setup left (``studio.runtime_home``) stand below
the launcher (``studio.procs``), which this package's setup and doctor use.
"""
from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

from studio import paths
from studio.runtime_home import marker, runtime_dir, runtime_python, venv_python

LOCK_NAME = "runtime-lock.txt"


class RuntimeSetupError(Exception):
    """Setting up the runtime failed; the message says what, why and what to do, and names the log."""

    def __init__(self, message: str, log_path: Path | None = None, step: str = "") -> None:
        super().__init__(message)
        self.log_path = log_path
        self.step = step


def log_path() -> Path:
    """The setup log lives outside the environment so it survives removing a broken one."""
    return paths.data_dir() / "logs" / "runtime-setup.log"


def lock_path() -> Path:
    """The lock shipped with the app (bundle) or kept in the repository (source checkout)."""
    base = getattr(sys, "_MEIPASS", None)
    candidates = [Path(base) / "installer" / LOCK_NAME] if base else []
    candidates.append(paths.REPO_ROOT / "installer" / LOCK_NAME)
    for path in candidates:
        if path.is_file():
            return path
    return candidates[-1]


def read_lock(path: Path | None = None) -> dict[str, str]:
    """The lock as {normalised name: version}; comments and blank lines are skipped."""
    pins: dict[str, str] = {}
    text = Path(path or lock_path()).read_text(encoding="utf-8")
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        if not sep or not name.strip() or not version.strip():
            raise ValueError(f"{path or lock_path()}, line {number}: expected 'name==version', got {raw!r}")
        pins[normalise(name)] = version.strip()
    return pins


def normalise(name: str) -> str:
    """PEP 503 name normalisation, so 'PySide6_Essentials' and 'pyside6-essentials' match."""
    out = name.strip().lower()
    for ch in "_.":
        out = out.replace(ch, "-")
    while "--" in out:
        out = out.replace("--", "-")
    return out


def lock_digest(path: Path | None = None) -> str:
    return hashlib.sha256(Path(path or lock_path()).read_bytes()).hexdigest()


def status() -> dict:
    """Where the runtime stands, for the GUI, the doctor and the CLI (never imports torch)."""
    root = runtime_dir()
    info = marker(root)
    python = venv_python(root)
    if info is None:
        state = "incomplete" if python.exists() else "missing"
    elif not python.exists():
        state = "broken"
    elif info.get("lock_sha256") != _safe_digest():
        state = "outdated"
    else:
        state = "ready"
    return {"state": state, "path": str(root), "python": str(python) if python.exists() else None,
            "log": str(log_path()), "variant": (info or {}).get("torch_variant"),
            "versions": (info or {}).get("versions", {}), "created": (info or {}).get("created")}


def _safe_digest() -> str | None:
    try:
        return lock_digest()
    except OSError:
        return None


def current_python_has_ml() -> bool:
    """True when this interpreter can run the workers itself (a source checkout with torch)."""
    if getattr(sys, "frozen", False):
        return False
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("torch", "transformers", "peft"))


def needs_setup() -> bool:
    """Whether the GUI should offer to create the runtime: nothing can run the workers yet."""
    if os.environ.get("LORA_STUDIO_PYTHON") or runtime_python() is not None:
        return False
    return not current_python_has_ml()
