"""K-quant block encoders (Q4_K, Q5_K, Q6_K) in vectorised numpy, and the mixed recipes
Q4_K_M / Q5_K_M / Q6_K that say which tensor gets which type.

The ``gguf`` package can read these types back (``gguf.quants.dequantize``) but not write them,
so they are written here from the format's description (a row is cut into super-blocks of 256
values; the byte layout of one super-block is):

* Q4_K (144 bytes): ``d`` f16, ``dmin`` f16, 12 bytes of eight 6-bit scales and eight 6-bit mins,
  128 bytes of 4-bit values. Sub-block j (32 values) decodes as ``d*sc[j]*q - dmin*m[j]``.
  Scale bytes 0-3 hold sc[0..3] in their low 6 bits, 4-7 hold m[0..3]; bytes 8-11 hold the low
  nibbles of sc[4..7] (low half) and m[4..7] (high half), whose top 2 bits sit in bits 6-7 of bytes
  0-3 (scales) and 4-7 (mins). Value bytes come in four 32-byte runs: run c carries sub-block 2c
  in its low nibbles and 2c+1 in its high nibbles.
* Q5_K (176 bytes): as Q4_K plus, between the scales and the 4-bit values, 32 bytes whose bit j of
  byte i is the fifth bit of value i of sub-block j.
* Q6_K (210 bytes): 128 bytes of low nibbles, 64 bytes of high 2-bit pairs, sixteen int8 scales
  (one per 16 values), ``d`` f16; values decode as ``d*scale*(q-32)``. Each half of 128 values
  owns 64 low-nibble bytes (byte i: value i low, value 64+i high) and 32 high-bit bytes (bits
  2k..2k+1 of byte i: value 32k+i).

How the scales are chosen is our own: each sub-block tries a few candidate step sizes, refits
scale (and offset) by least squares on the rounded values, keeps the one with the smallest squared
error, then the sub-block scales are themselves quantised against the super-block's f16 ``d`` and
the values rounded once more against the final, stored scales. Work goes in chunks of rows, so
the memory on top of the tensor is a few times one chunk.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

QK_K = 256
CHUNK_VALUES = 1 << 20  # values encoded per step: bounds the temporaries (~ a few x 4 MB)

# GGUF files' recipe names -> the type most tensors get
RECIPES = {"q4_k_m": "Q4_K", "q5_k_m": "Q5_K", "q6_k": "Q6_K"}


# -- the encoders --------------------------------------------------------------------------------

def _f16(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float16)


def _fit_asym(x: np.ndarray, nmax: int) -> tuple[np.ndarray, np.ndarray]:
    """Per sub-block (last axis) ``scale`` >= 0 and ``offset`` <= 0 with x ~ scale*q + offset, q in 0..nmax."""
    lo = np.minimum(x.min(axis=-1, keepdims=True), 0.0)
    hi = x.max(axis=-1, keepdims=True)
    span = hi - lo
    live = span > 0
    best_err = np.full(lo.shape, np.inf, dtype=np.float32)
    best_s = np.where(live, span / nmax, 0.0).astype(np.float32)
    best_o = lo.astype(np.float32)
    n = x.shape[-1]
    for steps in (nmax - 0.5, nmax, nmax + 0.5, nmax + 1.0):
        s = np.where(live, span / steps, 1.0)
        q = np.clip(np.rint((x - lo) / s), 0, nmax)
        # least squares for x ~ a*q + b
        sq, sx = q.sum(-1, keepdims=True), x.sum(-1, keepdims=True)
        sqq, sqx = (q * q).sum(-1, keepdims=True), (q * x).sum(-1, keepdims=True)
        det = n * sqq - sq * sq
        ok = det > 0
        a = np.where(ok, (n * sqx - sq * sx) / np.where(ok, det, 1.0), s)
        b = np.where(ok, (sqq * sx - sq * sqx) / np.where(ok, det, 1.0), lo)
        pos = b > 0  # the offset is stored as a non-negative "min" that is subtracted: keep b <= 0
        a = np.where(pos, sqx / np.maximum(sqq, 1e-30), a)
        b = np.where(pos, 0.0, b)
        a = np.maximum(a, 0.0)
        err = ((a * q + b - x) ** 2).sum(-1, keepdims=True)
        better = live & (err < best_err)
        best_err = np.where(better, err, best_err)
        best_s = np.where(better, a, best_s)
        best_o = np.where(better, b, best_o)
    return best_s[..., 0], best_o[..., 0]


def _six_bit(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Non-negative per-sub-block values (nb, 8) as an f16 super-block step and 6-bit integers."""
    top = values.max(axis=-1, keepdims=True)
    d = _f16(top / 63.0)
    d32: np.ndarray = d.astype(np.float32)
    q = np.where(d32 > 0, np.clip(np.rint(values / np.where(d32 > 0, d32, 1.0)), 0, 63), 0).astype(np.uint8)
    return d, q


