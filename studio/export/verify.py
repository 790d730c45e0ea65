"""Checks run after every export, before the output gets its final name.

* merged model vs base + adapter (peft, on the original 16/32-bit base): logits on fixed prompts;
* GGUF read back (``gguf_reader``): every tensor, dequantised by the ``gguf`` package, vs the merged
  model's; vocabulary, special tokens and chat template vs the tokenizer files; greedy text in
  llama.cpp itself vs the merged model in transformers, when llama.cpp is installed;
* Ollama TEMPLATE vs the tokenizer's chat template (see ollama.py).

A check that would need more memory than is free is skipped with the reason, never silently.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from studio.data.chat_render import render_chat
from studio.safetensors_io import _SIZES, model_tensors

PROMPTS = ("What is 2 plus 3?", "Write one sentence about the sea.", "Name three colours.")
# Largest logit difference accepted, relative to the largest reference logit, by weight dtype.
LOGIT_RTOL = {"float32": 1e-4, "float16": 1e-2, "bfloat16": 5e-2}
SAMPLE_ROWS = 64  # rows of a large matrix read back and compared (first, last, evenly spaced)
# Largest accepted error of one tensor read back from the GGUF (dequantised by the gguf package):
# ||read - merged|| / ||merged||, by GGML type. About twice what each type gives on Gaussian weights.
WEIGHT_RTOL = {"F32": 1e-6, "F16": 1e-3, "BF16": 8e-3, "Q8_0": 0.012, "Q6_K": 0.04, "Q5_K": 0.08, "Q5_1": 0.09,
               "Q5_0": 0.09, "Q4_K": 0.15, "Q4_0": 0.18}


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
    """Merged logits == base + adapter logits (peft, unmerged) within the dtype's tolerance."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ok, why = memory_ok(model_bytes(base_dir) * 2)
    if not ok:
        return Check("merge_logits", None, f"skipped: {why}")
    tok = AutoTokenizer.from_pretrained(str(merged_dir), trust_remote_code=trust)
    ids = prompt_ids(tok)
    base = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype="auto", trust_remote_code=trust)
    dtype = str(base.dtype).removeprefix("torch.")
    plain = _logits(base, ids)
    peft_model = PeftModel.from_pretrained(base, str(adapter_dir))
    ref = _logits(peft_model, ids)
    del peft_model, base
    merged = AutoModelForCausalLM.from_pretrained(str(merged_dir), dtype="auto", trust_remote_code=trust)
    out = _logits(merged, ids)
    del merged
    diff = max(float((a - b).abs().max()) for a, b in zip(ref, out))
    effect = max(float((a - b).abs().max()) for a, b in zip(ref, plain))
    scale = max(float(r.abs().max()) for r in ref)
    tol = LOGIT_RTOL.get(dtype, 5e-2) * max(scale, 1.0)
    details = {"max_abs_diff": diff, "tolerance": tol, "adapter_effect": effect, "dtype": dtype,
               "prompts": len(ids)}
    passed = diff <= tol and math.isfinite(diff)
    summary = f"merged vs base+adapter logits: max diff {diff:.2e} (tolerance {tol:.1e}; adapter changes them by {effect:.2e})"
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

    from studio.export.gguf_writer import check_supported, oriented, plan_tensors, read_planned
    from studio.safetensors_io import read_rows, read_tensor

    config = json.loads((Path(merged_dir) / "config.json").read_text(encoding="utf-8"))
    arch = check_supported(config)
    reader = reader if reader is not None else gguf_reader(gguf_path)
    stored = {t.name: t for t in reader.tensors}
    worst: dict[str, tuple[float, str]] = {}
    bad, missing = [], []
    def read(meta: Any) -> Any:  # the writer checked every merged tensor finite: not a second time here
        return weights.read(meta, check=False) if weights is not None else read_tensor(meta)

    for p in plan_tensors(Path(merged_dir), config, arch, quant, metas=weights.metas() if weights is not None else None):
        t = stored.get(p.gguf_name)
        if t is None or p.meta is None:
            if p.meta is not None:
                missing.append(p.gguf_name)
            continue
        kind = t.tensor_type.name
        data = np.asarray(t.data)
        n_rows = p.shape[0] if len(p.shape) == 2 else 0
        if not p.experts and n_rows > SAMPLE_ROWS and data.ndim == 2 and data.shape[0] == n_rows:
            rows = np.unique(np.linspace(0, n_rows - 1, SAMPLE_ROWS).round().astype(np.int64))
            # the base rows these GGUF rows come from (the writer's q/k permutation applied to row numbers),
            # merged for those rows only; a row of the GGUF is a row of the tensor (whole blocks)
            base_rows = oriented(p, np.arange(n_rows), config, arch)[rows]
            part = weights.read_rows(p.meta, torch.from_numpy(base_rows)) if weights is not None \
                else read_rows(p.meta, base_rows)
            ref = part.float().numpy()
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

    from studio.export.gguf_writer import check_supported, permute_qk
    from studio.export.lora_gguf import lora_tensors, read_lora_gguf

    config = json.loads((Path(base_dir) / "config.json").read_text(encoding="utf-8"))
    arch = check_supported(config)
    meta, pairs = read_lora_gguf(lora_path)
    keys_ok = (meta.get("general.type") == "adapter" and meta.get("adapter.type") == "lora"
               and meta.get("general.architecture") == arch.arch and "adapter.lora.alpha" in meta)
    alpha = float(meta.get("adapter.lora.alpha", 0.0))
    import gguf

    names = {g for g, _, _ in lora_tensors(adapter, config)}
    worst, missing = 0.0, sorted(names - set(pairs))
    name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.arch.upper()], int(config["num_hidden_layers"]))
    for hf_name, d in adapter.deltas.items():
        gname = name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gname not in pairs or any(x is None for x in pairs[gname]):
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

    from studio.data.light_tokenizer import LightTokenizer

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


