"""Subprocess entry points (``python -m workers.NAME``); each ends through ``exit_now``."""
from __future__ import annotations

import sys
from typing import NoReturn

from studio.procs import on_stop_signal, stop_signals  # noqa: F401 - the workers' polite-stop signals


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
