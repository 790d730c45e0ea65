"""Preference pairs as token ids: the prompt, the chosen ending and a rejected ending.

The importer keeps every chosen/rejected layout as ``{"messages", "rejected", "prompt_len"}``
(docs/data.md): ``messages[:prompt_len]`` is the shared prompt, ``messages[prompt_len:]`` the
chosen ending and each entry of ``rejected`` another ending. Each ending is rendered after the
prompt with the model's chat template and tokenised exactly like an SFT example
(``template.encode_with_offsets``), so the completion tokens are the ones our loss masks mark:
from the assistant's first token to the end marker of its last turn (the template's trailing
newline is not part of it, as in SFT).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from studio.data.template import IGNORE, TemplateError, encode_with_offsets, prepare, render

LAYOUTS = ("'chosen' + 'rejected' columns (with 'prompt', 'conversations', 'instruction'/'input', or a shared "
           "prompt inside both conversations), 'preferred_output' + 'non_preferred_output' after 'input', or a "
           "ranked 'output' list, best first")


@dataclass
class PairStats:
    pairs: int = 0
    unpaired: int = 0  # examples without a rejected ending
    truncated: int = 0  # pairs whose endings were cut to the sequence length
    too_long: int = 0  # pairs whose prompt alone fills the sequence length: nothing to compare
    refused: int = 0  # the chat template refused the conversation
    refusal: str = ""  # the template's message for the first refused pair


def has_pairs(example: dict) -> bool:
    return bool(example.get("rejected")) and "messages" in example


def _prompt_chars(tokenizer: Any, example: dict) -> int:
    """Where the first answer of the ending starts in the rendered conversation (characters)."""
    n = int(example.get("prompt_len") or 0)
    prompt = {**example, "messages": example["messages"][:n]}
    messages, tools = prepare(tokenizer, prompt)
    return len(render(tokenizer, messages, add_generation_prompt=True, tools=tools)) if n else 0


def _ending(enc: dict, start_char: int) -> tuple[int, int]:
    """(first token of the ending, one past its last trained token) in an encoded conversation."""
    first = next((i for i, (s, _e) in enumerate(enc["offsets"]) if s >= start_char), len(enc["input_ids"]))
    trained = [i for i, label in enumerate(enc["labels"]) if label != IGNORE and i >= first]
    return first, (trained[-1] + 1 if trained else first)


def encode_pair(tokenizer: Any, example: dict, rejected: list[dict], seq_len: int) -> tuple[dict | None, bool]:
    """``({"prompt_ids", "chosen_ids", "rejected_ids"}, truncated)``, or ``(None, False)`` when the prompt
    alone fills ``seq_len``. A template that cannot render it raises ``TemplateError``."""
    n = int(example.get("prompt_len") or 0)
    chosen = encode_with_offsets(tokenizer, example)
    other = encode_with_offsets(tokenizer, {**example, "messages": example["messages"][:n] + list(rejected)})
    start = _prompt_chars(tokenizer, example)
    c0, c1 = _ending(chosen, start)
    r0, r1 = _ending(other, start)
    k = 0
    while k < min(c0, r0) and chosen["input_ids"][k] == other["input_ids"][k]:
        k += 1  # the shared prompt (a token merged across the boundary belongs to the endings)
    if k >= seq_len:
        return None, False
    room = seq_len - k
    c_ids, r_ids = chosen["input_ids"][k:c1], other["input_ids"][k:r1]
    truncated = len(c_ids) > room or len(r_ids) > room
    return {"prompt_ids": chosen["input_ids"][:k], "chosen_ids": c_ids[:room], "rejected_ids": r_ids[:room]}, truncated


def encode_pairs(tokenizer: Any, examples: list[dict], seq_len: int) -> tuple[list[dict], PairStats]:
    """One row per (chosen, rejected) pair; a ranked list of N answers gives N-1 pairs against the best."""

    rows, stats = [], PairStats()
    for ex in examples:
        if not has_pairs(ex):
            stats.unpaired += 1
            continue
        for rejected in ex["rejected"]:
            try:
                row, cut = encode_pair(tokenizer, ex, rejected, seq_len)
            except TemplateError as e:
                stats.refused += 1
                stats.refusal = stats.refusal or str(e)
                continue
            if row is None or not row["chosen_ids"] or not row["rejected_ids"]:
                stats.too_long += 1
                continue
            stats.truncated += cut
            rows.append(row)
    stats.pairs = len(rows)
    return rows, stats
