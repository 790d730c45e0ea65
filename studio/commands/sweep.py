"""`lora-studio sweep RECIPE --rank 8,16,32 [--lr 1e-4,2e-4]`: variants checked to fit, queued, ranked."""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from studio import runqueue, sweep
from studio.commands import add_events_flag, runs_root
from studio.commands.demo_model import ensure_with_progress
from studio.commands.queue import _detach, _run
from studio.commands.runs import say_skipped, table
from studio.commands.train import _recipe_from
from studio.errors import UserError
from studio.termtext import json_text, printable


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="train one recipe at several LoRA ranks / learning rates, ranked by validation loss",
                       description="Make every (rank, lr) variant of RECIPE (alpha keeps the recipe's alpha/rank "
                                   "ratio), check with the planner that EACH fits the memory budget before any "
                                   "starts, queue them (RUNS/queue.json, tagged with the sweep's id) and train them "
                                   "one after another. It ends with a table ranked by validation loss. With "
                                   "--detach the queue runs in the background: 'lora-studio sweep --results ID' "
                                   "prints the table later.")
    p.add_argument("recipe", nargs="?", type=Path, help="a recipe JSON file")
    p.add_argument("--demo", action="store_true", help="sweep the demo recipe")
    p.add_argument("--rank", help="LoRA ranks, comma-separated (e.g. 8,16,32)")
    p.add_argument("--lr", help="learning rates, comma-separated (e.g. 1e-4,2e-4)")
    p.add_argument("--max-steps", type=int, help="stop each variant after N optimizer steps")
    p.add_argument("--budget-gib", type=_gib, help="the memory budget each variant must fit (default: the GPU's "
                                                    "memory, or the system RAM a CPU run may use)")
    p.add_argument("--runs-dir", type=Path, help="where run folders and the queue go (default: the studio's data folder)")
    p.add_argument("--detach", action="store_true", help="queue the variants and run them in the background")
    p.add_argument("--results", metavar="SWEEP_ID", help="print the ranked table of an earlier sweep and exit")
    p.add_argument("--json", action="store_true", help="print the ranked table as JSON")
    add_events_flag(p)
    p.set_defaults(func=run)


MAX_BUDGET_GIB = 2.0 ** 20  # a pebibyte: far beyond any machine, and still a whole number of bytes


def _gib(text: str) -> float:
    """``--budget-gib``: a finite size in GiB above 0 (not nan, inf, 1e309 or a negative)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of GiB") from None
    if not math.isfinite(value) or not 0 < value <= MAX_BUDGET_GIB:
        raise argparse.ArgumentTypeError(f"{text!r}: give a size in GiB greater than 0 and at most "
                                         f"{MAX_BUDGET_GIB:.0f}, e.g. 24") from None
    return value


def run(args: argparse.Namespace) -> int:
    if args.results:
        return _print_ranked(args, args.results)
    if not args.rank and not args.lr:
        raise UserError("give --rank and/or --lr with comma-separated values, e.g. --rank 8,16,32")

    recipe = _recipe_from(argparse.Namespace(demo=args.demo, recipe=args.recipe, max_steps=args.max_steps))
    ranks = sweep.parse_values(args.rank, "lora.rank") if args.rank else None
    lrs = sweep.parse_values(args.lr, "train.lr") if args.lr else None
    variants = sweep.variants(recipe, ranks, lrs)
    for v in variants:
        problems = v.validate()
        if problems:
            raise UserError(f"variant {v.name} has problems:\n  " + "\n  ".join(str(p) for p in problems))
    if recipe.model.name_or_path == "demo" and args.emitter is None:
        ensure_with_progress()
    budget = max(1, int(args.budget_gib * 2**30)) if args.budget_gib is not None else None
    checks = sweep.check_fits(variants, budget)
    _say(args, f"sweep of {len(variants)} variant(s); the planner's check:\n{sweep.summary_text(checks)}")
    bad = [c["name"] for c in checks if not c["fits"]]
    if bad:
        raise UserError(f"{len(bad)} of {len(variants)} variants do not fit the memory budget "
                        f"({', '.join(bad)}); none was started. Drop those values, or lower train.micro_batch / "
                        "train.seq_len in the recipe")
    sweep_id = sweep.new_id()
    root = runs_root(args)
    entries = [runqueue.add(v, root, label=v.name, plan=c["plan"], sweep=sweep_id) for v, c in zip(variants, checks)]
    _say(args, f"queued {len(entries)} run(s) as {sweep_id}")
    if args.detach or runqueue.runner_pid(root):
        return _hand_over(args, root, sweep_id, entries)

    code = _run(argparse.Namespace(runs_dir=root, detach=False, limit=None, emitter=None))
    _print_ranked(args, sweep_id)
    return code


def _hand_over(args, root: Path, sweep_id: str, entries: list[dict]) -> int:
    """Leave the variants to a background runner (started now, or the one already at work)."""

    if not runqueue.runner_pid(root):
        _detach(argparse.Namespace(limit=None, emitter=None), root)
    _say(args, f"the queue runs them in the background; 'lora-studio sweep --results {sweep_id}"
               f"{' --runs-dir ' + str(root) if args.runs_dir else ''}' prints the ranked table")
    if args.emitter is not None:
        args.emitter.emit("done", sweep=sweep_id, entries=[e["id"] for e in entries])
    return 0


def _say(args, text: str) -> None:
    if args.emitter is not None:
        args.emitter.emit("log", message=text)
    else:
        print(text, file=sys.stderr, flush=True)


def _print_ranked(args, sweep_id: str) -> int:
    skipped: list = []
    rows = sweep.ranked(sweep_id, runs_root(args), skipped)

    say_skipped(skipped)
    if args.emitter is not None:
        args.emitter.emit("done", sweep=sweep_id, ranked=rows)
        return 0
    if args.json:
        print(json_text({"sweep": sweep_id, "ranked": rows}))
        return 0
    if not rows:
        raise UserError(f"no runs of {printable(sweep_id)} in {printable(runs_root(args))}")
    print(f"\n{printable(sweep_id)}: ranked by validation loss (lowest first)")
    print(table(rows))
    return 0
