"""Fit QLoRA settings to a VRAM budget, preferring quality, and explain the choice.

``fit()`` enumerates quantisation, rank, micro-batch, sequence length, gradient checkpointing
and optimizer (targets and attention follow the user or the defaults), predicts each candidate
with :mod:`studio.memory`, drops every candidate whose predicted device total exceeds the budget
minus a safety margin, and keeps the best by a fixed order of preference:

1. sequence length: cover the dataset's p95 length (or the default length) before anything else;
2. quantisation: 16-bit, then 8-bit, then 4-bit NF4 (less quantisation error);
3. LoRA rank: higher first (more capacity);
4. speed: no gradient checkpointing, a bigger micro-batch, plain AdamW.

Settings the user fixed are never changed. When nothing fits, the plan says so and names the
smallest change that fits: dropping a fixed setting, a shorter length, a bigger budget or a
smaller model.
"""
from __future__ import annotations

import copy
import itertools
import math
from dataclasses import dataclass, field
from typing import Any

from studio import kernels, memory, methods, objectives, speed, vision_plan
from studio.memory import GiB, MiB
from studio.models import ModelInfo, catalog, from_catalog
from studio.recipe import PLANNED, Recipe, get_setting, is_setting, set_setting, setting_flag
from studio.settings import ATTRIBUTE, SHAPE, Settings
from studio.speed import TimeEstimate

__all__ = ["SHAPE", "SETTING_KEYS", "Plan", "Suggestion", "Settings", "fit", "fit_gpus", "fixed_from_recipe",
           "add_time_estimate", "margin_bytes", "objective_reasons", "target_length"]

# A plan's settings, by their recipe names (studio.recipe.PLANNED); dropout is an input, not a choice.
SETTING_KEYS = tuple(k for k in PLANNED if k != "lora.dropout")
QUANT_ORDER = ("none", "8bit", "4bit")  # best quality first
RANKS = (64, 32, 16, 8)
MICRO_BATCHES = (16, 8, 4, 2, 1)
OPTIMIZERS = ("adamw_torch", "adamw_8bit", "paged_adamw_8bit")  # paged_adamw_32bit only when asked for
DEFAULT_SEQ_LEN = 2048
MIN_SEQ_LEN = 128
MAX_CONTEXT = 1 << 20  # the longest context the planner looks for (train.seq_len's upper bound)
MARGIN_FRACTION = 0.05
MARGIN_MIN = 512 * MiB
# On the CPU (no NVIDIA GPU) a step must take seconds, not minutes: 4-bit QLoRA as the README promises,
# a small micro-batch, a capped length, modest ranks; the worker computes in float32 there.
CPU_MICRO_BATCHES = (2, 1)
CPU_MAX_SEQ_LEN = 512
CPU_RANKS = (16, 8)


def margin_bytes(budget: int) -> int:
    """The safety margin kept free: 5% of the budget, at least 512 MiB (other processes, spikes)."""
    return max(MARGIN_MIN, int(budget * MARGIN_FRACTION))


@dataclass(frozen=True)
class Suggestion:
    """The smallest single change that makes a plan fit, exactly one kind of it: release the user's fixed
    settings, a shorter sequence length, or a bigger budget (with a smaller catalog model as the other way)."""

    unfix: tuple[str, ...] = ()  # recipe names of the settings to release
    seq_len: int | None = None
    budget_bytes: int | None = None
    model: str | None = None  # a catalog id, beside budget_bytes

    def to_dict(self) -> dict[str, Any]:
        """plan.json's ``suggestion_change``: {"unfix": [...]}, {"train.seq_len": n} or {"budget_bytes": b, "model"?}."""
        if self.unfix:
            return {"unfix": list(self.unfix)}
        if self.seq_len is not None:
            return {"train.seq_len": self.seq_len}
        return {"budget_bytes": self.budget_bytes, **({"model": self.model} if self.model else {})}


@dataclass
class Plan:
    """Settings that fit (or the best try), the predicted memory and the reasons, in plain sentences."""

    fits: bool
    budget_bytes: int
    margin_bytes: int
    settings: Settings
    predicted: dict[str, int]
    components: memory.Parts
    sources: memory.Sources
    reasons: list[str] = field(default_factory=list)
    suggestion: str | None = None
    suggestion_change: Suggestion | None = None
    model: str = ""
    target_seq_len: int = 0
    dropout: float = 0.05
    device: str = "cuda"  # "cpu" when there is no NVIDIA GPU: the budget is system RAM
    estimate: TimeEstimate | None = None  # when the speed was estimated
    strategy: str = "single"  # several GPUs: ddp or fsdp (fit_gpus); predicted is then per GPU
    nproc: int = 1
    per_gpu: dict[str, int] | None = None  # device total per GPU of these settings under each strategy
    host_budget: int | None = None  # host RAM activation offloading may fill (None: not known here, not checked)
    longest_seq_len: int | None = None  # the longest context these settings hold on the device (longest_context)
    linear_attention: str = ""  # which code runs the model's linear-attention layers, in words ("": it has none)

    def to_dict(self) -> dict:
        """The JSON the CLI prints (``lora-studio plan --json``) and the run folder keeps."""
        return {"fits": self.fits, "model": self.model, "device": self.device,
                "estimate": self.estimate.to_dict() if self.estimate is not None else None,
                "budget_bytes": self.budget_bytes,
                "margin_bytes": self.margin_bytes, "settings": self.settings.to_dict(), "predicted": dict(self.predicted),
                "components": dict(self.components), "sources": dict(self.sources), "reasons": list(self.reasons),
                "suggestion": self.suggestion,
                "suggestion_change": self.suggestion_change.to_dict() if self.suggestion_change else None,
                "target_seq_len": self.target_seq_len, "strategy": self.strategy, "nproc": self.nproc,
                "per_gpu": self.per_gpu, "host_offload_bytes": self.host_offload, "host_budget_bytes": self.host_budget,
                "longest_seq_len": self.longest_seq_len, "linear_attention": self.linear_attention}

    @property
    def host_offload(self) -> int:
        """Host RAM the offloaded activations take (0 without activation offloading)."""
        return int(self.predicted.get("host_offload_bytes", 0))

    def apply(self, recipe: Recipe) -> Recipe:
        """A copy of ``recipe`` with this plan's settings written in (the worker then does exactly this)."""
        r = copy.deepcopy(recipe)
        for key in SETTING_KEYS:
            if key == "quant.compute_dtype" and r.quant.compute_dtype == "auto":
                continue  # "auto" picks the dtype on the device the run really gets
            value = getattr(self.settings, ATTRIBUTE[key])
            set_setting(r, key, _norm_targets(value) if key == "lora.targets" else value)
        return r