def _pack_scales(sc: np.ndarray, mn: np.ndarray) -> np.ndarray:
    """Eight 6-bit scales and eight 6-bit mins per block -> 12 bytes."""
    out = np.empty((sc.shape[0], 12), dtype=np.uint8)
    out[:, 0:4] = (sc[:, :4] & 63) | ((sc[:, 4:] >> 4) << 6)
    out[:, 4:8] = (mn[:, :4] & 63) | ((mn[:, 4:] >> 4) << 6)
    out[:, 8:12] = (sc[:, 4:] & 15) | ((mn[:, 4:] & 15) << 4)
    return out


def _encode_asym(blocks: np.ndarray, bits: int) -> np.ndarray:
    """Q4_K (bits=4) or Q5_K (bits=5) super-blocks, ``blocks`` float32 (nb, 256)."""
    nb = blocks.shape[0]
    nmax = (1 << bits) - 1
    x = blocks.reshape(nb, 8, 32)
    scale, offset = _fit_asym(x, nmax)
    d, sc = _six_bit(scale)
    dmin, mn = _six_bit(-offset)
    step = (d.astype(np.float32) * sc)[..., None]
    low = (dmin.astype(np.float32) * mn)[..., None]
    q = np.where(step > 0, np.clip(np.rint((x + low) / np.where(step > 0, step, 1.0)), 0, nmax), 0).astype(np.uint8)
    parts = [d.view(np.uint8).reshape(nb, 2), dmin.view(np.uint8).reshape(nb, 2), _pack_scales(sc, mn)]
    if bits == 5:
        high = (q >> 4) & 1  # (nb, 8 sub-blocks, 32)
        parts.append((high << np.arange(8, dtype=np.uint8)[None, :, None]).sum(axis=1, dtype=np.uint8))
    lo4 = (q & 15).reshape(nb, 4, 2, 32)
    parts.append((lo4[:, :, 0] | (lo4[:, :, 1] << 4)).reshape(nb, 128))
    return np.concatenate(parts, axis=1)


def _fit_sym(x: np.ndarray) -> np.ndarray:
    """Per sub-block (last axis) signed scale with x ~ scale*q, q in -32..31."""
    idx = np.abs(x).argmax(axis=-1)[..., None]
    peak = np.take_along_axis(x, idx, axis=-1)  # the signed value of largest magnitude
    live = peak != 0
    best_err = np.full(peak.shape, np.inf, dtype=np.float32)
    best = np.zeros(peak.shape, dtype=np.float32)
    for target in (-32.0, -31.5, -31.0, -30.5, -30.0):
        s = np.where(live, peak / target, 1.0)
        q = np.clip(np.rint(x / s), -32, 31)
        qq = (q * q).sum(-1, keepdims=True)
        a = np.where(qq > 0, (q * x).sum(-1, keepdims=True) / np.maximum(qq, 1e-30), s)
        err = ((a * q - x) ** 2).sum(-1, keepdims=True)
        better = live & (err < best_err)
        best_err = np.where(better, err, best_err)
        best = np.where(better, a, best)
    return best[..., 0]


