"""The training objectives (``train.objective``): one entry each, holding what the memory model and the
planner need to know about it, so that neither branches on an objective's name.

Torch-free and below studio.recipe (whose choices come from here). How each objective is trained
(TRL's DPOTrainer, ORPOTrainer and GRPOTrainer) is studio.train.preference; docs/objectives.md says why.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Objective:
    name: str
    label: str
    pairs: bool = False  # chosen and rejected answers run in one forward: a micro-batch of N pairs is 2N sequences
    reference_forward: bool = False  # the base (adapter disabled) runs again under no_grad for the reference
    loss_note: str = ""  # added to the logits-and-loss component's source
    # How the loss meets the output layer: "studio" (the tiled head when train.tiled_head, else full logits),
    # "trl" (TRL's trainer always computes it through its own tiled head) or "full" (the whole logits).
    head: str = "studio"
    reason: str = ""  # the plan's sentence about it (planner.objective_reasons); empty: nothing to say
    # The model samples completions of the dataset's prompts while training (grpo): the planner counts the
    # sampling's KV cache and its time, and the OOM ladder steps down the completions per step first.
    samples: bool = False


OBJECTIVES: dict[str, Objective] = {o.name: o for o in (
    Objective("sft", "SFT"),
    Objective("dpo", "DPO", pairs=True, reference_forward=True,
              head="trl",
              reason="Objective dpo: each pair's chosen and rejected answers run in one forward (twice the sequences "
                     "of a micro-batch); the reference is the base with the adapter disabled, so no second copy of "
                     "the weights: its no-grad forward is an estimate."),
    Objective("orpo", "ORPO", pairs=True, head="full", loss_note="; for the chosen and rejected sequences of every pair",
              reason="Objective orpo: each pair's chosen and rejected answers run in one forward (twice the sequences "
                     "of a micro-batch); no reference model."),
    Objective("grpo", "GRPO", reference_forward=True, head="full", samples=True,
              loss_note="; over the sampled completions' tokens",
              reason="Objective grpo: each optimizer step samples train.grpo_generations completions of each of its "
                     "prompts (the KV cache of the whole sampling batch is counted) and trains on them; the KL "
                     "reference is the base with the adapter disabled (a no-grad forward, an estimate; none when "
                     "train.grpo_beta is 0)."),
)}
NAMES = tuple(OBJECTIVES)
DEFAULT = "sft"
PAIRED = tuple(o.name for o in OBJECTIVES.values() if o.pairs)  # need chosen/rejected pairs
SAMPLING = tuple(o.name for o in OBJECTIVES.values() if o.samples)  # learn from rewards of sampled completions
TRL = PAIRED + SAMPLING  # trained by TRL's trainers (studio.train.preference) rather than the studio's own


def get(name: str | None) -> Objective:
    """The objective ``name``; not given (or unknown: Recipe.validate names it) is plain SFT."""
    return OBJECTIVES.get(name or DEFAULT) or OBJECTIVES[DEFAULT]
