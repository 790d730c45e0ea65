"""gpt-oss (transformers ``gpt_oss``, llama.cpp ``gpt-oss``): attention with biases and sinks, alternating
sliding/full layers, YaRN rope, and mixture-of-experts layers whose experts need their own plan.

A checkpoint keeps each layer's experts as fused tensors: ``gate_up_proj`` with the gate and up rows
interleaved (gate = even rows, up = odd rows), its bias interleaved the same way, and ``down_proj``;
published checkpoints store both weights as MXFP4 (``*_blocks`` + ``*_scales``, output rows outermost),
a dequantised one as floats (input features outermost, i.e. transposed). llama.cpp wants them split
(``ffn_gate_exps``/``ffn_up_exps``/``ffn_down_exps``, output rows outermost, biases beside them).

* MXFP4 experts are copied into GGML's MXFP4 type at every quant: the same codes and scales
  (``studio.export.mxfp4.to_ggml``), never dequantised and re-encoded.
* Float experts (a dequantised checkpoint, or experts a merge changed) follow the requested quant,
  except the 4-bit ones (q4_0, q4_k_m), where they are encoded as MXFP4, the format gpt-oss was trained
  in and llama.cpp's MXFP4_MOE recipe uses.
* Expert and router biases stay F32.

Facts (which tensors split how, the keys) follow llama.cpp's ``conversion/gpt_oss.py`` and
``src/models/openai-moe.cpp``; the code is our own.
"""
from __future__ import annotations

import re
from typing import Any

from studio.export.arches.base import Derived, GgufArch, Reader
from studio.export.errors import UnsupportedModel

FLOAT_EXPERTS_AS_MXFP4 = ("q4_0", "q4_k_m")  # requested quants at which float experts are encoded as MXFP4
SWIGLU_ALPHA, SWIGLU_LIMIT = 1.702, 7.0  # llama.cpp's LLM_FFN_SWIGLU_OAI_MOE has these built in
_EXPERTS = re.compile(r"^model\.layers\.(\d+)\.mlp\.experts\.(\w+)$")


def _name(tensor: str, layer: int, suffix: str) -> str:
    import gguf

    return gguf.TENSOR_NAMES[getattr(gguf.MODEL_TENSOR, tensor)].format(bid=layer) + suffix


def _rows(parity: int | None):
    """Every row (None), or the even (0) / odd (1) rows of a fused gate_up tensor, on axis 1."""
    return slice(None) if parity is None else slice(parity, None, 2)


