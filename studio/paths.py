"""Where things live: the user's data folder (platformdirs), runs, converted models, resources.

``LORA_STUDIO_HOME`` overrides the data folder (tests and portable installs use it).
"""
from __future__ import annotations

import os
from pathlib import Path

APP_NAME = "lora-studio"
REPO_ROOT = Path(__file__).resolve().parent.parent


def resources_dir() -> Path:
    """The bundled resources (catalog, demo dataset, icons); PyInstaller sets sys._MEIPASS."""
    import sys

    base = getattr(sys, "_MEIPASS", None)
    if base and (Path(base) / "resources").is_dir():
        return Path(base) / "resources"
    return REPO_ROOT / "resources"


def data_dir() -> Path:
    home = os.environ.get("LORA_STUDIO_HOME")
    if home:
        return Path(home).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir(APP_NAME, appauthor=False))


def runs_dir(root: Path | str | None = None) -> Path:
    """``root`` when the user named a runs folder (``--runs-dir``, a caller's argument), else the data folder's."""
    return Path(root) if root else data_dir() / "runs"


def models_dir() -> Path:
    return data_dir() / "models"
