"""The vision projector file (``mmproj-*.gguf``) of a vision-language model, for llama.cpp's multimodal tools.

llama.cpp runs a VLM from two files: the language model's GGUF (``gguf_writer``, the language model alone) and a
projector file with the vision tower and the projector, which its multimodal library (mtmd: ``llama-mtmd-cli``,
``llama-server``) loads beside it. The projector file is a GGUF of architecture ``clip`` (``general.type``
"mmproj") whose keys describe the tower (``clip.vision.*``: image size, patch size, width, depth, heads, norm eps,
the image processor's mean/std) and name the projector (``clip.projector_type``), and whose tensors are named
``v.*`` (tower) and ``mm.*`` (projector). These facts follow llama.cpp's tools/mtmd (clip-impl.h's key and tensor
names, clip.cpp's loader) and its converter's Gemma3VisionModel / Qwen2VLVisionModel; the code is our own.

Families written: Gemma 3 (SigLIP tower, projector "gemma3": a pooled RMS-normed input projection), Qwen2-VL
("qwen2vl_merger") and Qwen2.5-VL ("qwen2.5vl_merger": SwiGLU blocks, window attention). The tensors are the
merged ones (``merge.MergedWeights``): a run with train.vision_lora carries its tower updates into the file.
Matrices are written in F16 (llama.cpp's own projector files are ``mmproj-*-f16.gguf``), vectors, the
position embeddings and Gemma 3's patch embedding in F32.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable

from studio.export.errors import Progress, UnsupportedModel, no_progress
from studio.safetensors_io import TensorMeta, read_tensor

# projector type by transformers model_type (clip-impl.h's PROJECTOR_TYPE names)
PROJECTORS = {"gemma3": "gemma3", "qwen2_vl": "qwen2vl_merger", "qwen2_5_vl": "qwen2.5vl_merger"}
WHY_NOT = ("llama.cpp's multimodal tools load projector files of Gemma 3, Qwen2-VL and Qwen2.5-VL from the "
           "studio; {family} is not one of them")


@dataclass(frozen=True)
class Planned:
    """One projector tensor: its GGUF name, shape (numpy order), GGML type, and how it is made from the
    checkpoint (``make(read)`` -> float32 torch tensor; ``read`` gives a merged checkpoint tensor by name)."""

    gguf_name: str
    shape: tuple[int, ...]
    qtype: str  # "F16" or "F32"
    sources: tuple[str, ...]
    make: Callable[[Callable[[str], Any]], Any]


def projector_type(config: dict) -> str | None:
    return PROJECTORS.get(str(config.get("model_type")))


def mmproj_name(quant: str = "f16") -> str:
    return f"mmproj-{quant}.gguf"


# ---------------------------------------------------------------- names

def _tower_name(name: str) -> str | None:
    """A checkpoint name inside the tower or projector, without its prefix (``model.``, ``vision_tower.``,
    ``vision_model.``, ``visual.``), and the projector's as ``mm:``; None for the language model."""
    n = name.removeprefix("model.")
    if n.startswith("multi_modal_projector."):
        return "mm:" + n[len("multi_modal_projector."):]
    for prefix in ("vision_tower.vision_model.", "vision_tower.", "visual."):
        if n.startswith(prefix):
            return n[len(prefix):]
    return None


