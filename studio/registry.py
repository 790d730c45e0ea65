"""The registry of runs: what an adapter is, the user's labels, a trash with undo, and comparisons.

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
import os
import re
import shutil
from pathlib import Path
from typing import Any

from studio import paths, runs
from studio.errors import UserError
from studio.fsutil import atomic_write_json, read_json, sha256_files

META_FILE = "lora_studio.json"   # inside adapter/
META_VERSION = 1
LABELS = "labels.json"
TRASH = ".trash"                 # inside the runs folder; list_runs skips dot-folders
# The metrics a run's events carry, by name: (event type, key, label). The Runs page and compare read this.
METRICS = {
    "loss": ("metric", "loss", "training loss"),
    "eval_loss": ("metric", "eval_loss", "validation loss"),
    "learning_rate": ("metric", "learning_rate", "learning rate"),
    "tokens_per_s": ("metric", "tokens_per_s", "tokens/s"),
    "grad_norm": ("metric", "grad_norm", "gradient norm"),
    "memory": ("memory", "allocated", "memory allocated (bytes)"),
}
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


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
    digests = {p.name: _file_sha256(p) for p in files}
    combined = hashlib.sha256(json.dumps(digests, sort_keys=True).encode()).hexdigest() if digests else None
    return {"revision": revision, "files": digests, "sha256": combined}


def _file_sha256(path: Path) -> str:
    if path.is_symlink():
        target = Path(os.readlink(path)).name
        if _HEX64.match(target):  # the hub cache's blob name is the file's sha256 (LFS files)
            return target
    st = path.stat()
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    cache_file = paths.data_dir() / "weights-sha256.json"
    cache = read_json(cache_file, default={})
    cache = cache if isinstance(cache, dict) else {}
    if isinstance(cache.get(key), str):
        return cache[key]
    cache[key] = sha256_files(path)
    try:
        atomic_write_json(cache_file, cache)
    except OSError:
        pass  # a read-only data folder: the hash is still right, only not remembered
    return cache[key]


# -- metrics from events.jsonl -----------------------------------------------------------------
def metric_series(run_dir: Path, metric: str, axis: str = "step") -> tuple[list[float], list[float]]:
    """(x, y) of one metric of a run: x is the step, or seconds of training since the run started.

    Time counts training sessions only: the pause between a stop and a resume is left out.
    """
    from studio import events as ev

    kind, key, _ = METRICS[metric]
    xs, ys = [], []
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


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf")


def training_seconds(run_dir: Path) -> float | None:
    """Wall time the workers of this run spent, summed over its sessions (a resume adds one)."""
    from studio import events as ev

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
    from studio import __version__, evalreport

    run_dir = Path(run_dir)
    recipe = read_json(run_dir / runs.RECIPE, default={}) or {}
    state = runs.read_state(run_dir)
    data_report = read_json(run_dir / "data_report.json", default={}) or {}
    base = state.get("base_model")
    model = {"name_or_path": (recipe.get("model") or {}).get("name_or_path"), "folder": base}
    if base and Path(base).is_dir():
        model.update(weights_identity(Path(base)))
    report = evalreport.read(run_dir)
    return {
        "version": META_VERSION, "studio_version": __version__, "run": run_dir.name,
        "created": _dt.datetime.now().isoformat(timespec="seconds"),
        "run_created": state.get("created"), "started": state.get("started"), "finished": state.get("finished"),
        "status": state.get("status"), "step": state.get("adapter_step", state.get("step")),
        "duration_s": training_seconds(run_dir),
        "labels": read_labels(run_dir),
        "base_model": model,
        "dataset": {"path": (recipe.get("data") or {}).get("path"),
                    "fingerprint": state.get("data_fingerprint") or data_report.get("fingerprint"),
                    "format": data_report.get("format"), "usable": data_report.get("usable")},
        "recipe": recipe,
        "metrics": metrics_summary(run_dir),
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
def read_labels(run_dir: Path) -> dict:
    raw = read_json(Path(run_dir) / LABELS, default={})
    raw = raw if isinstance(raw, dict) else {}
    tags = raw.get("tags") if isinstance(raw.get("tags"), list) else []
    return {"name": str(raw.get("name") or ""), "tags": [str(t) for t in tags], "note": str(raw.get("note") or "")}


def set_labels(run_dir: Path, name: str | None = None, add_tags: list[str] = (), remove_tags: list[str] = (),
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
        raise UserError(f"no run {ref!r} in {root}: give a run folder, its id or its name "
                        "('lora-studio runs list' shows them)")
    raise UserError(f"{ref!r} names {len(candidates)} runs ({', '.join(c.name for c in candidates[:5])}): "
                    "give more of the id")


def trash(run_dir: Path) -> Path:
    """Move a run into the runs folder's trash (``restore`` undoes it); a live run is refused."""
    run_dir = Path(run_dir)
    s = runs.summarize(run_dir)
    if s is not None and s.live:
        raise UserError(f"{run_dir.name} is training now: stop it before deleting it")
    bin_ = run_dir.parent / TRASH
    bin_.mkdir(exist_ok=True)
    target = bin_ / run_dir.name
    if target.exists():
        shutil.rmtree(target)  # an older copy of the same id, deleted before: the newer delete wins
    os.replace(run_dir, target)
    atomic_write_json(target / ".trashed.json", {"from": str(run_dir), "when": _dt.datetime.now().isoformat(timespec="seconds")})
    return target


