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
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

from studio import checkpoint, driver, fsutil, paths, registry, runfiles, runs
from studio.attach import hold_folder_lock, worker_pid
from studio.errors import UserError
from studio.fsutil import atomic_write_json
from studio.procs import worker_argv
from studio.recipe import Recipe, RecipeError
from studio.termtext import printable

QUEUE_FILE = "queue.json"
RUNNER_LOCK = ".queue-runner.lock"  # the runner's pid (the lock itself is on the runs folder; on Windows, this file)
EDIT_LOCK = ".queue.lock"
RUNNER_LOG = "queue.log"
WAITING, RUNNING, CANCELLED = "waiting", "running", "cancelled"
DONE_STATES = ("finished", "stopped", "failed", CANCELLED)
STATUSES = (WAITING, RUNNING, *DONE_STATES)
# Each entry's fields and their JSON types; "id", "status" and "recipe" are required.
ENTRY_FIELDS = {"id": "string", "status": "string", "recipe": "object", "label": "string", "plan": "object",
                "run": "string", "sweep": "string", "added": "string", "started": "string", "ended": "string",
                "error": "string"}


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# Where the queue says what it did about a damaged queue.json or a refused entry. The CLI's stderr
# by default; the window sets its own.
report: Callable[[str], None] = _stderr


def _root(runs_root: Path | None) -> Path:
    root = paths.runs_dir(runs_root)
    root.mkdir(parents=True, exist_ok=True)
    return root


def _now() -> str:
    return _dt.datetime.now().isoformat(timespec="seconds")


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """A short exclusive lock for one edit of the queue, on ``path`` (created if missing).

    The lock is on the open file, and is taken again if ``path`` no longer names the file locked
    (someone deleted or replaced it meanwhile), so two editors never both think they hold it.
    """
    while True:
        fh = open(path, "a+")
        try:
            if sys.platform == "win32":  # an open file cannot be deleted there
                import msvcrt

                msvcrt.locking(fh.fileno(), msvcrt.LK_LOCK, 1)
                yield
                return
            import fcntl

            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                same = os.path.samestat(os.fstat(fh.fileno()), os.stat(path))
            except FileNotFoundError:
                same = False
            if same:
                yield
                return
        finally:
            fh.close()


def load(runs_root: Path | None = None) -> tuple[list[dict], list[str]]:
    """The queue's readable entries in order, and what is wrong with queue.json (nothing when it is sound).

    A file that cannot be read (cut short, not JSON, a folder, a FIFO, far too large) has no
    readable entries; an entry with a missing or mistyped field is left out and named.
    """
    path = _root(runs_root) / QUEUE_FILE
    try:
        raw = runfiles.load(path, runfiles.LARGE, missing={"version": 1, "entries": []})
    except runfiles.Damaged as e:
        return [], [e.what]
    if not isinstance(raw, dict) or not isinstance(raw.get("entries"), list):
        return [], ["holds no list of 'entries'"]
    entries: list[dict] = []
    problems: list[str] = []
    seen: set[str] = set()
    for i, entry in enumerate(raw["entries"], 1):
        problem = _entry_problem(entry)
        if problem is None and entry["id"] in seen:
            problem = f"its id {entry['id']!r} is used by an earlier entry"
        if problem is None:
            seen.add(entry["id"])
            entries.append(entry)
        else:
            problems.append(f"entry {i}: {problem}")
    return entries, problems


def _entry_problem(entry: Any) -> str | None:
    if not isinstance(entry, dict):
        return f"is {type(entry).__name__}, expected an object"
    try:
        for key, kind in ENTRY_FIELDS.items():
            runfiles.get(entry, key, kind, "")
    except runfiles.Damaged as e:
        return e.what
    for key in ("id", "status", "recipe"):
        if not entry.get(key) and entry.get(key) != {}:
            return f"'{key}' is missing"
    if entry["status"] not in STATUSES:
        return f"'status' is {printable(repr(entry['status']), limit=40)}, not one of {', '.join(STATUSES)}"
    return None


def read(runs_root: Path | None = None) -> list[dict]:
    """The queue's readable entries in order (``load`` also says what is damaged)."""
    return load(runs_root)[0]


