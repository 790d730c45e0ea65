"""Controllers: one QObject per worker process, parsing ``studio.events`` into typed signals.

Workers are started by ``studio.procs.start_worker`` (a process group of its own; on Windows a
console without a window) rather than ``QProcess``: ``QProcess`` kills its child when it is
destroyed, and a training run must be able to outlive the window ("keep running" when the user
closes it); the other workers end with the window (``outlive`` False). Two small reader threads
drain the pipes into buffers that a GUI-thread timer turns into Qt signals (the threads never touch a
QObject), so nothing ever blocks the event loop. A worker whose
stderr goes to a file (training: ``RUN/worker.log``) keeps working after the GUI is gone; the
events it writes are always in ``RUN/events.jsonl`` too.

Shutdown is ``studio.driver``'s one ladder (``StopLadder``), the CLI's too, like jupyter_client's: a
polite ``stop`` command, then the polite signal (SIGTERM; CTRL_BREAK_EVENT on Windows), then the whole
process tree ends, each after its deadline (``driver.Deadlines``, named per worker); a timer takes
the steps, so the event loop never blocks.
"""
from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path
from typing import Any, Callable, Sequence

from PySide6.QtCore import QObject, QTimer, Signal

from studio import driver, launch, procs, runs
from studio import events as ev

READ_CHUNK = 1 << 16
EXPORT_LOG = "export.log"
STDERR_TAIL_MS = 250


class _PipeReader(QObject):
    """Reads one pipe on a daemon thread; the GUI thread collects the bytes on a short timer.

    The thread touches nothing of Qt: it appends to a buffer under a lock and marks the end of the
    pipe. A thread that emitted a signal itself could do so while the GUI thread deletes this object
    (the controller goes away while its worker is still writing its last lines), and emitting on a
    QObject being destroyed crashes the process. The timer belongs to this object, so it stops with
    it; ``ready`` and ``closed`` are emitted in the GUI thread, one ``ready`` per batch of bytes, so a
    flood of small writes costs the event loop one call per tick, never one per line.
    """

    ready = Signal()
    closed = Signal()
    POLL_MS = 30

    def __init__(self, stream, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._stream = stream
        self._lock = threading.Lock()
        self._buf = bytearray()
        self._eof = False
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._timer = QTimer(self)
        self._timer.setInterval(self.POLL_MS)
        self._timer.timeout.connect(self._poll)

    def start(self) -> None:
        self._thread.start()
        self._timer.start()

    def take(self) -> bytes:
        """Everything read so far (called in the GUI thread)."""
        with self._lock:
            data = bytes(self._buf)
            self._buf.clear()
        return data

    def _poll(self) -> None:
        with self._lock:
            pending, eof = bool(self._buf), self._eof
        if eof:
            self._timer.stop()
            self.closed.emit()
        elif pending:
            self.ready.emit()

    def _loop(self) -> None:
        try:
            fd = self._stream.fileno()
            while True:
                data = os.read(fd, READ_CHUNK)
                if not data:
                    break
                with self._lock:
                    self._buf.extend(data)
        except (OSError, ValueError):
            pass
        with self._lock:
            self._eof = True


class _FileTail(QObject):
    """Follows a growing file (a worker's log, a run's events.jsonl) with a cheap timer."""

    chunk = Signal(bytes)

    def __init__(self, path: Path, parent: QObject | None = None, start: int = 0) -> None:
        super().__init__(parent)
        self.path = Path(path)
        self._pos = start
        self._timer = QTimer(self)
        self._timer.setInterval(STDERR_TAIL_MS)
        self._timer.timeout.connect(self.poll)

    def start(self) -> None:
        self._timer.start()

    def stop(self) -> None:
        self._timer.stop()
        self.poll()

    def poll(self) -> None:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self._pos)
                data = fh.read(READ_CHUNK * 4)
        except OSError:
            return
        if data:
            self._pos += len(data)
            self.chunk.emit(data)


