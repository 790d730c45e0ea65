"""The adapter methods a recipe can train (``lora.method``): one table that the recipe's validation,
the memory model, the planner, the Plan page, the CLI, training and export all read.

Each method has one home, studio/methods/<module>.py, holding its facts and everything that differs
per method (studio.methods.base.Method: effective settings, adapter tensors, memory terms, peft
config); ``METHODS`` registers them, refusing one that lacks a hook. Torch-free at import: peft is
imported only when a peft config is built (studio.train.peft_methods). Facts about peft 0.21 on a
quantised base (checked on the CPU with bitsandbytes 0.50 by tests/test_methods.py): every method
trains on a 4-bit NF4 base; DoRA on an 8-bit (LLM.int8) base fails inside peft on the CPU
(bitsandbytes keeps no int8 weight there to dequantise for the magnitude's norm), so the studio
refuses that one combination on the CPU.
"""
from __future__ import annotations

from studio.methods.adalora import ADALORA, adalora_init_rank
from studio.methods.base import Method, register
from studio.methods.dora import DORA
from studio.methods.lora import LORA, RSLORA
from studio.methods.prompting import PREFIX, PROMPT

__all__ = ["DEFAULT", "METHODS", "NAMES", "Method", "adalora_init_rank", "describe", "from_adapter_config", "get",
           "needs_no_grad_ckpt", "recipe_problems", "refusal", "register"]

METHODS: dict[str, Method] = {}
for _method in (LORA, RSLORA, DORA, ADALORA, PREFIX, PROMPT):
    register(METHODS, _method)
NAMES = tuple(METHODS)
DEFAULT = "lora"


def get(name: str) -> Method:
    return METHODS.get(name) or METHODS[DEFAULT]


def describe(name: str) -> str:
    """``DoRA: LoRA split into ...``: the label and the one sentence."""
    m = get(name)
    return f"{m.label}: {m.when}"


def from_adapter_config(cfg: dict) -> str:
    """The method an adapter folder was trained with, from its adapter_config.json."""
    kind = str(cfg.get("peft_type", "LORA")).upper()
    if kind == "LORA":
        return "dora" if cfg.get("use_dora") else "rslora" if cfg.get("use_rslora") else "lora"
    named = {m.peft_type: m.name for m in METHODS.values() if m.peft_type != "LORA"}
    return named.get(kind, kind.lower())


def needs_no_grad_ckpt(method: str) -> bool:
    """peft refuses prefix tuning on a model with gradient checkpointing."""
    return get(method).no_grad_ckpt


def refusal(method: str, quant_mode: str, device: str) -> tuple[str, str] | None:
    """(what, fix) when peft cannot train ``method`` on this base and device, else None."""
    m = METHODS.get(method)
    for quant, dev, what, fix in (m.refused if m else ()):
        if quant == quant_mode and dev == device:
            return what, fix
    return None


def recipe_problems(method: str, quant_mode: str, targets: object, grad_ckpt: object = False) -> list[tuple[str, str, str]]:
    """(field, message, hint) for combinations no device can train (checked by Recipe.validate)."""
    out: list[tuple[str, str, str]] = []
    m = METHODS.get(method)
    if m is None:
        return out  # the choices check names it
    if m.no_grad_ckpt and grad_ckpt is True:  # peft's get_peft_model raises for this combination
        out.append(("train.grad_ckpt", "peft's prefix tuning does not work with gradient checkpointing",
                    "set train.grad_ckpt to false (prefix tuning then keeps every layer's activations), "
                    "or choose --peft prompt"))
    if not m.low_rank and isinstance(targets, list) and targets and targets != ["all-linear"]:
        out.append(("lora.targets", f"{m.label} adapts no linear layer, so targets {', '.join(map(str, targets))} "
                                    "would be ignored",
                    "leave lora.targets at ['all-linear'], or choose a low-rank method (--peft lora)"))
    return out
