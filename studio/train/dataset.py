"""The training set: the dataset-import path (studio.data) tokenised for the Trainer."""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Callable

from studio import vision
from studio.data import DataError, load_examples, note_tool_support, split_examples
from studio.data import documents as docs
from studio.data.pairs import LAYOUTS, encode_pairs, has_pairs
from studio.data.template import TemplateError, encode_example
from studio.recipe import PREFERENCE_OBJECTIVES, REWARD_OBJECTIVES, Recipe
from studio.train.preference import pair_rows_summary


@dataclass
class Encoded:
    """What encoding one split did to its rows (``_encode_all``)."""

    rows: list
    cut: int = 0  # kept, cut to train.seq_len: their tail is not trained or scored
    dropped_long: int = 0  # left out: every trainable token falls past train.seq_len
    dropped_empty: int = 0  # left out: no token to learn at all (no assistant turn)
    refused: int = 0  # the chat template refused them
    first: str = ""  # where and why, for the first refusal


@dataclass
class TrainData:
    train: Any  # datasets.Dataset with input_ids, labels, attention_mask
    val: Any | None
    report: Any
    truncated: int  # training rows kept but cut to train.seq_len
    trained_tokens: int
    refused: int = 0
    refusal: str = ""  # the first refusal: where and the template's message
    val_examples: list | None = None  # the raw validation conversations (eval.json's fallback prompts)
    val_lm: Any | None = None  # preference objectives: the chosen conversations, tokenised for eval.json's loss
    pairs: Any | None = None  # preference objectives: studio.data.pairs.PairStats of the training split
    dropped: int = 0  # training rows left out: every trainable token past train.seq_len
    dropped_empty: int = 0  # training rows left out: nothing to learn
    val_cut: int = 0  # the same for the validation split
    val_dropped: int = 0
    val_pairs: Any | None = None  # preference objectives: PairStats of the validation split
    prompts: int | None = None  # grpo: training prompts (each sampled train.grpo_generations times a step)
    vision: bool = False  # rows with images on a vision-language model: train/val are studio.vision.VisionDataset
    images: int = 0  # images in the training rows (vision)

    def lm_rows(self) -> list[dict]:
        """The validation rows with labels (eval.json's loss): the chosen conversations for DPO/ORPO."""
        rows = self.val_lm if self.pairs is not None or self.prompts is not None else self.val
        return [rows[i] for i in range(len(rows))] if rows else []


def _encode_all(tokenizer: Any, examples: list[dict], recipe: Recipe, where: dict | None = None) -> Encoded:
    """Encoded rows, and how many were cut, left out (nothing to learn within train.seq_len, or at all) or
    refused by the chat template, with the first refusal (``where`` maps an example's id to its line)."""
    out = Encoded([])
    for ex in examples:
        try:
            enc = encode_example(tokenizer, ex, recipe.train.seq_len, recipe.data.train_on)
        except TemplateError as e:  # reported row by row by `data inspect --model`; skipped here, counted
            out.refused += 1
            out.first = out.first or f"{(where or {}).get(id(ex), 'a row')}: {e}"
            continue
        cut = bool(enc.pop("truncated"))
        if any(label != -100 for label in enc["labels"]):
            out.rows.append(enc)
            out.cut += cut
        elif cut:  # its assistant tokens all fall past the sequence length
            out.dropped_long += 1
        else:
            out.dropped_empty += 1
    return out


