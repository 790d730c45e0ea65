"""Which layer kernels a GPU run gets (``train.kernels``): liger-kernel's fused RMSNorm, RoPE and SwiGLU, or torch's.

liger-kernel (``pip install "lora-studio[liger]"``) is Triton code for NVIDIA GPUs: on the CPU it never runs.
``auto`` takes it when it is installed in this environment and knows the model's family; the worker applies
it to the loaded base with ``liger_kernel.transformers._apply_liger_kernel_to_instance`` (the entry point
transformers' own Trainer uses), with its fused cross-entropy off: the loss goes through the studio's tiled head.

What it changes in memory (studio.memory.layer_bytes_per_token): the RMSNorm keeps its input in the compute
dtype and one fp32 1/rms per token instead of an fp32 copy of the input; the SwiGLU keeps gate and up and
recomputes the activation in backward instead of keeping it (liger_kernel/ops/rms_norm.py and swiglu.py).

Torch-free: the planner asks it thousands of times.
"""
from __future__ import annotations

import functools
import importlib.util

# The text model types liger-kernel 0.8.5 patches (liger_kernel/transformers/monkey_patch.py,
# MODEL_TYPE_TO_APPLY_LIGER_FN) that the studio trains.
LIGER_FAMILIES = frozenset({
    "llama", "mistral", "mixtral", "qwen2", "qwen3", "qwen3_moe", "gemma", "gemma2", "gemma3_text", "gemma3",
    "phi3", "smollm3", "gpt_oss", "granite", "olmo2", "olmo3", "glm4", "ministral", "qwen3_5", "qwen3_5_text",
    "qwen3_5_moe", "qwen3_5_moe_text", "gemma4", "gemma4_text", "qwen3_next", "exaone4",
})
# Families whose MLP is a SwiGLU (gate, up, down): liger's SwiGLU replaces it. Gemma's GeGLU has its own kernel
# of the same shape (LigerGELUMulFunction keeps gate and up too).
GLU_FAMILIES = LIGER_FAMILIES - {"phi3"}  # Phi-3's fused gate_up_proj keeps torch's activation


def liger_installed() -> bool:
    return importlib.util.find_spec("liger_kernel") is not None


# Qwen3.5's Gated DeltaNet layers (transformers' modeling_qwen3_5): the delta rule and its causal convolution come
# from flash-linear-attention ("fla", Triton) and causal-conv1d (CUDA) when they are importable, else from
# transformers' torch reference code. transformers decides at import, on whether the package imports
# (integrations/hub_kernels.py, use_kernel_func_from_hub_with_fallback); the planner asks the same question of
# this environment, which is the worker's. Both run on NVIDIA GPUs only.
@functools.lru_cache(maxsize=1)
def fla_installed() -> bool:
    return importlib.util.find_spec("fla") is not None


@functools.lru_cache(maxsize=1)
def causal_conv1d_installed() -> bool:
    return importlib.util.find_spec("causal_conv1d") is not None


def linear_attention_words(device: str) -> str:
    """Which code runs a Gated DeltaNet layer on ``device``, in words (the plan and the run log say it)."""
    if device != "cuda":
        return ("transformers' torch code for the linear-attention layers (flash-linear-attention and causal-conv1d "
                "run on NVIDIA GPUs only): slow, and it keeps more for backward")
    if fla_installed():
        conv = "causal-conv1d's" if causal_conv1d_installed() else "torch's (causal-conv1d is not installed)"
        return f"flash-linear-attention's chunked delta rule for the linear-attention layers, {conv} convolution"
    return ("transformers' torch code for the linear-attention layers: flash-linear-attention is not installed "
            "(pip install flash-linear-attention causal-conv1d), so their delta rule runs in fp32, chunk by chunk, "
            "slower and keeping more for backward")


def liger_runs(model_type: str) -> bool:
    """liger-kernel is installed here and patches this family (on a GPU: the caller checks the device)."""
    return model_type in LIGER_FAMILIES and liger_installed()


def resolve(asked: str, model_type: str, device: str) -> tuple[str, str]:
    """(the kernels a run gets, why in words when it is not what was asked)."""
    if asked == "torch":
        return "torch", ""
    if device != "cuda":
        return "torch", ("train.kernels liger: liger-kernel runs on NVIDIA GPUs only; torch's kernels here"
                         if asked == "liger" else "")
    if model_type not in LIGER_FAMILIES:
        return "torch", (f"train.kernels liger: liger-kernel does not patch the {model_type} family; torch's kernels"
                         if asked == "liger" else "")
    if not liger_installed():
        return "torch", ("train.kernels liger: liger-kernel is not installed (pip install 'lora-studio[liger]'); "
                         "torch's kernels" if asked == "liger" else "")
    return "liger", ""


def apply_liger(model: object) -> None:
    """liger-kernel's RMSNorm, RoPE and SwiGLU/GeGLU on ``model`` (the base, before peft wraps it)."""
    from liger_kernel.transformers.monkey_patch import _apply_liger_kernel_to_instance

    # each family's apply function takes the arguments it knows (swiglu, or geglu for Gemma); the rest are dropped
    _apply_liger_kernel_to_instance(model=model, rope=True, rms_norm=True, swiglu=True, geglu=True,
                                    cross_entropy=False, fused_linear_cross_entropy=False)
