"""Install LoRA Studio into the user's desktop (freedesktop.org XDG): launcher entry, icons, MIME types.

    python installer/desktop.py [--exec COMMAND] [--uninstall]

Per user, under ``$XDG_DATA_HOME`` (default ``~/.local/share``): ``applications/lora-studio.desktop``
(Exec rewritten to an absolute command), ``icons/hicolor/*/apps/lora-studio.{png,svg}`` and
``mime/packages/lora-studio.xml``; then the caches are refreshed with the system's own tools when
they exist. The default command is the built bundle (``make app``) if there is one, else this
checkout's Python running the same entry point.
"""
from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from studio.fsutil import atomic_write_bytes, atomic_write_text  # noqa: E402

APP_ID = "lora-studio"
RESOURCES = ROOT / "resources"
BUNDLE = ROOT / "dist" / "lora-studio" / "lora-studio"
PNG_SIZES = (16, 24, 32, 48, 64, 128, 256, 512)


def data_home() -> Path:
    """$XDG_DATA_HOME, or ~/.local/share when it is unset or not absolute (XDG base directory spec)."""
    value = os.environ.get("XDG_DATA_HOME", "")
    return Path(value) if value and os.path.isabs(value) else Path.home() / ".local" / "share"


def default_command() -> list[str]:
    """The bundle when built, else this checkout's interpreter on the bundle's entry point."""
    if BUNDLE.is_file() and os.access(BUNDLE, os.X_OK):
        return [str(BUNDLE)]
    python = ROOT / ".venv" / "bin" / "python"
    return [str(python if python.exists() else Path(sys.executable)), str(ROOT / "installer" / "lora_studio_main.py")]


def desktop_entry(command: list[str]) -> str:
    """resources/lora-studio.desktop with Exec and TryExec pointing at ``command``."""
    lines = []
    for line in (RESOURCES / "lora-studio.desktop").read_text(encoding="utf-8").splitlines():
        if line.startswith("Exec="):
            line = "Exec=" + " ".join(_quote(part) for part in command) + " --gui %f"
        elif line.startswith("TryExec="):
            line = f"TryExec={command[0]}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def _quote(arg: str) -> str:
    """Desktop Entry spec quoting: double quotes, with backslash before '"', '`', '$' and '\\'."""
    arg = arg.replace("%", "%%")  # a literal percent sign is doubled (field codes use %)
    if not any(c in arg for c in ' \t\n"\'\\><~|&;$*?#()`'):
        return arg
    escaped = "".join("\\" + c if c in '"`$\\' else c for c in arg)
    return f'"{escaped}"'


def targets(home: Path) -> dict[str, Path]:
    """Every file this installer writes, by what it is."""
    out = {"desktop": home / "applications" / f"{APP_ID}.desktop",
           "mime": home / "mime" / "packages" / f"{APP_ID}.xml",
           "svg": home / "icons" / "hicolor" / "scalable" / "apps" / f"{APP_ID}.svg"}
    for size in PNG_SIZES:
        out[f"png{size}"] = home / "icons" / "hicolor" / f"{size}x{size}" / "apps" / f"{APP_ID}.png"
    return out


def install(home: Path | None = None, command: list[str] | None = None) -> dict[str, Path]:
    """Write the entry, icons and MIME types, then refresh the caches; returns what was written."""
    home = home or data_home()
    files = targets(home)
    atomic_write_text(files["desktop"], desktop_entry(command or default_command()))
    atomic_write_bytes(files["mime"], (RESOURCES / "mime" / f"{APP_ID}.xml").read_bytes())
    atomic_write_bytes(files["svg"], (RESOURCES / "icons" / f"{APP_ID}.svg").read_bytes())
    for size in PNG_SIZES:
        atomic_write_bytes(files[f"png{size}"], (RESOURCES / "icons" / f"{APP_ID}-{size}.png").read_bytes())
    refresh(home)
    return files


def uninstall(home: Path | None = None) -> list[Path]:
    home = home or data_home()
    removed = [p for p in targets(home).values() if p.exists()]
    for path in removed:
        path.unlink()
    refresh(home)
    return removed


def refresh(home: Path) -> list[str]:
    """Run the desktop's cache tools that are installed (each is optional); returns those run."""
    ran = []
    for tool, folder in (("update-mime-database", home / "mime"),
                         ("update-desktop-database", home / "applications"),
                         ("gtk-update-icon-cache", home / "icons" / "hicolor")):
        exe = shutil.which(tool)
        if exe and folder.is_dir():
            args = [exe, "-f", "-t", str(folder)] if tool == "gtk-update-icon-cache" else [exe, str(folder)]
            subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
            ran.append(tool)
    return ran


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="install-desktop", description=__doc__.splitlines()[0])
    p.add_argument("--exec", dest="command", help="the command the launcher runs (default: see --help)")
    p.add_argument("--uninstall", action="store_true", help="remove what an earlier install wrote")
    args = p.parse_args(argv)
    if args.uninstall:
        for path in uninstall():
            print(f"removed {path}")
        return 0
    command = shlex.split(args.command) if args.command else default_command()
    files = install(command=command)
    print(f"installed {files['desktop']} (runs: {shlex.join(command)})")
    print(f"icons in {data_home() / 'icons' / 'hicolor'}, MIME types in {files['mime']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
