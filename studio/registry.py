"""What the user keeps about runs: what an adapter is, the user's labels, a trash with undo, and comparisons.

``RUN/adapter/lora_studio.json`` makes the adapter folder self-describing for whoever receives it
alone: the base model (id, revision, sha256 of its weight files), the dataset (path, fingerprint),
the full recipe, final and best metrics, the evaluation results, the duration, the studio version
and when it was made. It is rebuilt from the run folder (``build_metadata``) when training ends,
when ``lora-studio eval`` writes eval.json and when the user renames, tags or notes the run.

The user's labels (a display name, tags, a note) live in ``RUN/labels.json``: the worker never
writes it, so a label set during training is not lost to the worker's own state updates.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any, Sequence, TypeGuard

from studio import __version__, evalreport, fsutil, paths, playground, runfiles, runs
from studio import events as ev
from studio.errors import UserError
from studio.fsutil import atomic_write_json, read_json
from studio.termtext import printable
from studio.weights_hash import file_sha256

META_FILE = "lora_studio.json"   # inside adapter/
META_VERSION = 1
LABELS = "labels.json"
TRASH = ".trash"                 # inside the runs folder; list_runs skips dot-folders
TRASHED = ".trashed.json"        # inside a trashed run: where it came from and when
# The metrics a run's events carry, by name: (event type, key, label). The Runs page and compare read this.
METRICS = {
    "loss": ("metric", "loss", "training loss"),
    "eval_loss": ("metric", "eval_loss", "validation loss"),
    "learning_rate": ("metric", "learning_rate", "learning rate"),
    "tokens_per_s": ("metric", "tokens_per_s", "tokens/s"),
    "grad_norm": ("metric", "grad_norm", "gradient norm"),
    "memory": ("memory", "allocated", "memory allocated (bytes)"),
}


# -- the base model's identity -----------------------------------------------------------------
def weights_identity(base: Path) -> dict:
    """``{"revision", "files": {name: sha256}, "sha256"}`` of a model folder's weight files.

    A Hugging Face cache snapshot names its revision (the folder) and stores each file under its
    sha256 (the blob the link points at), so nothing is read; any other folder is hashed once and
    remembered by (path, size, mtime) in the studio's data folder.
    """
    base = Path(base)
    revision = base.name if base.parent.name == "snapshots" else None
    files = sorted(p for p in base.glob("*") if p.suffix in (".safetensors", ".bin", ".pt", ".pth") and p.is_file())
    digests = {p.name: file_sha256(p) for p in files}
    combined = hashlib.sha256(json.dumps(digests, sort_keys=True).encode()).hexdigest() if digests else None
    return {"revision": revision, "files": digests, "sha256": combined}


# -- metrics from events.jsonl -----------------------------------------------------------------
def metric_series(run_dir: Path, metric: str, axis: str = "step") -> tuple[list[float], list[float]]:
    """(x, y) of one metric of a run: x is the step, or seconds of training since the run started.

    Time counts training sessions only: the pause between a stop and a resume is left out.
    """

    kind, key, _ = METRICS[metric]
    xs: list[float] = []
    ys: list[float] = []
    elapsed, session_start, last_ts = 0.0, None, None
    for e in ev.read_events(Path(run_dir) / runs.EVENTS):
        if e.type == ev.HELLO:  # a new worker session (a resume)
            if session_start is not None and last_ts is not None:
                elapsed += last_ts - session_start
            session_start = e.ts
        last_ts = e.ts
        value, step = e.data.get(key), e.data.get("step")
        if e.type != kind or not _num(value) or not _num(step):
            continue
        x = float(step) if axis == "step" else elapsed + (e.ts - (session_start if session_start is not None else e.ts))
        if axis == "step" and xs and xs[-1] == x:
            ys[-1] = float(value)  # the same step reported twice (the last eval_steps and the final evaluation)
            continue
        xs.append(x)
        ys.append(float(value))
    return xs, ys


def _num(v: Any) -> TypeGuard[int | float]:
    """A finite number ``float()`` can hold (an int of 400 digits in events.jsonl cannot: OverflowError)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) < 1e300


def training_seconds(run_dir: Path) -> float | None:
    """Wall time the workers of this run spent, summed over its sessions (a resume adds one)."""

    total, start, last = 0.0, None, None
    for e in ev.read_events(Path(run_dir) / runs.EVENTS):
        if e.type == ev.HELLO:
            if start is not None and last is not None:
                total += last - start
            start = e.ts
        last = e.ts
    if start is None or last is None:
        return None
    return round(total + last - start, 1)


