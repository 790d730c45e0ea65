"""What an export computes with transformers, kept for the next export, so that only the first pays.

* ``vocab``: the GGUF vocabulary of a base model's tokenizer. transformers decides how a folder's
  tokenizer runs (version 5 rebuilds some by model class), which takes seconds to import and load;
  the result depends only on the tokenizer files, the model config and the library versions.
* ``reference``: the merged model's greedy answers to the fixed prompts, the reference llama.cpp's
  answers are compared with. They depend only on the base weights, the adapter's files, the prompts,
  the number of tokens and the library versions, so the second export of a run (another quantisation,
  Ollama) compares with them at once instead of loading the model again.

Entries live in ``data_dir()/cache/export/<kind>/<key>.json``; a missing or damaged entry is
computed again, and a check that used one says so in its summary.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from studio import __version__, paths
from studio.fsutil import atomic_write_json, read_json
from studio.heldout_cache import versions, weights_fingerprint

VERSION = 1
# Files that decide how a model folder tokenises (and config.json: transformers picks classes by model type).
TOKENIZER_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json",
                   "merges.txt", "special_tokens_map.json", "added_tokens.json", "chat_template.jinja",
                   "chat_template.json")
VOCAB_LIBRARIES = ("transformers", "tokenizers", "gguf")
REFERENCE_LIBRARIES = ("torch", "transformers", "safetensors")


def cache_dir(kind: str) -> Path:
    return paths.data_dir() / "cache" / "export" / kind


def files_fingerprint(folder: Path, names: tuple[str, ...]) -> str:
    """sha256 over each named file's name and bytes (absent files count as absent)."""
    h = hashlib.sha256()
    for name in names:
        f = Path(folder) / name
        if f.is_file():
            h.update(f"{name}:{f.stat().st_size}\n".encode())
            h.update(f.read_bytes())
        else:
            h.update(f"{name}:-\n".encode())
    return h.hexdigest()


def _key(facts: dict) -> str:
    """A key that also changes with the studio's version: the vocabulary reader and the merge are its code."""

    facts = {"version": VERSION, "studio": __version__, **facts}
    return hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()[:32]


def vocab_key(folder: Path, n_vocab: int, trust: bool) -> str:
    return _key({"kind": "vocab", "files": files_fingerprint(folder, TOKENIZER_FILES), "n_vocab": n_vocab,
                 "trust": trust, "libraries": versions(VOCAB_LIBRARIES)})


def reference_key(base_dir: Path, adapter_digest: str | None, prompts: list[list[int]], new_tokens: int) -> str:
    """``adapter_digest``: sha256 of the adapter's config and weights (None: the base model alone)."""
    return _key({"kind": "reference", "weights": weights_fingerprint(base_dir), "adapter": adapter_digest,
                 "prompts": prompts, "new_tokens": new_tokens, "libraries": versions(REFERENCE_LIBRARIES)})


def load(kind: str, key: str) -> dict | None:
    """The entry for ``key``, or None when there is none or it cannot be read."""
    entry = read_json(cache_dir(kind) / f"{key}.json")
    return entry if isinstance(entry, dict) and isinstance(entry.get("value"), dict) else None


def save(kind: str, key: str, value: dict, **about: Any) -> str | None:
    """Keep ``value`` for the next export (atomic); returns why it could not be kept, or None."""
    try:
        cache_dir(kind).mkdir(parents=True, exist_ok=True)
        atomic_write_json(cache_dir(kind) / f"{key}.json",
                          {"value": value, "created": time.strftime("%Y-%m-%dT%H:%M:%S"), **about})
    except OSError as e:
        return f"could not keep it in {cache_dir(kind)} ({e.strerror or e})"
    return None
