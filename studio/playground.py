"""What the Playground keeps in a run folder (torch-free): saved conversations and A/B votes.

    RUN/playground/conversations/<stamp>.json   one saved chat (both panes in side-by-side mode)
    RUN/playground/votes.jsonl                   one line per "A better / B better / tie" mark
"""
from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path
from typing import Any

from studio.fsutil import atomic_write_json

FOLDER = "playground"
CONVERSATIONS = "conversations"
VOTES = "votes.jsonl"
WINNERS = ("a", "b", "tie")


def save_conversation(run_dir: Path, conversation: dict[str, Any]) -> Path:
    """Write one conversation (panes, settings, timings) as a new file; returns its path."""
    folder = Path(run_dir) / FOLDER / CONVERSATIONS
    folder.mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    path, n = folder / f"{stamp}.json", 1
    while path.exists():
        n += 1
        path = folder / f"{stamp}-{n}.json"
    atomic_write_json(path, {"saved": _dt.datetime.now().isoformat(timespec="seconds"), **conversation})
    return path


def add_vote(run_dir: Path, winner: str, a: str, b: str, prompt: str, answers: dict[str, str]) -> dict:
    """Append one vote (a single line, written and fsynced in one call) and return it."""
    if winner not in WINNERS:
        raise ValueError(f"winner must be one of {', '.join(WINNERS)}, not {winner!r}")
    record = {"ts": _dt.datetime.now().isoformat(timespec="seconds"), "winner": winner, "a": a, "b": b,
              "prompt": prompt, "answers": answers}
    path = Path(run_dir) / FOLDER / VOTES
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)
    return record


def votes(run_dir: Path) -> list[dict]:
    """Every readable vote of the run (a damaged line is skipped)."""
    path = Path(run_dir) / FOLDER / VOTES
    out = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return []
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and rec.get("winner") in WINNERS:
            out.append(rec)
    return out


def tally(run_dir: Path) -> dict[str, int]:
    """How often A, B or neither was marked better."""
    counts = dict.fromkeys(WINNERS, 0)
    for rec in votes(run_dir):
        counts[rec["winner"]] += 1
    return counts


def tally_text(counts: dict[str, int]) -> str:
    if not any(counts.values()):
        return ""
    return f"A {counts['a']} · B {counts['b']} · tie {counts['tie']}"
