"""What the Plan page shows of a plan, as texts and rows: the one place the window reads ``Plan`` fields.

The page and its widgets draw a ``PlanView``; they never look into ``Plan`` themselves, so a change
to the planner's fields (a typed suggestion, a budget rule of its own) is met here and nowhere else.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from studio import kernels, memory, methods, speed
from studio.planner import MAX_CONTEXT, Plan, Suggestion, context_parts
from studio.recipe import Recipe
from studio.units import binary_bytes

# (label, the recipe field it belongs to): the rows of the fitted-settings card, in order
FITTED_ROWS = (("Method", "lora.method"), ("Quantisation", "quant.mode"), ("LoRA rank / alpha", "lora.rank"),
               ("Sequence length", "train.seq_len"), ("Micro-batch × accumulation", "train.micro_batch"),
               ("Gradient checkpointing", "train.grad_ckpt"), ("Optimizer", "train.optimizer"),
               ("Learning rate", "train.lr"))
CACHE_PART = ("allocator cache + CUDA context",
              "what nvidia-smi shows beyond the tensors: caching allocator, CUDA context, kernels")


@dataclass(frozen=True)
class PlanView:
    """A plan as the page draws it: the bar's parts, the verdict, speed, the suggestion and the reasons."""

    parts: list[tuple[str, float, str]]
    budget: int
    fits: bool
    verdict: str                 # rich text
    footer: str
    speed: str
    reasons: str                 # rich text (a list), empty without reasons
    change: Suggestion | None = None   # what "apply the suggestion" does; None: nothing
    change_label: str = ""
    longest: str = ""                  # the longest context line; empty when the plan has no figure
    context: tuple[tuple[str, str], ...] = ()  # (part, in words): the loss head, tiled MLP, offloading, kernels

    @property
    def total(self) -> float:
        return sum(b for _, b, _ in self.parts)


def plan_view(plan: Plan, budget: int, probe_failed: bool = False, fixed: dict[str, Any] | None = None) -> PlanView:
    """Everything the page shows of ``plan`` against ``budget``; ``fixed``: the settings the user pinned."""
    parts = memory_parts(plan)
    total = sum(b for _, b, _ in parts)
    fits = bool(plan.fits)
    verdict = (f"<b style='color:#1A7F37'>Fits:</b> about {binary_bytes(total)} of {binary_bytes(budget)}."
               if fits else f"<b style='color:#CF222E'>Does not fit:</b> about {binary_bytes(total)} needed, "
               f"budget {binary_bytes(budget)}.")
    if plan.suggestion and not fits:
        verdict += f" {plan.suggestion}"
    change = plan.suggestion_change if not fits else None
    reasons = ("<ul style='margin-left:-20px'>" + "".join(f"<li>{r}</li>" for r in plan.reasons) + "</ul>"
               if plan.reasons else "")
    return PlanView(parts=parts, budget=budget, fits=fits, verdict=verdict,
                    footer=f"Fits in {binary_bytes(budget)}" if fits else "Does not fit the budget",
                    speed=speed_text(plan, probe_failed), reasons=reasons, change=change,
                    change_label=change_label(change), longest=longest_text(plan, fixed or {}),
                    context=context_rows(plan))


CONTEXT_PART_WORDS = {"train.grad_ckpt": "gradient checkpointing", "train.tiled_mlp": "the tiled MLP",
                      "train.offload_activations": "activation offloading"}


def longest_text(plan: Plan, fixed: dict[str, Any]) -> str:
    """The longest context the device holds with the plan's settings, and which parts that figure turns on."""
    n = plan.longest_seq_len
    if n is None:
        return ""
    where = "in this memory budget" if plan.device == "cpu" else "on this card"
    figure = f"at least {n:,}" if n >= MAX_CONTEXT else f"{n:,}"
    extra = [CONTEXT_PART_WORDS[key] for key in context_parts(plan.settings, fixed, plan.device)]
    text = f"Longest context {where} with these settings: {figure} tokens"
    if extra:  # planner.longest_context counts them: say so, or the figure reads as this plan's
        listed = ", ".join(extra[:-1]) + " and " + extra[-1] if len(extra) > 1 else extra[0]
        text += f" (with {listed} turned on where a length needs {'them' if len(extra) > 1 else 'it'})"
    return text + "."


