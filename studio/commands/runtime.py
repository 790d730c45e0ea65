"""`lora-studio runtime status|setup|remove`: the managed ML runtime from the command line.

``setup --events`` speaks the worker protocol (studio.events) on stdout, so the GUI's first-run
dialog can drive it as a QProcess and show progress, the current pip line and the error in words.
"""
from __future__ import annotations

import json
import sys

from studio import events
from studio.commands import add_events_flag
from studio.runtime import setup, state


def register(subparsers) -> None:
    p = subparsers.add_parser("runtime", help="set up, check or remove the ML runtime (torch and friends)",
                              description="The ML runtime is a Python environment in the data folder that "
                                          "holds torch, transformers, peft and bitsandbytes for the workers.")
    p.add_argument("action", choices=("status", "setup", "remove"), help="what to do")
    p.add_argument("--json", action="store_true", help="status: print JSON")
    add_events_flag(p)
    p.set_defaults(func=run)


def run(args) -> int:
    if args.action == "status":
        return _status(args.json)
    if args.action == "remove":
        removed = setup.remove_runtime()
        print(f"removed {state.runtime_dir()}" if removed else f"no runtime at {state.runtime_dir()}")
        return 0
    setup.cancel_on_stop_signal()  # the window's Cancel (SIGTERM, CTRL_BREAK on Windows): stop pip, then report
    return _setup_events(args.emitter) if args.emitter else _setup_text()


def _status(as_json: bool) -> int:
    info = state.status()
    if as_json:
        print(json.dumps(info, indent=2))
    else:
        print(f"runtime: {info['state']} ({info['path']})")
        for name, version in sorted(info["versions"].items()):
            print(f"  {name} {version}")
        if info["state"] != "ready":
            print("create or update it with: lora-studio runtime setup")
    return 0 if info["state"] == "ready" else 1


def _setup_text() -> int:
    def progress(done: int, total: int, label: str) -> None:
        print(f"[{done}/{total}] {label}", flush=True)

    try:
        python = setup.ensure_runtime(progress)
    except setup.RuntimeSetupError as e:
        print(f"lora-studio runtime: {e}", file=sys.stderr)
        return 1
    print(f"runtime ready: {python}")
    return 0


def _setup_events(emitter: events.Emitter) -> int:
    def progress(done: int, total: int, label: str) -> None:
        emitter.emit(events.PROGRESS, phase="runtime", done=done, total=total, label=label)

    def output(line: str) -> None:
        emitter.emit(events.LOG, line=line)

    try:
        python = setup.ensure_runtime(progress, output)
    except setup.RuntimeSetupError as e:
        emitter.emit(events.ERROR, kind="io", message=str(e), hint=f"see the log: {e.log_path}",
                     log=str(e.log_path) if e.log_path else None, step=e.step)
        return 1
    emitter.emit(events.DONE, python=str(python), log=str(state.log_path()))
    return 0
