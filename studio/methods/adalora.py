"""AdaLoRA: LoRA that moves its rank budget to the layers that matter most during training.

Every layer starts at ``adalora_init_rank`` (1.5 x lora.rank) and is pruned down to lora.rank on
average; the memory model counts the initial rank, which is held until the end, plus one singular
value per rank (E) and the rank allocator's three fp32 values per adapter parameter.
"""
from __future__ import annotations

import math
from typing import Any

from studio.adapted import ModelShape, targeted
from studio.methods.base import Method, Terms, lora_kwargs, no_activations, no_transients
from studio.settings import Settings

# AdaLoRA starts every layer at this multiple of lora.rank and prunes the budget down to lora.rank on average.
ADALORA_INIT_FACTOR = 1.5
ADALORA_TINIT = 0.1  # fraction of the steps before AdaLoRA starts pruning ranks (warm-up)
ADALORA_TFINAL = 0.2  # fraction at the end trained with the final rank pattern
ADALORA_DELTA_T = 0.01  # re-allocate every this fraction of the steps (at least every step)


def adalora_init_rank(rank: int) -> int:
    return max(rank + 1, int(round(rank * ADALORA_INIT_FACTOR)))


def adalora_schedule(total_steps: int) -> tuple[int, int, int]:
    """(tinit, tfinal, deltaT) for a run of ``total_steps``: warm up, prune, then train the final pattern."""
    tinit = int(total_steps * ADALORA_TINIT)
    tfinal = int(total_steps * ADALORA_TFINAL)
    if total_steps - tinit - tfinal <= 0:
        tinit = tfinal = 0
    return tinit, tfinal, max(1, int(math.ceil(total_steps * ADALORA_DELTA_T)))


def _effective(s: Settings) -> Settings:
    return s.replace(rank=adalora_init_rank(int(s.rank)))


def _singular_values(info: ModelShape, s: Settings) -> list[tuple[int, int]]:
    """E: one singular value per rank of each adapted layer."""
    return [(s.rank, g.count) for g in targeted(info, s.targets, s.quant_mode)]


def _words(s: Settings) -> str:
    return f"AdaLoRA at its initial rank {s.rank}, with E"


def _importance(n: int) -> Terms:
    """The rank allocator's importance, its average and its uncertainty per parameter."""
    return ({"adalora_importance": 12 * n},
            {"adalora_importance": f"AdaLoRA's rank allocator: 3 fp32 values (importance, its moving average and "
                                   f"uncertainty) per adapter parameter, {n:,} of them"})


def _peft_config(recipe: Any, total_steps: int, base: Any, targets: Any) -> Any:
    """AdaLoraConfig; its schedule is finished from the Trainer's step count (peft_methods.AdaLoraCallback)."""
    from peft import AdaLoraConfig

    tinit, tfinal, delta = adalora_schedule(total_steps)
    return AdaLoraConfig(init_r=adalora_init_rank(recipe.lora.rank), target_r=recipe.lora.rank,
                         total_step=total_steps, tinit=tinit, tfinal=tfinal, deltaT=delta,
                         **lora_kwargs(recipe, targets))


ADALORA = Method("adalora", "AdaLoRA", "LoRA that moves its rank budget to the layers that matter most during "
                 "training: use it when one rank for every layer seems wasteful; it starts at 1.5x the rank, so a "
                 "little more memory.", "ADALORA",
                 effective=_effective, extra_tensors=_singular_values, words=_words, trainable_terms=_importance,
                 activations=no_activations, transients=no_transients, peft_config=_peft_config)
