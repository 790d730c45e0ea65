"""Every memory component the planner predicts, measured through the real training code on the CPU.

For a grid of tiny models built from the configs of every catalog family (Llama, Qwen2, Qwen3,
Mistral, Gemma 2 with soft-capping, Gemma 3, Phi-3, Mixtral as transformers loads it today; Qwen3.5 dense and MoE
with their Gated DeltaNet layers, Gemma 4 with its global layers, per-layer inputs and shared keys/values) and
of settings (quantisation none/8-bit/4-bit NF4, rank, targets, micro-batch, sequence length,
gradient checkpointing, eager/sdpa attention, AdamW and bitsandbytes' 8-bit AdamW), the model is
saved as safetensors, loaded by ``studio.train.loading.load_model`` (the worker's loader: the
same quantisation, LoRA and checkpointing code), given the Trainer's own optimizer
(``studio.train.arguments`` + ``Trainer.create_optimizer``) and run for one step. Measured:

- ``weights``: stored bytes of every parameter and buffer of the base model (unique storages,
  4-bit packing included), against base_weights_* + unquantized_weights;
- ``quant_constants``: the bitsandbytes quantisation state (absmax, nested absmax, code books);
- ``lora_weights``, ``lora_grads`` (after backward), ``optimizer_state`` (after the step);
- ``activations``: a ``torch.autograd.graph.saved_tensors_hooks`` meter counting the unique
  storages saved for backward inside the decoder layers (with checkpointing: the layer inputs and
  what checkpoint keeps for the recomputation), against activations + lora_activations +
  attention_scores;
- ``logits_and_loss``: the peak of live bytes while backward runs through the loss and the output
  layer (the PyTorch profiler's allocation events) plus what the loss saved in the forward.

    python bench/memory_components.py            # the whole grid (a few minutes on 2 cores)
    python bench/memory_components.py --quick    # the slice that tests/test_memory_components.py runs
    python bench/memory_components.py --methods  # the adapter methods (lora.method) on the Llama family

At the lengths users train (``--lengths``: 512, 2048 and 8192 tokens on the demo model's shape, SmolLM2-135M
at 2 of its 30 layers, 4-bit, rank 16, checkpointing, sdpa, batch 1, the tiled LM head; at 8192 also with the
tiled MLP) the same components are checked, and the
totals: the predicted tensor peak against the peak of live tensor bytes over the step's worst phase (forward,
backward of the loss, recompute and backward of the layers, optimizer step; the profiler's allocation events),
and the predicted resident peak above the weights against the rise of the process's VmHWM over its first step
(the kernels' workspace included; glibc's mmap threshold fixed as the worker fixes it).

    python bench/memory_components.py --lengths  # about 8 minutes on 2 cores; 1 GiB of RAM at 8192 tokens

The last line is ``worst component error: N%``. The CPU runs the compute dtype the worker uses
there (float32); docs/planner.md says what this does and does not check about the GPU.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from studio import memory, models  # noqa: E402
from studio.recipe import Recipe  # noqa: E402

# Tiny but complete shapes of each family: every code path (GQA, biases, q/k norms, fused qkv,
# soft-capping, sliding windows, experts) is there, at 2 layers and hidden 64.
COMMON = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=False)
FAMILIES = {
    "llama": dict(model_type="llama"),
    "qwen2": dict(model_type="qwen2", tie_word_embeddings=True),
    "qwen3": dict(model_type="qwen3", head_dim=16),
    "mistral": dict(model_type="mistral", head_dim=16, sliding_window=4096),
    "gemma2": dict(model_type="gemma2", head_dim=16, final_logit_softcapping=30.0, attn_logit_softcapping=50.0,
                   query_pre_attn_scalar=16, sliding_window=32, tie_word_embeddings=True),
    "gemma3": dict(model_type="gemma3_text", head_dim=16, query_pre_attn_scalar=16, sliding_window=32,
                   tie_word_embeddings=True),
    "phi3": dict(model_type="phi3", num_key_value_heads=4),
    "mixtral": dict(model_type="mixtral", num_local_experts=4, num_experts_per_tok=2, intermediate_size=64),
    # Qwen3.5: Gated DeltaNet linear-attention layers between gated full-attention ones (here 2 of each)
    "qwen35": dict(model_type="qwen3_5_text", head_dim=16, num_hidden_layers=4, full_attention_interval=2,
                   linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=16,
                   linear_value_head_dim=16),
    "qwen35moe": dict(model_type="qwen3_5_moe_text", head_dim=16, num_hidden_layers=4, full_attention_interval=2,
                      linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=16,
                      linear_value_head_dim=16, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=64,
                      shared_expert_intermediate_size=64),
    # Gemma 4: sliding and global layers of different head sizes, per-layer input embeddings, and the last two
    # layers reusing the keys and values of the layers before them
    "gemma4": dict(model_type="gemma4_text", head_dim=16, global_head_dim=32, num_hidden_layers=4,
                   layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
                   sliding_window=32, hidden_size_per_layer_input=16, num_kv_shared_layers=2,
                   tie_word_embeddings=True),
}
BASE = {"quant.mode": "none", "quant.double_quant": True, "quant.compute_dtype": "float32", "lora.rank": 8,
        "lora.alpha": 16, "lora.targets": ["all-linear"], "train.micro_batch": 2, "train.grad_accum": 1,
        "train.seq_len": 64, "train.grad_ckpt": False, "train.attn": "sdpa", "train.optimizer": "adamw_torch"}
DROPOUT = 0.05

# The demo model's shape (SmolLM2-135M: hidden 576, 9 heads over 3 key/value heads, vocabulary 49,152, tied
# embeddings) at 2 of its 30 layers: what grows with the length (each layer's tensors, the loss over the
# vocabulary) is the demo's own, and the layer count only scales the checkpointed inputs, counted per layer.
LONG_SHAPE = dict(model_type="llama", hidden_size=576, intermediate_size=1536, num_hidden_layers=2,
                  num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192, vocab_size=49152,
                  tie_word_embeddings=True, rope_theta=100000.0, rms_norm_eps=1e-5)
LENGTHS = (512, 2048, 8192)
LONG = {**BASE, "quant.mode": "4bit", "lora.rank": 16, "lora.alpha": 32, "train.micro_batch": 1,
        "train.grad_ckpt": True}
TOTAL_TOLERANCE = 0.10  # the resident peak: the target for the worker's VmHWM


# The slice tests/test_memory_components.py runs (a few seconds): a dense family in 4-bit with dropout, the
# soft-capped family with eager attention and checkpointing, the mixture of experts, and Qwen3.5's linear-attention
# layers (transformers' torch path, the one the CPU takes).
QUICK = (("llama", {"quant.mode": "4bit"}), ("gemma2", {"quant.mode": "4bit", "train.grad_ckpt": True}),
         ("mixtral", {"train.optimizer": "adamw_8bit"}), ("mixtral", {"quant.mode": "4bit"}),
         ("qwen35", {"quant.mode": "4bit"}))


# The adapter methods other than LoRA, on the Llama family (the method axis of the grid).
METHODS = (("llama", {"lora.method": "rslora"}), ("llama", {"lora.method": "dora"}),
           ("llama", {"lora.method": "dora", "quant.mode": "4bit", "train.grad_ckpt": True}),
           ("llama", {"lora.method": "adalora"}), ("llama", {"lora.method": "prefix"}),
           ("llama", {"lora.method": "prompt"}), ("llama", {"lora.method": "prompt", "train.grad_ckpt": True}))


def grid(quick: bool = False, methods_only: bool = False) -> list[tuple[str, dict, float]]:
    """(family, settings, dropout): each family at the base point, then one change at a time."""
    variations = [{}, {"quant.mode": "4bit"}, {"quant.mode": "4bit", "train.grad_ckpt": True},
                  {"quant.mode": "8bit"}, {"quant.mode": "4bit", "quant.double_quant": False},
                  {"train.attn": "eager"}, {"train.grad_ckpt": True}, {"train.grad_ckpt": True, "train.attn": "eager"},
                  {"lora.rank": 32}, {"lora.targets": ["q_proj", "v_proj"]}, {"train.micro_batch": 4},
                  {"train.seq_len": 128}, {"train.optimizer": "adamw_8bit"}, {"quant.mode": "4bit", "lora.rank": 4}]
    pairs = QUICK if quick else METHODS if methods_only else [(fam, v) for fam in FAMILIES for v in variations] + list(METHODS)
    points, seen = [], set()
    for fam, v in pairs:
        s = {**BASE, **v}
        if fam == "gemma2" and s["train.attn"] == "sdpa":
            s["train.attn"] = "eager"  # transformers has no sdpa path for soft-capped attention
        if fam == "phi3" and s["lora.targets"] == ["q_proj", "v_proj"]:
            s["lora.targets"] = ["qkv_proj", "o_proj"]  # Phi-3 fuses q, k, v
        # peft refuses dropout on fused expert weights (ParamWrapper), so the MoE family trains without it
        dropout = 0.0 if v.get("lora.rank") == 4 or fam == "mixtral" else DROPOUT
        key = json.dumps([fam, s, dropout], sort_keys=True)
        if key not in seen:
            seen.add(key)
            points.append((fam, s, dropout))
    return points


def build(family: str, folder: Path) -> Path:
    """A tiny random model of ``family`` saved as safetensors with a local tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from tests.tiny import make_tokenizer

    if (folder / "config.json").is_file():
        return folder
    tok = make_tokenizer(folder)
    kw = dict(LONG_SHAPE) if family == "long" else {**COMMON, **FAMILIES[family], "vocab_size": len(tok)}
    if kw.get("hidden_size_per_layer_input"):
        kw["vocab_size_per_layer_input"] = kw["vocab_size"]
    model_type = kw.pop("model_type")
    config = AutoConfig.for_model(model_type, bos_token_id=tok.bos_token_id,
                                  eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **kw)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config, dtype=torch.float32).save_pretrained(folder, safe_serialization=True)
    return folder