def metrics_summary(run_dir: Path) -> dict:
    """Final and best values of the training and validation losses, throughput and peak memory."""
    out: dict[str, Any] = {}
    for name in ("loss", "eval_loss"):
        xs, ys = metric_series(run_dir, name)
        if ys:
            best = min(range(len(ys)), key=ys.__getitem__)
            out[f"final_{name}"] = ys[-1]
            out[f"best_{name}"] = ys[best]
            out[f"best_{name}_step"] = int(xs[best])
    _, tps = metric_series(run_dir, "tokens_per_s")
    if tps:
        out["mean_tokens_per_s"] = round(sum(tps) / len(tps), 2)
    _, mem = metric_series(run_dir, "memory")
    if mem:
        out["peak_memory_bytes"] = int(max(mem))
    return out


# -- the adapter's metadata --------------------------------------------------------------------
def build_metadata(run_dir: Path) -> dict:
    """Everything that says what ``RUN/adapter`` is, from the run folder alone."""

    run_dir = Path(run_dir)
    where_r, where_s = run_dir / runs.RECIPE, run_dir / runs.STATE
    recipe = runfiles.load_object(where_r) or {}  # runfiles.Damaged names a hand-damaged file
    state = runs.read_state(run_dir)
    data_report = read_json(run_dir / "data_report.json", default={})
    data_report = data_report if isinstance(data_report, dict) else {}
    base = runfiles.get(state, "base_model", "string", where_s)
    model = {"name_or_path": runfiles.get(recipe, "model.name_or_path", "string", where_r), "folder": base}
    if base and Path(base).is_dir():
        model.update(weights_identity(Path(base)))
    report = evalreport.read(run_dir)
    return {
        "version": META_VERSION, "studio_version": __version__, "run": run_dir.name,
        "created": _dt.datetime.now().isoformat(timespec="seconds"),
        "run_created": state.get("created"), "started": state.get("started"), "finished": state.get("finished"),
        "status": state.get("status"), "step": state.get("adapter_step", state.get("step")),
        "duration_s": training_seconds(run_dir),
        "labels": read_labels(run_dir),  # a damaged labels.json must not stop the worker writing the rest
        "base_model": model,
        "dataset": {"path": runfiles.get(recipe, "data.path", "string", where_r),
                    "fingerprint": state.get("data_fingerprint") or data_report.get("fingerprint"),
                    "format": data_report.get("format"), "usable": data_report.get("usable")},
        "recipe": recipe,
        "metrics": metrics_summary(run_dir),
        # the worker's measured peak against the plan's prediction (measured_peak / predicted_peak)
        "memory": state.get("memory_peak") if isinstance(state.get("memory_peak"), dict) else None,
        # grpo with the user's own reward: which code scored the completions ({"path", "sha256"})
        "reward_file": state.get("reward_file") if isinstance(state.get("reward_file"), dict) else None,
        "eval": evalreport.summary(report) if report else None,
        "eval_report": report,
    }


def write_metadata(run_dir: Path) -> Path | None:
    """(Re)write ``adapter/lora_studio.json``; None when the run has no adapter yet."""
    adapter = Path(run_dir) / runs.ADAPTER
    if not adapter.is_dir():
        return None
    path = adapter / META_FILE
    atomic_write_json(path, build_metadata(run_dir))
    return path


def read_metadata(adapter_or_run: Path) -> dict | None:
    """The metadata of an adapter folder (or of a run folder's adapter)."""
    p = Path(adapter_or_run)
    for cand in (p / META_FILE, p / runs.ADAPTER / META_FILE):
        raw = read_json(cand, default=None)
        if isinstance(raw, dict):
            return raw
    return None


# -- labels: name, tags, note ------------------------------------------------------------------
def read_labels(run_dir: Path, strict: bool = False) -> dict:
    """The run's name, tags and note.

    ``strict`` raises ``runfiles.Damaged`` naming the field when labels.json is damaged (``runs list``
    skips and names such a run); otherwise a damaged field reads as empty, so the window and a
    rename still work, and the next ``set_labels`` writes a sound file.
    """
    where = Path(run_dir) / LABELS
    try:
        raw = runfiles.load_object(where) or {}
    except runfiles.Damaged:
        if strict:
            raise
        raw = {}
    out: dict = {}
    for key, kind, empty in (("name", "string", ""), ("tags", "list", []), ("note", "string", "")):
        try:
            value = runfiles.get(raw, key, kind, where)
            if kind == "list" and value and not all(isinstance(t, str) for t in value):
                raise runfiles.Damaged(where, f"'{key}' holds something other than strings")
        except runfiles.Damaged:
            if strict:
                raise
            value = None
        out[key] = list(value) if isinstance(value, list) else (value or empty)
    return out


