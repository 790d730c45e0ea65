"""Qwen3.5 (``qwen3_5_text``, ``qwen3_5_moe_text``; the language model of ``qwen3_5`` / ``qwen3_5_moe``):
llama.cpp's ``qwen35`` / ``qwen35moe``.

Qwen3.5 mixes Gated DeltaNet layers (``layer_types`` "linear_attention") with gated full-attention
layers. What llama.cpp's converter and its ``qwen35`` reader expect, as facts:

* norms: transformers computes ``x * (1 + w)`` for the layer, final and q/k norms, llama.cpp ``x * w``:
  those get +1. The DeltaNet's gated norm (``linear_attn.norm``, llama.cpp ``ssm_norm``) multiplies by
  ``w`` itself and is written as stored.
* ``A_log`` is written as ``ssm_a = -exp(A_log)``; ``dt_bias`` is ``ssm_dt.bias``; the depthwise conv
  kernel (C, 1, K) becomes ``ssm_conv1d`` (C, K) in F32; ``in_proj_qkv`` / ``in_proj_z`` / ``in_proj_a`` /
  ``in_proj_b`` / ``out_proj`` are ``attn_qkv`` / ``attn_gate`` / ``ssm_alpha`` / ``ssm_beta`` / ``ssm_out``.
* with fewer key heads than value heads, the checkpoint groups V heads by key head (k0: v0 v1, k1: v2 v3)
  and llama.cpp wants them tiled (v0 v2 v1 v3) so that ggml broadcasts the key heads: the V rows of
  ``attn_qkv`` and ``ssm_conv1d``, the rows of ``attn_gate``, ``ssm_alpha``, ``ssm_beta``, ``ssm_a``,
  ``ssm_dt`` and the columns of ``ssm_out`` are reordered (``row_order`` / ``col_order``).
* the full-attention ``q_proj`` (query and output gate per head, side by side) is written as stored:
  llama.cpp splits it per head the way transformers does.
* keys: ``ssm.conv_kernel``, ``ssm.state_size`` (the key head size, which llama.cpp also takes as the
  value head size), ``ssm.group_count`` (key heads), ``ssm.time_step_rank`` (value heads),
  ``ssm.inner_size``, ``attention.recurrent_layers`` and ``full_attention_interval``, the rotary
  dimension (head size times ``partial_rotary_factor``, in the common keys) and
  ``rope.dimension_sections`` (interleaved M-RoPE; [11, 11, 10, 0] when the config names none).
* MoE: experts stacked as for Qwen3-MoE, a shared expert (``ffn_*_shexp``) and its 1-wide gate
  ``ffn_gate_inp_shexp`` (a vector in llama.cpp), ``expert_shared_feed_forward_length``. A checkpoint
  with fused experts (``experts.gate_up_proj``) is written fused (``ffn_gate_up_exps``, gate rows
  first as in transformers), which llama.cpp reads as well.
* the multi-token-prediction head (``mtp.*``) is not part of the model llama.cpp runs: left out.
"""
from __future__ import annotations

import numpy as np

from studio.export.arches.base import GgufArch, head_dim, rope_params
from studio.export.errors import UnsupportedModel

# transformers: x * (1 + w); llama.cpp: x * w
_PLUS_ONE = (".attn_norm.", ".post_attention_norm.", ".attn_q_norm.", ".attn_k_norm.")
_LAYER_TYPES = ("linear_attention", "full_attention")
_MROPE_DEFAULT = [11, 11, 10, 0]  # transformers' and llama.cpp's default mrope_section


def _dims(config: dict) -> tuple[int, int, int, int]:
    """(key heads, value heads, key head size, value head size) of the linear-attention layers."""
    return (int(config["linear_num_key_heads"]), int(config["linear_num_value_heads"]),
            int(config["linear_key_head_dim"]), int(config["linear_value_head_dim"]))


def tiled(n_k: int, per_k: int, size: int) -> np.ndarray:
    """Positions of V heads grouped by key head, (k, v-in-group, size), read as (v-in-group, k, size)."""
    return np.arange(n_k * per_k * size).reshape(n_k, per_k, size).swapaxes(0, 1).reshape(-1)


def v_order(gguf_name: str, n: int, config: dict) -> np.ndarray | None:
    """The new order of an axis of length ``n`` carrying V heads, or None where nothing moves."""
    n_k, n_v, k_dim, v_dim = _dims(config)
    if n_v == n_k:
        return None
    per_k = n_v // n_k
    if ".attn_qkv." in gguf_name or ".ssm_conv1d." in gguf_name:  # q and k rows first, then V heads
        qk = 2 * n_k * k_dim
        return np.concatenate([np.arange(qk), qk + tiled(n_k, per_k, v_dim)]) if n == qk + n_v * v_dim else None
    if ".attn_gate." in gguf_name:
        return tiled(n_k, per_k, v_dim)
    if any(part in gguf_name for part in (".ssm_alpha.", ".ssm_beta.", ".ssm_dt.")) or gguf_name.endswith(".ssm_a"):
        return tiled(n_k, per_k, 1)
    return None


def row_order(gguf_name: str, n: int, config: dict) -> np.ndarray | None:
    return None if ".ssm_out." in gguf_name else v_order(gguf_name, n, config)


