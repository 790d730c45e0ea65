"""The validation loss's one loop: mean cross-entropy per label token over batches of the model's inputs.

``studio.evalreport.validation_loss`` feeds it padded text rows, ``studio.vision.validation_loss`` its collator's
batches with their pixels. torch is imported inside, so importing this module costs nothing.
"""
from __future__ import annotations

from typing import Any, Iterable


def summed_loss(model: Any, batches: Iterable[dict]) -> tuple[float | None, int]:
    """Mean cross-entropy per label token over ``batches`` (the model's inputs plus ``labels``; a vision run's
    carry their pixels), and the token count. Every label token counts once, whatever the batching."""
    import torch
    import torch.nn.functional as F

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for batch in batches:
            labels = batch.pop("labels")
            with torch.no_grad():
                logits = model(**{k: v.to(device) for k, v in batch.items()}).logits.float()
            logits = logits[:, -labels.shape[1]:]  # prompt tuning prepends its virtual tokens' logits: not the text's
            shift_logits = logits[:, :-1].reshape(-1, logits.shape[-1])
            shift_labels = labels[:, 1:].reshape(-1).to(device)
            total += float(F.cross_entropy(shift_logits, shift_labels, ignore_index=-100, reduction="sum"))
            count += int((shift_labels != -100).sum())
    finally:
        model.train(was_training)
    return (total / count if count else None), count
