"""studio.image_tokens against transformers' own image processors: the planner's image tokens are the model's."""
from __future__ import annotations

import json
import random

import pytest

from studio.image_tokens import ImageTokens, bounded

SIZES = [(1, 1), (28, 28), (640, 480), (480, 640), (1920, 1080), (37, 2900), (3000, 3000), (123, 77), (4032, 3024),
         (300, 5000), (8000, 60)]
random.seed(7)
SIZES += [(random.randint(1, 5000), random.randint(1, 5000)) for _ in range(40)]


def _folder(tmp_path, config: dict, pre: dict | None = None, proc: dict | None = None):
    (tmp_path / "config.json").write_text(json.dumps(config))
    if pre is not None:
        (tmp_path / "preprocessor_config.json").write_text(json.dumps(pre))
    if proc is not None:
        (tmp_path / "processor_config.json").write_text(json.dumps(proc))
    return tmp_path


def _fits(w, h):
    return max(w, h) / min(w, h) <= 200


@pytest.mark.parametrize("model_type,patch", [("qwen2_vl", 14), ("qwen2_5_vl", 14), ("qwen3_vl", 16)])
def test_qwen_counts_are_the_image_processors(tmp_path, model_type, patch):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    pre = {"patch_size": patch, "merge_size": 2, "temporal_patch_size": 2,
           "size": {"shortest_edge": 64 * 64, "longest_edge": 1280 * patch * patch * 4}}
    rule = ImageTokens.from_folder(_folder(tmp_path, {"model_type": model_type, "vision_config": {}}, pre))
    ip = Qwen2VLImageProcessorPil(**pre)
    checked = 0
    for w, h in SIZES:
        if not _fits(w, h):
            with pytest.raises(ValueError, match="aspect ratio"):
                rule.count(w, h)
            continue
        assert rule.count(w, h) == ip.get_number_of_image_patches(h, w, {}) // 4, (w, h)
        checked += 1
    assert checked > 40


def test_qwen_reads_the_pixel_bounds_a_checkpoint_saves(tmp_path):
    """A checkpoint's max_pixels caps the count; data.max_pixels caps it further, before the processor."""
    pre = {"patch_size": 14, "merge_size": 2, "min_pixels": 3136, "max_pixels": 28 * 28 * 64}
    folder = _folder(tmp_path, {"model_type": "qwen2_vl"}, pre)
    assert ImageTokens.from_folder(folder).count(4000, 3000) <= 64
    assert ImageTokens.from_folder(folder).count(4000, 3000) >= 48
    small = ImageTokens.from_folder(folder, max_pixels=28 * 28 * 16)
    assert small.count(4000, 3000) <= 16 and small.count(4000, 3000) > 0


def test_gemma3_and_llava_are_one_count_per_image(tmp_path):
    (tmp_path / "g").mkdir()
    g = ImageTokens.from_folder(_folder(tmp_path / "g", {"model_type": "gemma3", "mm_tokens_per_image": 256},
                                        {}, {"image_seq_length": 256}))
    assert {g.count(w, h) for w, h in SIZES} == {256}
    (tmp_path / "l").mkdir()
    llava = ImageTokens.from_folder(_folder(tmp_path / "l", {"model_type": "llava", "vision_config":
                                                             {"image_size": 336, "patch_size": 14}},
                                            {"crop_size": {"height": 336, "width": 336}}, {"patch_size": 14}))
    assert llava.count(640, 480) == 24 * 24 - 1  # the CLS token is dropped under the default strategy


def test_gemma4_counts_are_the_image_processors(tmp_path):
    from transformers.models.gemma4.image_processing_pil_gemma4 import get_aspect_ratio_preserving_size

    rule = ImageTokens.from_folder(_folder(tmp_path, {"model_type": "gemma4"},
                                           {"patch_size": 16, "pooling_kernel_size": 3, "max_soft_tokens": 280}))
    for w, h in SIZES:
        try:
            th, tw = get_aspect_ratio_preserving_size(height=h, width=w, patch_size=16, max_patches=280 * 9,
                                                      pooling_kernel_size=3)
        except ValueError:
            with pytest.raises(ValueError):
                rule.count(w, h)
            continue
        assert rule.count(w, h) == (th // 16) * (tw // 16) // 9, (w, h)


def test_idefics3_counts_are_the_processors(tmp_path):
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

    pre = {"do_image_splitting": True, "size": {"longest_edge": 4 * 364}, "max_image_size": {"longest_edge": 364}}
    rule = ImageTokens.from_folder(_folder(tmp_path, {"model_type": "idefics3"}, pre, {"image_seq_len": 169}))
    ip = Idefics3ImageProcessorPil(**pre)
    rows_seen = set()
    for w, h in SIZES:
        _, rows, cols = ip.get_number_of_image_patches(h, w, {})
        rows_seen.add(rows)
        # Idefics3Processor._get_num_multimodal_tokens, with a tokenizer that merges "\n\n" into one token
        expected = 169 + 3 + rows * ((169 + 2) * cols + 1)
        assert rule.count(w, h) == expected, (w, h)
    assert len(rows_seen) > 2  # the split was exercised, not only the single view


def test_an_unknown_family_or_a_text_model_has_no_rule(tmp_path):
    assert ImageTokens.from_folder(_folder(tmp_path, {"model_type": "llama"})) is None


def test_bounded_keeps_the_aspect_ratio_and_never_grows():
    assert bounded(100, 50, None) == (100, 50)
    assert bounded(100, 50, 10_000) == (100, 50)
    w, h = bounded(4000, 3000, 1_000_000)
    assert w * h <= 1_000_000 and abs(w / h - 4 / 3) < 0.01 and w * h > 990_000
