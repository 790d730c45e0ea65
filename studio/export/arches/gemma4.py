"""Gemma 4 (``gemma4_text``; the language model of a ``gemma4`` Gemma4ForConditionalGeneration checkpoint):
llama.cpp's ``gemma4``.

What llama.cpp's converter (``Gemma4Model``) and its ``gemma4`` reader expect, as facts:

* norms multiply by the weight (transformers' Gemma4RMSNorm is ``x * w``, not Gemma 3's ``x * (1 + w)``):
  written as stored. The value norm has no weight; llama.cpp applies a plain RMS norm to V itself.
* attention scale 1 (llama.cpp's gemma4 fixes it); embeddings scaled by sqrt(hidden) in llama.cpp, the
  per-layer embeddings by sqrt(hidden_size_per_layer_input): written unchanged.
* two layer kinds with their own head sizes: ``key_length`` / ``value_length`` and ``rope.dimension_count``
  are the full-attention layers' (``per_layer_config`` or ``global_head_dim``), the ``*_swa`` keys the
  sliding ones' (``head_dim``); a per-layer ``head_count_kv`` array where the full layers have other KV
  head counts (``num_global_key_value_heads``); ``attention.sliding_window_pattern`` per layer.
* the full layers' "proportional" rope turns the first ``partial_rotary_factor`` of each head's pairs with
  frequencies over the whole head size and leaves the rest unturned; ggml's NeoX rope turns all pairs, so
  the rotary dimension is the whole head and a ``rope_freqs`` tensor divides the turned pairs' angle by
  the rope ``factor`` and the others' by 1e30 (no turn). llama.cpp reads it for the full layers only.
* keys as values (``attention_k_eq_v``: no ``v_proj`` in the full layers): llama.cpp takes V from the
  key projection when ``attn_v`` is absent, as transformers does.
* shared KV layers: the last ``num_kv_shared_layers`` layers have no K/V weights; llama.cpp makes a shared
  sliding layer read layer ``first_shared - 2`` and a shared full layer ``first_shared - 1``, transformers
  the last unshared layer of the same kind: the two agree when those two layers are sliding then full.
* per-layer embeddings: ``embed_tokens_per_layer`` / ``per_layer_model_projection`` /
  ``per_layer_projection_norm`` and each layer's ``per_layer_input_gate`` / ``per_layer_projection`` /
  ``post_per_layer_input_norm`` under gguf's names; ``embedding_length_per_layer_input``.
* ``layer_scalar`` (a 1-value buffer) is ``layer_output_scale.weight``; ``use_double_wide_mlp`` makes the
  shared layers' MLP twice as wide: a per-layer ``feed_forward_length`` array.
* MoE (26B-A4B): the dense MLP stays (``ffn_*``, llama.cpp's shared expert); the fused experts are
  ``ffn_gate_up_exps`` (gate rows first) / ``ffn_down_exps``; the router's ``proj`` is ``ffn_gate_inp``, its
  ``scale`` ``ffn_gate_inp.scale`` and ``per_expert_scale`` ``ffn_down_exps.scale``; the extra norms are
  ``pre_ffw_norm_2`` / ``post_ffw_norm_1`` / ``post_ffw_norm_2``.
"""
from __future__ import annotations

import re
from typing import Any

from studio.export.arches.base import Derived, GgufArch, Reader
from studio.export.errors import UnsupportedModel

_HINT = "export --format merged (transformers) or adapter instead"
_GELU = ("gelu", "gelu_pytorch_tanh", "gelu_new", "gelu_fast")
_KINDS = ("sliding_attention", "full_attention")
_NO_TURN = 1e30  # a rope_freqs factor that leaves a pair unturned (the angle divided by it is 0 in float32)
_DEFAULT_GLOBAL_HEAD_DIM = 512  # transformers' Gemma4TextConfig default when neither key is given
_ROUTER = re.compile(r"^model\.layers\.(\d+)\.router\.(scale|per_expert_scale)$")


