"""Peak GPU memory of one QLoRA/LoRA training step, as a sum of named components.

Every component carries a one-line derivation (``sources``) so a user can check it. The model
describes what ``studio/train`` does (see /docs/planner.md and TRAIN_FACTS): bitsandbytes
quantises every ``nn.Linear`` except the output layer; everything else stays in the compute
dtype (no ``prepare_model_for_kbit_training``); peft keeps the adapter, its gradients and the
optimizer state in fp32; transformers' ``ForCausalLMLoss`` upcasts the logits to fp32;
gradient checkpointing (non-reentrant) stores each decoder layer's input and recomputes one
layer at a time. Three figures come out:

- ``peak_allocated``: what ``torch.cuda.max_memory_allocated()`` reports,
- ``peak_reserved``: what ``torch.cuda.max_memory_reserved()`` reports (allocator caching on top),
- ``device_total``: what nvidia-smi shows (reserved + CUDA context + paged optimizer pages).

Pure arithmetic: no torch import, so the planner can call it thousands of times a second.
"""
from __future__ import annotations

from dataclasses import dataclass, field

GiB = 1024 ** 3
MiB = 1024 ** 2

# --- the few fitted coefficients (docs/planner.md says how they were chosen) -----------------------
ACT_SCALE = 1.0            # multiplies the counted saved-tensor bytes (autograd keeps a few we do not list)
ALLOCATOR_OVERHEAD = 0.15  # reserved = allocated * (1 + this); least squares over the published max-length rows (0.158)
CUDA_CONTEXT = 600 * MiB   # CUDA context + cuBLAS/bitsandbytes kernels, outside the PyTorch allocator

# --- bitsandbytes and loss-code facts -----------------------------------------------------------------
NF4_BLOCK = 64             # bnb 4-bit: one absmax per 64 weights
NESTED_BLOCK = 256         # double quant: the absmax are quantised to 8 bit in blocks of 256
OPT8_MIN_NUMEL = 4096      # bnb 8-bit optimizers keep 32-bit state for tensors smaller than this
OPT8_BLOCK = 2048          # bnb blockwise 8-bit optimizer state: one fp32 absmax per 2048 values
LOGITS_BYTES_PER_VOCAB = 12  # per token at the backward start: fp32 log-softmax out + its grad + grad input

PAGED = ("paged_adamw_8bit", "paged_adamw_32bit")
EIGHT_BIT_OPT = ("adamw_8bit", "paged_adamw_8bit")


@dataclass
class Estimate:
    """The three predicted figures with the components that make them up."""

    peak_allocated: int
    peak_reserved: int
    device_total: int
    components: dict[str, int] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    trainable_params: int = 0

    def predicted(self) -> dict[str, int]:
        return {"peak_allocated_bytes": self.peak_allocated, "peak_reserved_bytes": self.peak_reserved,
                "device_total_bytes": self.device_total}


@dataclass
class Stack:
    """Facts of the software stack that change memory; the default is this studio's training code."""

    logits_bytes_per_vocab: float = LOGITS_BYTES_PER_VOCAB
    upcast_unquantized_fp32: bool = False  # True for code that calls peft's prepare_model_for_kbit_training


OURS = Stack()


def dtype_bytes(compute_dtype: str) -> int:
    return 4 if compute_dtype in ("float32", "fp32") else 2


def targeted(info, targets) -> list:
    """The linear groups peft adapts for ``targets`` ('all-linear' or a list of module names)."""
    names = [targets] if isinstance(targets, str) else list(targets)
    if names == ["all-linear"] or "all-linear" in names:
        return [g for g in info.linears if g.lora_all_linear]
    wanted = {n.strip() for n in names}
    return [g for g in info.linears if g.name in wanted and g.lora_all_linear]


def lora_params(info, rank: int, targets) -> int:
    """A (r x in) plus B (out x r) for every adapted linear layer."""
    return sum(rank * (g.in_features + g.out_features) * g.count for g in targeted(info, targets))


