"""Every model type the GGUF export writes, by transformers ``model_type`` (one module per family)."""
from __future__ import annotations

from typing import Callable

from studio.export.arches import gemma, gemma4, gpt_oss, llama, phi, qwen35, qwen_vl, smollm
from studio.export.arches.base import Derived, GgufArch, head_dim, permute_qk, rope_params, rotary_dim, text_config, text_name

ARCHES: dict[str, GgufArch] = {a.model_type: a for module in (llama, gpt_oss, phi, smollm, gemma, gemma4, qwen35,
                                                                         qwen_vl) for a in module.ARCHES}
# model types known and refused with the reason (what llama.cpp needs that is not written): type -> raiser
REFUSED: dict[str, Callable[[dict], None]] = {**gemma.REFUSED}

__all__ = ["ARCHES", "REFUSED", "Derived", "GgufArch", "head_dim", "permute_qk", "rope_params", "rotary_dim",
           "text_config", "text_name"]
