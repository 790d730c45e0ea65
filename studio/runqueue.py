"""The run queue: recipes waiting their turn, on disk, run one after another by one runner process.

``RUNS/queue.json`` holds the entries; it survives closing the window and restarting the studio.
A runner (``lora-studio queue run``, detached with ``--detach`` so it outlives the terminal or the
window that started it) takes the first waiting entry, creates a normal run folder for it, trains it
with the training worker and records the outcome, until none waits. One runner per runs folder:
it holds ``RUNS/.queue-runner.lock`` for its lifetime. An entry left ``running`` by a runner that
died (power loss, kill) is picked up again by the next runner: its run resumes from its last
checkpoint, or starts again when it had none.

    {"version": 1, "entries": [{"id": "q-...", "label": "...", "recipe": {...}, "plan": {...} | null,
                                "status": "waiting|running|finished|stopped|failed|cancelled",
                                "run": "/abs/run/folder" | null, "sweep": "sweep id" | null,
                                "added": "...", "started": "...", "ended": "..."}]}
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import os
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

from studio import paths, runs
from studio.errors import UserError
from studio.fsutil import atomic_write_json, read_json

QUEUE_FILE = "queue.json"
RUNNER_LOCK = ".queue-runner.lock"
EDIT_LOCK = ".queue.lock"
RUNNER_LOG = "queue.log"
WAITING, RUNNING, CANCELLED = "waiting", "running", "cancelled"
DONE_STATES = ("finished", "stopped", "failed", CANCELLED)


def _root(runs_root: Path | None) -> Path:
    root = paths.runs_dir(runs_root)
    root.mkdir(parents=True, exist_ok=True)
    return root


def _now() -> str:
    return _dt.datetime.now().isoformat(timespec="seconds")


@contextlib.contextmanager
def _file_lock(path: Path, blocking: bool = True) -> Iterator[bool]:
    """An exclusive lock on ``path`` (created if missing); yields False when ``blocking`` is off and it is taken."""
    fh = open(path, "a+")
    try:
        try:
            import fcntl

            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except OSError:
                yield False
                return
        except ImportError:  # Windows
            import msvcrt

            try:
                msvcrt.locking(fh.fileno(), msvcrt.LK_LOCK if blocking else msvcrt.LK_NBLCK, 1)
            except OSError:
                yield False
                return
        yield True
    finally:
        fh.close()


def read(runs_root: Path | None = None) -> list[dict]:
    """The queue's entries in order (a damaged file reads as an empty queue and is not overwritten blindly)."""
    raw = read_json(_root(runs_root) / QUEUE_FILE, default={})
    entries = raw.get("entries") if isinstance(raw, dict) else None
    return [e for e in entries if isinstance(e, dict) and "id" in e] if isinstance(entries, list) else []


@contextlib.contextmanager
def _editing(runs_root: Path | None) -> Iterator[list[dict]]:
    """Read, change and write the queue under its lock (the window and the runner edit it)."""
    root = _root(runs_root)
    with _file_lock(root / EDIT_LOCK):
        entries = read(root)
        yield entries
        atomic_write_json(root / QUEUE_FILE, {"version": 1, "entries": entries})


def add(recipe: Any, runs_root: Path | None = None, label: str = "", plan: dict | None = None,
        sweep: str | None = None) -> dict:
    """Append a recipe (a ``Recipe``) to the queue; returns its entry."""
    problems = recipe.validate()
    if problems:
        raise UserError("the recipe has problems:\n  " + "\n  ".join(str(p) for p in problems))
    entry = {"id": f"q-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}",
             "label": label or recipe.name or Path(str(recipe.model.name_or_path)).name,
             "recipe": recipe.to_dict(), "plan": plan, "status": WAITING, "run": None, "sweep": sweep,
             "added": _now(), "started": None, "ended": None}
    with _editing(runs_root) as entries:
        entries.append(entry)
    return entry


def update(entry_id: str, runs_root: Path | None = None, **changes: Any) -> dict:
    with _editing(runs_root) as entries:
        for e in entries:
            if e["id"] == entry_id:
                e.update(changes)
                return dict(e)
    raise UserError(f"no entry {entry_id!r} in the queue")


def cancel(entry_id: str, runs_root: Path | None = None) -> dict:
    """Take a waiting entry off the queue's to-do list (it stays listed as cancelled)."""
    for e in read(runs_root):
        if e["id"] == entry_id or e["id"].endswith(entry_id):
            if e["status"] != WAITING:
                raise UserError(f"{e['id']} is {e['status']}: only a waiting entry can be cancelled "
                                "(stop a running one on the Train page or with 'lora-studio attach')")
            return update(e["id"], runs_root, status=CANCELLED, ended=_now())
    raise UserError(f"no entry {entry_id!r} in the queue ('lora-studio queue list' shows them)")


