"""`lora-studio queue add|list|run|cancel|clear`: recipes run one after another, the queue kept on disk."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from studio import runqueue
from studio.commands import add_events_flag, runs_root
from studio.commands.train import _recipe_from, _show
from studio.errors import UserError
from studio.procs import start_detached, worker_argv
from studio.termtext import json_text, printable


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("queue", help="queue recipes to train one after another (the queue lives on disk)",
                       description="The queue is RUNS/queue.json: it survives closing the window and restarting "
                                   "the studio. 'queue run' trains the waiting entries in order, each as a normal "
                                   "run; with --detach it keeps going after the terminal (or the window) closes. "
                                   "A runner that was killed leaves its entry running: the next runner resumes "
                                   "that run from its last checkpoint.")
    verbs = p.add_subparsers(dest="verb", metavar="VERB")

    def verb(name: str, help_: str, func) -> argparse.ArgumentParser:
        v = verbs.add_parser(name, help=help_, description=help_)
        v.add_argument("--runs-dir", type=Path, help="the runs folder holding the queue (default: the studio's data folder)")
        v.set_defaults(func=func)
        return v

    v = verb("add", "add recipe files (or the demo) to the end of the queue", _add)
    v.add_argument("recipes", nargs="*", type=Path, metavar="RECIPE")
    v.add_argument("--demo", action="store_true", help="add the demo recipe")
    v.add_argument("--max-steps", type=int, help="stop each after N optimizer steps (overrides the recipes)")
    add_events_flag(v)
    v = verb("list", "the queue's entries in order, with their status and run folder", _list)
    v.add_argument("--json", action="store_true", help="print a JSON list")
    v = verb("run", "train the waiting entries in order until none waits", _run)
    v.add_argument("--detach", action="store_true",
                   help="run in the background, independent of this terminal; its output goes to RUNS/queue.log")
    v.add_argument("--limit", type=int, help="stop after N entries")
    add_events_flag(v)
    v = verb("cancel", "take a waiting entry off the queue", _cancel)
    v.add_argument("entry", metavar="ENTRY_ID", help="an entry id (or its end) as 'queue list' shows it")
    verb("clear", "forget the entries that ended (their runs stay)", _clear)
    p.set_defaults(func=lambda a: _list(argparse.Namespace(runs_dir=None, json=False)))


def _add(args) -> int:
    if not args.recipes and not args.demo:
        raise UserError("give recipe files, or --demo")
    sources = [None] if args.demo else []
    sources += list(args.recipes)
    added = []
    for src in sources:
        recipe = _recipe_from(argparse.Namespace(demo=src is None, recipe=src, max_steps=args.max_steps))
        added.append(runqueue.add(recipe, runs_root(args)))
    for e in added:
        if args.emitter is None:
            print(f"queued {e['id']}: {printable(e['label'])}")
    if args.emitter is not None:
        args.emitter.emit("done", entries=[e["id"] for e in added])
    elif runqueue.runner_pid(runs_root(args)) is None:
        print("no runner works this queue now: 'lora-studio queue run' (or --detach) starts one")
    return 0


def _list(args) -> int:
    entries, problems = runqueue.load(runs_root(args))
    path = runs_root(args) / runqueue.QUEUE_FILE
    if problems:
        print(f"{printable(path)} is damaged: " + "; ".join(printable(p, limit=200) for p in problems[:5])
              + ("; ..." if len(problems) > 5 else "") + ". Listed are the entries that could be read; the file "
              f"stays as it is until the queue next changes, which keeps it as {runqueue.QUEUE_FILE}.damaged-<time> "
              "beside it", file=sys.stderr)
    if args.json:
        print(json_text(entries))
        return 0
    pid = runqueue.runner_pid(runs_root(args))
    print(f"queue {printable(path)}: " + (f"a runner ({_pid_text(pid)}) works it" if pid else "no runner"))
    for e in entries:
        print(f"  {printable(e['id'], limit=60)}  {e['status']:<9}  {printable(e.get('label') or '', limit=60)}"
              + (f"  -> {printable(e['run'])}" if e.get("run") else "")
              + (f"  ({printable(e['error'], limit=300)})" if e.get("error") else ""))
    if not entries:
        print("  (empty)")
    return 0


def _pid_text(pid: int) -> str:
    """``runqueue.runner_pid`` as words: -1 is a runner holding the lock whose pid file is gone or not written yet."""
    return f"pid {pid}" if pid > 0 else "pid unknown"


def _run(args) -> int:
    root = runs_root(args)
    if args.detach:
        return _detach(args, root)

    pid = runqueue.runner_pid(root)
    if pid:
        raise UserError(f"a queue runner ({_pid_text(pid)}) already works this queue; entries added now are run by it")
    state: dict = {"bar": None}

    def close_bar() -> None:
        if state["bar"] is not None:
            state["bar"].close()
            state["bar"] = None

    def on_start(entry: dict, run_dir: Path) -> None:
        close_bar()
        if args.emitter is not None:
            args.emitter.emit("log", message=f"queue: {entry.get('label')} -> {run_dir}", entry=entry["id"],
                              run=str(run_dir))
        else:
            print(f"\n== {printable(entry['id'])}: {printable(entry.get('label') or '')}\nrun folder: "
                  f"{printable(run_dir)}", flush=True)
        state["bar"], state["result"] = None, {"samples": {}}

    def on_event(ev) -> None:
        if args.emitter is None:
            from tqdm import tqdm

            state["bar"] = _show(ev, state["bar"], state["result"], tqdm)

    done = runqueue.run(root, on_event=on_event, on_start=on_start, limit=args.limit)
    close_bar()
    if args.emitter is not None:
        args.emitter.emit("done", entries=done)
    else:
        print(f"\nqueue: {len(done)} run(s) ended: " + ", ".join(f"{printable(e.get('label') or e['id'])} {e['status']}"
                                                            for e in done)
              if done else "queue: nothing waits")
    return 0 if all(e["status"] != "failed" for e in done) else 1


def _detach(args, root: Path) -> int:
    """A runner in its own session (it outlives this terminal and any window), output to RUNS/queue.log."""

    pid = runqueue.runner_pid(root)
    if pid:
        message = f"a queue runner ({_pid_text(pid)}) already works this queue"
    else:
        argv = worker_argv("studio.cli", "queue", "run", "--runs-dir", str(root),
                           *(["--limit", str(args.limit)] if args.limit else []))
        root.mkdir(parents=True, exist_ok=True)
        with open(root / runqueue.RUNNER_LOG, "ab") as log:
            proc = start_detached(argv, log)
        pid, message = proc.pid, f"queue runner started (pid {proc.pid}); its output: {root / runqueue.RUNNER_LOG}"
    if args.emitter is not None:
        args.emitter.emit("done", pid=pid, log=str(root / runqueue.RUNNER_LOG), message=message)
    else:
        print(message, file=sys.stderr)
    return 0


def _cancel(args) -> int:
    e = runqueue.cancel(args.entry, runs_root(args))
    print(f"cancelled {printable(e['id'])} ({printable(e.get('label') or '')})")
    return 0


def _clear(args) -> int:
    print(f"forgot {runqueue.clear_done(runs_root(args))} ended entr(ies)")
    return 0