# --- components ----------------------------------------------------------------------------------------
def _weights(info, s: dict, stack: Stack) -> tuple[dict, dict]:
    a = dtype_bytes(s["quant.compute_dtype"])
    qn = sum(g.weight_numel for g in info.linears if g.quantized)
    rows = sum(g.out_features * g.count for g in info.linears if g.quantized)
    rest = info.total_params - qn
    rest_bytes = 4 if stack.upcast_unquantized_fp32 else a
    c, src = {}, {}
    if s["quant.mode"] == "4bit":
        c["base_weights_4bit"] = qn // 2
        src["base_weights_4bit"] = f"{qn:,} linear weights x 4 bit (NF4, packed two per byte)"
        per = (1 / NF4_BLOCK + 4 / (NF4_BLOCK * NESTED_BLOCK)) if s["quant.double_quant"] else 4 / NF4_BLOCK
        c["quant_constants"] = int(qn * per)
        src["quant_constants"] = ("one 8-bit absmax per 64 weights + one fp32 per 256 blocks (double quant)"
                                  if s["quant.double_quant"] else "one fp32 absmax per 64 weights")
    elif s["quant.mode"] == "8bit":
        c["base_weights_8bit"] = qn + 4 * rows
        src["base_weights_8bit"] = f"{qn:,} linear weights x 1 byte (LLM.int8) + one fp32 scale per output row"
    else:
        c["base_weights_16bit"] = qn * a
        src["base_weights_16bit"] = f"{qn:,} linear weights x {a} bytes ({s['quant.compute_dtype']})"
    c["unquantized_weights"] = rest * rest_bytes
    src["unquantized_weights"] = (f"{rest:,} embedding/lm_head/norm/bias/expert parameters x {rest_bytes} bytes "
                                  "(kept in the compute dtype, not quantised)")
    return c, src


def _optimizer_state_bytes(info, s: dict) -> int:
    if s["train.optimizer"] not in EIGHT_BIT_OPT:
        return 8 * lora_params(info, s["lora.rank"], s["lora.targets"])
    total = 0
    for g in targeted(info, s["lora.targets"]):
        for numel in (s["lora.rank"] * g.in_features, s["lora.rank"] * g.out_features):
            per = 2 + 8 / OPT8_BLOCK if numel >= OPT8_MIN_NUMEL else 8
            total += int(numel * per) * g.count
    return total


def _trainable(info, s: dict) -> tuple[dict, dict]:
    n = lora_params(info, s["lora.rank"], s["lora.targets"])
    opt = _optimizer_state_bytes(info, s)
    paged = s["train.optimizer"] in PAGED
    c = {"lora_weights": 4 * n, "lora_grads": 4 * n, "optimizer_state": 0 if paged else opt}
    src = {"lora_weights": f"{n:,} adapter parameters (rank {s['lora.rank']}) x 4 bytes (peft keeps them in fp32)",
           "lora_grads": f"{n:,} fp32 gradients, kept across {s['train.grad_accum']} accumulation steps",
           "optimizer_state": (f"{s['train.optimizer']}: two moments per adapter parameter "
                               + ("in 8 bit (blockwise)" if s["train.optimizer"] in EIGHT_BIT_OPT else "in fp32"))}
    if paged:
        src["optimizer_state"] = f"{s['train.optimizer']}: in paged (unified) memory, outside the PyTorch allocator"
    return c, src


def layer_bytes_per_token(info, s: dict, dropout: float) -> tuple[float, float, float]:
    """Bytes one decoder layer saves for backward per token: (base, lora, eager scores)."""
    a = dtype_bytes(s["quant.compute_dtype"])
    h, qd, kvd = info.hidden, info.q_dim, info.kv_dim
    experts = max(1, info.experts_per_token) if info.num_experts else 1
    norms = info.norms_per_layer * (4 * h + a * h)  # fp32 upcast saved for the variance, normalised output
    attn = a * (3 * qd + 2 * kvd) + 4 * info.heads  # rotated q, k; v; attention output; o_proj input; lse
    mlp = a * 4 * info.intermediate * experts  # gate, up, act(gate), act*up
    if info.num_experts:
        mlp += a * 2 * h * experts  # tokens gathered per expert and scattered back
    lora = 0.0
    for g in targeted(info, s["lora.targets"]):
        per_layer = g.count / max(1, info.layers)
        lora += per_layer * (a * s["lora.rank"] + ((a + 1) * g.in_features if dropout > 0 else 0))
    per_score = 4 + a + (a if getattr(info, "attn_softcap", False) else 0)  # fp32 softmax, its copy, tanh output
    eager = info.heads * s["train.seq_len"] * per_score if s["train.attn"] == "eager" else 0.0
    return float(norms + attn + mlp), lora, float(eager)