def set_labels(run_dir: Path, name: str | None = None, add_tags: Sequence[str] = (), remove_tags: Sequence[str] = (),
               note: str | None = None) -> dict:
    """Change a run's display name, tags or note; the adapter's metadata follows."""
    labels = read_labels(run_dir)
    if name is not None:
        labels["name"] = name.strip()
    for t in add_tags:
        t = t.strip()
        if t and t not in labels["tags"]:
            labels["tags"].append(t)
    labels["tags"] = [t for t in labels["tags"] if t not in set(remove_tags)]
    if note is not None:
        labels["note"] = note
    atomic_write_json(Path(run_dir) / LABELS, labels)
    if (Path(run_dir) / runs.ADAPTER / META_FILE).is_file():
        write_metadata(run_dir)
    return labels


def replace_tags(run_dir: Path, tags: list[str]) -> None:
    """Make ``tags`` the run's tags: the ones not in it are removed, the new ones added."""
    old = read_labels(run_dir)["tags"]
    set_labels(run_dir, add_tags=tags, remove_tags=[t for t in old if t not in tags])


# -- finding runs, the trash -------------------------------------------------------------------
def find_run(ref: str, runs_root: Path | None = None) -> Path:
    """A run named by its folder, its id, a unique start of its id, or its display name."""
    root = paths.runs_dir(runs_root)
    p = Path(ref).expanduser()
    if (p / runs.RECIPE).is_file():
        return p.resolve()
    if (root / ref / runs.RECIPE).is_file():
        return root / ref
    candidates = [s.path for s in runs.list_runs(root)
                  if s.id.startswith(ref) or read_labels(s.path)["name"] == ref]
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise UserError(f"no run {printable(repr(ref))} in {printable(root)}: give a run folder, its id or its "
                        "name ('lora-studio runs list' shows them)")
    raise UserError(f"{printable(repr(ref))} names {len(candidates)} runs "
                    f"({', '.join(printable(c.name) for c in candidates[:5])}): give more of the id")


def trash(run_dir: Path) -> Path:
    """Move a run into the runs folder's trash (``restore`` undoes it); a live run is refused."""
    run_dir = Path(run_dir)
    state = runs.read_state(run_dir)  # not summarize: a run with damaged files can be deleted too
    if state.get("status") == "running" and runs.pid_alive(state.get("pid")):
        raise UserError(f"{printable(run_dir.name)} is training now: stop it before deleting it")
    bin_ = run_dir.parent / TRASH
    bin_.mkdir(exist_ok=True)
    target = bin_ / run_dir.name
    if target.is_symlink() or target.is_file():
        target.unlink()
    elif target.exists():
        shutil.rmtree(target)  # an older copy of the same id, deleted before: the newer delete wins
    fsutil.replace(run_dir, target)
    atomic_write_json(target / TRASHED, {"from": str(run_dir), "when": _dt.datetime.now().isoformat(timespec="seconds")})
    return target


def trashed(runs_root: Path | None = None) -> list[dict]:
    """The runs in the trash, newest deletion first: ``{"id", "path", "when", "problem"}``.

    A damaged ``.trashed.json`` does not hide the run: it is listed with no date (last) and
    ``problem`` says what is wrong; ``problem`` is None otherwise.
    """
    root = paths.runs_dir(runs_root)
    out = []
    bin_ = root / TRASH
    for d in sorted(bin_.iterdir()) if bin_.is_dir() and not bin_.is_symlink() else []:
        if not d.is_dir() or d.is_symlink():
            continue  # only what trash() put there: run folders
        when, problem = "", None
        try:
            info = runfiles.load_object(d / TRASHED) or {}
            when = runfiles.get(info, "when", "string", d / TRASHED) or ""
        except runfiles.Damaged as e:
            problem = str(e)
        out.append({"id": d.name, "path": str(d), "when": when, "problem": problem})
    return sorted(out, key=lambda x: x["when"], reverse=True)


