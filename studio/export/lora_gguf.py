"""A PEFT LoRA adapter as a GGUF adapter file, the format llama.cpp (``--lora``) and Ollama
(``ADAPTER``) load on top of a base model GGUF.

The layout (llama.cpp's adapter format, as its ``convert_lora_to_gguf.py`` writes it): the base's
architecture, ``general.type = "adapter"``, ``adapter.type = "lora"``, ``adapter.lora.alpha``
(float32); for every adapted weight two tensors named like the base GGUF's tensor plus
``.lora_a`` (numpy shape (r, in), PEFT's lora_A) and ``.lora_b`` ((out, r), PEFT's lora_B). llama.cpp
applies ``alpha / r * b @ a`` with ``r`` read from the tensor shapes. For token embeddings, whose
rows llama.cpp gathers from ``lora_a``, ``lora_a`` is PEFT's lora_embedding_A transposed
((vocab, r)) and ``lora_b`` its lora_embedding_B ((dim, r)). llama-arch q/k weights are stored with
their rows permuted for llama.cpp's rotary layout, so ``lora_b`` of q/k gets the same permutation.

Adapters whose scale is not ``alpha / r`` for every module (rsLoRA's ``alpha / sqrt(r)``,
``rank_pattern``, ``alpha_pattern``) are written exactly all the same: the file's alpha is the adapter's
``lora_alpha`` and each ``lora_b`` is multiplied by its module's true scale over ``alpha / r``.
AdaLoRA is written the same way (its singular values folded into ``lora_a``, its scale into
``lora_b``; a module pruned to rank 0 is left out). DoRA, prefix and prompt tuning are refused with
the reason ``studio.methods`` gives: the format has no magnitude vector and no virtual tokens.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from studio import methods
from studio.export.adapter import Adapter
from studio.export.arches import text_config
from studio.export.errors import UnsupportedModel
from studio.export.gguf_writer import check_supported, permute_qk


def file_alpha(adapter: Adapter) -> float:
    cfg = adapter.config
    return float(cfg.get("lora_alpha", cfg.get("r", 8)))


def lora_tensors(adapter: Adapter, config: dict):
    """(gguf base name, lora_a, lora_b) float32 numpy arrays, in the base GGUF's layout."""
    import gguf
    import numpy as np


    method = methods.get(methods.from_adapter_config(adapter.config))
    if not method.gguf_adapter:  # DoRA, prefix/prompt: not scale * B @ A per weight
        hint = ("export --format ollama or gguf (merged) instead" if method.mergeable
                else "export --format adapter and load it with peft")
        raise UnsupportedModel(f"a {method.label} adapter cannot be a llama.cpp LoRA adapter: "
                               f"{method.why_no_gguf_adapter}", hint)
    if adapter.replacements:
        names = ", ".join(sorted(adapter.replacements)[:3])
        raise UnsupportedModel(f"the adapter replaces whole weights ({names}): a LoRA GGUF can only carry LoRA pairs",
                               "export --format ollama or gguf (merged) instead")
    config = text_config(config)
    arch = check_supported(config)
    n_layers = int(config["num_hidden_layers"])
    name_map = gguf.get_tensor_name_map(arch.model_arch(), n_layers)
    tied = bool(config.get("tie_word_embeddings", False))
    alpha = file_alpha(adapter)
    out = []
    for hf_name, d in sorted(adapter.deltas.items()):
        if tied and hf_name == "lm_head.weight":
            raise UnsupportedModel("the adapter changes lm_head, which this model ties to its embeddings "
                                   "(llama.cpp has no separate output tensor to apply it to)",
                                   "export --format ollama or gguf (merged) instead")
        source = arch.source_name(hf_name, config)
        gname = None if source is None else name_map.get_name(source, try_suffixes=(".weight", ".bias"))
        if gname is None:
            raise UnsupportedModel(f"LoRA GGUF: no llama.cpp name for the adapted weight {hf_name}",
                                   "export --format ollama or gguf (merged) instead")
        a, b = d.a.float(), d.b.float()
        rank = a.shape[0]
        if rank == 0:  # AdaLoRA pruned every rank of this module: it changes nothing
            continue
        b = b * (d.scale / (alpha / rank))  # 1.0 unless rsLoRA or a rank/alpha pattern changed the scale
        if d.embedding:
            a = a.T.contiguous()  # (vocab, r): llama.cpp gathers token rows from lora_a
        else:
            a, b = lora_layout(arch, gname, a, b, config)
        out.append((gname, np.ascontiguousarray(a.numpy(), dtype=np.float32),
                    np.ascontiguousarray(b.numpy(), dtype=np.float32)))
    if not out:
        raise UnsupportedModel("the adapter has no LoRA pairs", "train again, or export --format adapter")
    return out


