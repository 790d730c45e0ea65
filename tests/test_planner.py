"""studio.planner: plans never exceed the budget, fixed settings are kept, no-fit answers name a change that fits."""
from __future__ import annotations

import itertools
from types import SimpleNamespace

import pytest

from studio import memory, models, planner
from studio.recipe import Recipe

GiB = 1024 ** 3
GRID_MODELS = ["smollm2-135m-instruct", "qwen2.5-0.5b-instruct", "llama-3.2-3b-instruct", "phi-3.5-mini-instruct",
               "llama-3.1-8b-instruct", "gemma-2-9b-it", "qwen2.5-14b-instruct", "qwen2.5-32b-instruct",
               "mixtral-8x7b-instruct-v0.1", "llama-3.1-70b-instruct"]
BUDGETS = [8, 12, 16, 24, 48]


@pytest.fixture(scope="module")
def infos():
    return {m: models.resolve(m) for m in GRID_MODELS}


@pytest.mark.parametrize("model, gib", list(itertools.product(GRID_MODELS, BUDGETS)))
def test_auto_fit_never_exceeds_budget_minus_margin(infos, model, gib):
    info, budget = infos[model], gib * GiB
    plan = planner.fit(info, budget)
    if plan.fits:
        check = memory.estimate(info, plan.settings, dropout=plan.dropout)  # predict again, independently
        assert check.device_total == plan.predicted["device_total_bytes"]
        assert check.device_total <= budget - planner.margin_bytes(budget)
        assert plan.settings.micro_batch * plan.settings.grad_accum >= 16
        assert set(plan.settings.to_dict()) == set(planner.SETTING_KEYS)
    else:
        assert plan.suggestion and plan.suggestion_change.to_dict()
        assert plan.predicted["device_total_bytes"] > budget - planner.margin_bytes(budget)


def test_grid_has_both_answers(infos):
    fits = {(m, g): planner.fit(infos[m], g * GiB).fits for m in ("smollm2-135m-instruct", "llama-3.1-70b-instruct")
            for g in (8, 48)}
    assert fits[("smollm2-135m-instruct", 8)] and not fits[("llama-3.1-70b-instruct", 8)]
    assert fits[("llama-3.1-70b-instruct", 48)]  # QLoRA's claim: a 65-70B model trains on one 48 GB GPU


FIXED_CASES = [
    {"quant.mode": "8bit"},
    {"lora.rank": 8, "lora.targets": "q_proj,v_proj"},
    {"train.micro_batch": 2, "train.seq_len": 512, "train.grad_ckpt": False},
    {"train.attn": "eager", "train.optimizer": "adamw_8bit", "quant.double_quant": False},
    {"quant.mode": "4bit", "lora.rank": 32, "lora.alpha": 16, "train.grad_accum": 3, "train.optimizer": "paged_adamw_32bit"},
]


@pytest.mark.parametrize("fixed", FIXED_CASES)
def test_fixed_settings_are_honoured(infos, fixed):
    plan = planner.fit(infos["llama-3.2-3b-instruct"], 24 * GiB, fixed=fixed)
    assert plan.fits
    for key, value in fixed.items():
        want = planner._norm_targets(value) if key == "lora.targets" else value
        assert plan.settings.to_dict()[key] == want, key
    assert any("(fixed)" in r for r in plan.reasons) or set(fixed) <= {"lora.alpha", "train.grad_accum", "train.attn",
                                                                                   "quant.double_quant", "lora.targets"}


def test_prefers_quality_when_memory_allows(infos):
    roomy = planner.fit(infos["qwen2.5-0.5b-instruct"], 48 * GiB)
    assert roomy.settings.quant_mode == "none" and roomy.settings.rank == planner.RANKS[0]
    assert roomy.settings.seq_len == planner.DEFAULT_SEQ_LEN
    tight = planner.fit(infos["llama-3.1-8b-instruct"], 12 * GiB)
    assert tight.fits and tight.settings.quant_mode == "4bit"
    assert any("4-bit" in r for r in tight.reasons)


def test_dataset_p95_sets_the_length(infos):
    report = SimpleNamespace(tokens=SimpleNamespace(min=12, p50=150, p95=300, max=2000))
    plan = planner.fit(infos["llama-3.2-3b-instruct"], 24 * GiB, dataset_report=report)
    assert plan.settings.seq_len == 320 and plan.target_seq_len == 320
    assert any("95th-percentile example is 300 tokens" in r for r in plan.reasons)
    as_dict = planner.fit(infos["llama-3.2-3b-instruct"], 24 * GiB, dataset_report={"tokens": {"p95": 300}})
    assert as_dict.settings == plan.settings
    no_tokens = planner.fit(infos["llama-3.2-3b-instruct"], 24 * GiB, dataset_report=SimpleNamespace(tokens=None))
    assert no_tokens.settings.seq_len == planner.DEFAULT_SEQ_LEN


def test_length_is_capped_at_the_model_context(infos):
    report = SimpleNamespace(tokens=SimpleNamespace(min=1, p50=5000, p95=20000, max=30000))
    plan = planner.fit(infos["smollm2-135m-instruct"], 48 * GiB, dataset_report=report)
    assert plan.target_seq_len == infos["smollm2-135m-instruct"].context == 8192


def _apply_change(info, change, fixed):
    if "budget_bytes" in change:
        return planner.fit(info, change["budget_bytes"], fixed=fixed)
    if "train.seq_len" in change:
        return planner.fit(info, BUDGET, fixed={**fixed, "train.seq_len": change["train.seq_len"]})
    if "unfix" in change:
        return planner.fit(info, BUDGET, fixed={k: v for k, v in fixed.items() if k not in change["unfix"]})
    raise AssertionError(change)


BUDGET = 12 * GiB


@pytest.mark.parametrize("model, fixed, kind", [
    ("llama-3.1-70b-instruct", {}, "budget_bytes"),
    ("llama-3.1-8b-instruct", {"train.seq_len": 65536}, "train.seq_len"),
    ("llama-3.1-8b-instruct", {"quant.mode": "none"}, "unfix"),
])
def test_no_fit_names_a_change_that_then_fits(infos, model, fixed, kind):
    info = infos[model]
    plan = planner.fit(info, BUDGET, fixed=fixed)
    assert not plan.fits and kind in plan.suggestion_change.to_dict()
    assert plan.suggestion in plan.reasons
    assert _apply_change(info, plan.suggestion_change.to_dict(), fixed).fits
    if "model" in plan.suggestion_change.to_dict():
        smaller = models.resolve(plan.suggestion_change.to_dict()["model"])
        assert smaller.total_params < info.total_params
        assert planner.fit(smaller, BUDGET).fits


def test_apply_writes_settings_into_a_recipe_copy(infos):
    plan = planner.fit(infos["llama-3.2-3b-instruct"], 16 * GiB, fixed={"lora.targets": ["q_proj", "v_proj"]})
    original = Recipe()
    recipe = plan.apply(original)
    s = plan.settings.to_dict()
    assert (recipe.quant.mode, recipe.quant.double_quant) == (s["quant.mode"], s["quant.double_quant"])
    assert (recipe.lora.rank, recipe.lora.alpha, recipe.lora.targets) == (s["lora.rank"], s["lora.alpha"], ["q_proj", "v_proj"])
    t = recipe.train
    assert (t.micro_batch, t.grad_accum, t.seq_len, t.grad_ckpt, t.attn, t.optimizer) == (
        s["train.micro_batch"], s["train.grad_accum"], s["train.seq_len"], s["train.grad_ckpt"], s["train.attn"], s["train.optimizer"])
    assert original.lora.targets == ["all-linear"]  # the input is not modified
    assert not recipe.validate() or all(p.field == "data.path" for p in recipe.validate())


def test_to_dict_has_the_cli_contract_keys(infos):
    d = planner.fit(infos["qwen2.5-0.5b-instruct"], 8 * GiB).to_dict()
    assert {"fits", "budget_bytes", "settings", "predicted", "components", "reasons", "sources"} <= set(d)
    assert set(d["predicted"]) == {"peak_allocated_bytes", "peak_reserved_bytes", "device_total_bytes"}
    assert set(d["settings"]) == set(planner.SETTING_KEYS)


def test_models_without_sdpa_get_eager_attention():
    plan = planner.fit(models.resolve("gemma-2-2b-it"), 24 * GiB)
    assert plan.settings.attn == "eager" and any("no sdpa path" in r for r in plan.reasons)
    assert planner.fit(models.resolve("gemma-2-2b-it"), 24 * GiB, fixed={"train.attn": "flash_attention_2"}).settings.attn \
        == "flash_attention_2"


def test_a_tiny_dataset_caps_the_batch_at_its_size():
    from studio import models
    from studio.data.report import DatasetReport
    from studio.planner import fit

    info = models.resolve("smollm2-135m-instruct")
    report = DatasetReport()
    report.usable = 9
    plan = fit(info, 24 * 2**30, dataset_report=report)
    s = plan.settings.to_dict()
    assert s["train.micro_batch"] <= 9 and s["train.micro_batch"] * s["train.grad_accum"] <= 9
    assert any("9 usable examples" in r for r in plan.reasons)
    roomy = fit(info, 24 * 2**30).settings.to_dict()  # the same budget without the small dataset
    assert roomy["train.micro_batch"] * roomy["train.grad_accum"] == 16