_GEMMA3 = [  # SigLIP (the tower) + Gemma 3's projector, as clip.cpp reads them
    (r"embeddings\.patch_embedding\.(weight|bias)", "v.patch_embd.{0}"),
    (r"embeddings\.position_embedding\.weight", "v.position_embd.weight"),
    (r"encoder\.layers\.(\d+)\.self_attn\.(q|k|v)_proj\.(weight|bias)", "v.blk.{0}.attn_{1}.{2}"),
    (r"encoder\.layers\.(\d+)\.self_attn\.out_proj\.(weight|bias)", "v.blk.{0}.attn_out.{1}"),
    (r"encoder\.layers\.(\d+)\.layer_norm(1|2)\.(weight|bias)", "v.blk.{0}.ln{1}.{2}"),
    (r"encoder\.layers\.(\d+)\.mlp\.fc1\.(weight|bias)", "v.blk.{0}.ffn_up.{1}"),
    (r"encoder\.layers\.(\d+)\.mlp\.fc2\.(weight|bias)", "v.blk.{0}.ffn_down.{1}"),
    (r"post_layernorm\.(weight|bias)", "v.post_ln.{0}"),
    (r"mm:mm_input_projection_weight", "mm.input_projection.weight"),
    (r"mm:mm_soft_emb_norm\.weight", "mm.soft_emb_norm.weight"),
]
_GEMMA3_UNUSED = re.compile(r"head\.")  # SigLIP's pooling head: Gemma 3 reads the patch features before it

_QWEN = [  # Qwen2-VL / Qwen2.5-VL's tower and merger (the qkv and the 3-D patch kernel are split below)
    (r"blocks\.(\d+)\.attn\.proj\.(weight|bias)", "v.blk.{0}.attn_out.{1}"),
    (r"blocks\.(\d+)\.norm(1|2)\.(weight|bias)", "v.blk.{0}.ln{1}.{2}"),
    (r"blocks\.(\d+)\.mlp\.fc1\.(weight|bias)", "v.blk.{0}.ffn_up.{1}"),  # Qwen2-VL
    (r"blocks\.(\d+)\.mlp\.fc2\.(weight|bias)", "v.blk.{0}.ffn_down.{1}"),
    (r"blocks\.(\d+)\.mlp\.(gate|up|down)_proj\.(weight|bias)", "v.blk.{0}.ffn_{1}.{2}"),  # Qwen2.5-VL
    (r"merger\.ln_q\.(weight|bias)", "v.post_ln.{0}"),
    (r"merger\.mlp\.(0|2)\.(weight|bias)", "mm.{0}.{1}"),
]


def _renamed(table: list[tuple[str, str]], short: str) -> str | None:
    for pattern, target in table:
        m = re.fullmatch(pattern, short)
        if m:
            return target.format(*m.groups())
    return None


# ---------------------------------------------------------------- the plan

def _whole(name: str, read: Callable[[str], Any]) -> Any:
    return read(name)


def _frame(name: str, t: int, read: Callable[[str], Any]) -> Any:
    """One frame's 2-D kernel of Qwen-VL's 3-D patch convolution."""
    return read(name)[:, :, t]


def _rows(name: str, start: int, end: int, read: Callable[[str], Any]) -> Any:
    return read(name)[start:end]


def _plus_one(name: str, read: Callable[[str], Any]) -> Any:
    return read(name) + 1.0


def _qtype(gguf_name: str, shape: tuple[int, ...], f32: tuple[str, ...] = ()) -> str:
    return "F32" if len(shape) < 2 or any(s in gguf_name for s in ("position_embd", *f32)) else "F16"


