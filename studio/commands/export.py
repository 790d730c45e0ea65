"""`lora-studio export RUN_DIR --format merged|adapter|gguf|ollama|ollama-lora`: run the export worker and report.

Ctrl-C cancels through the stop ladder (``studio.driver``: the stop command, the polite signal, the
end of the tree, ``driver.EXPORT`` apart); its temporary folder is removed in every case, so nothing
ever stands under the final name.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from studio import driver
from studio.errors import UserError
from studio.events import DONE, ERROR, LOG, PROGRESS, WARNING
from studio.export.targets import GGUF_FORMATS, TARGETS, default_out
from studio.procs import worker_argv
from studio.units import decimal_bytes

if TYPE_CHECKING:  # the bars load tqdm only when they draw
    from tqdm import tqdm

FORMATS = tuple(TARGETS)
QUANTS = tuple(dict.fromkeys(q for t in TARGETS.values() for q in t.quants))  # every target's, in order


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a trained run: merged model, adapter, GGUF or Ollama",
                       description="Export a finished run folder (a run still training is refused). Every export "
                                   "is verified before it gets its final name; Ctrl-C cancels and leaves nothing "
                                   "behind.")
    p.add_argument("run_dir", type=Path, help="the run folder (see 'lora-studio runs')")
    p.add_argument("--format", required=True, choices=FORMATS,
                   help="; ".join(f"{t.name}: {t.description}" for t in TARGETS.values()))
    p.add_argument("--quant", choices=QUANTS, help="weight type of the formats that take one ("
                   + ", ".join(f"{t.name}: default {t.default_quant}" for t in TARGETS.values() if t.quants)
                   + "); q4_k_m, q5_k_m and q6_k are llama.cpp's mixed K-quant recipes, written without llama.cpp")
    p.add_argument("--out", type=Path, help="output folder (default RUN_DIR/exports/FORMAT[-QUANT]); never the run "
                                            "folder outside exports/, its adapter or the base model folder")
    p.add_argument("--force", action="store_true", help="replace an existing output folder (never one the export "
                                                         "reads from)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    run_dir = args.run_dir.resolve()
    if not run_dir.is_dir():
        raise UserError(f"{run_dir} is not a folder; pass a run folder (see 'lora-studio runs')")
    if args.quant and args.format not in GGUF_FORMATS:
        raise UserError(f"--quant applies to {', '.join(GGUF_FORMATS)} only, not {args.format}")
    extra = [f"--format={args.format}"] + ([f"--quant={args.quant}"] if args.quant else [])
    extra += [f"--out={args.out.resolve()}"] if args.out else []
    extra += ["--force"] if args.force else []
    result = follow(run_dir, extra)
    return report(run_dir, result)


def follow(run_dir: Path, extra: list[str]) -> dict:
    """Start the worker in its own session, show its events, and cancel it cleanly on Ctrl-C."""
    log_path = run_dir / "export.log"
    view = _View()
    result: dict[str, Any] = {"log": str(log_path)}

    def on_event(ev) -> None:
        if not result.get("cancelled"):  # once cancelled, its last events draw no bar
            view.show(ev, result)

    def on_stop() -> None:
        result["cancelled"] = True
        view.close()
        print("\ncancelling the export...", file=sys.stderr)

    with open(log_path, "ab") as log:
        worker = driver.Worker(worker_argv("workers.export", run_dir, *extra), log, driver.EXPORT)
        result["returncode"] = worker.follow(on_event, on_stop=on_stop)
        view.close()
    if result.get("cancelled"):
        _remove_partials(run_dir, extra)
    return result


def _remove_partials(run_dir: Path, extra: list[str]) -> None:
    """A killed worker cannot clean up: remove its temporary folders (``.NAME.*.partial``) beside the output."""

    args = dict(a.lstrip("-").split("=", 1) for a in extra if "=" in a)
    final = Path(args["out"]) if "out" in args else default_out(run_dir, args["format"], _quant(args))
    if final.parent.is_dir():
        for tmp in final.parent.glob(f".{final.name}.*.partial"):
            shutil.rmtree(tmp, ignore_errors=True)


def _quant(args: dict) -> str | None:
    from studio.export.targets import TARGETS

    return args.get("quant") or TARGETS[args["format"]].default_quant


class _View:
    """Progress bars per phase on stderr, verification lines as they come."""

    def __init__(self) -> None:
        self.bar: tqdm | None = None  # the current phase's bar (tqdm loads at the first progress event)
        self.phase: str | None = None

    def show(self, ev, result: dict) -> None:
        d = ev.data
        if ev.type == PROGRESS:
            self._progress(d)
        elif ev.type in (LOG, WARNING) and d.get("check"):
            result.setdefault("checks", []).append(d)
            self._write(f"{_mark(d.get('ok'))} {d.get('message')}")
        elif ev.type == WARNING:
            self._write(f"warning: {d.get('message')}")
        elif ev.type == ERROR:
            result["error"] = d
        elif ev.type == DONE:
            result["done"] = d

    def _progress(self, d: dict) -> None:
        from tqdm import tqdm

        if self.bar is None or d.get("phase") != self.phase:
            self.close()
            self.phase = d.get("phase")
            big = (d.get("total") or 0) > 1
            self.bar = tqdm(total=d.get("total") or None, desc=self.phase, unit="B" if big else "",
                            unit_scale=big, dynamic_ncols=True, file=sys.stderr, leave=False)
        self.bar.n = d.get("done", 0)
        self.bar.refresh()

    def _write(self, line: str) -> None:
        self.close()
        print(line, file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar, self.phase = None, None


def _mark(ok) -> str:
    return {True: "  ok  ", False: "  FAIL", None: "  skip"}[ok]


def report(run_dir: Path, result: dict) -> int:
    """Print the outcome; the exit code says whether an export now stands under its final name."""
    if result.get("cancelled"):
        print("export cancelled: nothing was written", file=sys.stderr)
        return 130
    err = result.get("error")
    if err:
        if err.get("kind") in ("config", "io"):
            raise UserError(f"{err.get('message')}; {err.get('hint')}")
        print(f"export failed ({err.get('kind')}): {err.get('message')}\nwhat to do: {err.get('hint')}\n"
              f"worker log: {result['log']}", file=sys.stderr)
        return 1
    done = result.get("done") or {}
    if done.get("status") != "exported":
        print(f"the export worker ended without finishing (exit code {result['returncode']}); "
              f"log: {result['log']}", file=sys.stderr)
        return 1
    _print_done(done)
    return 0


def _print_done(done: dict) -> None:
    quant = f" ({done['quant']})" if done.get("quant") else ""
    print(f"exported {done['format']}{quant}: {done['path']}")
    source = done.get("source") or {}
    if source:
        step = source.get("step")
        print(f"from run {source.get('run_id')}" + (f", step {step}" if step is not None else "")
              + f", adapter sha256 {str(source.get('adapter_sha256'))[:12]}")
    print("files:")
    for f in done.get("files", []):
        what = ", ".join(str(x) for x in (f.get("kind"), f.get("quant")) if x)
        print(f"  {f['name']:<34} {decimal_bytes(f['bytes']):>10}  {what}".rstrip())
    print(f"folder: {done['path']}")
    print("verification:")
    for c in done.get("checks", []):
        print(f"{_mark(c.get('ok'))} {c.get('summary')}")
    if done.get("next_command"):
        print(f"next: {done['next_command']}")
