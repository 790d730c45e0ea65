"""Out-of-memory recovery and resume: find where to continue from, and step down a memory ladder.

grpo first samples fewer completions per step (half the prompts, down to one prompt's group): the
sampling batch is the whole effective batch, so its KV cache halves; each step then learns from fewer
prompts (said in the change). From there the ladder keeps the effective batch (micro_batch x grad_accum)
and so the training maths:
1. halve the micro-batch and double gradient accumulation (down to a micro-batch of 1),
2. enable gradient checkpointing,
3. shorten the sequence length to the dataset's 95th percentile,
4. switch to the paged 8-bit AdamW optimizer (GPU only).
After each step down the run continues from the last good checkpoint; the settings that worked
are recorded in ``effective_recipe.json``, which a later resume uses instead of recipe.json.
"""
from __future__ import annotations

import copy
import gc
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from studio import checkpoint, objectives, runs
from studio.events import LOG, WARNING, Emitter
from studio.fsutil import read_json
from studio.recipe import Recipe, get_setting
from studio.train import dist
from studio.train.errors import OutOfMemory

EFFECTIVE_RECIPE = "effective_recipe.json"
PAGED_OPTIMIZER = "paged_adamw_8bit"


# The memory-relevant settings, by their recipe names (the plan's, the CLI's and the events' vocabulary)
MEMORY_SETTINGS = ("train.micro_batch", "train.grad_accum", "train.grad_ckpt", "train.seq_len", "train.optimizer",
                   "train.tiled_head", "train.tiled_mlp", "train.offload_activations")


def settings_of(recipe: Recipe) -> dict:
    """The memory-relevant settings, as recorded in checkpoints, state.json and out-of-memory events."""
    return {key: get_setting(recipe, key) for key in MEMORY_SETTINGS}


def recorded_setting(settings: dict, key: str) -> Any:
    """One setting from a record ``settings_of`` wrote; records before the recipe names used the bare name."""
    return settings[key] if key in settings else settings.get(key.split(".", 1)[1])


def is_oom(exc: BaseException) -> bool:
    if type(exc).__name__ == "OutOfMemoryError":
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


@dataclass
class Change:
    words: str
    fields: dict = field(default_factory=dict)  # "train.x": [old, new]
    needs_data: bool = False