class WorkerController(QObject):
    """Owns one worker process; emits a typed signal per event type plus lifecycle signals."""

    sig_started = Signal(int)                 # pid
    sig_event = Signal(object)                # every studio.events.Event, in order
    sig_hello = Signal(dict)
    sig_log = Signal(str)                     # the worker's own log events: what a user reads
    sig_stderr = Signal(str)                  # library output (stderr lines): for the log file and tests
    sig_progress = Signal(str, int, int)      # phase, done, total
    sig_metric = Signal(dict)
    sig_memory = Signal(dict)
    sig_checkpoint = Signal(dict)
    sig_warning = Signal(str)
    sig_error = Signal(str, str, str)         # kind, message, hint
    sig_done = Signal(dict)
    sig_malformed = Signal(int, str)          # count so far, last bad line
    sig_finished = Signal(int, bool)          # exit code, whether a `done` event was seen
    sig_busy = Signal(bool)
    # False: the window ends this worker when it closes (exports, chats, downloads, probes are disposable
    # or resumable). True: it may run on (a training run the user kept; the atomic demo conversion).
    outlives_window = False
    # The stop ladder's deadlines (studio.driver); each subclass names its worker's, a caller may override them.
    deadlines = driver.Deadlines(stop_s=30.0, term_s=5.0)

    def __init__(self, parent: QObject | None = None, stop_grace_s: float | None = None,
                 term_grace_s: float | None = None, parser: Callable[[], Any] = ev.EventReader) -> None:
        super().__init__(parent)
        d = self.deadlines
        self.deadlines = driver.Deadlines(d.stop_s if stop_grace_s is None else stop_grace_s,
                                          d.term_s if term_grace_s is None else term_grace_s)
        self.parser = parser  # makes the stdout parser of each start: feed(bytes) / close() -> events
        self.proc: subprocess.Popen | None = None
        self.reader = parser()
        self.saw_done = False
        self.saw_error = False
        self.detached = False
        self._open_pipes = 0
        self._readers: list[_PipeReader] = []
        self._tail: _FileTail | None = None
        self._stderr_file = None
        self._stderr_buf = ""
        self._escalate = QTimer(self)
        self._escalate.setSingleShot(True)
        self._escalate.timeout.connect(self._escalate_step)
        self._ladder: driver.StopLadder | None = None
        self._follow_pid: int | None = None
        self._follow_dir: Path | None = None
        self._follow_tails: list[_FileTail] = []
        self._live = False

    # -- lifecycle ----------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        if self._follow_pid is not None:
            return runs.pid_alive(self._follow_pid)  # a zombie is not alive
        return self.proc is not None and self._live  # until sig_finished: the last events are delivered

    @property
    def pid(self) -> int | None:
        if self._follow_pid is not None:
            return self._follow_pid
        return self.proc.pid if self.proc else None

    def follow(self, run_dir: Path, pid: int) -> None:
        """Attach to a run an earlier window left running: tail its events and log.

        Commands go through the run's inbox (``runs.send_command``): its stdin belonged to the window
        that started it. Its stop ladder has a training run's deadlines (``driver.TRAIN``).
        """
        run_dir = Path(run_dir)
        self.proc = None
        self._follow_dir = run_dir
        self._follow_pid = int(pid)
        self.deadlines = driver.TRAIN  # the worker saves a checkpoint and the adapter on SIGTERM
        self.reader = self.parser()
        self.saw_done = self.saw_error = self.detached = False
        self._ladder = None
        events = _FileTail(run_dir / runs.EVENTS, self)
        events.chunk.connect(self._on_stdout)
        log = run_dir / "worker.log"
        self._tail = _FileTail(log, self, start=max(0, log.stat().st_size - READ_CHUNK) if log.exists() else 0)
        self._tail.chunk.connect(self._on_stderr)
        self._follow_tails = [events, self._tail]
        for t in self._follow_tails:
            t.start()
        self._watch = QTimer(self)
        self._watch.setInterval(500)
        self._watch.timeout.connect(self._check_followed)
        self._watch.start()
        self.sig_busy.emit(True)
        self.sig_started.emit(self._follow_pid)

    def _check_followed(self) -> None:
        if self.running:
            return
        self._watch.stop()
        self._escalate.stop()
        for t in self._follow_tails:
            t.stop()
        for event in self.reader.close():
            self._dispatch(event)
        self._follow_pid = None
        self._tail = None
        self.sig_busy.emit(False)
        self.sig_finished.emit(0 if self.saw_done else -1, self.saw_done)

    def start(self, argv: Sequence[str], env: dict | None = None, cwd: Path | None = None,
              stderr_path: Path | None = None) -> None:
        """Launch ``argv``; with ``stderr_path`` the worker's stderr goes to that file (and is tailed)."""
        if self.running:
            raise RuntimeError("a worker is already running")
        self._follow_pid = None
        self.reader = self.parser()
        self.saw_done = self.saw_error = self.detached = False
        self._ladder = None
        self._stderr_buf = ""
        stderr = subprocess.PIPE
        if stderr_path is not None:
            self._stderr_file = open(stderr_path, "ab")
            stderr = self._stderr_file
        try:
            self.proc = procs.start_worker(argv, stderr=stderr, env=env, cwd=cwd, outlive=self.outlives_window)
        except OSError:
            if self._stderr_file:
                self._stderr_file.close()
                self._stderr_file = None
            raise
        self._live = True
        self._readers = [self._make_reader(self.proc.stdout, self._on_stdout)]
        if stderr_path is None:
            self._readers.append(self._make_reader(self.proc.stderr, self._on_stderr))
        else:
            self._tail = _FileTail(stderr_path, self)
            self._tail.chunk.connect(self._on_stderr)
            self._tail.start()
        self._open_pipes = len(self._readers)
        for r in self._readers:
            r.start()
        self.sig_busy.emit(True)
        self.sig_started.emit(self.proc.pid)

    def _make_reader(self, stream, slot) -> _PipeReader:
        reader = _PipeReader(stream, self)
        reader.ready.connect(lambda: slot(reader.take()))
        reader.closed.connect(lambda: (slot(reader.take()), self._on_pipe_closed()))
        return reader

    def send(self, name: str, **args) -> bool:
        """Write a protocol command to the worker's stdin (or a followed run's inbox); False if it cannot."""
        if not self.running:
            return False
        if self._follow_pid is not None:
            try:
                runs.send_command(self._follow_dir, name)
            except OSError:
                return False
            return True
        if self.proc is None or self.proc.stdin is None:
            return False
        return procs.send_command(self.proc, name, **args)

    def stop(self) -> None:
        """The stop ladder (``studio.driver.StopLadder``): the stop command (stdin, or a followed run's inbox),
        then the polite signal (SIGTERM; CTRL_BREAK_EVENT on Windows), then the end of the whole process tree."""
        self._begin_ladder(lambda: self.send("stop"))

    def terminate(self) -> None:
        """The ladder from its polite signal (a command that reads no stdin: the runtime setup)."""
        self._begin_ladder(None)

    def _begin_ladder(self, ask: Callable[[], bool] | None) -> None:
        if self.running and self._ladder is None:
            self._ladder = driver.StopLadder(self.pid, ask, self.deadlines)
            self._escalate_step()

    def pause(self) -> bool:
        return self.send("pause")

    def resume(self) -> bool:
        return self.send("resume")

    def kill_now(self) -> None:
        """The ladder's last step at once (window closing, tests); no grace."""
        if self.running:
            self._escalate.stop()
            self._ladder = self._ladder or driver.StopLadder(self.pid, None, self.deadlines)
            self._ladder.end_now()

    def detach(self) -> None:
        """Let the worker run on without us: close our pipe ends; it keeps writing events.jsonl."""
        self.detached = True
        self._escalate.stop()
        for t in self._follow_tails:
            t.stop()
        if self._tail:
            self._tail.stop()
        if self.proc and self.proc.stdin:
            try:
                self.proc.stdin.close()
            except OSError:
                pass

    def _escalate_step(self) -> None:
        """The ladder's next step, and the timer for the one after it."""
        if not self.running or self._ladder is None:
            return
        wait = self._ladder.step()
        if wait is not None:
            self._escalate.start(int(wait * 1000))

    # -- reading ------------------------------------------------------------------------------
    def _on_stdout(self, data: bytes) -> None:
        before = self.reader.malformed
        for event in self.reader.feed(data):
            self._dispatch(event)
        if self.reader.malformed != before:
            self.sig_malformed.emit(self.reader.malformed, self.reader.last_malformed.decode("utf-8", "replace"))

    def _on_stderr(self, data: bytes) -> None:
        self._on_stderr_text(data.decode("utf-8", "replace"))

    def _on_stderr_text(self, text: str) -> None:
        self._stderr_buf += text.replace("\r", "\n")
        *lines, self._stderr_buf = self._stderr_buf.split("\n")
        for line in lines:
            if line.strip():
                self.sig_stderr.emit(line)

    def _dispatch(self, event: ev.Event) -> None:
        self.sig_event.emit(event)
        d = event.data
        t = event.type
        if t == ev.HELLO:
            self.sig_hello.emit(d)
        elif t == ev.LOG:
            self.sig_log.emit(str(d.get("message", d.get("text", ""))))
        elif t == ev.PROGRESS:
            self.sig_progress.emit(str(d.get("phase", "")), _int(d.get("done")), _int(d.get("total")))
        elif t == ev.METRIC:
            self.sig_metric.emit(d)
        elif t == ev.MEMORY:
            self.sig_memory.emit(d)
        elif t == ev.CHECKPOINT:
            self.sig_checkpoint.emit(d)
        elif t == ev.WARNING:
            self.sig_warning.emit(str(d.get("message", "")))
        elif t == ev.ERROR:
            self.saw_error = True
            self.sig_error.emit(str(d.get("kind", "internal")), str(d.get("message", "")), str(d.get("hint", "")))
        elif t == ev.DONE:
            self.saw_done = True
            self.sig_done.emit(d)
        # unknown types: ignored (newer workers may send more)

    def _on_pipe_closed(self) -> None:
        self._open_pipes -= 1
        if self._open_pipes > 0:
            return
        for event in self.reader.close():
            self._dispatch(event)
        if self._stderr_buf.strip():
            self.sig_stderr.emit(self._stderr_buf)
            self._stderr_buf = ""
        # Both pipes are at EOF: the process has exited or is about to; reap it without blocking long.
        self._reap_timer = QTimer(self)
        self._reap_timer.setInterval(20)
        self._reap_timer.timeout.connect(self._try_reap)
        self._reap_timer.start()

    def _try_reap(self) -> None:
        if self.proc is None or self.proc.poll() is None:
            return
        self._reap_timer.stop()
        self._escalate.stop()
        if self._tail:
            self._tail.stop()
            self._tail = None
        if self._stderr_file:
            self._stderr_file.close()
            self._stderr_file = None
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                if stream:
                    stream.close()
            except OSError:
                pass
        code = self.proc.returncode
        self._live = False
        if code != 0 and not self.saw_error and not self.saw_done:
            reason = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
            self.saw_error = True
            self.sig_error.emit("internal", f"The worker {reason} without reporting an error.",
                                "See the log panel for its last output.")
        self.sig_busy.emit(False)
        self.sig_finished.emit(code, self.saw_done)