def lora_layout(arch: Any, gname: str, a: Any, b: Any, config: dict) -> tuple[Any, Any]:
    """``a`` (r, in) and ``b`` (out, r) of a weight the base GGUF stores in another layout: its rows
    reordered (llama-arch q/k, the family's ``row_order``) reorder ``b``'s rows, its columns (``col_order``)
    reorder ``a``'s columns, so that ``b @ a`` is the update of the weight as written. A weight llama.cpp
    keeps as a vector (Qwen3.5's shared-expert gate) has no place for a pair: refused."""
    if arch.shape is not None and len(arch.shape(gname, (int(b.shape[0]), int(a.shape[1])), config)) < 2:
        raise UnsupportedModel(f"LoRA GGUF: llama.cpp keeps {gname} as a vector, which a LoRA pair cannot adapt",
                               "train without that module, or export --format ollama or gguf (merged) instead")
    if arch.permute_qk and ".attn_q." in gname:
        b = permute_qk(b, int(config["num_attention_heads"]))
    elif arch.permute_qk and ".attn_k." in gname:
        b = permute_qk(b, int(config.get("num_key_value_heads") or config["num_attention_heads"]))
    rows = arch.row_order(gname, int(b.shape[0]), config) if arch.row_order is not None else None
    cols = arch.col_order(gname, int(a.shape[1]), config) if arch.col_order is not None else None
    return (a if cols is None else a[:, cols]), (b if rows is None else b[rows])


def write_lora_gguf(adapter: Adapter, base_dir: Path, out_path: Path, name: str = "") -> Path:
    """Write ``adapter`` (for the base model in ``base_dir``) as a llama.cpp LoRA adapter GGUF."""
    import os

    import gguf

    from studio.export.gguf_writer import check_supported

    config = json.loads((Path(base_dir) / "config.json").read_text(encoding="utf-8"))
    arch = check_supported(config)
    tensors = lora_tensors(adapter, config)
    w = gguf.GGUFWriter(str(out_path), arch.arch)
    w.add_type(gguf.GGUFType.ADAPTER)
    w.add_string(gguf.Keys.Adapter.TYPE, "lora")
    w.add_float32(gguf.Keys.Adapter.LORA_ALPHA, file_alpha(adapter))
    w.add_name(name or Path(out_path).stem)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    for gname, a, b in tensors:
        w.add_tensor(f"{gname}.lora_a", a)
        w.add_tensor(f"{gname}.lora_b", b)
    try:
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.flush()
        for fh in w.fout or []:
            os.fsync(fh.fileno())
    finally:
        w.close()
    return out_path


def read_lora_gguf(path: Path) -> tuple[dict, dict]:
    """(metadata, {base gguf name: (lora_a, lora_b)}) read back with the gguf package."""
    import numpy as np
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    meta = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    pairs: dict[str, dict[str, np.ndarray]] = {}
    for t in reader.tensors:
        base, _, part = t.name.rpartition(".")
        pairs.setdefault(base, {})[part] = np.asarray(t.data, dtype=np.float32).reshape(
            tuple(int(x) for x in reversed(t.shape)))
    return meta, {k: (v.get("lora_a"), v.get("lora_b")) for k, v in pairs.items()}