def plan_mmproj(config: dict, metas: list[TensorMeta], unused_changed: set[str] | None = None) -> list[Planned]:
    """Every tensor of the projector file, from the checkpoint's tensors ``metas``. Refuses (UnsupportedModel,
    in words) a family llama.cpp has no projector for, a tower tensor it would have to drop, and a tower
    weight the adapter changed (``unused_changed``: names) that the file has no place for."""
    kind = projector_type(config)
    if kind is None:
        raise UnsupportedModel("no vision projector file: " + WHY_NOT.format(family=config.get("model_type")),
                               "export --format merged (safetensors) for the whole model; the language model's GGUF "
                               "is written without the tower")
    plan: list[Planned] = []
    dropped = []
    for m in metas:
        short = _tower_name(m.name)
        if short is None:
            continue
        shape = tuple(m.shape)
        if kind == "gemma3":
            if _GEMMA3_UNUSED.match(short):
                continue
            target = _renamed(_GEMMA3, short)
            if target is None:
                dropped.append(m.name)
                continue
            plan.append(_gemma3_tensor(target, m.name, shape))
            continue
        if short == "patch_embed.proj.weight":  # (width, 3, 2, p, p): one 2-D kernel per frame llama.cpp adds
            if len(shape) != 5 or shape[2] != 2:
                raise UnsupportedModel(f"{m.name} is {list(shape)}; llama.cpp's Qwen-VL projector takes a patch "
                                       "kernel over 2 frames", "export --format merged (safetensors) instead")
            kernel = (shape[0], shape[1], shape[3], shape[4])
            for t, suffix in ((0, ""), (1, ".1")):
                plan.append(Planned(f"v.patch_embd.weight{suffix}", kernel, "F16", (m.name,),
                                    partial(_frame, m.name, t)))
            continue
        qkv = re.fullmatch(r"blocks\.(\d+)\.attn\.qkv\.(weight|bias)", short)
        if qkv:  # fused rows q, k, v
            block, part = qkv.groups()
            third = shape[0] // 3
            for i, which in enumerate("qkv"):
                sub = (third, *shape[1:])
                plan.append(Planned(f"v.blk.{block}.attn_{which}.{part}", sub, _qtype(part, sub), (m.name,),
                                    partial(_rows, m.name, i * third, (i + 1) * third)))
            continue
        target = _renamed(_QWEN, short)
        if target is None:
            dropped.append(m.name)
            continue
        plan.append(Planned(target, shape, _qtype(target, shape), (m.name,), partial(_whole, m.name)))
    if dropped:
        raise UnsupportedModel(f"no vision projector file: the tower has {len(dropped)} tensor(s) llama.cpp's "
                               f"{kind} projector has no place for (e.g. {dropped[0]})",
                               "export --format merged (safetensors) for the whole model")
    lost = sorted(n for n in (unused_changed or set()) if _tower_name(n) is not None
                  and not any(n in p.sources for p in plan))
    if lost and kind != "gemma3":
        raise UnsupportedModel(f"no vision projector file: the adapter changed {lost[0]}, which the projector file "
                               "does not carry", "export --format merged (safetensors) for the whole model")
    if not plan:
        raise UnsupportedModel("no vision projector file: the checkpoint has no vision tower tensors",
                               "export --format merged (safetensors) instead")
    return plan


def _gemma3_tensor(target: str, name: str, shape: tuple[int, ...]) -> Planned:
    if target == "mm.soft_emb_norm.weight":  # Gemma's RMSNorm scales by 1 + w; llama.cpp's by w
        return Planned(target, shape, "F32", (name,), partial(_plus_one, name))
    return Planned(target, shape, _qtype(target, shape, f32=("patch_embd",)), (name,), partial(_whole, name))


# ---------------------------------------------------------------- the keys

