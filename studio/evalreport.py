"""The evaluation report of a run: ``RUN/eval.json``.

Validation loss and perplexity of the base (adapter disabled) and of the adapter on the same
validation tokens, and held-out prompts answered by both, scored where the prompts carry a
pattern. Written at the end of training (workers/train.py) and on demand (``lora-studio eval``,
workers/evaluate.py). The torch parts are imported inside the functions; reading a report and
summarising it (the CLI, the GUI) needs no torch.

    {"version": 1, "created": "...", "adapter": "RUN/adapter", "base_model": "...",
     "val_examples": 21, "val_tokens": 1874,
     "val_loss": {"base": 2.31, "adapter": 0.84}, "perplexity": {"base": 10.1, "adapter": 2.3},
     "heldout": {"source": "...", "scored": true, "total": 20, "stopped": false,
                 "matched": {"base": 0, "adapter": 20}, "score": {"base": 0.0, "adapter": 1.0},
                 "items": [{"prompt": "...", "pattern": "...", "reference": null,
                            "base": "...", "adapter": "...", "base_match": false, "adapter_match": true}]}}

A prompt with images (a vision-language run's validation rows, or a prompt file whose rows carry images as a
dataset row does) is answered with them; its item also has ``"images": [path, ...]`` and its prompt keeps the
``<image>`` markers where they stand.
"""
from __future__ import annotations

import datetime as _dt
import math
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from studio.fsutil import atomic_write_json, read_json
from studio.losses import summed_loss
from studio.scoring import generate_answers, match_or_timeout, prompt_length, row_images

EVAL_FILE = "eval.json"
EVAL_VERSION = 1
FALLBACK_PROMPTS = 5  # validation examples answered when the recipe has no held-out file


def validation_loss(model: Any, rows: Sequence[dict], pad_id: int, batch_size: int = 4) -> tuple[float | None, int]:
    """Mean cross-entropy per label token over ``rows`` (``input_ids``/``labels`` lists), and the token count.

    Every label token counts once, whatever the batching (the Trainer's eval_loss averages batch
    means instead, so it weighs short examples more).
    """
    import torch

    def batches() -> Iterator[dict]:
        for start in range(0, len(rows), batch_size):
            batch = rows[start:start + batch_size]
            width = max(len(r["input_ids"]) for r in batch)
            yield {"input_ids": torch.tensor([list(r["input_ids"]) + [pad_id] * (width - len(r["input_ids"]))
                                              for r in batch]),
                   "labels": torch.tensor([list(r["labels"]) + [-100] * (width - len(r["labels"])) for r in batch]),
                   "attention_mask": torch.tensor([[1] * len(r["input_ids"]) + [0] * (width - len(r["input_ids"]))
                                                   for r in batch])}

    return summed_loss(model, batches())


def fallback_rows(val_examples: Sequence[dict], n: int = FALLBACK_PROMPTS) -> list[dict]:
    """Held-out rows made from validation conversations (up to their last user turn), unscored unless a grpo
    row carries its own pattern."""
    rows = []
    for ex in val_examples:
        msgs = ex.get("messages") if isinstance(ex, dict) else None
        if not msgs:
            continue
        last_user = max((i for i, m in enumerate(msgs) if m.get("role") == "user"), default=None)
        if last_user is None:
            continue
        reference = next((m["content"] for m in msgs[last_user + 1:] if m.get("role") == "assistant"), None)
        if ex.get("images"):  # each turn carries its own images, as a chat turn does
            from studio.data.images import per_message

            msgs = per_message(msgs, list(ex["images"]))
        rows.append({"messages": msgs[:last_user + 1], "pattern": _row_pattern(ex), "reference": reference})
        if len(rows) >= n:
            break
    return rows


def _row_pattern(example: dict) -> str | None:
    """A grpo row's own ``pattern`` column (kept with its columns, studio.data.scan.ROW_KEY), when it is a
    pattern the held-out scoring accepts: its validation prompts are then scored before and after."""
    from studio.data.scan import ROW_KEY
    from studio.scoring import PromptFileError, _check_pattern

    row = example.get(ROW_KEY)
    pattern = row.get("pattern") if isinstance(row, dict) else None
    if not isinstance(pattern, str) or not pattern:
        return None
    try:
        _check_pattern(pattern, "validation row")
    except PromptFileError:
        return None
    return pattern


def within_length(tokenizer: Any, rows: Sequence[dict], max_tokens: int,
                  processor: Any = None) -> tuple[list[dict], int]:
    """The rows whose prompt fits in ``max_tokens`` (the run's sequence length), and how many did not.

    Validation conversations can be far longer than the run trains on (their loss is computed on the first
    ``seq_len`` tokens); answering one whole would prefill it in one batch, past what the planner fitted to
    the budget, and ask the model about a context it never trained on.
    """
    kept = [r for r in rows if prompt_length(tokenizer, r["messages"], processor) <= max_tokens]
    return kept, len(rows) - len(kept)


def _perplexity(loss: float | None) -> float | None:
    if loss is None:
        return None
    try:
        return round(math.exp(loss), 4)
    except OverflowError:
        return float("inf")


