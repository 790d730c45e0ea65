"""Sample answers to held-out prompts before and after training, and score them.

Generation is greedy (temperature 0), so before/after comparisons are reproducible; the export's
Ollama Modelfile records the same parameters (SAMPLE_PARAMS).
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

SAMPLE_PARAMS = {"temperature": 0.0, "max_new_tokens": 96, "do_sample": False}


def load_prompts(path: Path) -> list[dict]:
    """Rows of ``{"messages": [...], "pattern": regex?}``; bad lines raise with the line number."""
    rows = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8-sig").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            msgs = row["messages"]
            if not isinstance(msgs, list) or not msgs:
                raise ValueError("'messages' must be a non-empty list")
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{path}, line {n}: {e}; each line is {{\"messages\": [...], \"pattern\": \"...\"}}")
        rows.append(row)
    return rows


def generate(model: Any, tokenizer: Any, prompts: list[dict], max_new_tokens: int | None = None,
             batch_size: int = 8) -> list[str]:
    """Greedy answers, batched with left padding."""
    import torch

    from studio.data.template import chat_template

    max_new = max_new_tokens or SAMPLE_PARAMS["max_new_tokens"]
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    was_training = model.training
    model.eval()
    answers: list[str] = []
    try:
        for i in range(0, len(prompts), batch_size):
            texts = [tokenizer.apply_chat_template(p["messages"], tokenize=False, add_generation_prompt=True,
                                                   chat_template=chat_template(tokenizer))
                     for p in prompts[i:i + batch_size]]
            enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
            with torch.no_grad():
                out = model.generate(**enc, max_new_tokens=max_new, do_sample=False, use_cache=True,
                                     pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
            answers += tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return [a.strip() for a in answers]


def score(answers: list[str], prompts: list[dict]) -> float | None:
    """Fraction of answers matching their prompt's ``pattern`` (None when no prompt has one)."""
    pairs = [(a, p["pattern"]) for a, p in zip(answers, prompts) if p.get("pattern")]
    if not pairs:
        return None
    return sum(1 for a, pat in pairs if re.search(pat, a)) / len(pairs)
