"""Which linear layers an adapter adapts, and the LoRA tensors it puts there: the shared base of the
memory model (studio.memory) and of each adapter method's own terms (studio.methods).

Pure arithmetic over a ModelInfo, no torch: peft's rules for 'all-linear' and for the fused experts
of a transformers-5 mixture of experts (studio.train.moe4bit targets the same set).
"""
from __future__ import annotations

from typing import Iterable, Mapping, Protocol, Sequence


class LinearShape(Protocol):
    """What the adapter arithmetic reads of a studio.models.LinearGroup (read-only, so that the frozen
    fields of a dataclass satisfy it)."""

    @property
    def name(self) -> str: ...

    @property
    def in_features(self) -> int: ...

    @property
    def out_features(self) -> int: ...

    @property
    def count(self) -> int: ...

    @property
    def lora_all_linear(self) -> bool: ...


class ModelShape(Protocol):
    """What the adapter arithmetic reads of a studio.models.ModelInfo (which imports this module, so
    the methods below studio.recipe need not import studio.models). Members are read-only properties:
    the arithmetic never writes them, and a ModelInfo's list of LinearGroup then matches Sequence[LinearShape]."""

    @property
    def layers(self) -> int: ...

    @property
    def hidden(self) -> int: ...

    @property
    def intermediate(self) -> int: ...

    @property
    def num_experts(self) -> int: ...

    @property
    def params(self) -> Mapping[str, int]: ...

    @property
    def linears(self) -> Sequence[LinearShape]: ...

    @property
    def kv_dim(self) -> int: ...

    @property
    def q_dim(self) -> int: ...


# With 4-bit experts, 'all-linear' leaves out the names peft maps onto fused experts (studio.train.moe4bit
# targets the same set).
MOE_PEFT_NAMES = {"gate", "w1", "w2", "w3", "gate_proj", "up_proj", "down_proj"}

__all__ = ["MOE_PEFT_NAMES", "dtype_bytes", "experts_4bit", "experts_adapted", "fused_experts", "lora_params",
           "lora_tensors", "targeted", "LinearShape", "ModelShape"]


def dtype_bytes(compute_dtype: str) -> int:
    return 4 if compute_dtype in ("float32", "fp32") else 2


def _names(targets: str | Iterable[str]) -> list[str]:
    return [targets] if isinstance(targets, str) else list(targets)


def targeted(info: ModelShape, targets: str | Iterable[str], quant_mode: str = "none") -> list[LinearShape]:
    """The linear groups peft adapts for ``targets`` ('all-linear' or a list of module names)."""
    names = _names(targets)
    if names == ["all-linear"] or "all-linear" in names:
        skip = MOE_PEFT_NAMES if experts_4bit(info, quant_mode) else set()
        return [g for g in info.linears if g.lora_all_linear and g.name not in skip]
    wanted = {n.strip() for n in names}
    return [g for g in info.linears if g.name in wanted and g.lora_all_linear]


def fused_experts(info: ModelShape) -> bool:
    """A transformers-5 MoE: its experts are 3-D parameters, not linear layers."""
    return bool(info.num_experts) and info.params.get("experts", 0) > 0 and not any(
        g.name.startswith(("w1", "experts")) for g in info.linears)


def experts_4bit(info: ModelShape, quant_mode: str) -> bool:
    """Fused experts loaded in 4-bit are NF4 and frozen (studio.train.moe4bit)."""
    return quant_mode == "4bit" and fused_experts(info)


# MoE families born fused in transformers 5: peft reaches fused experts for 'all-linear' only through transformers'
# v4-to-v5 weight conversion mapping (peft.utils.transformers_weight_conversion), which these have none of, so
# their experts and router stay frozen in every mode (measured: bench/memory_components.py, qwen35moe).
EXPERTS_NEVER_ADAPTED = frozenset({"qwen3_5_moe", "qwen3_5_moe_text"})


def experts_adapted(info: ModelShape, targets: str | Iterable[str], quant_mode: str = "none") -> bool:
    """peft (0.17+) adapts the fused 3-D expert weights and the router of a transformers-5 MoE for 'all-linear'
    (in 16 and 8 bit; 4-bit experts are frozen; never for EXPERTS_NEVER_ADAPTED)."""
    return (fused_experts(info) and "all-linear" in _names(targets) and not experts_4bit(info, quant_mode)
            and getattr(info, "model_type", "") not in EXPERTS_NEVER_ADAPTED)


def lora_tensors(info: ModelShape, rank: int, targets: str | Iterable[str],
                 quant_mode: str = "none") -> list[tuple[int, int]]:
    """(values, how many) of every adapter tensor: A (r x in) and B (out x r) per adapted layer.

    Fused experts (E, 2I, h) and (E, h, I) get one A and B each with rank r x E (2r x E for the
    fused gate|up, as peft's ParamWrapper does); the router (E x h) is an ordinary linear layer.
    """
    out: list[tuple[int, int]] = []
    for g in targeted(info, targets, quant_mode):
        out += [(rank * g.in_features, g.count), (rank * g.out_features, g.count)]
    if experts_adapted(info, targets, quant_mode):
        E, h, i, L = info.num_experts, info.hidden, info.intermediate, info.layers
        out += [(2 * rank * E * h, L), (2 * rank * E * 2 * i, L), (rank * E * i, L), (rank * E * h, L),
                (rank * h, L), (rank * E, L)]
    return out


def lora_params(info: ModelShape, rank: int, targets: str | Iterable[str], quant_mode: str = "none") -> int:
    """A (r x in) plus B (out x r) for every adapted linear layer (and fused experts, see lora_tensors)."""
    return sum(n * c for n, c in lora_tensors(info, rank, targets, quant_mode))
