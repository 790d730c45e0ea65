"""The Gemma families: Gemma (2B/7B), Gemma 2, Gemma 3 (text, and the language model of a multimodal
Gemma 3 checkpoint); Gemma 4 is ``studio.export.arches.gemma4``.

What differs from a Llama, as llama.cpp's converter and its gemma/gemma2/gemma3 readers have it:

* Gemma's RMSNorm multiplies by ``1 + weight``; llama.cpp's multiplies by the weight, so every norm
  (per layer, q/k norms, the final norm) is written with 1 added.
* The embeddings are scaled by sqrt(hidden) in the model; llama.cpp scales them itself, so
  ``token_embd`` is written unchanged.
* NeoX rotary (no q/k permutation); the output layer is the embeddings (Gemma and Gemma 2 have no
  place for an untied one).
* Gemma 2: attention and final logit soft-capping, a sliding window on alternate layers. Gemma 3: the
  sliding layers rotate with their own base (``rope.freq_base_swa``), linear rope scaling applies to
  the global layers only (llama.cpp's scale for sliding layers is 1), a final soft-cap if set.
* llama.cpp assumes a layer pattern (Gemma 2: every 2nd layer global, Gemma 3: every 6th); another
  ``layer_types`` is written as the per-layer ``attention.sliding_window_pattern`` array it reads first.
* llama.cpp scales queries by 1/sqrt(head_dim), or by 1/sqrt(hidden/heads) for the 27B layer counts;
  transformers by ``query_pre_attn_scalar ** -0.5``: a config where they differ is refused.
"""
from __future__ import annotations

import math
from typing import Any

from studio.export.arches.base import GgufArch, head_dim
from studio.export.errors import UnsupportedModel

# llama.cpp's default layer pattern per arch (a layer il is global when il % n == n - 1)
_DEFAULT_PATTERN = {"gemma2": 2, "gemma3": 6}
# layer counts llama.cpp takes for the 27B models, which scale queries by 1/sqrt(hidden/heads)
_LAYERS_27B = {"gemma2": 46, "gemma3": 62}
_NO_CAP = 1e6
_GELU = ("gelu", "gelu_pytorch_tanh", "gelu_new", "gelu_fast")


def plus_one_norms(gguf_name: str, t: Any, config: dict) -> Any:
    """Gemma's ``x * (1 + w)`` norms as llama.cpp's ``x * w``: row-wise (a norm is one row)."""
    return t + 1 if gguf_name.endswith("norm.weight") else t


def _layer_types(config: dict, arch: str) -> list[str]:
    """Each layer's attention kind, from ``layer_types`` or the older ``sliding_window_pattern``."""
    n = int(config["num_hidden_layers"])
    kinds = config.get("layer_types")
    if kinds:
        return list(kinds)
    pattern = int(config.get("sliding_window_pattern") or config.get("_sliding_window_pattern")
                  or _DEFAULT_PATTERN[arch])
    return ["full_attention" if (i + 1) % pattern == 0 else "sliding_attention" for i in range(n)]


def _add_sliding(w: Any, config: dict, arch: str) -> None:
    """The window and, where it is not llama.cpp's default pattern, which layers slide."""
    kinds = _layer_types(config, arch)
    sliding = [k == "sliding_attention" for k in kinds]
    if not any(sliding) or not config.get("sliding_window"):
        if arch == "gemma2":  # llama.cpp's gemma2 reader needs sliding layers (none aborts): its default
            w.add_sliding_window(int(config.get("max_position_embeddings", 8192)))  # ones, past the context
        return  # gemma3 without the key runs every layer global
    w.add_sliding_window(int(config["sliding_window"]))
    n = _DEFAULT_PATTERN[arch]
    if sliding != [i % n < n - 1 for i in range(len(kinds))]:
        w.add_sliding_window_pattern(sliding)


def _common_keys(w: Any, config: dict) -> None:
    w.add_add_space_prefix(False)  # Gemma's SentencePiece tokenizer adds no leading space


