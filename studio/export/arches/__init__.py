"""Every model type the GGUF export writes, by transformers ``model_type`` (one module per family)."""
from __future__ import annotations

from studio.export.arches import llama, qwen35
from studio.export.arches.base import GgufArch, head_dim, permute_qk, rope_params, text_config, text_name

ARCHES: dict[str, GgufArch] = {a.model_type: a for module in (llama, qwen35) for a in module.ARCHES}

__all__ = ["ARCHES", "GgufArch", "head_dim", "permute_qk", "rope_params", "text_config", "text_name"]