@contextlib.contextmanager
def _editing(runs_root: Path | None) -> Iterator[list[dict]]:
    """Read, change and write the queue under its lock (the window and the runner edit it).

    A damaged queue.json is never written over: it is moved aside, with the time in its name, the
    entries that could be read go on in a new queue.json, and ``report`` says where the old one is.
    """
    root = _root(runs_root)
    with _file_lock(root / EDIT_LOCK):
        entries, problems = load(root)
        if problems:
            _set_aside(root, entries, problems)
        yield entries
        atomic_write_json(root / QUEUE_FILE, {"version": 1, "entries": entries})


def _set_aside(root: Path, entries: list[dict], problems: list[str]) -> Path:
    path = root / QUEUE_FILE
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    aside, n = root / f"{QUEUE_FILE}.damaged-{stamp}", 1
    while aside.exists() or aside.is_symlink():
        n += 1
        aside = root / f"{QUEUE_FILE}.damaged-{stamp}-{n}"
    fsutil.replace(path, aside)
    atomic_write_json(path, {"version": 1, "entries": entries})  # what could be read goes on at once
    shown = "; ".join(printable(p, limit=200) for p in problems[:5]) + ("; ..." if len(problems) > 5 else "")
    report(f"{printable(path)} was damaged ({shown}). It is kept as {printable(aside)}; the queue goes on with "
           f"the {len(entries)} entr{'y' if len(entries) == 1 else 'ies'} that could be read. Entries left out are "
           "in that file: add their recipes again with 'lora-studio queue add'")
    return aside


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
    raise UserError(f"no entry {printable(repr(entry_id))} in the queue")


def cancel(entry_id: str, runs_root: Path | None = None) -> dict:
    """Take a waiting entry off the queue's to-do list (it stays listed as cancelled)."""
    for e in read(runs_root):
        if e["id"] == entry_id or e["id"].endswith(entry_id):
            if e["status"] != WAITING:
                raise UserError(f"{printable(e['id'])} is {e['status']}: only a waiting entry can be cancelled "
                                "(stop a running one on the Train page or with 'lora-studio attach')")
            return update(e["id"], runs_root, status=CANCELLED, ended=_now())
    raise UserError(f"no entry {printable(repr(entry_id))} in the queue ('lora-studio queue list' shows them)")


def clear_done(runs_root: Path | None = None) -> int:
    """Forget the entries that ended (their runs stay in the runs folder)."""
    with _editing(runs_root) as entries:
        keep = [e for e in entries if e["status"] not in DONE_STATES]
        n = len(entries) - len(keep)
        entries[:] = keep
    return n


def _hold_runner_lock(root: Path, tries: int = 10):
    """The runner's lock, on the runs folder's own inode (``attach.hold_folder_lock``); None when taken.

    Deleting .queue-runner.lock (it only holds the pid) cannot release it. A probe (``runner_pid``)
    holds the lock for an instant, so a runner starting then tries again for a moment.
    """

    for attempt in range(tries):
        held = hold_folder_lock(root, RUNNER_LOCK)
        if held is not None or attempt == tries - 1:
            return held
        time.sleep(0.05)
    return None


def runner_pid(runs_root: Path | None = None) -> int | None:
    """The pid of the runner working this queue, None when none is (-1: one is, its pid unknown)."""
    root = _root(runs_root)
    probe = _hold_runner_lock(root, tries=1)
    if probe is not None:
        probe.close()
        return None
    try:
        pid = int((root / RUNNER_LOCK).read_text().strip() or 0)
    except (OSError, ValueError):
        return -1  # locked, but the pid is not written yet (or its file was deleted)
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


def _own_run_dir(entry: dict, root: Path) -> Path | None:
    """The entry's run folder when it has one; UserError when it lies outside the runs folder.

    Resolved first, so neither ``..`` nor a symlink takes a run (and the files its worker writes)
    elsewhere; a queue entry's run is always a folder ``runs.create`` made directly in ``root``.
    """
    if not entry.get("run"):
        return None
    run_dir = Path(entry["run"])
    real, real_root = run_dir.resolve(), root.resolve()
    if real.parent != real_root or run_dir.is_symlink() or run_dir.name.startswith("."):
        raise UserError(f"entry {printable(entry['id'])}: its run folder {printable(run_dir)} is not a folder of "
                        f"the runs folder {printable(real_root)} (it resolves to {printable(real)}); the queue only "
                        "trains inside its runs folder. Add the recipe again with 'lora-studio queue add'")
    return run_dir