def build(tokenizer: Any, recipe: Recipe, processor: Callable[[], Any] | None = None, model: str = "") -> TrainData:
    """Load, split and tokenise the recipe's dataset exactly as `data inspect` sees it.

    ``processor``: called when the rows carry images, it gives the base's processor when the base is a
    vision-language model (studio.vision), else None: the rows are then refused (``model`` names the base)."""
    from datasets import Dataset

    where: dict = {}
    rewards = recipe.train.objective in REWARD_OBJECTIVES
    examples, report = load_examples(recipe.data.path, recipe.data.format, recipe.data.columns or None,
                                     recipe.data.roles or None, recipe.data.label_filter, where, keep_row=rewards)
    with_images = sum(1 for ex in examples if vision.image_count(ex))
    if with_images:
        return _build_vision(processor() if processor else None, recipe, examples, report, where, with_images, model)
    note_tool_support(report, tokenizer)
    documents = getattr(report, "format", "") == docs.FORMAT
    if documents and recipe.train.objective in PREFERENCE_OBJECTIVES:
        raise DataError(f"{recipe.data.path}: train.objective '{recipe.train.objective}' needs chosen/rejected "
                        "pairs, and a folder of documents has none. Use train.objective 'sft' for documents")
    if getattr(report, "format", "") == "prompts" and not rewards:
        raise DataError(f"{recipe.data.path}: the rows are prompts alone (format 'prompts'), with no answers for "
                        f"train.objective '{recipe.train.objective}' to learn from. Use train.objective 'grpo' "
                        "(--objective grpo), which samples the answers and learns from their rewards")
    if documents and rewards:
        raise DataError(f"{recipe.data.path}: train.objective 'grpo' needs prompts (chat rows or a prompt column), "
                        "and a folder of documents has none. Use train.objective 'sft' for documents")
    if documents:
        train_ex, val_ex = document_split(tokenizer, examples, recipe, report)
    else:
        train_ex, val_ex = split_examples(examples, recipe.data.val_fraction, recipe.data.seed)
    if recipe.train.objective in PREFERENCE_OBJECTIVES:
        return _build_pairs(tokenizer, recipe, examples, report, train_ex, val_ex)
    if rewards:
        return _build_prompts(tokenizer, recipe, report, train_ex, val_ex, where)
    tr = _encode_all(tokenizer, train_ex, recipe, where)
    va = _encode_all(tokenizer, val_ex, recipe, where)
    train_rows, val_rows = tr.rows, va.rows
    if recipe.data.mix and recipe.data.mix_ratio > 0 and train_rows:
        train_rows = train_rows + _mix_rows(tokenizer, recipe, len(train_rows), report)
    if not train_rows and tr.refused == len(train_ex):
        raise DataError(f"{recipe.data.path}: the model's chat template refused every training example "
                        f"({tr.refused}); first, {tr.first}. Fix the template or the rows "
                        "('lora-studio data inspect FILE --model MODEL' lists them)")
    if not train_rows and documents:
        raise DataError(f"{recipe.data.path}: no document chunk is left to train after the validation slice; "
                        "add documents or set data.val_fraction to 0")
    if not train_rows:
        raise DataError(f"{recipe.data.path}: no example has assistant tokens within train.seq_len="
                        f"{recipe.train.seq_len}; raise the sequence length")
    trained = sum(sum(1 for x in r["labels"] if x != -100) for r in train_rows)
    return TrainData(train=Dataset.from_list(train_rows), val=Dataset.from_list(val_rows) if val_rows else None,
                     report=report, truncated=tr.cut, trained_tokens=trained, refused=tr.refused + va.refused,
                     refusal=tr.first or va.first, val_examples=val_ex, dropped=tr.dropped_long,
                     dropped_empty=tr.dropped_empty + va.dropped_empty, val_cut=va.cut, val_dropped=va.dropped_long)


def _build_vision(processor: Any, recipe: Recipe, examples: list, report: Any, where: dict, with_images: int,
                  model: str) -> TrainData:
    """Rows with images, encoded by the vision-language model's processor (studio.vision): SFT only."""
    path, t = recipe.data.path, recipe.train
    if processor is None:
        raise DataError(str(vision.text_model_refusal(path, model or str(recipe.model.name_or_path), with_images)))
    if t.objective != "sft":
        raise DataError(f"{path}: {with_images} row(s) carry images, and train.objective '{t.objective}' trains on "
                        "text only in this version: rows with images train with train.objective 'sft'. Use "
                        "--objective sft, or drop the images to train on the text alone")
    if t.packing:
        raise DataError(f"{path}: {with_images} row(s) carry images, and train.packing puts several examples in "
                        "one sequence, which this version does not do with images. Turn packing off (--no-packing)")
    if recipe.data.mix:
        raise DataError(f"{path}: {with_images} row(s) carry images, and data.mix ({recipe.data.mix}) mixes in rows "
                        "of another dataset, which this version does not do with images. Clear data.mix, or merge "
                        "the two files into one")
    train_ex, val_ex = split_examples(examples, recipe.data.val_fraction, recipe.data.seed)
    tr = _encode_vision(processor, train_ex, recipe, where)
    va = _encode_vision(processor, val_ex, recipe, where)
    if not tr.rows and tr.refused == len(train_ex):
        raise DataError(f"{path}: every training example with images was refused ({tr.refused}); first, "
                        f"{tr.first}. Fix the rows or the model's chat template")
    if not tr.rows:
        raise DataError(f"{path}: no example with images fits train.seq_len={t.seq_len} with its image tokens and "
                        "an assistant token to learn; raise the sequence length or lower data.max_pixels")
    report.notes.append(f"images: {sum(len(r.images) for r in tr.rows)} in {len(tr.rows)} training row(s), "
                        f"at most {recipe.data.max_pixels:,} pixels each; the whole vision-language model trains "
                        "(the sft objective)")
    trained = sum(sum(1 for x in r.row["labels"] if x != -100) for r in tr.rows)
    return TrainData(train=vision.VisionDataset(tr.rows), val=vision.VisionDataset(va.rows) if va.rows else None,
                     report=report, truncated=tr.cut, trained_tokens=trained, refused=tr.refused + va.refused,
                     refusal=tr.first or va.first, val_examples=val_ex, dropped=tr.dropped_long,
                     dropped_empty=tr.dropped_empty + va.dropped_empty, val_cut=va.cut, val_dropped=va.dropped_long,
                     vision=True, images=sum(len(r.images) for r in tr.rows))


