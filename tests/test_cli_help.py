"""Every command's --help as a user reads it: argparse %-formats help texts, so a setting whose description holds a
``%`` (gradient checkpointing's "about 30% slower") must reach it escaped, or the help prints argparse's internals."""
from __future__ import annotations

import argparse

from studio.cli import build_parser


def _commands(parser: argparse.ArgumentParser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _commands(sub)


def test_every_help_text_prints_as_written():
    helps = {p.prog: p.format_help() for p in _commands(build_parser())}
    assert len(helps) > 15
    broken = [prog for prog, text in helps.items() if "option_strings" in text or "%(" in text]
    assert broken == []
    plan = next(text for prog, text in helps.items() if prog.endswith(" plan"))
    assert "memory (about 30% slower)" in " ".join(plan.split())