def _recipe(entry: dict):
    try:
        recipe = Recipe.from_dict(entry["recipe"])
    except (RecipeError, TypeError, ValueError) as e:
        raise UserError(f"entry {printable(entry['id'])}: its recipe cannot be read ({printable(e)})") from None
    problems = recipe.validate()
    if problems:
        raise UserError(f"entry {printable(entry['id'])}: its recipe has problems: "
                        + "; ".join(printable(p) for p in problems))
    return recipe


def _prepare(entry: dict, runs_root: Path) -> tuple[Path, list[str]]:
    """The entry's run folder (made now, or the one a dead runner left) and the worker's extra arguments.

    UserError when the entry cannot be trained (a run folder outside the runs folder, a bad recipe).
    """
    run_dir = _own_run_dir(entry, runs_root)
    if run_dir is not None and (run_dir / runs.RECIPE).is_file():
        return run_dir, (["--resume"] if checkpoint.latest_good(run_dir) is not None else [])
    recipe = _recipe(entry)
    run_dir = runs.create(recipe, runs_root, plan=entry.get("plan"))
    runs.write_state(run_dir, queue=entry["id"], sweep=entry.get("sweep"))
    if entry.get("sweep"):
        registry.set_labels(run_dir, add_tags=[entry["sweep"]])  # the Runs page and 'runs list --tag' group them
    update(entry["id"], runs_root, run=str(run_dir))
    return run_dir, []


def run(runs_root: Path | None = None, on_event: Callable[[Any], None] | None = None,
        on_start: Callable[[dict, Path], None] | None = None, limit: int | None = None,
        should_stop: Callable[[], bool] = lambda: False) -> list[dict]:
    """Run waiting entries one after another until none waits (or ``limit`` ran); returns the entries run.

    Raises UserError when another runner works this queue. An entry that cannot be trained is
    marked failed with its reason (``error``), said through ``report``, and the next one runs.
    """
    root = _root(runs_root)
    done: list[dict] = []
    lock = _hold_runner_lock(root)
    if lock is None:
        pid = runner_pid(root)
        raise UserError(f"a queue runner already works {printable(root / QUEUE_FILE)} "
                        f"(pid {pid if pid and pid > 0 else 'unknown'}); entries added now are run by it")
    try:
        _write_pid(root, lock, str(os.getpid()))
        while (limit is None or len(done) < limit) and not should_stop():
            entry = _next(root)
            if entry is None:
                break
            try:
                status = _run_one(entry, root, on_event, on_start, should_stop)
            except UserError as e:
                report(f"queue: {e}")
                done.append(update(entry["id"], root, status="failed", ended=_now(), error=str(e)))
                continue
            done.append(update(entry["id"], root, status=status, ended=_now()))
            if status == "stopped":
                break  # the user stopped the run: the queue waits for them rather than starting the next
        _write_pid(root, lock, "")
    finally:
        lock.close()
    return done


def _write_pid(root: Path, lock: Any, text: str) -> None:
    if hasattr(lock, "write"):  # Windows: the locked file itself, written through the handle that locks it
        lock.seek(0)
        lock.truncate()
        lock.write(text)
        lock.flush()
    else:
        (root / RUNNER_LOCK).write_text(text)


def _run_one(entry: dict, root: Path, on_event, on_start, should_stop) -> str:
    """Train one claimed entry to its end; its final status (finished, stopped or failed)."""

    stale = bool(entry.get("run"))  # a run an earlier runner started and could not see to its end
    run_dir, extra = _prepare(entry, root)
    state = runs.read_state(run_dir)
    if on_start:
        on_start(entry, run_dir)
    worker = worker_pid(run_dir) if stale else None
    if worker is not None:
        _wait_for(worker, should_stop)  # its worker outlived the runner: let it finish
    elif stale and state.get("status") in ("finished", "stopped", "failed"):
        pass  # it ended before the last runner could say so
    else:
        with open(run_dir / "worker.log", "ab") as log:
            driver.follow(worker_argv("workers.train", str(run_dir), *extra), log, on_event or (lambda e: None),
                          driver.TRAIN, "stopping the queue's current run: saving its adapter (Ctrl-C again to end "
                          "at once)", outlive=True)
    status = runs.read_state(run_dir).get("status")
    return status if status in ("finished", "stopped") else "failed"


def _wait_for(pid: int, should_stop: Callable[[], bool], interval_s: float = 1.0) -> None:
    while runs.pid_alive(pid) and not should_stop():
        time.sleep(interval_s)