def _mxfp4(gguf_name: str, blocks: Any, scales: Any, parity: int | None) -> Derived:
    """One expert weight from the checkpoint's MXFP4 blocks (E, rows, n_blocks, 16): copied as stored."""
    from studio.export import mxfp4

    rows = _rows(parity)
    n_experts, n_rows, n_blocks = blocks.shape[:3]
    shape = (n_experts, n_rows // 2 if parity is not None else n_rows, n_blocks * mxfp4.BLOCK)

    def floats(read: Reader):
        return mxfp4.dequantize(read(blocks)[:, rows], read(scales)[:, rows])

    def raw(read: Reader):
        return mxfp4.to_ggml(read(blocks)[:, rows], read(scales)[:, rows])

    return Derived(gguf_name, shape, (blocks, scales), floats, raw, "MXFP4")


def _float(gguf_name: str, meta: Any, parity: int | None, quant: str) -> Derived:
    """One expert weight from a float checkpoint tensor (E, in, out): rows picked from ``out``, transposed."""
    rows = _rows(parity)
    n_experts, n_in, n_out = meta.shape
    shape = (n_experts, n_out // 2 if parity is not None else n_out, n_in)

    def floats(read: Reader):
        return read(meta).transpose(1, 2)[:, rows].contiguous()

    qtype = "MXFP4" if quant in FLOAT_EXPERTS_AS_MXFP4 and n_in % 32 == 0 else None
    return Derived(gguf_name, shape, (meta,), floats, None, qtype)


def _bias(gguf_name: str, meta: Any, parity: int | None) -> Derived:
    """An expert bias (E, out): the gate's or up's columns of the fused one, or all of down's."""
    cols = _rows(parity)
    n_experts, n_out = meta.shape
    shape = (n_experts, n_out // 2 if parity is not None else n_out)
    return Derived(gguf_name, shape, (meta,), lambda read: read(meta)[:, cols].contiguous(), None, "F32")


def derive(metas: dict[str, Any], config: dict, quant: str) -> list[Derived]:
    """The split expert tensors of every layer, from whichever form the checkpoint stores them in."""
    layers: dict[int, dict[str, Any]] = {}
    for name, meta in metas.items():
        m = _EXPERTS.match(name)
        if m:
            layers.setdefault(int(m[1]), {})[m[2]] = meta
    out: list[Derived] = []
    for layer, parts in sorted(layers.items()):
        gate, up, down = (_name(t, layer, ".weight") for t in ("FFN_GATE_EXP", "FFN_UP_EXP", "FFN_DOWN_EXP"))
        if {"gate_up_proj_blocks", "gate_up_proj_scales"} <= parts.keys():
            blocks, scales = parts.pop("gate_up_proj_blocks"), parts.pop("gate_up_proj_scales")
            out += [_mxfp4(gate, blocks, scales, 0), _mxfp4(up, blocks, scales, 1)]
        elif "gate_up_proj" in parts:
            fused = parts.pop("gate_up_proj")
            out += [_float(gate, fused, 0, quant), _float(up, fused, 1, quant)]
        if {"down_proj_blocks", "down_proj_scales"} <= parts.keys():
            out.append(_mxfp4(down, parts.pop("down_proj_blocks"), parts.pop("down_proj_scales"), None))
        elif "down_proj" in parts:
            out.append(_float(down, parts.pop("down_proj"), None, quant))
        if "gate_up_proj_bias" in parts:
            fused = parts.pop("gate_up_proj_bias")
            out += [_bias(gate.replace(".weight", ".bias"), fused, 0), _bias(up.replace(".weight", ".bias"), fused, 1)]
        if "down_proj_bias" in parts:
            out.append(_bias(down.replace(".weight", ".bias"), parts.pop("down_proj_bias"), None))
        if parts:
            raise UnsupportedModel(f"GGUF export: gpt-oss layer {layer} has expert tensors this export cannot "
                                   f"place: {', '.join(sorted(parts))}", "export --format merged instead")
    return out


def rename(name: str) -> str:
    """The attention sinks are stored without a ``.weight``; llama.cpp's tensor is ``attn_sinks.weight``."""
    return name + ".weight" if name.endswith(".self_attn.sinks") else name


def hparams(w: Any, config: dict) -> None:
    w.add_sliding_window(int(config["sliding_window"]))
    w.add_expert_feed_forward_length(int(config["intermediate_size"]))


def check(config: dict) -> None:
    """What llama.cpp's gpt-oss graph has built in: the SwiGLU constants, sliding layers alternating from
    the first, an output layer of its own, biases on the attention projections."""
    n_layers = int(config["num_hidden_layers"])
    alternating = ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(n_layers)]
    problems = []
    if (float(config.get("swiglu_alpha", SWIGLU_ALPHA)), float(config.get("swiglu_limit", SWIGLU_LIMIT))) != \
            (SWIGLU_ALPHA, SWIGLU_LIMIT):
        problems.append(f"SwiGLU alpha/limit {config.get('swiglu_alpha')}/{config.get('swiglu_limit')} "
                        f"(llama.cpp runs {SWIGLU_ALPHA}/{SWIGLU_LIMIT})")
    if list(config.get("layer_types") or alternating) != alternating:
        problems.append("layer types other than sliding/full alternating from the first layer")
    if config.get("tie_word_embeddings"):
        problems.append("an output layer tied to the embeddings")
    if not config.get("attention_bias", True):
        problems.append("attention without biases")
    if problems:
        raise UnsupportedModel("GGUF export: this gpt-oss variant differs from what llama.cpp's gpt-oss runs: "
                               + "; ".join(problems), "export --format merged or adapter instead")


ARCHES = (GgufArch("gpt_oss", "gpt-oss", hparams=hparams, check=check, rename=rename, derive=derive),)
