"""Checks run after every export, before the output gets its final name.

* merged model vs base + adapter (peft, on the original 16/32-bit base): logits on fixed prompts (an
  adapter trained on image rows: the whole vision-language model with its processor, on drawn pictures);
* GGUF read back (``gguf_readback.gguf_reader``): every tensor, dequantised by the ``gguf`` package,
  vs the merged model's; vocabulary, special tokens and chat template vs the tokenizer files; greedy
  text in llama.cpp itself vs the merged model in transformers, when llama.cpp is installed
  (``llama_cpp.GreedyCheck``, which uses the prompts and memory rules here);
* Ollama TEMPLATE vs the tokenizer's chat template (see ollama.py).

A check that would need more memory than is free is skipped with the reason, never silently.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from studio.data.chat_render import render_chat
from studio.data.light_tokenizer import LightTokenizer
from studio.export.gguf_readback import GgufFile, gguf_reader
from studio.export.gguf_writer import check_supported, oriented, permuted, plan_tensors, read_planned, valued
from studio.export.lora_gguf import lora_tensors, read_lora_gguf
from studio.safetensors_io import _SIZES, model_tensors, read_rows, read_tensor

PROMPTS = ("What is 2 plus 3?", "Write one sentence about the sea.", "Name three colours.")
# Largest logit difference accepted, relative to the largest reference logit, by weight dtype.
LOGIT_RTOL = {"float32": 1e-4, "float16": 1e-2, "bfloat16": 5e-2}
SAMPLE_ROWS = 64  # rows of a large matrix read back and compared (first, last, evenly spaced)
# Largest accepted error of one tensor read back from the GGUF (dequantised by the gguf package):
# ||read - merged|| / ||merged||, by GGML type. About twice what each type gives on Gaussian weights.
WEIGHT_RTOL = {"F32": 1e-6, "F16": 1e-3, "BF16": 8e-3, "Q8_0": 0.012, "Q6_K": 0.04, "Q5_K": 0.08, "Q5_1": 0.09,
               "Q5_0": 0.09, "Q4_K": 0.15, "Q4_0": 0.18,
               "MXFP4": 0.25}


@dataclass
class Check:
    name: str
    ok: bool | None  # None: skipped
    summary: str
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def model_bytes(folder: Path, bytes_per_param: int | None = None) -> int:
    """Bytes needed to hold the model, at its stored dtype or at ``bytes_per_param``."""
    metas = model_tensors(folder)
    if bytes_per_param is None:
        return sum(m.nbytes for m in metas)
    return sum(m.nbytes // _SIZES[m.dtype] * bytes_per_param for m in metas)


def memory_ok(need: int) -> tuple[bool, str]:
    import psutil

    free = psutil.virtual_memory().available
    if free > need * 1.3:
        return True, ""
    return False, f"needs about {need / 2**30:.1f} GB of RAM, {free / 2**30:.1f} GB free"


def prompt_ids(tokenizer: Any) -> list[list[int]]:
    """The fixed prompts, formatted with the chat template when there is one."""
    out = []
    for text in PROMPTS:
        if getattr(tokenizer, "chat_template", None):
            rendered = render_chat(tokenizer, [{"role": "user", "content": text}], add_generation_prompt=True)
            out.append(tokenizer(rendered, add_special_tokens=False)["input_ids"])
        else:
            out.append(tokenizer(text)["input_ids"])
    return out


def _logits(model: Any, ids: list[list[int]]):
    import torch

    with torch.no_grad():
        return [model(torch.tensor([p])).logits[0].float() for p in ids]


def check_merge(base_dir: Path, adapter_dir: Path, merged_dir: Path, trust: bool = False) -> Check:
    """Merged logits == base + adapter logits (peft, unmerged) within the dtype's tolerance (an adapter trained
    on image rows: ``check_vlm_merge``, on the whole vision-language model with pictures)."""
    from transformers import AutoTokenizer

    from studio import multimodal, vision

    if vision.adapter_on_whole_vlm(adapter_dir):
        return check_vlm_merge(base_dir, adapter_dir, merged_dir, trust)

    ok, why = memory_ok(model_bytes(base_dir) * 2)
    if not ok:
        return Check("merge_logits", None, f"skipped: {why}")
    tok = AutoTokenizer.from_pretrained(str(merged_dir), trust_remote_code=trust)
    ids = prompt_ids(tok)
    details = _merge_logits(lambda folder: multimodal.load_causal_lm(folder, dict(dtype="auto", trust_remote_code=trust)),
                            lambda model: _logits(model, ids), base_dir, adapter_dir, merged_dir)
    details["prompts"] = len(ids)
    diff, tol, effect = details["max_abs_diff"], details["tolerance"], details["adapter_effect"]
    passed = diff <= tol and math.isfinite(diff)
    summary = f"merged vs base+adapter logits: max diff {diff:.2e} (tolerance {tol:.1e}; adapter changes them by {effect:.2e})"
    return Check("merge_logits", passed, summary, details)


def _merge_logits(load: Any, logits: Any, base_dir: Path, adapter_dir: Path, merged_dir: Path) -> dict:
    """The merge check's figures, for a text model or a whole vision-language model: ``load(folder)`` gives a
    model, ``logits(model)`` its logits on the probes; the base with the adapter (peft, unmerged) against the
    merged folder, and what the adapter changes at all (one model in memory at a time beside the base)."""
    from peft import PeftModel

    base = load(base_dir)
    dtype = str(base.dtype).removeprefix("torch.")
    plain = logits(base)
    peft_model = PeftModel.from_pretrained(base, str(adapter_dir))
    ref = logits(peft_model)
    del peft_model, base
    merged = load(merged_dir)
    out = logits(merged)
    del merged
    diff = max(float((a - b).abs().max()) for a, b in zip(ref, out))
    effect = max(float((a - b).abs().max()) for a, b in zip(ref, plain))
    scale = max(float(r.abs().max()) for r in ref)
    return {"max_abs_diff": diff, "tolerance": LOGIT_RTOL.get(dtype, 5e-2) * max(scale, 1.0),
            "adapter_effect": effect, "dtype": dtype}


# The whole-VLM check's probes: (drawn picture, question); small pictures, so any processor reads them quickly.
IMAGE_PROBES = (("gradient", "Describe this image."), ("squares", "What colours do you see?"))


def probe_image(kind: str, size: tuple[int, int] = (64, 48)) -> Any:
    """A drawn RGB picture (no file): a colour gradient, or squares of four colours."""
    from PIL import Image

    w, h = size
    img = Image.new("RGB", size)
    for x in range(w):
        for y in range(h):
            if kind == "gradient":
                img.putpixel((x, y), (255 * x // max(w - 1, 1), 255 * y // max(h - 1, 1), 128))
            else:
                img.putpixel((x, y), ((220, 20, 20), (20, 200, 20), (20, 20, 220), (230, 230, 20))[
                    (x * 2 // w) + 2 * (y * 2 // h)])
    return img


def vlm_probe_inputs(processor: Any) -> list[dict]:
    """The whole-VLM check's inputs: each probe picture with its question, and one question without a picture,
    rendered by the processor's chat template (``studio.vision``)."""
    from studio import vision

    out = []
    for kind, question in (*IMAGE_PROBES, (None, PROMPTS[0])):
        content = (vision.IMAGE if kind else "") + question
        text = vision.render(processor, vision.part_messages([{"role": "user", "content": content}]),
                             add_generation_prompt=True)
        images = [probe_image(kind)] if kind else None
        out.append(dict(processor(text=[text], images=images, return_tensors="pt", add_special_tokens=False)))
    return out