def _encode_vision(processor: Any, examples: list[dict], recipe: Recipe, where: dict) -> Encoded:
    """``_encode_all`` for rows with images: a row whose image tokens pass train.seq_len is left out as too
    long (never cut through an image); a refused template or an unreadable image is a refusal."""
    out = Encoded([])
    for ex in examples:
        try:
            enc = vision.encode_vision_example(processor, ex, recipe.train.seq_len, recipe.data.train_on,
                                               recipe.data.max_pixels)
        except vision.TooLong:
            out.dropped_long += 1
            continue
        except (TemplateError, vision.VisionError, ValueError) as e:  # ValueError: the processor's own refusals
            out.refused += 1  # (an aspect ratio over 200, placeholders the template lost): that row, not the run
            out.first = out.first or f"{where.get(id(ex), 'a row')}: {e}"
            continue
        if any(label != -100 for label in enc.row["labels"]):
            out.rows.append(enc)
            out.cut += enc.truncated
        elif enc.truncated:
            out.dropped_long += 1
        else:
            out.dropped_empty += 1
    return out


def document_split(tokenizer: Any, documents: list[dict], recipe: Recipe, report: Any) -> tuple[list, list]:
    """Training and validation chunks of a documents dataset (studio.data.documents).

    Whole documents are held out when there are enough of them (the seeded split of data.val_fraction
    gives at least one); with fewer, a seeded slice of all the chunks is, and the note says so (a held-out
    chunk may share its small overlap with a trained neighbour)."""
    seq_len, frac, seed = recipe.train.seq_len, recipe.data.val_fraction, recipe.data.seed
    train_docs, val_docs = split_examples(documents, frac, seed)
    if val_docs or frac <= 0:
        train, val = docs.chunk_examples(tokenizer, train_docs, seq_len), docs.chunk_examples(tokenizer, val_docs,
                                                                                              seq_len)
        if val:
            report.notes.append(f"validation: {len(val_docs)} whole document(s) held out ({len(val)} chunk(s))")
        return train, val
    chunks = docs.chunk_examples(tokenizer, documents, seq_len)
    if len(chunks) < 2:
        report.notes.append("validation: none (one chunk in all; add documents to measure perplexity)")
        return chunks, []
    order = list(range(len(chunks)))
    random.Random(seed).shuffle(order)
    held = set(order[:max(1, round(len(chunks) * frac))])
    report.notes.append(f"validation: {len(held)} of {len(chunks)} chunk(s) held out (too few documents for "
                        f"data.val_fraction {frac:g} to hold out a whole one)")
    return ([c for i, c in enumerate(chunks) if i not in held], [c for i, c in enumerate(chunks) if i in held])