@dataclass
class GgufTensor:
    """One tensor of a GGUF file as read back: ``data`` is a read-only view of the file's bytes, shaped
    like the ``gguf`` package's reader shapes it (float types by element, quantised types as rows of bytes)."""

    name: str
    tensor_type: Any  # gguf.GGMLQuantizationType
    shape: tuple  # GGUF order (innermost first)
    data: Any  # numpy array
    offset: int  # where the data starts in the file
    path: Path  # the file

    def read_rows(self, rows: Any) -> Any:
        """Rows ``rows`` of ``data`` (first axis), read from the file (``safetensors_io.read_file_rows``)
        instead of through the memory map."""
        import numpy as np

        from studio.safetensors_io import read_file_rows

        buf = read_file_rows(self.path, self.offset, self.data.nbytes // self.data.shape[0], rows)
        return np.frombuffer(buf, dtype=self.data.dtype).reshape(-1, *self.data.shape[1:])


@dataclass
class GgufFile:
    """What the checks read back from a written GGUF: its key/value fields and its tensors."""

    fields: dict[str, Any]
    tensors: list[GgufTensor]


# GGUF value types (the gguf package's GGUFValueType numbering) -> numpy dtype, little-endian as written
_SCALARS = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "<u1", 10: "<u8", 11: "<i8",
            12: "<f8"}
_STRING, _ARRAY = 8, 9


