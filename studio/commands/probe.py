"""`lora-studio probe`: train a few real steps on this GPU and compare measured with predicted memory.

The model is built at random from the config (nothing is downloaded), saved as safetensors in a
temporary folder, then loaded by the training code's own loader (``studio.train.loading``) with
the plan's settings, and trained for a few steps with the worker's Trainer (``StudioTrainer``: its
tiled loss head and activation offloading, as the recipe asks) and arguments on fixed-length batches
(the worst case of per-batch padding). Measured: torch's peak allocated and reserved memory, NVML's
device memory in use, the pinned host memory activation offloading took, the process's resident
memory rise and the step time. Without a GPU the probe says so and stops.
"""
from __future__ import annotations

import argparse
import io
import json
import statistics
import tempfile
import time
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


def random_model_folder(info: Any, out: Path, config_dict: dict | None = None, device: str = "cpu") -> Path:
    """Save a randomly initialised model with ``info``'s config (or ``config_dict``) as safetensors.

    ``device="cuda"`` draws the random weights on the GPU (an 8B model in seconds instead of minutes on
    the CPU); the memory is given back before anything is measured."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    if config_dict is None and info.path:
        config = AutoConfig.from_pretrained(info.path, trust_remote_code=False)
    else:
        raw = dict(config_dict or _catalog_config(info.name))
        config = AutoConfig.for_model(raw.pop("model_type"), **raw)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16, trust_remote_code=False)
    model.save_pretrained(out, safe_serialization=True)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return out


def recipe_for(settings: dict, dropout: float = 0.05) -> Recipe:
    """A Recipe carrying the plan's settings (recipe names, as measure() takes them), as the studio
    would start the run."""

    recipe = Recipe()
    recipe.lora.dropout = dropout
    plan = Plan(fits=True, budget_bytes=0, margin_bytes=0, settings=Settings.from_dict(settings), predicted={}, components={}, sources={})
    return plan.apply(recipe)


class _PeakCallback:
    """Reads torch's peaks, NVML's device use, pinned host memory (activation offloading's copies), the
    process's resident memory and the time after every optimizer step."""

    def __init__(self) -> None:
        import psutil
        import torch

        self.rows: list[dict] = []
        self._process = psutil.Process()
        self._host = hasattr(torch.cuda, "host_memory_stats")  # not in every torch the range allows: then None
        if self._host:
            torch.cuda.reset_peak_host_memory_stats()
        self.rss_before = self._process.memory_info().rss  # the loaded model's; the steps' rise is on top
        self.started = time.perf_counter()

    def __call__(self, step: int) -> None:
        import torch

        torch.cuda.synchronize()
        host = torch.cuda.host_memory_stats() if self._host else {}
        self.rows.append({"step": step, "peak_allocated": torch.cuda.max_memory_allocated(),
                          "peak_reserved": torch.cuda.max_memory_reserved(),
                          "device_used": gpu_memory_used(torch.cuda.current_device()),
                          "host_pinned": host.get("active_bytes.peak"),
                          "rss_rise": self._process.memory_info().rss - self.rss_before,
                          "seconds": time.perf_counter() - self.started})

    def summary(self) -> dict:
        """The peaks over all steps, and the median step time after the first (which compiles and warms up)."""
        out: dict[str, Any] = {k: max(r[k] or 0 for r in self.rows)
                               for k in ("peak_allocated", "peak_reserved", "device_used", "rss_rise")}
        out["host_pinned"] = max(r["host_pinned"] or 0 for r in self.rows) if self._host else None
        times = [r["seconds"] for r in self.rows]
        gaps = [b - a for a, b in zip(times, times[1:])]
        out["step_seconds"] = statistics.median(gaps) if gaps else (times[0] if times else None)
        return out


def _trainer(model: Any, recipe: Any, steps: int, data: Any, out: Path, on_step: Any, device: str = "cuda") -> Any:
    """The worker's Trainer (studio.train.trainer.StudioTrainer: the tiled loss head and activation offloading
    as the loader applied them for ``recipe.train``) with exactly its arguments (studio/train/run.py), only shorter and without
    checkpoints; its events go nowhere."""
    from transformers import TrainerCallback, default_data_collator

    from studio.events import Emitter
    from studio.train.trainer import StudioTrainer

    args = training_arguments(recipe, out / "ckpt", device, model.get_base_model().dtype, max_steps=steps,
                              save_strategy="no", logging_steps=1)

    class Cb(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):  # noqa: ANN001
            on_step(state.global_step)

    return StudioTrainer(model=model, args=args, train_dataset=data, data_collator=default_data_collator,
                         callbacks=[Cb()], run_dir=out, emitter=Emitter(stream=io.BytesIO()))


def _random_batches(vocab: int, seq_len: int, count: int) -> list[dict]:
    import torch

    g = torch.Generator().manual_seed(0)
    rows = []
    for _ in range(count):
        ids = torch.randint(0, vocab, (seq_len,), generator=g)
        rows.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()})
    return rows


def measure(info: Any, settings: dict, steps: int = 3, dropout: float = 0.05, workdir: Path | None = None,
            config_dict: dict | None = None, baseline: int | None = None, model_folder: Path | None = None) -> dict:
    """Train ``steps`` optimizer steps of ``settings`` on a random ``info`` model; return measured peaks.

    ``baseline`` is NVML's device use before this process touched CUDA (read here when not given),
    so that device use minus baseline is this run's share, CUDA context included. ``model_folder``: a
    random model already saved by random_model_folder() (several points of one shape share it).
    """

    if baseline is None:
        baseline = gpu_memory_used(0)
    require_gpu()
    import gc

    import torch


    recipe = recipe_for(settings, dropout)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        folder = model_folder or random_model_folder(info, Path(tmp) / "model", config_dict)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        model = load_model(folder, recipe, "cuda")
        cb = _PeakCallback()
        data = _random_batches(info.vocab, settings["train.seq_len"], steps * settings["train.micro_batch"] * settings["train.grad_accum"])
        _trainer(model, recipe, steps, data, Path(tmp), cb).train()
        result = {"steps": cb.rows, "baseline_device_used": baseline, **cb.summary()}
        del model
        gc.collect()
        torch.cuda.empty_cache()
        empty_host = getattr(getattr(torch, "accelerator", None), "empty_host_cache", None)
        if empty_host is not None:  # the next point's offloading pins its own host memory (its RSS rise shows)
            empty_host()
    return result


def compare(info: Any, settings: dict, measured: dict, dropout: float = 0.05) -> dict:
    """Predicted and measured side by side, with the relative error of each figure."""

    est = estimate(info, settings, dropout=dropout)
    pairs = {"peak_allocated": est.peak_allocated, "peak_reserved": est.peak_reserved, "device_used": est.device_total}
    if est.host_offload:  # activation offloading: the pinned host memory its copies took
        pairs["host_pinned"] = est.host_offload
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
