"""The base model's answers to held-out prompts, computed once and reused by every run on that base.

Before training, a run answers its held-out prompts with the freshly attached adapter, whose B
matrices are zero: the answers are exactly the base model's. They depend only on the base weights,
the prompt file, how the base is loaded (quantisation, compute dtype, attention, device), the
chat template, the generation settings and the library versions, so a second run with the same of
all of these takes them from ``data_dir()/cache/heldout/<key>.json`` instead of spending the
minutes again, and says so.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
import time
from pathlib import Path
from typing import Any

from studio import paths, weights_hash
from studio.fsutil import atomic_write_json, read_json

VERSION = 2  # 2: the weights keyed by their full content hash (1: name, size, first and last MiB)
LIBRARIES = ("torch", "transformers", "peft", "bitsandbytes", "accelerate")


def cache_dir() -> Path:
    return paths.data_dir() / "cache" / "heldout"


def weights_fingerprint(folder: Path) -> str:
    """config.json and the sha256 of every weight file's bytes (``weights_hash.folder_digest``: each file hashed
    once and remembered by path, size and mtime), so "the same weights" means the same bytes."""
    return weights_hash.folder_digest(folder)


def files_fingerprint(files: list[str]) -> list[str]:
    """The sha256 of each file's bytes, in order: a held-out prompt's images are part of what it asks (the
    prompt file names them by path only)."""
    out = []
    for f in files:
        try:
            out.append(hashlib.sha256(Path(f).read_bytes()).hexdigest())
        except OSError:
            out.append(f"unreadable:{f}")
    return out


def key(base: Path, heldout: Path, load: dict, generation: dict, chat_template: str | None) -> str:
    """The cache key: everything the base model's greedy answers depend on."""
    facts = {"version": VERSION, "weights": weights_fingerprint(base),
             "prompts": hashlib.sha256(Path(heldout).read_bytes()).hexdigest(), "load": load,
             "generation": generation, "template": chat_template or "", "libraries": versions()}
    return hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()[:32]


def load(cache_key: str, count: int) -> dict | None:
    """``{"answers", "seconds", "run", "created"}`` for this key, or None (missing, damaged, wrong size)."""
    entry = read_json(cache_dir() / f"{cache_key}.json")
    if not isinstance(entry, dict) or not isinstance(entry.get("answers"), list) or len(entry["answers"]) != count:
        return None
    if not all(isinstance(a, str) for a in entry["answers"]):
        return None
    return entry


def save(cache_key: str, answers: list[str], seconds: float, run: str) -> None:
    """Keep the answers for the next run (atomic; an OSError is the caller's to report)."""
    cache_dir().mkdir(parents=True, exist_ok=True)
    atomic_write_json(cache_dir() / f"{cache_key}.json",
                      {"answers": list(answers), "seconds": round(seconds, 1), "run": run,
                       "created": time.strftime("%Y-%m-%dT%H:%M:%S")})


def versions(names: tuple[str, ...] = LIBRARIES) -> dict[str, Any]:
    """The installed version of each library (None when it is not installed): part of every cache key."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out