def clear_done(runs_root: Path | None = None) -> int:
    """Forget the entries that ended (their runs stay in the runs folder)."""
    with _editing(runs_root) as entries:
        keep = [e for e in entries if e["status"] not in DONE_STATES]
        n = len(entries) - len(keep)
        entries[:] = keep
    return n


def runner_pid(runs_root: Path | None = None) -> int | None:
    """The pid of the runner working this queue, None when none is."""
    root = _root(runs_root)
    with _file_lock(root / RUNNER_LOCK, blocking=False) as free:
        if free:
            return None
    try:
        pid = int((root / RUNNER_LOCK).read_text().strip() or 0)
    except (OSError, ValueError):
        return -1  # locked, but the pid is not written yet
    return pid if runs.pid_alive(pid) else -1


def _next(runs_root: Path) -> dict | None:
    """Claim the next entry: one a dead runner left running, else the first waiting one."""
    with _editing(runs_root) as entries:
        for status in (RUNNING, WAITING):
            for e in entries:
                if e["status"] == status:
                    e["status"], e["started"] = RUNNING, e.get("started") or _now()
                    return dict(e)
    return None


def _prepare(entry: dict, runs_root: Path) -> tuple[Path, list[str]]:
    """The entry's run folder (made now, or the one a dead runner left) and the worker's extra arguments."""
    from studio.recipe import Recipe

    if entry.get("run") and (Path(entry["run"]) / runs.RECIPE).is_file():
        run_dir = Path(entry["run"])
        from studio.train import checkpoint

        return run_dir, (["--resume"] if checkpoint.latest_good(run_dir) is not None else [])
    recipe = Recipe.from_dict(entry["recipe"])
    run_dir = runs.create(recipe, runs_root, plan=entry.get("plan"))
    runs.write_state(run_dir, queue=entry["id"], sweep=entry.get("sweep"))
    if entry.get("sweep"):
        from studio import registry

        registry.set_labels(run_dir, add_tags=[entry["sweep"]])  # the Runs page and 'runs list --tag' group them
    update(entry["id"], runs_root, run=str(run_dir))
    return run_dir, []


def run(runs_root: Path | None = None, on_event: Callable[[Any], None] | None = None,
        on_start: Callable[[dict, Path], None] | None = None, limit: int | None = None,
        should_stop: Callable[[], bool] = lambda: False) -> list[dict]:
    """Run waiting entries one after another until none waits (or ``limit`` ran); returns the entries run.

    Raises UserError when another runner works this queue.
    """
    from studio.procs import follow_worker, worker_argv

    root = _root(runs_root)
    done: list[dict] = []
    with _file_lock(root / RUNNER_LOCK, blocking=False) as mine:
        if not mine:
            raise UserError(f"a queue runner already works {root / QUEUE_FILE} (pid {runner_pid(root)}); "
                            "entries added now are run by it")
        (root / RUNNER_LOCK).write_text(str(os.getpid()))
        while (limit is None or len(done) < limit) and not should_stop():
            entry = _next(root)
            if entry is None:
                break
            stale = bool(entry.get("run"))  # a run an earlier runner started and could not see to its end
            run_dir, extra = _prepare(entry, root)
            state = runs.read_state(run_dir)
            if on_start:
                on_start(entry, run_dir)
            if stale and state.get("status") == "running" and runs.pid_alive(state.get("pid")):
                _wait_for(int(state["pid"]), should_stop)  # its worker outlived the runner: let it finish
            elif stale and state.get("status") in ("finished", "stopped", "failed"):
                pass  # it ended before the last runner could say so
            else:
                with open(run_dir / "worker.log", "ab") as log:
                    follow_worker(worker_argv("workers.train", run_dir, *extra), log, on_event or (lambda e: None),
                                  "stopping the queue's current run: saving its adapter (Ctrl-C again to end at once)",
                                  outlive=True)
            status = runs.summarize(run_dir).status if runs.summarize(run_dir) else "failed"
            status = status if status in ("finished", "stopped") else "failed"
            done.append(update(entry["id"], root, status=status, ended=_now()))
            if status == "stopped":
                break  # the user stopped the run: the queue waits for them rather than starting the next
        (root / RUNNER_LOCK).write_text("")
    return done


def _wait_for(pid: int, should_stop: Callable[[], bool], interval_s: float = 1.0) -> None:
    import time

    while runs.pid_alive(pid) and not should_stop():
        time.sleep(interval_s)
