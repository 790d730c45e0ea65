"""How one transformers ``model_type`` becomes a GGUF that llama.cpp runs: the record and its helpers.

A family module (``llama``, and one per family that needs more) lists its ``GgufArch`` entries; the
writer (``studio.export.gguf_writer``), the read-back checks (``studio.export.verify``) and the LoRA
adapter writer (``studio.export.lora_gguf``) all go through the same entry, so a tensor is written,
checked and adapted in one layout. Facts about each layout follow llama.cpp's ``convert_hf_to_gguf.py``
and its ``conversion/`` modules (key names, tensor transforms); the code is our own.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable

from studio import multimodal

# What a family hook receives: the GGUF tensor name, the float tensor (torch), the model's config.
TensorHook = Callable[[str, Any, dict], Any]
Reader = Callable[[Any], Any]  # reads one checkpoint tensor (a TensorMeta) as torch, merged where an adapter is


@dataclass(frozen=True)
class Derived:
    """A GGUF tensor that is not one checkpoint tensor row for row: a fused tensor split, a tensor stored
    transposed, MXFP4 blocks joined with their scales. The family builds it from ``sources``."""

    gguf_name: str
    shape: tuple[int, ...]  # llama.cpp's tensor, outermost first (numpy order)
    sources: tuple[Any, ...]  # the TensorMetas it is built from (read, counted for progress)
    # read -> the float tensor in llama.cpp's layout: what is encoded, and what the read-back compares with
    floats: Callable[[Reader], Any]
    # read -> the tensor's bytes in ``qtype`` when it is copied as stored instead of encoded from ``floats``
    raw: Callable[[Reader], Any] | None = None
    qtype: str | None = None  # GGML type name it is written as whatever the requested quant (else the quant's)

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
    # rope scalings this family writes beyond the common ones (gguf_writer.SUPPORTED_ROPE): Phi-3's longrope.
    rope_types: tuple[str, ...] = ()
    # config -> {gguf name: float tensor}: tensors llama.cpp reads that the checkpoint does not have
    # (Phi-3's rope_factors_long/short, computed from the config), written before the checkpoint's.
    computed: Callable[[dict], dict[str, Any]] | None = None
    # (tensors by checkpoint name, config, quant) -> tensors the family builds from several checkpoint tensors
    # or parts of one (gpt-oss's fused MXFP4 experts); their sources are left out of the generic plan.
    derive: Callable[[dict[str, Any], dict, str], list[Derived]] | None = None

    def source_name(self, name: str, config: dict) -> str | None:
        """A checkpoint tensor's name as gguf's tensor map knows it: the text model's name (``text_name``),
        then the family's ``rename``; None for a tensor outside the language model."""
        text = text_name(name, config)
        return text if text is None or self.rename is None else self.rename(text)

    def model_arch(self) -> Any:
        """gguf's MODEL_ARCH member (its names use "_" where the architecture name has "-": gpt-oss)."""
        import gguf

        return gguf.MODEL_ARCH[self.arch.upper().replace("-", "_")]
    # rows (axis 0) in another order than the checkpoint's (Qwen3.5's V heads regrouped for ggml's broadcast);
    # applied with the q/k permutation, so the read-back maps row numbers through it too.
    row_order: OrderHook | None = None
    # columns (the last axis) in another order; commutes with picking rows, applied with ``tensor``.
    col_order: OrderHook | None = None
    # (gguf name, checkpoint shape, config) -> the shape llama.cpp expects (size-1 axes dropped: a conv kernel).
    shape: Callable[[str, tuple[int, ...], dict], tuple[int, ...]] | None = None


def head_dim(config: dict) -> int:
    return int(config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"])


def rotary_dim(config: dict) -> int:
    """Dimensions of each head that rotary embeddings turn: all of them, or ``partial_rotary_factor`` of them
    (Phi-2, Phi-4-mini). transformers 5 keeps the factor in ``rope_parameters``; older configs at the top."""
    factor = rope_params(config).get("partial_rotary_factor", config.get("partial_rotary_factor"))
    return int(head_dim(config) * float(1.0 if factor is None else factor))


def permute_qk(w, n_head: int):
    """HF (rotate-half) row order -> llama.cpp's interleaved pairs; transformers' GGUF loader undoes it."""
    rows = w.shape[0]
    return w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def rope_params(config: dict) -> dict:
    """transformers 5 keeps rope settings in ``rope_parameters``; older configs use rope_theta/rope_scaling."""
    params = dict(config.get("rope_parameters") or {})
    # per layer type (Gemma 3 and 4: ``sliding_attention`` / ``full_attention``): the GGUF's rope keys are
    # the full-attention layers'; a family writes the sliding layers' base itself (rope.freq_base_swa)
    params = dict(params.get("full_attention") or params)
    scaling = config.get("rope_scaling") or {}
    params = {**scaling, **params}
    params.setdefault("rope_theta", config.get("rope_theta", 10000.0))
    return params


# A multimodal checkpoint (``*ForConditionalGeneration``: Qwen3.5, Gemma 3 and 4, Mistral 3) keeps its
# language model beside its vision/audio towers (studio.multimodal); the GGUF holds the language model only
# (llama.cpp reads the towers from a separate projector file).
MULTIMODAL = "studio_multimodal"  # set in a flattened config: the checkpoint names tensors as above


def text_config(config: dict) -> dict:
    """The language model's config: ``text_config`` of a multimodal checkpoint, flattened (idempotent).

    The top level decides whether the output layer is tied to the embeddings (transformers ties
    ``lm_head`` to the language model's ``embed_tokens`` from the outer config)."""
    text = config.get("text_config")
    if not isinstance(text, dict):
        return config
    flat = dict(json.loads(_completed(json.dumps(text, sort_keys=True))))
    flat["tie_word_embeddings"] = bool(config.get("tie_word_embeddings", text.get("tie_word_embeddings", False)))
    flat[MULTIMODAL] = True
    return flat


@lru_cache(maxsize=8)
def _completed(text_json: str) -> str:
    """A multimodal checkpoint's ``text_config`` with the keys it leaves out filled in as transformers fills
    them (the Hub's Gemma 3 4B+ lists only what differs from Gemma3TextConfig: no head counts, vocab size
    or rope bases, a legacy ``rope_scaling``); the keys given win. As given when transformers does not know
    the type. JSON in and out, so the result is cached and never shared mutable."""
    text = json.loads(text_json)
    try:
        from transformers import AutoConfig

        full = AutoConfig.for_model(text["model_type"], **{k: v for k, v in text.items() if k != "model_type"})
        return json.dumps({**full.to_dict(), **text}, default=str)
    except Exception:  # an unknown or remote-code type: the keys given are all there is
        return text_json


def text_name(name: str, config: dict) -> str | None:
    """A tensor's name as a text-only model has it, or None for a tensor outside the language model (a
    multimodal checkpoint's vision/audio tower, its projector): ``studio.multimodal.to_text``."""
    return multimodal.to_text(name) if config.get(MULTIMODAL) else name