def build(val_loss: dict[str, float | None], val_tokens: int, val_examples: int, rows: Sequence[dict],
          answers: dict[str, Sequence[str]], source: str, scored: bool, stopped: bool = False,
          adapter: str = "", base_model: str = "") -> dict:
    """The report as a dict (see the module docstring); ``answers`` has ``base`` and ``adapter`` lists."""

    items: list[dict[str, Any]] = []
    for i, row in enumerate(rows):
        item: dict[str, Any] = {"prompt": row["messages"][-1]["content"], "pattern": row.get("pattern"),
                "reference": row.get("reference")}
        if row_images(row):
            item["images"] = row_images(row)
        row_scored = scored and bool(row.get("pattern"))  # only a row's own pattern scores it
        for who in ("base", "adapter"):
            text = answers.get(who, [""] * len(rows))[i] if i < len(answers.get(who, [])) else ""
            item[who] = text
            found = match_or_timeout(text, row["pattern"]) if row_scored else None
            item[f"{who}_match"] = found  # None when scored: the pattern ran out of time (neither pass nor fail)
            if row_scored and found is None:
                item[f"{who}_timed_out"] = True
        items.append(item)
    matched: dict[str, int] | None = None  # these three stay None unless the answers were scored
    timed_out: dict[str, list[int]] | None = None
    score: dict[str, float | None] | None = None
    scored_rows = sum(1 for row in rows if row.get("pattern")) if scored else 0
    if scored:
        matched = {w: sum(1 for it in items if it[f"{w}_match"]) for w in ("base", "adapter")}
        timed_out = {w: [n for n, it in enumerate(items, start=1) if it.get(f"{w}_timed_out")]
                     for w in ("base", "adapter")}
        counted = {w: scored_rows - len(timed_out[w]) for w in matched}
        if items:
            score = {w: matched[w] / counted[w] if counted[w] else None for w in matched}
    return {
        "version": EVAL_VERSION, "created": _dt.datetime.now().isoformat(timespec="seconds"),
        "adapter": adapter, "base_model": base_model,
        "val_examples": val_examples, "val_tokens": val_tokens,
        "val_loss": {k: (round(v, 6) if v is not None else None) for k, v in val_loss.items()},
        "perplexity": {k: _perplexity(v) for k, v in val_loss.items()},
        "heldout": {"source": source, "scored": scored, "total": len(items), "scored_rows": scored_rows,
                    "stopped": stopped,
                    "matched": matched, "timed_out": timed_out,
                    "score": score,
                    "items": items},
    }


def write(run_dir: Path, report: dict) -> Path:
    path = Path(run_dir) / EVAL_FILE
    atomic_write_json(path, report)
    return path


def read(run_dir: Path) -> dict | None:
    report = read_json(Path(run_dir) / EVAL_FILE, default=None)
    return report if isinstance(report, dict) else None


def summary(report: dict | None) -> dict:
    """The few numbers the Runs table and the events show: val losses and held-out scores."""
    if not report:
        return {}
    vl, h = report.get("val_loss") or {}, report.get("heldout") or {}
    out = {"val_loss_base": vl.get("base"), "val_loss_adapter": vl.get("adapter")}
    if h.get("scored") and h.get("matched") is not None:
        out.update(score_base=h["matched"]["base"], score_adapter=h["matched"]["adapter"],
                   score_total=h.get("scored_rows", h["total"]))  # reports before scored_rows: every row
    return out


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in (text.strip() or "(empty)").splitlines())


def format_text(report: dict) -> str:
    """What a person reads: the score before and after, the losses, and one answer before and after."""
    lines = []
    h = report.get("heldout") or {}
    if h.get("scored") and h.get("matched") is not None:
        of = h.get("scored_rows", h["total"])
        lines.append(f"held-out format score {h['matched']['base']}/{of} \u2192 {h['matched']['adapter']}/{of}"
                     + (f" ({h['total'] - of} row(s) without a pattern answered, not scored)" if h["total"] > of else ""))
    vl, ppl = report.get("val_loss") or {}, report.get("perplexity") or {}
    if vl.get("base") is not None and vl.get("adapter") is not None:
        lines.append(f"validation loss {vl['base']:.4f} \u2192 {vl['adapter']:.4f} (perplexity "
                     f"{ppl.get('base', 0):.2f} \u2192 {ppl.get('adapter', 0):.2f}) on {report.get('val_tokens')} "
                     f"tokens")
    for who, rows in (h.get("timed_out") or {}).items():
        if rows:
            lines.append(f"the pattern ran out of time on the {who} answer of row(s) {', '.join(map(str, rows))}: "
                         "not scored (simplify the pattern)")
    if h.get("stopped"):
        lines.append("held-out answering was stopped before the end")
    items = h.get("items") or []
    if items:
        pick = next((i for i, it in enumerate(items) if it.get("adapter_match") and not it.get("base_match")), 0)
        it = items[pick]
        pictures = it.get("images") or []
        lines += [f"prompt: {it['prompt']}" + (f" (image(s): {', '.join(Path(p).name for p in pictures)})"
                                                if pictures else ""), "  base:", _indent(it.get("base") or ""),
                  "  fine-tuned:", _indent(it.get("adapter") or "")]
    return "\n".join(lines)


def answer_rows(model: Any, tokenizer: Any, rows: Sequence[dict], phase: str,
                progress: Callable[..., Any] | None, should_stop: Callable[[], bool] | None,
                batch_size: int, processor: Any = None) -> list[str]:
    """Greedy answers to ``rows`` with per-prompt progress (``progress(phase=, done=, total=, eta_s=)``);
    ``processor``: a whole vision-language model, the rows answered with their images."""

    total = len(rows)
    if progress:
        progress(phase=phase, done=0, total=total, eta_s=None)
    return generate_answers(model, tokenizer, rows, batch_size=batch_size, should_stop=should_stop, processor=processor,
                            on_progress=(lambda d, t, eta: progress(phase=phase, done=d, total=t, eta_s=eta))
                            if progress else None)
