"""The planner against published measurements from the Hugging Face transformers + peft + bitsandbytes stack.

Every row is a figure someone measured and published, with the model, every setting the source
states (and the assumptions where it does not), what was measured and a link. The planner
predicts the same metric with the same settings; the table prints each error, then the median
and the maximum absolute error. Targets: median within 10%, max within 20%.

Two kinds of rows:

- ``max_len``: the longest sequence that trained in a given amount of GPU memory (Unsloth's
  benchmark of plain Hugging Face + Flash Attention 2 QLoRA). At that length the peak device
  memory is, by definition, about the GPU's memory, so the planner's device total at that
  length is compared with the memory size.
- ``footprint``: ``model.get_memory_footprint()`` after loading with bitsandbytes, i.e. the
  parameters and buffers as stored (4-bit packed weights, int8 weights, 16-bit rest); the
  4-bit absmax constants are not parameters and so are not part of it.

The published rows ran older transformers (4.4x) and, as the standard QLoRA recipe of the time,
peft's ``prepare_model_for_kbit_training``; the ``LEGACY_HF`` stack below describes that code
(see docs/planner.md). The planner's own default stack describes this studio's training code.

    python bench/planner_accuracy.py
"""
from __future__ import annotations

import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from studio import memory, models  # noqa: E402

GiB = 1024 ** 3

# transformers 4.4x: the model upcast the logits to fp32 and the loss made a shifted fp32 copy
# (two more fp32 logit tensors than the v5 loss), and peft's prepare_model_for_kbit_training
# upcast every non-quantised weight (embeddings, lm_head, norms) to fp32.
LEGACY_HF = memory.Stack(logits_bytes_per_vocab=16, upcast_unquantized_fp32=True)

UNSLOTH_DOCS = "https://docs.unsloth.ai/basics/unsloth-benchmarks"
UNSLOTH_LLAMA3 = "https://unsloth.ai/blog/llama3"
UNSLOTH_GEMMA2 = "https://unsloth.ai/blog/gemma2"
SMOLLM_CARD = "https://huggingface.co/HuggingFaceTB/SmolLM-135M (README, 'Memory footprint')"
QWEN_DEVTO = "https://dev.to/sumanpro/qlora-fine-tuning-a-7b-model-on-a-16gb-gpu-it-shrank-to-54gb-in-front-of-me-28n4"

# Unsloth's benchmark settings for the Hugging Face + FA2 baseline: 4-bit QLoRA on all linear layers
# (q, k, v, o, gate, up, down), rank 32, batch size 1, sequences padded to the length, bf16 on an
# A100. Assumed where the page is silent: double quant on, adamw_8bit (Unsloth's notebooks), LoRA
# dropout 0, gradient checkpointing on (HF's standard setting for long-context QLoRA). The baseline computes
# the loss from the full logits (no tiled head).
_UNSLOTH = {"quant.mode": "4bit", "quant.double_quant": True, "lora.rank": 32, "lora.alpha": 32,
            "lora.targets": ["all-linear"], "train.micro_batch": 1, "train.grad_accum": 4, "train.grad_ckpt": True,
            "train.attn": "flash_attention_2", "train.optimizer": "adamw_8bit", "quant.compute_dtype": "bfloat16",
            "train.tiled_head": False}


def _maxlen(model: str, gib: int, seq: int, url: str, note: str = "", attn: str = "flash_attention_2") -> dict:
    settings = {**_UNSLOTH, "train.seq_len": seq, "train.attn": attn}
    return {"kind": "max_len", "model": model, "settings": settings, "measured": gib * GiB,
            "what": f"longest length ({seq:,} tokens) that trained in a {gib} GB GPU (HF + FA2)",
            "source": url, "stack": LEGACY_HF, "lora.dropout": 0.0, "note": note}


def _footprint(model: str, quant: str, dtype: str, measured: float, url: str, what: str) -> dict:
    settings = {**_UNSLOTH, "quant.mode": quant, "quant.compute_dtype": dtype, "train.seq_len": 1}
    return {"kind": "footprint", "model": model, "settings": settings, "measured": measured,
            "what": what, "source": url, "stack": memory.OURS, "lora.dropout": 0.0, "note": ""}


