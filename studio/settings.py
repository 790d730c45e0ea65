"""A plan's settings as one frozen, typed value: what the planner chooses and the memory model reads.

Each field carries its recipe name (``"lora.rank"``) in its metadata; the "section.name" dict exists
only at the edges that need it: plan.json, ``lora-studio plan --json`` and the user's pinned settings
(``to_dict``/``from_dict`` keep that format exactly, key order included). ``Effective`` marks the
settings as the LoRA arithmetic sees a method (studio.methods: AdaLoRA's initial rank, prompt
tuning's longer sequences), so the step is done once and its result cannot be mistaken for the
user's settings.

Imports nothing of the project: studio.recipe (via studio.methods) sits above it.
tests/test_planning.py checks that the names and defaults are the recipe's.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping, TypeVar

# The settings the planner keeps as given (never chooses) that change memory: in to_dict only when given.
SHAPE = ("train.objective", "train.packing", "train.grpo_generations", "train.grpo_completion_len", "train.grpo_beta",
         "train.vision_lora")

_S = TypeVar("_S", bound="Settings")  # replace() keeps the kind: an Effective's copy is an Effective


def _key(name: str, default: Any) -> Any:
    return field(default=default, metadata={"key": name})


@dataclass(frozen=True)
class Settings:
    """The memory-relevant settings of one run; field order is the JSON's key order."""

    quant_mode: str = _key("quant.mode", "4bit")
    double_quant: bool = _key("quant.double_quant", True)
    compute_dtype: str = _key("quant.compute_dtype", "auto")
    rank: int = _key("lora.rank", 16)
    alpha: int = _key("lora.alpha", 32)
    targets: tuple[str, ...] = _key("lora.targets", ("all-linear",))
    micro_batch: int = _key("train.micro_batch", 4)
    grad_accum: int = _key("train.grad_accum", 4)
    seq_len: int = _key("train.seq_len", 1024)
    grad_ckpt: bool = _key("train.grad_ckpt", True)
    attn: str = _key("train.attn", "sdpa")
    optimizer: str = _key("train.optimizer", "adamw_torch")
    method: str = _key("lora.method", "lora")
    virtual_tokens: int = _key("lora.virtual_tokens", 20)
    tiled_head: bool = _key("train.tiled_head", True)
    tiled_mlp: bool = _key("train.tiled_mlp", False)
    offload: bool = _key("train.offload_activations", False)
    kernels: str = _key("train.kernels", "auto")
    objective: str | None = _key("train.objective", None)  # None: not given (sft), left out of to_dict
    packing: bool | None = _key("train.packing", None)
    # grpo (None: not given; the recipe's defaults apply): the sampling batch's KV cache and the reference pass
    generations: int | None = _key("train.grpo_generations", None)
    completion_len: int | None = _key("train.grpo_completion_len", None)
    kl_beta: float | None = _key("train.grpo_beta", None)
    # an image run that adapts the vision tower too (None: not given)
    vision_lora: bool | None = _key("train.vision_lora", None)

    def replace(self: _S, **changes: Any) -> _S:
        """A copy with ``changes`` (by attribute name), of the same kind (an Effective stays one)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """``{"quant.mode": ..., ...}``: the plan's JSON form (targets as a list; shape keys when given)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(Settings):
            value = getattr(self, f.name)
            if f.metadata["key"] in SHAPE and value is None:
                continue
            out[f.metadata["key"]] = list(value) if f.name == "targets" else value
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "Settings":
        """From recipe names; a missing (or None) key keeps its default, other keys are ignored."""
        kwargs: dict[str, Any] = {}  # values as the raw mapping holds them
        for f in dataclasses.fields(Settings):
            value = raw.get(f.metadata["key"])
            if value is not None:
                kwargs[f.name] = tuple(_targets(value)) if f.name == "targets" else value
        return cls(**kwargs)

    @classmethod
    def of(cls, value: "Settings | Mapping[str, Any]") -> "Settings":
        """``value`` as Settings: the memory model's public functions also take the JSON dict."""
        return value if isinstance(value, Settings) else cls.from_dict(value)


@dataclass(frozen=True)
class Effective(Settings):
    """Settings after the method's effective step (studio.methods); taking it again changes nothing."""

    @classmethod
    def wrap(cls, s: Settings) -> "Effective":
        return cls(**{f.name: getattr(s, f.name) for f in dataclasses.fields(Settings)})


KEYS = tuple(f.metadata["key"] for f in dataclasses.fields(Settings))
ATTRIBUTE = {f.metadata["key"]: f.name for f in dataclasses.fields(Settings)}


def _targets(value: Any) -> list[str]:
    """lora.targets as a list of names (a comma string is split, as the recipe's v0 kept it)."""
    if isinstance(value, str):
        return [t.strip() for t in value.split(",") if t.strip()]
    return list(value)
