"""The training set: the dataset-import path (studio.data) tokenised for the Trainer."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from studio.data import DataError, load_examples, note_tool_support, split_examples
from studio.data.pairs import LAYOUTS, encode_pairs, has_pairs
from studio.data.template import TemplateError, encode_example
from studio.recipe import PREFERENCE_OBJECTIVES, Recipe
from studio.train.preference import pair_rows_summary


@dataclass
class TrainData:
    train: Any  # datasets.Dataset with input_ids, labels, attention_mask
    val: Any | None
    report: Any
    truncated: int
    trained_tokens: int
    refused: int = 0
    refusal: str = ""  # the first refusal: where and the template's message
    val_examples: list | None = None  # the raw validation conversations (eval.json's fallback prompts)
    val_lm: Any | None = None  # preference objectives: the chosen conversations, tokenised for eval.json's loss
    pairs: Any | None = None  # preference objectives: studio.data.pairs.PairStats of the training split

    def lm_rows(self) -> list[dict]:
        """The validation rows with labels (eval.json's loss): the chosen conversations for DPO/ORPO."""
        rows = self.val_lm if self.pairs is not None else self.val
        return [rows[i] for i in range(len(rows))] if rows else []


def _encode_all(tokenizer: Any, examples: list[dict], recipe: Recipe,
                where: dict | None = None) -> tuple[list[dict], int, int, str]:
    """Encoded rows, how many were truncated, how many the chat template refused, and the first refusal
    (``where`` maps an example's id to its line in the file)."""
    rows, truncated, refused, first = [], 0, 0, ""
    for ex in examples:
        try:
            enc = encode_example(tokenizer, ex, recipe.train.seq_len, recipe.data.train_on)
        except TemplateError as e:  # reported row by row by `data inspect --model`; skipped here, counted
            refused += 1
            first = first or f"{(where or {}).get(id(ex), 'a row')}: {e}"
            continue
        truncated += enc.pop("truncated")
        if any(label != -100 for label in enc["labels"]):  # nothing to learn after truncation: skip
            rows.append(enc)
    return rows, truncated, refused, first


def build(tokenizer: Any, recipe: Recipe) -> TrainData:
    """Load, split and tokenise the recipe's dataset exactly as `data inspect` sees it."""
    from datasets import Dataset

    where: dict = {}
    examples, report = load_examples(recipe.data.path, recipe.data.format, recipe.data.columns or None,
                                     recipe.data.roles or None, recipe.data.label_filter, where)
    note_tool_support(report, tokenizer)
    train_ex, val_ex = split_examples(examples, recipe.data.val_fraction, recipe.data.seed)
    if recipe.train.objective in PREFERENCE_OBJECTIVES:
        return _build_pairs(tokenizer, recipe, examples, report, train_ex, val_ex)
    train_rows, truncated, refused, first = _encode_all(tokenizer, train_ex, recipe, where)
    val_rows, _, refused_val, first_val = _encode_all(tokenizer, val_ex, recipe, where)
    if not train_rows and refused == len(train_ex):
        raise DataError(f"{recipe.data.path}: the model's chat template refused every training example "
                        f"({refused}); first, {first}. Fix the template or the rows "
                        "('lora-studio data inspect FILE --model MODEL' lists them)")
    if not train_rows:
        raise DataError(f"{recipe.data.path}: no example has assistant tokens within train.seq_len="
                        f"{recipe.train.seq_len}; raise the sequence length")
    trained = sum(sum(1 for x in r["labels"] if x != -100) for r in train_rows)
    return TrainData(train=Dataset.from_list(train_rows), val=Dataset.from_list(val_rows) if val_rows else None,
                     report=report, truncated=truncated, trained_tokens=trained, refused=refused + refused_val,
                     refusal=first or first_val, val_examples=val_ex)


def _build_pairs(tokenizer: Any, recipe: Recipe, examples: list, report: Any, train_ex: list,
                 val_ex: list) -> TrainData:
    """Prompt/chosen/rejected token ids for TRL's DPO and ORPO trainers (studio.data.pairs)."""
    from datasets import Dataset


    path, objective = recipe.data.path, recipe.train.objective
    if not any(has_pairs(ex) for ex in examples):
        raise DataError(f"{path}: train.objective '{objective}' needs chosen/rejected pairs, and this dataset "
                        f"(format {getattr(report, 'format', None) or 'unknown'}) has none. Recognised layouts: "
                        f"{LAYOUTS}. Use train.objective 'sft' for this file, or give a preference dataset")
    train_rows, stats = encode_pairs(tokenizer, train_ex, recipe.train.seq_len)
    val_rows, _ = encode_pairs(tokenizer, val_ex, recipe.train.seq_len)
    if not train_rows and stats.refused and not stats.too_long:
        raise DataError(f"{path}: the model's chat template refused every chosen/rejected pair ({stats.refused}); "
                        f"first: {stats.refusal}. Fix the template or the rows")
    if not train_rows:
        raise DataError(f"{path}: no chosen/rejected pair fits train.seq_len={recipe.train.seq_len} "
                        f"({stats.too_long} prompt(s) fill it, {stats.refused} refused by the chat template); "
                        "raise the sequence length")
    report.notes.extend(pair_rows_summary(stats, path))
    val_lm = _encode_all(tokenizer, val_ex, recipe)[0]
    trained = sum(len(r["chosen_ids"]) + len(r["rejected_ids"]) for r in train_rows)
    return TrainData(train=Dataset.from_list(train_rows), val=Dataset.from_list(val_rows) if val_rows else None,
                     report=report, truncated=stats.truncated, trained_tokens=trained, refused=stats.refused,
                     val_examples=val_ex, val_lm=Dataset.from_list(val_lm) if val_lm else None, pairs=stats)
