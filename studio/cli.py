"""The `lora-studio` command: every capability of the studio, headless.

Subcommands live one per module in ``studio.commands``; each module has
``register(subparsers)`` that adds its parser and sets ``func(args) -> int``. The list is
discovered, so adding a command is adding a module. The ``lora-studio`` program (``lora_studio``)
opens the window when no command is given; this module never imports the window.

A one-shot command that the window runs as a subprocess takes ``--events`` (``add_events_flag``):
stdout then carries only the worker protocol, ``args.emitter`` is set, and the command ends with a
``done`` event whose data is its result (or an ``error`` event).
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

import studio.commands as pkg
from studio import __version__, events
from studio.errors import UserError
from studio.termtext import printable

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are UserErrors: one line on stderr, exit code 2, like every other."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(message.removeprefix("argument "))


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="lora-studio",
        description="Fine-tune an open LLM on your own GPU, privately. With no command, opens the studio window.")
    parser.add_argument("--version", action="version", version=f"lora-studio {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"studio.commands.{info.name}").register(sub)
    return parser


def shown(error: BaseException) -> str:
    """An error's message for the terminal: its text names files, rows and template messages the user
    does not control, so escape sequences and bidi controls are written visibly (its own line breaks stay)."""
    return "\n".join(printable(line) for line in str(error).split("\n"))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UserError as e:
        print(f"lora-studio: {shown(e)} (see lora-studio --help)", file=sys.stderr)
        return EXIT_USAGE
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    args.emitter = events.Emitter(stream=events.reserve_stdout()) if getattr(args, "events", False) else None
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        if args.emitter is not None:  # the window reads the error from the protocol, in the same words
            args.emitter.emit(events.ERROR, kind="config", message=str(e), hint="")
        print(f"lora-studio {args.command}: {shown(e)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