def restore(run_id: str | None = None, runs_root: Path | None = None) -> Path:
    """Put a trashed run back (the last one deleted when ``run_id`` is None): the undo of ``trash``."""
    root = paths.runs_dir(runs_root)
    items = trashed(root)
    if not items:
        raise UserError(f"the trash of {printable(root)} is empty")
    pick = items[0] if run_id is None else next((i for i in items if i["id"] == run_id), None)
    if pick is None:
        raise UserError(f"no run {printable(repr(run_id))} in the trash "
                        f"({', '.join(printable(i['id']) for i in items[:5])})")
    target = root / pick["id"]
    if target.exists() or target.is_symlink():
        raise UserError(f"{printable(target)} exists: rename it before restoring {printable(pick['id'])}")
    fsutil.replace(pick["path"], target)
    marker = target / TRASHED
    if marker.is_symlink() or marker.is_file():
        marker.unlink()  # a folder of that name (hostile) stays: it is harmless in a run folder
    return target


def empty_trash(runs_root: Path | None = None) -> int:
    root = paths.runs_dir(runs_root)
    items = trashed(root)
    for i in items:
        shutil.rmtree(i["path"], ignore_errors=True)
    return len(items)


# -- rows, comparisons -------------------------------------------------------------------------
def row(s: runs.RunSummary) -> dict:
    """One run as the list shows it (``runs list --json``, the Runs page).

    Raises ``runfiles.Damaged`` naming the file and field when labels.json, recipe.json or
    adapter/lora_studio.json holds the wrong type where the row reads it.
    """
    labels = read_labels(s.path, strict=True)
    meta_path = s.path / runs.ADAPTER / META_FILE
    meta = runfiles.load_object(meta_path, runfiles.LARGE) or {}
    recipe_path = s.path / runs.RECIPE
    recipe = runfiles.load_object(recipe_path) or {}

    def m(key: str, kind: str = "number"):
        return runfiles.get(meta, key, kind, meta_path)

    if m("metrics", "object"):
        best, final_eval = m("metrics.best_loss"), m("metrics.final_eval_loss")
    else:  # no metadata yet (a run still training): from its events
        metrics = metrics_summary(s.path)
        best, final_eval = metrics.get("best_loss"), metrics.get("final_eval_loss")
    ev_ = s.eval or {}
    duration = m("duration_s") if "duration_s" in meta else training_seconds(s.path)
    return {"id": s.id, "name": labels["name"], "tags": labels["tags"], "note": labels["note"],
            "status": s.status, "model": s.model, "dataset": s.dataset, "step": s.step,
            "rank": runfiles.get(recipe, "lora.rank", "number", recipe_path),
            "lr": runfiles.get(recipe, "train.lr", "number", recipe_path),
            "final_loss": s.final_loss, "best_loss": best, "eval_loss": final_eval,
            "val_loss": ev_.get("val_loss_adapter", final_eval),
            "val_loss_base": ev_.get("val_loss_base"),
            "score": (ev_["score_adapter"] / ev_["score_total"])
            if ev_.get("score_total") and isinstance(ev_.get("score_adapter"), (int, float)) else None,
            "duration_s": duration,
            "created": s.created, "adapter": str(s.path / runs.ADAPTER) if (s.path / runs.ADAPTER).is_dir() else None,
            "dataset_fingerprint": m("dataset.fingerprint", "string")
            or runfiles.get(runs.read_state(s.path), "data_fingerprint", "string", s.path / runs.STATE),
            "base_model_sha256": m("base_model.sha256", "string"),
            "studio_version": m("studio_version", "string"), "path": str(s.path)}


def rows(runs_root: Path | None = None, skipped: list[runfiles.Damaged] | None = None) -> list[dict]:
    """``row`` of every run, newest first; a damaged run is left out and its ``Damaged`` added to ``skipped``."""
    out = []
    for s in runs.list_runs(runs_root, skipped):
        try:
            out.append(row(s))
        except runfiles.Damaged as e:
            if skipped is not None:
                skipped.append(e)
    return out


def rank_key(r: dict, by: str = "val_loss") -> tuple:
    """Sort key: lowest validation loss (or highest held-out score) first, runs without one last."""
    v = r.get(by)
    if not _num(v):
        return (1, 0.0)
    return (0, -v if by == "score" else v)


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def differing(recipes: list[dict]) -> list[tuple[str, list[Any]]]:
    """The flattened recipe settings not equal in all of ``recipes``: ``(key, [value of each])``; ``name`` aside."""
    flat = [flatten(r) for r in recipes]
    keys = sorted({k for f in flat for k in f} - {"name"})
    return [(k, values) for k in keys for values in [[f.get(k) for f in flat]] if any(v != values[0] for v in values)]


