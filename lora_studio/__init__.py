"""The ``lora-studio`` program: the window with no command (or ``gui``), every other command headless.

It stands above both halves of the studio so that neither imports the other: ``studio`` (the
core and its commands) never imports Qt, and ``ui`` (the window) never imports the commands.
"""
from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] == "gui":
        from lora_studio import qtcheck

        problem = qtcheck.check()  # before Qt: its own abort names the wrong library
        if problem:
            print(problem, file=sys.stderr)
            return 1
        try:
            from ui.app import run_app
        except ImportError as e:  # a core-only install (no 'gui' extra): say so, do not crash
            print(f"lora-studio: the desktop window needs the 'gui' extra ({e}); the commands work without it: "
                  "lora-studio --help", file=sys.stderr)
            return 1
        return run_app(argv[1:])
    from studio.cli import main as cli_main

    return cli_main(argv)
