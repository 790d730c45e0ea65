"""Light and dark palettes that follow the system, plus a few style rules for the sidebar and cards.

Fusion draws the same on every platform; the palette comes from the system colour scheme
(Qt 6.5+ ``styleHints().colorScheme()``) and is re-applied when the system switches.
``LORA_STUDIO_THEME=dark|light`` forces one (screenshots, accessibility).
"""
from __future__ import annotations

import os

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QGuiApplication, QPalette
from PySide6.QtWidgets import QApplication

from studio import paths

ACCENT = "#2F6FEB"
GOOD, WARN, BAD = "#1A7F37", "#B35900", "#CF222E"


def is_dark() -> bool:
    forced = os.environ.get("LORA_STUDIO_THEME", "").lower()
    if forced in ("dark", "light"):
        return forced == "dark"
    hints = QGuiApplication.styleHints()
    return hasattr(hints, "colorScheme") and hints.colorScheme() == Qt.ColorScheme.Dark


def _palette(dark: bool) -> QPalette:
    p = QPalette()
    if dark:
        colors = {"Window": "#1E1F22", "WindowText": "#E6E6E6", "Base": "#17181A", "AlternateBase": "#232428",
                  "Text": "#E6E6E6", "Button": "#2B2D31", "ButtonText": "#E6E6E6", "ToolTipBase": "#2B2D31",
                  "ToolTipText": "#E6E6E6", "PlaceholderText": "#8B8F96", "Mid": "#3A3C41", "Dark": "#111214",
                  "Light": "#3A3C41", "Midlight": "#303236", "Shadow": "#000000", "BrightText": "#FFFFFF"}
    else:
        colors = {"Window": "#F5F6F8", "WindowText": "#1F2328", "Base": "#FFFFFF", "AlternateBase": "#F0F2F5",
                  "Text": "#1F2328", "Button": "#FBFBFC", "ButtonText": "#1F2328", "ToolTipBase": "#FFFFFF",
                  "ToolTipText": "#1F2328", "PlaceholderText": "#6E7781", "Mid": "#D0D7DE", "Dark": "#AFB8C1",
                  "Light": "#FFFFFF", "Midlight": "#EAEEF2", "Shadow": "#8C959F", "BrightText": "#FFFFFF"}
    for role, value in colors.items():
        p.setColor(getattr(QPalette.ColorRole, role), QColor(value))
    p.setColor(QPalette.ColorRole.Highlight, QColor(ACCENT))
    p.setColor(QPalette.ColorRole.HighlightedText, QColor("#FFFFFF"))
    p.setColor(QPalette.ColorRole.Link, QColor("#58A6FF" if dark else ACCENT))
    disabled = QColor("#6B6F76" if dark else "#8C959F")
    for role in (QPalette.ColorRole.Text, QPalette.ColorRole.ButtonText, QPalette.ColorRole.WindowText):
        p.setColor(QPalette.ColorGroup.Disabled, role, disabled)
    return p


def stylesheet(dark: bool) -> str:
    path = paths.resources_dir() / "theme" / "studio.qss"
    try:
        qss = path.read_text(encoding="utf-8")
    except OSError:
        return ""
    subs = {"@sidebar": "#191A1D" if dark else "#ECEEF1", "@border": "#34363B" if dark else "#D0D7DE",
            "@card": "#232428" if dark else "#FFFFFF", "@muted": "#9AA0A6" if dark else "#57606A",
            "@accent": ACCENT, "@hover": "#2A2C31" if dark else "#E1E4E8",
            "@banner": "#3D1F22" if dark else "#FFEBE9", "@bannerborder": "#8E3A3F" if dark else "#FF8182",
            "@drop": "#1B2A40" if dark else "#EEF4FF", "@focus": "#F0B429" if dark else "#0B3D91"}
    for key in sorted(subs, key=len, reverse=True):
        qss = qss.replace(key, subs[key])
    return qss


def apply(app: QApplication) -> None:
    """Style the whole application now and whenever the system colour scheme changes."""
    app.setStyle("Fusion")
    _apply_scheme(app)
    hints = QGuiApplication.styleHints()
    if hasattr(hints, "colorSchemeChanged"):
        hints.colorSchemeChanged.connect(lambda *_: _apply_scheme(app))


def _apply_scheme(app: QApplication) -> None:
    dark = is_dark()
    app.setPalette(_palette(dark))
    app.setStyleSheet(stylesheet(dark))
    app.setProperty("studio_dark", dark)


def icon_path(name: str) -> str:
    return str(paths.resources_dir() / "icons" / f"{name}.svg")


def icon(name: str):
    """An icon from resources/icons (SVG), tinted for the current scheme by a themed twin if present."""
    from PySide6.QtGui import QIcon

    base = paths.resources_dir() / "icons"
    dark = QApplication.instance() is not None and bool(QApplication.instance().property("studio_dark"))
    for candidate in ((base / f"{name}-dark.svg") if dark else None, base / f"{name}.svg"):
        if candidate is not None and candidate.is_file():
            return QIcon(str(candidate))
    return QIcon()
