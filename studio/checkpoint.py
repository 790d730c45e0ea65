"""Checkpoints that are either whole or absent: staged, hashed, fsynced, renamed, verified.

The Trainer writes its own checkpoint (adapter, optimizer, scheduler, RNG states, trainer state)
into a staging folder; ``commit`` adds ``manifest.json`` (size and sha256 of every file), fsyncs
the tree and renames it to ``checkpoints/step-N``. A folder under a final name therefore always
had a complete write; ``verify`` still re-checks it against its manifest before a resume, so a
disk that lost or damaged a file after the fact is caught. Torch-free: the CLI uses it too.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from studio import runs
from studio.fsutil import atomic_write_json, fsync_dir, fsync_tree, read_json, replace, sha256_files

MANIFEST = "manifest.json"
PREFIX = "step-"
STAGING_PREFIX = ".staging-"
MANIFEST_VERSION = 1
# What a resume needs; a manifest that omits one of them describes an unusable checkpoint.
REQUIRED = ("adapter_model.safetensors", "adapter_config.json", "trainer_state.json", "optimizer.pt",
            "scheduler.pt", "rng_state.pth")
_STEP_RE = re.compile(rf"^{PREFIX}(\d+)$")


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    step: int


def root(run_dir: Path) -> Path:
    return Path(run_dir) / runs.CHECKPOINTS


def list_checkpoints(run_dir: Path) -> list[Checkpoint]:
    """Every folder under a final name (``step-N``), newest first; not yet verified."""
    folder = root(run_dir)
    if not folder.is_dir():
        return []
    found = [Checkpoint(p, int(m.group(1))) for p in folder.iterdir()
             if p.is_dir() and (m := _STEP_RE.match(p.name))]
    return sorted(found, key=lambda c: c.step, reverse=True)


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)


def write_manifest(folder: Path, step: int, settings: dict | None = None) -> dict:
    """Record size and sha256 of every file in ``folder`` (written last, atomically)."""
    files = {p.relative_to(folder).as_posix(): {"size": p.stat().st_size, "sha256": sha256_files(p)}
             for p in _files(folder)}
    manifest = {"version": MANIFEST_VERSION, "step": step, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "files": files, "settings": settings or {}}
    atomic_write_json(folder / MANIFEST, manifest)
    return manifest


def verify(folder: Path) -> str | None:
    """None when the checkpoint matches its manifest, else what is wrong (one line)."""
    try:
        manifest = read_json(folder / MANIFEST)
    except (OSError, ValueError):  # binary garbage is not JSON either (UnicodeDecodeError)
        manifest = None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        return "no readable manifest.json"
    files: dict = manifest["files"]
    # Several processes save one RNG state each (rng_state_<rank>.pth) instead of rng_state.pth.
    per_rank = any(re.fullmatch(r"rng_state_\d+\.pth", name) for name in files)
    missing = [name for name in REQUIRED if name not in files and not (name == "rng_state.pth" and per_rank)]
    if missing:
        return f"the manifest does not list {', '.join(missing)}"
    for name, entry in files.items():
        problem = _check_file(folder, name, entry)
        if problem:
            return problem
    return None


def _check_file(folder: Path, name: str, entry: dict) -> str | None:
    path = (folder / name).resolve()
    if folder.resolve() not in path.parents:
        return f"the manifest names a file outside the checkpoint: {name}"
    if not path.is_file():
        return f"{name} is missing"
    size = path.stat().st_size
    if size != entry.get("size"):
        return f"{name} has {size} bytes, the manifest says {entry.get('size')} (truncated or overwritten)"
    if sha256_files(path) != entry.get("sha256"):
        return f"{name} does not match its sha256 in the manifest (corrupted)"
    return None


def latest_good(run_dir: Path, on_bad: Callable[[Checkpoint, str], None] | None = None) -> Checkpoint | None:
    """The newest checkpoint that passes its manifest; ``on_bad`` hears about each one skipped."""
    for ck in list_checkpoints(run_dir):
        problem = verify(ck.path)
        if problem is None:
            return ck
        if on_bad is not None:
            on_bad(ck, problem)
    return None


def staging_dir(run_dir: Path, step: int) -> Path:
    """A fresh folder (hidden name) where the Trainer writes the checkpoint of ``step``."""
    folder = root(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{step}-", dir=folder))


def commit(staged: Path, run_dir: Path, step: int, settings: dict | None = None) -> Path:
    """Manifest, fsync and rename ``staged`` to ``checkpoints/step-N``; returns the final path."""
    write_manifest(staged, step, settings)
    fsync_tree(staged)
    final = root(run_dir) / f"{PREFIX}{step}"
    if final.exists():  # left over from a run that went further before a crash: not the one we resume from
        _remove(final)
    replace(staged, final)
    fsync_dir(final.parent)
    return final


def _remove(folder: Path) -> None:
    """Rename first, then delete: a half-deleted folder never stands under a final name."""
    doomed = folder.with_name(f".deleting-{folder.name}-{os.getpid()}")
    replace(folder, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def prune(run_dir: Path, keep: int) -> list[int]:
    """Delete all but the newest ``keep`` checkpoints; returns the steps deleted."""
    deleted = []
    for ck in list_checkpoints(run_dir)[max(keep, 1):]:
        _remove(ck.path)
        deleted.append(ck.step)
    return deleted


def quarantine(ck: Checkpoint) -> Path:
    """Move a checkpoint that failed verification out of the way (kept for inspection)."""
    target = ck.path.with_name(f".corrupt-{ck.path.name}-{int(time.time())}")
    replace(ck.path, target)
    return target


def clean_partial(run_dir: Path) -> list[Path]:
    """Remove staging and half-deleted folders that a killed worker left behind."""
    folder = root(run_dir)
    if not folder.is_dir():
        return []
    leftovers = [p for p in folder.iterdir() if p.name.startswith((STAGING_PREFIX, ".deleting-"))]
    for p in leftovers:
        shutil.rmtree(p, ignore_errors=True)
    return leftovers


def size_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