def recipe_for(folder: Path, s: dict, dropout: float) -> Recipe:
    r = Recipe()
    r.model.name_or_path = str(folder)
    r.quant.mode, r.quant.double_quant, r.quant.compute_dtype = s["quant.mode"], s["quant.double_quant"], s["quant.compute_dtype"]
    r.lora.rank, r.lora.alpha, r.lora.targets, r.lora.dropout = s["lora.rank"], s["lora.alpha"], list(s["lora.targets"]), dropout
    r.train.micro_batch, r.train.grad_accum, r.train.seq_len = s["train.micro_batch"], 1, s["train.seq_len"]
    r.train.grad_ckpt, r.train.attn, r.train.optimizer = s["train.grad_ckpt"], s["train.attn"], s["train.optimizer"]
    r.lora.method, r.lora.virtual_tokens = s.get("lora.method", "lora"), s.get("lora.virtual_tokens", 20)
    r.train.tiled_head = s.get("train.tiled_head", True)
    r.train.tiled_mlp = s.get("train.tiled_mlp", False)
    return r


# --- meters ----------------------------------------------------------------------------------------
def _storage(t) -> tuple[int, int]:
    s = t.untyped_storage()
    return s.data_ptr(), s.nbytes()


def _unique_bytes(tensors) -> int:
    seen = {}
    for t in tensors:
        if t is not None and hasattr(t, "untyped_storage"):
            ptr, n = _storage(t)
            seen[ptr] = n
    return sum(seen.values())


