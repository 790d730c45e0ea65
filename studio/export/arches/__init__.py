"""Every model type the GGUF export writes, by transformers ``model_type`` (one module per family)."""
from __future__ import annotations

from studio.export.arches import gpt_oss, llama, phi, smollm
from studio.export.arches.base import Derived, GgufArch, head_dim, permute_qk, rope_params, rotary_dim, text_config, text_name

ARCHES: dict[str, GgufArch] = {a.model_type: a for module in (llama, gpt_oss, phi, smollm) for a in module.ARCHES}

__all__ = ["ARCHES", "Derived", "GgufArch", "head_dim", "permute_qk", "rope_params", "rotary_dim", "text_config",
           "text_name"]