ROWS = [
    _maxlen("llama-3.1-8b-instruct", 12, 932, UNSLOTH_DOCS),
    _maxlen("llama-3.1-8b-instruct", 16, 2551, UNSLOTH_DOCS),
    _maxlen("llama-3.1-8b-instruct", 24, 5789, UNSLOTH_DOCS),
    _maxlen("llama-3.1-8b-instruct", 40, 12264, UNSLOTH_DOCS),
    _maxlen("llama-3.1-8b-instruct", 48, 15502, UNSLOTH_DOCS),
    _maxlen("llama-3.1-8b-instruct", 80, 28454, UNSLOTH_DOCS),
    _maxlen("llama-3.3-70b-instruct", 80, 6916, UNSLOTH_DOCS),
    _maxlen("llama-3.1-70b-instruct", 80, 7500, UNSLOTH_LLAMA3,
            "Llama-3 70B (same shapes as 3.1); the blog rounds the length ('7.5K')"),
    # Gemma 2: soft-capped attention has no FA2/sdpa path in transformers, so HF ran eager attention
    # (the blog: "attention matrices actually use O(N^2) memory"); lengths rounded in the source.
    _maxlen("gemma-2-9b-it", 24, 2600, UNSLOTH_GEMMA2, "the blog: 'HF+FA2 fits 2.6K lengths'", attn="eager"),
    _maxlen("gemma-2-27b-it", 40, 3000, UNSLOTH_GEMMA2, "the blog: 'HF+FA2 only allows 3K lengths'", attn="eager"),
    _footprint("smollm2-135m-instruct", "none", "bfloat16", 269.03e6, SMOLLM_CARD,
               "get_memory_footprint(), SmolLM-135M in bfloat16: 269.03 MB"),
    _footprint("smollm2-135m-instruct", "8bit", "float16", 162.87e6, SMOLLM_CARD,
               "get_memory_footprint(), SmolLM-135M load_in_8bit: 162.87 MB"),
    _footprint("smollm2-135m-instruct", "4bit", "float16", 109.78e6, SMOLLM_CARD,
               "get_memory_footprint(), SmolLM-135M load_in_4bit: 109.78 MB"),
    _footprint("qwen2.5-7b-instruct", "4bit", "float16", 5.44e9, QWEN_DEVTO,
               "get_memory_footprint(), Qwen2.5-7B NF4 double quant: 5.44 GB"),
]


def footprint_bytes(info, settings: dict) -> int:
    """What get_memory_footprint() counts: stored parameters and buffers (not the 4-bit absmax)."""
    a = memory.dtype_bytes(settings["quant.compute_dtype"])
    qn = sum(g.weight_numel for g in info.linears if g.quantized)
    stored = {"4bit": qn // 2, "8bit": qn, "none": qn * a}[settings["quant.mode"]]
    return stored + (info.total_params - qn) * a


def predict(row: dict) -> int:
    info = models.resolve(row["model"])
    if row["kind"] == "footprint":
        return footprint_bytes(info, row["settings"])
    return memory.estimate(info, row["settings"], dropout=row["lora.dropout"], stack=row["stack"]).device_total


def fit_allocator_overhead() -> float:
    """Least-squares ALLOCATOR_OVERHEAD over the max_len rows: measured = allocated * (1 + f) + context."""
    num = den = 0.0
    for row in ROWS:
        if row["kind"] != "max_len":
            continue
        est = memory.estimate(models.resolve(row["model"]), row["settings"], dropout=row["lora.dropout"], stack=row["stack"])
        rest = est.device_total - est.peak_reserved  # context (+ paged state): outside the allocator
        num += est.peak_allocated * (row["measured"] - rest - est.peak_allocated)
        den += est.peak_allocated ** 2
    return num / den


def main() -> int:
    if sys.argv[1:] == ["--fit"]:
        print(f"least-squares ALLOCATOR_OVERHEAD over the max_len rows: {fit_allocator_overhead():.3f} "
              f"(now {memory.ALLOCATOR_OVERHEAD})")
        return 0
    errors = []
    print(f"{'#':>2} {'model':<24} {'quant.mode':<5} {'seq':>6} {'measured':>11} {'predicted':>11} {'error':>7}  what / source")
    for i, row in enumerate(ROWS, 1):
        pred = predict(row)
        err = (pred - row["measured"]) / row["measured"]
        errors.append(abs(err))
        s = row["settings"]
        print(f"{i:>2} {row['model']:<24} {s['quant.mode']:<5} {s['train.seq_len']:>6} {row['measured'] / GiB:>9.3f}Gi "
              f"{pred / GiB:>9.3f}Gi {err:>+7.1%}  {row['what']}; {row['source']}"
              + (f" ({row['note']})" if row["note"] else ""))
    med, worst = statistics.median(errors), max(errors)
    print(f"\nrows: {len(errors)}   median |error|: {med:.1%} (target 10%)   max |error|: {worst:.1%} (target 20%)")
    return 0 if med <= 0.10 and worst <= 0.20 else 1


if __name__ == "__main__":
    sys.exit(main())