def _quant_tensors(module) -> list:
    """The bitsandbytes quantisation state of one layer: absmax, offset, code books (nested too);
    for 4-bit experts (studio.train.moe4bit) the state of every expert."""
    states = [getattr(getattr(module, "weight", None), "quant_state", None)]
    states += [st for per in getattr(module, "lora_studio_nf4_states", {}).values() for st in per]
    out = []
    for qs in states:
        while qs is not None:
            out += [getattr(qs, k, None) for k in ("absmax", "code", "offset")]
            qs = getattr(qs, "state2", None)
    scb = getattr(getattr(module, "weight", None), "SCB", None)  # LLM.int8: one fp32 scale per row
    return [t for t in [*out, scb] if t is not None]


def weight_bytes(model) -> dict:
    """Stored bytes of the frozen base (parameters and buffers) and of the quantisation constants."""
    base = [p for p in model.parameters() if not p.requires_grad] + list(model.buffers())
    consts = [t for m in model.modules() for t in _quant_tensors(m)]
    const_ptrs = {_storage(t)[0] for t in consts}
    return {"weights": _unique_bytes(t for t in base if _storage(t)[0] not in const_ptrs),
            "quant_constants": _unique_bytes(consts)}


class SavedMeter:
    """Unique storages saved for backward, by region: embedding, decoder layers, head (norm, lm_head, loss)."""

    def __init__(self, model) -> None:
        self.exclude = {_storage(t)[0] for t in [*model.parameters(), *model.buffers()]}
        self.region = "embed"
        self.saved: dict[int, tuple[int, str, tuple]] = {}
        base = model.get_base_model()
        body = base.model if hasattr(base, "model") else base
        self.hooks = [body.layers[0].register_forward_pre_hook(lambda *a: self._enter("layers")),
                      body.norm.register_forward_pre_hook(lambda *a: self._enter("head")),
                      body.norm.register_forward_hook(lambda *a: self._enter("loss"))]

    def _enter(self, region: str) -> None:
        self.region = region

    def pack(self, t):
        ptr, n = _storage(t)
        if ptr not in self.exclude and ptr not in self.saved and n:
            self.saved[ptr] = (n, self.region, tuple(t.shape))
        return t

    def bytes(self, region: str, last_dim: int | None = None) -> int:
        return sum(n for n, r, shape in self.saved.values()
                   if r == region and (last_dim is None or (shape and shape[-1] == last_dim)))

    def offloadable(self) -> int:
        """What activation offloading would move to host RAM: TRL's OffloadActivations takes every tensor saved
        for backward of at least 1,024 bytes that is no parameter or buffer, once per storage (its rules; it
        cannot run on the CPU, so the bytes its hooks would move are counted here)."""
        return sum(n for n, _region, _shape in self.saved.values() if n >= OFFLOAD_MIN_BYTES)

    def close(self) -> None:
        for h in self.hooks:
            h.remove()