def _encode_q6(blocks: np.ndarray) -> np.ndarray:
    """Q6_K super-blocks, ``blocks`` float32 (nb, 256)."""
    nb = blocks.shape[0]
    x = blocks.reshape(nb, 16, 16)
    scale = _fit_sym(x)
    top = np.abs(scale).max(axis=-1, keepdims=True)
    d = _f16(top / 127.0)
    d32: np.ndarray = d.astype(np.float32)
    sc = np.where(d32 > 0, np.clip(np.rint(scale / np.where(d32 > 0, d32, 1.0)), -127, 127), 0).astype(np.int8)
    step = (d32 * sc)[..., None]
    q = np.where(step != 0, np.clip(np.rint(x / np.where(step != 0, step, 1.0)), -32, 31), 0)
    q = (q + 32).astype(np.uint8).reshape(nb, 2, 128)  # two halves of 128 values
    ql = (q[:, :, :64] & 15) | ((q[:, :, 64:] & 15) << 4)  # (nb, 2, 64)
    hi = (q >> 4).reshape(nb, 2, 4, 32)
    qh = hi[:, :, 0] | (hi[:, :, 1] << 2) | (hi[:, :, 2] << 4) | (hi[:, :, 3] << 6)  # (nb, 2, 32)
    return np.concatenate([ql.reshape(nb, 128), qh.reshape(nb, 64), sc.view(np.uint8),
                           d.view(np.uint8).reshape(nb, 2)], axis=1)


_ENCODERS = {"Q4_K": lambda b: _encode_asym(b, 4), "Q5_K": lambda b: _encode_asym(b, 5), "Q6_K": _encode_q6}


def is_k_type(qtype: Any) -> bool:
    return getattr(qtype, "name", str(qtype)) in _ENCODERS


def quantize(arr: np.ndarray, qtype: Any) -> np.ndarray:
    """``arr`` (..., n*256) float as K-quant bytes shaped (..., n*block_bytes), like ``gguf.quants.quantize``."""
    name = getattr(qtype, "name", str(qtype))
    return quantize_in_chunks(arr, qtype, _ENCODERS[name])