def config_diff(a: dict, b: dict) -> list[tuple[str, Any, Any]]:
    """The recipe settings that differ between two runs: ``(key, a's value, b's value)``; ``name`` aside."""
    return [(k, va, vb) for k, (va, vb) in differing([a, b])]


def diff_text(run_dirs: list[Path]) -> str:
    """The settings that differ between runs, as the Runs page shows them: a letter per run, a line per setting."""
    if len(run_dirs) < 2:
        return "Select two or more runs to see the settings that differ."
    differ = differing([read_json(d / runs.RECIPE, default={}) or {} for d in run_dirs])
    if not differ:
        return "The selected runs have the same settings."
    letters = [chr(ord("A") + i) for i in range(len(run_dirs))]
    lines = [f"{ch}: {d.name}" for ch, d in zip(letters, run_dirs)] + [""]
    lines += [f"{k}: " + "  |  ".join(f"{ch} {v}" for ch, v in zip(letters, values)) for k, values in differ]
    return "\n".join(lines)


# -- the Runs page's table ----------------------------------------------------------------------
TABLE_COLUMNS = ["run", "status", "model", "dataset", "last loss", "val loss", "score", "votes", "steps", "date",
                 "name", "tags", "rank", "time"]  # a running run has no final loss


def table_row(s: runs.RunSummary) -> dict:
    """One run as the Runs page's table shows it: short names, losses and scores in words, labels, time.

    Unlike ``row`` it never raises: a damaged labels or metadata file shows as empty cells.
    """
    loss, e = s.final_loss, s.eval or {}
    vb, va = e.get("val_loss_base"), e.get("val_loss_adapter")
    val = f"{vb:.3f} → {va:.3f}" if isinstance(vb, (int, float)) and isinstance(va, (int, float)) else ""
    score = (f"{e['score_base']}/{e['score_total']} → {e['score_adapter']}/{e['score_total']}"
             if e.get("score_total") else "")
    return {"run": s.id, "status": s.status, "model": Path(s.model).name if "/" in s.model else s.model,
            "dataset": Path(s.dataset).name if s.dataset else "",
            "last loss": f"{loss:.4f}" if isinstance(loss, (int, float)) else "",
            "val loss": val, "score": score, "votes": playground.tally_text(playground.tally(s.path)),
            "steps": s.step, "date": _minute(s.created), **_label_cells(s)}


def _dig(obj: Any, *keys: str) -> Any:
    """``obj[k1][k2]…``; a damaged file may hold any type at any level: only dicts are walked."""
    for k in keys:
        obj = obj.get(k) if isinstance(obj, dict) else None
    return obj


def _label_cells(s: runs.RunSummary) -> dict:
    """The user's labels, the rank and the training time (from the metadata, else the recipe)."""
    labels, meta = read_labels(s.path), read_metadata(s.path)
    rank = _dig(meta, "recipe", "lora", "rank")
    if rank is None:
        rank = _dig(read_json(s.path / runs.RECIPE, default={}), "lora", "rank")
    secs = _dig(meta, "duration_s")
    return {"name": labels["name"], "tags": ", ".join(labels["tags"]),
            "rank": rank if isinstance(rank, int) and not isinstance(rank, bool) else None,
            "time": f"{int(secs) // 60}m{int(secs) % 60:02d}s" if isinstance(secs, (int, float)) else ""}


def _minute(text: str) -> str:
    try:
        return _dt.datetime.fromisoformat(text).strftime("%Y-%m-%d %H:%M")
    except (TypeError, ValueError):
        return str(text or "")


def summary_rank_key(s: runs.RunSummary, by: str) -> tuple:
    """``rank_key`` of a summary: lowest validation loss or highest held-out score first; runs without one last."""
    e = s.eval or {}
    value = e.get("val_loss_adapter") if by == "val_loss" else (
        e["score_adapter"] / e["score_total"] if e.get("score_total") else None)
    return rank_key({by: value}, by)


def compare(a: Path, b: Path) -> dict:
    """Two runs side by side: their rows (metrics, eval) and the recipe settings that differ."""
    sa, sb = runs.summarize(a), runs.summarize(b)  # runfiles.Damaged (a UserError) names a damaged file
    if sa is None or sb is None:
        raise UserError(f"{printable(a if sa is None else b)} is not a readable run folder (no recipe.json)")
    ra = runfiles.load_object(Path(a) / runs.RECIPE) or {}
    rb = runfiles.load_object(Path(b) / runs.RECIPE) or {}
    return {"a": row(sa), "b": row(sb),
            "diff": [{"key": k, "a": va, "b": vb} for k, va, vb in config_diff(ra, rb)]}
