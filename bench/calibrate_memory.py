"""Measure real peak memory over a grid of settings on this GPU and fit the planner's coefficients.

For every grid point: a model of the base shape (random weights, built from the config, never
downloaded) with the grid's vocabulary size is trained for 3 steps through the studio's own
loader and Trainer settings (``lora-studio probe`` does one point). Printed: predicted vs
measured peak allocated, peak reserved and NVML device use, with errors; written: a JSON file in
``bench/measurements/`` named by date and GPU. ``--fit`` then fits the three coefficients of
``studio/memory.py`` (activation scale, allocator overhead, CUDA context) to the measurements.

    python bench/calibrate_memory.py                 # the default grid (about 10 minutes on an H100)
    python bench/calibrate_memory.py --dry-run       # print the grid and the predictions only (no GPU)
    python bench/calibrate_memory.py --fit FILE.json # fit coefficients to saved measurements
"""
from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import re
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from studio import memory, models  # noqa: E402

OUT_DIR = ROOT / "bench" / "measurements"
BASE_MODEL = "qwen2.5-0.5b-instruct"  # small enough to train at every grid point on a 24 GB card
VOCABS = (32000, 128256, 151936)
LENGTHS = (512, 1024, 2048)
ATTNS = ("sdpa", "eager")
GC = (True, False)


def grid(base: str = BASE_MODEL, vocabs=VOCABS, lengths=LENGTHS, attns=ATTNS, gcs=GC) -> list[tuple]:
    """(ModelInfo, settings) for every grid point: vocab x grad-ckpt x attention x length."""
    entry = models.find_catalog(base)
    points = []
    for vocab, gc, attn, seq in itertools.product(vocabs, gcs, attns, lengths):
        config = dict(entry.config, vocab_size=vocab)
        info = models._shape_from_config(config, name=f"{base}-v{vocab}", source="catalog")
        info.params, info.linears = _counts(entry, vocab)
        settings = {"quant.mode": "4bit", "quant.double_quant": True, "lora.rank": 16, "lora.alpha": 32,
                    "lora.targets": ["all-linear"], "train.micro_batch": 2, "train.grad_accum": 1, "train.seq_len": seq,
                    "train.grad_ckpt": gc, "train.attn": attn, "train.optimizer": "adamw_torch",
                    "quant.compute_dtype": "bfloat16"}
        points.append((info, settings, config))
    return points


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


def _row(info, settings: dict, measured: dict | None) -> dict:
    est = memory.estimate(info, settings)
    row = {"model": info.name, "vocab": info.vocab, "settings": settings,
           "predicted": {"peak_allocated": est.peak_allocated, "peak_reserved": est.peak_reserved,
                         "device_used": est.device_total},
           "components": est.components}
    if measured:
        row["measured"] = {k: measured[k] for k in ("peak_allocated", "peak_reserved")}
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
    parts = []
    for k in ("peak_allocated", "peak_reserved", "device_used"):
        p = row["predicted"][k] / 2**30
        m = (row.get("measured") or {}).get(k)
        parts.append(f"{k} {p:6.2f}" + (f"/{m / 2**30:6.2f} GiB ({(p * 2**30 - m) / m:+.1%})" if m else " GiB"))
    print(head, "  ".join(parts), flush=True)


def measure_grid(points: list, steps: int) -> list[dict]:
    from studio.commands.probe import measure
    from studio.hardware import gpu_memory_used

    rows = []
    baseline = gpu_memory_used(0)  # before this process creates its CUDA context
    for info, settings, config in points:
        try:
            measured = measure(info, settings, steps=steps, config_dict=config, baseline=baseline)
        except Exception as e:  # an OOM at one point must not lose the others
            print(f"  failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}", flush=True)
            measured = None
        row = _row(info, settings, measured)
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


def save(rows: list[dict], gpu: str) -> Path:
    from studio.fsutil import atomic_write_json

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
    path = OUT_DIR / f"{stamp}-{re.sub(r'[^A-Za-z0-9]+', '-', gpu).strip('-')}.json"
    atomic_write_json(path, {"date": stamp, "gpu": gpu, "rows": rows})
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="print the grid with predictions; measure nothing")
    ap.add_argument("--fit", metavar="FILE", help="fit coefficients to a saved measurements file")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--base", default=BASE_MODEL, help="catalog id whose shape the grid uses")
    args = ap.parse_args(argv)
    if args.fit:
        rows = json.loads(Path(args.fit).read_text())["rows"]
        print(json.dumps(fit_coefficients(rows), indent=2))
        return 0
    points = grid(args.base)
    if args.dry_run:
        for info, settings, _ in points:
            _print(_row(info, settings, None))
        return 0
    from studio.commands.probe import NoGpu, require_gpu

    try:
        gpu = require_gpu()
    except NoGpu as e:
        print(f"calibrate_memory: {e}; this script measures real training and needs an NVIDIA GPU "
              "(use --dry-run to see the grid and the predictions).")
        return 1
    rows = measure_grid(points, args.steps)
    path = save(rows, gpu.name)
    print(f"wrote {path}")
    print("fitted coefficients:", json.dumps(fit_coefficients(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
