"""An image run's plan counts the vision tower the worker loads beside the language model."""
from __future__ import annotations

import pytest
from tiny import make_model, make_vlm

from studio import memory, models, planner, vision_plan
from studio.settings import Settings


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


def test_data_inspect_with_a_vision_model_counts_each_rows_image_tokens_into_its_length(vlm, tmp_path):
    """The tiny Qwen2-VL's processor allows 56x56 pixels: a 40x30 image is one 28x28 cell (1 token), a 200x100 one
    is 4 cells (2x2 after smart_resize within 3136 pixels, 1 token each); a text row gets none."""
    import json

    from PIL import Image

    from studio.data import inspect
    from studio.data.tokens import LengthCollector
    from studio.image_tokens import ImageTokens

    Image.new("RGB", (40, 30), "red").save(tmp_path / "small.png")
    Image.new("RGB", (200, 100), "blue").save(tmp_path / "wide.png")
    rows = [{"messages": [{"role": "user", "content": [{"type": "image", "image": "small.png"},
                                                       {"type": "text", "text": "What colour?"}]},
                          {"role": "assistant", "content": "Red."}]},
            {"messages": [{"role": "user", "content": [{"type": "image", "image": "wide.png"},
                                                       {"type": "image", "image": "small.png"},
                                                       {"type": "text", "text": "Which is wider?"}]},
                          {"role": "assistant", "content": "The first."}]},
            {"messages": [{"role": "user", "content": "No picture here."}, {"role": "assistant", "content": "Fine."}]}]
    path = tmp_path / "pictures.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    rule = ImageTokens.from_folder(vlm, max_pixels=401408)
    per_row = [rule.count(40, 30), rule.count(200, 100) + rule.count(40, 30)]
    assert per_row[0] > 0 and per_row[1] > per_row[0]
    report = inspect(path, tokenizer=str(vlm), workers=1)
    assert report.images == 3
    assert report.image_tokens == {"rows": 2, "min": per_row[0], "p50": per_row[1], "max": per_row[1],
                                   "total": sum(per_row)}
    # the lengths are the text's tokens plus the images': the same rows counted by a collector that knows no rule
    from studio.data import load_examples
    from studio.data.tokens import load_tokenizer

    examples, _ = load_examples(path)
    tok = load_tokenizer(str(vlm))
    counted, text_only = LengthCollector(tok, max_pixels=401408), LengthCollector(tok)
    text_only._rule = False
    for i, ex in enumerate(examples):
        counted.add(ex, i + 1, i + 1)
        text_only.add(ex, i + 1, i + 1)
    counted.flush()
    text_only.flush()
    assert [a - b for a, b in zip(counted.lengths, text_only.lengths)] == [*per_row, 0]
    assert report.tokens.max == max(counted.lengths)


def test_the_loss_mask_view_shows_each_image_as_what_the_processor_puts_there(vlm, tmp_path):
    from PIL import Image

    from studio.data.tokens import load_tokenizer, mask_view

    Image.new("RGB", (200, 100), "blue").save(tmp_path / "wide.png")
    example = {"messages": [{"role": "user", "content": "<image>Which colour?"},
                            {"role": "assistant", "content": "Blue."}],
               "images": [str(tmp_path / "wide.png")], "image_sizes": [[200, 100]]}
    view = mask_view(load_tokenizer(str(vlm)), example)
    shown = [t for t, _ in view if "[image" in t]
    from studio.image_tokens import ImageTokens

    assert shown == [f"[image 1, 200x100, {ImageTokens.from_folder(vlm).count(200, 100)} tokens]"]
    assert not any(trained for t, trained in view if "[image" in t)
    assert "".join(t for t, _ in view).count("<image>") == 0
    assert "".join(t for t, trained in view if trained).strip().startswith("Blue.")


def test_the_plan_says_what_an_image_run_adds_and_what_vision_lora_leaves_uncounted(vlm):
    info = models.from_folder(vlm)
    report = {"usable": 40, "images": 40, "tokens": {"p95": 200, "mean": 150}}
    plain = planner.fit(info, 8 * 1024 ** 3, report, device="cpu")
    assert any("vision tower and projector" in r and "vision_lora" not in r for r in plain.reasons)
    adapted = planner.fit(info, 8 * 1024 ** 3, report, {"train.vision_lora": True}, device="cpu")
    assert adapted.settings.vision_lora is True
    assert any("train.vision_lora also adapts the tower" in r and "not in this prediction" in r for r in adapted.reasons)
    text = planner.fit(info, 8 * 1024 ** 3, {**report, "images": 0}, device="cpu")
    assert not any("vision tower" in r for r in text.reasons)
