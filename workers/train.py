"""Training worker: ``python -m workers.train RUN_DIR``.

Events go to stdout (one JSON line each) and to RUN_DIR/events.jsonl; logs and tracebacks go to
stderr. Commands (stop, pause, resume) arrive as JSON lines on stdin. Exit code 0 when the run
finished or was stopped on request, 1 when it failed (after an ``error`` event with a hint).
"""
from __future__ import annotations

from studio.attach import hold_run_lock, last_seq, worker_pid
from studio.data import DataError
from studio.train import dist
from studio.train.errors import TrainingFault, disk_full
from studio.train.loading import LoadError
from workers import EXIT_FAILED, EXIT_OK, go_offline, on_stop_signal, run_worker

go_offline()

import argparse  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402

from studio import notices, runs  # noqa: E402
from studio.events import ERROR, WARNING, Emitter, reserve_stdout  # noqa: E402
from studio.recipe import RecipeError  # noqa: E402


def classify(exc: BaseException) -> tuple[str, str]:
    """The error kind of the protocol and a hint that says what to do."""

    if isinstance(exc, TrainingFault):  # nan, oom after the ladder, checkpoint writes: they explain themselves
        return exc.kind, exc.hint
    if peer_lost(exc):
        return "internal", ("another process of this run ended (killed, out of memory, or a crash: its error is in "
                            "worker.log); every process has stopped. 'lora-studio resume RUN' continues from the "
                            "last checkpoint")
    name = type(exc).__name__
    if name == "OutOfMemoryError" or "out of memory" in str(exc).lower():
        return "oom", "lower the micro-batch or sequence length, or let the planner fit the settings again"
    if isinstance(exc, DataError):
        return "data", "fix the dataset file (see 'lora-studio data inspect FILE') and start again"
    if isinstance(exc, RecipeError):
        return "config", "fix the recipe fields named above and start again"

    if (isinstance(exc, OSError) or name == "SafetensorError") and disk_full(exc):
        return "io", "free disk space; the last checkpoint is intact"
    if name == "SafetensorError":  # reading: a header that lies or a file cut short
        return "config", ("a .safetensors file (of the base model or a checkpoint) is damaged or cut short; "
                          "restore it from its source, or resume from an earlier checkpoint")
    if isinstance(exc, OSError):
        return "io", "check the path and its permissions"

    if isinstance(exc, LoadError):
        return "config", exc.hint or "pick a local model folder with safetensors weights, or 'demo'"
    return "internal", "this is a bug in LoRA Studio: the traceback is in the log (stderr)"


def peer_lost(exc: BaseException) -> bool:
    """Whether a collective failed because another rank went away (gloo: connection reset; NCCL: DistBackendError)."""

    text = str(exc).lower()
    return dist.distributed() and (type(exc).__name__ in ("DistBackendError", "DistNetworkError") or any(
        w in text for w in ("connection reset by peer", "connection closed by peer", "broken pipe")))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.train", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a run folder holding recipe.json")
    parser.add_argument("--resume", action="store_true", help="continue from the last good checkpoint")
    args = parser.parse_args(argv)
    run_dir = args.run_dir.resolve()
    if not (run_dir / runs.RECIPE).is_file():
        print(f"{run_dir}: no {runs.RECIPE} here; create a run with 'lora-studio train'", file=sys.stderr)
        return 2

    dist.die_with_parent()  # under torchrun: a killed launcher takes every rank with it
    if not dist.is_main():  # rank 0 alone holds the lock, reads commands and writes the run folder
        return _rank_main(run_dir, args.resume)

    try:
        lock = hold_run_lock(run_dir)  # held until exit: one worker per run folder
    except OSError as e:
        print(f"{run_dir}: cannot be opened to lock it ({e.strerror or e}); check its permissions", file=sys.stderr)
        return 2
    if lock is None:
        # Report on stdout only: this run's events.jsonl belongs to the worker that holds the lock.
        Emitter(run=run_dir.name, stream=reserve_stdout()).emit(
            ERROR, kind="config", message=f"{run_dir}: another worker is already training this run",
            hint=f"follow it with 'lora-studio attach {run_dir}' instead of starting it again")
        return 1

    other = worker_pid(run_dir)  # a second line of defence: the lock holder also records its pid
    if other is not None and other != os.getpid():
        Emitter(run=run_dir.name, stream=reserve_stdout()).emit(
            ERROR, kind="config", message=f"{run_dir}: another worker (pid {other}) is already training this run",
            hint=f"follow it with 'lora-studio attach {run_dir}' instead of starting it again")
        return 1
    emitter = Emitter(run=run_dir.name, log_path=run_dir / runs.EVENTS, stream=reserve_stdout(),
                      start_seq=last_seq(run_dir / runs.EVENTS))  # a resumed run continues the numbering
    notices.install(lambda sentence: emitter.emit(WARNING, message=sentence, kind="library"))
    from studio.train.callbacks import Control

    control = Control()
    control.listen()
    control.watch(run_dir / runs.COMMANDS)
    # SIGTERM is a polite stop (save the adapter, exit 0); the controller escalates to SIGKILL.
    on_stop_signal(lambda *_: control.stop.set())
    return _train(run_dir, emitter, control, args.resume)


def _rank_main(run_dir: Path, resume: bool) -> int:
    """A rank other than 0: trains in step with rank 0, writes nothing; its stdout goes to stderr.

    Commands reach it through rank 0 (an all-reduce each step, studio.train.dist.agree_flags);
    SIGTERM (torchrun forwards it to every rank) is the same polite stop as on rank 0.
    """
    import io

    from studio.train.callbacks import Control

    reserve_stdout().close()  # nothing but rank 0's events may reach the protocol stream
    emitter = Emitter(run=run_dir.name, stream=io.BytesIO())
    emitter.stdout_ok = False
    control = Control()
    on_stop_signal(lambda *_: control.stop.set())
    return _train(run_dir, emitter, control, resume)


def _train(run_dir: Path, emitter: Emitter, control, resume: bool) -> int:
    run = None
    try:
        dist.init()
        from studio.train.run import TrainingRun

        run = TrainingRun(run_dir, emitter, control, resume=resume)
        run.setup()
        status = run.train()
        run.finish(status)
        return EXIT_OK
    except BaseException as exc:  # noqa: BLE001 - the worker reports every failure as an event
        if isinstance(exc, SystemExit):
            raise
        kind, hint = classify(exc)
        if peer_lost(exc):
            exc = RuntimeError(f"rank {dist.rank()} lost contact with the other processes of this run ({exc})")
        elif kind == "internal":
            traceback.print_exc(file=sys.stderr)
        message = str(exc) or type(exc).__name__
        details = getattr(exc, "details", {}) or {}
        if not dist.is_main():
            print(f"rank {dist.rank()}: {kind} error: {message}", file=sys.stderr)
        emitter.emit(ERROR, kind=kind, message=message, hint=hint, **details)
        runs.write_state(run_dir, status="failed", pid=None, error={"kind": kind, "message": message})
        return EXIT_FAILED  # not report_failure: a lost peer is internal but its traceback says nothing
    finally:
        emitter.close()
        dist.shutdown()


if __name__ == "__main__":
    run_worker(main, outlive=True)  # a run outlives its window or terminal (lora-studio attach)
