"""`lora-studio attach [RUN_DIR]`: follow a run whose worker outlived the window or terminal that started it."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from studio import attach, runs
from studio.commands.train import _report, _show
from studio.errors import UserError
from studio.termtext import printable, shell_arg


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("attach", help="follow a run that is still training (after the GUI or terminal closed)",
                       description="Show the progress of a running run from its run folder. Ctrl-C detaches; "
                                   "the run goes on. --stop asks it to stop cleanly (checkpoint and adapter saved).")
    p.add_argument("run_dir", nargs="?", type=Path, help="the run folder (default: the only running run)")
    p.add_argument("--runs-dir", type=Path, help="where run folders are (default: the studio's data folder)")
    p.add_argument("--stop", action="store_true", help="ask the run to stop cleanly instead of following it")
    p.set_defaults(func=run)


def _pick(args: argparse.Namespace) -> Path:
    if args.run_dir is not None:
        run_dir = args.run_dir.expanduser().resolve()
        if attach.worker_pid(run_dir) is None and attach.remote_worker(run_dir) is None:
            summary = runs.summarize(run_dir)  # "interrupted" when state.json says running but the worker died
            status = summary.status if summary else runs.read_state(run_dir).get("status", "unknown")
            shown = printable(run_dir)
            raise UserError(f"{shown}: no worker is training it (status: {printable(status, limit=40)}); "
                            f"'lora-studio resume {shell_arg(run_dir)}' continues a stopped or "
                            "killed run")
        return run_dir
    live = attach.live_runs(args.runs_dir)
    if len(live) != 1:
        names = ", ".join(printable(s.path) for s in live) or "none"
        raise UserError(f"{len(live)} runs are training ({names}); name the one to follow")
    return live[0].path


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm


    run_dir = _pick(args)
    if args.stop:
        if not attach.request_stop(run_dir):  # on another machine (a cluster): through the run's inbox
            runs.send_command(run_dir, "stop")
        print(f"asked {printable(run_dir.name)} to stop; it saves a checkpoint and its adapter, then exits")
        return 0
    print(f"attached to {printable(run_dir)} (Ctrl-C detaches; the run goes on)")
    bar = None
    result: dict[str, Any] = {"samples": {}}
    try:
        for ev in attach.follow(run_dir):
            if ev.type == "hello":  # a new worker attempt (after a resume): earlier outcomes no longer count
                result = {"samples": {}}
            bar = _show(ev, bar, result, tqdm)
    except KeyboardInterrupt:
        print(f"\ndetached; the run goes on. 'lora-studio attach {shell_arg(run_dir)}' follows it "
              "again", file=sys.stderr)
        return 0
    if bar:
        bar.close()
    result["returncode"] = None
    return _report(run_dir, result)