def trashed(runs_root: Path | None = None) -> list[dict]:
    """The runs in the trash, newest deletion first: ``{"id", "path", "when"}``."""
    root = paths.runs_dir(runs_root)
    out = []
    for d in (root / TRASH).glob("*") if (root / TRASH).is_dir() else []:
        info = read_json(d / ".trashed.json", default={}) or {}
        out.append({"id": d.name, "path": str(d), "when": info.get("when", "")})
    return sorted(out, key=lambda x: x["when"], reverse=True)


def restore(run_id: str | None = None, runs_root: Path | None = None) -> Path:
    """Put a trashed run back (the last one deleted when ``run_id`` is None): the undo of ``trash``."""
    root = paths.runs_dir(runs_root)
    items = trashed(root)
    if not items:
        raise UserError(f"the trash of {root} is empty")
    pick = items[0] if run_id is None else next((i for i in items if i["id"] == run_id), None)
    if pick is None:
        raise UserError(f"no run {run_id!r} in the trash ({', '.join(i['id'] for i in items[:5])})")
    target = root / pick["id"]
    if target.exists():
        raise UserError(f"{target} exists: rename it before restoring {pick['id']}")
    os.replace(pick["path"], target)
    (target / ".trashed.json").unlink(missing_ok=True)
    return target


def empty_trash(runs_root: Path | None = None) -> int:
    root = paths.runs_dir(runs_root)
    items = trashed(root)
    for i in items:
        shutil.rmtree(i["path"], ignore_errors=True)
    return len(items)


# -- rows, comparisons -------------------------------------------------------------------------
def row(s: runs.RunSummary) -> dict:
    """One run as the list shows it (``runs list --json``, the Runs page)."""
    labels = read_labels(s.path)
    meta = read_metadata(s.path) or {}
    metrics = meta.get("metrics") or metrics_summary(s.path)
    ev_ = s.eval or {}
    recipe = read_json(s.path / runs.RECIPE, default={}) or {}
    return {"id": s.id, "name": labels["name"], "tags": labels["tags"], "note": labels["note"],
            "status": s.status, "model": s.model, "dataset": s.dataset, "step": s.step,
            "rank": (recipe.get("lora") or {}).get("rank"), "lr": (recipe.get("train") or {}).get("lr"),
            "final_loss": s.final_loss, "best_loss": metrics.get("best_loss"),
            "eval_loss": metrics.get("final_eval_loss"),
            "val_loss": ev_.get("val_loss_adapter", metrics.get("final_eval_loss")),
            "val_loss_base": ev_.get("val_loss_base"),
            "score": (ev_["score_adapter"] / ev_["score_total"]) if ev_.get("score_total") else None,
            "duration_s": meta.get("duration_s", training_seconds(s.path)),
            "created": s.created, "adapter": str(s.path / runs.ADAPTER) if (s.path / runs.ADAPTER).is_dir() else None,
            "dataset_fingerprint": (meta.get("dataset") or {}).get("fingerprint")
            or runs.read_state(s.path).get("data_fingerprint"),
            "base_model_sha256": (meta.get("base_model") or {}).get("sha256"),
            "studio_version": meta.get("studio_version"), "path": str(s.path)}


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


def config_diff(a: dict, b: dict) -> list[tuple[str, Any, Any]]:
    """The recipe settings that differ between two runs: ``(key, a's value, b's value)``; ``name`` aside."""
    fa, fb = flatten(a), flatten(b)
    return [(k, fa.get(k), fb.get(k)) for k in sorted(set(fa) | set(fb))
            if fa.get(k) != fb.get(k) and k != "name"]


def compare(a: Path, b: Path) -> dict:
    """Two runs side by side: their rows (metrics, eval) and the recipe settings that differ."""
    sa, sb = runs.summarize(a), runs.summarize(b)
    if sa is None or sb is None:
        raise UserError(f"{a if sa is None else b} is not a readable run folder (no recipe.json)")
    ra = read_json(Path(a) / runs.RECIPE, default={}) or {}
    rb = read_json(Path(b) / runs.RECIPE, default={}) or {}
    return {"a": row(sa), "b": row(sb),
            "diff": [{"key": k, "a": va, "b": vb} for k, va, vb in config_diff(ra, rb)]}
