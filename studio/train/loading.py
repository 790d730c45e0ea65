"""Load the base model as the recipe says (4-bit NF4, 8-bit or 16-bit) and attach LoRA.

The planner predicts memory for exactly what this file does (docs/planner.md): everything that is
not quantised (embeddings, lm_head, norms) stays in the compute dtype; peft keeps the adapter in
fp32; we do not call ``prepare_model_for_kbit_training`` because it upcasts all of that to fp32.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from studio import methods, multimodal
from studio import vision as studio_vision
from studio.adapted import EXPERTS_NEVER_ADAPTED
from studio.demo import ensure_demo_model
from studio.errors import LoadError
from studio.models import ModelError, resolve
from studio.recipe import Recipe
from studio.safety import check_weights_are_safe
from studio.train import moe4bit
from studio.train.dist import distributed, local_rank
from studio.train.moe4bit import experts_in_4bit


def resolve_base(recipe: Recipe) -> Path:
    """A local folder holding the base model ('demo' is converted on first use)."""
    name = str(recipe.model.name_or_path).strip()
    if name == "demo":
        return ensure_demo_model()
    path = Path(name).expanduser()
    if path.is_dir():
        return path.resolve()
    try:  # catalog ids and Hugging Face cache ids
        info = resolve(name, trust_remote_code=recipe.model.trust_remote_code)
    except ModelError as e:  # unknown id, unreadable config
        raise LoadError(f"model '{name}': {e}") from None
    if info.path and Path(info.path).is_dir() and _has_weights(Path(info.path)):
        return Path(info.path)
    raise LoadError(f"model '{name}': no local weights found. Give a folder with config.json and "
                    "*.safetensors, a model already in the Hugging Face cache, or 'demo'")


def _has_weights(folder: Path) -> bool:
    return any(folder.glob("*.safetensors")) or any(folder.glob("*.bin")) or any(folder.glob("*.pt"))


def compute_dtype(recipe: Recipe) -> Any:
    """bf16 on GPUs that support it, fp16 on older GPUs, fp32 on the CPU (unless the recipe says)."""
    import torch

    if recipe.quant.compute_dtype != "auto":
        return getattr(torch, recipe.quant.compute_dtype)
    if torch.cuda.is_available():
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def quantization_config(recipe: Recipe, dtype: Any) -> Any:
    from transformers import BitsAndBytesConfig

    q = recipe.quant
    if q.mode == "4bit":
        # FSDP shards parameters of one dtype: 4-bit blocks are then stored as the compute dtype (peft's FSDP+QLoRA).
        storage = {"bnb_4bit_quant_storage": dtype} if distributed() and recipe.train.strategy == "fsdp" else {}
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=q.quant_type,
                                  bnb_4bit_use_double_quant=q.double_quant, bnb_4bit_compute_dtype=dtype, **storage)
    if q.mode == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return None


def load_tokenizer(folder: Path, recipe: Recipe) -> Any:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=recipe.model.trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(folder: Path, recipe: Recipe, device: str, vision: bool = False) -> Any:
    """The quantised (or 16-bit) base with LoRA attached, ready for the Trainer.

    ``vision``: rows with images on a vision-language model: the whole model (studio.vision), LoRA on its
    language model (and its vision tower with train.vision_lora)."""
    import torch

    from studio.train.peft_methods import check_supported

    check_supported(recipe, device)  # a method peft cannot train on this base is refused before loading
    check_weights_are_safe(folder, recipe.model.allow_pickle)
    dtype = compute_dtype(recipe)
    kwargs: dict[str, Any] = dict(dtype=dtype, attn_implementation=recipe.train.attn,
                                  trust_remote_code=recipe.model.trust_remote_code,
                                  use_safetensors=not recipe.model.allow_pickle or None)
    qconf = quantization_config(recipe, dtype)
    if qconf is not None:
        kwargs["quantization_config"] = qconf
        refuse_sharded_4bit_experts(folder, qconf)

        kwargs["device_map"] = {"": local_rank()} if device == "cuda" else {"": "cpu"}  # torchrun: this rank's GPU
    load = (lambda kw: studio_vision.load_vlm(folder, kw)) if vision else (lambda kw: from_pretrained(folder, kw))
    try:
        model = load(kwargs)
    except ValueError as e:
        if kwargs["attn_implementation"] == "eager" or "attn" not in str(e).lower():
            raise
        # Some architectures (Gemma 2 in transformers 5) refuse sdpa/flash; the planner predicts eager for them.
        kwargs["attn_implementation"] = "eager"
        model = load(kwargs)
    if qconf is None:
        model.to(device)
    model.config.use_cache = False
    if device == "cpu" and qconf is not None:
        keep_cpu_4bit_layout(model)
    if recipe.train.grad_ckpt:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    torch.manual_seed(recipe.train.seed)
    if vision:  # the tiled head and MLP patch a causal LM's layers; a VLM's forward is its own
        return attach_lora(model, recipe, folder, modules=studio_vision.lora_targets(
            model, recipe.lora.targets, recipe.train.vision_lora))
    from studio.train import long_context  # torch at import: the worker's, not the planner's

    long_context.apply(model, recipe.train, device)  # before peft wraps the base
    torch.manual_seed(recipe.train.seed)
    return attach_lora(model, recipe, folder)


def refuse_sharded_4bit_experts(folder: Path, qconf: Any) -> None:
    """FSDP shards parameters of one dtype, so a sharded 4-bit base stores its blocks as the compute dtype; the
    fused experts of an MoE are 4-bit blocks stored as bytes (``moe4bit``), which would mix dtypes under FSDP."""
    import json

    storage = getattr(qconf, "bnb_4bit_quant_storage", None)
    if not getattr(qconf, "load_in_4bit", False) or storage in (None, "uint8") or "uint8" in str(storage):
        return
    try:
        config = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    parts = [c for c in (config, config.get("text_config")) if isinstance(c, dict)]  # a multimodal one's language model
    experts = max((int(v) for c in parts for k in ("num_local_experts", "num_experts", "n_routed_experts")
                   if isinstance(v := c.get(k), int) and not isinstance(v, bool)), default=0)
    if experts:
        raise LoadError(f"this model's {experts} experts are loaded in 4-bit as bytes, while FSDP needs every 4-bit "
                        f"weight stored as {storage}: sharding would mix the two",
                        hint="train this mixture-of-experts model with --strategy ddp (each GPU holds it), or with "
                             "--quant none under FSDP")


def from_pretrained(folder: Path, kwargs: dict) -> Any:
    """``AutoModelForCausalLM.from_pretrained``; in 4-bit the fused experts of an MoE are 4-bit too (moe4bit).
    A multimodal checkpoint gives its language model alone (``studio.multimodal``)."""
    import contextlib

    qconf = kwargs.get("quantization_config")
    in_4bit = qconf is not None and getattr(qconf, "load_in_4bit", False)
    with experts_in_4bit() if in_4bit else contextlib.nullcontext():
        return multimodal.load_causal_lm(folder, kwargs)


def keep_cpu_4bit_layout(model: Any) -> None:
    """Stop bitsandbytes from repacking 4-bit weights for CPU inference while we train.

    On CPUs with AVX512-BF16, bitsandbytes 0.50's ``Linear4bit.forward`` converts its weight in
    place to a packed layout the first time it runs in eval mode without grad (sample generation,
    ``Trainer.evaluate``) and never converts back; every backward pass after that computes wrong
    gradients (measured: 92% relative error on the LoRA gradients), so training silently diverges.
    The packed kernel is an inference speed-up only, so training runs keep the standard layout.
    """
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def attach_lora(model: Any, recipe: Recipe, folder: Path | None = None, modules: Any = None) -> Any:
    """The recipe's adapter method (lora.method) attached with peft (studio/train/peft_methods.py).

    With the model ``folder``, prefix and prompt tuning start from a real text's activations/embeddings.
    ``modules``: peft's target_modules in place of the recipe's (a vision-language model's language model).
    """
    from peft import get_peft_model

    from studio.train.peft_methods import init_prefix_from_text, peft_config

    targets = recipe.lora.targets
    all_linear = targets == ["all-linear"] or targets == "all-linear"
    target_modules = modules  # None: the recipe's (peft_methods.target_modules)
    if modules is not None and not methods.get(recipe.lora.method).low_rank:
        raise LoadError(f"lora.method {recipe.lora.method}: rows with images train a low-rank adapter in this "
                        "version (lora, rslora, dora or adalora). Choose one such as --peft lora")
    if modules is None and moe4bit.quantized_experts(model):
        # The experts are frozen 4-bit weights: 'all-linear' is every other linear layer (docs/planner.md).
        expert_names = sorted(set([] if all_linear else targets) & moe4bit.EXPERT_TARGET_NAMES)
        if expert_names:
            raise LoadError(f"lora.targets {expert_names}: the experts of this mixture-of-experts model are held "
                            "in 4-bit and stay frozen. Adapt the attention (e.g. q_proj, k_proj, v_proj, o_proj), "
                            "or train with quant.mode 8bit or none to adapt the experts too")
        target_modules = moe4bit.lora_targets(model) if all_linear else None
    elif modules is None and recipe.lora.dropout > 0 and all_linear and moe4bit.has_fused_experts(model) and \
            methods.get(recipe.lora.method).low_rank and \
            getattr(model.config, "model_type", "") not in EXPERTS_NEVER_ADAPTED:
        raise LoadError(f"lora.dropout {recipe.lora.dropout}: peft adapts the fused experts of this mixture-of-experts "
                        "model directly (no dropout there). Set lora.dropout to 0, or train with quant.mode 4bit, "
                        "where the experts stay frozen in 4-bit and LoRA adapts the attention")
    try:
        peft_model = get_peft_model(model, peft_config(recipe, base=folder, targets=target_modules))
        if methods.get(recipe.lora.method).kv_from_text and folder is not None:
            if not init_prefix_from_text(peft_model, load_tokenizer(folder, recipe)):
                import warnings

                warnings.warn("prefix tuning starts from peft's random init: this model's key/value cache has "
                              "another shape than peft's prefix", stacklevel=2)
        return peft_model
    except ValueError as e:
        if not methods.get(recipe.lora.method).low_rank:
            raise LoadError(f"lora.method {recipe.lora.method}: peft cannot attach it to this model ({e}). "
                            "Choose a low-rank method such as --peft lora") from None
        raise LoadError(f"lora.targets {targets}: {e}. Use ['all-linear'] or module names of this model") from None
