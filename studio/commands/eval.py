"""`lora-studio eval RUN_DIR`: write the run's evaluation report (eval.json) and print it."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from studio import chat_client, driver, evalreport
from studio.errors import UserError
from studio.events import DONE, ERROR, PROGRESS
from studio.procs import worker_argv
from studio.scoring import PromptFileError, load_prompts


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate a run: validation loss and held-out answers, base vs adapter",
                       description="Measure the validation loss and perplexity of the base model (adapter "
                                   "disabled) and of the run's adapter on the run's own validation tokens, and "
                                   "answer held-out prompts with both (--prompts, else the recipe's data.heldout, "
                                   "else a few validation conversations), scoring rows that carry a 'pattern'. "
                                   "Writes RUN_DIR/eval.json.")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("--prompts", type=Path, help="held-out prompts: JSONL with messages and an optional pattern; a "
                                                "row may carry images as a dataset row does (a vision-language run "
                                                "answers them with their images)")
    p.add_argument("--json", action="store_true", help="print eval.json instead of a summary")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    run_dir = chat_client.find_run(str(args.run_dir))
    if run_dir is None:
        raise UserError(f"{args.run_dir}: not a run folder (no recipe.json)")
    if args.prompts is not None:
        try:
            load_prompts(args.prompts)
        except PromptFileError as e:
            raise UserError(str(e)) from None
    extra = ["--prompts", str(args.prompts.resolve())] if args.prompts else []
    result: dict = {}

    def on_event(ev) -> None:
        d = ev.data
        if ev.type == PROGRESS:
            eta = (f", about {d['eta_s']:.0f} s left" if isinstance(d.get("eta_s"), (int, float))
                   and d.get("done") != d.get("total") else "")
            print(f"{d.get('phase')}: {d.get('done')}/{d.get('total')}{eta}", file=sys.stderr)
        elif ev.type in (ERROR, DONE):
            result[ev.type] = d

    with open(run_dir / "eval.log", "ab") as log:
        code = driver.follow(worker_argv("workers.evaluate", str(run_dir), *extra), log, on_event, driver.EVALUATE,
                             "stopping the answers (Ctrl-C again to end at once)")
    if ERROR in result:
        err = result[ERROR]
        print(f"eval failed ({err.get('kind')}): {err.get('message')}\nwhat to do: {err.get('hint')}\n"
              f"log: {run_dir / 'eval.log'}", file=sys.stderr)
        return 1
    if DONE not in result:
        print(f"the eval worker ended without a result (exit code {code}); log: {run_dir / 'eval.log'}",
              file=sys.stderr)
        return 1
    report = evalreport.read(run_dir)
    if report is None:  # the worker wrote it, but it went (the run deleted meanwhile) or cannot be read
        print(f"the eval worker finished but {run_dir / evalreport.EVAL_FILE} cannot be read; run the eval again",
              file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report, ensure_ascii=False, indent=1))
    else:
        print(evalreport.format_text(report))
        print(f"report: {run_dir / evalreport.EVAL_FILE}")
    return 0
