"""The run folder: its layout, run ids, state and the listing of runs (DESIGN.md, "The run folder").

    runs/<run-id>/recipe.json  plan.json  events.jsonl  state.json  checkpoints/  adapter/  exports/

A run folder is self-describing: export, resume and the UI need nothing else.
"""
from __future__ import annotations

import datetime as _dt
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from studio import paths, runfiles
from studio.events import encode_command
from studio.fsutil import atomic_write_json, read_json
from studio.procs import pid_alive, process_created
from studio.recipe import Recipe

STATUSES = ("created", "running", "stopped", "failed", "finished", "interrupted")
RECIPE, PLAN, EVENTS, STATE = "recipe.json", "plan.json", "events.jsonl", "state.json"
COMMANDS = "commands.jsonl"  # the inbox of a worker whose stdin belongs to a window that went away
ADAPTER, CHECKPOINTS, EXPORTS = "adapter", "checkpoints", "exports"


def _slug(text: str) -> str:
    text = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")
    return text[:40] or "run"


def new_run_id(recipe: Recipe) -> str:
    """``20261129-201500-<name>``: the recipe's name, else the model's and the dataset's."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    model = Path(str(recipe.model.name_or_path)).name
    data = Path(str(recipe.data.path)).stem if str(recipe.data.path).strip() else ""
    base = recipe.name or (f"{model}-{data}" if data else model)
    return f"{stamp}-{_slug(base)}"


def send_command(run_dir: Path, name: str) -> None:
    """Ask the run's worker to ``stop``, ``pause`` or ``resume`` through its inbox (one appended line).

    The worker polls ``commands.jsonl`` as well as its stdin, so a window that reattached to a run
    (or ``lora-studio attach``) can drive it. Lines written before the worker started are ignored.
    """

    fd = os.open(Path(run_dir) / COMMANDS, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, encode_command(name))  # one write of one short line: appends never interleave
    finally:
        os.close(fd)


def create(recipe: Recipe, runs_root: Path | None = None, plan: dict | None = None) -> Path:
    """Make a fresh run folder holding the recipe (and plan) as started."""
    root = paths.runs_dir(runs_root)
    root.mkdir(parents=True, exist_ok=True)
    run_id = new_run_id(recipe)
    run_dir = root / run_id
    n = 1
    while True:
        try:
            run_dir.mkdir()
            break
        except FileExistsError:
            n += 1
            run_dir = root / f"{run_id}-{n}"
    recipe.save(run_dir / RECIPE)
    if plan is not None:
        atomic_write_json(run_dir / PLAN, plan)
    write_state(run_dir, status="created", created=_dt.datetime.now().isoformat(timespec="seconds"))
    return run_dir


def read_plan(run_dir: Path) -> dict:
    """The run's plan.json as the planner wrote it (``Plan.to_dict``); empty when missing or damaged."""
    plan = read_json(Path(run_dir) / PLAN, default={})
    return plan if isinstance(plan, dict) else {}


def read_state(run_dir: Path) -> dict:
    state = read_json(Path(run_dir) / STATE, default={})
    return state if isinstance(state, dict) else {}  # damaged or hostile: read as no state


def write_state(run_dir: Path, **updates: Any) -> dict:
    """Merge ``updates`` into state.json atomically; returns the new state.

    Writing a ``pid`` records that process's start time as ``pid_created`` beside it, so a pid the
    system later reuses for another process is not taken for the run's worker. Under torchrun only rank 0 writes (docs/ARCHITECTURE.md, "rank 0 writes"): another rank reads.
    """
    if os.environ.get("RANK", "0") not in ("", "0") and os.environ.get("WORLD_SIZE", "1") not in ("", "1"):
        return read_state(run_dir)
    if updates.get("pid") is not None and "pid_created" not in updates:
        updates["pid_created"] = process_created(updates["pid"])  # attach.worker_pid tells a reused pid by it
    elif "pid" in updates and updates["pid"] is None:
        updates.setdefault("pid_created", None)
    state = read_state(run_dir)
    state.update(updates)
    state["updated"] = _dt.datetime.now().isoformat(timespec="seconds")
    atomic_write_json(Path(run_dir) / STATE, state)
    return state


@dataclass
class RunSummary:
    path: Path
    id: str
    status: str
    model: str
    dataset: str
    final_loss: float | None
    step: int
    created: str
    eval: dict | None = None   # studio.evalreport.summary of eval.json (val losses, held-out scores)

    @property
    def live(self) -> bool:
        return self.status == "running"


def summarize(run_dir: Path) -> RunSummary | None:
    """What ``runs list`` shows of a run folder; None when it holds no recipe.json (not a run).

    Raises ``runfiles.Damaged`` naming the file and the field when recipe.json or state.json is not
    what the studio writes (a list for an object, a string for a number): ``list_runs`` skips that run.
    """
    run_dir = Path(run_dir)
    raw = runfiles.load_object(run_dir / RECIPE)
    if raw is None:
        return None
    state = runfiles.load_object(run_dir / STATE) or {}
    where_r, where_s = run_dir / RECIPE, run_dir / STATE
    status = runfiles.get(state, "status", "string", where_s) or "created"
    pid = runfiles.get(state, "pid", "integer", where_s)
    created = state.get("pid_created")  # a pid the system gave to a later process is not the run's worker
    created = float(created) if isinstance(created, (int, float)) and not isinstance(created, bool) else None
    if status == "running" and not pid_alive(pid, created):
        status = "interrupted"  # the worker died without saying so (power loss, SIGKILL)
    model = runfiles.get(raw, "model.name_or_path", "string", where_r) or "?"
    dataset = runfiles.get(raw, "data.path", "string", where_r) or ""
    for key in ("lora.rank", "train.lr"):  # the list's columns
        runfiles.get(raw, key, "number", where_r)
    created = (runfiles.get(state, "created", "string", where_s)
               or _dt.datetime.fromtimestamp(run_dir.stat().st_mtime).isoformat(timespec="seconds"))
    eval_ = runfiles.get(state, "eval", "object", where_s)
    for key in ("val_loss_adapter", "val_loss_base", "score_adapter", "score_total"):
        runfiles.get(state, f"eval.{key}", "number", where_s)
    runfiles.get(state, "data_fingerprint", "string", where_s)
    return RunSummary(path=run_dir, id=run_dir.name, status=status, model=model, dataset=dataset,
                      final_loss=runfiles.get(state, "last_loss", "number", where_s),
                      step=runfiles.get(state, "step", "integer", where_s) or 0, created=created, eval=eval_)


def list_runs(runs_root: Path | None = None, skipped: list[runfiles.Damaged] | None = None) -> list[RunSummary]:
    """Every readable run under the runs folder, newest first.

    A run whose files are damaged is left out; its ``Damaged`` (run, file, field) is appended to
    ``skipped`` for the caller to say so.
    """
    root = paths.runs_dir(runs_root)
    if not root.is_dir():
        return []
    out = []
    for d in root.iterdir():
        if not d.is_dir() or d.name.startswith("."):
            continue
        try:
            s = summarize(d)
        except runfiles.Damaged as e:
            if skipped is not None:
                skipped.append(e)
            continue
        if s is not None:
            out.append(s)
    return sorted(out, key=lambda s: s.id, reverse=True)
