"""DoRA: LoRA split into a direction and a learned magnitude per output row.

Memory (counted from peft 0.21's code; the parts marked "estimate" are not yet metered on a GPU):
one fp32 magnitude per output of each adapted layer; the base and LoRA outputs kept for the
magnitude's gradient; W + scale * B @ A rebuilt for the weight norm, one layer at a time.
"""
from __future__ import annotations

from studio.adapted import ModelShape, dtype_bytes, targeted
from studio.methods.base import Method, Terms, no_trainable_terms, same
from studio.methods.lora import lora_config
from studio.settings import Settings

DORA_SAVED_PER_OUT = 2.5  # values per output and token DoRA keeps (fitted: bench/memory_components.py --methods)


def _magnitudes(info: ModelShape, s: Settings) -> list[tuple[int, int]]:
    """One magnitude per output row of each adapted layer."""
    return [(g.out_features, g.count) for g in targeted(info, s.targets, s.quant_mode)]


def _words(s: Settings) -> str:
    return f"rank {s.rank}, DoRA magnitudes"


def _activations(info: ModelShape, s: Settings, device: str, peak: bool) -> Terms:
    """With checkpointing DoRA's extra lives only in the one layer recomputed in backward (``peak``);
    the forward saves nothing more than the layer inputs."""
    if s.grad_ckpt and not peak:
        return {}, {}
    a, batch, seq = dtype_bytes(s.compute_dtype), s.micro_batch, s.seq_len
    layers = 1 if s.grad_ckpt else info.layers
    # peft's DoRA keeps the base and LoRA outputs of every adapted layer for the magnitude's gradient
    per_token = sum(DORA_SAVED_PER_OUT * a * g.out_features * g.count / max(1, info.layers)
                    for g in targeted(info, s.targets, s.quant_mode))
    return ({"dora_activations": int(layers * per_token * batch * seq)},
            {"dora_activations": f"DoRA (estimate, fitted on the CPU): about {DORA_SAVED_PER_OUT:g} values per "
                                 f"output of each adapted layer kept for the magnitude's gradient, {layers} "
                                 f"layer(s) x {batch * seq:,} tokens"})


def _transients(info: ModelShape, s: Settings) -> Terms:
    """DoRA rebuilds W + scale * B @ A of each adapted layer for its weight norm, one layer at a time."""
    a = dtype_bytes(s.compute_dtype)
    biggest = max((g.in_features * g.out_features for g in targeted(info, s.targets, s.quant_mode)), default=0)
    return ({"dora_weight_norm": 3 * biggest * a},
            {"dora_weight_norm": f"DoRA (estimate): the largest adapted weight ({biggest:,}) dequantised, B @ A and "
                                 f"their sum, each {a} bytes a value, for the norm of each output row"})


DORA = Method("dora", "DoRA", "LoRA split into a direction and a learned magnitude per output: often closer to full "
              "fine-tuning at low ranks, for about 10-30% more activation memory and a slower step.", "LORA",
              gguf_adapter=False,
              why_no_gguf_adapter="a DoRA update rescales each output by a learned magnitude, which llama.cpp's LoRA "
                                  "adapter format (scale * B @ A) cannot express",
              refused=(("8bit", "cpu",
                        "DoRA on an 8-bit (LLM.int8) base fails inside peft on the CPU: bitsandbytes keeps no int8 "
                        "weight there for DoRA's weight norm",
                        "use quant.mode 4bit (QLoRA, --quant 4bit) or none with DoRA, or another method (--peft lora)"),),
              effective=same, extra_tensors=_magnitudes, words=_words, trainable_terms=no_trainable_terms,
              activations=_activations, transients=_transients, peft_config=lora_config(use_dora=True))