def gguf_reader(path: Path) -> GgufFile:
    """Read a GGUF's fields and tensor table in one pass over its header; tensor data stays memory-mapped.

    The gguf package's ``GGUFReader`` builds a numpy view for every part of every field, which takes
    seconds for a 50k-token vocabulary (most of an export's verification); this reads the same format
    (GGUF v2/v3, little-endian) with numpy slices for numeric arrays and one loop for string arrays.
    A test checks that it returns exactly what ``GGUFReader`` returns. Strings are decoded; numeric
    arrays are numpy arrays; scalars are Python numbers.
    """
    import struct

    import numpy as np
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
    from gguf.quants import quant_shape_to_byte_shape

    mm = np.memmap(str(path), dtype=np.uint8, mode="r")
    buf = memoryview(mm)
    pos = 0

    def take(fmt: str):
        nonlocal pos
        out = struct.unpack_from(fmt, buf, pos)
        pos += struct.calcsize(fmt)
        return out[0]

    def string() -> str:
        nonlocal pos
        n = take("<Q")
        pos += n
        return bytes(buf[pos - n:pos]).decode("utf-8")

    def value(kind: int):
        nonlocal pos
        if kind == _STRING:
            return string()
        if kind == _ARRAY:
            sub, count = take("<I"), take("<Q")
            if sub == _STRING:
                return [string() for _ in range(count)]
            if sub == _ARRAY:
                return [value(_ARRAY) for _ in range(count)]
            dt = np.dtype(_SCALARS[sub])
            arr = np.frombuffer(buf, dtype=dt, count=count, offset=pos)
            pos += count * dt.itemsize
            return arr.astype(bool) if sub == 7 else arr
        if kind not in _SCALARS:
            raise ValueError(f"{path}: unknown GGUF value type {kind} at byte {pos}")
        dt = np.dtype(_SCALARS[kind])
        pos += dt.itemsize
        item = np.frombuffer(buf, dtype=dt, count=1, offset=pos - dt.itemsize)[0].item()
        return bool(item) if kind == 7 else item

    if bytes(buf[:4]) != b"GGUF":
        raise ValueError(f"{path}: not a GGUF file (no GGUF magic)")
    pos = 4
    version = take("<I")
    if version not in (2, 3):
        raise ValueError(f"{path}: GGUF version {version} is not read here (2 and 3 are)")
    n_tensors, n_kv = take("<Q"), take("<Q")
    fields: dict[str, Any] = {}
    for _ in range(n_kv):
        key = string()
        fields[key] = value(take("<I"))
    infos = []
    for _ in range(n_tensors):
        name = string()
        dims = tuple(take("<Q") for _ in range(take("<I")))
        infos.append((name, GGMLQuantizationType(take("<I")), dims, take("<Q")))
    align = int(fields.get("general.alignment", 32))
    start = (pos + align - 1) // align * align
    q = GGMLQuantizationType
    floats = {q.F32: np.float32, q.F16: np.float16, q.F64: np.float64, q.I8: np.int8, q.I16: np.int16,
              q.I32: np.int32, q.I64: np.int64}  # typed as the gguf package types them; the rest as bytes
    tensors = []
    for name, kind, dims, offset in infos:
        n = int(np.prod(dims)) if dims else 1
        block, size = GGML_QUANT_SIZES[kind]
        shape = tuple(reversed(dims))
        if kind in floats:
            dt, count = floats[kind], n
        else:
            dt, count, shape = np.uint8, n * size // block, quant_shape_to_byte_shape(shape, kind)
        data = np.frombuffer(buf, dtype=dt, count=count, offset=start + offset).reshape(shape)
        tensors.append(GgufTensor(name, kind, dims, data, start + offset, Path(path)))
    return GgufFile(fields, tensors)


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


def llama_simple() -> Path | None:
    """llama.cpp's ``llama-simple`` (greedy generation), if installed: LORA_STUDIO_LLAMA_CPP (its folder
    or a build with bin/) or on PATH."""
    import os
    import shutil

    root = os.environ.get("LORA_STUDIO_LLAMA_CPP")
    if root:
        for cand in (Path(root) / "llama-simple", Path(root) / "bin" / "llama-simple",
                     Path(root) / "build" / "bin" / "llama-simple"):
            if cand.is_file():
                return cand
    found = shutil.which("llama-simple")
    return Path(found) if found else None