def _smaller_micro_batch(mb: int) -> int:
    """The largest divisor of ``mb`` not above mb/2, so the effective batch stays exact."""
    return next(d for d in range(mb // 2, 0, -1) if mb % d == 0)


def _fewer_samples(t: Any) -> Change | None:
    """grpo: half the prompts per step (whole groups of grpo_generations completions), the micro-batch kept
    when it divides the new batch; None when a step already samples one prompt's group, or not grpo."""
    if not objectives.get(t.objective).samples:
        return None
    group, batch = t.grpo_generations, t.micro_batch * t.grad_accum
    prompts = batch // group
    if prompts <= 1:
        return None
    new = (prompts // 2) * group
    mb = max(d for d in range(1, min(t.micro_batch, new) + 1) if new % d == 0)
    ga = new // mb
    change = Change(f"completions sampled per step {batch} -> {new} ({prompts // 2} prompt(s) x {group}): the "
                    "sampling's memory halves, and each step learns from fewer prompts",
                    {"train.micro_batch": [t.micro_batch, mb], "train.grad_accum": [t.grad_accum, ga]})
    t.micro_batch, t.grad_accum = mb, ga
    return change


def next_change(recipe: Recipe, p95: int | None, device: str) -> Change | None:
    """Apply the next rung of the ladder to ``recipe``; None when nothing is left to try."""
    t = recipe.train
    fewer = _fewer_samples(t)
    if fewer is not None:
        return fewer
    if t.micro_batch > 1:
        mb = _smaller_micro_batch(t.micro_batch)
        ga = t.grad_accum * (t.micro_batch // mb)
        change = Change(f"micro-batch {t.micro_batch} -> {mb} and gradient accumulation {t.grad_accum} -> {ga} "
                        f"(the effective batch stays {mb * ga})",
                        {"train.micro_batch": [t.micro_batch, mb], "train.grad_accum": [t.grad_accum, ga]})
        t.micro_batch, t.grad_accum = mb, ga
        return change
    if not t.grad_ckpt:
        t.grad_ckpt = True
        return Change("gradient checkpointing turned on (activations are recomputed: about 30% slower)",
                      {"train.grad_ckpt": [False, True]})
    # The long-sequence parts (studio.train.long_context) keep every token: tried before truncating.
    if not t.tiled_head and recipe.train.objective == "sft":
        t.tiled_head = True
        return Change("the loss computed through a tiled output layer (no full logits; the same loss)",
                      {"train.tiled_head": [False, True]})
    if not t.tiled_mlp:
        t.tiled_mlp = True
        return Change("the MLP run in tiles of tokens and recomputed in backward (the same values; a little slower)",
                      {"train.tiled_mlp": [False, True]})
    if device == "cuda" and not t.offload_activations:
        t.offload_activations = True
        return Change("activation offloading: the layer inputs kept for backward move to host RAM",
                      {"train.offload_activations": [False, True]})
    if p95 and p95 < t.seq_len:
        new = max(16, p95)
        change = Change(f"sequence length {t.seq_len} -> {new} tokens (95% of the examples fit; longer ones "
                        "are truncated)", {"train.seq_len": [t.seq_len, new]}, needs_data=True)
        t.seq_len = new
        return change
    if device == "cuda" and t.optimizer != PAGED_OPTIMIZER:
        change = Change(f"optimizer {t.optimizer} -> {PAGED_OPTIMIZER} (8-bit states, paged to CPU memory under "
                        "pressure; its state starts fresh)", {"train.optimizer": [t.optimizer, PAGED_OPTIMIZER]})
        t.optimizer = PAGED_OPTIMIZER
        return change
    return None


def p95_length(train_set: Any) -> int | None:
    """95th percentile of tokenised example lengths (after truncation to seq_len)."""
    import numpy as np

    try:
        if "prompt_ids" in (getattr(train_set, "column_names", None) or ()):  # DPO/ORPO pairs: the longer side
            lengths = [len(p) + max(len(c), len(r)) for p, c, r in zip(
                train_set["prompt_ids"], train_set["chosen_ids"], train_set["rejected_ids"])]
        else:
            lengths = [len(ids) for ids in train_set["input_ids"]]
    except (KeyError, TypeError, ValueError):  # datasets raises ValueError for a missing column
        return None
    return int(np.ceil(np.percentile(lengths, 95))) if lengths else None


def what_might_fit(recipe: Recipe) -> str:
    """Concrete next settings that lower memory further (the ladder has used the automatic ones)."""
    t, options = recipe.train, []
    if t.seq_len > 64:
        options.append(f"train.seq_len {t.seq_len // 2} (now {t.seq_len})")
    if recipe.lora.rank > 4:
        options.append(f"lora.rank {recipe.lora.rank // 2} (now {recipe.lora.rank})")
    if recipe.quant.mode != "4bit":
        options.append(f"quant.mode '4bit' (now '{recipe.quant.mode}')")
    options.append("a smaller base model")
    return "; ".join(options)


def _memory_words() -> str:
    import torch

    if not torch.cuda.is_available():
        return ""
    free, total = torch.cuda.mem_get_info()
    peak = torch.cuda.max_memory_reserved()
    return f" (peak {peak / 2**30:.1f} GiB reserved of {total / 2**30:.1f} GiB on the GPU)"


def exhausted(recipe: Recipe, where: str, step: int, tried: list[str]) -> OutOfMemory:
    t = recipe.train
    return OutOfMemory(
        f"out of memory during {where} at step {step}{_memory_words()}, even with micro-batch {t.micro_batch}, "
        f"gradient checkpointing {'on' if t.grad_ckpt else 'off'}, sequence length {t.seq_len} and optimizer "
        f"{t.optimizer}. What may fit: {what_might_fit(recipe)}",
        "change those fields in the recipe (or let 'lora-studio plan' fit a budget) and start a new run; "
        "close other programs that use the GPU",
        where=where, step=step, tried=tried, settings=settings_of(recipe))


def record(run_dir: Path, recipe: Recipe, change: Change, where: str, step: int) -> None:
    """Write the settings about to be used, so a later resume starts from what works."""
    recipe.save(Path(run_dir) / EFFECTIVE_RECIPE)
    state = runs.read_state(run_dir)
    history = list(state.get("oom_recoveries") or [])
    history.append({"where": where, "step": step, "change": change.words, "fields": change.fields,
                    "time": time.strftime("%Y-%m-%dT%H:%M:%S")})
    runs.write_state(run_dir, settings=settings_of(recipe), oom_recoveries=history)


def load_recipe(run_dir: Path, warnings: list[str]) -> tuple[Recipe, bool]:
    """The effective recipe when an OOM recovery wrote one, else the recipe as started."""
    effective = Path(run_dir) / EFFECTIVE_RECIPE
    if effective.is_file():
        return Recipe.load(effective, warnings), True
    return Recipe.load(Path(run_dir) / runs.RECIPE, warnings), False


def resume_point(run_dir: Path, em: Emitter) -> checkpoint.Checkpoint | None:
    """The newest checkpoint passing its manifest; bad ones are set aside with a warning each."""
    def skipped(ck: checkpoint.Checkpoint, problem: str) -> None:
        moved = checkpoint.quarantine(ck)
        em.emit(WARNING, message=f"checkpoint {ck.path.name} is damaged and was skipped: {problem} "
                                 f"(moved to {moved.name})", checkpoint=str(ck.path), step=ck.step, problem=problem)

    ck = checkpoint.latest_good(run_dir, on_bad=skipped)
    if ck is None:
        em.emit(WARNING, message=f"no usable checkpoint in {checkpoint.root(run_dir)}: training starts again "
                                 "from step 0 with the same data order")
    else:
        em.emit(LOG, message=f"resuming from checkpoint {ck.path.name} (step {ck.step})", resumed_from_step=ck.step,
                checkpoint=str(ck.path))
        runs.write_state(run_dir, resumed_from_step=ck.step)
    return ck


def free_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _fresh_optimizer(ck: checkpoint.Checkpoint | None, recipe: Recipe) -> bool:
    if ck is None:
        return False
    manifest = read_json(ck.path / checkpoint.MANIFEST, default={}) or {}
    saved = recorded_setting(manifest.get("settings") or {}, "train.optimizer")
    return saved is not None and saved != recipe.train.optimizer


def train_with_recovery(run: Any, start: checkpoint.Checkpoint | None) -> None:
    """``trainer.train()`` from ``start``; on out-of-memory step down the ladder and continue."""
    tried: list[str] = []
    while True:
        run.trainer.fresh_optimizer = _fresh_optimizer(start, run.recipe)
        try:
            run.trainer.train(resume_from_checkpoint=str(start.path) if start else None)
            return
        except Exception as exc:  # noqa: BLE001 - only out-of-memory is handled here
            if not is_oom(exc):
                raise
            where = run.trainer.phase
            step = run.trainer.state.global_step + (1 if where == "step" else 0)
        run.trainer = None  # drop the failed Trainer (and its references to activations) first
        free_memory()
        change = next_change(run.recipe, p95_length(run.data.train), run.device)
        if change is None:
            raise exhausted(run.recipe, where, step, tried)

        if dist.distributed():
            raise _step_down_all(run, change, where, step)
        tried.append(change.words)
        record(run.run_dir, run.recipe, change, where, step)
        start = checkpoint.latest_good(run.run_dir)
        origin = f"checkpoint step {start.step}" if start else "step 0 (no checkpoint yet)"
        run.em.emit(WARNING, message=f"out of memory during {where} at step {step}: changed {change.words}; "
                                     f"continuing from {origin}", kind="oom_recovery", where=where, step=step,
                    fields=change.fields, settings=settings_of(run.recipe))
        run.rebuild(reload_data=change.needs_data)


def _step_down_all(run: Any, change: Change, where: str, step: int) -> OutOfMemory:
    """Several processes: the others are blocked in a collective this rank will never join, so the
    group cannot step down in place. This rank records the next rung (the one file a rank other than
    0 may write: only it knows it ran out) and the run ends; a resume starts every process with it."""

    whole = copy.deepcopy(run.recipe)  # undo the share of each process: a resume divides again
    if getattr(run, "batch_split", None):
        name, n = run.batch_split
        setattr(whole.train, name, getattr(whole.train, name) * n)
    whole.save(Path(run.run_dir) / EFFECTIVE_RECIPE)
    return OutOfMemory(
        f"out of memory during {where} at step {step} in process {dist.rank()} of {dist.world_size()}; "
        f"every process stopped. The next try uses {change.words}",
        "resume the run ('lora-studio resume RUN' or Resume on the Train page): every process continues from the "
        "last checkpoint with the smaller settings (effective_recipe.json)",
        where=where, step=step, settings=settings_of(run.recipe), change=change.fields)