def _vlm_logits(model: Any, inputs: list[dict]) -> list[Any]:
    import torch

    with torch.no_grad():
        return [model(**batch).logits[0].float() for batch in inputs]


def check_vlm_merge(base_dir: Path, adapter_dir: Path, merged_dir: Path, trust: bool = False) -> Check:
    """For an adapter trained on image rows: the merged folder is the whole vision-language model again. It loads
    with ``AutoModelForImageTextToText`` and its processor (the processor files travelled), and its logits on
    pictures with a question (and on one question alone) equal the base + adapter's (peft, unmerged) within
    the dtype's tolerance: the language model's and, with train.vision_lora, the tower's updates are merged."""

    from studio import vision

    ok, why = memory_ok(model_bytes(base_dir) * 2)
    if not ok:
        return Check("merge_logits", None, f"skipped: {why}")
    processor = vision.load_processor(merged_dir, trust)
    inputs = vlm_probe_inputs(processor)
    kwargs = dict(dtype="auto", trust_remote_code=trust)
    details = _merge_logits(lambda folder: vision.load_vlm(folder, kwargs), lambda model: _vlm_logits(model, inputs),
                            base_dir, adapter_dir, merged_dir)
    pictures = sum(1 for kind, _ in IMAGE_PROBES if kind)
    details.update(prompts=len(inputs), image_prompts=pictures, whole_vlm=True)
    diff, tol, effect = details["max_abs_diff"], details["tolerance"], details["adapter_effect"]
    passed = diff <= tol and math.isfinite(diff)
    summary = (f"merged vision-language model (loaded with its processor) vs base+adapter logits on {pictures} "
               f"pictures with a question and 1 question alone: max diff {diff:.2e} (tolerance {tol:.1e}; adapter "
               f"changes them by {effect:.2e})")
    return Check("merge_logits", passed, summary, details)