def quantize_in_chunks(arr: np.ndarray, qtype: Any, encode=None) -> np.ndarray:
    """Any block type, a chunk of rows at a time, into one preallocated output: the temporaries
    of the encoder (ours for K-types, else ``gguf.quants.quantize``) never cover the whole tensor."""
    import gguf

    qtype = gguf.GGMLQuantizationType[getattr(qtype, "name", str(qtype))]
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    if arr.shape[-1] % block:
        raise ValueError(f"{qtype.name} needs rows that are a multiple of {block} values, got {arr.shape[-1]}")
    rows = arr.reshape(-1, arr.shape[-1])
    per_row = arr.shape[-1] // block
    out = np.empty((rows.shape[0], per_row * size), dtype=np.uint8)
    step = max(1, CHUNK_VALUES // arr.shape[-1])
    for i in range(0, rows.shape[0], step):
        chunk = np.asarray(rows[i:i + step], dtype=np.float32)
        if encode is None:
            out[i:i + step] = gguf.quants.quantize(chunk, qtype)
        else:
            out[i:i + step] = encode(chunk.reshape(-1, block)).reshape(-1, per_row * size)
    return out.reshape(*arr.shape[:-1], per_row * size)


# -- the mixed recipes ---------------------------------------------------------------------------

# a K-type that does not fit a row width falls back to the nearest 32-value type, then to F16
FALLBACK = {"Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0"}


def more_bits(layer: int, n_layers: int) -> bool:
    """The layers a _M recipe gives more bits: the first and last eighth, and every third in between."""
    return layer < n_layers // 8 or layer >= 7 * n_layers // 8 or (layer - n_layers // 8) % 3 == 2


def _layer(gguf_name: str) -> int | None:
    parts = gguf_name.split(".")
    if len(parts) > 2 and parts[0] == "blk" and parts[1].isdigit():
        return int(parts[1])
    return None


@dataclass(frozen=True)
class RecipeContext:
    """What llama.cpp's recipe reads beyond one tensor's name and shape (``llama_tensor_get_type``): where the
    tensor stands among the attn_v-like tensors in file order (attn_v, attn_qkv, attn_kv_b: llama.cpp counts
    them, so a hybrid model's linear-attention attn_qkv count too), the expert count, and whether llama.cpp
    takes the model for a 70B (llama with 80 layers and grouped KV heads, qwen2 with 80 layers)."""

    attn_v_index: int | None = None
    attn_v_count: int = 0
    n_expert: int = 0
    is_70b: bool = False


def category(gguf_name: str) -> str:
    """llama.cpp's broad tensor category (``tensor_get_category``), by substring in its order."""
    if gguf_name == "output.weight":
        return "output"
    if gguf_name in ("token_embd.weight", "per_layer_token_embd.weight"):
        return "token_embd"
    for part, cat in (("attn_qkv.weight", "attn_v"), ("attn_kv_b.weight", "attn_v"), ("attn_v.weight", "attn_v"),
                      ("attn_k.weight", "attn_k"), ("attn_q.weight", "attn_q"), ("attn_output.weight", "attn_output"),
                      ("ffn_up", "ffn_up"), ("ffn_gate", "ffn_gate"), ("ffn_down", "ffn_down")):
        if part in gguf_name:
            return cat
    return "other"


def _order_layer(gguf_name: str) -> int:
    layer = _layer(gguf_name)
    return -1 if layer is None else layer


def recipe_context(names: list[str], config: dict, arch: str) -> dict[str, RecipeContext]:
    """Each tensor's ``RecipeContext``, from the file's tensor names in order."""
    n_layers = int(config.get("num_hidden_layers") or 0)
    heads, kv = config.get("num_attention_heads"), config.get("num_key_value_heads")
    is_70b = n_layers == 80 and (arch == "qwen2" or (arch == "llama" and kv is not None and kv != heads))
    n_expert = int(config.get("num_local_experts") or config.get("num_experts") or 0)
    # in llama.cpp's order: by layer, then by name (llama_model_loader's weight_name_comparer)
    v_like = sorted((n for n in names if category(n) == "attn_v"), key=lambda n: (_order_layer(n), n))
    where = {n: i for i, n in enumerate(v_like)}
    return {n: RecipeContext(where.get(n), len(v_like), n_expert, is_70b) for n in names}


def recipe_type(gguf_name: str, shape: tuple[int, ...], recipe: str, n_layers: int, has_output: bool,
                ctx: RecipeContext | None = None) -> str:
    """The GGML type name of one tensor under ``recipe`` (q4_k_m, q5_k_m, q6_k), as llama.cpp's quantiser
    (``llama_tensor_get_type`` in llama-quant.cpp) picks it for these recipes:

    * 1-D tensors (norms, biases, rope factors) stay F32;
    * the output layer, or the token embeddings when the output is tied to them, gets Q6_K
      (Q8_0 when its rows are not a multiple of 256);
    * attn_v-like tensors (attn_v, attn_qkv, attn_kv_b), with the _M recipes, get Q6_K where ``more_bits``
      picks their position among them; a 70B's Q4_K ones get Q5_K; with 8 experts all get Q8_0;
    * with 8 experts, attn_k gets Q8_0 and, in q4_k_m, attn_output Q5_K;
    * every ffn_down (the experts' and a shared expert's too), with the _M recipes, gets Q6_K in the layers
      ``more_bits`` picks;
    * everything else gets the recipe's type;
    * a K-type that does not divide a row falls back: Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0,
      and to F16 when even 32 does not divide it.

    Without ``ctx`` an attn_v-like tensor's position is its layer (a model with one per layer).
    """
    if len(shape) <= 1:
        return "F32"
    width = shape[-1]
    want = RECIPES[recipe]
    is_output = gguf_name == "output.weight" or (not has_output and gguf_name == "token_embd.weight")
    if is_output:
        return "Q6_K" if width % QK_K == 0 else "Q8_0"
    ctx = ctx or RecipeContext()
    cat, layer, mixed = category(gguf_name), _layer(gguf_name), recipe in ("q4_k_m", "q5_k_m")
    if cat == "attn_v":
        i, n = (ctx.attn_v_index, ctx.attn_v_count) if ctx.attn_v_index is not None else (layer, n_layers)
        if mixed and i is not None and n > 0 and more_bits(i, n):
            want = "Q6_K"
        if ctx.is_70b and want == "Q4_K":
            want = "Q5_K"
        if ctx.n_expert == 8:
            want = "Q8_0"
    elif cat == "attn_k" and ctx.n_expert == 8:
        want = "Q8_0"
    elif cat == "ffn_down" and mixed and layer is not None and n_layers > 0 and more_bits(layer, n_layers):
        want = "Q6_K"
    elif cat == "attn_output" and ctx.n_expert == 8 and recipe == "q4_k_m":
        want = "Q5_K"
    if width % QK_K and want in FALLBACK:
        want = FALLBACK[want]
    if width % 32:
        want = "F16"
    return want
