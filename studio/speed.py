"""Time before the run: expected tokens per second and the run's duration, from a FLOPs model of the step.

The step's work per token (``step_flops``): the frozen base runs forward and backward (activation
gradients only: its weights get none, so backward costs one forward of matmuls, twice for
attention), gradient checkpointing recomputes every layer's forward once more, and the adapter
costs 6 FLOPs per parameter (forward, input and weight gradients). The rate:

- on a GPU: the GPU's dense BF16 tensor peak (datasheets, ``GPU_PEAK_TFLOPS``) times one
  efficiency taken from one quoted figure (``ANCHOR``). That is an **assumption**: no GPU run of this
  project has measured it, so the estimate says so (``TimeEstimate.assumed``) until this machine's own
  runs calibrate it (below);
- on the CPU: a probe of a few seconds (``python -m studio.train.cpu_probe``, above the loader it
  trains through; this module only reads and writes its cache) measures this CPU's matrix
  multiply rate (the best of several rounds at training-like shapes) and the costs that FLOPs miss
  (per micro-batch, per layer pass, per activation element) from three tiny 4-bit LoRA models
  trained through the real loader, timed in interleaved rounds, the fastest round of each kept: a
  busy moment only ever adds time, so the minimum is the machine's own speed. The result is cached
  in the data folder per machine for ``PROBE_MAX_AGE_S``, then measured again.
- calibration (any device): every training run on this machine records its measured seconds per
  optimizer step against this module's prediction for the same settings (``record_run``); later
  estimates are scaled by the median ratio of the last runs (``calibration``), which absorbs what a
  FLOPs model cannot know (this machine's memory speed, the dataset's padding, the load it usually has).

Pure arithmetic at import: no torch unless the probe runs.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypedDict

from studio import memory
from studio.fsutil import atomic_write_json
from studio.models import from_catalog, shipped_entry
from studio.paths import data_dir
from studio.procs import worker_argv, worker_env
from studio.settings import Settings

# Dense (no sparsity) BF16/FP16 tensor-core peak with FP32 accumulate, TFLOPS, from NVIDIA's datasheets and
# architecture whitepapers (H100/H200/A100/L4/L40S/A10/T4 product datasheets; "NVIDIA Ada Lovelace GPU
# Architecture" whitepaper v1.01, appendix table for the RTX 40 series and RTX 6000 Ada; "NVIDIA Ampere GA102 GPU
# Architecture" whitepaper for the RTX 30 series and RTX A6000; "NVIDIA RTX Blackwell GPU Architecture" for the
# RTX 5090). The first name that is a substring of the GPU's NVML name wins, so longer names come first.
# Approximate: A10G (AWS publishes no tensor figure; scaled from its FP32 rate) and RTX 5080.
GPU_PEAK_TFLOPS = (
    ("H200", 989.0), ("H100 PCIe", 756.0), ("H100", 989.0), ("A100", 312.0), ("L40S", 362.0), ("L40", 181.0),
    ("L4", 121.0), ("A10G", 70.0), ("A10", 125.0), ("T4", 65.0), ("V100", 125.0),
    ("RTX 6000 Ada", 364.0), ("RTX A6000", 155.0), ("RTX 5090", 209.5), ("RTX 5080", 112.6),
    ("RTX 4090", 165.2), ("RTX 4080", 97.5), ("RTX 4070 Ti", 80.2), ("RTX 4070", 58.3), ("RTX 4060 Ti", 44.1),
    ("RTX 4060", 30.2), ("RTX 3090", 71.0), ("RTX 3080", 59.5), ("RTX 3070", 40.6), ("RTX 3060", 25.4),
)


class Anchor(TypedDict):
    """The published measurement the GPU efficiency is taken from."""

    gpu: str
    model: str  # its catalog id
    tokens_per_s: float
    settings: dict[str, Any]  # the plan's settings dict (recipe names)


# ASSUMPTION, not a measurement: the GPU efficiency comes from one quoted figure, about 2,400 tokens/s for QLoRA of
# Llama 3.1 8B on one RTX 4090 (quoted in issue 17 of this project, HF transformers + peft + bitsandbytes stack),
# which no GPU run of this project has reproduced. Its settings as assumed here: 4-bit NF4, rank 16 on all linear
# layers, sequence 2048, gradient checkpointing on. A run's measured step time calibrates it (``calibration``).
# The settings are the plan's (studio.settings): the ones the figure states, every other one at the plan's default.
ANCHOR: Anchor = {"gpu": "RTX 4090", "model": "llama-3.1-8b-instruct", "tokens_per_s": 2400.0,
                  "settings": Settings.from_dict({
                      "quant.mode": "4bit", "quant.double_quant": True, "quant.compute_dtype": "bfloat16",
                      "lora.rank": 16, "lora.alpha": 32, "lora.targets": ["all-linear"], "train.micro_batch": 1,
                      "train.grad_accum": 16, "train.seq_len": 2048, "train.grad_ckpt": True, "train.attn": "sdpa",
                      "train.optimizer": "adamw_8bit", "train.tiled_head": False}).to_dict()}
UNKNOWN_GPU = "RTX 4090"  # a GPU missing from the table is estimated as this class, and the plan says so
PROBE_MODULE = "studio.train.cpu_probe"  # python -m it: trains tiny models through the real loader
PROBE_VERSION = 2  # 2: matmul rate + three overhead terms (1 fitted two rates from two models)
PROBE_MAX_AGE_S = 30 * 86400  # a probe older than this is measured again (a new torch, BIOS, power plan...)
CALIBRATION_RUNS = 5  # the estimate is scaled by the median measured/predicted ratio of this many last runs
CALIBRATION_KEEP = 20  # records kept per machine and device


@dataclass
class TimeEstimate:
    """Expected throughput and duration of a run on one device."""

    device: str
    tokens_per_s: float
    step_seconds: float  # one optimizer step (micro-batch x accumulation)
    seconds: float | None  # the whole run, when its length is known
    steps: int | None
    basis: str  # one sentence: where the rate comes from
    assumed: bool = False  # a GPU rate that rests on ANCHOR alone, not calibrated by a run on this machine
    example_tokens: int | None = None  # the example length the step was timed at (the dataset's p95), when known

    def to_dict(self) -> dict:
        return asdict(self)


# Qwen3.5's Gated DeltaNet layers on a GPU without flash-linear-attention: transformers' torch code casts the delta
# rule to fp32, so its matmuls run on the FP32 units, not the BF16 tensor cores the rest of the step uses (NVIDIA's
# datasheets: H100 SXM 989 TFLOPS dense BF16 vs 67 FP32, 15x; RTX 4090, Ada whitepaper: 165 vs 82.6, 2x), and
# it walks the chunks in a Python loop of small matmuls. An estimate between those ratios, which the run's own
# calibration (record_run) then corrects on the machine that trains.
TORCH_DELTA_RULE_SLOWDOWN = 6.0


def linear_attention_flops(info: Any, s: dict, device: str = "cuda") -> float:
    """FLOPs per token of the delta rule in the Gated DeltaNet layers (forward; backward twice that), counted from
    the chunked algorithm's matmuls per value head: k.k and q.k within a chunk, the triangular solve for the values
    and the decayed keys, the intra-chunk attention times the values, and the recurrent state read by q and k and
    updated by k and v. On a GPU without fla it is weighted by TORCH_DELTA_RULE_SLOWDOWN."""
    if not getattr(info, "linear_layers", 0):
        return 0.0
    C, dk, dv = memory.GDN_CHUNK, info.linear_k_dim, info.linear_v_dim
    per_head = 2 * (2 * C * dk + C * (dv + dk) + C * dv + 3 * dk * dv)
    flops = info.linear_layers * info.linear_v_heads * per_head
    rule, _conv = memory.linear_attention_path(device)
    return flops * (TORCH_DELTA_RULE_SLOWDOWN if device == "cuda" and rule == "torch" else 1.0)


def step_flops(info: Any, s: dict, device: str = "cuda") -> tuple[float, float]:
    """(FLOPs per token of one training step, decoder-layer passes per micro-batch)."""
    h, seq = info.hidden, s["train.seq_len"]
    experts = max(1, info.experts_per_token) if info.num_experts else 1
    layer_w = sum(g.weight_numel for g in info.linears if g.lora_all_linear)
    if info.num_experts:  # only the routed experts' weights work for a token
        layer_w += info.params.get("experts", 0) * experts / info.num_experts
    head_w = h * info.vocab
    keys = seq if s["train.attn"] == "eager" else seq / 2  # fused causal kernels skip the masked half
    # q k^T and p v in the softmax-attention layers, and the linear-attention layers' delta rule
    attn = 4 * (info.layers - getattr(info, "linear_layers", 0)) * keys * info.q_dim
    attn += linear_attention_flops(info, s, device)
    forward = 2 * layer_w + 2 * head_w + attn
    backward = 2 * layer_w + 2 * head_w + 2 * attn  # activation gradients only: the base is frozen
    recompute = 2 * layer_w + attn if s["train.grad_ckpt"] else 0.0
    settings = Settings.of(s)
    if memory.head_kind(settings) != "full":  # the tiled head projects each tile again in backward
        recompute += 2 * head_w
    if memory.tiled_mlp(info, settings):  # each MLP tile runs again in backward
        recompute += 2 * sum(g.weight_numel for g in info.linears
                             if g.lora_all_linear and memory.INPUT_OF.get(g.name, "").startswith("mlp"))
    adapter = 6 * memory.adapter_params(info, s)
    passes = info.layers * (3 if s["train.grad_ckpt"] else 2)
    return forward + backward + recompute + adapter, passes


# grpo's sampling on a GPU: transformers' generate with bitsandbytes 4-bit weights is bound by its per-token
# kernel launches and weight reads, not FLOPs; about 1.5 ms per decoder layer per decode step (4-bit), a third
# of that for 16-bit weights. An assumption (no GPU run of this project measured it), said as one.
GPU_DECODE_S_PER_LAYER = {"4bit": 1.5e-3, "8bit": 1.5e-3, "none": 0.5e-3}


def sampling_seconds(info: Any, s: dict, device: str, rates: dict | None, length: int) -> float:
    """grpo: seconds per optimizer step spent sampling its micro_batch x grad_accum completions (up to
    grpo_completion_len decode steps of the whole batch at once) and on the no-grad passes over them (the
    reference's when grpo_beta > 0). 0 for the other objectives."""
    settings = Settings.of(s)
    from studio import objectives

    if not objectives.get(settings.objective).samples:
        return 0.0
    batch = settings.micro_batch * settings.grad_accum
    steps = memory.grpo_setting(settings, "completion_len")
    per_token, _ = step_flops(info, {**s, "train.grad_ckpt": False}, device)
    forward = per_token / 3  # a forward is about a third of a training step's FLOPs (no recompute)
    refs = 1 if memory.grpo_setting(settings, "kl_beta") else 0
    if device == "cpu":
        if not rates:
            return 0.0
        decode = batch * forward / rates["flops_per_s"] + info.layers * rates["seconds_per_layer_pass"]
        passes = refs * (batch * length * forward / rates["flops_per_s"] + info.layers * rates["seconds_per_layer_pass"])
        return steps * decode + passes
    decode = info.layers * GPU_DECODE_S_PER_LAYER.get(settings.quant_mode, 1.5e-3)
    return steps * decode


# Host <-> GPU copies of offloaded activations: pinned memory over PCIe 4.0 x16 moves about 25 GB/s each way in
# practice (32 GB/s raw); the copies run on a side stream beside the compute (trl OffloadActivations).
PCIE_BYTES_PER_S = 25e9


def offload_seconds(info: Any, s: dict) -> float:
    """Seconds one micro-batch's offloaded activations spend on the bus (there and back)."""
    return 2 * memory.offloaded_bytes(info, s, "cuda") / PCIE_BYTES_PER_S


def gpu_peak(name: str) -> tuple[float, str, bool]:
    """(dense BF16 TFLOPS, the class used, whether the GPU was found in the table)."""
    for key, tflops in GPU_PEAK_TFLOPS:
        if key.lower() in (name or "").lower():
            return tflops, key, True
    return dict(GPU_PEAK_TFLOPS)[UNKNOWN_GPU], UNKNOWN_GPU, False


def gpu_efficiency() -> float:
    """Achieved / peak FLOPs of the quoted figure (ANCHOR): an assumed efficiency, not a measured one."""

    info = from_catalog(shipped_entry(ANCHOR["model"]))
    per_token, _ = step_flops(info, ANCHOR["settings"])
    return ANCHOR["tokens_per_s"] * per_token / (gpu_peak(ANCHOR["gpu"])[0] * 1e12)


def estimate_gpu(info: Any, s: dict, gpu_name: str) -> tuple[float, str]:
    """Tokens per second on ``gpu_name``, and the sentence saying where it comes from."""
    tflops, cls, known = gpu_peak(gpu_name)
    eff = gpu_efficiency()
    per_token, _ = step_flops(info, s)
    rate = eff * tflops * 1e12 / per_token
    where = (f"{cls} ({tflops:g} TFLOPS dense BF16)" if known
             else f"{gpu_name or 'an unknown GPU'} (not in the table: estimated as an {cls})")
    return rate, (f"an assumption until a run on this GPU calibrates it: FLOPs of the step on {where} at {eff:.0%} "
                  f"efficiency, the efficiency of one quoted figure ({ANCHOR['tokens_per_s']:,.0f} tokens/s for "
                  f"Llama 3.1 8B QLoRA on an {ANCHOR['gpu']}) that no GPU run of this project has measured")


def activation_elements(info: Any, s: dict, tokens: float) -> float:
    """Elements the step's element-wise work (norms, activations, residuals, rotary) touches for
    ``tokens`` tokens of a micro-batch: per layer pass, each token's hidden and MLP-width vectors."""
    _, passes = step_flops(info, s, "cpu")
    experts = max(1, info.experts_per_token) if info.num_experts else 1
    return tokens * passes * (info.hidden + info.intermediate * experts)


def micro_batch_seconds(info: Any, s: dict, rates: dict, length: int) -> float:
    """Seconds of one micro-batch of ``length`` tokens per example on the probed CPU (uncalibrated)."""
    per_token, passes = step_flops(info, s, "cpu")
    tokens = s["train.micro_batch"] * length
    return (tokens * per_token / rates["flops_per_s"] + activation_elements(info, s, tokens) * rates.get(
        "seconds_per_element", 0.0) + passes * rates["seconds_per_layer_pass"]
        + rates.get("seconds_per_micro_batch", 0.0))


def estimate_cpu(info: Any, s: dict, rates: dict, length: int | None = None) -> tuple[float, str]:
    """Tokens per second on this CPU from the probe's rates (``length``: tokens per example), before calibration."""
    length = length or s["train.seq_len"]
    seconds = micro_batch_seconds(info, s, rates, length)
    return s["train.micro_batch"] * length / seconds, (
        f"FLOPs of the step at this CPU's measured {rates['flops_per_s'] / 1e9:.1f} GFLOP/s plus "
        f"{rates['seconds_per_layer_pass'] * 1e3:.1f} ms per layer pass and the element-wise work (probed)")


def run_steps(max_steps: int, epochs: float, examples: int | None, effective_batch: int) -> int | None:
    """Optimizer steps of the run: max_steps, else epochs over the examples (None when unknown)."""
    if max_steps and max_steps > 0:
        return int(max_steps)
    if examples:
        return max(1, math.ceil(epochs * examples / max(1, effective_batch)))
    return None


def estimate(info: Any, s: dict, device: str, gpu_name: str = "", rates: dict | None = None,
             steps: int | None = None, example_tokens: int | None = None, calibration: dict | None = None,
             mean_tokens: float | None = None) -> TimeEstimate | None:
    """The run's expected speed on ``device`` ("cuda" or "cpu"); None on a CPU that was never probed.

    ``example_tokens``: how long a padded micro-batch's examples really are (the dataset's 95th
    percentile): batches are padded to their longest example, not to the sequence length.
    ``calibration``: ``calibration(device)``, this machine's measured/predicted ratio from earlier runs.
    ``mean_tokens``: the dataset's mean example length: tokens/s then counts real tokens (no padding),
    as the worker measures them.
    """
    length = min(s["train.seq_len"], example_tokens) if example_tokens else s["train.seq_len"]
    if device == "cpu":
        if rates is None:
            return None
        rate, basis = estimate_cpu(info, s, rates, length)
    else:
        rate, basis = estimate_gpu(info, s, gpu_name)
        copies = offload_seconds(info, s)
        if copies:  # the copies overlap the compute: a micro-batch takes the longer of the two
            compute = s["train.micro_batch"] * length / rate
            rate = s["train.micro_batch"] * length / max(compute, copies)
            basis += (f"; activation offloading moves {2 * memory.offloaded_bytes(info, s, 'cuda') / 1e9:.1f} GB per "
                      f"micro-batch over PCIe at {PCIE_BYTES_PER_S / 1e9:.0f} GB/s, beside the compute")
    per_step = s["train.micro_batch"] * s["train.grad_accum"] * length / rate
    assumed = device != "cpu"
    sampling = sampling_seconds(info, s, device, rates, length)
    if sampling:  # grpo: sampling the completions comes before every step's training (and dominates on a CPU)
        per_step += sampling
        basis += (f"; plus {sampling:.1f} s per step sampling {s['train.micro_batch'] * s['train.grad_accum']} "
                  f"completions of up to {memory.grpo_setting(Settings.of(s), 'completion_len')} tokens"
                  + (" (an assumed GPU decode rate)" if device != "cpu" else ""))
    if calibration and calibration.get("factor"):
        assumed = False
        per_step *= calibration["factor"]
        n = calibration["runs"]
        kind = f"{Settings.of(s).objective} " if sampling else ""
        basis += (f", times {calibration['factor']:.2f}: the measured/predicted step time of the "
                  + (f"last {n} {kind}runs" if n != 1 else f"last {kind}run") + " on this machine")
    real = min(mean_tokens, length) if mean_tokens else length
    return TimeEstimate(device=device, tokens_per_s=s["train.micro_batch"] * s["train.grad_accum"] * real / per_step,
                        step_seconds=per_step, seconds=per_step * steps if steps else None, steps=steps, basis=basis,
                        assumed=assumed, example_tokens=example_tokens)


def describe(est: TimeEstimate | None) -> str:
    """One sentence for the plan."""
    if est is None:
        return "Speed not estimated yet: this CPU has not been measured (a few seconds, once)."
    text = (f"{'Assumed' if est.assumed else 'Expected'} speed about {est.tokens_per_s:,.0f} tokens/s "
            f"({est.step_seconds:.1f} s per optimizer step")
    if est.seconds is not None:
        text += f"; {est.steps} steps take about {duration(est.seconds)}"
    return text + f"): {est.basis}."


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


# --- the CPU probe's cache (studio.train.cpu_probe measures) --------------------------------------------
def machine_key() -> str:
    """The CPU model, core count, OS and torch-free Python build: a new machine gets a new probe."""
    model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    raw = f"{platform.node()}|{model}|{os.cpu_count()}|{platform.system()}|{platform.machine()}|{PROBE_VERSION}"
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def _cache_file() -> Path:
    return data_dir() / "cache" / "speed" / f"cpu-{machine_key()}.json"


RATE_KEYS = ("flops_per_s", "seconds_per_layer_pass", "seconds_per_element", "seconds_per_micro_batch")


def cpu_rates() -> dict | None:
    """This machine's cached probe result, or None when there is none, it is from another probe
    version, or it is older than PROBE_MAX_AGE_S (then the caller measures again)."""
    try:
        raw = json.loads(_cache_file().read_text(encoding="utf-8"))
        if int(raw.get("probe_version", 0)) != PROBE_VERSION or time.time() - float(raw["measured_at"]) > PROBE_MAX_AGE_S:
            return None
        rates = {k: float(raw[k]) for k in RATE_KEYS}
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not all(math.isfinite(v) and v >= 0 for v in rates.values()) or rates["flops_per_s"] <= 0:
        return None
    return {**rates, "measured_at": float(raw["measured_at"])}


def store_cpu_rates(rates: dict) -> dict:
    """Cache a probe's rates for this machine (``studio.train.cpu_probe`` measures them); with ``measured_at``."""

    now = time.time()
    path = _cache_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, {**rates, "machine": machine_key(), "probe_version": PROBE_VERSION, "measured_at": now})
    return {**rates, "measured_at": now}


