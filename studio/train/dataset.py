"""The training set: the dataset-import path (studio.data) tokenised for the Trainer."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from studio.data import DataError, load_examples, note_tool_support, split_examples
from studio.data.template import TemplateError, encode_example
from studio.recipe import Recipe


@dataclass
class TrainData:
    train: Any  # datasets.Dataset with input_ids, labels, attention_mask
    val: Any | None
    report: Any
    truncated: int
    trained_tokens: int
    refused: int = 0
    val_examples: list | None = None  # the raw validation conversations (eval.json's fallback prompts)


def _encode_all(tokenizer: Any, examples: list[dict], recipe: Recipe) -> tuple[list[dict], int, int]:
    """Encoded rows, how many were truncated, and how many the chat template refused."""
    rows, truncated, refused = [], 0, 0
    for ex in examples:
        try:
            enc = encode_example(tokenizer, ex, recipe.train.seq_len, recipe.data.train_on)
        except TemplateError:  # reported row by row by `data inspect --model`; skipped here, counted
            refused += 1
            continue
        truncated += enc.pop("truncated")
        if any(label != -100 for label in enc["labels"]):  # nothing to learn after truncation: skip
            rows.append(enc)
    return rows, truncated, refused


def build(tokenizer: Any, recipe: Recipe) -> TrainData:
    """Load, split and tokenise the recipe's dataset exactly as `data inspect` sees it."""
    from datasets import Dataset

    examples, report = load_examples(recipe.data.path, recipe.data.format, recipe.data.columns or None,
                                     recipe.data.roles or None, recipe.data.label_filter)
    note_tool_support(report, tokenizer)
    train_ex, val_ex = split_examples(examples, recipe.data.val_fraction, recipe.data.seed)
    train_rows, truncated, refused = _encode_all(tokenizer, train_ex, recipe)
    val_rows, _, refused_val = _encode_all(tokenizer, val_ex, recipe)
    if not train_rows:
        raise DataError(f"{recipe.data.path}: no example has assistant tokens within train.seq_len="
                        f"{recipe.train.seq_len}; raise the sequence length")
    trained = sum(sum(1 for x in r["labels"] if x != -100) for r in train_rows)
    return TrainData(train=Dataset.from_list(train_rows), val=Dataset.from_list(val_rows) if val_rows else None,
                     report=report, truncated=truncated, trained_tokens=trained, refused=refused + refused_val,
                     val_examples=val_ex)