def _preprocessor(folder: Path) -> dict:
    """preprocessor_config.json, with processor_config.json's keys (and its image_processor's) over it."""
    out: dict = {}
    for name in ("preprocessor_config.json", "processor_config.json"):
        try:
            cfg = json.loads((Path(folder) / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(cfg, dict):
            out.update(cfg)
            if isinstance(cfg.get("image_processor"), dict):
                out.update(cfg["image_processor"])
    return out


def mmproj_keys(config: dict, folder: Path) -> dict[str, Any]:
    """The projector file's keys (clip-impl.h's names) for the checkpoint ``config`` in ``folder``."""
    kind = projector_type(config)
    vc = config.get("vision_config") or {}
    text = config.get("text_config") or config
    pre = _preprocessor(folder)
    mean, std = pre.get("image_mean"), pre.get("image_std")
    if not (isinstance(mean, list) and isinstance(std, list) and len(mean) >= 3 and len(std) >= 3):
        raise UnsupportedModel(f"no vision projector file: {folder / 'preprocessor_config.json'} has no image_mean "
                               "and image_std (3 values each), which llama.cpp normalises pixels with",
                               "restore the processor files of the base model")
    keys: dict[str, Any] = {
        "clip.projector_type": kind, "clip.has_vision_encoder": True,
        "clip.vision.projection_dim": int(text["hidden_size"]),
        "clip.vision.image_mean": [float(x) for x in mean[:3]], "clip.vision.image_std": [float(x) for x in std[:3]],
    }
    if kind == "gemma3":
        size, patch = int(vc.get("image_size", 896)), int(vc.get("patch_size", 14))
        keys.update({
            "clip.vision.image_size": size, "clip.vision.patch_size": patch,
            "clip.vision.embedding_length": int(vc["hidden_size"]),
            "clip.vision.feed_forward_length": int(vc["intermediate_size"]),
            "clip.vision.block_count": int(vc["num_hidden_layers"]),
            "clip.vision.attention.head_count": int(vc["num_attention_heads"]),
            "clip.vision.attention.layer_norm_epsilon": float(vc.get("layer_norm_eps", 1e-6)),
            "clip.use_gelu": True,
        })
        tokens = int(pre.get("image_seq_length") or config.get("mm_tokens_per_image") or 256)
        side = int(round(tokens ** 0.5))
        if side * side != tokens:
            raise UnsupportedModel(f"no vision projector file: {tokens} image tokens are not a square grid, which "
                                   "llama.cpp's gemma3 projector pools to", "export --format merged instead")
        factor = (size // patch) // side
        if factor != 4:  # llama.cpp's default pooling (896 px / 14 px patches -> 16x16 tokens)
            keys["clip.vision.projector.scale_factor"] = factor
        return keys
    width = int(vc.get("embed_dim") or vc["hidden_size"])  # Qwen2-VL: embed_dim is the tower's width
    ffn = int(vc["intermediate_size"]) if vc.get("intermediate_size") and not vc.get("embed_dim") \
        else int(width * float(vc.get("mlp_ratio", 4)))
    keys.update({
        "clip.vision.image_size": int(vc.get("image_size", 560)), "clip.vision.patch_size": int(vc["patch_size"]),
        "clip.vision.embedding_length": width, "clip.vision.feed_forward_length": ffn,
        "clip.vision.block_count": int(vc["depth"]),
        "clip.vision.attention.head_count": int(vc["num_heads"]),
        "clip.vision.attention.layer_norm_epsilon": 1e-6,
        "clip.vision.spatial_merge_size": int(vc.get("spatial_merge_size", 2)),
    })
    if kind == "qwen2.5vl_merger":
        full = vc.get("fullatt_block_indexes") or []
        step = (full[0] + 1) if full else 0
        if not full or any(b - a != step for a, b in zip(full, full[1:])):
            raise UnsupportedModel(f"no vision projector file: fullatt_block_indexes {full} is not the regular "
                                   "pattern llama.cpp's window attention takes", "export --format merged instead")
        keys["clip.use_silu"] = True
        keys["clip.vision.n_wa_pattern"] = step
    return keys


# ---------------------------------------------------------------- writing

def write_mmproj(folder: Path, config: dict, out_path: Path, weights: Any = None, name: str = "",
                 progress: Progress = no_progress) -> list[Planned]:
    """Write the projector file of the checkpoint in ``folder`` (``config``: its config.json) as ``out_path``;
    ``weights`` (``merge.MergedWeights``): the tensors merged as they are read. Returns the plan written."""
    import gguf
    import numpy as np

    metas = weights.metas() if weights is not None else _metas(folder)
    by_name = {m.name: m for m in metas}
    plan = plan_mmproj(config, metas, weights.changed() if weights is not None else None)
    keys = mmproj_keys(config, folder)

    def read(n: str) -> Any:
        meta = by_name[n]
        return (weights.read(meta) if weights is not None else read_tensor(meta)).float()

    w = gguf.GGUFWriter(str(out_path), "clip")
    w.add_type(gguf.GGUFType.MMPROJ)
    w.add_name(name or Path(folder).name)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    for key, value in keys.items():
        if isinstance(value, bool):
            w.add_bool(key, value)
        elif isinstance(value, int):
            w.add_uint32(key, value)
        elif isinstance(value, float):
            w.add_float32(key, value)
        elif isinstance(value, list):
            w.add_array(key, value)
        else:
            w.add_string(key, str(value))
    np_types = {"F16": np.float16, "F32": np.float32}
    for p in plan:
        w.add_tensor_info(p.gguf_name, p.shape, np.dtype(np_types[p.qtype]),
                          int(np.prod(p.shape)) * np.dtype(np_types[p.qtype]).itemsize,
                          raw_dtype=gguf.GGMLQuantizationType[p.qtype])
    total = len(plan)
    try:
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        progress("mmproj", 0, total)
        for i, p in enumerate(plan, 1):
            t = p.make(read).contiguous()
            if tuple(t.shape) != p.shape:
                raise UnsupportedModel(f"{p.sources[0]} gives {list(t.shape)} for {p.gguf_name}, planned "
                                       f"{list(p.shape)}", "export --format merged instead")
            w.write_tensor_data(t.numpy().astype(np_types[p.qtype]))
            progress("mmproj", i, total)
    finally:
        w.close()
    return plan


def _metas(folder: Path) -> list[TensorMeta]:
    from studio.safetensors_io import model_tensors

    return model_tensors(Path(folder))


def check_mmproj(folder: Path, config: dict, path: Path, weights: Any = None) -> Any:
    """The projector file read back (``gguf_reader``; F16 read by numpy): its keys as planned, every tensor
    present with its shape, and each within F16's rounding of the merged tensor it came from."""
    import numpy as np

    from studio.export.gguf_readback import gguf_reader
    from studio.export.verify import WEIGHT_RTOL, Check

    metas = weights.metas() if weights is not None else _metas(folder)
    by_name = {m.name: m for m in metas}
    plan = plan_mmproj(config, metas)
    keys = mmproj_keys(config, folder)
    reader = gguf_reader(path)
    stored = {t.name: t for t in reader.tensors}
    problems = []
    for key, want in keys.items():
        got: Any = reader.fields.get(key)
        if got is None:
            same = False
        elif isinstance(want, list):
            same = bool(np.allclose([float(x) for x in got], want))
        elif isinstance(want, float):
            same = abs(float(got) - want) <= 1e-6 * max(1.0, abs(want))
        else:
            same = got == want
        if not same:
            problems.append(f"{key} is {got!r}, planned {want!r}")
    if reader.fields.get("general.architecture") != "clip":
        problems.append(f"general.architecture is {reader.fields.get('general.architecture')!r}, not 'clip'")
    worst = 0.0

    def read(n: str) -> Any:
        meta = by_name[n]
        return (weights.read(meta, check=False) if weights is not None else read_tensor(meta)).float()

    for p in plan:
        t = stored.get(p.gguf_name)
        if t is None:
            problems.append(f"{p.gguf_name} missing")
            continue
        got = np.asarray(t.data, dtype=np.float64).reshape(p.shape)
        ref = p.make(read).double().numpy()
        err = float(np.linalg.norm(got - ref)) / (float(np.linalg.norm(ref)) or 1.0)
        worst = max(worst, err)
        if t.tensor_type.name != p.qtype or err > WEIGHT_RTOL[p.qtype]:
            problems.append(f"{p.gguf_name} ({t.tensor_type.name}): error {err:.2g}")
    extra = sorted(set(stored) - {p.gguf_name for p in plan})
    problems += [f"unplanned tensor {n}" for n in extra[:3]]
    summary = (f"vision projector file read back ({keys['clip.projector_type']}): {len(plan)} tensors and "
               f"{len(keys)} clip.* keys " + ("as planned, each within F16 rounding of the merged tower "
                                              f"(worst relative error {worst:.1e})" if not problems
                                              else "differ: " + "; ".join(problems[:3])))
    return Check("mmproj", not problems, summary, {"projector_type": keys["clip.projector_type"],
                                                   "tensors": len(plan), "worst_rel_error": worst,
                                                   "problems": problems})
