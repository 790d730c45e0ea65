"""Entry point of the desktop window: ``lora-studio`` with no command calls ``run_app([])``.

    lora-studio-gui [--demo] [--model M] [--data FILE] [--page NAME]

``--demo`` preselects the demo model and the demo dataset (``make run``). The window is shown
before anything slow happens; pyqtgraph, hardware detection and the run history load right after.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from studio import planner
from studio.demo import demo_dataset, demo_recipe

T0 = time.perf_counter()

PAGES = ("model", "data", "plan", "train", "runs", "export")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="lora-studio", description="Open the LoRA Studio window.")
    p.add_argument("--demo", action="store_true", help="preselect the demo model and the demo dataset")
    p.add_argument("--model", help="preselect a model: 'demo', a folder or a catalog id")
    p.add_argument("--data", help="preselect a dataset file")
    p.add_argument("--page", choices=PAGES, help="open on this page")
    p.add_argument("--quit-when-ready", action="store_true", help=argparse.SUPPRESS)  # bench/gui_startup.py
    return p.parse_args(argv)


def build_app(argv: list[str] | None = None):
    """The QApplication with name, icon and theme (reused by tests and benches)."""
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(["lora-studio", *(argv or [])])
    app.setApplicationName("LoRA Studio")
    app.setOrganizationName("LoRA Studio")
    app.setDesktopFileName("lora-studio")
    from ui import theme

    theme.apply(app)
    app.setWindowIcon(theme.icon("app"))
    return app


def apply_choices(window, args: argparse.Namespace) -> None:
    """Preselect what the command line asked for, else what the user chose last time."""
    if args.demo or args.model or args.data:
        model = args.model or ("demo" if args.demo else None)
        data = args.data
        if args.demo:  # what the README promises: 4-bit QLoRA at the demo's rank, batch and length
            window.session.use_recipe(demo_recipe(), pin=planner.fixed_from_recipe(demo_recipe()))
        if args.demo and not data:
            data = str(demo_dataset())
        if model:
            window.model_page.choose(model)
        if data:
            window.data_page.load(Path(data))
        if args.demo and not args.page:
            window.show_page(window.plan_page)
    else:
        window.restore_choices()
    if args.page:
        window.show_page(PAGES.index(args.page))


def no_display() -> bool:
    """On Linux without X11 or Wayland Qt would abort; say so instead."""
    import os

    return (sys.platform.startswith("linux") and not os.environ.get("QT_QPA_PLATFORM")
            and not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"))


def run_app(argv: list[str]) -> int:
    """Open the window and run the event loop; returns the exit code."""
    args = parse_args(argv)
    if no_display():
        print("lora-studio: no display to open the window on (DISPLAY and WAYLAND_DISPLAY are unset). "
              "Run it in a desktop session, under xvfb-run, or use the commands: lora-studio --help",
              file=sys.stderr)
        return 2
    app = build_app()

    from ui.main_window import MainWindow

    window = MainWindow()
    window.show()
    steps = [*window.startup_steps(), lambda: apply_choices(window, args), window.park_long_lived]
    longest: list[float] = []
    if args.quit_when_ready:
        steps.append(lambda: _report_ready(app, longest))
    run_in_turns(steps, longest)
    if args.quit_when_ready:
        _probe_input(app, window)
    code = app.exec()
    window.end_workers()  # also when the loop ended without closing the window (app.quit)
    return code


def run_in_turns(steps: list, longest: list[float] | None = None) -> None:
    """Run ``steps`` one per turn of the event loop: a click or a key between two steps is handled
    at once instead of waiting for all the start-up work (the window accepts input right away).
    ``longest`` keeps the longest step's seconds: the worst wait an input can have."""
    from PySide6.QtCore import QTimer

    def step() -> None:
        t = time.perf_counter()
        steps.pop(0)()
        if longest is not None:
            longest[:] = [max([time.perf_counter() - t, *longest])]
        if steps:
            QTimer.singleShot(0, step)

    QTimer.singleShot(0, step)


def _probe_input(app, window) -> None:
    """bench/gui_startup.py: an input event posted as the window appears; print when it is handled."""
    from PySide6.QtCore import QCoreApplication, QEvent, QObject

    class Probe(QObject):
        def event(self, e) -> bool:  # noqa: N802 - Qt's name
            if e.type() == QEvent.Type.User:
                print(f"input_handled_after_s={time.perf_counter() - T0:.3f}", flush=True)
                return True
            return super().event(e)

    app._startup_probe = Probe()
    QCoreApplication.postEvent(app._startup_probe, QEvent(QEvent.Type.User))


def _report_ready(app, longest: list[float]) -> None:
    print(f"startup_done_after_s={time.perf_counter() - T0:.3f}", flush=True)
    print(f"longest_step_s={longest[0] if longest else 0:.3f}", flush=True)
    app.quit()


def main() -> None:
    sys.exit(run_app(sys.argv[1:]))


if __name__ == "__main__":
    main()
