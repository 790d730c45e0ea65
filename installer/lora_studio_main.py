"""Entry point of the bundled app: no arguments opens the window, arguments run the CLI.

``--gui [FILE]`` opens the window with a dataset file preselected (the desktop entry's
``Exec=... --gui %f``, so a double-clicked .jsonl/.csv/.parquet opens in the studio).

``--smoke-test`` (used by ``make app-test``) opens the real window offscreen, waits until it is
shown, checks the title, the version and the ML runtime (found, or offered to be created), prints
one JSON line with what it saw and exits 0 when everything holds, 1 otherwise.
"""
from __future__ import annotations

import json
import sys
import time

SMOKE_FLAG = "--smoke-test"
GUI_FLAG = "--gui"
SMOKE_TIMEOUT_S = 60.0


def main(argv: list[str]) -> int:
    if argv[:1] == [SMOKE_FLAG]:
        return smoke_test()
    if not argv or argv[0] == GUI_FLAG:
        return open_window(["--data", argv[1]] if len(argv) > 1 else [])
    if argv[0] == "gui":
        return open_window(argv[1:])
    if argv[0] == "-m":
        return no_runtime_worker(argv[1:2])
    from studio.cli import main as cli_main

    return cli_main(argv)


def open_window(gui_args: list[str], on_attached=None) -> int:
    """The studio window, with the runtime offer and Help > Diagnostics (ui/runtime_dialog.py)."""
    from PySide6.QtCore import QTimer

    from ui.app import build_app, run_app

    app = build_app()
    started = time.monotonic()

    def attach_when_shown() -> None:
        window = _main_window(app)
        if window is None and time.monotonic() - started < SMOKE_TIMEOUT_S:
            QTimer.singleShot(50, attach_when_shown)
            return
        if window is not None:
            from ui.runtime_dialog import attach

            attach(window)
        if on_attached is not None:
            on_attached(window, time.monotonic() - started)

    QTimer.singleShot(0, attach_when_shown)
    return run_app(gui_args)


def smoke_test() -> int:
    """Start the real window, then check it from inside its own event loop."""
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    result: dict = {}

    def check(window, waited_s: float) -> None:
        def inspect() -> None:  # one more turn of the loop so the offer bar is laid out and shown
            result.update(_inspect(window, waited_s))
            QApplication.instance().exit(0 if result["ok"] else 1)
        QTimer.singleShot(200, inspect)

    code = open_window([], on_attached=check)
    result.setdefault("ok", False)
    print(json.dumps(result), flush=True)
    return code if result["ok"] else 1


def no_runtime_worker(module: list[str]) -> int:
    """Asked to be a worker's Python (``-m workers.train``): the bundle has no torch, so say so in
    the worker protocol, which the window shows as the run's error with its hint."""
    from studio import events

    events.Emitter(stream=sys.stdout.buffer).emit(
        events.ERROR, kind="config", message=f"{' '.join(module) or 'this worker'} needs the ML runtime "
        "(PyTorch and friends), which is not set up yet.",
        hint="Use Help > Set up the ML runtime… (or the bar at the top of the window), then start again.")
    print("the ML runtime is not set up: run 'lora-studio runtime setup'", file=sys.stderr)
    return 2


def _main_window(app):
    from PySide6.QtWidgets import QMainWindow

    for widget in app.topLevelWidgets():
        if isinstance(widget, QMainWindow) and widget.isVisible():
            return widget
    return None


def _inspect(window, waited_s: float) -> dict:
    """What a user would see: the window, its version, and where the ML runtime stands."""
    from studio import __version__, paths
    from studio.runtime import state

    title = window.windowTitle() if window is not None else None
    status = state.status()
    needs = state.needs_setup()
    offer = _runtime_offer(window)
    checks = {
        "window_shown": window is not None,
        "title_ok": bool(title and title.startswith("LoRA Studio")),
        "resources_found": (paths.resources_dir() / "icons").is_dir(),
        "lock_found": state.lock_path().is_file(),
        "worker_sources_found": _worker_sources_found(),
        # Found (ready, or another interpreter can run the workers), or offered to be created.
        "runtime_found_or_offered": status["state"] == "ready" or not needs or offer,
    }
    return {"ok": all(checks.values()), "checks": checks, "title": title, "version": __version__,
            "runtime": status["state"], "needs_setup": needs, "setup_offered": offer,
            "frozen": bool(getattr(sys, "frozen", False)), "shown_after_s": round(waited_s, 2)}


def _runtime_offer(window) -> bool:
    """True when the window shows the offer to set up the runtime (ui/runtime_dialog.py)."""
    if window is None:
        return False
    try:
        from ui.runtime_dialog import offer_visible
    except ImportError:
        return False
    return offer_visible(window)


def _worker_sources_found() -> bool:
    """The runtime's interpreter imports studio and workers from the bundle's folder as sources."""
    from pathlib import Path

    base = Path(getattr(sys, "_MEIPASS", Path(__file__).resolve().parent.parent))
    return (base / "studio" / "runtime" / "state.py").is_file() and (base / "workers").is_dir()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
