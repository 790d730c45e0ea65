"""Measure real peak memory over a grid of settings on this GPU and fit the planner's coefficients.

For every grid point: a model of the base shape (random weights, built from the config, never
downloaded) with the grid's vocabulary size is trained for 3 steps through the studio's own
loader and Trainer (``lora-studio probe`` does one point). Printed: predicted vs
measured peak allocated, peak reserved and NVML device use, with errors; written: a JSON file in
``bench/measurements/`` named by date and GPU. ``--fit`` then fits the three coefficients of
``studio/memory.py`` (activation scale, allocator overhead, CUDA context) to the measurements.

``--long-context`` measures the long-sequence parts instead (issue 30): Llama-3.1-8B's full shape
(catalog ``llama-3.1-8b-instruct``, 32 layers, 128k vocabulary; random weights drawn once on the GPU,
saved and loaded by every point, 4-bit) at 16k, 32k and 64k tokens, rank 32, batch 1, accumulation 1,
checkpointing, sdpa (flash) attention, the tiled LM head. At each length: the settings
``planner.fit`` chooses for a 24 GiB card (it turns the tiled MLP and activation offloading on where
the length needs them), and the same with both forced on, so that each part is measured at every
length (a point is run once when the two are the same: 5 points). Printed per point, besides the
three device figures: the pinned host memory activation offloading took (torch's host allocator peak)
against the planner's ``host_offload``, the process's resident-memory rise during the steps, and the
median step time after the first against the planner's uncalibrated estimate for this GPU.
Duration on an H100 80GB (``--long-context --dry-run`` prints the planner's step times for it: 1.5 to
4.5 s at 16k and 32k, 12.3 s at 64k, 24 s for one step of each of the 5 points): 3 steps of every point
are 72 s at the planner's speed, 2.5 minutes at half of it; drawing the 8B weights, saving them (16 GB)
and 5 loads with 4-bit quantisation add about 4 minutes: about 7 minutes in all, within one 10-minute
command. It needs about 20 GB of free host RAM (the offloaded activations at 64k) and 16 GB of free disk.

    python bench/calibrate_memory.py                 # the default grid (about 10 minutes on an H100)
    python bench/calibrate_memory.py --dry-run       # print the grid and the predictions only (no GPU)
    python bench/calibrate_memory.py --fit FILE.json # fit coefficients to saved measurements
    python bench/calibrate_memory.py --long-context  # 8B at 16k-64k tokens (about 7 minutes on an H100)
    python bench/calibrate_memory.py --long-context --dry-run  # its points and predictions (no GPU)
"""
from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import re
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from studio import memory, models, planner, speed  # noqa: E402

OUT_DIR = ROOT / "bench" / "measurements"
BASE_MODEL = "qwen2.5-0.5b-instruct"  # small enough to train at every grid point on a 24 GB card
VOCABS = (32000, 128256, 151936)
LENGTHS = (512, 1024, 2048)
ATTNS = ("sdpa", "eager")
GC = (True, False)
# --long-context: the model and settings (Unsloth's published 24 GB row is Llama 3.1 8B, rank 32, batch 1).
LONG_BASE = "llama-3.1-8b-instruct"
LONG_LENGTHS = (16384, 32768, 65536)
LONG_BUDGET = 24 * 2**30  # the card the planner chooses the long-sequence parts for
LONG_FIXED = {"quant.mode": "4bit", "lora.rank": 32, "train.micro_batch": 1, "train.grad_accum": 1,
              "train.grad_ckpt": True, "train.attn": "sdpa"}
DRY_RUN_GPU = "NVIDIA H100 80GB HBM3"  # the card the dry run's step times are estimated for


def grid(base: str = BASE_MODEL, vocabs=VOCABS, lengths=LENGTHS, attns=ATTNS, gcs=GC) -> list[tuple]:
    """(ModelInfo, settings) for every grid point: vocab x grad-ckpt x attention x length."""
    entry = models.find_catalog(base)
    points = []
    for vocab, gc, attn, seq in itertools.product(vocabs, gcs, attns, lengths):
        info, config = _shape(entry, vocab, f"{base}-v{vocab}")
        settings = {"quant.mode": "4bit", "quant.double_quant": True, "lora.rank": 16, "lora.alpha": 32,
                    "lora.targets": ["all-linear"], "train.micro_batch": 2, "train.grad_accum": 1, "train.seq_len": seq,
                    "train.grad_ckpt": gc, "train.attn": attn, "train.optimizer": "adamw_torch",
                    "quant.compute_dtype": "bfloat16"}
        points.append((info, settings, config))
    return points


