"""Write a merged model folder as one GGUF file with the ``gguf`` package (no llama.cpp checkout).

Each supported transformers ``model_type`` has an entry in ``studio.export.arches`` (one module per
family: its llama.cpp architecture, how tensors and keys differ from a Llama); mixture-of-experts
layers have their experts stacked into one tensor. Facts about
the format follow llama.cpp's ``convert_hf_to_gguf.py`` (key names, the q/k rotary permutation for
llama-arch, F32 for 1-D tensors, pre-tokenizer names); the code here is our own. Tensors are read
from the safetensors files one at a time and written as soon as they are converted.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from studio.export.arches import (
    ARCHES,
    REFUSED,
    Derived,
    GgufArch,
    head_dim,
    permute_qk,
    rope_params,
    rotary_dim,
    text_config,
    text_name,
)
from studio.export.errors import Progress, UnsupportedModel, no_progress
from studio.export.gguf_vocab import build_vocab
from studio.safetensors_io import TensorMeta, model_tensors, read_tensor

QUANTS = ("f16", "bf16", "q8_0", "q4_0", "q4_k_m", "q5_k_m", "q6_k")
K_RECIPES = ("q4_k_m", "q5_k_m", "q6_k")  # mixed recipes: kquants.recipe_type picks each tensor's type


# A checkpoint keeps one tensor per expert (model.layers.N.mlp.experts.E.gate_proj.weight); llama.cpp keeps
# each layer's experts stacked in one 3-D tensor (blk.N.ffn_gate_exps.weight, experts outermost).
_EXPERT = re.compile(r"^(?P<layer>.+\.experts)\.(?P<expert>\d+)\.(?P<proj>\w+)\.weight$")
SUPPORTED_ROPE = ("default", "linear", "llama3", "yarn")
# YaRN settings llama.cpp computes itself (its attention factor is 0.1 ln(factor) + 1, as transformers' default)
_YARN_UNREAD = ("attention_factor", "attn_factor", "mscale", "mscale_all_dim")
# Tensors llama.cpp keeps in F32 whatever the file type (its converter and quantizer agree): a state-space
# convolution kernel (ggml's ssm_conv reads F32, and its rows are a few values long).
# A mixture-of-experts router (``ffn_gate_inp``, the shared expert's ``ffn_gate_inp_shexp``) too: llama.cpp's
# quantizer leaves it unquantised, since a rounded router picks other experts where two are close.
ALWAYS_F32 = (".ssm_conv1d.", ".ffn_gate_inp.", ".ffn_gate_inp_shexp.")
# Left at 16 bits in a quantised file, as llama.cpp's quantizer leaves them: Gemma 4's per-layer input
# projection (every layer's input comes through it; small beside the embeddings).
KEEP_16_BIT = ("per_layer_model_proj.",)


def check_supported(config: dict) -> GgufArch:
    """The architecture entry for ``config``, or a clear error before any work starts."""
    config = text_config(config)
    arch = ARCHES.get(str(config.get("model_type")))
    if arch is None and str(config.get("model_type")) in REFUSED:
        REFUSED[str(config.get("model_type"))](config)
    if arch is None:
        raise UnsupportedModel(
            f"GGUF export does not support model type '{config.get('model_type')}'",
            f"supported: {', '.join(sorted(ARCHES))}; export --format merged or adapter instead")
    rope = rope_params(config)
    kind = rope.get("rope_type") or rope.get("type") or "default"
    if kind not in SUPPORTED_ROPE + arch.rope_types:  # a family may write more (Phi-3's longrope)
        raise UnsupportedModel(f"GGUF export does not support rope scaling '{kind}' for {arch.model_type}",
                               f"supported: {', '.join(SUPPORTED_ROPE + arch.rope_types)}; "
                               "export --format merged instead")
    if kind == "yarn" and any(rope.get(k) is not None for k in _YARN_UNREAD):
        raise UnsupportedModel("GGUF export does not support YaRN with a set attention factor or mscale",
                               "llama.cpp derives the attention factor from the scaling factor; "
                               "export --format merged instead")
    if arch.check is not None:
        arch.check(config)
    return arch


# -- tensors -------------------------------------------------------------------------------------

def tensor_type(gguf_name: str, shape: tuple[int, ...], quant: str, n_layers: int = 0, has_output: bool = True,
                ctx: Any = None):
    """The GGML type of one tensor: 1-D stays F32; quantised types fall back where rows don't fit blocks.

    The K recipes (q4_k_m, q5_k_m, q6_k) mix types by tensor and layer (``kquants.recipe_type``),
    which needs the layer count, whether the output layer is its own tensor and, for llama.cpp's counted and
    model-wide rules, the tensor's ``kquants.RecipeContext`` (``plan_tensors`` gives it).
    """
    import gguf

    T = gguf.GGMLQuantizationType
    if any(part in gguf_name for part in ALWAYS_F32):
        return T.F32
    if any(part in gguf_name for part in KEEP_16_BIT) and len(shape) > 1:
        return T.BF16 if quant == "bf16" else T.F16
    if quant in K_RECIPES:
        from studio.export.kquants import recipe_type

        return T[recipe_type(gguf_name, shape, quant, n_layers, has_output, ctx)]
    if len(shape) <= 1:
        return T.F32
    wanted = {"f16": T.F16, "bf16": T.BF16, "q8_0": T.Q8_0, "q4_0": T.Q4_0}[quant]
    if wanted == T.Q4_0 and gguf_name.startswith(("token_embd.", "output.")):
        wanted = T.Q8_0  # embeddings and output suffer most from 4 bits (llama.cpp keeps them higher too)
    block = gguf.GGML_QUANT_SIZES[wanted][0]
    if shape[-1] % block:
        return T.F16
    return wanted


def nbytes(shape: tuple[int, ...], qtype) -> int:
    import gguf

    block, size = gguf.GGML_QUANT_SIZES[qtype]
    n = math.prod(shape)
    return n // block * size


def encode_tensor(t, qtype):
    """A float tensor as the numpy bytes of ``qtype``."""
    import gguf
    import numpy as np

    arr = t.float().numpy()
    if qtype == gguf.GGMLQuantizationType.F32:
        return arr.astype(np.float32, copy=False)
    if qtype == gguf.GGMLQuantizationType.F16:
        return arr.astype(np.float16)
    from studio.export import kquants

    if kquants.is_k_type(qtype):
        return kquants.quantize(arr, qtype)  # the gguf package reads K-quants but cannot write them
    return kquants.quantize_in_chunks(arr, qtype)  # gguf.quants.quantize, a chunk of rows at a time


@dataclass
class PlannedTensor:
    hf_name: str
    gguf_name: str
    shape: tuple[int, ...]
    qtype: Any
    meta: TensorMeta | None  # None for tensors computed here (rope_freqs, a family's ``computed``)
    experts: list[TensorMeta] = field(default_factory=list)  # stacked, in expert order, when not empty
    derived: Derived | None = None  # built by the family from several checkpoint tensors (arch.derive)
    computed: Any = None  # the float tensor itself when ``meta`` is None

    @property
    def nbytes(self) -> int:
        """Bytes read from the model folder for this tensor."""
        if self.derived is not None:
            return sum(m.nbytes for m in self.derived.sources)
        return sum(m.nbytes for m in self.experts) if self.experts else (self.meta.nbytes if self.meta else 0)


def read_planned(p: PlannedTensor, config: dict, read: Any = None):
    """The float tensor ``p`` is written from: one checkpoint tensor, the stacked experts, or a computed one.

    ``read`` reads one checkpoint tensor (default: as stored; an export passes the merging reader)."""
    read = read or read_tensor
    if p.derived is not None:
        return p.derived.floats(read)
    if p.experts:
        import torch

        return torch.stack([read(m) for m in p.experts])
    if p.meta is None:
        return p.computed
    t = read(p.meta)
    return t.reshape(p.shape) if tuple(t.shape) != p.shape else t  # the family's shape (a size-1 axis dropped)


def plan_tensors(folder: Path, config: dict, arch: GgufArch, quant: str,
                 metas: list[TensorMeta] | None = None) -> list[PlannedTensor]:
    """What goes into the GGUF, in order: ``metas`` (default: the folder's weights) under llama.cpp's names."""
    import gguf

    config = text_config(config)
    n_layers = int(config["num_hidden_layers"])
    name_map = gguf.get_tensor_name_map(arch.model_arch(), n_layers)
    tied = bool(config.get("tie_word_embeddings", False))
    metas = metas if metas is not None else model_tensors(folder)
    has_output = not tied and any(text_name(m.name, config) == "lm_head.weight" for m in metas)
    out: list[PlannedTensor] = []
    freqs = llama3_rope_factors(config)
    if freqs is not None:
        name = gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight"
        out.append(PlannedTensor("", name, tuple(freqs.shape), gguf.GGMLQuantizationType.F32, None, computed=freqs))
    for name, t in (arch.computed(config) if arch.computed is not None else {}).items():
        out.append(PlannedTensor("", name, tuple(t.shape), gguf.GGMLQuantizationType.F32, None, computed=t))
    stacks: dict[str, list[tuple[int, TensorMeta]]] = {}  # stacked name -> (expert number, tensor)
    derived, metas = _derived(metas, config, arch, quant, n_layers, has_output)
    out += derived
    for m in metas:
        if m.name.endswith("rotary_emb.inv_freq"):
            continue
        text = text_name(m.name, config)
        if text is None or (tied and text == "lm_head.weight") or (arch.skip is not None and arch.skip(text)):
            continue
        hf_name = arch.rename(text) if arch.rename is not None else text
        expert = _EXPERT.match(hf_name)
        if expert:  # gathered below, once every expert of the layer is known
            stacks.setdefault(f"{expert['layer']}.{expert['proj']}", []).append((int(expert["expert"]), m))
            continue
        gname = name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gname is None:
            raise UnsupportedModel(f"GGUF export: no llama.cpp name for tensor {m.name} of {arch.model_type}",
                                   "export --format merged instead")
        shape = arch.shape(gname, tuple(m.shape), config) if arch.shape is not None else tuple(m.shape)
        qtype = tensor_type(gname, shape, quant, n_layers, has_output)
        out.append(PlannedTensor(m.name, gname, shape, qtype, m))
    for stacked, numbered in stacks.items():
        parts = [m for _, m in sorted(numbered, key=lambda e: e[0])]
        base = name_map.get_name(stacked)
        shapes = {tuple(m.shape) for m in parts}
        if base is None or len(shapes) != 1 or len(parts) != int(_expert_count(config)):
            raise UnsupportedModel(f"GGUF export: cannot stack the experts {stacked}.* of {arch.model_type} "
                                   f"({len(parts)} tensors, shapes {sorted(shapes)})", "export --format merged instead")
        shape = (len(parts), *shapes.pop())
        gname = base + ".weight"
        out.append(PlannedTensor(stacked, gname, shape, tensor_type(gname, shape, quant, n_layers, has_output),
                                 parts[0], experts=parts))
    if quant in K_RECIPES:  # llama.cpp's rules that look past one tensor: its attn_v count, experts, a 70B
        from studio.export.kquants import recipe_context

        ctxs = recipe_context([p.gguf_name for p in out], config, arch.arch)
        for p in out:
            if p.meta is not None and not (p.derived is not None and p.derived.qtype):
                p.qtype = tensor_type(p.gguf_name, p.shape, quant, n_layers, has_output, ctxs[p.gguf_name])
    return out


def _derived(metas: list[TensorMeta], config: dict, arch: GgufArch, quant: str, n_layers: int,
             has_output: bool) -> tuple[list[PlannedTensor], list[TensorMeta]]:
    """The family's built tensors (``arch.derive``) and the checkpoint tensors left for the generic plan."""
    if arch.derive is None:
        return [], metas
    import gguf

    named = {}
    for m in metas:
        name = arch.source_name(m.name, config)
        if name is not None:
            named[name] = m
    out: list[PlannedTensor] = []
    used: set[str] = set()
    for d in arch.derive(named, config, quant):
        qtype = gguf.GGMLQuantizationType[d.qtype] if d.qtype else tensor_type(d.gguf_name, d.shape, quant,
                                                                                n_layers, has_output)
        out.append(PlannedTensor(d.sources[0].name, d.gguf_name, d.shape, qtype, d.sources[0], derived=d))
        used.update(m.name for m in d.sources)
    return out, [m for m in metas if m.name not in used]


def _expert_count(config: dict) -> int:
    return int(config.get("num_local_experts") or config.get("num_experts") or 0)


def llama3_rope_factors(config: dict):
    """llama.cpp keeps Llama-3.1 style rope scaling as a ``rope_freqs`` tensor of per-frequency factors."""
    import torch

    config = text_config(config)
    rope = rope_params(config)
    if (rope.get("rope_type") or rope.get("type")) != "llama3":
        return None
    dim = head_dim(config)
    base = float(rope["rope_theta"])
    factor, low, high = float(rope["factor"]), float(rope["low_freq_factor"]), float(rope["high_freq_factor"])
    old_ctx = float(rope["original_max_position_embeddings"])
    freqs = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    wavelen = 2 * math.pi / freqs
    smooth = (old_ctx / wavelen - low) / (high - low)
    mid = 1 / ((1 - smooth) / factor + smooth)
    return torch.where(wavelen < old_ctx / high, torch.ones_like(freqs),
                       torch.where(wavelen > old_ctx / low, torch.full_like(freqs, factor), mid))


def permuted(p: PlannedTensor, t, config: dict, arch: GgufArch):
    """``t``'s rows in llama.cpp's order (q/k rows permuted for llama-arch, the family's ``row_order``);
    also maps row numbers (``t`` a numpy range)."""
    config = text_config(config)
    if arch.permute_qk and ".attn_q." in p.gguf_name:
        t = permute_qk(t, int(config["num_attention_heads"]))
    elif arch.permute_qk and ".attn_k." in p.gguf_name:
        t = permute_qk(t, int(config.get("num_key_value_heads") or config["num_attention_heads"]))
    order = arch.row_order(p.gguf_name, int(t.shape[0]), config) if arch.row_order is not None else None
    return t if order is None else t[_index(t, order)]


def _index(t, order):
    """``order`` as an index for ``t`` (a torch tensor or a numpy array)."""
    import numpy as np
    import torch

    return order if isinstance(t, np.ndarray) else torch.as_tensor(order, dtype=torch.long)


def valued(p: PlannedTensor, t, config: dict, arch: GgufArch):
    """The family's column order and value change (a norm's +1, a scale) on rows already in llama.cpp's
    order; row-wise, so the read-back may apply it to sampled rows."""
    config = text_config(config)
    order = arch.col_order(p.gguf_name, int(t.shape[-1]), config) if arch.col_order is not None else None
    if order is not None:
        t = t[..., _index(t, order)]
    return arch.tensor(p.gguf_name, t, config) if arch.tensor is not None else t


def oriented(p: PlannedTensor, t, config: dict, arch: GgufArch):
    """The float tensor in llama.cpp's layout, before encoding."""
    return valued(p, permuted(p, t, config, arch), config, arch)


def convert_tensor(p: PlannedTensor, t, config: dict, arch: GgufArch):
    return encode_tensor(oriented(p, t, config, arch), p.qtype)


# -- metadata ------------------------------------------------------------------------------------

def add_hparams(w, config: dict, arch: GgufArch, vocab_size: int) -> None:
    """Hyper-parameters under llama.cpp's key names."""
    config = text_config(config)
    n_head = int(config["num_attention_heads"])
    head_dim = int(config.get("head_dim") or config["hidden_size"] // n_head)
    rope = rope_params(config)
    w.add_context_length(int(config.get("max_position_embeddings", 4096)))
    w.add_embedding_length(int(config["hidden_size"]))
    w.add_block_count(int(config["num_hidden_layers"]))
    w.add_feed_forward_length(int(config["intermediate_size"]))
    if _expert_count(config):
        w.add_expert_count(_expert_count(config))
        w.add_expert_used_count(int(config.get("num_experts_per_tok") or config["top_k_experts"]))  # Gemma 4: top_k
        if config.get("moe_intermediate_size"):
            w.add_expert_feed_forward_length(int(config["moe_intermediate_size"]))
    w.add_head_count(n_head)
    w.add_head_count_kv(int(config.get("num_key_value_heads") or n_head))
    w.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-6)))
    w.add_rope_freq_base(float(rope["rope_theta"]))
    w.add_rope_dimension_count(rotary_dim(config))  # partial rotary (Phi-2, Phi-4-mini): fewer than head_dim
    if config.get("head_dim") or head_dim != int(config["hidden_size"]) // n_head:  # as llama.cpp's converter
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
    w.add_vocab_size(vocab_size)
    kind = rope.get("rope_type") or rope.get("type")
    if kind in ("linear", "yarn"):
        import gguf

        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR if kind == "linear" else gguf.RopeScalingType.YARN)
        w.add_rope_scaling_factor(float(rope["factor"]))
    if kind == "yarn":  # the keys llama.cpp reads; it computes the attention factor from the factor itself
        w.add_rope_scaling_orig_ctx_len(int(rope["original_max_position_embeddings"]))
        w.add_rope_scaling_yarn_beta_fast(float(rope.get("beta_fast", 32.0)))
        w.add_rope_scaling_yarn_beta_slow(float(rope.get("beta_slow", 1.0)))
        if rope.get("extrapolation_factor") is not None:
            w.add_rope_scaling_yarn_ext_factor(float(rope["extrapolation_factor"]))
    if arch.hparams is not None:
        arch.hparams(w, config)