def context_rows(plan: Plan) -> tuple[tuple[str, str], ...]:
    """The long-sequence parts and the kernels of ``plan``, each in words: what runs and what it costs."""
    s = plan.settings
    head = memory.head_kind(s)
    if head == "tiled":
        head_text = "on: the loss goes through the output layer a tile at a time, never the whole logits"
    elif head == "trl":
        head_text = "TRL's own: its DPO trainer computes the log-probabilities a tile at a time"
    else:
        logits = plan.components.get("logits_and_loss")
        head_text = ("off: " + ("ORPO's loss needs" if s.objective == "orpo" else "the loss comes from")
                     + " the full tokens × vocabulary logits" + (f" ({binary_bytes(logits)})" if logits else ""))
    mlp = (f"on: each layer's MLP runs {memory.MLP_TILE_TOKENS:,} tokens at a time, recomputed in backward "
           "(a few percent slower)" if s.tiled_mlp else "off")
    rows: tuple[tuple[str, str], ...] = (("Tiled loss head", head_text), ("Tiled MLP", mlp), ("Activation offloading", offload_text(plan)),
            ("Kernels", kernels_text(s.kernels, plan.device)))
    if plan.linear_attention:  # Qwen3.5: which code runs its linear-attention layers
        rows += (("Linear attention", plan.linear_attention),)
    return rows


def offload_text(plan: Plan) -> str:
    """Offloading on or off; on, the host RAM it takes against what this computer can spare (when known)."""
    if not plan.host_offload:
        return "off" + (" (GPU only)" if plan.device == "cpu" else "")
    text = f"on: the saved layer inputs take {binary_bytes(plan.host_offload)} of host RAM"
    if plan.host_budget:
        return text + f", of the {binary_bytes(plan.host_budget)} this computer can spare"
    return text + "; this computer's RAM is not checked, so the machine that trains needs that much free"


def kernels_text(kind: str, device: str) -> str:
    """The layer kernels a run gets (train.kernels as the planner resolved it), and why not liger's."""
    if kind == "liger":
        return "liger-kernel's fused RMSNorm, RoPE and SwiGLU"
    if kind == "auto":
        return "liger-kernel's fused RMSNorm, RoPE and SwiGLU where they can run, else torch's"
    if device != "cuda":
        return "torch's kernels (liger-kernel runs on NVIDIA GPUs only)"
    if not kernels.liger_installed():
        return "torch's kernels (liger-kernel, which fuses RMSNorm, RoPE and SwiGLU, is not installed)"
    return "torch's kernels"


def memory_parts(plan: Plan) -> list[tuple[str, float, str]]:
    """(name, bytes, where the figure comes from) per component, plus what the device holds beyond them."""
    parts = [(name, float(size), plan.sources.get(name, "")) for name, size in plan.components.items()]
    device_total = float(plan.predicted["device_total_bytes"])
    tensors = sum(b for _, b, _ in parts)
    if device_total > tensors:
        parts.append((CACHE_PART[0], device_total - tensors, CACHE_PART[1]))
    return parts


def speed_text(plan: Plan, probe_failed: bool = False) -> str:
    """The expected speed; on the CPU without a figure yet, that it is being (or could not be) measured."""
    est = plan.estimate
    if est is None:
        if plan.device != "cpu":
            return ""
        if probe_failed:
            return "Speed unknown: measuring this CPU failed (python -m studio.train.cpu_probe shows why)."
        return "Speed: measuring this CPU (a few seconds, once)…"
    text = f"Expected speed: about {est.tokens_per_s:,.0f} tokens/s, {est.step_seconds:.1f} s per step"
    if est.seconds is not None:
        text += f"; the run about {speed.duration(est.seconds)} ({est.steps} steps)"
    if getattr(est, "assumed", False):  # (a plan read from an older file has no such field)
        text += (". An assumption, not a measurement: one quoted GPU figure scaled by this GPU's peak, until a run "
                 "here calibrates it")
    return text + "."


