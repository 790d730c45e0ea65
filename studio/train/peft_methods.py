"""Each adapter method (studio.methods) as a peft config, and what a method needs around the Trainer.

- ``peft_config``: the method's peft config from the recipe, built by the method's own module
  (studio/methods/<name>.py: LoraConfig, AdaLoraConfig, PrefixTuningConfig or PromptTuningConfig).
- ``AdaLoraCallback``: peft's rank allocator must see every step's gradients
  (``AdaLoraModel.update_and_allocate`` after the optimizer step, before ``zero_grad``); the
  Trainer's ``on_optimizer_step`` is exactly that point. Its schedule (``total_step``, ``tinit``,
  ``tfinal``) is set from the Trainer's own step count when training begins.
- Checkpoints of an AdaLoRA run: peft saves an adapter with a rank pattern already cut down to
  the kept ranks, and the allocator's importance averages are not saved at all. A resumed run
  would then load tensors of the wrong shape and allocate ranks from fresh averages. So a
  checkpoint keeps the full-rank tensors (the pattern is held back while the Trainer saves it)
  and ``adalora_state.pt`` holds the pattern and the allocator's averages; a resume restores both.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator

from transformers import TrainerCallback

from studio import methods
from studio.methods.adalora import adalora_schedule
from studio.methods.prompting import INIT_TEXT
from studio.recipe import Recipe
from studio.train.errors import TrainingFault

ADALORA_STATE = "adalora_state.pt"


class MethodRefused(TrainingFault):
    """peft cannot train this method on this base/device; the message says why and what to do."""

    kind = "config"


def target_modules(recipe: Recipe) -> Any:
    targets = recipe.lora.targets
    return "all-linear" if targets == ["all-linear"] or targets == "all-linear" else list(targets)


def peft_config(recipe: Recipe, total_steps: int = 1000, base: Path | None = None, targets: Any = None) -> Any:
    """The peft config of ``recipe.lora.method``, built by the method's own home (studio/methods/<name>.py;
    AdaLoRA's schedule is finished in AdaLoraCallback).

    ``targets`` replaces the recipe's module names (a 4-bit MoE's 'all-linear', studio.train.moe4bit).
    With ``base`` (the model folder) prompt tuning starts from the embeddings of INIT_TEXT (peft's
    TEXT init, the tokenizer read from that folder); without it from peft's random init.
    """
    return methods.get(recipe.lora.method).peft_config(recipe, total_steps, base, targets or target_modules(recipe))


def init_prefix_from_text(model: Any, tokenizer: Any, text: str = INIT_TEXT) -> bool:
    """Start a prefix as the keys and values the base computes for ``text`` (Li & Liang 2021 initialise
    from real words' activations): the model then begins as if that text preceded every prompt.

    Returns False (peft's random init stays) when this model's cache does not have the shape peft's
    prefix has (heterogeneous layers); the caller says so.
    """
    import torch

    config = model.peft_config[model.active_adapter]
    p, heads = config.num_virtual_tokens, config.num_attention_heads
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    ids = (ids * (p // max(1, len(ids)) + 1))[:p]
    base = model.get_base_model()
    device = next(base.parameters()).device
    with torch.no_grad(), model.disable_adapter():
        cache = base(input_ids=torch.tensor([ids], device=device), use_cache=True).past_key_values
    layers = getattr(cache, "layers", None)
    if layers is None or len(layers) != config.num_layers:
        return False
    parts = []
    for layer in layers:
        for t in (layer.keys, layer.values):  # (1, kv heads, P, head dim)
            if t is None or tuple(t.shape) != (1, heads, p, config.token_dim // heads):
                return False
            parts.append(t[0].permute(1, 0, 2).reshape(p, -1))
    weight = model.prompt_encoder[model.active_adapter].embedding.weight
    with torch.no_grad():  # peft reads the rows as (P, layers x 2 [key, value], heads, head dim)
        weight.copy_(torch.cat(parts, dim=1).to(weight.dtype))
    return True


def check_supported(recipe: Recipe, device: str) -> None:
    """Refuse, before anything loads, a method/base combination peft cannot train here."""
    refused = methods.refusal(recipe.lora.method, recipe.quant.mode, device)
    if refused:
        raise MethodRefused(*refused)


def is_adalora(model: Any) -> bool:
    return hasattr(getattr(model, "base_model", None), "rankallocator")


class AdaLoraCallback(TrainerCallback):
    """Calls peft's rank allocator after every optimizer step (gradients still there)."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def on_train_begin(self, args, state, control, **kw):
        config = _adalora_config(self.model)
        config.tinit, config.tfinal, config.deltaT = adalora_schedule(state.max_steps)
        self.model.base_model.rankallocator.set_total_step(state.max_steps)
        return control

    def on_optimizer_step(self, args, state, control, **kw):
        self.model.base_model.update_and_allocate(state.global_step)  # global_step: steps done before this one
        return control


def _adalora_config(model: Any) -> Any:
    base = model.base_model
    return base.peft_config[base.trainable_adapter_name]


@contextlib.contextmanager
def full_rank_checkpoint(model: Any) -> Iterator[None]:
    """While the Trainer writes a checkpoint: AdaLoRA's tensors at full rank (the pattern is saved apart)."""
    if not is_adalora(model):
        yield
        return
    config = _adalora_config(model)
    pattern, config.rank_pattern = config.rank_pattern, None
    try:
        yield
    finally:
        config.rank_pattern = pattern


def save_method_state(model: Any, folder: Path) -> None:
    """What the adapter file does not hold and a bit-exact resume needs (AdaLoRA's allocator)."""
    if not is_adalora(model):
        return
    import torch

    alloc = model.base_model.rankallocator
    state = {"rank_pattern": _adalora_config(model).rank_pattern, "ipt": alloc.ipt,
             "exp_avg_ipt": alloc.exp_avg_ipt, "exp_avg_unc": alloc.exp_avg_unc}
    torch.save(state, Path(folder) / ADALORA_STATE)


def load_method_state(model: Any, folder: Path) -> None:
    """Restore what save_method_state kept (a checkpoint of another method has none: nothing to do)."""
    path = Path(folder) / ADALORA_STATE
    if not is_adalora(model) or not path.is_file():
        return
    import torch

    state = torch.load(path, weights_only=True, map_location=next(model.parameters()).device)
    alloc = model.base_model.rankallocator
    alloc.ipt, alloc.exp_avg_ipt, alloc.exp_avg_unc = state["ipt"], state["exp_avg_ipt"], state["exp_avg_unc"]
    _adalora_config(model).rank_pattern = state["rank_pattern"]