def _mix_rows(tokenizer: Any, recipe: Recipe, n_main: int, report: Any) -> list[dict]:
    """Rows of data.mix (chat rows, tokens per data.train_on) for a data.mix_ratio share of the training set.

    Drawn without repeats, seeded; when the file has fewer than the share asks for, all of them, and the
    note says the share reached. They are training rows only: validation stays on data.path."""
    ratio = recipe.data.mix_ratio
    want = round(n_main * ratio / (1 - ratio))
    try:
        examples, mix_report = load_examples(recipe.data.mix, "auto", None, recipe.data.roles or None,
                                             recipe.data.label_filter)
    except DataError as e:
        raise DataError(f"data.mix: {e}") from None
    if getattr(mix_report, "format", "") == docs.FORMAT:
        raise DataError(f"data.mix {recipe.data.mix}: give chat rows (a dataset file) to mix in, not documents")
    rows = _encode_all(tokenizer, examples, recipe).rows
    if not rows:
        raise DataError(f"data.mix {recipe.data.mix}: no row has tokens to train within train.seq_len")
    picked = random.Random(recipe.data.seed).sample(rows, min(want, len(rows)))
    share = len(picked) / (len(picked) + n_main)
    note = (f"data.mix: {len(picked)} chat row(s) from {recipe.data.mix} mixed in with {n_main} example(s) "
            f"({share:.0%} of training; data.mix_ratio {ratio:g})")
    if len(picked) < want:
        note += f"; the file has {len(rows)} usable row(s), fewer than the {want} the ratio asks for"
    report.notes.append(note)
    return picked


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
    val_rows, val_stats = encode_pairs(tokenizer, val_ex, recipe.train.seq_len)
    if not train_rows and stats.refused and not stats.too_long:
        raise DataError(f"{path}: the model's chat template refused every chosen/rejected pair ({stats.refused}); "
                        f"first: {stats.refusal}. Fix the template or the rows")
    if not train_rows:
        raise DataError(f"{path}: no chosen/rejected pair fits train.seq_len={recipe.train.seq_len} "
                        f"({stats.too_long} prompt(s) fill it, {stats.refused} refused by the chat template); "
                        "raise the sequence length")
    report.notes.extend(pair_rows_summary(stats, path))
    val_lm = _encode_all(tokenizer, val_ex, recipe).rows
    trained = sum(len(r["chosen_ids"]) + len(r["rejected_ids"]) for r in train_rows)
    return TrainData(train=Dataset.from_list(train_rows), val=Dataset.from_list(val_rows) if val_rows else None,
                     report=report, truncated=stats.truncated, trained_tokens=trained,
                     refused=stats.refused + val_stats.refused, val_examples=val_ex,
                     val_lm=Dataset.from_list(val_lm) if val_lm else None, pairs=stats, dropped=stats.too_long,
                     val_cut=val_stats.truncated, val_dropped=val_stats.too_long, val_pairs=val_stats)


@dataclass
class Prompts:
    """What turning one split's rows into grpo prompts did (``_prompt_rows``)."""

    rows: list
    no_prompt: int = 0  # plain text, or no user turn
    too_long: int = 0  # the prompt leaves fewer than grpo_completion_len tokens of train.seq_len
    refused: int = 0  # the chat template refused it
    missing: dict = field(default_factory=dict)  # reason -> [count, first row]
    first: str = ""


def _prompt_rows(tokenizer: Any, examples: list, recipe: Recipe, settings: Any, where: dict) -> Prompts:
    """grpo's rows: the conversation up to its last user turn (role and text only), the row's own columns as
    JSON for the rewards, and where it came from; rows the reward mix cannot score are counted by reason."""
    import json

    from studio import scoring
    from studio.data.scan import ROW_KEY
    from studio.data.template import render
    from studio.rewards import row_problems

    out = Prompts([])
    room = recipe.train.seq_len - recipe.train.grpo_completion_len
    for ex in examples:
        msgs = ex.get("messages") or []
        users = [i for i, m in enumerate(msgs) if m.get("role") == "user"]
        if not users:
            out.no_prompt += 1
            continue
        prompt = [{"role": m["role"], "content": m["content"] if isinstance(m.get("content"), str) else
                   str(m.get("content") or "")} for m in msgs[:users[-1] + 1]]
        row = ex.get(ROW_KEY) or {}
        line = where.get(id(ex), "a row")
        why = row_problems(settings, row)
        if not why and isinstance(row.get("pattern"), str) and "pattern" in {n for n, _ in settings.mix}:
            try:
                scoring._check_pattern(row["pattern"], f"{recipe.data.path} {line}")
            except scoring.PromptFileError as e:
                raise DataError(str(e)) from None
        if why:
            count = out.missing.setdefault(why, [0, line])
            count[0] += 1
            continue
        try:
            n = len(tokenizer(render(tokenizer, prompt, add_generation_prompt=True),
                              add_special_tokens=False)["input_ids"])
        except TemplateError as e:
            out.refused += 1
            out.first = out.first or f"{line}: {e}"
            continue
        if n > room:
            out.too_long += 1
            continue
        out.rows.append({"prompt": prompt, "studio_row": json.dumps(row, ensure_ascii=False, default=str),
                         "studio_where": line})
    return out


