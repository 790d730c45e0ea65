"""Subprocess entry points (``python -m workers.NAME``) and the one start-up they share.

Every worker starts and ends the same way: ``go_offline`` before any library is imported (all but
the download worker), its ``main`` run through ``run_worker`` (which watches the parent of a
worker that must not outlive it, and ends through ``exit_now`` with ``main``'s code: ``EXIT_OK``,
``EXIT_FAILED``, ``EXIT_CANCELLED``), its polite stop taken from ``studio.procs.on_stop_signal``
(or ``cancellable`` for a worker that cancels: export, download), and a failure reported as its
last event by ``report_failure``.
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from typing import Any, Callable, Iterator, NoReturn

from studio.events import ERROR, read_commands, stop_requested
from studio.procs import OFFLINE_ENV, on_stop_signal, stop_signals  # noqa: F401 - the workers' polite-stop signals

EXIT_OK, EXIT_FAILED, EXIT_CANCELLED = 0, 1, 3
BUG_HINT = "this is a bug in LoRA Studio: the traceback is in the log (stderr)"


def go_offline() -> None:
    """No hub access unless the user asks for a download: set before transformers or the hub client are
    imported (they read the switches at import)."""
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)


def run_worker(main: Callable[[], int], outlive: bool = False) -> NoReturn:
    """The one entry of every worker (``if __name__ == "__main__": run_worker(main)``).

    A worker that does not ``outlive`` its starter (chat, export, evaluation, download: nobody is left to
    report to) ends with it; a training run outlives its window or terminal on purpose. Then ``main`` runs
    and the process ends through ``exit_now`` with its code.
    """
    if not outlive:
        die_with_parent()
    dump_stacks_on_signal()
    exit_now(main())


def dump_stacks_on_signal() -> None:
    """POSIX: ``kill -USR1 PID`` prints every thread's Python stack to the worker's stderr (its log), without
    stopping it: what a hung worker is doing, for the user's report and for the tests' own timeouts."""
    import faulthandler
    import signal

    if hasattr(signal, "SIGUSR1"):
        try:
            faulthandler.register(signal.SIGUSR1, all_threads=True)
        except (ValueError, OSError, RuntimeError):  # no usable stderr: nothing to print to
            pass


def report_failure(em: Any, exc: BaseException, kind: str = "internal", hint: str = BUG_HINT,
                   message: str | None = None, **details: Any) -> int:
    """A failure as the worker's ``error`` event (an internal one, a bug, also prints its traceback to
    stderr, which the hint points to); returns ``EXIT_FAILED``. Call it inside the ``except`` block."""
    if kind == "internal":
        import traceback

        traceback.print_exc(file=sys.stderr)
    em.emit(ERROR, kind=kind, message=message or str(exc) or type(exc).__name__, hint=hint, **details)
    return EXIT_FAILED


@contextlib.contextmanager
def cancellable(cancel: threading.Event, cancelled: Callable[[int], BaseException]) -> Iterator[None]:
    """The stop of a worker that cancels (export, download): a ``stop`` command on stdin, SIGINT or the
    polite signal sets ``cancel``, which the work checks at its next step; a signal also raises
    ``cancelled(signum)`` at once, wherever the main thread is. The signal handlers are undone at the end."""
    read_commands(lambda line: stop_requested(line) and cancel.set())

    def handler(signum: int, frame: Any) -> None:  # noqa: ARG001
        cancel.set()
        raise cancelled(signum)

    signals = (signal.SIGINT, *stop_signals())
    for sig in signals:
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig in signals:
            signal.signal(sig, signal.SIG_DFL)


def exit_now(code: int) -> NoReturn:
    """Exit with ``code``, skipping the interpreter's last garbage collection over every object torch and
    transformers made (0.7 of the 0.9 s a process that imported both takes to end, measured here: time a
    CLI command waits on its worker). Everything was written and flushed by then; ``gc.freeze`` only moves
    the live objects out of the collector's sight, so nothing is torn down differently."""
    import gc

    gc.freeze()
    sys.exit(code)


def die_with_parent(poll: float = 0.5) -> None:
    """End this worker as soon as the process that started it is gone (its CLI or window killed, even by
    SIGKILL, which leaves it no chance to stop us): a chat, export, evaluation or download has nobody to
    report to then, and would otherwise spin on (a chat template that never ends) with no one to stop it.

    Workers run in a session of their own (studio/procs.py), so a closed terminal reaches none of them;
    training keeps that on purpose (a run outlives its window and is attached to again) and does not
    call this. A watcher thread rather than PR_SET_PDEATHSIG: that signal follows the parent *thread*
    that started the worker, so a worker started from a short-lived thread would die with the thread;
    the watcher also works on macOS and Windows, and runs between the bytecodes of any Python loop.
    """
    import os
    import threading
    import time

    import psutil

    try:
        parent = psutil.Process(os.getppid())
    except psutil.Error:
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(poll)
            try:
                alive = parent.is_running() and parent.status() != psutil.STATUS_ZOMBIE
            except psutil.Error:
                alive = False
            if not alive:
                os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