def _live_peak(prof, start_name: str, end_name: str) -> tuple[int, int]:
    """(live bytes at ``start_name``, peak live bytes between the two markers) from the allocation events."""
    events = sorted(prof.profiler.kineto_results.events(), key=lambda e: e.start_ns())
    t0 = next(e.start_ns() for e in events if e.name() == start_name)
    t1 = next((e.start_ns() for e in events if e.name() == end_name and e.start_ns() > t0), None)
    live, at_start, peak = 0, None, 0
    for e in events:
        if e.name() != "[memory]":
            continue
        if at_start is None and e.start_ns() >= t0:
            at_start = peak = live
        live += e.nbytes()
        if at_start is not None and (t1 is None or e.start_ns() < t1):
            peak = max(peak, live)
    return at_start or 0, peak


def measure(folder: Path, s: dict, dropout: float, totals: bool = False) -> dict:
    """Load with the worker's loader, take one real step, measure every component.

    ``totals``: first one plain step, whose rise of the process's resident peak is ``step_resident``, then the
    metered step, whose peak of live tensor bytes over each phase gives ``phase_*`` and ``peak_tensors``.
    """
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function
    from transformers import Trainer

    from studio.train.arguments import training_arguments
    from studio.train.loading import compute_dtype, load_model

    recipe = recipe_for(folder, s, dropout)
    model = load_model(folder, recipe, "cpu")
    model.train()
    out = weight_bytes(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    out["lora_weights"] = _unique_bytes(trainable)
    with tempfile.TemporaryDirectory() as tmp:
        args = training_arguments(recipe, Path(tmp), "cpu", compute_dtype(recipe), max_steps=1)
        trainer = Trainer(model=model, args=args)
        optimizer = trainer.create_optimizer()
    torch.manual_seed(0)
    b, n = s["train.micro_batch"], s["train.seq_len"]
    ids = torch.randint(3, model.config.vocab_size, (b, n))
    if totals:
        out["step_resident"] = first_step_rise(model, optimizer, ids)
    before = sum(out.values()) - out.get("step_resident", 0) + _state_bytes(optimizer)
    meter = SavedMeter(model)
    base = model.get_base_model()
    body = base.model if hasattr(base, "model") else base
    mark = body.norm.register_full_backward_pre_hook(lambda *a: _marker("head backward done"))
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        with torch.autograd.graph.saved_tensors_hooks(meter.pack, lambda t: t):
            loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids, **loss_kwargs(model)).loss
        with record_function("backward start"):
            pass
        loss.backward()
        del loss  # as the Trainer drops it: the graph (and what checkpointing held for it) goes before the step
        out["lora_grads"] = _unique_bytes(p.grad for p in trainable)
        with record_function("backward done"):
            pass
        optimizer.step()
        with record_function("step done"):
            pass
    mark.remove()
    meter.close()
    vocab = model.config.vocab_size
    at_start, peak = _live_peak(prof, "backward start", "head backward done")
    out["activations"] = meter.bytes("layers")
    tiled = bool(loss_kwargs(model))  # the tiled head keeps no vocabulary-wide tensor: all it saved counts
    out["logits_and_loss"] = (peak - at_start + meter.bytes("loss", last_dim=None if tiled else vocab)
                              + meter.bytes("head"))  # the final norm's saved input: alive until the loss is done
    out["optimizer_state"] = _state_bytes(optimizer)
    if s["train.grad_ckpt"]:
        out["offloaded"] = meter.offloadable()
    if totals:
        phases = _phase_peaks(prof, ("backward start", "head backward done", "backward done", "step done"))
        out.update({f"phase_{k}": before + v for k, v in phases.items()})
        out["peak_tensors"] = max(out[f"phase_{k}"] for k in phases)
    return out


