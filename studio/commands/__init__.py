"""The ``lora-studio`` commands, one module each, discovered by ``studio.cli``."""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any, Callable, Mapping

from studio import paths
from studio.recipe import bounds_text, in_bounds, setting_field, setting_flag


def add_events_flag(parser: argparse.ArgumentParser) -> None:
    """``--events``: speak the worker protocol on stdout and end with a ``done`` event (for the window)."""
    parser.add_argument("--events", action="store_true",
                        help="JSON-lines events on stdout, ending with a 'done' event that carries the result")


def runs_root(args: argparse.Namespace) -> Path:
    """The runs folder a command works in: ``--runs-dir`` when given, else the data folder's."""
    return paths.runs_dir(getattr(args, "runs_dir", None))


def add_setting_args(parser: argparse.ArgumentParser, keys: tuple[str, ...]) -> None:
    """One option per recipe setting, its type, choices, bounds and help read from the recipe's metadata."""
    for key in keys:
        f = setting_field(key)
        meta, kind = f.metadata, type(f.default) if f.default is not dataclasses.MISSING else list
        bounds = bounds_text(meta)
        text = meta.get("doc", "") + (f" ({bounds})" if bounds else "")
        kw: dict = {"dest": key, "default": None, "help": text.replace("%", "%%")}  # argparse %-formats help
        if kind is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif meta.get("choices"):
            kw["choices"] = meta["choices"]
        else:
            kw["type"] = _parse_list if kind is list else _bounded(kind, meta, setting_flag(key))
            kw["metavar"] = key.split(".", 1)[1].upper()
        parser.add_argument(setting_flag(key), **kw)


def settings_from_args(args: argparse.Namespace, keys: tuple[str, ...]) -> dict:
    """The settings the user gave on the command line, by recipe name."""
    return {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}


def _parse_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _bounded(kind: type, meta: Mapping[str, Any], flag: str) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a{'n integer' if kind is int else ' number'}") from None
        if bounds_text(meta) and not in_bounds(value, meta):
            raise argparse.ArgumentTypeError(f"{flag} {text} is out of range: it must be {bounds_text(meta)}")
        return value
    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse
