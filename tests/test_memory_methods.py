"""The planner's memory model for each adapter method (lora.method): trainable counts equal peft's,
and each method's own components appear where they should."""
from __future__ import annotations

import pytest

from studio import memory, methods, models, planner
from studio.recipe import Recipe

BASE = {"quant.mode": "4bit", "quant.double_quant": True, "quant.compute_dtype": "bfloat16", "lora.rank": 16,
        "lora.alpha": 32, "lora.targets": ["all-linear"], "lora.dropout": 0.05, "train.micro_batch": 2,
        "train.grad_accum": 8, "train.seq_len": 1024, "train.grad_ckpt": True, "train.attn": "sdpa",
        "train.optimizer": "adamw_torch", "lora.virtual_tokens": 20}


@pytest.mark.parametrize("method", methods.NAMES)
def test_trainable_parameters_equal_peft(method, tiny_model_dir):
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from studio.train.peft_methods import peft_config

    info = models.resolve(str(tiny_model_dir))
    r = Recipe()
    r.lora.method, r.lora.rank, r.lora.virtual_tokens = method, 8, 6
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32),
                           peft_config(r, total_steps=10))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    s = {**BASE, "lora.method": method, "lora.rank": 8, "lora.virtual_tokens": 6}
    assert memory.adapter_params(info, s) == trainable


def test_each_method_costs_what_it_should():
    info = models.from_catalog(models.find_catalog("qwen2.5-7b-instruct"))
    est = {m: memory.estimate(info, {**BASE, "lora.method": m}) for m in methods.NAMES}
    lora = est["lora"]
    assert est["rslora"].components == lora.components  # rank-stabilised scaling costs nothing
    assert est["dora"].device_total > lora.device_total
    assert {"dora_activations", "dora_weight_norm"} <= set(est["dora"].components)
    assert "(estimate" in est["dora"].sources["dora_activations"]
    assert est["adalora"].trainable_params > lora.trainable_params  # it starts at 1.5x the rank
    assert est["adalora"].components["adalora_importance"] == 12 * est["adalora"].trainable_params
    for m in ("prefix", "prompt"):
        assert est[m].trainable_params < lora.trainable_params / 10
        assert "lora_activations" not in est[m].components
    assert "prefix_key_values" in est["prefix"].components
    longer = memory.estimate(info, {**BASE, "lora.method": "prompt", "lora.virtual_tokens": 200})
    assert longer.components["activations"] > est["prompt"].components["activations"]  # the sequence grew


def test_the_plan_names_the_method_and_its_estimates():
    info = models.from_catalog(models.find_catalog("qwen2.5-7b-instruct"))
    plan = planner.fit(info, 24 * 2**30, fixed={"lora.method": "dora"})
    assert plan.settings.method == "dora"
    assert any(r.startswith("Method DoRA: ") for r in plan.reasons)
    assert any("Estimated" in r and "dora_activations" in r for r in plan.reasons)
    prompt = planner.fit(info, 24 * 2**30, fixed={"lora.method": "prompt", "lora.virtual_tokens": 50})
    assert not any(r.startswith("LoRA rank") for r in prompt.reasons)
    assert any("50 virtual tokens" in r for r in prompt.reasons)
    assert prompt.apply(Recipe()).lora.method == "prompt"


def test_prefix_tuning_plans_without_checkpointing():
    info = models.from_catalog(models.find_catalog("qwen2.5-7b-instruct"))
    plan = planner.fit(info, 24 * 2**30, fixed={"lora.method": "prefix"})
    assert plan.settings.grad_ckpt is False
    assert any("prefix tuning does not work with gradient checkpointing" in r for r in plan.reasons)
    assert plan.apply(Recipe()).validate() == [] or all(p.field in ("model.name_or_path", "data.path")
                                                         for p in plan.apply(Recipe()).validate())