def layer_types(config: dict) -> list[str]:
    """Each layer's attention kind (transformers' default: every 6th layer full, the last one full)."""
    n = int(config["num_hidden_layers"])
    kinds = list(config.get("layer_types") or
                 ["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(n)])
    if kinds:
        kinds[-1] = "full_attention"  # transformers forces it
    return kinds


def _full_override(config: dict, key: str) -> Any:
    """``key`` of the first full layer's ``per_layer_config`` entry (keys are layer numbers), or None."""
    per_layer = config.get("per_layer_config") or {}
    for i, kind in enumerate(layer_types(config)):
        entry = per_layer.get(str(i), per_layer.get(i)) if isinstance(per_layer, dict) else None
        if kind == "full_attention" and isinstance(entry, dict) and entry.get(key) is not None:
            return entry[key]
    return None


def head_dims(config: dict) -> tuple[int, int]:
    """(sliding layers' head size, full layers' head size)."""
    swa = int(config.get("head_dim") or 256)
    full = _full_override(config, "head_dim") if config.get("per_layer_config") else None
    full = full or config.get("global_head_dim") or (swa if config.get("per_layer_config") else
                                                     _DEFAULT_GLOBAL_HEAD_DIM)
    return swa, int(full)


def kv_heads(config: dict) -> tuple[int, int]:
    """(sliding layers' KV heads, full layers' KV heads)."""
    swa = int(config.get("num_key_value_heads") or config["num_attention_heads"])
    if config.get("per_layer_config"):
        full = _full_override(config, "num_key_value_heads")
    else:  # transformers applies num_global_key_value_heads only with attention_k_eq_v
        full = config.get("num_global_key_value_heads") if config.get("attention_k_eq_v", True) else None
    return swa, int(full or swa)


def _rope(config: dict, kind: str) -> dict:
    params = config.get("rope_parameters") or {}
    defaults = {"sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
                "full_attention": {"rope_type": "proportional", "partial_rotary_factor": 0.25,
                                   "rope_theta": 1_000_000.0}}
    return dict(params.get(kind) or defaults[kind])


def rope_freqs(config: dict) -> Any:
    """The full layers' per-pair rope factors: the rope factor for the pairs proportional rope turns, 1e30
    (no turn) for the rest; all ``factor`` for a default rope."""
    import torch

    full = _rope(config, "full_attention")
    _, dim = head_dims(config)
    pairs = dim // 2
    turned = pairs
    if (full.get("rope_type") or "default") == "proportional":
        turned = int(float(full.get("partial_rotary_factor", 1.0)) * dim // 2)
    factor = float(full.get("factor") or 1.0)
    return torch.tensor([factor] * turned + [_NO_TURN] * (pairs - turned), dtype=torch.float32)


def computed(config: dict) -> dict[str, Any]:
    return {"rope_freqs.weight": rope_freqs(config)}


def check(config: dict) -> None:
    """What llama.cpp's gemma4 cannot run the way transformers does, refused by name."""
    kind = config.get("model_type", "gemma4_text")
    act = config.get("hidden_activation") or config.get("hidden_act") or "gelu_pytorch_tanh"
    if act not in _GELU:
        raise UnsupportedModel(f"GGUF export: {kind} with activation '{act}': llama.cpp's gemma4 runs GELU", _HINT)
    if config.get("attention_bias"):
        raise UnsupportedModel("GGUF export: Gemma 4 with attention biases: llama.cpp's gemma4 has no place for them",
                               _HINT)
    if config.get("use_bidirectional_attention") == "all":
        raise UnsupportedModel("GGUF export: Gemma 4 with bidirectional attention on every token "
                               "(use_bidirectional_attention='all'): llama.cpp's gemma4 is causal for text", _HINT)
    kinds = layer_types(config)
    odd = sorted(set(kinds) - set(_KINDS))
    if odd or "sliding_attention" not in kinds:
        raise UnsupportedModel(f"GGUF export: Gemma 4 layer types {odd or kinds}: llama.cpp's gemma4 needs sliding "
                               "and full attention layers", _HINT)
    _check_shared(config, kinds)
    _check_rope(config)
    ple = int(config.get("hidden_size_per_layer_input") or 0)
    if ple and int(config.get("vocab_size_per_layer_input") or config["vocab_size"]) != int(config["vocab_size"]):
        raise UnsupportedModel(f"GGUF export: Gemma 4 per-layer embeddings for {config['vocab_size_per_layer_input']} "
                               f"tokens of {config['vocab_size']}: llama.cpp reads one row per token", _HINT)
    if config.get("enable_moe_block") and not (config.get("num_experts") and config.get("top_k_experts")):
        raise UnsupportedModel("GGUF export: Gemma 4 MoE config without num_experts / top_k_experts", _HINT)


def _check_shared(config: dict, kinds: list[str]) -> None:
    shared = int(config.get("num_kv_shared_layers") or 0)
    if not shared:
        return
    first = len(kinds) - shared
    if first < 2 or kinds[first - 2:first] != ["sliding_attention", "full_attention"]:
        raise UnsupportedModel(
            f"GGUF export: Gemma 4 with {shared} shared-KV layers after layers of kinds {kinds[max(0, first - 2):first]}: "
            "llama.cpp's gemma4 reads the cache of the last two unshared layers as sliding then full", _HINT)


def _check_rope(config: dict) -> None:
    sliding, full = _rope(config, "sliding_attention"), _rope(config, "full_attention")
    if (sliding.get("rope_type") or "default") != "default" or float(sliding.get("factor") or 1.0) != 1.0:
        raise UnsupportedModel(f"GGUF export: Gemma 4 rope '{sliding.get('rope_type')}' on the sliding layers: "
                               "llama.cpp's gemma4 turns them with a plain rope", _HINT)
    if (full.get("rope_type") or "default") not in ("default", "proportional"):
        raise UnsupportedModel(f"GGUF export: Gemma 4 rope '{full.get('rope_type')}' on the full layers: llama.cpp's "
                               "gemma4 reads proportional (or plain) rope there", _HINT)


def _replace(w: Any, key: str) -> None:
    """Drop a common key this family writes differently (the gguf writer warns on a second value)."""
    for kv in w.kv_data:
        kv.pop(key, None)


def hparams(w: Any, config: dict) -> None:
    arch = w.arch
    kinds = layer_types(config)
    swa = [k == "sliding_attention" for k in kinds]
    (hd_swa, hd_full), (kv_swa, kv_full) = head_dims(config), kv_heads(config)
    for key in ("attention.key_length", "attention.value_length", "rope.dimension_count"):
        _replace(w, f"{arch}.{key}")
    w.add_key_length(hd_full)
    w.add_value_length(hd_full)
    w.add_key_length_swa(hd_swa)
    w.add_value_length_swa(hd_swa)
    w.add_rope_dimension_count(hd_full)  # proportional rope: the whole head, rope_freqs stops the rest
    w.add_rope_dimension_count_swa(hd_swa)
    w.add_rope_freq_base_swa(float(_rope(config, "sliding_attention").get("rope_theta") or 10_000.0))
    w.add_sliding_window(int(config.get("sliding_window") or 512))
    w.add_sliding_window_pattern(swa)
    shared = int(config.get("num_kv_shared_layers") or 0)
    w.add_shared_kv_layers(shared)
    w.add_embedding_length_per_layer_input(int(config.get("hidden_size_per_layer_input") or 0))
    if kv_full != kv_swa:
        _replace(w, f"{arch}.attention.head_count_kv")
        w.add_head_count_kv([kv_swa if s else kv_full for s in swa])
    if config.get("use_double_wide_mlp") and shared:
        ff, first = int(config["intermediate_size"]), len(kinds) - shared
        _replace(w, f"{arch}.feed_forward_length")
        w.add_feed_forward_length([ff if i < first else 2 * ff for i in range(len(kinds))])
    if config.get("final_logit_softcapping"):
        w.add_final_logit_softcapping(float(config["final_logit_softcapping"]))


def rename(name: str) -> str:
    """The layer scalar and the fused experts carry no ``.weight`` in the checkpoint; gguf's map wants one."""
    if name.endswith((".layer_scalar", ".experts.gate_up_proj", ".experts.down_proj")):
        return name + ".weight"
    return name


def derive(named: dict[str, Any], config: dict, quant: str) -> list[Derived]:
    """The router's input scale and per-expert scale: llama.cpp reads them as ``.scale`` tensors beside the
    router and the experts' down projection (gguf's name map has no entry for them)."""
    out = []
    for name, meta in named.items():
        m = _ROUTER.match(name)
        if not m:
            continue
        target = "ffn_gate_inp" if m[2] == "scale" else "ffn_down_exps"
        out.append(Derived(f"blk.{m[1]}.{target}.scale", tuple(meta.shape), (meta,), _reader(meta)))
    return out


def _reader(meta: Any) -> Any:
    def floats(read: Reader) -> Any:
        return read(meta)
    return floats


ARCHES = (
    GgufArch("gemma4_text", "gemma4", hparams=hparams, check=check, rename=rename, rope_types=("proportional",),
             computed=computed, derive=derive),
)