def merged_in_memory(weights: Any, trust: bool = False) -> Any:
    """The merged model in transformers (float32): the base loaded, each weight the adapter changes set
    to its merged value in the base dtype, exactly as a merged folder would load."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(weights.base_dir), dtype=torch.float32, trust_remote_code=trust)
    params = dict(model.named_parameters(remove_duplicate=False))
    changed = weights.changed()
    metas = {m.name: m for m in weights.metas() if m.name in changed}
    missing = sorted(changed - set(params))
    if missing:
        from studio.export.errors import VerificationFailed

        raise VerificationFailed(f"the loaded model has no parameter {missing[0]} for the adapter's update",
                                 "export with --format merged and report this model")
    from studio.safetensors_io import DTYPES

    with torch.no_grad():  # the merge's own arithmetic on the loaded float32 values, no second read
        for name, meta in metas.items():
            w, dtype = params[name].data, getattr(torch, DTYPES[meta.dtype])
            if name in weights.adapter.replacements:
                w.copy_(weights.adapter.replacements[name].to(dtype).reshape(w.shape).float())
                continue
            weights.adapter.deltas[name].add_to(w)  # float32 in place, as merge.merged_tensor does
            if dtype != torch.float32:
                w.copy_(w.to(dtype).float())  # the merged folder holds it in the base dtype
    return model


def check_gguf_llama(merged_dir: Path, gguf_path: Path, quant: str, new_tokens: int = 8,
                     source: str = "merged", trust: bool = False, weights: Any = None,
                     adapter_digest: str | None = None) -> Check:
    """Greedy text of the GGUF in llama.cpp itself == the merged model's in transformers (``GreedyCheck``)."""
    greedy_check = GreedyCheck(merged_dir, gguf_path, new_tokens, source, trust, weights, adapter_digest)
    greedy_check.start()
    return greedy_check.finish()