def long_context_grid(base: str = LONG_BASE, lengths=LONG_LENGTHS, budget: int = LONG_BUDGET) -> list[tuple]:
    """(ModelInfo, settings, config) per long-context point: at each length the settings planner.fit chooses
    for ``budget`` with LONG_FIXED kept, then the same with the tiled MLP and offloading forced on (once
    when they are the same). The model keeps its own vocabulary; the points share one random model."""
    entry = models.find_catalog(base)
    info, config = _shape(entry, entry.config["vocab_size"], base)
    points: list[tuple] = []
    for seq in lengths:
        chosen = planner.fit(info, budget, fixed={**LONG_FIXED, "train.seq_len": seq}).settings.to_dict()
        forced = {**chosen, "train.tiled_mlp": True, "train.offload_activations": True}
        for settings in (chosen, forced):
            if all(settings != p[1] for p in points):
                points.append((info, settings, config))
    return points


def _shape(entry, vocab: int, name: str) -> tuple[Any, dict]:
    """The catalog entry's ModelInfo and config with the vocabulary ``vocab``."""
    config = dict(entry.config, vocab_size=vocab)
    info = models._shape_from_config(config, name=name, source="catalog")
    info.params, info.linears = _counts(entry, vocab)
    return info, config


def _counts(entry, vocab: int) -> tuple[dict, list]:
    """The entry's counts with the embedding (and untied lm_head) resized to ``vocab``."""
    params = dict(entry.param_groups)
    params["embeddings"] = vocab * entry.config["hidden_size"]
    if "lm_head" in params:
        params["lm_head"] = vocab * entry.config["hidden_size"]
    linears = []
    for g in entry.linears:
        g = dict(g)
        if not g["lora_all_linear"]:
            g["out_features"] = vocab
        linears.append(models.LinearGroup(**g))
    return params, linears


def _row(info, settings: dict, measured: dict | None, gpu: str = "") -> dict:
    """Predicted (and measured) figures of one point; ``gpu``: also the planner's step time on that card."""
    est = memory.estimate(info, settings)
    row = {"model": info.name, "vocab": info.vocab, "settings": settings,
           "predicted": {"peak_allocated": est.peak_allocated, "peak_reserved": est.peak_reserved,
                         "device_used": est.device_total, "host_pinned": est.host_offload},
           "components": est.components}
    if gpu:
        time_est = speed.estimate(info, settings, "cuda", gpu_name=gpu, steps=1)  # uncalibrated, as it predicts
        row["predicted"]["step_seconds"] = time_est.step_seconds if time_est else None
        row["gpu_for_time"] = gpu
    if measured:
        row["measured"] = {k: measured.get(k) for k in ("peak_allocated", "peak_reserved", "host_pinned", "rss_rise",
                                                          "step_seconds")}
        base = measured.get("baseline_device_used")
        row["measured"]["device_used_raw"] = measured.get("device_used")
        row["measured"]["baseline_device_used"] = base
        # this run's share of nvidia-smi's figure (CUDA context included): comparable with device_total
        row["measured"]["device_used"] = (measured["device_used"] - base) if measured.get("device_used") and \
            base is not None else None
    return row


def _print(row: dict) -> None:
    s = row["settings"]
    head = f"v{row['vocab']:<7} seq {s['train.seq_len']:<5} {'gc' if s['train.grad_ckpt'] else 'no-gc':<5} {s['train.attn']:<6}"
    keys = ["peak_allocated", "peak_reserved", "device_used"]
    if "step_seconds" in row["predicted"]:  # a long-context point: its parts, host memory and step time
        head += " " + " ".join(f"{name}:{'on' if s.get(key) else 'off'}" for name, key in (
            ("head", "train.tiled_head"), ("mlp", "train.tiled_mlp"), ("offload", "train.offload_activations")))
        head += f" kernels:{s.get('train.kernels')}"
        keys.append("host_pinned")
    measured = row.get("measured") or {}
    parts = []
    for k in keys:
        p = row["predicted"][k] / 2**30
        m = measured.get(k)
        parts.append(f"{k} {p:6.2f}" + (f"/{m / 2**30:6.2f} GiB ({(p * 2**30 - m) / m:+.1%})" if m else " GiB"))
    if "step_seconds" in row["predicted"]:
        if measured.get("rss_rise") is not None:
            parts.append(f"rss_rise {measured['rss_rise'] / 2**30:.2f} GiB")
        p, m = row["predicted"]["step_seconds"], measured.get("step_seconds")
        parts.append(f"step {p or 0:.2f}" + (f"/{m:.2f} s ({(p - m) / m:+.1%})" if m and p else " s"))
    print(head, "  ".join(parts), flush=True)


