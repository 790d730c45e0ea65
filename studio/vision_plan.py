"""What an image run adds to a plan: the vision tower and projector beside the language model.

Torch-free (the planner runs in the window's process). A run is an image run when its rows carry images (the
dataset report's ``images``) and its base reads them (``config.json`` with a ``vision_config``). The tower's
parameters come from the checkpoint's safetensors headers (every tensor outside the language model, as
``studio.multimodal.to_text`` names them), or, for a catalog model not on disk, from the catalog's count.
The image tokens lengthen the rows themselves: ``data inspect --model`` counts them into each row's tokens
(``studio.image_tokens``), so the planner's 95th-percentile length already holds them.
"""
from __future__ import annotations

import dataclasses
from math import prod
from pathlib import Path
from typing import Any

from studio import multimodal
from studio.models import ModelInfo


def dataset_images(dataset_report: Any) -> int:
    """How many images the usable rows carry (0 for text data or no report)."""
    value = dataset_report.get("images") if isinstance(dataset_report, dict) else getattr(dataset_report, "images", 0)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def reads_images(folder: str | Path) -> bool:
    """The checkpoint in ``folder`` has a vision tower (``vision_config`` in its config.json)."""
    return isinstance(multimodal.folder_config(folder).get("vision_config"), dict)


def tower_params(folder: str | Path) -> int:
    """Parameters of the checkpoint's vision tower and projector, from its safetensors headers (no data read)."""
    from studio.safetensors_io import model_tensors

    return sum(prod(m.shape) for m in model_tensors(Path(folder)) if multimodal.to_text(m.name) is None)


def _catalog_tower(info: ModelInfo) -> int:
    from studio.models import find_catalog

    entry = find_catalog(info.name)
    return entry.tower_params if entry is not None else 0


def for_images(info: ModelInfo, dataset_report: Any) -> ModelInfo:
    """``info`` as an image run loads it (its tower counted in ``vision_params``), or ``info`` unchanged."""
    if info.vision_params or not dataset_images(dataset_report):
        return info
    if info.path and Path(info.path).is_dir():
        count = tower_params(info.path) if reads_images(info.path) else 0
    else:
        count = _catalog_tower(info)
    return dataclasses.replace(info, vision_params=count) if count else info