def change_label(change: Suggestion | None) -> str:
    """The button text for the planner's smallest change that fits; empty when there is none."""
    if change is None:
        return ""
    if change.seq_len is not None:
        return f"Use sequence length {change.seq_len}"
    if change.unfix:
        return "Release the fixed settings"
    if change.budget_bytes is not None:
        return f"Set the budget to {binary_bytes(change.budget_bytes)}"
    return ""


def longest_context(plan: Plan | None) -> tuple[int | None, str]:
    """For the Data page: the longest context the plan's settings hold, and where ("this card")."""
    if plan is None:
        return None, ""
    return plan.longest_seq_len, "this memory budget" if plan.device == "cpu" else "this card"


def several_gpus_note(plan: Plan | None, picked: int) -> str:
    """Under the GPU picker when several are picked: the strategy the planner chose and its first reason."""
    if picked < 2 or plan is None:
        return ""
    return f"{picked} GPUs: {plan.strategy.upper()}. " + (plan.reasons[0] if plan.reasons else "")


def fitted_rows(recipe: Recipe, fixed: dict[str, Any]) -> dict[str, str]:
    """The fitted-settings card's values, by recipe field; a pinned field says "(fixed)"."""
    t, lo, q = recipe.train, recipe.lora, recipe.quant
    m = methods.get(lo.method)
    quant = f" ({q.quant_type}{', double quant' if q.double_quant else ''})" if q.mode == "4bit" else ""
    values = {"lora.method": m.label + ("" if m.low_rank else f" ({lo.virtual_tokens} virtual tokens)"),
              "quant.mode": f"{q.mode}{quant}",
              "lora.rank": f"{lo.rank} / {lo.alpha}  on {', '.join(lo.targets)}",
              "train.seq_len": f"{t.seq_len} tokens",
              "train.micro_batch": f"{t.micro_batch} × {t.grad_accum} = {t.micro_batch * t.grad_accum} examples per step",
              "train.grad_ckpt": "on" if t.grad_ckpt else "off", "train.optimizer": t.optimizer,
              "train.lr": f"{t.lr:g} ({t.scheduler}, warm-up {t.warmup_ratio:g})"}
    return {key: text + ("  (fixed)" if key in fixed else "") for key, text in values.items()}


def gpus_text(gpus: Sequence[Any], reason: str, budget: int) -> str:
    """The line under the budget slider: the first GPU, or why training runs on the CPU."""
    if gpus:
        g = gpus[0]
        return f"{g.name}: {binary_bytes(g.total_bytes)} total, {binary_bytes(g.free_bytes)} free."
    return (f"No NVIDIA GPU detected ({reason}): training runs on the CPU, so the budget is this computer's memory "
            f"({binary_bytes(budget)} after what the system and the studio need) and the plan uses 4-bit QLoRA "
            "with short steps.")


def no_picker_reason(gpus: Sequence[Any], windows: bool) -> str:
    """Why there is no GPU picker (fewer than two GPUs, or Windows without NCCL); empty when there is one."""
    if len(gpus) >= 2 and not windows:
        return ""
    if len(gpus) >= 2:
        return ("Training on several GPUs needs NCCL, which PyTorch does not ship for Windows: this run uses one "
                "GPU (Linux, WSL2 or 'lora-studio cluster export' can use several).")
    return ("Several GPUs: this machine has " + ("one GPU" if gpus else "none") + ", so the run uses "
            + ("it" if gpus else "the CPU") + "; 'lora-studio cluster export' runs the same recipe on a cluster.")