def check_gguf_weights(merged_dir: Path, gguf_path: Path, quant: str, source: str = "merged",
                       reader: Any = None, weights: Any = None) -> Check:
    """Every tensor of the GGUF, dequantised by the ``gguf`` package (not by our encoder), matches the
    merged model's weight within its type's error bound; the worst tensor per type is reported.

    A large matrix is compared on SAMPLE_ROWS rows (the first, the last and evenly spaced ones): an
    encoder or layout bug shows in every row, and reading back every row was most of an export's time.
    ``weights``: the merged tensors when they are not in ``merged_dir``'s files (``merge.MergedWeights``).
    """
    import json

    import numpy as np
    import torch
    from gguf.quants import dequantize

    from studio.export.arches import text_config

    config = text_config(json.loads((Path(merged_dir) / "config.json").read_text(encoding="utf-8")))
    arch = check_supported(config)
    reader = reader if reader is not None else gguf_reader(gguf_path)
    stored = {t.name: t for t in reader.tensors}
    worst: dict[str, tuple[float, str]] = {}
    bad, missing = [], []
    def read(meta: Any) -> Any:  # the writer checked every merged tensor finite: not a second time here
        return weights.read(meta, check=False) if weights is not None else read_tensor(meta)

    for p in plan_tensors(Path(merged_dir), config, arch, quant, metas=weights.metas() if weights is not None else None):
        t = stored.get(p.gguf_name)
        if t is None:  # computed tensors (rope factors) too: read_planned gives them as the writer wrote them
            missing.append(p.gguf_name)
            continue
        kind = t.tensor_type.name
        data = np.asarray(t.data)
        n_rows = p.shape[0] if len(p.shape) == 2 else 0
        if p.meta is not None and not p.experts and p.derived is None and n_rows > SAMPLE_ROWS and data.ndim == 2 \
                and data.shape[0] == n_rows:
            rows = np.unique(np.linspace(0, n_rows - 1, SAMPLE_ROWS).round().astype(np.int64))
            # the base rows these GGUF rows come from (the writer's q/k permutation applied to row numbers),
            # merged for those rows only; a row of the GGUF is a row of the tensor (whole blocks)
            base_rows = permuted(p, np.arange(n_rows), config, arch)[rows]
            part = weights.read_rows(p.meta, torch.from_numpy(base_rows)) if weights is not None \
                else read_rows(p.meta, base_rows)
            ref = valued(p, part.float(), config, arch).numpy()  # the family's row-wise change, as written
            got = dequantize(t.read_rows(rows), t.tensor_type).reshape(ref.shape)
        else:
            full = oriented(p, read_planned(p, config, read), config, arch)  # same q/k permutation as the writer
            if full.dim() == 3 and data.ndim == 3:  # stacked experts: rows of every expert, one after another
                full, data = full.reshape(-1, full.shape[-1]), data.reshape(-1, data.shape[-1])
            if full.dim() == 2 and data.ndim == 2 and data.shape[0] == full.shape[0] > SAMPLE_ROWS:
                rows = np.unique(np.linspace(0, full.shape[0] - 1, SAMPLE_ROWS).round().astype(np.int64))
                ref = full[rows].float().numpy()
                got = dequantize(data[rows], t.tensor_type).reshape(ref.shape)
            else:
                ref = full.float().numpy()
                got = dequantize(data, t.tensor_type).reshape(ref.shape)
        # in float64: Gemma 4's rope factors hold 1e30 (a pair left unturned), whose square overflows float32
        ref, got = ref.astype(np.float64), got.astype(np.float64)
        norm = float(np.linalg.norm(ref)) or 1.0
        err = float(np.linalg.norm(got - ref)) / norm
        if not math.isfinite(err) or err > WEIGHT_RTOL.get(kind, 0.2):
            bad.append(f"{p.gguf_name} ({kind}): {err:.3g}")
        if err >= worst.get(kind, (-1.0, ""))[0]:
            worst[kind] = (err, p.gguf_name)
    counts: dict[str, int] = {}
    for t in reader.tensors:
        counts[t.tensor_type.name] = counts.get(t.tensor_type.name, 0) + 1
    passed = not bad and not missing
    types = ", ".join(f"{n} {k}" for k, n in sorted(counts.items(), key=lambda kv: -kv[1]))
    summary = (f"GGUF weights read back (dequantised by the gguf package) vs {source}: {len(reader.tensors)} tensors ({types}) "
               + ("within each type's error bound" if passed else
                  f"{len(bad)} over the bound, {len(missing)} missing: {'; '.join((bad + missing)[:3])}"))
    details = {"types": counts, "worst_rel_error": {k: {"error": v[0], "tensor": v[1]} for k, v in worst.items()},
               "bounds": {k: WEIGHT_RTOL.get(k) for k in counts}, "over_bound": bad, "missing": missing}
    return Check("gguf_weights", passed, summary, details)


