"""The adapter methods a recipe can train (``lora.method``): one registry that the recipe's
validation, the planner, the Plan page, the CLI and export all read.

Torch-free. What each method costs in memory lives in ``studio.memory``; how it is built with peft
lives in ``studio.train.peft_methods``. Facts about peft 0.21 on a quantised base (checked on the
CPU with bitsandbytes 0.50 by tests/test_methods.py): every method trains on a 4-bit NF4 base; DoRA
on an 8-bit (LLM.int8) base fails inside peft on the CPU (bitsandbytes keeps no int8 weight there to
dequantise for the magnitude's norm), so the studio refuses that one combination on the CPU.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    name: str
    label: str
    when: str  # one plain sentence: when to use it and what it costs (Plan page, `lora-studio plan`)
    peft_type: str  # adapter_config.json's peft_type
    low_rank: bool = True  # trains low-rank updates of linear layers (uses lora.rank/alpha/targets)
    mergeable: bool = True  # the update can be folded into the base weights (merged model, GGUF, Ollama)
    gguf_adapter: bool = True  # llama.cpp can load it as a LoRA adapter GGUF (scale * B @ A per weight)
    why_not_merged: str = ""
    why_no_gguf_adapter: str = ""


_NO_MERGE_PROMPT = ("{label} changes no weight: it feeds learned vectors into the model on every request, so there "
                    "is nothing to fold into the base weights and no llama.cpp/Ollama format that carries it")

METHODS: dict[str, Method] = {m.name: m for m in (
    Method("lora", "LoRA", "The default: a small low-rank update of each linear layer; memory grows with the rank, "
           "and the result can be merged or exported to GGUF.", "LORA"),
    Method("rslora", "rsLoRA", "LoRA with rank-stabilised scaling (alpha / sqrt(rank)): use it for high ranks "
           "(32 and up), where it learns better at no extra memory or time.", "LORA"),
    Method("dora", "DoRA", "LoRA split into a direction and a learned magnitude per output: often closer to full "
           "fine-tuning at low ranks, for about 10-30% more activation memory and a slower step.", "LORA",
           gguf_adapter=False,
           why_no_gguf_adapter="a DoRA update rescales each output by a learned magnitude, which llama.cpp's LoRA "
                               "adapter format (scale * B @ A) cannot express"),
    Method("adalora", "AdaLoRA", "LoRA that moves its rank budget to the layers that matter most during training: "
           "use it when one rank for every layer seems wasteful; it starts at 1.5x the rank, so a little more "
           "memory.", "ADALORA"),
    Method("prefix", "Prefix tuning", "Learned key/value vectors in front of every layer, no weight changed: tiny "
           "adapters and fast task switching, for a small memory cost per layer; usually weaker than LoRA.",
           "PREFIX_TUNING", low_rank=False, mergeable=False, gguf_adapter=False,
           why_not_merged=_NO_MERGE_PROMPT.format(label="Prefix tuning"),
           why_no_gguf_adapter=_NO_MERGE_PROMPT.format(label="Prefix tuning")),
    Method("prompt", "Prompt tuning", "Learned virtual tokens in front of the prompt, no weight changed: the smallest "
           "adapters, a longer sequence to pay for; works best on large models and simple tasks.",
           "PROMPT_TUNING", low_rank=False, mergeable=False, gguf_adapter=False,
           why_not_merged=_NO_MERGE_PROMPT.format(label="Prompt tuning"),
           why_no_gguf_adapter=_NO_MERGE_PROMPT.format(label="Prompt tuning")),
)}
NAMES = tuple(METHODS)
DEFAULT = "lora"
# AdaLoRA starts every layer at this multiple of lora.rank and prunes the budget down to lora.rank on average.
ADALORA_INIT_FACTOR = 1.5


def get(name: str) -> Method:
    return METHODS.get(name) or METHODS[DEFAULT]


def adalora_init_rank(rank: int) -> int:
    return max(rank + 1, int(round(rank * ADALORA_INIT_FACTOR)))


def describe(name: str) -> str:
    """``DoRA: LoRA split into ...``: the label and the one sentence."""
    m = get(name)
    return f"{m.label}: {m.when}"


def from_adapter_config(cfg: dict) -> str:
    """The method an adapter folder was trained with, from its adapter_config.json."""
    kind = str(cfg.get("peft_type", "LORA")).upper()
    if kind == "LORA":
        return "dora" if cfg.get("use_dora") else "rslora" if cfg.get("use_rslora") else "lora"
    return {"ADALORA": "adalora", "PREFIX_TUNING": "prefix", "PROMPT_TUNING": "prompt"}.get(kind, kind.lower())


def needs_no_grad_ckpt(method: str) -> bool:
    """peft refuses prefix tuning on a model with gradient checkpointing."""
    return method == "prefix"


def refusal(method: str, quant_mode: str, device: str) -> tuple[str, str] | None:
    """(what, fix) when peft cannot train ``method`` on this base and device, else None."""
    if method == "dora" and quant_mode == "8bit" and device == "cpu":
        return ("DoRA on an 8-bit (LLM.int8) base fails inside peft on the CPU: bitsandbytes keeps no int8 weight "
                "there for DoRA's weight norm",
                "use quant.mode 4bit (QLoRA, --quant 4bit) or none with DoRA, or another method (--peft lora)")
    return None


def recipe_problems(method: str, quant_mode: str, targets: object, grad_ckpt: object = False) -> list[tuple[str, str, str]]:
    """(field, message, hint) for combinations no device can train (checked by Recipe.validate)."""
    out = []
    m = METHODS.get(method)
    if m is None:
        return out  # the choices check names it
    if method == "prefix" and grad_ckpt is True:  # peft's get_peft_model raises for this combination
        out.append(("train.grad_ckpt", "peft's prefix tuning does not work with gradient checkpointing",
                    "set train.grad_ckpt to false (prefix tuning then keeps every layer's activations), "
                    "or choose --peft prompt"))
    if not m.low_rank and isinstance(targets, list) and targets and targets != ["all-linear"]:
        out.append(("lora.targets", f"{m.label} adapts no linear layer, so targets {', '.join(map(str, targets))} "
                                    "would be ignored",
                    "leave lora.targets at ['all-linear'], or choose a low-rank method (--peft lora)"))
    return out