def _int(value) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


class TrainController(WorkerController):
    """Runs ``workers.train RUN_DIR``; stderr goes to ``RUN_DIR/worker.log`` so the run can outlive us."""

    outlives_window = True  # closing the window asks first: stop it, or keep it running
    deadlines = driver.TRAIN

    def __init__(self, parent: QObject | None = None, **kw) -> None:
        super().__init__(parent, **kw)
        self.run_dir: Path | None = None

    def start_run(self, run_dir: Path, argv: Sequence[str] | None = None) -> None:
        self.run_dir = Path(run_dir)
        argv = list(argv) if argv else launch.train_argv(self.run_dir)  # torchrun when train.nproc > 1
        self.start(argv, env=launch.train_env(self.run_dir), stderr_path=self.run_dir / "worker.log")


class ExportController(WorkerController):
    """Runs ``workers.export RUN_DIR --format F [--quant Q]``."""

    deadlines = driver.EXPORT

    def start_export(self, run_dir: Path, fmt: str, quant: str | None = None) -> None:
        """Library output goes to ``RUN/export.log`` (as from the CLI), not to the page's log."""
        args = [str(run_dir), "--format", fmt] + (["--quant", quant] if quant else [])
        self.start(procs.worker_argv("workers.export", *args), env=procs.worker_env(),
                   stderr_path=Path(run_dir) / EXPORT_LOG)


