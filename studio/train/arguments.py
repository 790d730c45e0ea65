"""The Trainer's arguments of a recipe, built in one place: the worker and the memory probe run the same."""
from __future__ import annotations

from pathlib import Path
from typing import Any


def training_arguments(recipe: Any, output_dir: Path, device: str, dtype: Any, use_eval: bool = False,
                       config_cls: type | None = None, strategy: str = "single", **overrides: Any) -> Any:
    """``TrainingArguments`` for ``recipe`` on ``device`` with weights in ``dtype``; ``overrides`` win.

    ``config_cls``: a subclass of it (TRL's ``DPOConfig``/``ORPOConfig`` for the preference objectives).

    Gradient checkpointing is switched on the model by ``loading.py``, never here (the Trainer
    would wrap it a second time).
    """
    import torch
    from transformers import TrainingArguments

    r, t = recipe, recipe.train
    kwargs = dict(
        output_dir=str(output_dir), max_steps=t.max_steps, num_train_epochs=t.epochs,
        per_device_train_batch_size=t.micro_batch, per_device_eval_batch_size=t.micro_batch,
        gradient_accumulation_steps=t.grad_accum, learning_rate=t.lr, lr_scheduler_type=t.scheduler,
        warmup_steps=t.warmup_ratio, optim=t.optimizer, weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm, logging_steps=t.logging_steps, seed=t.seed, data_seed=r.data.seed,
        eval_strategy="steps" if use_eval and t.eval_steps > 0 else "no", eval_steps=t.eval_steps or None,
        save_strategy="steps", save_steps=t.save_steps, save_total_limit=None, logging_nan_inf_filter=False,
        report_to="none", disable_tqdm=True, use_cpu=device == "cpu",
        bf16=device == "cuda" and dtype == torch.bfloat16, fp16=device == "cuda" and dtype == torch.float16,
        include_num_input_tokens_seen="non_padding", remove_unused_columns=False,
        prediction_loss_only=True,  # evaluation reports the loss; no logits are gathered (tiled head: none exist)
        dataloader_num_workers=0, activation_checkpointing=False)
    kwargs.update(distributed_arguments(strategy, device))
    kwargs.update(overrides)
    return (config_cls or TrainingArguments)(**kwargs)


def distributed_arguments(strategy: str, device: str) -> dict:
    """The Trainer's arguments for several processes under torchrun (it reads the ranks from the environment).

    DDP: every rank holds the whole model; only LoRA weights have gradients, and all of them take
    part in every step, so no search for unused parameters. FSDP (version 2, ``fully_shard`` per
    decoder layer): the base weights (4-bit ones stored as blocks of the compute dtype,
    ``bnb_4bit_quant_storage``), the adapter and the optimizer state are sharded; a full state dict
    is gathered for checkpoints and the adapter, so they look like a single process's.
    """
    if strategy not in ("ddp", "fsdp"):
        return {}
    out: dict = {"ddp_backend": "gloo" if device == "cpu" else "nccl", "ddp_find_unused_parameters": False}
    if strategy == "fsdp":
        out["fsdp"] = True
        out["fsdp_config"] = {"version": 2, "auto_wrap_policy": "TRANSFORMER_BASED_WRAP", "reshard_after_forward": True,
                              "cpu_ram_efficient_loading": False, "state_dict_type": "FULL_STATE_DICT"}
    return out
