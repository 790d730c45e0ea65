"""Where the window keeps the user's choices between sessions (geometry, recent folders, theme)."""
from __future__ import annotations

import os
from pathlib import Path

from PySide6.QtCore import QSettings


def settings() -> QSettings:
    """QSettings in the platform's place; beside the data folder when LORA_STUDIO_HOME is set (tests)."""
    home = os.environ.get("LORA_STUDIO_HOME")
    if home:
        return QSettings(str(Path(home) / "studio-settings.ini"), QSettings.Format.IniFormat)
    return QSettings()
