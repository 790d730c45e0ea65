"""The CPU probe: this machine's matmul rate and the costs FLOPs miss, from tiny models trained for real.

``studio.speed`` turns the rates into time estimates and keeps them in its cache; measuring them
trains three tiny 4-bit LoRA models through the training loader (``studio.train.loading``), so the
probe stands above training while the arithmetic stays below it, free of torch. Run as
``python -m studio.train.cpu_probe`` (the Plan page and ``lora-studio plan`` start it once per
machine under the workers' interpreter): it answers with one ``done`` event holding the rates.
"""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path

from studio import events, speed
from studio.models import from_folder
from studio.recipe import Recipe
from studio.train.loading import load_model

# Three tiny models whose steps separate the costs FLOPs miss: few layers, more layers (per layer
# pass), wider and longer (per activation element); and the matrix shapes the rate is measured at
# (tokens x hidden @ hidden x out, as the demo's and a 1B model's layers have them).
PROBE_SHAPES = ({"hidden": 64, "layers": 2, "seq": 64}, {"hidden": 64, "layers": 6, "seq": 64},
                {"hidden": 256, "layers": 2, "seq": 512})
GEMM_SHAPES = ((384, 576, 1536), (512, 1024, 1024), (1024, 2048, 2048))


def matmul_rounds(shapes: tuple = GEMM_SHAPES) -> list:
    """One timing function per shape: ``F.linear`` in float32 (the CPU's compute dtype), returns seconds."""
    import torch

    def timer(m: int, k: int, n: int):
        a, w = torch.randn(m, k), torch.randn(n, k)

        def run() -> float:
            t0 = time.perf_counter()
            torch.nn.functional.linear(a, w)
            return time.perf_counter() - t0
        return run
    return [timer(*shape) for shape in shapes]


def best_times(runners: list, rounds: int) -> list[float]:
    """The fastest of ``rounds`` timings of each runner, run in interleaved rounds after one warm-up
    round: a busy moment slows one round of everything alike, and only ever adds time."""
    best = [math.inf] * len(runners)
    for r in range(rounds + 1):
        for i, run in enumerate(runners):
            t = run()
            if r:
                best[i] = min(best[i], t)
    return best


def fit_overheads(rows: list[tuple[float, float, float, float]]) -> dict:
    """Non-negative (per micro-batch, per layer pass, per element) seconds that best explain each
    row's ``seconds left after the FLOPs`` from its (1, passes, elements); rows: (left, 1, passes, elements)."""
    import itertools

    import numpy as np

    y = np.array([r[0] for r in rows])
    x = np.array([r[1:] for r in rows], dtype=float)
    scale = np.abs(x).max(axis=0)
    scale[scale == 0] = 1.0
    xs = x / scale
    best, best_err = np.zeros(3), float(np.sum(y ** 2))
    for k in range(1, 4):  # every subset of the three costs: the best fit whose costs are all >= 0
        for cols in itertools.combinations(range(3), k):
            sol = np.linalg.lstsq(xs[:, cols], y, rcond=None)[0]
            if np.any(sol < 0):
                continue
            full = np.zeros(3)
            full[list(cols)] = sol
            err = float(np.sum((xs @ full - y) ** 2))
            if err < best_err:
                best, best_err = full, err
    c0, c, e = (best / scale).tolist()
    return {"seconds_per_micro_batch": c0, "seconds_per_layer_pass": c, "seconds_per_element": e}


def probe_cpu(workdir: Path, rounds: int = 7, extra: list | None = None) -> dict:
    """This CPU's rates (needs torch): the matmul rate, then the overheads from the tiny models' steps.

    ``extra``: more step runners (``step_runner``) timed in the same rounds; their best times come back
    as ``extra_seconds`` (a test predicts one of them from the rates).
    """
    runners = [step_runner(workdir / f"h{p['hidden']}l{p['layers']}", p["hidden"], p["layers"], p["seq"])
               for p in PROBE_SHAPES] + list(extra or [])
    gemms = matmul_rounds()
    times = best_times([r[2] for r in runners] + gemms, rounds)
    steps, gemm = times[:len(runners)], times[len(runners):]
    rates_per_shape = sorted(2 * m * k * n / t for (m, k, n), t in zip(GEMM_SHAPES, gemm))
    rate = rates_per_shape[len(rates_per_shape) // 2]
    rows = []
    for (info, s, _), seconds in zip(runners[:len(PROBE_SHAPES)], steps):
        per_token, passes = speed.step_flops(info, s, "cpu")
        tokens = s["train.micro_batch"] * s["train.seq_len"]
        rows.append((seconds - tokens * per_token / rate, 1.0, passes, speed.activation_elements(info, s, tokens)))
    out = {"flops_per_s": rate, **fit_overheads(rows)}
    if extra:
        out["extra_seconds"] = steps[len(PROBE_SHAPES):]
    return out


def step_runner(folder: Path, hidden: int, layers: int, seq: int, micro_batch: int = 1) -> tuple:
    """(ModelInfo, settings, run): ``run()`` trains one micro-batch step of a tiny model as the worker
    does on the CPU (4-bit, LoRA on all linear layers, AdamW) and returns its seconds."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM


    if not (folder / "config.json").is_file():
        config = AutoConfig.for_model("llama", vocab_size=512, hidden_size=hidden, intermediate_size=2 * hidden,
                                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                                      max_position_embeddings=max(512, seq), tie_word_embeddings=False)
        torch.manual_seed(0)
        AutoModelForCausalLM.from_config(config, dtype=torch.float32, trust_remote_code=False).save_pretrained(folder)
    r = Recipe()
    r.quant.mode, r.quant.compute_dtype, r.lora.rank, r.lora.alpha = "4bit", "float32", 8, 16
    r.train.seq_len, r.train.micro_batch, r.train.grad_ckpt = seq, micro_batch, False
    model = load_model(folder, r, "cpu")
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ids = torch.randint(0, 512, (micro_batch, seq))

    def run() -> float:
        t0 = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t0

    info = from_folder(folder)
    s = {"quant.mode": "4bit", "quant.double_quant": True, "quant.compute_dtype": "float32", "lora.rank": 8,
         "lora.alpha": 16, "lora.targets": ["all-linear"], "train.micro_batch": micro_batch, "train.grad_accum": 1,
         "train.seq_len": seq, "train.grad_ckpt": False, "train.attn": "sdpa", "train.optimizer": "adamw_torch"}
    return info, s, run


def measure_and_cache() -> dict:
    """Run the probe in this process and cache its result for this machine (``speed.cpu_rates`` reads it)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        return speed.store_cpu_rates(probe_cpu(Path(tmp)))


def main() -> int:
    """``python -m studio.train.cpu_probe``: probe this CPU, cache the result, answer with one ``done`` event."""

    emitter = events.Emitter(stream=events.reserve_stdout())  # library prints go to stderr
    emitter.emit(events.DONE, rates=measure_and_cache())
    return 0


if __name__ == "__main__":
    sys.exit(main())