def ensure_cpu_rates() -> dict | None:
    """The cached rates, else measure them in a subprocess (the worker interpreter has torch); None on failure."""
    rates = cpu_rates()
    if rates is not None:
        return rates
    import subprocess


    try:
        subprocess.run(worker_argv(PROBE_MODULE), env=worker_env(), capture_output=True, timeout=300, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return cpu_rates()


# --- calibration from real runs --------------------------------------------------------------------------
def device_key(device: str, gpu_name: str = "", sampling: bool = False) -> str:
    """The calibration records' key. Runs that sample (grpo) keep their own ratio: their steps are mostly decoding,
    which the estimate models apart from training (``sampling_seconds``), so an SFT run's ratio says nothing about
    them, nor theirs about SFT."""
    key = "cpu" if device == "cpu" else f"cuda:{gpu_peak(gpu_name)[1]}"
    return key + "|sampling" if sampling else key


def _calibration_file() -> Path:
    return data_dir() / "cache" / "speed" / f"calibration-{machine_key()}.json"


def _records() -> list[dict]:
    try:
        raw = json.loads(_calibration_file().read_text(encoding="utf-8"))
        return [r for r in raw.get("records", []) if isinstance(r, dict)]
    except (OSError, ValueError, AttributeError):
        return []


def record_run(run: str, device: str, predicted_s: float, measured_s: float, steps: int, gpu_name: str = "",
               probe: float | None = None, sampling: bool = False) -> None:
    """Remember one run's measured seconds per optimizer step against the uncalibrated prediction for
    the same settings (``probe``: the CPU probe's ``measured_at`` the prediction used; ``sampling``: a grpo run)."""

    if not (predicted_s > 0 and measured_s > 0 and math.isfinite(predicted_s) and math.isfinite(measured_s)):
        return
    records = [r for r in _records() if r.get("run") != run]
    records.append({"run": run, "device": device_key(device, gpu_name, sampling), "predicted_s": predicted_s,
                    "measured_s": measured_s, "steps": steps, "probe": probe, "ts": time.time()})
    path = _calibration_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, {"machine": machine_key(), "records": records[-CALIBRATION_KEEP:]})


def calibration(device: str, gpu_name: str = "", rates: dict | None = None, sampling: bool = False) -> dict | None:
    """{"factor": median measured/predicted of the last CALIBRATION_RUNS runs, "runs": how many}, or None.
    On the CPU only runs predicted from the current probe (``rates["measured_at"]``) count; ``sampling``: the
    ratio of earlier grpo runs (``device_key``)."""
    key = device_key(device, gpu_name, sampling)
    probe = (rates or {}).get("measured_at") if device == "cpu" else None
    ratios = [r["measured_s"] / r["predicted_s"] for r in _records()
              if r.get("device") == key and (device != "cpu" or r.get("probe") == probe)
              and isinstance(r.get("measured_s"), (int, float)) and isinstance(r.get("predicted_s"), (int, float))
              and r["predicted_s"] > 0][-CALIBRATION_RUNS:]
    if not ratios:
        return None
    ratios.sort()
    mid = len(ratios) // 2
    factor = ratios[mid] if len(ratios) % 2 else (ratios[mid - 1] + ratios[mid]) / 2
    return {"factor": factor, "runs": len(ratios)}
