"""The one driver of a worker process: its start, its events, its commands and its end.

``studio.procs`` holds the platform's primitives (start a worker in a group of its own, the polite
signal, the end of the whole tree); this module holds the one policy built on them, which every
caller uses, the CLI's commands and the window's controllers alike (docs/ARCHITECTURE.md,
"Process control"). Like jupyter_client's ``KernelManager.shutdown_kernel``, ending a worker is a
ladder whose every step has a deadline:

1. the protocol's ``stop`` command (or, for the chat worker, its stdin closed): the worker ends on
   its own, having saved what it must; wait ``Deadlines.stop_s``;
2. the polite signal (``procs.ask_to_stop``: SIGTERM to the group, CTRL_BREAK_EVENT on Windows),
   which every worker handles as its stop; wait ``Deadlines.term_s``;
3. the whole process tree ends (``procs.kill_tree``).

A step is taken only while the process runs; a stop command that cannot be delivered (stdin gone)
moves to the signal at once. The deadlines differ per worker (a training run saves a checkpoint
and its adapter; a chat has nothing to save), and are named below so that the window and the CLI
give each worker the same time. ``StopLadder`` is the policy a step at a time (the window drives
it from a timer); ``Worker`` drives it blocking (the CLI), with Ctrl-C: the first begins the
ladder, the second ends the tree at once.
"""
from __future__ import annotations

import queue
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import IO, Any, Callable

from studio.events import Event, EventReader
from studio.procs import ask_to_stop, kill_tree, pump_events, send_command, start_worker


@dataclass(frozen=True)
class Deadlines:
    """How long each step of the stop ladder waits for the worker to end before the next step."""

    stop_s: float  # after the stop command (or the closed stdin)
    term_s: float  # after the polite signal


# The worker's own deadlines, the same in the window and the CLI.
TRAIN = Deadlines(stop_s=60.0, term_s=120.0)     # the step under way ends, then a checkpoint and the adapter
EVALUATE = Deadlines(stop_s=30.0, term_s=5.0)    # the answers end at the next token, then the report is written
EXPORT = Deadlines(stop_s=10.0, term_s=10.0)     # cancelled at its next progress call; the temporary folder goes
DOWNLOAD = Deadlines(stop_s=10.0, term_s=5.0)    # cancelled between chunks; what arrived stays for the next try
CHAT = Deadlines(stop_s=5.0, term_s=2.0)         # nothing to save: an answer is disposable
COMMAND = Deadlines(stop_s=0.1, term_s=1.0)      # a one-shot ``lora-studio … --events`` of the window

# Every blocking wait is cut in slices this long: on Windows a lock or process wait is not interrupted by
# Ctrl-C, which is raised only when the wait returns.
SLICE_S = 0.5


class StopLadder:
    """The escalation policy a step at a time, for a caller that must not block (the window's timer).

    ``ask`` sends the stop command and says whether it was delivered (None: the worker reads no
    commands, the ladder begins with the signal).
    """

    def __init__(self, pid: int, ask: Callable[[], bool] | None, deadlines: Deadlines) -> None:
        self.pid, self.ask, self.deadlines = pid, ask, deadlines
        self.stage = 0  # 0 not begun, 1 command sent, 2 signal sent, 3 tree ended

    @property
    def begun(self) -> bool:
        return self.stage > 0

    def step(self) -> float | None:
        """Take the next step; the seconds to wait for the worker before the next one (None: it was the last)."""
        if self.stage == 0:
            self.stage = 1
            if self.ask is not None and self.ask():
                return self.deadlines.stop_s
        if self.stage == 1:
            self.stage = 2
            ask_to_stop(self.pid)  # where it cannot be delivered (Wine), the command was the polite stop
            return self.deadlines.term_s
        self.end_now()
        return None

    def end_now(self) -> None:
        """The last step at once (a second Ctrl-C, the window closing)."""
        self.stage = 3
        kill_tree(self.pid)


