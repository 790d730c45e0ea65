"""Render the app icon (resources/icons/lora-studio.svg) to the PNG sizes, .ico and .icns we ship.

Run after changing the SVG: ``python installer/make_icons.py``. Qt renders the SVG (QtSvg) and
writes every format itself, so building for Windows or macOS needs no image library.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SVG = ROOT / "resources" / "icons" / "lora-studio.svg"
PNG_SIZES = (16, 24, 32, 48, 64, 128, 256, 512)  # freedesktop hicolor sizes
ICO_SIZE, ICNS_SIZE = 256, 512


def png_path(size: int) -> Path:
    return ROOT / "resources" / "icons" / f"lora-studio-{size}.png"


def render(size: int):
    """The SVG drawn into a transparent square image of ``size`` pixels."""
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QImage, QPainter
    from PySide6.QtSvg import QSvgRenderer

    image = QImage(size, size, QImage.Format.Format_ARGB32)
    image.fill(Qt.GlobalColor.transparent)
    painter = QPainter(image)
    QSvgRenderer(str(SVG)).render(painter)
    painter.end()
    return image


def main() -> int:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtGui import QGuiApplication

    _app = QGuiApplication.instance() or QGuiApplication([])
    for size in PNG_SIZES:
        if not render(size).save(str(png_path(size)), "PNG"):
            print(f"could not write {png_path(size)}", file=sys.stderr)
            return 1
    ok = render(ICO_SIZE).save(str(ROOT / "installer" / "lora-studio.ico"), "ICO")
    ok = render(ICNS_SIZE).save(str(ROOT / "installer" / "lora-studio.icns"), "ICNS") and ok
    print("icons written" if ok else "could not write the .ico/.icns files")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
