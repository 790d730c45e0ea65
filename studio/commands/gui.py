"""`lora-studio gui [--demo] [--model M] [--data FILE] [--page NAME]`: open the studio window.

`lora-studio` with no command opens the same window with the last choices; this command lets a
script (``make run``) preselect the demo model and dataset or any other model and file.
"""
from __future__ import annotations

import argparse

from studio.errors import UserError


def register(subparsers) -> None:
    p = subparsers.add_parser("gui", help="open the studio window (optionally with a model and dataset chosen)",
                              description="Open the LoRA Studio desktop window.")
    p.add_argument("--demo", action="store_true", help="preselect the demo model and the demo dataset")
    p.add_argument("--model", help="preselect a model: 'demo', a folder or a catalog id")
    p.add_argument("--data", help="preselect a dataset file")
    p.add_argument("--page", choices=("model", "data", "plan", "train", "runs", "export"), help="open on this page")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    raise UserError("the window opens from the lora-studio program (lora-studio gui), not from python -m studio.cli")