def add_time_estimate(plan: Plan, info: ModelInfo, gpu_name: str = "", steps: int | None = None,
                      examples: int | None = None, epochs: float = 1.0, measure: bool = False,
                      dataset_report: Any = None) -> None:
    """Put the expected speed and duration into ``plan`` (``estimate``) and its reasons.

    On the CPU the rates come from the cached probe; ``measure`` runs the probe (a few seconds, in a
    subprocess) when there is none. The run's length is ``steps``, else ``epochs`` over ``examples``.
    """

    s = plan.settings
    rates = None
    if plan.device == "cpu":
        rates = speed.ensure_cpu_rates() if measure else speed.cpu_rates()
    per_step = s.micro_batch * s.grad_accum
    if objectives.get(s.objective).samples:  # grpo: a step takes micro_batch x grad_accum / generations prompts
        per_step = max(1, per_step // memory.grpo_setting(s, "generations"))
    n = speed.run_steps(steps or -1, epochs, examples, per_step)
    mean = _tokens_stat(dataset_report, "mean")
    est = speed.estimate(info, s.to_dict(), plan.device, gpu_name=gpu_name, rates=rates, steps=n,
                         example_tokens=_tokens_stat(dataset_report, "p95"), mean_tokens=mean,
                         calibration=speed.calibration(plan.device, gpu_name, rates,
                                                     sampling=objectives.get(s.objective).samples))
    plan.estimate = est
    plan.reasons.append(speed.describe(est))


def fixed_from_recipe(recipe: Recipe) -> dict[str, Any]:
    """Every memory-relevant setting of a recipe as ``fixed`` for fit(): predicts exactly that run."""
    return {key: get_setting(recipe, key) for key in PLANNED + SHAPE if key != "quant.compute_dtype"}


# --- inputs ---------------------------------------------------------------------------------------------
def _tokens_stat(dataset_report: Any, key: str) -> int | None:
    tokens = getattr(dataset_report, "tokens", None)
    if tokens is None and isinstance(dataset_report, dict):
        tokens = dataset_report.get("tokens")
    if tokens is None:
        return None
    value = tokens.get(key) if isinstance(tokens, dict) else getattr(tokens, key, None)
    return int(value) if value else None


def _report_value(dataset_report: Any, key: str) -> Any:
    if isinstance(dataset_report, dict):
        return dataset_report.get(key)
    return getattr(dataset_report, key, None)


def _usable_rows(dataset_report: Any) -> int | None:
    """Training examples: the usable rows, or for documents their chunks."""
    docs = _report_value(dataset_report, "documents")
    if isinstance(docs, dict) and isinstance(docs.get("chunks"), int):  # DatasetReport.documents
        rows = docs["chunks"]
    elif isinstance(docs, int) and isinstance(_report_value(dataset_report, "chunks"), int):  # its to_dict()
        rows = _report_value(dataset_report, "chunks")
    else:
        rows = _report_value(dataset_report, "usable")
    return int(rows) if isinstance(rows, int) and rows > 0 else None


def target_length(info: ModelInfo, dataset_report: Any = None, fixed: dict | None = None) -> tuple[int, str]:
    """The sequence length to aim for, and why: the dataset's p95 (rounded up), else a default; grpo adds the
    completions it samples after each prompt (``train.grpo_completion_len``)."""
    p95 = _tokens_stat(dataset_report, "p95")
    fixed = fixed or {}
    if p95 and objectives.get(fixed.get("train.objective")).samples:
        completion = _grpo_fixed(fixed, "completion_len")
        want = max(MIN_SEQ_LEN, _round_up(p95 + completion, 64))
        why = (f"the prompts' 95th percentile is {p95} tokens, and grpo samples completions of up to {completion} "
               "after them")
    elif p95:
        want, why = max(MIN_SEQ_LEN, _round_up(p95, 64)), f"the dataset's 95th-percentile example is {p95} tokens"
        if _report_value(dataset_report, "format") == "documents":  # chunks are cut to the inspected length
            why = f"the documents are cut into chunks, 95% of them up to {p95} tokens"
    else:
        want, why = DEFAULT_SEQ_LEN, f"no dataset given, so the default length {DEFAULT_SEQ_LEN}"
    if info.context and want > info.context:
        want, why = info.context, why + f", capped at the model's context of {info.context}"
    return int(want), why


def _grpo_fixed(fixed: dict, name: str) -> int:
    """A grpo setting from ``fixed`` (train.grpo_<name>), else the recipe's default (memory.grpo_setting for Settings)."""
    return int(fixed.get(f"train.grpo_{name}") or memory.GRPO_DEFAULTS[name])


def _round_up(x: int, to: int) -> int:
    return ((x + to - 1) // to) * to


def _seq_candidates(target: int) -> list[int]:
    out, s = [target], target
    while s > MIN_SEQ_LEN:
        s = max(MIN_SEQ_LEN, _round_up(s // 2, 64) if s // 2 >= 64 else s // 2)
        out.append(s)
    return out


def _space(fixed: dict, target: int, effective_batch: int, info: ModelInfo | None = None, device: str = "cuda") -> dict[str, list]:
    """The candidate values of every setting; a fixed setting has exactly one."""
    attn = "sdpa" if getattr(info, "supports_sdpa", True) else "eager"
    space: dict[str, list[Any]] = {
        "quant.mode": list(QUANT_ORDER), "quant.double_quant": [True], "lora.rank": list(RANKS), "lora.targets": [["all-linear"]],
        "train.micro_batch": sorted({b for b in MICRO_BATCHES if b <= effective_batch} | {max(1, effective_batch)}
                                    if effective_batch < MICRO_BATCHES[0] else set(MICRO_BATCHES), reverse=True),
        "train.seq_len": _seq_candidates(target), "train.grad_ckpt": [False, True], "train.attn": [attn],
        "train.optimizer": list(OPTIMIZERS), "quant.compute_dtype": ["bfloat16"],
        "lora.method": ["lora"], "lora.virtual_tokens": [20],
        # the long-sequence parts: off in the first search, allowed when a length needs them (LONG_CONTEXT)
        "train.tiled_head": [True], "train.tiled_mlp": [False], "train.offload_activations": [False],
        "train.kernels": [kernels_for(info, device)],
    }
    if device == "cpu":
        space.update({"quant.mode": ["4bit"], "lora.rank": list(CPU_RANKS), "quant.compute_dtype": ["float32"],
                      "train.micro_batch": [b for b in CPU_MICRO_BATCHES if b <= max(1, effective_batch)] or [1],
                      "train.optimizer": ["adamw_torch"]})
    for key, value in fixed.items():
        if key in space and value is not None:
            space[key] = [_norm_targets(value) if key == "lora.targets" else value]
    if not methods.get(space["lora.method"][0]).low_rank and "lora.rank" not in fixed:
        space["lora.rank"] = [space["lora.rank"][-1]]  # prefix/prompt tuning: the rank plays no part
    if methods.needs_no_grad_ckpt(space["lora.method"][0]) and "train.grad_ckpt" not in fixed:
        space["train.grad_ckpt"] = [False]  # peft refuses prefix tuning with checkpointing
    return space


def _norm_targets(value: Any) -> list[str]:
    if isinstance(value, str):
        return [t.strip() for t in value.split(",") if t.strip()]
    return list(value)


def _score(s: Settings, target: int) -> tuple:
    """Bigger is better: coverage, less quantisation, rank, then speed."""
    return (min(s.seq_len, target), -QUANT_ORDER.index(s.quant_mode), s.rank, not s.grad_ckpt, not s.tiled_mlp,
            not s.offload, s.micro_batch, -OPTIMIZERS.index(s.optimizer) if s.optimizer in OPTIMIZERS else -9)


# The parts that cost time and are worth it only when a length does not fit without them (studio.train.long_context).
LONG_CONTEXT = ("train.tiled_mlp", "train.offload_activations")


def kernels_for(info: ModelInfo | None, device: str) -> str:
    """The layer kernels a run gets: liger on a GPU when liger-kernel is installed and knows the family."""
    return "liger" if device == "cuda" and info is not None and kernels.liger_runs(info.model_type) else "torch"


def _runs_here(key: str, device: str) -> bool:
    return key != "train.offload_activations" or device == "cuda"  # offloading: GPU only


def _long_space(space: dict, fixed: dict, device: str) -> dict:
    """``space`` with the long-sequence parts allowed (where the user did not fix them)."""
    return {**space, **{key: [False, True] for key in LONG_CONTEXT if key not in fixed and _runs_here(key, device)}}


def context_parts(settings: Settings, fixed: dict, device: str) -> tuple[str, ...]:
    """The settings (recipe names) the longest context may turn on beyond ``settings``: off there, not fixed by
    the user, able to run on ``device``; checkpointing first, which the other two need."""
    if not (settings.grad_ckpt or ("train.grad_ckpt" not in fixed and not methods.needs_no_grad_ckpt(settings.method))):
        return ()
    return tuple(key for key in ("train.grad_ckpt", *LONG_CONTEXT)
                 if not getattr(settings, ATTRIBUTE[key]) and key not in fixed and _runs_here(key, device))


def _valid(s: Settings) -> bool:
    """Offloading moves what checkpointing keeps; the tiled MLP is for checkpointed long runs too."""
    return s.grad_ckpt or not (s.offload or s.tiled_mlp)


# --- search ---------------------------------------------------------------------------------------------
def _complete(cand: dict, fixed: dict, effective_batch: int) -> Settings:
    """A candidate (by recipe names) with alpha and accumulation filled in, and the shape the user gave."""
    cand = dict(cand)
    cand["lora.alpha"] = int(fixed.get("lora.alpha") or 2 * cand["lora.rank"])
    cand["train.grad_accum"] = int(fixed.get("train.grad_accum")
                                   or max(1, round(effective_batch / cand["train.micro_batch"])))
    group = _grpo_fixed(fixed, "generations")
    if objectives.get(fixed.get("train.objective")).samples and not fixed.get("train.grad_accum"):
        while cand["train.micro_batch"] * cand["train.grad_accum"] % group:  # whole groups of completions
            cand["train.grad_accum"] += 1
    return Settings.from_dict({**{k: cand[k] for k in SETTING_KEYS if k in cand},
                               **{k: fixed[k] for k in SHAPE if k in fixed}})


def _best(info: ModelInfo, space: dict, limit: int, target: int, fixed: dict, effective_batch: int,
          dropout: float, device: str = "cuda", host_limit: int | None = None) -> tuple[Settings, memory.Estimate] | None:
    """The best-scoring candidate whose device total is within ``limit`` (ordered search, early exit); None: none is."""
    keys = list(space)
    candidates = [dict(zip(keys, vals)) for vals in itertools.product(*space.values())]
    candidates.sort(key=lambda c: _score(Settings.from_dict(c), target), reverse=True)
    floor: dict[tuple, int] = {}  # weights + adapter + optimizer per (quant, rank, ...): skips hopeless ones cheaply
    for cand in candidates:
        s = _complete(cand, fixed, effective_batch)
        if not _valid(s):
            continue
        key = (s.quant_mode, s.double_quant, s.rank, s.targets, s.optimizer, s.compute_dtype)
        if key not in floor:
            floor[key] = memory.static_bytes(info, s, device=device)
        if floor[key] > limit:
            continue
        est = memory.estimate(info, s, dropout=dropout, device=device)
        if est.device_total <= limit and (host_limit is None or est.host_offload <= host_limit):
            return s, est
    return None


def _best_at_length(info: ModelInfo, space: dict, limit: int, target: int, fixed: dict, effective_batch: int,
                    dropout: float, device: str, host_limit: int | None) -> tuple[Settings, memory.Estimate] | None:
    """The best candidate without the long-sequence parts; with them only when they reach a longer length."""
    found = _best(info, space, limit, target, fixed, effective_batch, dropout, device, host_limit)
    if found is not None and found[0].seq_len >= target:
        return found
    longer = _best(info, _long_space(space, fixed, device), limit, target, fixed, effective_batch, dropout, device,
                   host_limit)
    if longer is not None and (found is None or longer[0].seq_len > found[0].seq_len):
        return longer
    return found


def fit(model_info: ModelInfo, budget_bytes: int, dataset_report: Any = None, fixed: dict | None = None,
        effective_batch: int = 16, device: str = "cuda", host_limit: int | None = None) -> Plan:
    """Settings that fit ``budget_bytes`` (device total minus a margin), best quality first.

    ``fixed`` holds settings by their recipe names (``{"lora.rank": 8}``); recipe fields that do not
    change memory (``train.lr``) are accepted and play no part; any other name is a ValueError.
    ``device="cpu"`` plans a CPU run: the budget is system RAM, 4-bit QLoRA in float32, short steps.
    ``host_limit``: the host RAM activation offloading may fill (None: not known, so not checked; the plan
    then says how much it needs).
    """
    unknown = sorted(k for k in (fixed or {}) if not is_setting(k))
    if unknown:
        raise ValueError(f"unknown settings {', '.join(unknown)}: use recipe names such as lora.rank")
    model_info = vision_plan.for_images(model_info, dataset_report)  # rows with images load the vision tower too
    fixed = {k: v for k, v in (fixed or {}).items() if v is not None and (k in PLANNED or k in SHAPE)}
    dropout = float(fixed.pop("lora.dropout", 0.05))
    rows = _usable_rows(dataset_report)
    if rows is not None and objectives.get(fixed.get("train.objective")).samples:  # a step samples completions
        rows *= _grpo_fixed(fixed, "generations")
    small_data = False
    if rows is not None and rows < effective_batch:
        # no point in a batch bigger than the dataset: 16 examples a step from 9 repeats them
        small_data, effective_batch = True, max(1, rows)
    target, target_why = target_length(model_info, dataset_report, fixed)
    if device == "cpu" and target > CPU_MAX_SEQ_LEN:
        target, target_why = CPU_MAX_SEQ_LEN, target_why + f", capped at {CPU_MAX_SEQ_LEN} on the CPU to keep steps short"
    if "train.seq_len" in fixed:
        target = int(fixed["train.seq_len"])
    margin = margin_bytes(budget_bytes)
    space = _space(fixed, target, effective_batch, model_info, device)
    found = _best_at_length(model_info, space, budget_bytes - margin, target, fixed, effective_batch, dropout, device,
                            host_limit)
    if found is not None:
        settings, est = found
        plan = _make_plan(model_info, True, budget_bytes, margin, settings, est, target, dropout, device)
        plan.host_budget = host_limit
        plan.longest_seq_len = longest_context(model_info, settings, budget_bytes - margin, dropout, device,
                                               host_limit, fixed)
        plan.reasons = _reasons(model_info, plan, fixed, target_why, space) + objective_reasons(plan.settings)
        if small_data:
            plan.reasons.append(f"The dataset has {rows} usable example{'s' if rows != 1 else ''}, so a step "
                                f"takes at most {effective_batch} (a bigger batch would repeat examples).")
        if model_info.vision_params:
            plan.reasons.append(vision_reason(model_info, plan.settings))
        return plan
    return _no_fit(model_info, budget_bytes, margin, fixed, target, effective_batch, dropout, space, device,
                   host_limit)


def vision_reason(info: ModelInfo, settings: Settings) -> str:
    """What an image run adds to the plan, and what it does not count yet (train.vision_lora's extras)."""
    words = (f"Rows with images: the vision tower and projector ({info.vision_params:,} parameters) load beside the "
             "language model, unquantised and frozen; each row's image tokens are in the lengths above.")
    if settings.vision_lora:
        words += (" train.vision_lora also adapts the tower: its adapter, gradients, optimizer state and the "
                  "activations the tower then keeps are not in this prediction yet; leave headroom (the "
                  "out-of-memory ladder steps down if they do not fit).")
    return words


def longest_context(info: ModelInfo, settings: Settings, limit: int, dropout: float, device: str,
                    host_limit: int | None = None, fixed: dict | None = None) -> int:
    """The longest sequence (a multiple of 64) these settings hold within ``limit``, with what saves memory and
    the user did not fix: gradient checkpointing, the tiled head, the tiled MLP and offloading on a GPU within
    ``host_limit``."""
    fixed = fixed or {}
    options = [settings]
    for key in context_parts(settings, fixed, device):
        options += [o.replace(**{ATTRIBUTE[key]: True}) for o in options]
    options = [o for o in options if _valid(o)]
    if "train.tiled_head" not in fixed:
        options = [o.replace(tiled_head=True) for o in options]

    def fits(seq: int) -> bool:
        for o in options:
            est = memory.estimate(info, o.replace(seq_len=seq), dropout=dropout, device=device)
            if est.device_total <= limit and (host_limit is None or est.host_offload <= host_limit):
                return True
        return False

    lo, hi = 0, 64
    while fits(hi) and hi < MAX_CONTEXT:
        lo, hi = hi, min(hi * 2, MAX_CONTEXT)
    if fits(hi):
        return hi
    while hi - lo > 64:  # lo fits (or is 0), hi does not
        mid = (lo + hi) // 2 // 64 * 64
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def _make_plan(info: ModelInfo, fits: bool, budget: int, margin: int, settings: Settings, est: memory.Estimate,
               target: int, dropout: float, device: str = "cuda") -> Plan:
    host = {"host_offload_bytes": est.host_offload} if est.host_offload else {}
    return Plan(fits=fits, budget_bytes=int(budget), margin_bytes=margin, settings=settings,
                predicted={**est.predicted(), "device_total_bytes": est.device_total, **host}, components=est.components,
                sources=est.sources, model=info.name, target_seq_len=target, dropout=dropout, device=device,
                linear_attention=kernels.linear_attention_words(device) if getattr(info, "linear_layers", 0) else "")


def _gib(x: float) -> str:
    return f"{x / GiB:.1f} GiB"


def _reasons(info: ModelInfo, plan: Plan, fixed: dict, target_why: str, space: dict) -> list[str]:
    s, out = plan.settings, []
    if plan.device == "cpu":
        out.append("Training runs on the CPU (no NVIDIA GPU found): the budget is this computer's memory, the base "
                   "weights are 4-bit QLoRA, and the micro-batch and length are kept small so each step takes "
                   "seconds; expect hours, not minutes, for real models.")
        out.append(f"Predicted peak {_gib(plan.predicted['device_total_bytes'])} of memory (RAM), within the budget of "
                   f"{_gib(plan.budget_bytes)} minus a {_gib(plan.margin_bytes)} safety margin.")
    else:
        out.append(f"Predicted peak {_gib(plan.predicted['device_total_bytes'])} on the device (nvidia-smi), "
                   f"within the budget of {_gib(plan.budget_bytes)} minus a {_gib(plan.margin_bytes)} safety margin.")
    if "train.seq_len" in fixed:
        out.append(f"Sequence length {s.seq_len} (fixed).")
    elif s.seq_len >= plan.target_seq_len:
        out.append(f"Sequence length {s.seq_len}: {target_why}.")
    else:
        out.append(f"Sequence length {s.seq_len} is shorter than the {plan.target_seq_len} wanted ({target_why}): "
                   "longer examples will be truncated; a bigger budget would cover them.")
    quant_why = {"none": "the budget allows 16-bit base weights, the most faithful choice",
                 "8bit": "16-bit base weights do not fit, 8-bit (LLM.int8) does",
                 "4bit": "4-bit NF4 (QLoRA), the CPU plan" if plan.device == "cpu"
                 else "the base weights are quantised to 4-bit NF4 (QLoRA) to fit"}
    for key, sentence in (("quant.mode", f"Base weights {s.quant_mode}: {quant_why[s.quant_mode]}."),
                          ("lora.rank", f"LoRA rank {s.rank} (alpha {s.alpha}) on {', '.join(s.targets)}: "
                                   + ("the highest rank tried that fits." if s.rank == max(space["lora.rank"])
                                      else "higher ranks do not fit with the settings above.")),
                          ("train.micro_batch", f"Micro-batch {s.micro_batch} x {s.grad_accum} accumulation steps "
                                          f"= effective batch {s.micro_batch * s.grad_accum}."),
                          ("train.grad_ckpt", "Gradient checkpointing on: activations are recomputed to save memory "
                                        "(about 30% slower)." if s.grad_ckpt
                           else "Gradient checkpointing off: activations fit, so training runs faster."),
                          ("train.optimizer", f"Optimizer {s.optimizer}" + (": 8-bit states to save memory." if "8bit" in
                                        s.optimizer else ".") )):
        if key == "lora.rank" and not methods.get(s.method).low_rank:
            continue  # prefix/prompt tuning: _method_reasons says what sizes them
        out.append(sentence + (" (fixed)" if key in fixed else ""))
    out.extend(_method_reasons(plan))
    out.extend(long_context_reasons(info, plan))
    if s.attn == "eager" and "train.attn" not in fixed and not getattr(info, "supports_sdpa", True):
        out.append(f"Attention eager: transformers has no sdpa path for {info.architecture} (its attention is "
                   "soft-capped), so the score matrix of each layer is kept.")
    if memory.fused_experts(info):
        if memory.experts_4bit(info, s.quant_mode):
            text = ("Mixture of experts in 4-bit: the experts are quantised to NF4 one expert at a time and stay "
                    "frozen; LoRA adapts the attention and the other linear layers")
        else:
            text = "Mixture-of-experts weights are fused tensors that stay in 16-bit outside 4-bit mode"
            if memory.experts_adapted(info, s.targets, s.quant_mode):
                text += (". LoRA all-linear adapts them (peft's ParamWrapper), which keeps a merged copy of each "
                         "layer's expert weights for backward and allows no LoRA dropout")
        out.append(text + ".")
    return out


def long_context_reasons(info: ModelInfo, plan: Plan) -> list[str]:
    """What the long-sequence parts and the kernels do in this plan, in words."""
    s, out = plan.settings, []
    kind = memory.head_kind(s)
    if kind == "tiled":
        out.append("Loss through a tiled output layer: the tokens x vocabulary logits are never built (the same "
                   "loss; each tile is projected again in backward).")
    elif kind == "trl":
        out.append("Loss: TRL's DPO trainer computes the log-probabilities through its own tiled output layer.")
    elif s.objective != "orpo":
        out.append("Loss from the full logits (train.tiled_head off): they take "
                   f"{_gib(plan.components.get('logits_and_loss', 0))} at the backward's start.")
    if memory.tiled_mlp(info, s):
        out.append(f"Tiled MLP: each layer's MLP runs {memory.MLP_TILE_TOKENS:,} tokens at a time and is recomputed "
                   "in backward, so its wide intermediate tensors never exist for the whole sequence (an extra MLP "
                   "forward per layer: a few percent slower).")
    if memory.offloaded(info, s, plan.device):
        out.append(f"Activation offloading: the layer inputs kept for backward ({_gib(plan.host_offload)}) live in "
                   "pinned host RAM, copied on a side stream while the GPU computes"
                   + ("." if plan.host_budget else "; this computer's RAM is not checked (planning for a GPU that "
                      "is not here): the machine that trains needs that much free."))
    if s.kernels == "liger":
        out.append("Kernels: liger-kernel's fused RMSNorm, RoPE and SwiGLU (installed, and the family is supported): "
                   "the norms keep their input in the compute dtype and the SwiGLU recomputes its activation.")
    if plan.linear_attention:
        per = memory.linear_attention_bytes(info, s, plan.device)
        out.append(f"Linear attention ({info.linear_layers} of {info.layers} layers, Gated DeltaNet): "
                   f"{plan.linear_attention}; each keeps {per / 1024:,.1f} KiB per token "
                   "for backward (counted in the activations).")
    return out


def _method_reasons(plan: Plan) -> list[str]:
    """The adapter method in one sentence, and which of its memory components are estimates."""
    s = plan.settings
    name = s.method
    out = [f"Method {methods.describe(name)}"]
    if methods.needs_no_grad_ckpt(name):
        out.append("peft's prefix tuning does not work with gradient checkpointing, so it stays off.")
    if not methods.get(name).low_rank:
        out.append(f"{methods.get(name).label} uses {s.virtual_tokens} virtual tokens "
                   f"({setting_flag('lora.virtual_tokens')}); lora.rank, alpha and targets play no part.")
    estimated = [k for k, v in plan.sources.items() if "(estimate" in v]
    if estimated:
        out.append(f"Estimated, not yet measured on a GPU: {', '.join(estimated)} (counted from peft's code and "
                   "checked on the CPU by bench/memory_components.py --methods).")
    return out


def objective_reasons(s: Settings) -> list[str]:
    """What the objective and packing do to memory, in a sentence each (which parts are estimates)."""
    reason = objectives.get(s.objective).reason
    out = [reason] if reason else []
    if s.packing:
        out.append("Packing: each micro-batch is one sequence without padding; with "
                   f"{s.attn} attention a block-diagonal mask over it is kept (an estimate).")
    return out


# --- when nothing fits ---------------------------------------------------------------------------------
def _minimal(info: ModelInfo, fixed: dict, seq_len: int, effective_batch: int, dropout: float,
             device: str = "cuda", host_limit: int | None = None) -> tuple[Settings, memory.Estimate]:
    """The leanest settings (honouring fixed ones) at ``seq_len``: the long-sequence parts on (offloading
    only within ``host_limit``)."""
    cpu = device == "cpu"
    base: dict[str, Any] = {"quant.mode": "4bit", "quant.double_quant": True, "lora.rank": 8, "lora.targets": ["all-linear"], "train.micro_batch": 1,
            "train.seq_len": seq_len, "train.grad_ckpt": True, "train.attn": "sdpa" if getattr(info, "supports_sdpa", True) else "eager",
            "train.optimizer": "adamw_8bit" if cpu else "paged_adamw_8bit", "quant.compute_dtype": "float32" if cpu else "bfloat16",
            "lora.method": "lora", "lora.virtual_tokens": 20, "train.tiled_head": True, "train.tiled_mlp": True,
            "train.offload_activations": not cpu, "train.kernels": kernels_for(info, device)}
    for k, v in fixed.items():
        if k in base:
            base[k] = _norm_targets(v) if k == "lora.targets" else v
    if methods.needs_no_grad_ckpt(base["lora.method"]) and "train.grad_ckpt" not in fixed:
        base["train.grad_ckpt"] = False
    base["train.seq_len"] = seq_len
    s = _complete(base, fixed, effective_batch)
    if not _valid(s):
        s = s.replace(tiled_mlp=False, offload=False)
    est = memory.estimate(info, s, dropout=dropout, device=device)
    if host_limit is not None and est.host_offload > host_limit and "train.offload_activations" not in fixed:
        s = s.replace(offload=False)
        est = memory.estimate(info, s, dropout=dropout, device=device)
    return s, est


def _no_fit(info: ModelInfo, budget: int, margin: int, fixed: dict, target: int, effective_batch: int,
            dropout: float, space: dict, device: str = "cuda", host_limit: int | None = None) -> Plan:
    s, est = _minimal(info, fixed, target, effective_batch, dropout, device, host_limit)
    plan = _make_plan(info, False, budget, margin, s, est, target, dropout, device)
    plan.host_budget = host_limit
    limit = budget - margin
    where = "of memory (RAM; training runs on the CPU)" if device == "cpu" else "on the device"
    plan.reasons = [f"Nothing fits: even the leanest settings need {_gib(est.device_total)} {where}, "
                    f"more than the budget of {_gib(budget)} minus the {_gib(margin)} margin."]
    if host_limit is not None and not s.offload and device == "cuda" and s.grad_ckpt:
        unbound = _minimal(info, fixed, target, effective_batch, dropout, device)[1]
        if unbound.device_total <= limit:
            plan.reasons.append(f"With activation offloading the GPU would hold it, but offloading needs "
                                f"{_gib(unbound.host_offload)} of host RAM and this computer can spare "
                                f"{_gib(host_limit)}: more RAM, or a shorter length.")
    change = _suggest(info, fixed, target, effective_batch, dropout, limit, est, device, host_limit)
    plan.suggestion_change = change
    plan.suggestion = _describe(change, info, device)
    plan.reasons.append(plan.suggestion)
    return plan


def _suggest(info: ModelInfo, fixed: dict, target: int, effective_batch: int, dropout: float, limit: int,
             lean: memory.Estimate, device: str = "cuda", host_limit: int | None = None) -> Suggestion:
    """The smallest single change that fits: unfix settings, a shorter length, a budget, a smaller model."""
    user_fixed = {k: v for k, v in fixed.items() if k not in ("train.seq_len",)}
    if user_fixed:
        _, est = _minimal(info, {}, int(fixed.get("train.seq_len", target)), effective_batch, dropout, device,
                          host_limit)
        if est.device_total <= limit:
            return Suggestion(unfix=tuple(sorted(user_fixed)))
    seq = _longest_fitting(info, fixed, target, effective_batch, dropout, limit, device, host_limit)
    if seq is not None and seq >= min(target, 256):
        return Suggestion(seq_len=seq)
    budget = _budget_for(lean.device_total)
    smaller = _smaller_model(info, budget_limit=limit, fixed=fixed, target=target, eb=effective_batch, dropout=dropout,
                             device=device)
    return Suggestion(budget_bytes=budget, model=smaller)


def _longest_fitting(info: ModelInfo, fixed: dict, target: int, eb: int, dropout: float, limit: int,
                     device: str = "cuda", host_limit: int | None = None) -> int | None:
    """The longest length (a multiple of 64, at least MIN_SEQ_LEN) whose leanest plan fits, by bisection."""
    lengths = list(range(MIN_SEQ_LEN, target + 1, 64))

    def fits(seq: int) -> bool:
        return _minimal(info, fixed, seq, eb, dropout, device, host_limit)[1].device_total <= limit

    if not lengths or not fits(lengths[0]):
        return None
    lo, hi = 0, len(lengths) - 1  # invariant: lengths[lo] fits
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(lengths[mid]) else (lo, mid - 1)
    return lengths[lo]


def _budget_for(device_total: int) -> int:
    """The budget (whole GiB) whose limit after the margin holds ``device_total``."""
    gib = math.ceil(device_total / GiB)
    while gib * GiB - margin_bytes(gib * GiB) < device_total:
        gib += 1
    return gib * GiB


def _smaller_model(info: ModelInfo, budget_limit: int, fixed: dict, target: int, eb: int, dropout: float,
                   device: str = "cuda") -> str | None:
    """The biggest catalog model smaller than this one whose leanest plan fits."""
    best = None
    for entry in sorted(catalog(), key=lambda e: e.total_params, reverse=True):
        if entry.total_params >= info.total_params:
            continue
        cand = from_catalog(entry)
        if _minimal(cand, fixed, min(target, cand.context), eb, dropout, device)[1].device_total <= budget_limit:
            best = entry.id
            break
    return best


def _describe(change: Suggestion, info: ModelInfo, device: str = "cuda") -> str:
    if change.unfix:
        flags = ", ".join(setting_flag(k) for k in change.unfix)
        return f"It fits if the planner may choose {', '.join(change.unfix)} itself (drop {flags})."
    if change.seq_len is not None:
        return (f"It fits with a shorter sequence length: {setting_flag('train.seq_len')} {change.seq_len} "
                "(longer examples are truncated).")
    budget = int(change.budget_bytes or 0)
    if device == "cpu":
        text = f"It needs at least {budget / GiB:.0f} GiB of memory for training on the CPU"
    else:
        text = f"It needs a GPU budget of at least {budget / GiB:.0f} GiB (--vram-gb {budget // GiB})"
    if change.model:
        text += f", or a smaller model such as {change.model}"
    return text + "."


# --- several GPUs ---------------------------------------------------------------------------------------
def fit_gpus(model_info: ModelInfo, budgets: list[int], dataset_report: Any = None, fixed: dict | None = None,
             effective_batch: int = 16, device: str = "cuda", host_limit: int | None = None) -> Plan:
    """One GPU, DDP or FSDP over the GPUs whose budgets are given, with per-GPU memory and why.

    DDP when the model fits each card (a full copy per GPU: N times the examples per second);
    FSDP with a 4-bit (or 16-bit) base when it fits no single card but does sharded; otherwise the
    single-GPU plan (which then says it does not fit). ``predicted`` is per GPU; ``effective_batch``
    is per optimizer step over all GPUs, so each GPU's share is ``effective_batch / N``.
    """
    n = len(budgets)
    budget = min(budgets) if budgets else 0
    if n <= 1:
        return fit(model_info, budget, dataset_report, fixed, effective_batch, device, host_limit)
    share = max(1, round(effective_batch / n))
    one = fit(model_info, budget, dataset_report, fixed, share, device)
    margin = margin_bytes(budget)
    fixed = {k: v for k, v in (fixed or {}).items() if v is not None and k in PLANNED}
    dropout = float(fixed.pop("lora.dropout", 0.05))
    target = one.target_seq_len or DEFAULT_SEQ_LEN
    space = _space(fixed, target, share, model_info, device)
    # FSDP shards neither int8 weights nor 8-bit states; nor an MoE's 4-bit experts (stored as bytes, the rest of a
    # sharded 4-bit base as the compute dtype: the worker refuses the mix), so an MoE is sharded with a 16-bit base
    shardable = ("none",) if model_info.num_experts else ("none", "4bit")
    sharded = dict(space, **{"quant.mode": [q for q in space["quant.mode"] if q in shardable] or [shardable[-1]],
                             "train.optimizer": ["adamw_torch"]})
    fsdp_found = _best_for("fsdp", model_info, sharded, budget - margin, target, fixed, share, dropout, n, device)
    if one.fits:
        ddp_found = _best_for("ddp", model_info, space, budget - margin, target, fixed, share, dropout, n, device)
        if ddp_found is not None and fsdp_found is not None and fsdp_found[0].seq_len > ddp_found[0].seq_len:
            fsdp_settings, fsdp = fsdp_found  # longer examples than DDP fits
            plan = _make_plan(model_info, True, budget, margin, fsdp_settings, fsdp, target, dropout, device)
            return _as_multi(model_info, plan, "fsdp", n, fsdp, [
                f"A full copy per GPU (DDP) fits only {ddp_found[0].seq_len} tokens per example; sharding the "
                f"weights and optimizer state over {n} GPUs (FSDP) fits {fsdp_settings.seq_len}: "
                f"{_gib(fsdp.device_total)} per GPU. FSDP is slower per step than DDP (it gathers each layer).",
                FSDP_NOT_RUN])
        if ddp_found is not None:
            settings, ddp = ddp_found
            plan = _make_plan(model_info, True, budget, margin, settings, ddp, target, dropout, device)
            plan.reasons = one.reasons
            return _as_multi(model_info, plan, "ddp", n, ddp, [
                f"The model fits each {_gib(budget)} GPU, so each of the {n} GPUs trains a full copy on its own "
                f"micro-batches (DDP): about {n}x the examples per second. DDP adds "
                f"{_gib(ddp.components['ddp_grad_buckets'])} of gradient buckets per GPU; FSDP would need less "
                "memory per GPU but gathers every layer's weights each step, so it is slower."])
        if fsdp_found is None:
            return _as_multi(model_info, one, "single", 1, None, [
                "The model fits one GPU but not with DDP's gradient buckets on top: train on one GPU."])
    if fsdp_found is None:
        one.reasons.append(f"Even sharded over {n} GPUs with FSDP and a 4-bit base it does not fit "
                           f"{_gib(budget)} per GPU: a smaller model, or more GPUs.")
        one.nproc = n
        return one
    settings, est = fsdp_found
    plan = _make_plan(model_info, True, budget, margin, settings, est, target, dropout, device)
    words = "4-bit" if settings.quant_mode == "4bit" else "16-bit"
    return _as_multi(model_info, plan, "fsdp", n, est, [
        f"The model fits no single {_gib(budget)} GPU (it needs at least "
        f"{_gib(_minimal_total(one))} there), so FSDP shards its {words} base weights, the adapter and the optimizer "
        f"state over {n} GPUs: {_gib(est.device_total)} per GPU (each GPU gathers the layer it computes).",
        FSDP_NOT_RUN])


# Said with every FSDP plan until a run on GPUs has shown it: the FSDP path is built (torch's fully_shard through
# the Trainer) and its test needs two NVIDIA GPUs, which this project has not yet had.
FSDP_NOT_RUN = ("FSDP is built but has not yet run on GPUs in this project's tests (they need two); DDP and one GPU "
                "have. Prefer them where they fit.")


def _minimal_total(plan: Plan) -> int:
    return int(plan.predicted.get("device_total_bytes", 0))


def _best_for(strategy: str, info: ModelInfo, space: dict, limit: int, target: int, fixed: dict, effective_batch: int,
              dropout: float, n: int, device: str) -> tuple[Settings, memory.Estimate] | None:
    """The best-scoring candidate whose per-GPU total under ``strategy`` is within ``limit``; None: none is."""
    keys = list(space)
    candidates = [dict(zip(keys, vals)) for vals in itertools.product(*space.values())]
    candidates.sort(key=lambda c: _score(Settings.from_dict(c), target), reverse=True)
    for cand in candidates:
        s = _complete(cand, fixed, effective_batch)
        est = memory.per_gpu(info, s, strategy, n, dropout, device)
        if est.device_total <= limit:
            return s, est
    return None


def _as_multi(info: ModelInfo, plan: Plan, strategy: str, n: int, est: memory.Estimate | None, why: list[str]) -> Plan:
    """``plan`` turned into the plan of ``n`` GPUs under ``strategy`` (per-GPU figures and components)."""
    plan.strategy, plan.nproc = strategy, n
    if est is not None:
        plan.predicted = {**est.predicted(), "device_total_bytes": est.device_total}
        plan.components, plan.sources = est.components, est.sources
        plan.per_gpu = {name: memory.per_gpu(info, plan.settings, name, n, plan.dropout, plan.device).device_total
                        for name in memory.MULTI_STRATEGIES}
    plan.reasons = why + plan.reasons
    return plan
