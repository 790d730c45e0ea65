"""How many tokens an image becomes in a vision-language model's sequence, without torch or transformers.

The planner (in the window's process, which has neither) lengthens the sequences it plans for by the image
tokens of each row, and ``data inspect --model`` counts them per row. Each family's processor decides the
count from the image's size and its own settings (``preprocessor_config.json``, ``processor_config.json``,
``config.json``); the formulas here are those processors' rules, checked against transformers' own
``_get_num_multimodal_tokens`` by tests/test_image_tokens.py:

- Qwen2-VL, Qwen2.5-VL, Qwen3-VL, Qwen3.5: the image is resized to a multiple of ``patch_size * merge_size``
  within ``[min_pixels, max_pixels]`` keeping its aspect ratio; one token per ``merge_size**2`` patches.
- Gemma 3, LLaVA: every image is resized to one square; a fixed count (``mm_tokens_per_image``; LLaVA's patch
  grid, less the CLS token under the default feature strategy).
- Gemma 4: resized within ``max_soft_tokens`` pooled patches keeping the aspect ratio.
- Idefics3 / SmolVLM: split into tiles of ``max_image_size`` plus one global view, ``image_seq_len`` each,
  with the row and tile markers between them.

Before the processor, the studio bounds every image by ``data.max_pixels`` (``bounded``), and lowers a Qwen
processor's own ``max_pixels`` to it, the same way in training, in the Playground and here.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

QWEN_TYPES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe", "qwen3_5", "qwen3_5_moe")
IDEFICS_TYPES = ("idefics3", "smolvlm")
DEFAULT_MAX_PIXELS = 512 * 28 * 28  # data.max_pixels' default: 512 of Qwen2-VL's 28x28 tokens


def bounded(width: int, height: int, max_pixels: int | None) -> tuple[int, int]:
    """(width, height) scaled down, aspect ratio kept, so that width * height <= max_pixels (never up)."""
    if not max_pixels or width * height <= max_pixels:
        return width, height
    scale = math.sqrt(max_pixels / (width * height))
    return max(1, math.floor(width * scale)), max(1, math.floor(height * scale))


def _read(folder: Path, name: str) -> dict:
    try:
        data = json.loads((folder / name).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _int(value: Any, default: int) -> int:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 else default


def _qwen_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """Qwen2-VL's smart_resize: both sides a multiple of ``factor``, the area within [min_pixels, max_pixels]."""
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"an image of {width}x{height} pixels: the model's processor refuses an aspect ratio "
                         "over 200; crop it")
    h_bar, w_bar = round(height / factor) * factor, round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar, w_bar = math.ceil(height * beta / factor) * factor, math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def _gemma4_size(height: int, width: int, patch: int, max_patches: int, pool: int) -> tuple[int, int]:
    side = pool * patch
    factor = math.sqrt(max_patches * patch * patch / (height * width))
    th, tw = math.floor(factor * height / side) * side, math.floor(factor * width / side) * side
    longest = (max_patches // pool ** 2) * side
    if th == 0 and tw == 0:
        raise ValueError(f"an image of {width}x{height} pixels is too small for the model's processor")
    if th == 0:
        th, tw = side, min(math.floor(width / height) * side, longest)
    elif tw == 0:
        tw, th = side, min(math.floor(height / width) * side, longest)
    return th, tw


def _idefics_rows_cols(height: int, width: int, longest: int, tile: int) -> tuple[int, int]:
    """Idefics3's split: the image scaled so its longest side is ``longest`` (even sides), then cut in tiles."""
    ratio = width / height
    if width >= height:
        width, height = longest, int(longest / ratio)
        height += height % 2
    else:
        height, width = longest, int(longest * ratio)
        width += width % 2
    height, width = max(height, 1), max(width, 1)
    ratio = width / height
    if width >= height and width > 4096:
        width, height = 4096, max(1, int(4096 / ratio))
    elif height > width and height > 4096:
        height, width = 4096, max(1, int(4096 * ratio))
    rh, rw = math.ceil(height / tile) * tile, math.ceil(width / tile) * tile
    if rh > tile or rw > tile:
        return math.ceil(rh / tile), math.ceil(rw / tile)
    return 0, 0


@dataclass
class ImageTokens:
    """A model's rule for image tokens; ``count(width, height)`` gives the placeholder tokens one image becomes."""

    family: str
    rule: Callable[[int, int], int] = field(repr=False)
    max_pixels: int | None = None  # data.max_pixels: the studio's bound before the processor

    def count(self, width: int, height: int) -> int:
        w, h = bounded(int(width), int(height), self.max_pixels)
        return self.rule(w, h)

    @classmethod
    def from_folder(cls, folder: str | Path, max_pixels: int | None = None) -> "ImageTokens | None":
        """The rule of the checkpoint in ``folder``, or None when it reads no images or its family is not known."""
        folder = Path(folder)
        config = _read(folder, "config.json")
        pre = _read(folder, "preprocessor_config.json")
        proc = _read(folder, "processor_config.json")
        if isinstance(pre.get("image_processor"), dict):  # some processors nest it
            pre = pre["image_processor"]
        if isinstance(proc.get("image_processor"), dict):
            pre = {**proc["image_processor"], **pre}
        kind = str(config.get("model_type", ""))
        rule = _rule(kind, config, pre, proc, max_pixels)
        return None if rule is None else cls(kind, rule, max_pixels)


def _rule(kind: str, config: dict, pre: dict, proc: dict, max_pixels: int | None = None) -> Callable[[int, int], int] | None:
    vision = _dict(config.get("vision_config"))
    if kind in QWEN_TYPES:
        patch = _int(pre.get("patch_size"), _int(vision.get("patch_size"), 14))
        merge = _int(pre.get("merge_size"), _int(vision.get("spatial_merge_size"), 2))
        size = _dict(pre.get("size"))
        lo = _int(pre.get("min_pixels"), _int(size.get("shortest_edge"), 56 * 56))
        hi = _int(pre.get("max_pixels"), _int(size.get("longest_edge"), 28 * 28 * 1280))
        if max_pixels:  # the studio lowers the processor's own bound to data.max_pixels too (studio.vision)
            hi = min(hi, max_pixels)

        def qwen(w: int, h: int) -> int:
            rh, rw = _qwen_resize(h, w, patch * merge, lo, hi)
            return (rh // patch) * (rw // patch) // (merge * merge)
        return qwen
    if kind == "gemma3":
        fixed = _int(proc.get("image_seq_length"), _int(config.get("mm_tokens_per_image"), 256))
        return lambda w, h: fixed
    if kind == "gemma4":
        patch = _int(pre.get("patch_size"), 16)
        pool = _int(pre.get("pooling_kernel_size"), 3)
        soft = _int(pre.get("max_soft_tokens"), 280)

        def gemma4(w: int, h: int) -> int:
            th, tw = _gemma4_size(h, w, patch, soft * pool * pool, pool)
            return (th // patch) * (tw // patch) // (pool * pool)
        return gemma4
    if kind == "llava":
        crop = _dict(pre.get("crop_size"))
        side = _int(crop.get("height"), _int(vision.get("image_size"), 336))
        patch = _int(proc.get("patch_size"), _int(vision.get("patch_size"), 14))
        n = (side // patch) * (_int(crop.get("width"), side) // patch)
        n += _int(proc.get("num_additional_image_tokens"), 0)
        if str(proc.get("vision_feature_select_strategy", config.get("vision_feature_select_strategy", "default"))) \
                == "default":
            n -= 1
        return lambda w, h: n
    if kind in IDEFICS_TYPES:
        seq = _int(proc.get("image_seq_len"), 0)
        if not seq:
            side, patch = _int(vision.get("image_size"), 512), _int(vision.get("patch_size"), 16)
            scale = _int(config.get("scale_factor"), 2 if kind == "smolvlm" else 3)
            seq = int((side // patch) ** 2 / scale ** 2)
        split = bool(pre.get("do_image_splitting", True))
        longest = _int(_dict(pre.get("size")).get("longest_edge"), 4 * 364)
        tile = _int(_dict(pre.get("max_image_size")).get("longest_edge"), 364)

        def idefics(w: int, h: int) -> int:
            rows, cols = _idefics_rows_cols(h, w, longest, tile) if split else (0, 0)
            # <fake_token_around_image><global-img> seq <fake> = seq + 3; each tile adds its two markers, each row a
            # newline; the newline before the global view is counted as one token (tokenizers that keep "\n\n"
            # as two add one more, which the planner's margin covers)
            return seq + 3 + rows * ((seq + 2) * cols + 1)
        return idefics
    return None