def _activations(info, s: dict, dropout: float, stack: Stack) -> tuple[dict, dict]:
    a = dtype_bytes(s["quant.compute_dtype"])
    tokens = s["train.micro_batch"] * s["train.seq_len"]
    base, lora, eager = (x * ACT_SCALE for x in layer_bytes_per_token(info, s, dropout))
    backward_ws = a * (2 * info.hidden + 2 * info.intermediate)  # grads flowing through the layer being done
    per_vocab = stack.logits_bytes_per_vocab + (a if getattr(info, "logit_softcap", False) else 0)
    logits = int(tokens * info.vocab * per_vocab)
    lsrc = (f"{tokens:,} tokens x vocab {info.vocab:,} x {per_vocab:g} bytes "
            "(fp32 log-softmax output, its gradient and the upcast logits' gradient"
            + (", plus the tanh output of the logit soft-capping)" if getattr(info, "logit_softcap", False) else ")"))
    L = info.layers
    if s["train.grad_ckpt"]:
        ckpt = int(L * a * info.hidden * tokens)
        layer = int((base + backward_ws) * tokens)
        c = {"activations": ckpt, "logits_and_loss": logits}
        src = {"activations": f"gradient checkpointing: {L} layer inputs x {tokens:,} tokens x hidden {info.hidden} x {a} bytes"}
        if layer + (lora + eager) * tokens > logits:  # the recomputed layer is the peak, not the loss
            c.update(recomputed_layer=layer, logits_and_loss=0)
            src["recomputed_layer"] = "one decoder layer recomputed in backward, with its gradients"
            _add(c, src, "lora_activations", int(lora * tokens), "one layer's LoRA A outputs (and inputs after dropout)")
            _add(c, src, "attention_scores", int(eager * tokens), "eager attention keeps one layer's score matrix")
    else:
        c = {"activations": int(L * base * tokens), "logits_and_loss": logits}
        src = {"activations": f"no checkpointing: {L} layers x {base:,.0f} bytes saved per token x {tokens:,} tokens"}
        _add(c, src, "lora_activations", int(L * lora * tokens),
             f"{L} layers' LoRA A outputs" + (f" and inputs after dropout {dropout}" if dropout > 0 else ""))
        _add(c, src, "attention_scores", int(L * eager * tokens),
             f"eager attention: {L} layers x {info.heads} heads x {s['train.seq_len']}^2 scores (fp32 + copy)")
    src["logits_and_loss"] = lsrc
    return c, src


def _add(c: dict, src: dict, name: str, value: int, why: str) -> None:
    if value > 0:
        c[name], src[name] = value, why


def _transients(info, s: dict) -> tuple[dict, dict]:
    a = dtype_bytes(s["quant.compute_dtype"])
    if s["quant.mode"] == "none":
        return {}, {}
    biggest = max((g.in_features * g.out_features for g in info.linears if g.quantized), default=0)
    return ({"dequant_workspace": biggest * a},
            {"dequant_workspace": f"the largest quantised weight ({biggest:,}) dequantised to {a}-byte for its matmul"})


# --- the estimate -------------------------------------------------------------------------------------
def static_bytes(info, settings: dict, stack: Stack = OURS) -> int:
    """A lower bound of the device total that ignores activations: weights, adapter, optimizer, context."""
    parts = {**_weights(info, settings, stack)[0], **_trainable(info, settings)[0]}
    return int(sum(parts.values()) * (1 + ALLOCATOR_OVERHEAD)) + CUDA_CONTEXT


def estimate(info, settings: dict, dropout: float = 0.05, stack: Stack = OURS) -> Estimate:
    """Predict the three peak figures for ``settings`` (the plan's settings dict) on ``info``."""
    s = settings
    comps, srcs = {}, {}
    for part in (_weights(info, s, stack), _trainable(info, s)):
        comps.update(part[0])
        srcs.update(part[1])
    act, act_src = _activations(info, s, dropout, stack)
    tr, tr_src = _transients(info, s)
    train_phase = sum(act.values()) + sum(tr.values())
    n = lora_params(info, s["lora.rank"], s["lora.targets"])
    step_phase = 4 * n if s["train.optimizer"] == "adamw_torch" else 0  # foreach AdamW: one fp32 temp per parameter
    if step_phase > train_phase:
        comps["optimizer_step_temp"] = step_phase
        srcs["optimizer_step_temp"] = "AdamW (foreach) temporaries at the optimizer step"
    else:
        comps.update({k: v for k, v in act.items() if v})
        srcs.update({k: act_src[k] for k in act if act[k]})
        comps.update(tr)
        srcs.update(tr_src)
    allocated = sum(comps.values())
    overhead = int(allocated * ALLOCATOR_OVERHEAD)
    comps["allocator_overhead"] = overhead
    srcs["allocator_overhead"] = f"caching allocator: {ALLOCATOR_OVERHEAD:.0%} of allocated (block rounding, fragmentation)"
    reserved = allocated + overhead
    comps["cuda_context"] = CUDA_CONTEXT
    srcs["cuda_context"] = "CUDA context and kernels (cuBLAS, bitsandbytes), outside the allocator"
    paged = _optimizer_state_bytes(info, s) if s["train.optimizer"] in PAGED else 0
    if paged:
        comps["paged_optimizer_state"] = paged
        srcs["paged_optimizer_state"] = f"{s['train.optimizer']} state in unified memory (resident on the GPU while it fits)"
    return Estimate(peak_allocated=allocated, peak_reserved=reserved, device_total=reserved + CUDA_CONTEXT + paged,
                    components=comps, sources=srcs, trainable_params=n)
