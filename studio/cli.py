"""The `lora-studio` command: every capability of the studio, headless.

Subcommands live one per module in ``studio.commands``; each module has
``register(subparsers)`` that adds its parser and sets ``func(args) -> int``. The list is
discovered, so adding a command is adding a module. With no arguments the desktop window opens.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from studio import __version__

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


class UserError(Exception):
    """An error the user can fix; printed as one line, no traceback, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lora-studio",
        description="Fine-tune an open LLM on your own GPU, privately. With no command, opens the studio window.")
    parser.add_argument("--version", action="version", version=f"lora-studio {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    import studio.commands as pkg

    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"studio.commands.{info.name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        return _open_gui()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"lora-studio {args.command}: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _open_gui() -> int:
    try:
        from ui.app import run_app
    except ImportError as e:
        print(f"the desktop window is not available ({e}); try 'lora-studio --help'", file=sys.stderr)
        return EXIT_FAIL
    return run_app([])


if __name__ == "__main__":
    sys.exit(main())
