"""Microsoft's Phi family: Phi-2 (``phi``) and Phi-3 / 3.5 / 4 / 4-mini (``phi3``).

Phi-2 is llama.cpp's ``phi2``: one LayerNorm (with bias) feeds attention and MLP in parallel, q/k/v,
the attention output (``dense``), ``fc1``/``fc2`` and ``lm_head`` all carry biases, and only the first
``partial_rotary_factor`` of each head is rotated (NeoX order, so nothing is permuted). Phi-3 is
``phi3``: its fused ``qkv_proj`` and ``gate_up_proj`` are written fused as ``attn_qkv`` / ``ffn_up``
(llama.cpp's reader takes them so; its SwiGLU gates with the first half, as transformers does), and
LongRoPE (Phi-3.5-mini, Phi-4-mini) becomes the ``rope_factors_short`` / ``rope_factors_long``
tensors plus the ``rope.scaling.attn_factor`` and ``rope.scaling.original_context_length`` keys.
llama.cpp picks the long factors when its context is longer than the original one, transformers when
the sequence is; both use the short ones for anything shorter.
"""
from __future__ import annotations

import math
from typing import Any

from studio.export.arches.base import GgufArch, rope_params, rotary_dim
from studio.export.errors import UnsupportedModel

LONGROPE = ("longrope", "su")  # "su" is what the first Phi-3 128k configs called it


def _phi2_hparams(w: Any, config: dict) -> None:
    """Phi-2 normalises with LayerNorm: llama.cpp reads ``layer_norm_epsilon``, not the RMS key."""
    w.add_layer_norm_eps(float(config.get("layer_norm_eps", 1e-5)))


def _phi2_check(config: dict) -> None:
    """What llama.cpp's phi2 graph has no place for."""
    if config.get("qk_layernorm"):
        raise UnsupportedModel("GGUF export: this Phi-2 variant normalises queries and keys (qk_layernorm), "
                               "which llama.cpp's phi2 architecture does not",
                               "export --format merged or adapter instead")
    if config.get("tie_word_embeddings"):
        raise UnsupportedModel("GGUF export: a Phi-2 with its output layer tied to the embeddings cannot be "
                               "written: llama.cpp's phi2 needs its own output weight and bias",
                               "export --format merged or adapter instead")


def _original_context(config: dict) -> int | None:
    rope = rope_params(config)
    value = rope.get("original_max_position_embeddings") or config.get("original_max_position_embeddings")
    return int(value) if value else None


def _longrope(config: dict) -> bool:
    rope = rope_params(config)
    return (rope.get("rope_type") or rope.get("type")) in LONGROPE


def _phi3_check(config: dict) -> None:
    """LongRoPE needs both factor lists, one per rotated pair, and the original context length."""
    if not _longrope(config):
        return
    rope, pairs = rope_params(config), rotary_dim(config) // 2
    short, long = rope.get("short_factor") or [], rope.get("long_factor") or []
    if len(short) != pairs or len(long) != pairs or _original_context(config) is None:
        raise UnsupportedModel(f"GGUF export: LongRoPE needs short_factor and long_factor of {pairs} values each "
                               f"and original_max_position_embeddings (config has {len(short)} and {len(long)})",
                               "fix the model's config.json or export --format merged instead")


def attn_factor(config: dict) -> float:
    """transformers' LongRoPE scale on cos/sin: ``attention_factor`` if set, else from the context ratio
    (``factor`` if set, else max/original context), 1 when the context is not extended."""
    rope = rope_params(config)
    if rope.get("attention_factor") is not None:
        return float(rope["attention_factor"])
    original = int(_original_context(config) or 0)
    factor = float(rope.get("factor") or int(config.get("max_position_embeddings", original)) / original)
    return math.sqrt(1 + math.log(factor) / math.log(original)) if factor > 1.0 else 1.0


def _phi3_hparams(w: Any, config: dict) -> None:
    """Phi-3's original context (llama.cpp chooses short or long factors by it), the LongRoPE scale and the
    sliding window key llama.cpp's converter writes (0 when none: llama.cpp reads Phi-4 by that)."""
    original = _original_context(config)
    if original:
        w.add_rope_scaling_orig_ctx_len(original)
    if _longrope(config):
        w.add_rope_scaling_attn_factors(attn_factor(config))
    w.add_sliding_window(int(config.get("sliding_window") or 0))


def _phi3_rope_factors(config: dict) -> dict[str, Any]:
    """LongRoPE's per-frequency divisors, as llama.cpp's ``rope_factors_long`` / ``rope_factors_short``."""
    if not _longrope(config):
        return {}
    import gguf
    import torch

    rope = rope_params(config)
    names = gguf.TENSOR_NAMES
    return {names[gguf.MODEL_TENSOR.ROPE_FACTORS_LONG] + ".weight": torch.tensor(rope["long_factor"], dtype=torch.float32),
            names[gguf.MODEL_TENSOR.ROPE_FACTORS_SHORT] + ".weight": torch.tensor(rope["short_factor"],
                                                                                  dtype=torch.float32)}


ARCHES = (
    GgufArch("phi", "phi2", hparams=_phi2_hparams, check=_phi2_check),
    GgufArch("phi3", "phi3", hparams=_phi3_hparams, check=_phi3_check, rope_types=LONGROPE,
             computed=_phi3_rope_factors),
)