def check_adapter(original: Path, exported: Path) -> Check:
    """The exported adapter parses as a peft config and carries the same tensors as the run's."""
    from peft import PeftConfig
    from safetensors import safe_open

    cfg = PeftConfig.from_pretrained(str(exported))
    names = []
    for folder in (original, exported):
        with safe_open(str(Path(folder) / "adapter_model.safetensors"), "pt") as f:
            names.append(sorted(f.keys()))
    same = names[0] == names[1]
    pairs = sum(1 for n in names[1] if ".lora_A" in n or ".lora_embedding_A" in n)
    if getattr(cfg, "num_virtual_tokens", None) and not pairs:  # prefix / prompt tuning
        kind = getattr(cfg.peft_type, "value", cfg.peft_type)
        summary = f"peft reads the adapter ({kind}, {cfg.num_virtual_tokens} virtual tokens)"
    else:
        summary = f"peft reads the adapter ({cfg.peft_type}, r={getattr(cfg, 'r', '?')}, {pairs} LoRA pairs)"
    return Check("adapter_files", same, summary, {"pairs": pairs, "base_model": cfg.base_model_name_or_path})


def check_lora_gguf(adapter: Any, base_dir: Path, lora_path: Path) -> Check:
    """The LoRA GGUF read back (gguf package) carries llama.cpp's adapter keys and, applied the way
    llama.cpp applies it (``alpha / r * b @ a``, rows of ``a`` for embeddings), gives each weight's update."""
    import json

    import numpy as np

    from studio.export.arches import text_config
    from studio.export.gguf_writer import check_supported, permute_qk

    config = text_config(json.loads((Path(base_dir) / "config.json").read_text(encoding="utf-8")))
    arch = check_supported(config)
    meta, pairs = read_lora_gguf(lora_path)
    keys_ok = (meta.get("general.type") == "adapter" and meta.get("adapter.type") == "lora"
               and meta.get("general.architecture") == arch.arch and "adapter.lora.alpha" in meta)
    alpha = float(meta.get("adapter.lora.alpha", 0.0))
    import gguf

    names = {g for g, _, _ in lora_tensors(adapter, config)}
    worst, missing = 0.0, sorted(names - set(pairs))
    name_map = gguf.get_tensor_name_map(arch.model_arch(), int(config["num_hidden_layers"]))
    for hf_name, d in adapter.deltas.items():
        source = arch.source_name(hf_name, config)
        gname = None if source is None else name_map.get_name(source, try_suffixes=(".weight", ".bias"))
        if gname is None or gname not in pairs or any(x is None for x in pairs[gname]):
            continue
        a, b = pairs[gname]
        want = d.delta().numpy()
        if d.embedding:
            got = alpha / a.shape[1] * (a @ b.T)
        else:
            got = alpha / a.shape[0] * (b @ a)
            if arch.permute_qk and ".attn_q." in gname:
                want = permute_qk(want, int(config["num_attention_heads"]))
            elif arch.permute_qk and ".attn_k." in gname:
                want = permute_qk(want, int(config.get("num_key_value_heads") or config["num_attention_heads"]))
            rows = arch.row_order(gname, want.shape[0], config) if arch.row_order is not None else None
            cols = arch.col_order(gname, want.shape[1], config) if arch.col_order is not None else None
            want = want if rows is None else want[rows]  # the weight as the base GGUF stores it
            want = want if cols is None else want[:, cols]
        scale = float(np.abs(want).max()) or 1.0
        worst = max(worst, float(np.abs(got - want).max()) / scale if got.shape == want.shape else float("inf"))
    missing += sorted(g for g, (a, b) in pairs.items() if a is None or b is None)
    passed = keys_ok and not missing and len(pairs) == len(names) and worst <= 1e-4
    summary = (f"LoRA GGUF read back: {len(pairs)} adapted weights, alpha {alpha:g}; updates rebuilt as llama.cpp "
               f"applies them match the adapter (max relative diff {worst:.1e})"
               + ("" if keys_ok else "; adapter metadata keys are wrong")
               + (f"; missing {', '.join(missing[:3])}" if missing else ""))
    return Check("lora_gguf", passed, summary, {"pairs": len(pairs), "alpha": alpha, "max_rel_diff": worst,
                                                "metadata_ok": keys_ok, "missing": missing})



