"""An image run's plan counts the vision tower the worker loads beside the language model."""
from __future__ import annotations

import pytest

from studio import memory, models, planner, vision_plan
from studio.settings import Settings
from tests.tiny import make_model, make_vlm


@pytest.fixture(scope="module")
def vlm(tmp_path_factory):
    return make_vlm(tmp_path_factory.mktemp("vlm"), "qwen2_vl")


def test_the_tower_count_is_every_parameter_outside_the_language_model(vlm):
    import torch
    from transformers import AutoModelForImageTextToText

    whole = AutoModelForImageTextToText.from_pretrained(str(vlm), dtype=torch.float32)
    tower = sum(p.numel() for n, p in whole.named_parameters() if "language_model" not in n and "lm_head" not in n)
    assert tower > 0 and vision_plan.tower_params(vlm) == tower
    # and the language model's count (Qwen2-VL has no causal LM class of its own: counted inside the whole model)
    assert models.from_folder(vlm).total_params + tower == sum(p.numel() for p in whole.parameters())


def test_a_plan_for_rows_with_images_holds_the_vision_weights_and_text_rows_do_not(vlm, tmp_path):
    info = models.from_folder(vlm)
    report = {"usable": 40, "images": 40, "tokens": {"p95": 200, "mean": 150}}
    plan = planner.fit(info, 8 * 1024 ** 3, report, device="cpu")
    count = vision_plan.tower_params(vlm)
    assert plan.components["vision_weights"] == count * 4  # float32 on the CPU
    assert f"{count:,} vision tower" in plan.sources["vision_weights"]
    text = planner.fit(info, 8 * 1024 ** 3, {**report, "images": 0}, device="cpu")
    assert "vision_weights" not in text.components
    # a text model never gets a tower, whatever the report says
    llama = models.from_folder(make_model(tmp_path / "llama"))
    assert vision_plan.for_images(llama, report) is llama


def test_the_estimate_adds_exactly_the_tower_in_the_compute_dtype(vlm):
    info = vision_plan.for_images(models.from_folder(vlm), {"images": 3})
    base = memory.estimate(models.from_folder(vlm), Settings(), device="cuda")
    with_tower = memory.estimate(info, Settings(), device="cuda")
    assert with_tower.components["vision_weights"] == info.vision_params * 2  # bf16 on a GPU
    assert with_tower.peak_allocated - base.peak_allocated == info.vision_params * 2
