"""`lora-studio probe`: train a few real steps on this GPU and compare measured with predicted memory.

The model is built at random from the config (nothing is downloaded), saved as safetensors in a
temporary folder, then loaded by the training code's own loader (``studio.train.loading``) with
the plan's settings, and trained for a few steps with the same Trainer settings as the worker on
fixed-length batches (the worst case of per-batch padding). Measured: torch's peak allocated
and reserved memory and NVML's device memory in use. Without a GPU the probe says so and stops.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from studio import models, planner
from studio.commands import add_setting_args, settings_from_args
from studio.errors import UserError
from studio.hardware import detect_gpus, gpu_memory_used
from studio.memory import estimate
from studio.models import find_catalog
from studio.planner import Plan
from studio.planning import budget_bytes
from studio.recipe import PLANNED, Recipe
from studio.settings import Settings
from studio.train.arguments import training_arguments
from studio.train.loading import load_model

GiB = 1024 ** 3
# Three steps measure memory, not learning: alpha, accumulation and dropout stay the planner's.
PROBED = tuple(k for k in PLANNED if k not in ("lora.alpha", "train.grad_accum", "lora.dropout"))


class NoGpu(RuntimeError):
    """There is no CUDA GPU to measure on."""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("probe", help="Measure real peak GPU memory of a plan (3 training steps) vs the prediction.",
                              description="Build the model at random from its config, train a few steps with the "
                                          "planned settings and report measured against predicted peak memory.")
    p.add_argument("--model", required=True, help="'demo', a model folder, a Hugging Face cache id or a catalog id")
    p.add_argument("--vram-gb", type=float, help="budget to plan for (default: this GPU's memory)")
    add_setting_args(p, PROBED)
    p.add_argument("--steps", type=int, default=3, help="training steps to run (default 3)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def require_gpu() -> Any:
    """The first GPU, or NoGpu with the reason (driver missing, CPU-only torch, no device)."""

    gpus = detect_gpus()
    if not gpus:
        raise NoGpu(f"no NVIDIA GPU found: {gpus.reason}")
    try:
        import torch
    except ImportError:
        raise NoGpu("PyTorch is not installed in this environment") from None
    if not torch.cuda.is_available():
        raise NoGpu(f"{gpus[0].name} found, but this PyTorch build has no CUDA support")
    return gpus[0]


def _catalog_config(name: str) -> dict:
    """The catalog's config of a model that has no folder (resolve() gives one to all but catalog entries)."""

    entry = find_catalog(name)
    if entry is None:
        raise UserError(f"{name}: no model folder and no catalog entry to take the model's shapes from; "
                        "give a model folder")
    return entry.config


