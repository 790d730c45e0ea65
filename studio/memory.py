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

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from studio import kernels, methods, objectives
from studio.adapted import (
    MOE_PEFT_NAMES,
    dtype_bytes,
    experts_4bit,
    experts_adapted,
    fused_experts,
    lora_params,
    lora_tensors,
    targeted,
)
from studio.models import ModelInfo
from studio.settings import Effective, Settings

# Re-exported: the planner, studio.speed and the benches read them here.
__all__ = ["MOE_PEFT_NAMES", "dtype_bytes", "experts_4bit", "experts_adapted", "fused_experts", "lora_params",
           "lora_tensors", "targeted", "Estimate", "Stack", "OURS", "estimate", "static_bytes", "per_gpu",
           "adapter_params", "adapter_tensors", "effective_settings", "saved_activations", "layer_bytes_per_token",
           "logits_bytes", "merged_expert_bytes", "quant_constant_bytes", "Parts", "Sources", "phase_peaks",
           "forward_logits_bytes", "offloaded_bytes", "head_kind", "tiled_mlp", "LOSS_KEYS", "cpu_kernel_workspace"]

GiB = 1024 ** 3
MiB = 1024 ** 2

# --- the few fitted coefficients (docs/planner.md says how they were chosen) -----------------------
ACT_SCALE = 1.0            # multiplies the counted saved-tensor bytes (autograd keeps a few we do not list)
ALLOCATOR_OVERHEAD = 0.15  # reserved = allocated * (1 + this); least squares over the published max-length rows (0.158)
# CUDA context + cuBLAS/bitsandbytes kernels, outside the PyTorch allocator. A bare context measured 287 MB with
# lazy module loading and 667 MB without (github.com/pytorch/pytorch/pull/86509, which made lazy loading PyTorch's
# default; CUDA 12.2+ defaults to it, docs.nvidia.com/cuda "Lazy Loading"); cuBLAS's workspace and the kernels a
# training step loads come on top. GPU-only: bench/calibrate_memory.py measures it on the first GPU.
CUDA_CONTEXT = 600 * MiB
# The CPU's counterparts, in the worker's resident memory (VmHWM) beside its tensors: the interpreter and the
# libraries the worker loads (torch, transformers, peft, bitsandbytes, datasets, the tokenizer) and what loading
# leaves, measured as the demo run's resident memory when training starts less its weights and adapter; and what
# the CPU kernels (oneDNN, OpenMP, bitsandbytes) keep from the first step on, measured as the first step's rise
# above its live tensors at 512-8192 tokens (bench/memory_components.py --lengths; docs/planner.md "At the
# lengths users train"). Both assume the worker hands freed tensors back (studio.malloc_trim.return_large_blocks).
# With the tiled LM head the first step allocates no vocabulary-wide tensor, and the kernels keep less
# (measured 115-132 MB at 512-8192 tokens; 150 MiB with the full logits).
CPU_RUNTIME = 860 * MiB
CPU_KERNEL_WORKSPACE = 150 * MiB
CPU_KERNEL_WORKSPACE_TILED = 120 * MiB

# --- bitsandbytes and loss-code facts -----------------------------------------------------------------
NF4_BLOCK = 64             # bnb 4-bit: one absmax per 64 weights
NESTED_BLOCK = 256         # double quant: the absmax are quantised to 8 bit in blocks of 256
NF4_CODE = 16 * 4          # each 4-bit layer keeps its own 16-entry fp32 NF4 code book
OPT8_MIN_NUMEL = 4096      # bnb 8-bit optimizers keep 32-bit state for tensors smaller than this
OPT8_BLOCK = 256           # bnb (0.50) blockwise 8-bit optimizer state: one fp32 absmax per 256 values
OPT8_QMAPS = 2 * 256 * 4   # the two 256-entry fp32 quantisation maps, shared by every tensor of the optimizer
LOGITS_BYTES_PER_VOCAB = 12  # per token at the backward start: fp32 log-softmax out + its grad + grad input
# The tiled LM head (studio.train.long_context; TRL's trl.kernels.ChunkedLogProbFunction): tiles of at most
# HEAD_TOKEN_TILE tokens x a vocabulary tile, in the compute dtype. On a GPU Triton folds a tile in place; on
# the CPU the eager fold keeps a few fp32 copies of it at once (HEAD_CPU_TILE_COPIES, measured by
# bench/memory_components.py --long-context).
HEAD_TOKEN_TILE = 4096
HEAD_VOCAB_TILE = {"cuda": 32768, "cpu": 2048}  # what studio.train.long_context projects at a time
TRL_VOCAB_TILE = 32768     # TRL's own trainers (DPO) use its add_fused_lm_head with this tile
HEAD_CPU_TILE_COPIES = 7.25  # measured: 7.25 x rows x min(vocab, tile) x 4 bytes at 64-576 hidden, 128-6000 tokens
MLP_TILE_TOKENS = 4096     # tokens per tile of the tiled MLP (studio.train.long_context runs this size)
# Activation offloading (TRL's OffloadActivations): in backward the layer input being recomputed and the one
# being copied back are on the device; in forward up to 5 offloaded tensors wait for their copies.
OFFLOAD_RESIDENT_INPUTS = 2
LOSS_KEYS = ("logits_and_loss", "tiled_loss_head")
OUTSIDE_LAYERS = ("per_layer_inputs",)  # activation terms kept before the first decoder layer

PAGED = ("paged_adamw_8bit", "paged_adamw_32bit")
EIGHT_BIT_OPT = ("adamw_8bit", "paged_adamw_8bit")


Parts = dict[str, int]  # component name -> bytes
Sources = dict[str, str]  # component name -> its one-line derivation


@dataclass
class Estimate:
    """The three predicted figures with the components that make them up."""

    peak_allocated: int
    peak_reserved: int
    device_total: int
    components: Parts = field(default_factory=dict)
    sources: Sources = field(default_factory=dict)
    trainable_params: int = 0
    host_offload: int = 0  # host RAM the offloaded activations take (not on the device; offloaded_bytes)

    def predicted(self) -> dict[str, int]:
        return {"peak_allocated_bytes": self.peak_allocated, "peak_reserved_bytes": self.peak_reserved,
                "device_total_bytes": self.device_total}


@dataclass
class Stack:
    """Facts of the software stack that change memory; the default is this studio's training code."""

    logits_bytes_per_vocab: float = LOGITS_BYTES_PER_VOCAB
    upcast_unquantized_fp32: bool = False  # True for code that calls peft's prepare_model_for_kbit_training


OURS = Stack()


# --- components ----------------------------------------------------------------------------------------
def _weights(info: ModelInfo, s: Effective, stack: Stack) -> tuple[dict, dict]:
    a = dtype_bytes(s.compute_dtype)
    qn = sum(g.weight_numel for g in info.linears if g.quantized)
    rows = sum(g.out_features * g.count for g in info.linears if g.quantized)
    experts = info.params.get("experts", 0) if experts_4bit(info, s.quant_mode) else 0
    qn += experts  # NF4 per expert (studio.train.moe4bit)
    rest = info.total_params - qn
    rest_bytes = 4 if stack.upcast_unquantized_fp32 else a
    c, src = {}, {}
    if s.quant_mode == "4bit":
        c["base_weights_4bit"] = qn // 2
        src["base_weights_4bit"] = f"{qn:,} linear weights x 4 bit (NF4, packed two per byte)" + (
            f", {experts:,} of them expert weights (one NF4 block set per expert)" if experts else "")
        c["quant_constants"] = quant_constant_bytes(info, s.double_quant, experts=bool(experts))
        src["quant_constants"] = ("one 8-bit absmax per 64 weights + one fp32 per 256 blocks (double quant)"
                                  if s.double_quant else "one fp32 absmax per 64 weights") + \
            ", and per layer the 16-entry NF4 code book (+ the 256-entry nested code book and offset)"
    elif s.quant_mode == "8bit":
        c["base_weights_8bit"] = qn
        src["base_weights_8bit"] = f"{qn:,} linear weights x 1 byte (LLM.int8)"
        c["quant_constants"] = 4 * rows
        src["quant_constants"] = "one fp32 scale per output row (LLM.int8)"
    else:
        c["base_weights_16bit"] = qn * a
        src["base_weights_16bit"] = f"{qn:,} linear weights x {a} bytes ({s.compute_dtype})"
    c["unquantized_weights"] = rest * rest_bytes
    src["unquantized_weights"] = (f"{rest:,} embedding/lm_head/norm/bias/expert parameters x {rest_bytes} bytes "
                                  "(kept in the compute dtype, not quantised)")
    if info.vision_params:
        c["vision_weights"] = info.vision_params * a
        src["vision_weights"] = (f"{info.vision_params:,} vision tower and projector parameters x {a} bytes "
                                 f"({s.compute_dtype}; images need them, and they are never quantised)")
    return c, src