class GreedyCheck:
    """Greedy text of the GGUF in llama.cpp itself == the merged model's in transformers, when llama.cpp
    is installed; otherwise skipped, saying so (the weights and vocabulary are checked anyway).

    llama.cpp answers each fixed prompt greedily; the merged model then reads the prompt and llama.cpp's
    answer in one forward pass (teacher forcing), and the answer is the merged model's own greedy answer
    when, at every position, its most likely next token is the one llama.cpp wrote (and, where
    llama.cpp ended the answer early, an end-of-turn token): one pass instead of a token-by-token
    generation. Where that pass cannot decide (a divergence, or a text that does not tokenise back into
    the same tokens, such as a UTF-8 character cut at the token cap), the merged model generates its
    own answer and the texts are compared; a divergence says where it happened and by how many logits
    the merged model preferred its own token (a near-tie is quantisation noise; a wide gap, a broken file).

    In three steps, so that the waits overlap: created and ``start()``-ed once the GGUF is written (the
    prompts rendered, one llama.cpp process per prompt started), then the other checks run while
    llama.cpp answers, and ``finish()`` comes last. The merged model's answers depend only on the base
    weights, the adapter's files, the prompt and the library versions: the export cache keeps each one
    confirmed or generated, and each verdict on an answer that differs (llama.cpp answers a given file
    the same way every time), so the next export of the run (another quantisation, Ollama) needs no
    transformers at all when every answer is decided by them. Importing transformers on a thread while
    the GGUF is written was tried: the writer slowed down by as much as the import saved.

    ``weights`` (``merge.MergedWeights``): the merged model is the base loaded by transformers with the
    changed weights replaced by their merged values, when ``merged_dir`` holds no weight files;
    ``adapter_digest``: sha256 of the adapter those weights come from (None: ``merged_dir`` is the model).
    """

    def __init__(self, merged_dir: Path, gguf_path: Path, new_tokens: int = 8, source: str = "merged",
                 trust: bool = False, weights: Any = None, adapter_digest: str | None = None) -> None:
        self.merged_dir, self.gguf_path, self.new_tokens = Path(merged_dir), Path(gguf_path), new_tokens
        self.source, self.trust, self.weights = source, trust, weights
        self.exe = llama_simple()
        self.procs: list = []
        if self.exe is None:
            return
        from studio.export import cache

        self.tok = tokenizer_for(self.merged_dir, trust)
        self.ids = prompt_ids(self.tok)
        self.prompts = [self.tok.decode(prompt, skip_special_tokens=False) for prompt in self.ids]
        base_dir = weights.base_dir if weights is not None else self.merged_dir
        self.key = cache.reference_key(base_dir, adapter_digest, self.ids, new_tokens)
        entry = cache.load("reference", self.key)
        value = entry["value"] if entry is not None else {}
        known, seen = value.get("answers"), value.get("verdicts")
        n = len(self.ids)
        known = known if isinstance(known, list) and len(known) == n else [None] * n
        seen = seen if isinstance(seen, list) and len(seen) == n else [{}] * n
        # per prompt: the merged model's own answer when known, and verdicts on llama.cpp answers it differs from
        self.known: list[str | None] = [a if isinstance(a, str) else None for a in known]
        self.seen: list[dict] = [dict(v) if isinstance(v, dict) else {} for v in seen]
        self.created = entry.get("created") if entry is not None else None

    @property
    def light(self) -> Any:
        """The folder's ``LightTokenizer`` when this check read one (the vocabulary check reuses it)."""
        from studio.data.light_tokenizer import LightTokenizer

        tok = getattr(self, "tok", None)
        return tok if isinstance(tok, LightTokenizer) else None

    def start(self) -> None:
        """llama.cpp answers every prompt in its own process (each mostly loads the file, so they overlap)."""
        import os
        import subprocess

        if self.exe is None:
            return
        # The cores shared out between the runs: llama-simple has no thread option and starts 4 threads, and
        # with more threads than cores every step waits on a descheduled one (on 2 cores, 3 runs: 0.65 s at 4
        # threads each, 0.38 s at 1). A build with OpenMP (the default) honours the limit; idle threads sleep.
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        env = dict(os.environ, OMP_THREAD_LIMIT=str(max(1, cores // len(self.prompts))), OMP_WAIT_POLICY="PASSIVE")
        self.procs = [subprocess.Popen([str(self.exe), "-m", str(self.gguf_path), "-n", str(self.new_tokens), prompt],
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace",
                                       env=env)
                      for prompt in self.prompts]  # a piece can split a UTF-8 character: U+FFFD, as transformers decodes

    def finish(self) -> Check:
        if self.exe is None:
            return Check("gguf_greedy", None, "skipped: llama.cpp is not installed (set LORA_STUDIO_LLAMA_CPP to its "
                                              "build folder to compare greedy answers in llama.cpp itself)")
        answers: list[str | None] = []
        failures: list[str] = []
        try:
            for proc, prompt in zip(self.procs, self.prompts):
                out, err = proc.communicate(timeout=300)
                # llama-simple prints the prompt, the answer, then one newline
                text = out.split(prompt, 1)[1] if proc.returncode == 0 and prompt in out else None
                answers.append(text[:-1] if text is not None and text.endswith("\n") else text)
                if text is None:
                    last = [line for line in err.strip().splitlines() if line.strip()][-1:]
                    failures.append(f"exit code {proc.returncode}" + (f": {last[0].strip()[:200]}" if last else ""))
        finally:
            for proc in self.procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        verdicts = [self._from_cache(a, k, seen) for a, k, seen in zip(answers, self.known, self.seen)]
        origin = f"; reference answers from the export cache ({self.created})" if all(verdicts) else ""
        if not all(verdicts):
            base = self.weights.base_dir if self.weights is not None else self.merged_dir
            ok, why = memory_ok(model_bytes(base, 4))
            if not ok:
                return Check("gguf_greedy", None, f"skipped: the {self.source} model in float32 {why}")
            verdicts, note = self._teacher_forced(answers, verdicts)
            origin = note
        same = sum(bool(v["identical"]) for v in verdicts)
        gaps = [v for v in verdicts if "gap" in v]
        worst = max(gaps, key=lambda v: v["gap"]) if gaps else None
        # One flip at a near-tie (quantisation noise) can change a short greedy answer; none matching is a broken file.
        return Check("gguf_greedy", same > 0,
                     f"GGUF greedy text in llama.cpp ({self.exe.name}) vs {self.source} model: {same}/{len(self.ids)} "
                     f"prompts identical" + (f" (the widest divergence: token {worst['at'] + 1}, the {self.source} model "
                                             f"preferred its own by {worst['gap']:.3g} logits)" if worst else "")
                     + (f"; llama.cpp failed on {len(failures)} prompt(s) ({failures[0]})" if failures else "")
                     + origin,
                     {"identical": same, "prompts": len(self.ids), "tokens_per_prompt": self.new_tokens,
                      "llama_cpp": str(self.exe), "per_prompt": verdicts})

    @staticmethod
    def _from_cache(answer: str | None, known: str | None, seen: dict) -> dict:
        """The verdict on one llama.cpp answer from what the export cache holds, or {} when it cannot say."""
        if answer is None:
            return {"identical": False, "why": "llama.cpp failed"}
        earlier = seen.get(answer)
        if known is not None:
            verdict = {"identical": answer == known}
        elif isinstance(earlier, dict) and "identical" in earlier:
            verdict = {"identical": bool(earlier["identical"])}
        else:
            return {}
        if not verdict["identical"] and isinstance(earlier, dict):
            verdict.update({k: earlier[k] for k in ("at", "gap") if k in earlier})
        return dict(verdict, why="the export cache")

    def _teacher_forced(self, answers: list[str | None], verdicts: list[dict]) -> tuple[list[dict], str]:
        """Judge the answers the cache cannot: one forward pass of the merged model each, and a greedy
        generation where that pass cannot decide; keep the merged model's answers in the export cache."""
        import torch
        from transformers import AutoModelForCausalLM

        from studio.export import cache
        from studio.heap import release_freed_memory

        release_freed_memory()  # the writer's buffers, before the model takes their place
        if self.weights is None:
            model = AutoModelForCausalLM.from_pretrained(str(self.merged_dir), dtype=torch.float32,
                                                         trust_remote_code=self.trust)
        else:
            model = merged_in_memory(self.weights, self.trust)
        ends = _turn_end_ids(self.tok, self.merged_dir)
        out, known, seen = [], list(self.known), [dict(v) for v in self.seen]
        for i, (prompt, text, verdict) in enumerate(zip(self.ids, answers, verdicts)):
            if not verdict:
                cont = self.tok(text, add_special_tokens=False)["input_ids"]
                with torch.no_grad():
                    logits = model(torch.tensor([prompt + cont]), logits_to_keep=len(cont) + 1).logits[0]
                best = logits.argmax(-1).tolist()
                if _follows(best, cont, self.new_tokens, ends) and self.tok.decode(cont, skip_special_tokens=False) == text:
                    verdict, known[i] = {"identical": True}, text
                else:
                    verdict = self._diverged(logits, best, cont, text, ends)
                    if verdict is None:  # the pass cannot tell a divergence from a text tokenised another way
                        verdict, known[i] = self._generated(model, prompt, text, cont, ends)
                if not verdict["identical"]:  # llama.cpp's answers are deterministic: the same file gives it again
                    seen[i] = dict(list(seen[i].items())[-7:], **{text: verdict})
            out.append(verdict)
        del model
        why = cache.save("reference", self.key, {"answers": known, "verdicts": seen})
        return out, (f"; the reference answers could not be kept: {why}" if why else "")

    def _diverged(self, logits: Any, best: list[int], cont: list[int], text: str, ends: set[int]) -> dict | None:
        """Where the merged model's greedy answer leaves llama.cpp's, when the forward pass proves it: the
        model's preferred token is not how llama.cpp's text goes on. None when it could be the same text
        tokenised another way (the preferred token's text starts the rest, or a UTF-8 character is cut)."""
        j = next((k for k, (b, t) in enumerate(zip(best, cont)) if b != t), len(cont))
        done = self.tok.decode(cont[:j], skip_special_tokens=False)
        if not text.startswith(done):
            return None
        if j == len(cont):  # every token followed; llama.cpp ended the turn where the model goes on (or past the cap)
            if len(cont) >= self.new_tokens or not ends:
                return None
            row = logits[j]
            return {"identical": False, "at": j, "gap": float(row[best[j]] - max(row[e] for e in ends))}
        piece = self.tok.decode([best[j]], skip_special_tokens=False)
        if not piece or "\ufffd" in piece or text[len(done):].startswith(piece):
            return None
        return {"identical": False, "at": j, "gap": float(logits[j, best[j]] - logits[j, cont[j]])}

    def _generated(self, model: Any, prompt: list[int], text: str, cont: list[int], ends: set[int]) -> tuple[dict, str]:
        """The merged model's own greedy answer, stopping where llama.cpp stops (an end-of-turn token)."""
        import torch

        pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else (self.tok.eos_token_id or 0)
        with torch.no_grad():
            gen = model.generate(torch.tensor([prompt]), max_new_tokens=self.new_tokens, do_sample=False,
                                 eos_token_id=sorted(ends) or None, pad_token_id=pad, output_scores=True,
                                 return_dict_in_generate=True)
        own = gen.sequences[0, len(prompt):].tolist()
        while own and own[-1] in ends:
            own.pop()
        answer = self.tok.decode(own, skip_special_tokens=False)
        if answer == text:
            return {"identical": True, "generated": True}, answer
        at = next((j for j, (a, b) in enumerate(zip(own, cont)) if a != b), min(len(own), len(cont)))
        verdict: dict = {"identical": False, "at": at}
        if at < len(gen.scores) and at < len(cont) and at < len(own):
            row = gen.scores[at][0]
            verdict["gap"] = float(row[own[at]] - row[cont[at]])
        return verdict, answer


def _follows(best: list[int], cont: list[int], n: int, ends: set[int]) -> bool:
    """Teacher forcing decided it: at every position the most likely next token (``best``, one per
    position from the last prompt token on) is the one written next, and the answer stops where a
    greedy generation of ``n`` tokens stops (the token cap, or a token that ends the turn)."""
    if best[:len(cont)] != cont:
        return False
    return len(cont) == n or (len(cont) < n and best[len(cont)] in ends)


def _turn_end_ids(tok: Any, folder: Path) -> set[int]:
    """Tokens that end a turn: the tokenizer's EOS and the generation config's (llama.cpp stops on them)."""
    import json

    ids = {tok.eos_token_id} if tok.eos_token_id is not None else set()
    try:
        eos = json.loads((Path(folder) / "generation_config.json").read_text(encoding="utf-8")).get("eos_token_id")
    except (OSError, ValueError):
        eos = None
    ids.update([eos] if isinstance(eos, int) else [i for i in (eos or []) if isinstance(i, int)])
    return ids


def tokenizer_for(folder: Path, trust: bool = False) -> Any:
    """The folder's tokenizer for the fixed prompts: ``tokenizers`` + jinja2 (no transformers) when it has a
    tokenizer.json (tests/test_light_tokenizer.py checks both render and tokenise alike), else transformers'."""
    from studio.data.light_tokenizer import LightTokenizer

    if LightTokenizer.can_read(folder):
        return LightTokenizer(folder)
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder), trust_remote_code=trust)