def file_type(quant: str) -> int:
    import gguf

    F = gguf.LlamaFileType
    return {"f16": F.MOSTLY_F16, "bf16": F.MOSTLY_BF16, "q8_0": F.MOSTLY_Q8_0, "q4_0": F.MOSTLY_Q4_0,
            "q4_k_m": F.MOSTLY_Q4_K_M, "q5_k_m": F.MOSTLY_Q5_K_M, "q6_k": F.MOSTLY_Q6_K}[quant]


def write_gguf(folder: Path, out_path: Path, quant: str = "f16", name: str = "", progress: Progress = no_progress,
               extra_kv: dict | None = None, trust: bool = False, vocab: Any = None, weights: Any = None) -> Path:
    """Write ``folder`` (a merged model) as ``out_path`` in GGUF; returns the path. ``vocab``: the
    folder's ``build_vocab`` when the caller already read it (a merge copies the tokenizer files unchanged).
    ``weights``: where the tensors come from instead of the folder's files (``merge.MergedWeights``:
    merged as they are read); the folder then gives config and tokenizer only."""
    import gguf

    if quant not in QUANTS:
        raise UnsupportedModel(f"GGUF quantisation '{quant}' is not supported", f"choose one of {', '.join(QUANTS)}")
    config = text_config(json.loads((Path(folder) / "config.json").read_text(encoding="utf-8")))
    arch = check_supported(config)
    vocab = vocab if vocab is not None else build_vocab(Path(folder), config, trust)
    plan = plan_tensors(Path(folder), config, arch, quant, metas=weights.metas() if weights is not None else None)
    w = gguf.GGUFWriter(str(out_path), arch.arch)
    w.add_name(name or Path(folder).name)
    w.add_file_type(file_type(quant))
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    add_hparams(w, config, arch, len(vocab.tokens))
    vocab.add_to(w)
    for key, value in (extra_kv or {}).items():
        w.add_string(key, str(value))
    for p in plan:
        w.add_tensor_info(p.gguf_name, p.shape, _np_float32(), nbytes(p.shape, p.qtype), raw_dtype=p.qtype)
    try:
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        _write_data(w, plan, config, arch, progress, weights.read if weights is not None else read_tensor)
    finally:
        w.close()
    return out_path


def _write_data(w, plan: list[PlannedTensor], config: dict, arch: GgufArch, progress: Progress,
                read: Any = read_tensor) -> None:
    total = sum(p.nbytes for p in plan)
    done = 0
    progress("gguf", 0, total)
    for p in plan:
        if p.derived is not None and p.derived.raw is not None:  # copied in its stored quantisation
            w.write_tensor_data(p.derived.raw(read))
        else:
            w.write_tensor_data(convert_tensor(p, read_planned(p, config, read), config, arch))
        done += p.nbytes
        progress("gguf", done, total)
    w.flush()
    for fh in w.fout or []:
        import os

        os.fsync(fh.fileno())


def _np_float32():
    import numpy as np

    return np.dtype(np.float32)