class ChatController(WorkerController):
    """Runs ``workers.chat``: one warm base model, adapters attached on demand, one answer at a time.

    ``stop`` here ends the running answer (the worker stays up); ``shutdown`` ends the worker
    (the ladder with stdin closed as its first step, ``driver.CHAT``).
    """

    deadlines = driver.CHAT

    sig_token = Signal(str, str, str)   # id, variant, text piece
    sig_answer = Signal(dict)           # the answer event's data (studio.events.ANSWER_KEYS)
    sig_adapter = Signal(str)           # an adapter was attached
    sig_failed = Signal(str, str)       # id (or adapter name, or ""), message

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.sig_event.connect(self._on_chat_event)
        self.args: list[str] = []

    def start_chat(self, args: Sequence[str], argv: Sequence[str] | None = None) -> None:
        self.args = list(args)
        self.start(list(argv) if argv else procs.worker_argv("workers.chat", *self.args), env=procs.worker_env())

    def generate(self, gid: str, variant: str, messages: list, settings: dict) -> bool:
        return self.send("generate", id=gid, variant=variant, messages=messages, settings=settings)

    def attach_adapter(self, name: str, path: Path) -> bool:
        return self.send("adapter", adapter=name, path=str(path))

    def stop(self) -> None:
        """End the running answer at the next token."""
        self.send("stop")

    def shutdown(self) -> None:
        self._begin_ladder(self._close_stdin)  # the worker exits when its stdin closes

    def _close_stdin(self) -> bool:
        if self.proc is None or self.proc.stdin is None:
            return False
        try:
            self.proc.stdin.close()
            return True
        except OSError:
            return False

    def _on_chat_event(self, event) -> None:
        d = event.data
        if event.type == ev.TOKEN:
            self.sig_token.emit(str(d.get("id", "")), str(d.get("variant", "")), str(d.get("text", "")))
        elif event.type == ev.ANSWER:
            self.sig_answer.emit(d)
        elif event.type == ev.LOG and d.get("adapter"):
            self.sig_adapter.emit(str(d["adapter"]))
        elif event.type == ev.ERROR and ("id" in d or "adapter" in d):
            self.sig_failed.emit(str(d.get("id", d.get("adapter", ""))), str(d.get("message", "")))


class CommandController(WorkerController):
    """Runs a one-shot ``lora-studio COMMAND … --events`` (a model's facts, token statistics, the doctor).

    The command answers with one ``done`` event whose data is the result; a newer request replaces
    one still running (the old process is killed and its signals never reach the page).
    """

    deadlines = driver.COMMAND

    def run_command(self, *args: str) -> None:
        self.run_argv(procs.worker_argv("studio.cli", *args, "--events"))

    def run_argv(self, argv: Sequence[str]) -> None:
        if self.running:
            self.kill_now()
            self._abandon()
        self.start(argv, env=procs.worker_env())

    def _abandon(self) -> None:
        """Forget the process being replaced: its last events and its exit are not this request's."""
        for reader in self._readers:
            try:
                reader.ready.disconnect()
                reader.closed.disconnect()
            except (RuntimeError, TypeError):
                pass
        self._live = False
        self.sig_busy.emit(False)
