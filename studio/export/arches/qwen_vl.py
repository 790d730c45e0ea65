"""Qwen2-VL and Qwen2.5-VL's language model: a Qwen2 whose rotary embedding is multimodal (M-RoPE).

llama.cpp's ``qwen2vl`` architecture (its converter's Qwen2VLModel) is Qwen2's layout plus
``rope.dimension_sections``: how many rotary pairs follow each position axis (time, height, width, and a fourth
llama.cpp keeps at 0), the config's ``mrope_section``. On text alone the three positions are equal, so the
model answers as a Qwen2; with images the vision projector file (``studio.export.mmproj``) gives the axes.
The checkpoint keeps the language model at ``model.layers`` (flat) or ``model.language_model`` (transformers 5):
``studio.multimodal.to_text`` names both as a text model does; the tower (``visual``) is another file's.
"""
from __future__ import annotations

from typing import Any

from studio.export.arches.base import GgufArch, rope_params
from studio.export.errors import UnsupportedModel


def mrope_section(config: dict) -> list[int]:
    section = rope_params(config).get("mrope_section")
    if not isinstance(section, list) or not section or not all(isinstance(s, int) for s in section):
        raise UnsupportedModel(f"GGUF export: the {config.get('model_type')} config has no rope mrope_section "
                               "(the rotary pairs per position axis) for llama.cpp's qwen2vl",
                               "export with --format merged (safetensors) instead")
    return section


def _hparams(w: Any, config: dict) -> None:
    section = mrope_section(config)
    w.add_rope_dimension_sections((section + [0, 0, 0, 0])[:4])


def _check(config: dict) -> None:
    section = mrope_section(config)
    if len(section) > 4:
        raise UnsupportedModel(f"GGUF export: mrope_section {section} has more than llama.cpp's 4 axes",
                               "export with --format merged (safetensors) instead")


ARCHES = (
    GgufArch("qwen2_vl_text", "qwen2vl", hparams=_hparams, check=_check),
    GgufArch("qwen2_5_vl_text", "qwen2vl", hparams=_hparams, check=_check),
)
