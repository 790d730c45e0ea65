"""What an adapter method is: its facts, and the hooks that carry everything that differs per method.

A method's module (studio/methods/<name>.py) fills one ``Method``; ``register`` refuses one that
lacks a hook, so a new method cannot silently fall back to LoRA's memory terms. The hooks:

- ``effective``: the settings as the LoRA arithmetic of studio.memory sees this method,
- ``extra_tensors``: trainable tensors beyond LoRA's A and B (values, how many),
- ``words``: the adapter in a few words, for the memory sources,
- ``trainable_terms``: memory per adapter parameter beyond weights, gradients and optimizer state,
- ``activations`` / ``transients``: what the method keeps for backward / builds for a moment,
- ``peft_config``: the peft config of a recipe (peft is imported only when it is called).

Torch-free at import time (tests/test_layers.py): studio.memory and the Plan page read the terms.
"""
from __future__ import annotations

from dataclasses import KW_ONLY, dataclass, fields
from typing import Any, Callable

from studio.adapted import ModelShape
from studio.settings import Settings

Terms = tuple[dict[str, int], dict[str, str]]  # (component -> bytes, component -> its one-line source)
HOOKS = ("effective", "extra_tensors", "words", "trainable_terms", "activations", "transients", "peft_config")


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
    no_grad_ckpt: bool = False  # peft refuses it on a model with gradient checkpointing
    input_needs_grad: bool = False  # learned input embeddings: the first layer keeps its input for backward
    kv_from_text: bool = False  # learned keys/values start as a real text's (peft_methods.init_prefix_from_text)
    refused: tuple[tuple[str, str, str, str], ...] = ()  # (quant.mode, device, what, fix) peft cannot train
    # The hooks: required and keyword-only, so a method that leaves one out fails where it is written.
    _: KW_ONLY
    effective: Callable[[Settings], Settings]
    extra_tensors: Callable[[ModelShape, Settings], list[tuple[int, int]]]
    words: Callable[[Settings], str]
    trainable_terms: Callable[[int], Terms]
    activations: Callable[[ModelShape, Settings, str, bool], Terms]
    transients: Callable[[ModelShape, Settings], Terms]
    peft_config: Callable[[Any, int, Any, Any], Any]


def register(table: dict[str, Method], method: Method) -> Method:
    """Add ``method`` to ``table``; refused when a hook is missing (None or not callable: the type says
    required, a dynamic caller can still pass None) or the name is taken."""
    missing = [h for h in HOOKS if not callable(getattr(method, h))]
    if missing:
        raise TypeError(f"adapter method {method.name!r} lacks {', '.join(missing)}: every method says each of "
                        f"them (studio/methods/base.py)")
    if method.name in table:
        raise ValueError(f"adapter method {method.name!r} is registered twice")
    table[method.name] = method
    return method


def facts(method: Method) -> dict[str, Any]:
    """The method's facts without its hooks (for listings)."""
    return {f.name: getattr(method, f.name) for f in fields(method) if f.name not in HOOKS}


# --- the hooks most methods share ---------------------------------------------------------------------
def same(s: Settings) -> Settings:
    return s


def no_tensors(info: ModelShape, s: Settings) -> list[tuple[int, int]]:
    return []


def no_trainable_terms(n: int) -> Terms:
    return {}, {}


def no_activations(info: ModelShape, s: Settings, device: str, peak: bool) -> Terms:
    return {}, {}


def no_transients(info: ModelShape, s: Settings) -> Terms:
    return {}, {}


def virtual(s: Settings) -> int:
    """Prefix and prompt tuning's learned virtual tokens."""
    return int(s.virtual_tokens or 20)


def lora_kwargs(recipe: Any, targets: Any) -> dict[str, Any]:
    """What every low-rank peft config takes from the recipe (``targets``: the modules to adapt)."""
    lo = recipe.lora
    return dict(lora_alpha=lo.alpha, lora_dropout=lo.dropout, target_modules=targets, task_type="CAUSAL_LM")
