"""Reattach to runs whose worker outlived the GUI or CLI that started it (torch-free, Qt-free).

The worker runs in its own session and keeps training when its controller goes away; its
record is the run folder. Reopening the studio finds live runs through state.json (status
``running`` and a pid that is alive and really is that run's worker) and tails events.jsonl
from a byte offset, so a reader that comes back later continues exactly where it stopped.

    for summary in live_runs():                 # RunSummary of each running run
        tail = EventTail(summary.path)          # or EventTail(path, offset=saved_offset)
        events = tail.poll()                    # new complete events; tail.offset to save
    request_stop(run_dir)                       # polite stop (inbox + SIGTERM/CTRL_BREAK): checkpoint, adapter, exit
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import IO, Iterator

import psutil

from studio import procs, runs
from studio.events import Event, EventReader

_TAIL_BYTES = 1 << 16


def worker_pid(run_dir: Path) -> int | None:
    """The pid of the live worker training ``run_dir``, or None (dead, finished, or a reused pid).

    state.json names the pid; the process must be a ``workers.train`` whose run folder argument is
    this very folder (resolved, against the process's own working directory), and, where the run
    recorded it (``pid_created``), must have started when the worker did: a pid the system reused
    for another run's worker, or for anything else, is not this run's worker.
    """
    state = runs.read_state(run_dir)
    pid = state.get("pid")
    if state.get("status") != "running" or not runs.pid_alive(pid):
        return None
    try:
        proc = psutil.Process(pid)
        started = proc.create_time()
        if not _trains(proc.cmdline(), proc.cwd, Path(run_dir)):
            return None
    except (psutil.Error, OSError):  # gone, or not ours to inspect: not ours to drive
        return None
    recorded = state.get("pid_created")
    if isinstance(recorded, (int, float)) and not isinstance(recorded, bool) and abs(started - recorded) > 0.5:
        return None  # the pid was reused after the worker died
    return pid


def _trains(argv: list[str], cwd, run_dir: Path) -> bool:
    """True when ``argv`` is ``... workers.train RUN_DIR ...`` for exactly this run folder."""
    if "workers.train" not in argv:
        return False
    rest = [a for a in argv[argv.index("workers.train") + 1:] if not a.startswith("-")]
    if not rest:
        return False
    arg = Path(rest[0])
    if not arg.is_absolute():
        arg = Path(cwd()) / arg  # a relative run folder (torchrun's, from the cluster's run.sh)
    try:
        return os.path.samefile(arg, run_dir)
    except OSError:
        return False


def remote_worker(run_dir: Path, fresh_s: float = 900.0) -> str | None:
    """The host of a run training on another machine (a cluster node writing to shared storage), or None.

    Its pid means nothing here, so a run counts as live while state.json says ``running``, names
    another host, and was updated within ``fresh_s`` (rank 0 writes it at every logged step).
    """
    import datetime
    import platform

    try:
        state = runs.read_state(run_dir)
    except (OSError, ValueError):
        return None
    host = state.get("host")
    if state.get("status") != "running" or not host or host == platform.node():
        return None
    try:
        age = (datetime.datetime.now() - datetime.datetime.fromisoformat(state.get("updated", ""))).total_seconds()
    except (TypeError, ValueError):
        return None
    return host if age <= fresh_s else None


def live_runs(runs_root: Path | None = None) -> list[runs.RunSummary]:
    """Runs whose worker is still training (newest first)."""
    return [s for s in runs.list_runs(runs_root) if s.status == "running" and worker_pid(s.path)]


class EventTail:
    """Reads events.jsonl incrementally; ``offset`` is the byte after the last complete line read."""

    def __init__(self, run_dir: Path, offset: int = 0) -> None:
        self.path = Path(run_dir) / runs.EVENTS
        self.offset = offset
        self.malformed = 0
        self._skipping = False  # inside a line longer than one read: skip to its end

    def poll(self, max_bytes: int = 1 << 22) -> list[Event]:
        """New complete events since the last call; a line still being written waits for the next call.

        A line longer than ``max_bytes`` cannot be an event: it is counted once and skipped, so the
        tail always moves on to the events after it.
        """
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                data = fh.read(max_bytes)
        except FileNotFoundError:
            return []
        if self._skipping:
            nl = data.find(b"\n")
            if nl < 0:
                self.offset += len(data)
                return []
            self._skipping = False
            self.offset += nl + 1
            data = data[nl + 1:]
        end = data.rfind(b"\n")
        if end < 0:
            if len(data) >= max_bytes:  # no newline in a whole read: an over-long line, never an event
                self.malformed += 1
                self.offset += len(data)
                self._skipping = True
            return []
        reader = EventReader()
        events = reader.feed(data[: end + 1])
        self.malformed += reader.malformed
        self.offset += end + 1
        return events


def follow(run_dir: Path, offset: int = 0, poll_s: float = 0.25) -> Iterator[Event]:
    """Yield the run's events from ``offset`` until its worker has exited and the file is drained."""
    tail = EventTail(run_dir, offset)
    pid = worker_pid(run_dir)  # the process, not state.json: the worker writes "finished" before its last event
    remote = pid is None and remote_worker(run_dir) is not None  # a cluster node: follow state.json instead
    while True:
        alive = remote_worker(run_dir) is not None if remote else runs.pid_alive(pid)
        events = tail.poll()
        yield from events
        if not events and not alive:
            yield from tail.poll()
            return
        if not events:
            time.sleep(poll_s)


def request_stop(run_dir: Path) -> bool:
    """Ask a reattached worker to stop cleanly (it checkpoints and saves the adapter); False if none.

    Both polite ways at once, so either suffices: the ``stop`` command in the run's inbox (which the
    worker reads between steps on every platform) and the polite signal (``procs.ask_to_stop``).
    """
    pid = worker_pid(run_dir)
    if pid is None:
        return False
    try:
        runs.send_command(run_dir, "stop")
    except OSError:
        pass
    procs.ask_to_stop(pid)
    return True


LOCK = ".worker.lock"


class _DirLock:
    """An open descriptor of the run folder itself, flock()ed; closing it releases the lock."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def fileno(self) -> int:
        return self.fd

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def hold_run_lock(run_dir: Path) -> "_DirLock | IO | None":
    """An exclusive lock on the run folder for this process's lifetime; None if another worker has it.

    On POSIX the lock is taken on the run folder's own inode (an open descriptor of the folder), not
    on a file inside it: a lock file can be deleted and recreated, and the next worker would lock the
    new inode while the first still trains. The folder cannot be unlinked while it holds the run.
    """
    return hold_folder_lock(run_dir, LOCK)


def hold_folder_lock(folder: Path, windows_file: str) -> "_DirLock | IO | None":
    """An exclusive, non-blocking lock on ``folder``'s own inode; None when another process holds it.

    The one way the studio locks for a lifetime (a run's worker, the queue's runner): the lock
    belongs to an open descriptor and ends with the process, and deleting any file cannot release it.
    On Windows (no folder descriptors) it is a byte-range lock on ``folder/windows_file``, which
    Windows refuses to delete while it is open.
    """
    if sys.platform == "win32":  # a folder cannot be opened; msvcrt locks a byte range of a file, which
        return _windows_lock(folder, windows_file)  # Windows also refuses to delete while it is open
    import fcntl

    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return _DirLock(fd)


def _windows_lock(folder: Path, name: str) -> IO | None:
    if sys.platform != "win32":  # msvcrt is Windows only; hold_folder_lock calls this only there
        raise OSError("byte-range locks through msvcrt exist only on Windows")
    import msvcrt

    handle = open(Path(folder) / name, "a+")
    try:
        msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
    except OSError:
        handle.close()
        return None
    return handle


def last_seq(events_path: Path) -> int:
    """The highest ``seq`` in an events.jsonl (0 when empty), so a resumed worker continues it.

    Reads the tail, and a larger tail while it holds no parseable event (a huge or garbage last
    line must not restart the numbering); bad lines are skipped, never fatal.
    """
    try:
        with open(events_path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            window = _TAIL_BYTES
            while True:
                fh.seek(max(0, size - window))
                data = fh.read(window)
                reader = EventReader()
                events = reader.feed(data) + reader.close()
                if events or window >= size:
                    return max((e.seq for e in events), default=0)
                window *= 4
    except FileNotFoundError:
        return 0
