"""Export worker: ``python -m workers.export RUN_DIR --format FORMAT [--quant Q] [--out DIR] [--force]``.

Events go to stdout (one JSON line each): ``hello``, ``progress`` (phase, done, total), ``log`` for
each verification result (``warning`` when one fails or is skipped), then ``done`` with the output
path, its files and the verification results, or ``error`` (kind, message, hint). Logs and
tracebacks go to stderr. A ``stop`` command on stdin, SIGINT or SIGTERM cancels: the temporary
folder is removed and nothing stands under the final name. Exit codes: 0 exported, 1 failed,
3 cancelled.
"""
from __future__ import annotations

from studio.export import TARGETS, export
from workers import EXIT_CANCELLED, EXIT_FAILED, EXIT_OK, cancellable, go_offline, report_failure, run_worker

go_offline()

import argparse  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import threading  # noqa: E402
from pathlib import Path  # noqa: E402

from studio import notices  # noqa: E402
from studio.events import DONE, ERROR, HELLO, LOG, PROGRESS, WARNING, Emitter, reserve_stdout  # noqa: E402
from studio.export.errors import Cancelled, ExportError  # noqa: E402


class Reporter:
    """Turns export callbacks into events, throttled to whole percents, and raises when cancelled."""

    def __init__(self, em: Emitter, cancel: threading.Event) -> None:
        self.em, self.cancel = em, cancel
        self._last: tuple[str, int] | None = None

    def progress(self, phase: str, done: int, total: int) -> None:
        if self.cancel.is_set():
            raise Cancelled("export cancelled")
        pct = int(100 * done / total) if total else 100
        if (phase, pct) != self._last:
            self._last = (phase, pct)
            self.em.emit(PROGRESS, phase=phase, done=int(done), total=int(total))

    def check(self, check) -> None:
        kind = LOG if check.ok else WARNING
        self.em.emit(kind, message=check.summary, check=check.name, ok=check.ok, details=check.details)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m workers.export", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, nargs="?", help="a finished run folder (holds recipe.json and adapter/)")
    parser.add_argument("--format", help="merged, adapter, gguf, ollama or ollama-lora")
    parser.add_argument("--quant", default=None, help="GGUF type: f16, bf16, q8_0 (default), q6_k, q5_k_m, q4_k_m or q4_0")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default RUN_DIR/exports/FORMAT[-QUANT])")
    parser.add_argument("--force", action="store_true", help="replace an existing output folder")
    parser.add_argument("--list", action="store_true", help="print the export targets as JSON and exit")
    args = parser.parse_args(argv)
    if not args.list and (args.run_dir is None or not args.format):
        parser.error("RUN_DIR and --format are required (or --list)")
    return args


def list_targets() -> int:
    """The registry as JSON (for a GUI that cannot import the core in its own process)."""
    import json


    rows = [{"name": t.name, "title": t.label, "description": t.description, "quants": list(t.quants),
             "default_quant": t.default_quant} for t in TARGETS.values()]
    print(json.dumps(rows))
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.list:
        return list_targets()
    run_dir = args.run_dir.resolve()
    em = Emitter(run=run_dir.name, stream=reserve_stdout())
    notices.install(lambda sentence: em.emit(WARNING, message=sentence, kind="library"))
    cancel = threading.Event()
    try:
        with cancellable(cancel, lambda signum: Cancelled(f"export cancelled by signal {signum}")):
            return _export(run_dir, args, em, cancel)
    finally:
        em.close()


def _export(run_dir: Path, args: argparse.Namespace, em: Emitter, cancel: threading.Event) -> int:
    rep = Reporter(em, cancel)
    em.emit(HELLO, pid=os.getpid(), worker="export", python=platform.python_version(), run_dir=str(run_dir),
            format=args.format, quant=args.quant)
    try:
        result = export(run_dir, args.format, args.quant, args.out, args.force, rep.progress, rep.check)
        em.emit(DONE, status="exported", **result.to_dict())
        return EXIT_OK
    except Cancelled as e:
        em.emit(DONE, status="cancelled", path=None, message=f"{e.message}; nothing was written")
        return EXIT_CANCELLED
    except ExportError as e:
        em.emit(ERROR, kind=e.kind, message=e.message, hint=e.hint)  # it explains itself: no traceback
        return EXIT_FAILED
    except Exception as e:  # a bug: the traceback goes to stderr, the event says where to look
        return report_failure(em, e, message=f"{type(e).__name__}: {e}")


if __name__ == "__main__":
    run_worker(main)