def quant_constant_bytes(info: ModelInfo, double_quant: bool, experts: bool = False) -> int:
    """bitsandbytes' 4-bit state of every quantised layer, as it stores it (blocks rounded up per layer).

    With ``experts`` the fused experts count too: each expert's gate|up (2/3 of its weights) and down
    projection (1/3) is quantised on its own, as studio.train.moe4bit does.
    """
    def state(numel: int) -> int:
        blocks = math.ceil(numel / NF4_BLOCK)
        if double_quant:  # uint8 absmax, fp32 absmax per 256 of them, fp32 offset, nested code book
            return blocks + 4 * math.ceil(blocks / NESTED_BLOCK) + 4 + 4 * 256 + NF4_CODE
        return 4 * blocks + NF4_CODE

    total = sum(state(g.in_features * g.out_features) * g.count for g in info.linears if g.quantized)
    if experts and info.num_experts and info.layers:
        per_expert = info.params.get("experts", 0) // (info.num_experts * info.layers)
        total += (state(2 * per_expert // 3) + state(per_expert // 3)) * info.num_experts * info.layers
    return total


def _optimizer_state_bytes(info: ModelInfo, s: Effective) -> int:
    tensors = adapter_tensors(info, s)
    if s.optimizer not in EIGHT_BIT_OPT:  # two fp32 moments, and torch keeps "step" as an fp32 tensor
        return sum((8 * n + 4) * c for n, c in tensors)
    total = OPT8_QMAPS if any(n >= OPT8_MIN_NUMEL for n, _ in tensors) else 0
    for numel, count in tensors:  # bitsandbytes keeps "step" as a Python int
        if numel >= OPT8_MIN_NUMEL:  # two uint8 moments, one fp32 absmax per block each
            total += (2 * numel + 8 * math.ceil(numel / OPT8_BLOCK)) * count
        else:
            total += 8 * numel * count
    return total


def _trainable(info: ModelInfo, s: Effective) -> tuple[dict, dict]:
    n, method = adapter_params(info, s), methods.get(s.method)
    opt = _optimizer_state_bytes(info, s)
    paged = s.optimizer in PAGED
    c = {"lora_weights": 4 * n, "lora_grads": 4 * n, "optimizer_state": 0 if paged else opt}
    src = {"lora_weights": f"{n:,} adapter parameters ({method.words(s)}) x 4 bytes (peft keeps them in fp32)",
           "lora_grads": f"{n:,} fp32 gradients, kept across {s.grad_accum} accumulation steps",
           "optimizer_state": (f"{s.optimizer}: two moments per adapter parameter "
                               + ("in 8 bit (blockwise)" if s.optimizer in EIGHT_BIT_OPT else "in fp32"))}
    if paged:
        src["optimizer_state"] = f"{s.optimizer}: in paged (unified) memory, outside the PyTorch allocator"
    extra, extra_src = method.trainable_terms(n)  # AdaLoRA's rank allocator
    return {**c, **extra}, {**src, **extra_src}


# Where each adapted linear layer's input comes from: layers sharing an input share its saved copy.
INPUT_OF = {"q_proj": "attn_in", "k_proj": "attn_in", "v_proj": "attn_in", "qkv_proj": "attn_in", "Wqkv": "attn_in",
            "o_proj": "attn_out", "dense": "attn_out", "gate_proj": "mlp_in", "up_proj": "mlp_in",
            "gate_up_proj": "mlp_in", "w1": "mlp_in", "w3": "mlp_in", "down_proj": "mlp_out", "w2": "mlp_out",
            # Qwen3.5's Gated DeltaNet layers: four projections of the layer input, one of the gated norm's output
            "in_proj_qkv": "linear_in", "in_proj_z": "linear_in", "in_proj_b": "linear_in", "in_proj_a": "linear_in",
            "out_proj": "linear_out", "shared_expert_gate": "mlp_in",
            # Gemma 4's per-layer input: a gate on the layer's output, a projection of the gated product
            "per_layer_input_gate": "ple_in", "per_layer_projection": "ple_mid",
            # outside the decoder layers: Gemma 4's projection of the embeddings to every layer's per-layer input
            # (its LoRA input, at most hidden + rank values per token for the whole model, is not counted)
            "per_layer_model_projection": "model"}


FUSED_QKV = ("qkv_proj", "Wqkv", "query_key_value", "c_attn")


GDN_CHUNK = 64  # tokens per chunk of the chunked delta rule (transformers' torch path and fla's kernel alike)


def linear_attention_path(device: str) -> tuple[str, str]:
    """(delta rule, causal convolution) a Gated DeltaNet layer runs: "fla"/"causal_conv1d" when the package is
    importable here and the run is on a GPU (transformers picks them at import: hub_kernels'
    use_kernel_func_from_hub_with_fallback), else "torch" (its reference code, which autograd records op by op)."""
    if device != "cuda":
        return "torch", "torch"
    return ("fla" if kernels.fla_installed() else "torch",
            "causal_conv1d" if kernels.causal_conv1d_installed() else "torch")


def linear_attention_bytes(info: ModelInfo, settings: Settings | Mapping[str, Any], device: str = "cuda") -> float:
    """Per token, what one Gated DeltaNet layer keeps for backward outside its linear layers' LoRA inputs.

    Every path: sigmoid(b) (beta) and the fp32 input of softplus(a + dt_bias) per value head, and the gated
    RMSNorm of the output (fp32 copies of its input and of the gate z, silu(z), the normed input times the
    weight in the compute dtype, 1/rms per head). The causal convolution over q|k|v (conv_dim = 2 key dims +
    the value dim) keeps its input, and torch's conv1d also its padded output (silu's input); causal-conv1d
    fuses the activation and keeps only its input. The delta rule: see _delta_rule_bytes.
    """
    s = Settings.of(settings)
    a = dtype_bytes(s.compute_dtype)
    B, T, K = max(1, s.micro_batch), max(1, s.seq_len), max(1, info.linear_conv)
    hv, dv = info.linear_v_heads, info.linear_v_dim
    conv_dim = 2 * info.linear_k_heads * info.linear_k_dim + hv * dv
    rule, conv_kind = linear_attention_path(device)
    conv = a * conv_dim * (1.0 if conv_kind == "causal_conv1d" else 2.0 + (K - 1) / T)
    gates = (a + 4) * hv
    norm = (12 + a) * hv * dv + 4 * hv
    return conv + gates + norm + _delta_rule_bytes(info, a, B, T, rule)


def _delta_rule_bytes(info: ModelInfo, a: int, B: int, T: int, rule: str) -> float:
    """Per token, what the chunked gated delta rule keeps.

    fla (flash-linear-attention's ChunkGatedDeltaRuleFunction, fla/ops/gated_delta_rule/chunk.py): one
    autograd node that saves the L2-normed q and k (key heads) with their fp32 1/norm, v, the fp32 cumulative
    decay, beta and the solved chunk matrix A (chunk x chunk per value head, in the compute dtype); it
    recomputes the chunk states in backward.

    torch (transformers' torch_chunk_gated_delta_rule): every op keeps its operands, all in fp32 and with q and
    k repeated to the value heads: per token 5 chunk-wide tensors (decays, k.k, q.k, the triangular system and
    the intra-chunk attention), 3 value-wide ones (v, the solved values, the per-chunk corrected values), 8-12
    key-wide ones and 6 per-head scalars; per chunk its recurrent state (key dim x value dim per head). Which
    key-wide tensors are copies and which views depends on the sequence's padding to whole chunks, the dtype
    and the micro-batch (matmul folds a batch of one without copying): counted from the saved tensors
    (bench/memory_components.py meters them; exact at every length and micro-batch but micro-batch 1 at one
    chunk, where the views leave 5 fewer).
    """
    hk, hv, dk, dv, C = info.linear_k_heads, info.linear_v_heads, info.linear_k_dim, info.linear_v_dim, GDN_CHUNK
    if rule == "fla":
        return 2 * (a * hk * dk + 4 * hk) + a * hv * dv + 4 * hv + a * hv * C
    chunks = math.ceil(T / C)
    Tp = chunks * C  # the sequence padded to whole chunks
    fresh = Tp != T or a != 4  # padding (or the fp32 cast) leaves fresh tensors that the chunking only views
    if B == 1 or Tp != T:
        copies = 2 * Tp  # the scan reads each chunk of the decayed q and k through views of the whole
    else:
        copies = C * (1 if chunks == 1 else 2 * chunks - (1 if a == 4 else 0))  # per-chunk copies for matmul
    key_tokens = 2 * T + (4 if fresh else 8) * Tp + copies  # the two l2norm inputs are not padded
    per_seq = 4 * hv * (dk * key_tokens + dv * 3 * Tp + C * 5 * Tp + 2 * T + 4 * Tp + chunks + dk * dv * chunks)
    once = C * C + 4 * hv  # the causal chunk mask (bool) and -exp(A_log), once per layer and step
    return per_seq / T + once / (B * T)


def layer_bytes_per_token(info: ModelInfo, settings: Settings | Mapping[str, Any], dropout: float, device: str = "cuda",
                          kind: str = "mean") -> tuple[float, float, float]:
    """Bytes one decoder layer saves for backward per token: (base, lora, eager scores).

    Counted from what autograd keeps (bench/memory_components.py meters it; docs/planner.md):
    RMSNorm keeps its fp32 input and the reciprocal root; frozen linear layers keep no input.
    A model with layers of two kinds (Qwen3.5: linear attention and full attention) gets the mean over its
    layers (``kind="mean"``, what all layers save is layers x this), or one kind's own layer
    (``"full"``/``"linear"``: the layer recomputed under checkpointing is the larger of the two).
    """
    s = Settings.of(settings)
    a = dtype_bytes(s.compute_dtype)
    h = info.hidden
    L = max(1, info.layers)
    share = {"mean": (info.full_layers / L, info.linear_layers / L), "full": (1.0, 0.0), "linear": (0.0, 1.0)}
    full, linear = share[kind] if info.linear_layers else (1.0, 0.0)
    experts = max(1, info.experts_per_token) if info.num_experts else 1
    liger = s.kernels == "liger" and device == "cuda"  # studio.kernels: liger-kernel's fused layers
    # fp32 input (liger: as is) and 1/rms per token (Gemma 4: the mean square and its power)
    norms = info.norms_per_layer * ((a * h if liger else 4 * h) + 4 * _norm_scalars(info))
    attn = _softmax_attention(info, s, kind)
    attn = full * attn + (linear * linear_attention_bytes(info, s, device) if linear else 0.0)
    mlp = a * 3 * info.intermediate * experts  # gate (for the activation), act(gate), up
    if info.per_layer_input:  # Gemma 4's per-layer input: its gate's output and activation (its norm is one of
        # norms_per_layer), and the model's (tokens, layers x width) per-layer inputs, one tensor that every layer
        # multiplies a slice of: per layer, its width
        mlp += a * 2 * info.per_layer_input + a * info.per_layer_input
    if liger and not info.num_experts and info.model_type in kernels.GLU_FAMILIES:
        mlp = a * 2 * info.intermediate  # liger's SwiGLU keeps gate and up, recomputes the activation
    tiled = tiled_mlp(info, s)
    if tiled:  # the tiled MLP keeps only its input; its tiles are recomputed in backward (_mlp_tile_bytes)
        mlp = a * h
    if info.num_experts:
        k, i, E = experts, info.intermediate, info.num_experts
        # router: its input, logits, top-k ids (int64), weights; experts: token ids (3 x int64), the tokens
        # gathered, gate|up, act, act*up, the routing weight and the expert output of each routed token
        mlp = a * (h + E + 1 + k) + 8 * k + 3 * 8 * k + a * k * (2 * h + 4 * i + 1)
        if not experts_adapted(info, s.targets, s.quant_mode):  # frozen experts keep neither their inputs nor the product
            mlp -= a * h + a * k * (h + i)
        if getattr(info, "shared_expert", 0):  # the shared expert's gate, act(gate) and up, its output and sigmoid gate
            mlp += a * (3 * info.shared_expert + h + 1)
    lora = 0.0
    per_input: dict[str, float] = {}
    per_name: dict[tuple[str, str], float] = {}
    mask = a if device == "cpu" else 1  # dropout's mask: the input's dtype on the CPU, bool on CUDA
    for g in targeted(info, s.targets, s.quant_mode):
        if INPUT_OF.get(g.name) == "model":
            continue  # not in a decoder layer
        if tiled and INPUT_OF.get(g.name, "").startswith("mlp"):
            continue  # inside the tiled MLP: nothing kept between forward and backward
        per_layer = _group_share(info, g.name, g.count, kind)
        lora += per_layer * a * s.rank  # lora_B keeps A's output
        if dropout > 0:
            lora += per_layer * (a + mask) * g.in_features  # the dropped copy lora_A keeps, and the mask
        else:  # lora_A keeps its input itself, one copy per distinct input (a name's groups of other shapes
            # are in other layers: Gemma 4's global q_proj, so their shares add up)
            per_name[(INPUT_OF.get(g.name, g.name), g.name)] = \
                per_name.get((INPUT_OF.get(g.name, g.name), g.name), 0.0) + per_layer * a * g.in_features
    for (source, _name), value in per_name.items():
        per_input[source] = max(per_input.get(source, 0.0), value)
    if s.attn != "eager" and not any(g.name in FUSED_QKV for g in info.linears) \
            and not getattr(info, "attn_output_gate", False):
        # sdpa's output, kept for its backward, is o_proj's input (a view: its layout follows q, which is
        # (B, S, H, D) in memory unless q was sliced out of a fused q|k|v; a gated output is a new tensor)
        per_input.pop("attn_out", None)
    lora += sum(per_input.values())
    per_score = 4 + (a if a != 4 else 0)  # fp32 softmax output, and its copy in the compute dtype
    per_score += a if getattr(info, "attn_softcap", False) else 0  # tanh output of soft-capped scores
    eager = full * info.heads * s.seq_len * per_score if s.attn == "eager" else 0.0
    return float(norms + attn + mlp), lora, float(eager)


POW_NORMS = ("gemma4", "gemma4_text")  # RMSNorm through torch.pow: it keeps the mean square and its power per row


def _norm_scalars(info: ModelInfo) -> int:
    """fp32 values per row an RMSNorm keeps beside its fp32 input: 1/rms, or (Gemma 4) the mean square and its
    power."""
    return 2 if info.model_type in POW_NORMS else 1


def _softmax_attention(info: ModelInfo, s: Settings, kind: str = "mean") -> float:
    """Per token, what a softmax-attention layer keeps: the mean over those layers weighted by their kinds
    (sliding or global, with their own keys and values or reusing an earlier layer's: Gemma 4), or the
    largest kind (``kind`` other than "mean": the one layer recomputed under checkpointing)."""
    a = dtype_bytes(s.compute_dtype)
    S = info.sliding_layers
    F = max(0, info.full_layers - S)
    rows = [(S - info.kv_shared_sliding, True, False), (info.kv_shared_sliding, True, True),
            (F - info.kv_shared_full, False, False), (info.kv_shared_full, False, True)]
    if kind != "mean":
        return max(_attention_layer(info, s, a, sliding, shared) for n, sliding, shared in rows if n > 0)
    per = sum(n * _attention_layer(info, s, a, sliding, shared) for n, sliding, shared in rows if n > 0)
    return per / max(1, info.full_layers)


def _attention_layer(info: ModelInfo, s: Settings, a: int, sliding: bool, shared: bool) -> float:
    """Per token, one softmax-attention layer of a kind: local (``sliding``) or global, which may have its own
    head size and key/value heads (Gemma 4), with its own keys and values or ``shared`` from an earlier layer."""
    hd = info.full_head_dim if info.full_head_dim and not sliding else info.head_dim
    kvh = info.full_kv_heads if info.full_kv_heads and not sliding else info.kv_heads
    H = info.heads
    qd, kvd = H * hd, kvh * hd
    masked = sliding and s.attn == "sdpa" and _masked(info, s)
    if s.attn == "eager":  # q and the key/value repeated to every head, for the two matmuls
        attn = float(a * 3 * qd)
    else:  # sdpa/flash: rotated q, k, v, the output and the fp32 log-sum-exp per head
        attn = a * (2 * qd + 2 * kvd) + 4 * H
        if masked:  # a (batch, 1, S, S) mask that sdpa keeps (a float copy per layer), and with a mask
            # transformers repeats k and v to every head (no grouped-query kernel)
            attn += a * (s.seq_len + 2 * (qd - kvd))
        elif shared:  # the keys and values are the earlier layer's, kept there
            attn -= a * 2 * kvd
    if s.attn != "eager" and not masked and any(g.name in FUSED_QKV for g in info.linears):
        # sdpa keeps v, a view of the fused q|k|v output, which so stays whole (eager and masked sdpa copy v)
        attn += a * (qd + kvd)
    r = 4 * _norm_scalars(info)
    if getattr(info, "qk_norm", False):  # fp32 inputs and 1/rms of the per-head query and key norms
        # a gated query is a view of q_proj's output, twice as wide: in fp32 the norm keeps all of it
        q_in = 2 * qd if getattr(info, "attn_output_gate", False) and a == 4 else qd
        attn += 4 * q_in + r * H + (0 if shared else 4 * kvd + r * kvh)
    if info.model_type in POW_NORMS and not shared:  # Gemma 4 normalises the values too (no scale)
        attn += 4 * kvd + r * kvh
    if getattr(info, "attn_output_gate", False):  # attention output (made contiguous) times sigmoid(gate)
        attn += a * 2 * qd
    return attn


def _group_share(info: ModelInfo, name: str, count: int, kind: str) -> float:
    """How many of a linear group's layers one decoder layer holds: the mean over all layers, or, for one kind of
    layer, its own (the linear-attention projections are in the linear layers only, q/k/v/o in the others)."""
    if kind == "mean" or not info.linear_layers:
        return count / max(1, info.layers)
    linear = INPUT_OF.get(name, "").startswith("linear")
    attention = INPUT_OF.get(name, "").startswith("attn")
    if linear or attention:
        mine = linear == (kind == "linear")
        return count / max(1, info.linear_layers if linear else info.full_layers) if mine else 0.0
    return count / max(1, info.layers)


def tiled_mlp(info: ModelInfo, s: Settings) -> bool:
    """The MLP runs tiled (studio.train.long_context): asked for, on a dense model (experts are left as they are),
    with more tokens in a micro-batch than one tile (fewer run the MLP as it is)."""
    return bool(s.tiled_mlp and not info.num_experts and s.micro_batch * s.seq_len > MLP_TILE_TOKENS)


def _backward_ws(info: ModelInfo, s: Settings) -> tuple[float, int]:
    """The gradients flowing through the layer being done in backward: (bytes per token, fixed bytes).
    With the tiled MLP the MLP-width gradients, its recomputed tensors and its LoRA inputs exist for one
    tile of tokens at a time."""
    a = dtype_bytes(s.compute_dtype)
    if not tiled_mlp(info, s):  # at the layer's peak: the incoming gradient and the two of the MLP's product
        return a * (info.hidden + 2 * info.intermediate), 0
    return a * 2 * info.hidden, _mlp_tile_bytes(info, s)  # the incoming gradient and the tiled MLP's input grad


def _mlp_tile_bytes(info: ModelInfo, s: Settings) -> int:
    """One MLP tile recomputed with gradients: its intermediate tensors (gate, act(gate), up), the gradients
    through them and the LoRA inputs of its layers (the tile's input and output gradients are views of the
    whole sequence's; measured: bench/memory_components.py --lengths, the tiled-MLP point)."""
    a = dtype_bytes(s.compute_dtype)
    rows = min(s.micro_batch * s.seq_len, MLP_TILE_TOKENS)
    i = info.intermediate
    lora = sum(g.count / max(1, info.layers) * a * (s.rank + 2 * g.in_features)
               for g in targeted(info, s.targets, s.quant_mode) if INPUT_OF.get(g.name, "").startswith("mlp"))
    return int(rows * (a * 3 * i + a * 2 * i + lora))


def offloaded(info: ModelInfo, s: Settings, device: str = "cuda") -> bool:
    """Activation offloading runs: asked for, on a GPU, with gradient checkpointing."""
    return bool(s.offload and s.grad_ckpt and device == "cuda")


def per_layer_input_bytes(info: ModelInfo, s: Settings, dropout: float, mask_bytes: int = 1) -> float:
    """Per token, what Gemma 4's per-layer inputs keep outside the decoder layers: the projection of the embeddings
    to every layer's input (its LoRA input, dropout copy and mask, A's output) and the norm of the projection (fp32
    input, two values per layer). The (tokens, layers x width) result that the layers multiply is counted with the
    layers. ``mask_bytes``: dropout's mask per value (a bool on CUDA, the input's dtype on the CPU)."""
    if not info.per_layer_input:
        return 0.0
    a, h, P = dtype_bytes(s.compute_dtype), info.hidden, info.per_layer_input
    lora = 0.0
    if any(INPUT_OF.get(g.name) == "model" for g in targeted(info, s.targets, s.quant_mode)):
        lora = a * s.rank + a * h + (mask_bytes * h if dropout > 0 else 0)
    return lora + 4 * info.layers * P + 4 * _norm_scalars(info) * info.layers


def offloaded_bytes(info: ModelInfo, settings: Settings | Mapping[str, Any], device: str = "cuda",
                    dropout: float = 0.05, mask_bytes: int = 1) -> int:
    """Host RAM the offloaded activations take (TRL's OffloadActivations under checkpointing): every tensor the
    step keeps between forward and backward outside the recomputed layers: each layer's input, the final norm's
    fp32 input and its 1/rms, and what the loss keeps (the tiled head's gathered hidden states). The rotary
    cos/sin stay with checkpointing's own closure. bench/memory_components.py counts what TRL's hooks would
    move."""
    s = effective_settings(settings)
    if not offloaded(info, s, device):
        return 0
    seq = sequences(s)
    a, tokens, h = dtype_bytes(s.compute_dtype), seq.micro_batch * seq.seq_len, info.hidden
    head = 0
    if head_kind(seq) != "full":  # the gathered hidden states; log-sum-exp and targets from 1 KiB (TRL's minimum)
        labelled = seq.micro_batch * max(1, seq.seq_len - 1)
        head = labelled * a * h + sum(b * labelled for b in (4, 8) if b * labelled >= 1024)
    norm = tokens * 4 * h + (4 * tokens if 4 * tokens >= 1024 else 0)  # the final norm's input and 1/rms
    # Gemma 4: the per-layer inputs that every layer takes a slice of, and what made them
    ple = tokens * (a * info.layers * info.per_layer_input + per_layer_input_bytes(info, s, dropout, mask_bytes))
    return int(tokens * info.layers * a * h + norm + head + ple)


def saved_activations(info: ModelInfo, settings: Settings | Mapping[str, Any], dropout: float, device: str = "cuda") -> int:
    """Bytes the decoder layers save for backward in one micro-batch (what bench/memory_components.py meters)."""
    s = effective_settings(settings)
    parts = {**_activations(info, s, dropout, OURS, peak=False, device=device)[0],
             **methods.get(s.method).activations(info, s, device, False)[0]}
    return sum(v for k, v in parts.items() if k not in LOSS_KEYS and k not in OUTSIDE_LAYERS)


def _masked(info: ModelInfo, s: Settings) -> bool:
    window = getattr(info, "sliding_window", 0)
    return bool(window and getattr(info, "sliding_layers", 0) and s.seq_len > window)


def _first_layer_savings(info: ModelInfo, s: Effective, dropout: float, device: str) -> float:
    """Per token, what the first layer does not save without checkpointing: its input needs no gradient.

    The embedding is frozen, so the first norm keeps nothing and the dropout masks of the first
    attention inputs are not needed (checkpointing makes the embedding output require grad).
    """
    a = dtype_bytes(s.compute_dtype)
    mask = a if device == "cpu" else 1
    first: float = 4 * info.hidden + 4 * _norm_scalars(info)  # per token; the dropout masks below are averaged over the layers
    names = {g.name for g in targeted(info, s.targets, s.quant_mode)}
    first_in = "linear_in" if getattr(info, "linear_leading", 0) else "attn_in"
    if first_in == "linear_in" and not any(INPUT_OF.get(n, "").startswith(("linear", "mlp")) for n in names):
        # linear-attention first layers with no adapter in them (LoRA on q/v only): nothing in them needs a
        # gradient, and the first full-attention layer after them is a first layer as above
        base, lora, _ = layer_bytes_per_token(info, s, dropout, device, kind="linear")
        first += info.linear_leading * (base + lora)  # and the full-attention layer's norm keeps nothing (above)
        first_in = "attn_in"
    if first_in == "attn_in" and not names & {"k_proj", *FUSED_QKV}:  # the first layer's keys need no gradient either
        if getattr(info, "qk_norm", False):
            first += 4 * info.kv_dim + 4 * info.kv_heads  # so the key norm keeps nothing
        if s.attn == "eager":
            first += a * info.q_dim  # and q @ k^T keeps no q
    if dropout > 0:  # the first layer's own attention (or linear-attention) inputs: one of each name
        first += sum(mask * n for n in {g.name: g.in_features for g in targeted(info, s.targets, s.quant_mode)
                                        if INPUT_OF.get(g.name) == first_in}.values())
    return first


def merged_expert_bytes(info: ModelInfo, settings: Settings | Mapping[str, Any]) -> int:
    """Per layer: peft's ParamWrapper adds B @ A to the fused expert and router weights in every forward,
    and the grouped matmuls keep those merged copies (plus one int32 count per expert) for backward."""
    s = Settings.of(settings)
    if not info.num_experts:
        return 0
    if not experts_adapted(info, s.targets, s.quant_mode):
        return 4 * info.num_experts  # the int32 token count per expert
    a, E = dtype_bytes(s.compute_dtype), info.num_experts
    return a * E * info.hidden * (3 * info.intermediate + 1) + 4 * E


def _rotary_bytes(info: ModelInfo, s: Effective) -> int:
    """cos and sin of the rotary embedding, one copy for all layers (shared by the batch)."""
    a, seq = dtype_bytes(s.compute_dtype), s.seq_len
    return 2 * seq * (info.head_dim + info.full_head_dim) * a  # Gemma 4: its global layers' own, too


def head_kind(s: Settings) -> str:
    """How the loss meets the output layer: "tiled" (studio.train.long_context), "trl" (TRL's own tiled
    head, in its DPO trainer) or "full" (the whole tokens x vocabulary logits)."""
    kind = objectives.get(s.objective).head
    if kind == "studio":
        return "tiled" if s.tiled_head else "full"
    return kind


def _tiled_head(info: ModelInfo, s: Settings, device: str) -> tuple[int, int, int]:
    """(kept from forward to backward, the tiles' workspace, the backward's gradient buffers) of the tiled head.

    Counted from trl/kernels/chunked_logprob.py and measured (bench/memory_components.py): one tile buffer of
    at most 4,096 rows x the vocabulary tile in the compute dtype; on a GPU Triton folds it in place, on the
    CPU the eager fold keeps HEAD_CPU_TILE_COPIES fp32 copies of the tile's used part at once; the hidden
    states' gradient accumulates in fp32 (and is cast back). Every position but a sequence's last has a
    next-token label (the most the head projects; prompt tokens without a label are skipped)."""
    a = dtype_bytes(s.compute_dtype)
    tokens, h = s.micro_batch * max(1, s.seq_len - 1), info.hidden
    chunk = TRL_VOCAB_TILE if head_kind(s) == "trl" else HEAD_VOCAB_TILE.get(device, HEAD_VOCAB_TILE["cuda"])
    rows = min(tokens, HEAD_TOKEN_TILE)
    ws = rows * chunk * a  # the tile buffer, allocated whole even when the vocabulary is smaller
    if device != "cuda":
        copies = HEAD_CPU_TILE_COPIES + (1 if getattr(info, "logit_softcap", False) else 0)
        ws += int(copies * rows * min(info.vocab, chunk) * 4)
    saved = tokens * (a * h + 4 + 8)  # the labelled positions' hidden states (gathered), log-sum-exp, targets
    grads = tokens * h * 4 + (tokens * h * a if a != 4 else 0)  # fp32 hidden-state gradient, and its cast
    return saved, ws, grads


def logits_bytes(info: ModelInfo, settings: Settings | Mapping[str, Any], stack: Stack = OURS,
                 device: str = "cuda") -> int:
    """The loss's peak at the start of backward: fp32 log-softmax output, its gradient, the logits' gradient;
    through a tiled head, what it kept, one tile and the hidden states' gradient."""
    s = Settings.of(settings)
    if head_kind(s) != "full":
        return sum(_tiled_head(info, s, device)) + final_norm_bytes(info, s)
    a = dtype_bytes(s.compute_dtype)
    per_vocab = stack.logits_bytes_per_vocab + (a if getattr(info, "logit_softcap", False) else 0)
    return int(s.micro_batch * s.seq_len * info.vocab * per_vocab) + final_norm_bytes(info, s)


def final_norm_bytes(info: ModelInfo, s: Settings) -> int:
    """The final norm before the output layer keeps its fp32 input and 1/rms per token until the loss's
    backward has passed it."""
    return s.micro_batch * s.seq_len * (4 * info.hidden + 4)


def loss_key(s: Settings) -> str:
    return "logits_and_loss" if head_kind(s) == "full" else "tiled_loss_head"


def _activations(info: ModelInfo, s: Effective, dropout: float, stack: Stack, peak: bool = True,
                 device: str = "cuda", absent_at_layer: int = 0) -> tuple[dict, dict]:
    """The step's activation terms. ``peak``: under checkpointing, keep whichever of the loss's backward and the
    first recomputed layer's backward is higher (``absent_at_layer``: bytes of the step that do not exist at the
    layer's peak: the dequantised weight, and the adapter's gradients before any accumulation)."""
    a = dtype_bytes(s.compute_dtype)
    tokens = s.micro_batch * s.seq_len
    base, lora, eager = (x * ACT_SCALE for x in layer_bytes_per_token(info, s, dropout, device))
    backward_ws, tile_ws = _backward_ws(info, s)  # grads flowing through the layer being done
    per_vocab = stack.logits_bytes_per_vocab + (a if getattr(info, "logit_softcap", False) else 0)
    logits = logits_bytes(info, s, stack, device)
    key = loss_key(s)
    if key == "logits_and_loss":
        lsrc = (f"{tokens:,} tokens x vocab {info.vocab:,} x {per_vocab:g} bytes "
                "(fp32 log-softmax output, its gradient and the upcast logits' gradient"
                + (", plus the tanh output of the logit soft-capping)" if getattr(info, "logit_softcap", False)
                   else ")"))
    else:
        kept, ws, grads = _tiled_head(info, s, device)
        who = "TRL's DPO trainer computes" if head_kind(s) == "trl" else "computed"
        lsrc = (f"the loss {who} through the output layer a tile at a time, never the {tokens:,} x {info.vocab:,} "
                f"logits: the hidden states it keeps ({kept / MiB:,.0f} MiB), their fp32 gradient "
                f"({grads / MiB:,.0f} MiB), one tile's workspace ({ws / MiB:,.0f} MiB) and the final norm's input")
    L = info.layers
    ple = int(a * L * info.per_layer_input * tokens)  # Gemma 4's per-layer inputs, one tensor for every layer
    if s.grad_ckpt:  # the layer recomputed in backward: the heaviest kind of layer
        base, lora, eager = (x * ACT_SCALE for x in peak_layer_bytes_per_token(info, s, dropout, device))
        ckpt = int(L * a * info.hidden * tokens) + ple
        layer = int((base + backward_ws) * tokens) + tile_ws
        c = {"activations": ckpt, key: logits}
        src = {"activations": f"gradient checkpointing: {L} layer inputs x {tokens:,} tokens x hidden {info.hidden} x {a} bytes"}
        if offloaded(info, s, device):
            c["activations"] = int(OFFLOAD_RESIDENT_INPUTS * a * info.hidden * tokens)
            src["activations"] = (f"activation offloading: the {L} layer inputs live in host RAM; in backward the one "
                                  f"recomputed and the one being copied back are here ({OFFLOAD_RESIDENT_INPUTS} x "
                                  f"{tokens:,} tokens x hidden {info.hidden} x {a} bytes)")
        if peak and layer + (lora + eager) * tokens - absent_at_layer > logits:  # the recomputed layer is the peak
            c.update({"recomputed_layer": layer, key: 0})
            src["recomputed_layer"] = "one decoder layer recomputed in backward, with its gradients" + (
                f"; its MLP in tiles of {MLP_TILE_TOKENS:,} tokens" if tiled_mlp(info, s) else "")
            _add(c, src, "lora_activations", int(lora * tokens), "one layer's LoRA A outputs (and inputs after dropout)")
            _add(c, src, "attention_scores", int(eager * tokens), "eager attention keeps one layer's score matrix")
    else:
        # prompt tuning's virtual embeddings need gradients, so the first layer keeps its norm input too
        first = 0.0 if methods.get(s.method).input_needs_grad else _first_layer_savings(info, s, dropout, device)
        saved = L * (base + lora) * tokens - first * tokens - L * lora * tokens
        saved += L * merged_expert_bytes(info, s)
        c = {"activations": int(saved + _rotary_bytes(info, s)), key: logits}
        src = {"activations": f"no checkpointing: {L} layers x {base:,.0f} bytes saved per token x {tokens:,} tokens "
                              "(less the first layer's norm input, which needs no gradient; plus rotary cos/sin)"}
        _add(c, src, "lora_activations", int(L * lora * tokens),
             f"{L} layers' LoRA A outputs" + (f" and inputs after dropout {dropout}" if dropout > 0 else ""))
        _add(c, src, "attention_scores", int(L * eager * tokens),
             f"eager attention: {L} layers x {info.heads} heads x {s.seq_len}^2 scores (fp32 + copy)")
    src[key] = lsrc
    if info.per_layer_input:
        _add(c, src, "per_layer_inputs", int(per_layer_input_bytes(info, s, dropout, a if device == "cpu" else 1)
                                             * tokens),
             "Gemma 4's per-layer inputs before the first layer: the embeddings' projection to every layer (its LoRA "
             "input) and the fp32 input of its norm")
    return c, src


def _recomputed_layer_bytes(info: ModelInfo, s: Effective, dropout: float, device: str) -> int:
    """Under checkpointing, the layer recomputed in backward: its saved tensors, the gradients flowing through
    it, its LoRA A outputs and eager attention's scores (the recomputed_layer/lora/scores terms above)."""
    tokens = s.micro_batch * s.seq_len
    base, lora, eager = (x * ACT_SCALE for x in peak_layer_bytes_per_token(info, s, dropout, device))
    backward_ws, tile_ws = _backward_ws(info, s)
    return int((base + backward_ws) * tokens) + tile_ws + int(lora * tokens) + int(eager * tokens)


def peak_layer_bytes_per_token(info: ModelInfo, settings: Settings | Mapping[str, Any], dropout: float,
                               device: str = "cuda") -> tuple[float, float, float]:
    """layer_bytes_per_token of the heaviest kind of layer (linear or full attention; for full attention its
    heaviest kind: local or global, own keys or shared), the one that sets the peak when it is recomputed.
    A model of one kind of layer gets its layer as the mean counts it."""
    if not info.linear_layers and not info.kv_shared_sliding + info.kv_shared_full and not info.full_head_dim:
        return layer_bytes_per_token(info, settings, dropout, device)
    kinds = [layer_bytes_per_token(info, settings, dropout, device, kind=k)
             for k in ("full", "linear") if k == "full" and info.full_layers or k == "linear" and info.linear_layers]
    return max(kinds, key=lambda k: k[0] + k[1] + k[2])


def forward_logits_bytes(info: ModelInfo, settings: Settings | Mapping[str, Any], device: str = "cuda") -> int:
    """The loss's peak at the end of the forward: the logits, their fp32 upcast (a copy unless the compute
    dtype is fp32) and the fp32 log-softmax output (the soft-capped logits' tanh output too); through a
    tiled head, what it keeps and one tile's workspace."""
    s = Settings.of(settings)
    if head_kind(s) != "full":
        saved, ws, _ = _tiled_head(info, s, device)
        return saved + ws + final_norm_bytes(info, s)
    a = dtype_bytes(s.compute_dtype)
    per_vocab = a + (4 if a != 4 else 0) + 4 + (a if getattr(info, "logit_softcap", False) else 0)
    return int(s.micro_batch * s.seq_len * info.vocab * per_vocab) + final_norm_bytes(info, s)


def phase_peaks(info: ModelInfo, settings: Settings | Mapping[str, Any], dropout: float = 0.05,
                device: str = "cuda") -> dict[str, int]:
    """Live tensor bytes at the peak of each phase of a training step: the forward (to the loss), the backward
    of the loss (through the output layer), the layers' backward (each one recomputed under checkpointing) and
    the optimizer step. estimate()'s peak_allocated is the worst of them (bench/memory_components.py --lengths
    measures each)."""
    s = effective_settings(settings)
    seq = sequences(s)
    fixed = sum({**_weights(info, s, OURS)[0], **_trainable(info, s)[0]}.values())
    act, src = _activations(info, seq, dropout, OURS, peak=False, device=device)
    act.update(methods.get(s.method).activations(info, seq, device, True)[0])
    _objective_parts(info, s, act, src, device)
    logits = sum(act.pop(k, 0) for k in LOSS_KEYS)
    dequant = sum(_transients(info, s)[0].values())
    during = fixed + sum(act.values()) + dequant + sum(methods.get(s.method).transients(info, s)[0].values())
    layer = _recomputed_layer_bytes(info, seq, dropout, device) if s.grad_ckpt else 0
    n = adapter_params(info, s)
    # The layers' backward peaks in the first layer it reaches, right after its recomputation: no weight is
    # dequantised then, and without accumulation no adapter gradient exists yet (measured: --lengths).
    first_layer = during - dequant - (4 * n if s.grad_accum == 1 else 0)
    return {"forward": during + forward_logits_bytes(info, seq, device), "loss_backward": during + logits,
            "layers_backward": first_layer + layer,
            "optimizer_step": fixed + (4 * n if s.optimizer == "adamw_torch" else 0)}


def _add(c: dict, src: dict, name: str, value: int, why: str) -> None:
    if value > 0:
        c[name], src[name] = value, why


def _transients(info: ModelInfo, s: Effective) -> tuple[dict, dict]:
    a = dtype_bytes(s.compute_dtype)
    if s.quant_mode == "none":
        return {}, {}
    biggest = max((g.in_features * g.out_features for g in info.linears if g.quantized), default=0)
    if experts_4bit(info, s.quant_mode) and info.num_experts and info.layers:  # one expert's gate|up
        biggest = max(biggest, 2 * info.params.get("experts", 0) // (3 * info.num_experts * info.layers))
    return ({"dequant_workspace": biggest * a},
            {"dequant_workspace": f"the largest quantised weight ({biggest:,}) dequantised to {a}-byte for its matmul"})


# --- objectives and packing ---------------------------------------------------------------------------
def sequences(s: Effective) -> Effective:
    """The settings as the forward sees them: DPO and ORPO run each pair's chosen and rejected
    sequences in one forward, so a micro-batch of N pairs is 2N sequences."""
    return s.replace(micro_batch=2 * s.micro_batch) if objectives.get(s.objective).pairs else s


GRPO_DEFAULTS = {"generations": 4, "completion_len": 128, "kl_beta": 0.04}  # the recipe's (tests check them)


def grpo_setting(s: Settings, name: str) -> Any:
    """A grpo setting as given, else the recipe's default."""
    value = getattr(s, name)
    return GRPO_DEFAULTS[name] if value is None else value


def _sampling(info: ModelInfo, s: Effective) -> tuple[Parts, dict]:
    """grpo samples the whole effective batch (micro_batch x grad_accum completions) at once before training on
    it: the KV cache of those sequences (prompt and completion, at most seq_len tokens each) and the last
    position's logits. A phase of its own; the estimate's peak is the larger of it and training."""
    if not objectives.get(s.objective).samples:
        return {}, {}
    batch = s.micro_batch * s.grad_accum
    a = dtype_bytes(s.compute_dtype)
    kv_dim = info.kv_dim or info.hidden
    cache = batch * s.seq_len * 2 * info.layers * kv_dim * a
    logits = batch * info.vocab * 4 * 3  # fp32 logits, their softmax and the sampling's copy
    return ({"sampling_kv_cache": int(cache), "sampling_logits": int(logits)},
            {"sampling_kv_cache": f"estimate: grpo samples {batch} completions at once (micro_batch x grad_accum, "
                                  f"{grpo_setting(s, 'generations')} per prompt); their key/value cache over up to "
                                  f"{s.seq_len:,} tokens each in {info.layers} layers (an upper bound for sliding-window "
                                  "and linear-attention layers)",
             "sampling_logits": f"the next-token logits of the {batch} sequences in fp32, with their softmax"})


def _objective_parts(info: ModelInfo, s: Effective, c: dict, src: dict, device: str) -> None:
    """What a reference forward (DPO, grpo) and packing's attention mask add (both estimates, said in their
    sources)."""
    objective = objectives.get(s.objective)
    seq = sequences(s)
    tokens = seq.micro_batch * s.seq_len
    a = dtype_bytes(s.compute_dtype)
    if objective.reference_forward and not (objective.samples and grpo_setting(s, "kl_beta") == 0):
        base, _lora, eager = layer_bytes_per_token(info, s, 0.0, device)
        what = "prompt+completion" if objective.samples else "chosen+rejected"
        _add(c, src, "reference_forward", int((base + eager + a * info.hidden) * tokens),
             f"estimate: {objective.label}'s reference forward (the base, adapter disabled) runs under no_grad on the "
             f"{tokens:,} tokens of {what} and keeps about one layer's tensors at a time")
    if objective.loss_note and "logits_and_loss" in src:
        src["logits_and_loss"] += objective.loss_note
    if s.packing and s.attn != "flash_attention_2":
        L = s.micro_batch * s.seq_len
        mask_bytes = 1 if s.attn == "sdpa" else a  # sdpa: a boolean mask; eager: added to the scores
        _add(c, src, "packed_attention_mask", int(L * L * mask_bytes),
             f"estimate: packing with {s.attn} builds one {L:,} x {L:,} block-diagonal mask "
             "(micro_batch x seq_len tokens in one sequence)")
        if s.attn == "eager" and "attention_scores" in c:
            c["attention_scores"] *= s.micro_batch  # scores over the packed length, not one example's
            src["attention_scores"] += f"; packed: over {L:,} tokens"


# --- the estimate -------------------------------------------------------------------------------------
def static_bytes(info: ModelInfo, settings: Settings | Mapping[str, Any], stack: Stack = OURS, device: str = "cuda") -> int:
    """A lower bound of the device total that ignores activations: weights, adapter, optimizer, context."""
    settings = effective_settings(settings)
    parts = {**_weights(info, settings, stack)[0], **_trainable(info, settings)[0]}
    if device == "cpu":
        return int(sum(parts.values())) + sum(_cpu_process(settings).values())
    return int(sum(parts.values()) * (1 + ALLOCATOR_OVERHEAD)) + CUDA_CONTEXT


def estimate(info: ModelInfo, settings: Settings | Mapping[str, Any], dropout: float = 0.05, stack: Stack = OURS, device: str = "cuda") -> Estimate:
    """Predict the three peak figures for ``settings`` (the plan's settings dict) on ``info``.

    ``device="cpu"``: the same components in system RAM, without the CUDA allocator's caching, the
    CUDA context or paged optimizer memory (bitsandbytes falls back to ordinary memory on the CPU);
    peak_allocated is the tensors, device_total the worker's peak resident memory (VmHWM): the tensors,
    the process's libraries and the CPU kernels' workspace (the worker hands freed tensors straight back
    to the system: studio.malloc_trim.return_large_blocks).
    """
    s = effective_settings(settings)
    comps, srcs = {}, {}
    for part in (_weights(info, s, stack), _trainable(info, s)):
        comps.update(part[0])
        srcs.update(part[1])
    tr, tr_src = _transients(info, s)
    n = adapter_params(info, s)
    grads_absent = 4 * n if s.grad_accum == 1 else 0
    act, act_src = _activations(info, sequences(s), dropout, stack, device=device,
                                absent_at_layer=sum(tr.values()) + grads_absent)
    for part in (methods.get(s.method).activations(info, sequences(s), device, True),):
        act.update(part[0])
        act_src.update(part[1])
    _objective_parts(info, s, act, act_src, device)
    layer_peak = "recomputed_layer" in act
    if layer_peak:  # the first recomputed layer's backward: no weight is dequantised then (--lengths)
        tr, tr_src = {}, {}
    for part in (methods.get(s.method).transients(info, s),):
        tr.update(part[0])
        tr_src.update(part[1])
    train_phase = sum(act.values()) + sum(tr.values())
    step_phase = 4 * n if s.optimizer == "adamw_torch" else 0  # foreach AdamW: one fp32 temp per parameter
    sample, sample_src = _sampling(info, s)
    if sum(sample.values()) > max(train_phase, step_phase):  # grpo: sampling the completions is the peak
        comps.update(sample)
        srcs.update(sample_src)
    elif step_phase > train_phase:
        comps["optimizer_step_temp"] = step_phase
        srcs["optimizer_step_temp"] = "AdamW (foreach) temporaries at the optimizer step"
    else:
        if layer_peak and grads_absent:  # before any accumulation no adapter gradient exists yet
            comps.pop("lora_grads", None)
            srcs.pop("lora_grads", None)
        comps.update({k: v for k, v in act.items() if v})
        srcs.update({k: act_src[k] for k in act if act[k]})
        comps.update(tr)
        srcs.update(tr_src)
    allocated = sum(comps.values())
    if device == "cpu":
        paged = _optimizer_state_bytes(info, s) if s.optimizer in PAGED else 0
        if paged:
            comps["optimizer_state"] = paged
            srcs["optimizer_state"] = f"{s.optimizer}: not paged on the CPU (bitsandbytes falls back), in RAM"
        tensors = allocated + paged
        comps.update(_cpu_process(s))
        srcs.update(CPU_PROCESS_SOURCES)
        return Estimate(peak_allocated=tensors, peak_reserved=tensors, device_total=tensors + sum(_cpu_process(s).values()),
                        components=comps, sources=srcs, trainable_params=n)
    overhead = int(allocated * ALLOCATOR_OVERHEAD)
    comps["allocator_overhead"] = overhead
    srcs["allocator_overhead"] = f"caching allocator: {ALLOCATOR_OVERHEAD:.0%} of allocated (block rounding, fragmentation)"
    reserved = allocated + overhead
    comps["cuda_context"] = CUDA_CONTEXT
    srcs["cuda_context"] = "CUDA context and kernels (cuBLAS, bitsandbytes), outside the allocator"
    paged = _optimizer_state_bytes(info, s) if s.optimizer in PAGED else 0
    if paged:
        comps["paged_optimizer_state"] = paged
        srcs["paged_optimizer_state"] = f"{s.optimizer} state in unified memory (resident on the GPU while it fits)"
    return Estimate(peak_allocated=allocated, peak_reserved=reserved, device_total=reserved + CUDA_CONTEXT + paged,
                    components=comps, sources=srcs, trainable_params=n, host_offload=offloaded_bytes(info, s, device, dropout))


CPU_PROCESS_SOURCES = {
    "process_runtime": "the worker process itself: Python, torch, transformers, peft, bitsandbytes, datasets and the "
                       "tokenizer, resident before the weights (measured)",
    "cpu_kernel_workspace": "what the CPU kernels (oneDNN, OpenMP, bitsandbytes) keep from the first step on (measured)"}


def _cpu_process(s: Settings) -> Parts:
    """The worker's resident memory beside its tensors on the CPU (the peak RAM a user's system shows)."""
    return {"process_runtime": CPU_RUNTIME, "cpu_kernel_workspace": cpu_kernel_workspace(s)}


def cpu_kernel_workspace(s: Settings) -> int:
    return CPU_KERNEL_WORKSPACE if head_kind(s) == "full" else CPU_KERNEL_WORKSPACE_TILED


# --- adapter methods (studio.methods) ---------------------------------------------------------------
# The methods other than LoRA change what is trained and saved; each method's own terms live in its module
# (studio/methods/<name>.py), counted from peft 0.21's code.
def effective_settings(settings: Settings | Mapping[str, Any]) -> Effective:
    """The settings as the LoRA arithmetic above sees their method (taking it twice changes nothing).

    AdaLoRA trains every layer at its initial rank (1.5 x lora.rank) until the end; prefix and prompt
    tuning adapt no linear layer (targets []); prompt tuning's virtual tokens lengthen every sequence.
    """
    s = Settings.of(settings)
    if isinstance(s, Effective):
        return s
    return Effective.wrap(methods.get(s.method).effective(s))


def adapter_tensors(info: ModelInfo, settings: Settings | Mapping[str, Any]) -> list[tuple[int, int]]:
    """(values, how many) of every trainable tensor of the recipe's method."""
    s = effective_settings(settings)
    return lora_tensors(info, s.rank, s.targets, s.quant_mode) + methods.get(s.method).extra_tensors(info, s)


def adapter_params(info: ModelInfo, settings: Settings | Mapping[str, Any]) -> int:
    return sum(n * c for n, c in adapter_tensors(info, settings))


# --- several GPUs -------------------------------------------------------------------------------------
MULTI_STRATEGIES = ("single", "ddp", "fsdp")
SHARDED = ("base_weights_4bit", "base_weights_16bit", "quant_constants", "unquantized_weights", "vision_weights", "lora_weights",
           "lora_grads", "optimizer_state", "paged_optimizer_state")
FSDP_LAYERS_IN_FLIGHT = 2  # the layer computing and the next one being gathered (forward and backward prefetch)
_OUTSIDE_ALLOCATOR = ("allocator_overhead", "cuda_context", "paged_optimizer_state")
_CPU_PROCESS = ("process_runtime", "cpu_kernel_workspace")


def per_gpu(info: ModelInfo, settings: Settings | Mapping[str, Any], strategy: str, nproc: int, dropout: float = 0.05, device: str = "cuda") -> Estimate:
    """What each of ``nproc`` GPUs holds under ``strategy`` (single, ddp, fsdp), with each component's source.

    DDP keeps a whole copy of everything on every GPU, plus its gradient buckets (the reducer's flat
    fp32 copy of the trainable gradients that it all-reduces). FSDP (full shard) keeps 1/N of the
    weights (4-bit ones stored as bf16 blocks), the adapter, its gradients and the optimizer state,
    and gathers whole layers while it computes them. Activations are per GPU either way: each
    processes its own micro-batch.
    """
    est = estimate(info, settings, dropout=dropout, device=device)
    if strategy == "single" or nproc <= 1:
        return est
    comps, srcs = dict(est.components), dict(est.sources)
    if strategy == "ddp":
        comps["ddp_grad_buckets"] = 4 * est.trainable_params
        srcs["ddp_grad_buckets"] = (f"DDP gradient buckets: a second fp32 copy of the {est.trainable_params:,} adapter "
                                    f"gradients, all-reduced across {nproc} GPUs (nothing else is shared)")
    elif strategy == "fsdp":
        weights = sum(comps.get(k, 0) for k in ("base_weights_4bit", "base_weights_16bit", "quant_constants",
                                                "base_weights_8bit"))
        for name in SHARDED:
            if name in comps:
                comps[name] = math.ceil(comps[name] / nproc)
                srcs[name] = srcs.get(name, "") + f"; sharded by FSDP: 1/{nproc} on each GPU"
        layers = max(1, int(getattr(info, "layers", 1) or 1))
        comps["fsdp_gathered_layers"] = FSDP_LAYERS_IN_FLIGHT * math.ceil(weights / layers)
        srcs["fsdp_gathered_layers"] = (f"FSDP gathers each decoder layer's full weights while it runs: "
                                        f"{FSDP_LAYERS_IN_FLIGHT} of {layers} layers in flight")
    else:
        raise ValueError(f"unknown strategy {strategy!r}: use one of {', '.join(MULTI_STRATEGIES)}")
    return _totals(comps, srcs, est.trainable_params, device, flat=SHARDED if strategy == "fsdp" else ())


def _totals(comps: Parts, srcs: Sources, trainable: int, device: str, flat: tuple = ()) -> Estimate:
    """The three figures again after per_gpu changed components (the same rules as estimate()).

    ``flat``: components FSDP keeps in one flat buffer per layer unit, which the caching allocator
    does not fragment, so they carry no allocator overhead.
    """
    if device == "cpu":
        tensors = sum(v for k, v in comps.items() if k not in _CPU_PROCESS)
        return Estimate(tensors, tensors, sum(comps.values()), comps, srcs, trainable)
    allocated = sum(v for k, v in comps.items() if k not in _OUTSIDE_ALLOCATOR)
    comps["allocator_overhead"] = int(sum(v for k, v in comps.items()
                                          if k not in _OUTSIDE_ALLOCATOR and k not in flat) * ALLOCATOR_OVERHEAD)
    reserved = allocated + comps["allocator_overhead"]
    total = reserved + comps.get("cuda_context", 0) + comps.get("paged_optimizer_state", 0)
    return Estimate(allocated, reserved, total, comps, srcs, trainable)
