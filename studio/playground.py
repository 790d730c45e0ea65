"""What the Playground keeps in a run folder (torch-free): saved conversations and A/B votes; and what
its page lists and says (what can answer, the worker's and each answer's figures), without Qt.

    RUN/playground/conversations/<stamp>.json   one saved chat (both panes in side-by-side mode)
    RUN/playground/votes.jsonl                   one line per "A better / B better / tie" mark
"""
from __future__ import annotations

import datetime as _dt
import itertools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from studio import chat_client, runs
from studio.fsutil import atomic_write_json

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp")  # what the Image… button and a drop take
IMAGE_FILTER = "Images (" + " ".join(f"*{s}" for s in IMAGE_SUFFIXES) + ")"
TEXT_ONLY = ("{model} reads text only: pick a vision-language model (e.g. {examples}) or a run trained on one to "
             "ask about images")
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


def add_vote(run_dir: Path, winner: str, a: str, b: str, prompt: str, answers: dict[str, str],
             images: list[str] | None = None) -> dict:
    """Append one vote (a single line, written and fsynced in one call) and return it; ``images``: the paths of
    the images the prompt asked about (kept in the record when there are any)."""
    if winner not in WINNERS:
        raise ValueError(f"winner must be one of {', '.join(WINNERS)}, not {winner!r}")
    record = {"ts": _dt.datetime.now().isoformat(timespec="seconds"), "winner": winner, "a": a, "b": b,
              "prompt": prompt, "answers": answers}
    if images:
        record["images"] = list(images)
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


def sources(model: str) -> list[tuple[str, tuple[str, Any]]]:
    """What can answer, as (label, ("run", folder) | ("model", name)): every run with an adapter or a
    checkpoint that is not training, then the session's base model on its own."""
    out: list[tuple[str, tuple[str, Any]]] = []
    for s in runs.list_runs():
        has = (s.path / runs.ADAPTER / "adapter_config.json").is_file() or (s.path / runs.CHECKPOINTS).is_dir()
        if has and s.status != "running":
            out.append((f"{s.id}  ({Path(s.model).name if '/' in s.model else s.model})", ("run", s.path)))
    out.append((f"{model}  (base model only)", ("model", model)))
    return out


def variants(kind: str, value: Any) -> list[chat_client.Variant]:
    """The variants of a source: a run's base, adapter and checkpoints; a bare model's base alone."""
    if kind == "run":
        return chat_client.run_variants(Path(value))
    return [chat_client.Variant(chat_client.BASE, None, str(value), None)]


def base_folder(kind: str, value: Any) -> Path | None:
    """The base model's folder when it is known without loading anything: the folder a run's worker resolved
    (``state.json`` base_model), or the recipe's / the model's own name when it is a folder. None otherwise."""
    if kind == "run":
        run_dir = Path(value)
        for name in (runs.read_state(run_dir).get("base_model"), chat_client.run_model(run_dir)):
            if name and Path(str(name)).expanduser().is_dir():
                return Path(str(name)).expanduser()
        return None
    folder = Path(str(value)).expanduser()
    return folder if folder.is_dir() else None


def takes_images(kind: str, value: Any, chosen: list[chat_client.Variant]) -> bool:
    """Whether the chat worker loads the whole vision-language model for these variants (``--vision``), read
    without torch: the base has a ``vision_config`` and a processor beside it, and no chosen adapter was trained
    on the language model alone (text rows on a VLM: it loads for text); or a chosen adapter was trained on the
    whole VLM (image rows)."""
    from studio import vision

    adapters = [v.adapter for v in chosen if v.adapter is not None]
    if any(vision.adapter_on_whole_vlm(a) for a in adapters):
        return True
    folder = base_folder(kind, value)
    return folder is not None and vision.takes_images(folder) and not adapters


def text_only_message(model: str) -> str:
    from studio.vision import VISION_MODELS

    return TEXT_ONLY.format(model=Path(model).name if "/" in model else model, examples=VISION_MODELS)


def image_files(paths: list[str]) -> tuple[list[str], list[str]]:
    """Dropped or chosen files split into those with an image's suffix and the others (named, not attached)."""
    ok = [p for p in paths if Path(p).suffix.lower() in IMAGE_SUFFIXES]
    return ok, [p for p in paths if p not in ok]


def loaded_text(hello: dict) -> str:
    """The status line once the chat worker has loaded the model."""
    quant = "4-bit" if hello.get("quant") == "4bit" else hello.get("quant")
    return f"Loaded on {hello.get('device')} ({quant} weights). Ask something."


def answer_stats(answer: dict) -> str:
    """Under a pane: the answer's length, time to first token, speed, and whether it was stopped."""
    ttft, tps = answer.get("time_to_first_token_s"), answer.get("tokens_per_s")
    stopped = " · stopped" if answer.get("stopped") else ""
    return (f"{answer.get('tokens', 0)} tokens · first token {ttft if ttft is not None else '–'} s · "
            f"{tps if tps is not None else '–'} tokens/s{stopped}")


def pane_record(variant: chat_client.Variant | None, messages: list[dict]) -> dict[str, Any]:
    """One pane of a saved conversation: what answered and the messages."""
    return {"variant": variant.label if variant else "",
            "adapter": str(variant.adapter) if variant and variant.adapter else None, "messages": messages}


@dataclass
class Round:
    """One prompt put to each pane in turn ("a", then "b"): one worker answers one prompt at a time, so B
    waits for A. It knows which generation is being answered and what each pane answered (for the vote)."""

    prompt: str = ""
    images: list[str] = field(default_factory=list)          # the images the prompt asks about (absolute paths)
    waiting: list[str] = field(default_factory=list)         # panes still to ask
    current: tuple[str, str] | None = None                   # (generation id, pane) being answered
    answers: dict[str, str] = field(default_factory=dict)    # pane -> its answer to ``prompt``
    _ids: Any = field(default_factory=lambda: itertools.count(1))

    @property
    def busy(self) -> bool:
        return self.current is not None or bool(self.waiting)

    @property
    def complete(self) -> bool:
        """Both panes answered: the answers can be compared."""
        return len(self.answers) == 2

    def ask(self, prompt: str, panes: list[str], images: list[str] | None = None) -> None:
        """Put ``prompt`` (about ``images``, the same ones for every pane) to ``panes`` in turn."""
        self.prompt, self.images, self.waiting, self.answers = prompt, list(images or []), list(panes), {}

    def take(self) -> tuple[str, str] | None:
        """The next (generation id, pane) to ask; None when every pane has been asked."""
        self.current = (f"p{next(self._ids)}", self.waiting.pop(0)) if self.waiting else None
        return self.current

    def pane_of(self, gid: object) -> str | None:
        """The pane answering generation ``gid`` (None: not the current one, e.g. a stopped earlier answer)."""
        return self.current[1] if self.current and self.current[0] == gid else None

    def answered(self, text: str) -> None:
        if self.current:
            self.answers[self.current[1]] = text

    def end(self) -> None:
        """Nothing more to answer (stopped, failed, or the worker ended)."""
        self.waiting, self.current = [], None