def loss_kwargs(model) -> dict:
    """What the Trainer adds to a batch: the tiled head's switch (studio.train.trainer.compute_loss)."""
    from studio.train import long_context

    return {"tiled_loss": True} if long_context.has_tiled_head(model) else {}


def _state_bytes(optimizer) -> int:
    import torch

    return _unique_bytes(t for st in optimizer.state.values() for t in st.values() if isinstance(t, torch.Tensor))


def _vm(key: str) -> int:
    """The process's VmRSS or VmHWM in bytes (Linux's /proc, which is what the worker's peak is read from)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


def first_step_rise(model, optimizer, ids) -> int:
    """How far the process's resident peak rises above its resident memory over one plain step (the worker's
    first: no meter, no profiler), with glibc handing freed tensors back as the worker makes it."""
    from studio.malloc_trim import return_large_blocks

    return_large_blocks()
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    before = _vm("VmRSS")
    model(input_ids=ids, attention_mask=ids.new_ones(ids.shape), labels=ids, **loss_kwargs(model)).loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return _vm("VmHWM") - before


PHASES = ("forward", "loss_backward", "layers_backward", "optimizer_step")


def _phase_peaks(prof, marks: tuple[str, ...]) -> dict[str, int]:
    """Peak live bytes (above the step's start) in each phase, the phases bounded by the ``marks`` events."""
    events = sorted(prof.profiler.kineto_results.events(), key=lambda e: e.start_ns())
    bounds = [next(e.start_ns() for e in events if e.name() == m) for m in marks]
    live, peaks = 0, dict.fromkeys(PHASES, 0)
    for e in events:
        if e.name() != "[memory]":
            continue
        live += e.nbytes()
        phase = PHASES[min(sum(e.start_ns() >= t for t in bounds), len(PHASES) - 1)]
        peaks[phase] = max(peaks[phase], live)
    return peaks


def _marker(name: str) -> None:
    from torch.profiler import record_function

    with record_function(name):
        pass


# --- prediction ------------------------------------------------------------------------------------------
def predict(info, s: dict, dropout: float) -> dict:
    """The planner's components, grouped as measured."""
    est = memory.estimate(info, s, dropout=dropout, device="cpu")
    c = est.components
    # offloading runs on a GPU only: the same step's host bytes as the planner counts them there
    # (measured here on the CPU, where dropout's mask is in the input's dtype: a bool on CUDA)
    offloaded = memory.offloaded_bytes(info, {**s, "train.offload_activations": True}, "cuda", dropout=dropout,
                                       mask_bytes=memory.dtype_bytes(s["quant.compute_dtype"]))
    acts = memory.saved_activations(info, s, dropout, device="cpu")
    return {"weights": sum(v for k, v in c.items() if k.startswith("base_weights") or k == "unquantized_weights"),
            "quant_constants": c.get("quant_constants", 0), "lora_weights": c["lora_weights"],
            "lora_grads": c.get("lora_grads", c["lora_weights"]),  # absent at a layer peak: no grads yet
            "offloaded": offloaded,
            "optimizer_state": c["optimizer_state"],
            "activations": acts, "logits_and_loss": memory.logits_bytes(info, memory.effective_settings(s), device="cpu"),
            "peak_tensors": est.peak_allocated, **{f"phase_{k}": v for k, v in memory.phase_peaks(info, s, dropout, "cpu").items()},
            # the step's rise above the weights and the adapter present before it, and the kernels' workspace
            "step_resident": est.peak_allocated - sum(c.get(k, 0) for k in WEIGHT_PARTS) + memory.cpu_kernel_workspace(memory.effective_settings(s))}


OFFLOAD_MIN_BYTES = 1024  # trl.models.activation_offloading: min_offload_size's default
WEIGHT_PARTS = ("base_weights_4bit", "base_weights_8bit", "base_weights_16bit", "unquantized_weights",
                "quant_constants", "lora_weights")
TOTALS = ("peak_tensors", "step_resident")


def run(points, workdir: Path, out=print, totals: dict | None = None) -> float:
    """Measure and predict every point; print one line per component; the worst relative error of the
    components. With ``totals`` (a dict), the step's totals are measured too and their worst error goes there."""
    worst = 0.0
    infos: dict[str, object] = {}
    for fam, s, dropout in points:
        folder = build(fam, workdir / fam)
        info = infos.get(fam) or models.from_folder(folder)
        infos[fam] = info
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            measured = measure(folder, s, dropout, totals=totals is not None)
        predicted = predict(info, s, dropout)
        label = (f"{fam} {s.get('lora.method', 'lora')}{' tiled-mlp' if s.get('train.tiled_mlp') else ''} {s['quant.mode']}{'' if s['quant.double_quant'] else '-nodq'} r{s['lora.rank']} "
                 f"{'+'.join(s['lora.targets'])} b{s['train.micro_batch']} s{s['train.seq_len']} "
                 f"{'ckpt' if s['train.grad_ckpt'] else 'nockpt'} {s['train.attn']} {s['train.optimizer']} drop{dropout}")
        out(label)
        for name, m in measured.items():
            p = predicted[name]
            err = (p - m) / m if m else (0.0 if p == 0 else float("inf"))
            if name.startswith("phase_") or name in TOTALS:
                if totals is not None and name in TOTALS:
                    totals[name] = max(totals.get(name, 0.0), abs(err))
            else:
                worst = max(worst, abs(err))
            out(f"  {name:<22}predicted {p:>14,}  measured {m:>14,}  {err:+7.2%}")
    return worst


def long_points() -> list[tuple[str, dict, float]]:
    """The demo model's shape at the lengths users train; at the longest also with the tiled MLP (tiles of
    4,096 tokens: shorter sequences run the MLP as it is)."""
    return [("long", {**LONG, "train.seq_len": n}, DROPOUT) for n in LENGTHS] + [
        ("long", {**LONG, "train.seq_len": LENGTHS[-1], "train.tiled_mlp": True}, DROPOUT)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="the small slice the test runs")
    ap.add_argument("--methods", action="store_true", help="only the adapter methods (lora.method) on Llama")
    ap.add_argument("--lengths", action="store_true", help="the demo model's shape at 512, 2048 and 8192 tokens, "
                                                           "with the step's totals")
    ns = ap.parse_args(argv)
    totals: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        if ns.lengths:
            worst = run(long_points(), Path(tmp), totals=totals)
        else:
            worst = run(grid(quick=ns.quick, methods_only=ns.methods), Path(tmp))
    for name, err in totals.items():
        print(f"worst {name} error: {err:.2%} (tolerance {2 if name == 'peak_tensors' else 10}%)")
    print(f"worst component error: {worst:.2%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