def col_order(gguf_name: str, n: int, config: dict) -> np.ndarray | None:
    """``ssm_out`` reads the V heads: its columns follow them."""
    if ".ssm_out." not in gguf_name:
        return None
    n_k, n_v, _, v_dim = _dims(config)
    return None if n_v == n_k else tiled(n_k, n_v // n_k, v_dim)


def tensor(gguf_name: str, t, config: dict):
    if gguf_name == "output_norm.weight" or any(part in gguf_name for part in _PLUS_ONE):
        return t + 1
    if gguf_name.endswith(".ssm_a"):
        return -t.float().exp()
    return t


def shape(gguf_name: str, stored: tuple[int, ...], config: dict) -> tuple[int, ...]:
    """The conv kernel (C, 1, K) as (C, K) and the shared expert's gate (1, H) as (H,), as llama.cpp reads them."""
    if ".ssm_conv1d." in gguf_name or ".ffn_gate_inp_shexp." in gguf_name:
        return tuple(d for d in stored if d != 1) or stored
    return stored


def rename(name: str) -> str:
    if name.endswith(".linear_attn.dt_bias"):
        return name[: -len("dt_bias")] + "dt_proj.bias"
    if name.endswith((".mlp.experts.gate_up_proj", ".mlp.experts.down_proj")):  # fused experts: 3-D weights
        return name + ".weight"
    return name


def skip(name: str) -> bool:
    """The multi-token-prediction head: llama.cpp's main model does not run it."""
    return name.startswith(("mtp.", "model.mtp."))


def layer_types(config: dict) -> list[str]:
    n = int(config["num_hidden_layers"])
    types = config.get("layer_types")
    if types:
        return list(types)
    every = int(config.get("full_attention_interval", 4))
    return ["full_attention" if (i + 1) % every == 0 else "linear_attention" for i in range(n)]


def check(config: dict) -> None:
    n_k, n_v, k_dim, v_dim = _dims(config)
    hint = "export --format merged instead"
    if k_dim != v_dim:
        raise UnsupportedModel(f"GGUF export of Qwen3.5: llama.cpp needs equal key and value head sizes in the "
                               f"linear-attention layers (this model has {k_dim} and {v_dim})", hint)
    if n_v % n_k:
        raise UnsupportedModel(f"GGUF export of Qwen3.5: {n_v} value heads do not group over {n_k} key heads", hint)
    types = layer_types(config)
    odd = sorted(set(types) - set(_LAYER_TYPES))
    if odd or len(types) != int(config["num_hidden_layers"]):
        raise UnsupportedModel(f"GGUF export of Qwen3.5: layer types {odd or types} are not "
                               f"{' / '.join(_LAYER_TYPES)} for each of the {config['num_hidden_layers']} layers", hint)
    if len(set(types)) < 2:  # llama.cpp's hybrid cache fails to allocate the kind no layer uses
        raise UnsupportedModel(f"GGUF export of Qwen3.5: every layer is {types[0]}; llama.cpp's qwen35 runs "
                               "models that have both linear and full attention layers", hint)
    if config.get("attn_output_gate") is False:
        raise UnsupportedModel("GGUF export of Qwen3.5: llama.cpp's qwen35 expects the gated attention "
                               "(attn_output_gate) this model turns off", hint)


def rope_sections(config: dict) -> list[int]:
    """The M-RoPE sections (how many rotary pairs the time / height / width positions turn), four of them.

    llama.cpp's interleaved M-RoPE gives pair k the time position when k % 3 == 0 and k < 3 * s0, the
    height one when k % 3 == 1 and k < 3 * s1, the width one when k % 3 == 2 and k < 3 * s2, and an
    extra position otherwise, which is not the token's: a text token must find every rotary pair
    covered (measured: sections [4, 0, 0, 0] on 4 pairs move the logits by 0.3 within 12 tokens). The
    config's sections are kept when they cover every pair within a head (transformers' default [11, 11,
    10] does for Qwen3.5's 32 pairs); otherwise the pairs are shared out as the default shares them."""
    pairs = int(head_dim(config) * float(rope_params(config).get("partial_rotary_factor") or 1.0)) // 2
    sections = [int(x) for x in (rope_params(config).get("mrope_section") or _MROPE_DEFAULT)]
    sections = (sections + [0] * 4)[:4]
    if sum(sections) > head_dim(config) or not _covers(sections, pairs):
        sections = [len(range(i, pairs, 3)) for i in range(3)] + [0]
    return sections


def _covers(sections: list[int], pairs: int) -> bool:
    total = sum(sections)
    return total >= pairs and all(k < 3 * sections[k % 3] for k in range(pairs))


def hparams(w, config: dict) -> None:
    n_k, n_v, k_dim, v_dim = _dims(config)
    w.add_ssm_conv_kernel(int(config["linear_conv_kernel_dim"]))
    w.add_ssm_state_size(k_dim)
    w.add_ssm_group_count(n_k)
    w.add_ssm_time_step_rank(n_v)
    w.add_ssm_inner_size(n_v * v_dim)
    types = layer_types(config)
    w.add_array(f"{w.arch}.attention.recurrent_layers", [t == "linear_attention" for t in types])
    full = [i for i, t in enumerate(types) if t == "full_attention"]
    w.add_full_attention_interval(int(config.get("full_attention_interval") or (full[0] + 1 if full else 4)))
    w.add_rope_dimension_sections(rope_sections(config))
    if config.get("shared_expert_intermediate_size"):
        w.add_expert_shared_feed_forward_length(int(config["shared_expert_intermediate_size"]))


def _entry(model_type: str, arch: str) -> GgufArch:
    return GgufArch(model_type, arch, tensor=tensor, hparams=hparams, skip=skip, check=check, rename=rename,
                    row_order=row_order, col_order=col_order, shape=shape)


ARCHES = (
    _entry("qwen3_5_text", "qwen35"),
    _entry("qwen3_5_moe_text", "qwen35moe"),
)
