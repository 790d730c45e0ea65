"""How one transformers ``model_type`` becomes a GGUF that llama.cpp runs: the record and its helpers.

A family module (``llama``, and one per family that needs more) lists its ``GgufArch`` entries; the
writer (``studio.export.gguf_writer``), the read-back checks (``studio.export.verify``) and the LoRA
adapter writer (``studio.export.lora_gguf``) all go through the same entry, so a tensor is written,
checked and adapted in one layout. Facts about each layout follow llama.cpp's ``convert_hf_to_gguf.py``
and its ``conversion/`` modules (key names, tensor transforms); the code is our own.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

# What a family hook receives: the GGUF tensor name, the float tensor (torch), the model's config.
TensorHook = Callable[[str, Any, dict], Any]
# (gguf name, length of the axis, config) -> the new order of that axis (numpy int array), or None to keep it.
OrderHook = Callable[[str, int, dict], Any]


@dataclass(frozen=True)
class GgufArch:
    """One transformers ``model_type``: llama.cpp's architecture name and what differs from a Llama."""

    model_type: str
    arch: str  # gguf MODEL_ARCH name (gguf.MODEL_ARCH_NAMES)
    permute_qk: bool = False  # llama-arch files store q/k rows interleaved for llama.cpp's rotary layout
    # (gguf name, tensor, config) -> the tensor in llama.cpp's layout (a norm's +1, a split, a scale).
    tensor: TensorHook | None = None
    # (writer, config): the keys this family adds after the common ones (softcaps, sliding windows).
    hparams: Callable[[Any, dict], None] | None = None
    # checkpoint tensor names llama.cpp has no place for (multimodal towers are another file's).
    skip: Callable[[str], bool] | None = None
    # raises studio.export.errors.UnsupportedModel for a config this family cannot write (yet).
    check: Callable[[dict], None] | None = None
    # the checkpoint name as gguf's tensor map knows it (a multimodal checkpoint's language model prefix).
    rename: Callable[[str], str] | None = None
    # rows (axis 0) in another order than the checkpoint's (Qwen3.5's V heads regrouped for ggml's broadcast);
    # applied with the q/k permutation, so the read-back maps row numbers through it too.
    row_order: OrderHook | None = None
    # columns (the last axis) in another order; commutes with picking rows, applied with ``tensor``.
    col_order: OrderHook | None = None
    # (gguf name, checkpoint shape, config) -> the shape llama.cpp expects (size-1 axes dropped: a conv kernel).
    shape: Callable[[str, tuple[int, ...], dict], tuple[int, ...]] | None = None


def head_dim(config: dict) -> int:
    return int(config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"])


def permute_qk(w, n_head: int):
    """HF (rotate-half) row order -> llama.cpp's interleaved pairs; transformers' GGUF loader undoes it."""
    rows = w.shape[0]
    return w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def rope_params(config: dict) -> dict:
    """transformers 5 keeps rope settings in ``rope_parameters``; older configs use rope_theta/rope_scaling."""
    params = dict(config.get("rope_parameters") or {})
    scaling = config.get("rope_scaling") or {}
    params = {**scaling, **params}
    params.setdefault("rope_theta", config.get("rope_theta", 10000.0))
    return params


# A multimodal checkpoint (``*ForConditionalGeneration``: Qwen3.5, Gemma 3 and 4, Mistral 3) keeps its
# language model under this prefix and its vision/audio towers beside it; the GGUF holds the language model
# only (llama.cpp reads the towers from a separate projector file).
LANGUAGE_MODEL = "model.language_model."
MULTIMODAL = "studio_multimodal"  # set in a flattened config: the checkpoint names tensors as above


def text_config(config: dict) -> dict:
    """The language model's config: ``text_config`` of a multimodal checkpoint, flattened (idempotent).

    The top level decides whether the output layer is tied to the embeddings (transformers ties
    ``lm_head`` to the language model's ``embed_tokens`` from the outer config)."""
    text = config.get("text_config")
    if not isinstance(text, dict):
        return config
    flat = dict(text)
    flat["tie_word_embeddings"] = bool(config.get("tie_word_embeddings", text.get("tie_word_embeddings", False)))
    flat[MULTIMODAL] = True
    return flat


def text_name(name: str, config: dict) -> str | None:
    """A checkpoint tensor's name as a text-only model has it, or None for a tensor outside the language
    model (a multimodal checkpoint's vision/audio tower, its projector)."""
    if not config.get(MULTIMODAL):
        return name
    if name.startswith(LANGUAGE_MODEL):
        return "model." + name[len(LANGUAGE_MODEL):]
    return name if name.startswith("lm_head.") else None