def random_model_folder(info: Any, out: Path, config_dict: dict | None = None) -> Path:
    """Save a randomly initialised model with ``info``'s config (or ``config_dict``) as safetensors."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    if config_dict is None and info.path:
        config = AutoConfig.from_pretrained(info.path, trust_remote_code=False)
    else:
        raw = dict(config_dict or _catalog_config(info.name))
        config = AutoConfig.for_model(raw.pop("model_type"), **raw)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16, trust_remote_code=False)
    model.save_pretrained(out, safe_serialization=True)
    del model
    return out


def recipe_for(settings: dict, dropout: float = 0.05) -> Recipe:
    """A Recipe carrying the plan's settings (recipe names, as measure() takes them), as the studio
    would start the run."""

    recipe = Recipe()
    recipe.lora.dropout = dropout
    plan = Plan(fits=True, budget_bytes=0, margin_bytes=0, settings=Settings.from_dict(settings), predicted={}, components={}, sources={})
    return plan.apply(recipe)


class _PeakCallback:
    """Reads torch's peaks and NVML's device use after every optimizer step."""

    def __init__(self) -> None:
        self.rows: list[dict] = []

    def __call__(self, step: int) -> None:
        import torch


        torch.cuda.synchronize()
        self.rows.append({"step": step, "peak_allocated": torch.cuda.max_memory_allocated(),
                          "peak_reserved": torch.cuda.max_memory_reserved(),
                          "device_used": gpu_memory_used(torch.cuda.current_device())})


def _trainer(model: Any, recipe: Any, steps: int, data: Any, out: Path, on_step: Any) -> Any:
    from transformers import Trainer, TrainerCallback, default_data_collator


    # Exactly the worker's arguments (studio/train/run.py), only shorter and without checkpoints.
    args = training_arguments(recipe, out / "ckpt", "cuda", model.get_base_model().dtype, max_steps=steps,
                              save_strategy="no", logging_steps=1)

    class Cb(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):  # noqa: ANN001
            on_step(state.global_step)

    return Trainer(model=model, args=args, train_dataset=data, data_collator=default_data_collator, callbacks=[Cb()])


def _random_batches(vocab: int, seq_len: int, count: int) -> list[dict]:
    import torch

    g = torch.Generator().manual_seed(0)
    rows = []
    for _ in range(count):
        ids = torch.randint(0, vocab, (seq_len,), generator=g)
        rows.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()})
    return rows


def measure(info: Any, settings: dict, steps: int = 3, dropout: float = 0.05, workdir: Path | None = None,
            config_dict: dict | None = None, baseline: int | None = None) -> dict:
    """Train ``steps`` optimizer steps of ``settings`` on a random ``info`` model; return measured peaks.

    ``baseline`` is NVML's device use before this process touched CUDA (read here when not given),
    so that device use minus baseline is this run's share, CUDA context included.
    """

    if baseline is None:
        baseline = gpu_memory_used(0)
    require_gpu()
    import gc

    import torch


    recipe = recipe_for(settings, dropout)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        folder = random_model_folder(info, Path(tmp) / "model", config_dict)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        model = load_model(folder, recipe, "cuda")
        cb = _PeakCallback()
        data = _random_batches(info.vocab, settings["train.seq_len"], steps * settings["train.micro_batch"] * settings["train.grad_accum"])
        _trainer(model, recipe, steps, data, Path(tmp), cb).train()
        result = {"steps": cb.rows, "baseline_device_used": baseline,
                  **{k: max(r[k] or 0 for r in cb.rows) for k in ("peak_allocated", "peak_reserved", "device_used")}}
        del model
        gc.collect()
        torch.cuda.empty_cache()
    return result


def compare(info: Any, settings: dict, measured: dict, dropout: float = 0.05) -> dict:
    """Predicted and measured side by side, with the relative error of each figure."""

    est = estimate(info, settings, dropout=dropout)
    pairs = {"peak_allocated": est.peak_allocated, "peak_reserved": est.peak_reserved, "device_used": est.device_total}
    got = dict(measured)
    if got.get("device_used") and got.get("baseline_device_used") is not None:
        got["device_used"] -= got["baseline_device_used"]  # this run's share of nvidia-smi's figure
    return {k: {"predicted": p, "measured": got.get(k),
                "error": (p - got[k]) / got[k] if got.get(k) else None} for k, p in pairs.items()}


def run(args: argparse.Namespace) -> int:
    try:
        gpu = require_gpu()
    except NoGpu as e:
        print(f"lora-studio probe: {e}. The probe measures real training on an NVIDIA GPU; nothing was run. "
              "Use 'lora-studio plan' to predict memory without a GPU.")
        return 1
    try:
        info = models.resolve(args.model)
    except models.ModelError as e:
        raise UserError(str(e)) from None
    budget = budget_bytes([gpu], int(args.vram_gb * GiB) if args.vram_gb else None, "cuda")
    plan = planner.fit(info, budget, fixed=settings_from_args(args, PROBED))
    settings = plan.settings.to_dict()  # the recipe names measure() and the JSON use
    measured = measure(info, settings, steps=args.steps)
    result = {"gpu": gpu.name, "model": info.name, "settings": settings, "fits": plan.fits,
              "comparison": compare(info, settings, measured), "measured_steps": measured["steps"]}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{gpu.name}: {info.name}")
        for k, v in result["comparison"].items():
            err = f"{v['error']:+.1%}" if v["error"] is not None else "n/a"
            print(f"  {k:<16} predicted {v['predicted'] / GiB:6.2f} GiB  measured "
                  f"{(v['measured'] or 0) / GiB:6.2f} GiB  error {err}")
    return 0