class Worker:
    """A worker driven from a thread that may block (the CLI): events read on a thread into a queue, so
    every wait has a deadline; commands on its stdin; ``shutdown`` and ``follow`` run ``StopLadder``."""

    def __init__(self, argv: list[str], stderr: Any, deadlines: Deadlines, env: dict | None = None,
                 cwd: str | None = None, outlive: bool = False) -> None:
        self.proc: subprocess.Popen = start_worker(argv, stderr=stderr, env=env, cwd=cwd, outlive=outlive)
        self.deadlines = deadlines
        self.reader = EventReader()
        self.ladder: StopLadder | None = None
        self._events: queue.Queue = queue.Queue()
        threading.Thread(target=self._pump, daemon=True, name="worker-events").start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _pump(self) -> None:
        try:
            while pump_events(self.proc, self.reader, self._events.put):
                pass
        except (OSError, ValueError):
            pass
        finally:
            self._events.put(None)  # the end of the stream

    def next_event(self, timeout: float | None = None) -> Event | None:
        """The next event; None once the worker's stdout has ended. Raises ``queue.Empty`` after ``timeout``."""
        end = _due(timeout)
        while True:
            try:
                ev = self._events.get(timeout=_slice(end))
                break
            except queue.Empty:
                if end is not None and time.monotonic() >= end:
                    raise
        if ev is None:
            self._events.put(None)  # every later call sees the end too
        return ev

    def send(self, name: str, **args: Any) -> bool:
        """A protocol command on the worker's stdin; False when it is gone."""
        return send_command(self.proc, name, **args)

    def close_stdin(self) -> bool:
        """End the worker's commands (the chat worker exits when they end); False if already closed."""
        try:
            if self.proc.stdin is None or self.proc.stdin.closed:
                return False
            self.proc.stdin.close()
            return True
        except OSError:
            return False

    def begin_stop(self, ask: Callable[[], bool] | None = None) -> float | None:
        """The ladder's first step (``ask``, by default the ``stop`` command); the seconds until the next."""
        self.ladder = StopLadder(self.pid, ask or (lambda: self.send("stop")), self.deadlines)
        return self.ladder.step()

    def kill(self) -> int:
        """End the whole tree at once; its exit code."""
        if self.ladder is None:
            self.ladder = StopLadder(self.pid, None, self.deadlines)
        if self.proc.poll() is None:  # once reaped, its pid may be another process's
            self.ladder.end_now()
        return self.proc.wait()

    def shutdown(self, ask: Callable[[], bool] | None = None) -> int:
        """The whole ladder, blocking, from its first step (``ask``, by default the ``stop`` command); the exit
        code. A Ctrl-C while waiting ends the tree at once."""
        return self._wait_exit(_due(self.begin_stop(ask)) if self.ladder is None else None)

    def _wait_exit(self, due: float | None, stopping: str = "", on_stop: Callable[[], None] | None = None) -> int:
        """Wait for the end, taking the ladder's next step whenever one is ``due``; the exit code."""
        while True:
            try:
                return self.proc.wait(timeout=_slice(due))
            except subprocess.TimeoutExpired:
                if due is not None and time.monotonic() >= due:
                    due = _due(self._next_step())
            except KeyboardInterrupt:
                due = self._interrupted(stopping, on_stop)

    def _next_step(self) -> float | None:
        """The ladder's next step while the process lives; None (nothing more to wait for) otherwise."""
        if self.ladder is None or self.proc.poll() is not None:
            return None
        return self.ladder.step()

    def follow(self, on_event: Callable[[Event], None], stopping: str = "",
               on_stop: Callable[[], None] | None = None) -> int:
        """Hand every event to ``on_event`` until the worker ends; its exit code.

        The first Ctrl-C prints ``stopping`` (or calls ``on_stop``) and begins the ladder, which goes on
        a step at each deadline while the worker's last events (its ``done``) still come; a second one
        ends the tree at once.
        """
        due: float | None = None  # when the ladder takes its next step (monotonic)
        while True:
            try:
                ev = self.next_event(None if due is None else max(0.0, due - time.monotonic()))  # Empty: due
                if ev is None:
                    break
                on_event(ev)
            except queue.Empty:
                due = _due(self._next_step())
            except KeyboardInterrupt:
                due = self._interrupted(stopping, on_stop)
        return self._wait_exit(due, stopping, on_stop)

    def _interrupted(self, stopping: str, on_stop: Callable[[], None] | None) -> float | None:
        """Ctrl-C while following: the first begins the ladder, a second ends the tree; when the next step is due."""
        if self.ladder is not None:
            self.kill()
            return None
        if on_stop is not None:
            on_stop()
        if stopping:
            print(f"\n{stopping}", file=sys.stderr)
        return _due(self.begin_stop())


def _due(wait: float | None) -> float | None:
    return None if wait is None else time.monotonic() + wait


def _slice(end: float | None) -> float:
    """How long one slice of a wait that ends at ``end`` (None: never) lasts."""
    return SLICE_S if end is None else max(0.0, min(SLICE_S, end - time.monotonic()))


def follow(argv: list[str], stderr: IO | Any, on_event: Callable[[Event], None], deadlines: Deadlines,
           stopping: str, env: dict | None = None, outlive: bool = False) -> int:
    """Start a worker and follow it to its end (``Worker.follow``); its exit code."""
    return Worker(argv, stderr, deadlines, env=env, outlive=outlive).follow(on_event, stopping)