def _build_prompts(tokenizer: Any, recipe: Recipe, report: Any, train_ex: list, val_ex: list,
                   where: dict) -> TrainData:
    """Prompts for TRL's GRPOTrainer (studio.rewards scores their completions)."""
    from datasets import Dataset

    from studio.rewards import RewardError, settings_from

    path, t = recipe.data.path, recipe.train
    try:
        settings = settings_from(recipe)
    except RewardError as e:
        raise DataError(str(e)) from None
    tr = _prompt_rows(tokenizer, train_ex, recipe, settings, where)
    va = _prompt_rows(tokenizer, val_ex, recipe, settings, where)
    for why, (count, first) in tr.missing.items():
        report.notes.append(f"{count} row(s) left out of grpo: {why} (first: {first})")
    if tr.no_prompt:
        report.notes.append(f"{tr.no_prompt} row(s) have no user turn to use as a prompt and are left out of grpo")
    if tr.too_long:
        report.notes.append(f"{tr.too_long} prompt(s) left out: with train.grpo_completion_len={t.grpo_completion_len} "
                            f"they do not fit train.seq_len={t.seq_len} (raise it to use them)")
    if tr.refused:
        report.notes.append(f"{tr.refused} prompt(s) refused by the chat template (first, {tr.first})")
    if not tr.rows:
        reasons = [f"{c} {w} (first: {f})" for w, (c, f) in tr.missing.items()]
        reasons += [f"{tr.no_prompt} without a user turn"] * bool(tr.no_prompt)
        reasons += [f"{tr.too_long} too long for train.seq_len"] * bool(tr.too_long)
        raise DataError(f"{path}: no row can be a grpo prompt with the rewards '{t.grpo_rewards}': "
                        f"{'; '.join(reasons) or 'no rows'}. Give chat rows (or a prompt column) with the columns "
                        "the rewards read, or change train.grpo_rewards")
    per_step = max(1, t.micro_batch * t.grad_accum // t.grpo_generations)
    if len(tr.rows) < per_step:
        raise DataError(f"{path}: {len(tr.rows)} prompt(s) for grpo, and one step takes {per_step} (micro_batch x "
                        f"grad_accum / grpo_generations = {t.micro_batch} x {t.grad_accum} / {t.grpo_generations}): "
                        "add prompts, or lower train.grad_accum or train.micro_batch")
    if len(tr.rows) % per_step:
        report.notes.append(f"each pass over the prompts leaves out the last {len(tr.rows) % per_step} of "
                            f"{len(tr.rows)} (a step takes whole groups of {per_step} prompts); another pass "
                            "shuffles them again")
    unused = getattr(report, "unused_columns", None) or {}
    handed = sorted(k for k in unused if k not in ("prompt", "completion"))
    if handed:  # the import said "not used"; for grpo they are the rewards' row fields
        report.notes[:] = [n for n in report.notes if not n.startswith("column(s) not used: ")]
        report.notes.append("for grpo, every row's columns reach the rewards (" + ", ".join(handed) + ")")
    val_lm = _encode_all(tokenizer, val_ex, recipe).rows
    return TrainData(train=Dataset.from_list(tr.rows), val=None, report=report, truncated=0, trained_tokens=0,
                     refused=tr.refused + va.refused, refusal=tr.first or va.first, val_examples=val_ex,
                     val_lm=Dataset.from_list(val_lm) if val_lm else None, prompts=len(tr.rows),
                     dropped=tr.too_long)


def length_warnings(data: TrainData, seq_len: int) -> list[str]:
    """What train.seq_len did to the rows, for training and validation apart: rows cut (kept, their tail not
    trained or scored) and rows left out (nothing to learn within it), each counted once."""
    unit = "pair(s)" if data.pairs is not None else "example(s)"
    out = []
    said = data.pairs is not None or data.prompts is not None  # pairs and grpo prompts: said in the notes
    splits = [] if said else [("training", data.truncated, data.dropped)]
    for split, cut, dropped in splits + [("validation", data.val_cut, data.val_dropped)]:
        if cut:
            out.append(f"{cut} {split} {unit} longer than train.seq_len={seq_len} tokens were cut to it: their "
                       "tail is not " + ("trained" if split == "training" else "scored"))
        if dropped:
            what = "the prompt alone fills it" if data.pairs is not None else "every assistant token falls past it"
            out.append(f"{dropped} {split} {unit} were left out: {what} (raise train.seq_len to use them)")
    if data.dropped_empty:
        out.append(f"{data.dropped_empty} example(s) were left out: they have no assistant tokens to learn")
    return out
