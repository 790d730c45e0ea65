"""LoRA and rsLoRA: a low-rank update B @ A of each adapted linear layer; the memory model's own case.

rsLoRA differs only in its scaling (alpha / sqrt(rank)), which costs no memory or time.
"""
from __future__ import annotations

from typing import Any, Callable

from studio.methods.base import Method, lora_kwargs, no_activations, no_tensors, no_trainable_terms, no_transients, same
from studio.settings import Settings


def lora_config(use_rslora: bool = False, use_dora: bool = False) -> Callable[[Any, int, Any, Any], Any]:
    """A peft_config hook building peft's LoraConfig with these switches."""
    def build(recipe: Any, total_steps: int, base: Any, targets: Any) -> Any:
        from peft import LoraConfig

        return LoraConfig(r=recipe.lora.rank, use_rslora=use_rslora, use_dora=use_dora, **lora_kwargs(recipe, targets))
    return build


def _words(s: Settings) -> str:
    return f"rank {s.rank}"


def _rs_words(s: Settings) -> str:
    return f"rank {s.rank}, rsLoRA"


LORA = Method("lora", "LoRA", "The default: a small low-rank update of each linear layer; memory grows with the rank, "
              "and the result can be merged or exported to GGUF.", "LORA",
              effective=same, extra_tensors=no_tensors, words=_words, trainable_terms=no_trainable_terms,
              activations=no_activations, transients=no_transients, peft_config=lora_config())
RSLORA = Method("rslora", "rsLoRA", "LoRA with rank-stabilised scaling (alpha / sqrt(rank)): use it for high ranks "
                "(32 and up), where it learns better at no extra memory or time.", "LORA",
                effective=same, extra_tensors=no_tensors, words=_rs_words, trainable_terms=no_trainable_terms,
                activations=no_activations, transients=no_transients, peft_config=lora_config(use_rslora=True))