def _gemma_hparams(w: Any, config: dict) -> None:
    _common_keys(w, config)


def _gemma2_hparams(w: Any, config: dict) -> None:
    _common_keys(w, config)
    # llama.cpp's gemma2 always caps (50 and 30 when the keys are absent); a config without a cap gets one
    # so wide that tanh is the identity in float32
    w.add_attn_logit_softcapping(float(config.get("attn_logit_softcapping") or _NO_CAP))
    w.add_final_logit_softcapping(float(config.get("final_logit_softcapping") or _NO_CAP))
    _add_sliding(w, config, "gemma2")


def _gemma3_hparams(w: Any, config: dict) -> None:
    _common_keys(w, config)
    if config.get("final_logit_softcapping"):
        w.add_final_logit_softcapping(float(config["final_logit_softcapping"]))
    w.add_rope_freq_base_swa(_local_rope_base(config))
    _add_sliding(w, config, "gemma3")


def _local_rope_base(config: dict) -> float:
    """The sliding layers' rotary base: ``rope_parameters.sliding_attention`` or ``rope_local_base_freq``."""
    nested = (config.get("rope_parameters") or {}).get("sliding_attention") or {}
    return float(nested.get("rope_theta") or config.get("rope_local_base_freq") or 10000.0)


def _check(arch: str, tied_only: bool) -> Any:
    def check(config: dict) -> None:
        act = config.get("hidden_activation") or config.get("hidden_act") or "gelu_pytorch_tanh"
        if act not in _GELU:
            raise UnsupportedModel(f"GGUF export: {config['model_type']} with activation '{act}' is not what "
                                   "llama.cpp runs (GELU)", "export --format merged instead")
        if tied_only and not config.get("tie_word_embeddings", True):
            raise UnsupportedModel(f"GGUF export: {config['model_type']} with an output layer separate from the "
                                   "embeddings: llama.cpp's reader has no place for it",
                                   "export --format merged instead")
        if config.get("attn_logit_softcapping") and arch != "gemma2":
            raise UnsupportedModel(f"GGUF export: {config['model_type']} with attention soft-capping: llama.cpp "
                                   f"applies it to Gemma 2 only", "export --format merged instead")
        _check_query_scale(config, arch)
        sliding = (config.get("rope_parameters") or {}).get("sliding_attention") or {}
        if (sliding.get("rope_type") or "default") != "default":
            raise UnsupportedModel(f"GGUF export: rope scaling '{sliding['rope_type']}' on the sliding-window "
                                   "layers: llama.cpp scales only the global ones", "export --format merged instead")
    return check


def _check_query_scale(config: dict, arch: str) -> None:
    """transformers scales queries by query_pre_attn_scalar**-0.5; llama.cpp's gemma2/3 readers by their own rule."""
    scalar = config.get("query_pre_attn_scalar")
    if scalar is None or arch not in _LAYERS_27B:
        return
    if int(config["num_hidden_layers"]) == _LAYERS_27B[arch]:
        llama_cpp = int(config["hidden_size"]) // int(config["num_attention_heads"])
    else:
        llama_cpp = head_dim(config)
    if not math.isclose(float(scalar), float(llama_cpp)):
        raise UnsupportedModel(
            f"GGUF export: {config['model_type']} scales attention by query_pre_attn_scalar={scalar}, "
            f"llama.cpp would use {llama_cpp} for this shape", "export --format merged instead")


ARCHES = (
    GgufArch("gemma", "gemma", tensor=plus_one_norms, hparams=_gemma_hparams, check=_check("gemma", True)),
    GgufArch("gemma2", "gemma2", tensor=plus_one_norms, hparams=_gemma2_hparams, check=_check("gemma2", True)),
    GgufArch("gemma3_text", "gemma3", tensor=plus_one_norms, hparams=_gemma3_hparams,
             check=_check("gemma3", False)),
)
# model types known and refused with a reason (check_supported raises it instead of "not supported");
# Gemma 4 is written by studio.export.arches.gemma4
REFUSED: dict = {}