def check_gguf_vocab(model_dir: Path, gguf_path: Path, reader: Any = None, light: Any = None) -> Check:
    """The GGUF's vocabulary, special tokens and chat template equal the model folder's tokenizer files,
    read back with ``gguf_reader`` and the ``tokenizers`` package (no model is loaded). ``light``: the
    folder's ``LightTokenizer`` when the caller has it already."""


    meta = _gguf_fields(reader if reader is not None else gguf_reader(gguf_path))
    folder = Path(model_dir)
    problems: list[str] = []
    tokens = meta.get("tokenizer.ggml.tokens") or []
    if light is not None or LightTokenizer.can_read(folder):
        light = light if light is not None else LightTokenizer(folder)
        tok = light.backend_tokenizer  # tokenizer.json, read once
        known = [i for i in range(min(len(tokens), tok.get_vocab_size(with_added_tokens=True)))
                 if tok.id_to_token(i) is not None]
        wrong = [i for i in known if tokens[i] != tok.id_to_token(i)]
        if wrong:
            i = wrong[0]
            problems.append(f"{len(wrong)} token(s) differ, e.g. id {i}: {tokens[i]!r} in the GGUF, "
                            f"{tok.id_to_token(i)!r} in tokenizer.json")
        for name in ("bos", "eos"):
            text = getattr(light, f"{name}_token")
            want = tok.token_to_id(text) if text else None
            got = meta.get(f"tokenizer.ggml.{name}_token_id")
            if want is not None and got != want:
                problems.append(f"{name} token id {got} in the GGUF, {want} ({text}) in the tokenizer")
        if (light.chat_template or None) != (meta.get("tokenizer.chat_template") or None):
            problems.append("the chat template differs from the tokenizer's")
        checked = f"{len(known)} tokens, bos/eos and the chat template"
    else:  # a sentencepiece-only folder: the count is what can be said without transformers
        checked = f"{len(tokens)} tokens (sentencepiece folder: contents not compared)"
    summary = (f"GGUF vocabulary vs the tokenizer files: {checked} "
               + ("identical" if not problems else "differ: " + "; ".join(problems)))
    return Check("gguf_vocab", not problems, summary,
                 {"tokens": len(tokens), "pre_tokenizer": meta.get("tokenizer.ggml.pre"), "problems": problems})


def _gguf_fields(reader: GgufFile) -> dict[str, Any]:
    """The tokenizer fields of a GGUF (merges, scores and token types as their counts)."""
    out: dict[str, Any] = {}
    for name, v in reader.fields.items():
        if not name.startswith("tokenizer."):
            continue
        if name == "tokenizer.ggml.merges" or name.endswith(("token_type", "scores")):
            out[name] = len(v)
        else:
            out[name] = v
    return out
