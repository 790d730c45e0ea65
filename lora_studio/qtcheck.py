"""Before the window: can Qt's X11 platform plugin load on this Linux system?

On a minimal Linux install, ``libqxcb.so`` misses some of its xcb libraries and Qt aborts with
"Could not load the Qt platform plugin 'xcb'", often naming a library that is not the missing one.
``ldd`` on the plugin lists every library it needs, transitively, and marks those the system lacks
("not found"); the studio prints those and the one ``apt-get install`` line that adds them.
"""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

# soname -> Debian/Ubuntu package (the same names on both)
PACKAGES = {
    "libxcb-cursor.so.0": "libxcb-cursor0", "libxcb-icccm.so.4": "libxcb-icccm4",
    "libxcb-keysyms.so.1": "libxcb-keysyms1", "libxcb-image.so.0": "libxcb-image0",
    "libxcb-render-util.so.0": "libxcb-render-util0", "libxcb-xinerama.so.0": "libxcb-xinerama0",
    "libxcb-xkb.so.1": "libxcb-xkb1", "libxcb-randr.so.0": "libxcb-randr0", "libxcb-shape.so.0": "libxcb-shape0",
    "libxcb-shm.so.0": "libxcb-shm0", "libxcb-sync.so.1": "libxcb-sync1", "libxcb-xfixes.so.0": "libxcb-xfixes0",
    "libxcb-render.so.0": "libxcb-render0", "libxcb-util.so.1": "libxcb-util1", "libxcb-glx.so.0": "libxcb-glx0",
    "libxcb-xinput.so.0": "libxcb-xinput0", "libxcb.so.1": "libxcb1", "libX11-xcb.so.1": "libx11-xcb1",
    "libX11.so.6": "libx11-6", "libxkbcommon-x11.so.0": "libxkbcommon-x11-0", "libxkbcommon.so.0": "libxkbcommon0",
    "libEGL.so.1": "libegl1", "libGL.so.1": "libgl1", "libOpenGL.so.0": "libopengl0",
    "libfontconfig.so.1": "libfontconfig1", "libfreetype.so.6": "libfreetype6", "libdbus-1.so.3": "libdbus-1-3",
    "libSM.so.6": "libsm6", "libICE.so.6": "libice6", "libglib-2.0.so.0": "libglib2.0-0",
}
_NOT_FOUND = re.compile(r"^\s*(\S+)\s+=>\s+not found", re.MULTILINE)


def xcb_plugin() -> Path | None:
    """PySide6's libqxcb.so, found without importing Qt."""
    spec = importlib.util.find_spec("PySide6")
    if spec is None or not spec.origin:
        return None
    path = Path(spec.origin).parent / "Qt" / "plugins" / "platforms" / "libqxcb.so"
    return path if path.is_file() else None


def run_ldd(path: Path) -> str:
    """``ldd PATH``'s output, or '' when ldd is missing or fails (then Qt reports for itself)."""
    try:
        return subprocess.run(["ldd", str(path)], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def missing_libraries(ldd_output: str) -> list[str]:
    """The sonames ldd marks 'not found', in order, once each."""
    return list(dict.fromkeys(_NOT_FOUND.findall(ldd_output)))


def uses_xcb(env: dict | None = None) -> bool:
    """Whether Qt would load the xcb plugin: Linux, not a Wayland session, no other platform asked for."""
    env = os.environ if env is None else env
    if not sys.platform.startswith("linux"):
        return False
    asked = env.get("QT_QPA_PLATFORM", "")
    if asked:
        return asked.split(";")[0].split(":")[0] == "xcb"
    return not (env.get("WAYLAND_DISPLAY") and env.get("XDG_SESSION_TYPE") == "wayland")


def report(missing: list[str]) -> str:
    """What to print: the missing libraries and the apt-get line."""
    known = [PACKAGES[m] for m in missing if m in PACKAGES]
    unknown = [m for m in missing if m not in PACKAGES]
    lines = ["lora-studio: the window cannot open: Qt's X11 platform plugin (xcb) needs libraries this system lacks:",
             "  " + ", ".join(missing)]
    if known:
        lines += ["Install them (Debian, Ubuntu) with:", f"  sudo apt-get install -y {' '.join(dict.fromkeys(known))}"]
    if unknown:
        lines.append("Find the package of " + ", ".join(unknown) + " with: apt-file search NAME "
                     "(Fedora: dnf provides '*/NAME').")
    lines.append("The commands work without the window: lora-studio --help")
    return "\n".join(lines)


def check(env: dict | None = None, ldd=None) -> str | None:
    """The report when the xcb plugin would fail to load, else None (also when it cannot tell)."""
    if not uses_xcb(env):
        return None
    plugin = xcb_plugin()
    if plugin is None:
        return None
    missing = missing_libraries((ldd or run_ldd)(plugin))
    return report(missing) if missing else None
