"""Content hashes of model weight files: sha256 of every byte, computed once per file and remembered in the data
folder by (resolved path, size, modification time), so the next run, export or registry entry on the same base
reads no weight again. A file in the Hugging Face cache is a symlink to a blob named by its sha256: that name is
the hash. The held-out answer cache, the export cache and the run registry key the base weights on these.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

from studio import paths
from studio.fsutil import atomic_write_json, read_json, sha256_files

CACHE = "weights-sha256.json"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
WEIGHT_SUFFIXES = (".safetensors", ".bin")


def file_sha256(path: Path) -> str:
    """sha256 of the file's bytes (the hub cache's blob name when it is one; remembered per path, size, mtime)."""
    path = Path(path)
    if path.is_symlink():
        target = Path(os.readlink(path)).name
        if _HEX64.match(target):  # the hub cache's blob name is the file's sha256 (LFS files)
            return target
    st = path.stat()
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    cache_file = paths.data_dir() / CACHE
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


def folder_digest(folder: Path) -> str:
    """config.json's bytes and every weight file's name and content hash: two folders match only when their
    weights are the same bytes (a merged copy whose changed tensors sit mid-file included)."""
    folder = Path(folder)
    config = folder / "config.json"
    files = sorted(p for p in folder.iterdir() if p.suffix in WEIGHT_SUFFIXES and p.is_file()) if folder.is_dir() else []
    facts = {"config": hashlib.sha256(config.read_bytes() if config.is_file() else b"").hexdigest(),
             "files": {p.name: file_sha256(p) for p in files}}
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()