def measure_grid(points: list, steps: int, gpu: str = "", shared_model: bool = False) -> list[dict]:
    """Measure every point; ``shared_model``: the points have one shape, whose random model is drawn once
    on the GPU and loaded by each point (an 8B model takes minutes to draw on the CPU)."""
    import gc

    import torch

    from studio.commands.probe import measure, random_model_folder
    from studio.hardware import gpu_memory_used

    rows = []
    baseline = gpu_memory_used(0)  # before this process creates its CUDA context
    with tempfile.TemporaryDirectory() as tmp:
        folder = None
        if shared_model:
            info, _, config = points[0]
            folder = random_model_folder(info, Path(tmp) / "model", config, device="cuda")
        for info, settings, config in points:
            try:
                measured = measure(info, settings, steps=steps, config_dict=config, baseline=baseline,
                                   model_folder=folder)
            except Exception as e:  # an OOM at one point must not lose the others
                print(f"  failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}", flush=True)
                measured = None
                gc.collect()
                torch.cuda.empty_cache()
            row = _row(info, settings, measured, gpu)
            _print(row)
            rows.append(row)
    return rows


def fit_coefficients(rows: list[dict]) -> dict:
    """Least-squares activation scale, median allocator overhead and median CUDA context."""
    num = den = 0.0
    ratios, contexts = [], []
    for r in rows:
        m = r.get("measured")
        if not m or not m.get("peak_allocated"):
            continue
        c = r["components"]
        act = sum(v for k, v in c.items() if k in ("activations", "recomputed_layer", "lora_activations",
                                                     "attention_scores"))
        rest = r["predicted"]["peak_allocated"] - act
        if act:
            num += act * (m["peak_allocated"] - rest)
            den += act * act
        ratios.append(m["peak_reserved"] / m["peak_allocated"] - 1)
        if m.get("device_used"):
            contexts.append(m["device_used"] - m["peak_reserved"])
    return {"ACT_SCALE": round(memory.ACT_SCALE * num / den, 3) if den else None,
            "ALLOCATOR_OVERHEAD": round(statistics.median(ratios), 3) if ratios else None,
            "CUDA_CONTEXT_MiB": round(statistics.median(contexts) / 2**20) if contexts else None,
            "points": len(ratios)}


def save(rows: list[dict], gpu: str, suffix: str = "") -> Path:
    from studio.fsutil import atomic_write_json

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
    path = OUT_DIR / f"{stamp}-{re.sub(r'[^A-Za-z0-9]+', '-', gpu).strip('-')}{suffix}.json"
    atomic_write_json(path, {"date": stamp, "gpu": gpu, "rows": rows})
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="print the grid with predictions; measure nothing")
    ap.add_argument("--fit", metavar="FILE", help="fit coefficients to a saved measurements file")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--base", help=f"catalog id whose shape the grid uses (default {BASE_MODEL}; "
                                   f"{LONG_BASE} with --long-context)")
    ap.add_argument("--long-context", action="store_true",
                    help="8B at 16k, 32k and 64k tokens with the tiled head, tiled MLP and activation offloading")
    args = ap.parse_args(argv)
    if args.fit:
        rows = json.loads(Path(args.fit).read_text())["rows"]
        print(json.dumps(fit_coefficients(rows), indent=2))
        return 0
    if args.long_context:
        points = long_context_grid(args.base or LONG_BASE)
    else:
        points = grid(args.base or BASE_MODEL)
    if args.dry_run:
        gpu_for_time = DRY_RUN_GPU if args.long_context else ""
        for info, settings, _ in points:
            _print(_row(info, settings, None, gpu_for_time))
        return 0
    from studio.commands.probe import NoGpu, require_gpu

    try:
        gpu = require_gpu()
    except NoGpu as e:
        print(f"calibrate_memory: {e}; this script measures real training and needs an NVIDIA GPU "
              "(use --dry-run to see the grid and the predictions).")
        return 1
    if args.long_context:
        rows = measure_grid(points, args.steps, gpu.name, shared_model=True)
        print(f"wrote {save(rows, gpu.name, '-long-context')}")
        return 0  # these rows check the long-sequence components; the three coefficients come from the grid
    rows = measure_grid(points, args.steps)
    path = save(rows, gpu.name)
    print(f"wrote {path}")
    print("fitted coefficients:", json.dumps(fit_coefficients(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
