"""Packing for SFT: the examples of a micro-batch in one sequence, no padding, attention kept per example.

transformers' ``DataCollatorWithFlattening`` concatenates the micro-batch and restarts
``position_ids`` at every example (the first label of each is -100, so no example is scored on
predicting the next one's first token). It sends no attention mask: flash_attention_2 reads the
restarts as varlen boundaries, and in transformers 5 sdpa and eager build a block-diagonal causal
mask from them (``masking_utils.find_packed_sequence_indices``) when no attention mask and no KV
cache are passed. That detection is per architecture code path, so before training we check it on
the model we loaded: two short sequences packed must give the logits they give apart; if they do
not, the run is refused (a leak across examples would train on the wrong context, silently).
"""
from __future__ import annotations

from typing import Any

from studio.train.loading import LoadError

TOLERANCE = 1e-3  # relative to the logits' scale: fp32 on the CPU agrees to ~1e-7, bf16 to ~1e-2 absolute


def collator() -> Any:
    from transformers import DataCollatorWithFlattening

    return DataCollatorWithFlattening(return_position_ids=True, separator_id=-100)


def leak(model: Any, vocab: int) -> float:
    """How much two packed sequences change each other's logits (0 when attention stays within each)."""
    import torch

    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(0)
    a = torch.randint(3, max(4, vocab), (7,), generator=gen).tolist()
    b = torch.randint(3, max(4, vocab), (5,), generator=gen).tolist()
    batch = collator()([{"input_ids": a}, {"input_ids": b}], return_tensors="pt")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            packed = model(input_ids=batch["input_ids"].to(device), position_ids=batch["position_ids"].to(device),
                           use_cache=False).logits[0].float()
            alone = torch.cat([model(input_ids=torch.tensor([x], device=device), use_cache=False).logits[0].float()
                               for x in (a, b)])
    finally:
        model.train(was_training)
    scale = float(alone.abs().max()) or 1.0
    return float((packed - alone).abs().max()) / scale


def check(model: Any, attn: str, vocab: int) -> None:
    """Refuse packing when this model's attention lets packed examples see each other."""
    if leak(model, vocab) > TOLERANCE:
        raise LoadError(f"train.packing: with attention '{attn}' this model lets packed examples attend to each "
                        "other (checked on two packed sequences), which would train on the wrong context. Turn "
                        "packing off (--no-packing), or on a GPU use train.attn 'flash_attention_2'")


def padding_saved(lengths: list[int], micro_batch: int) -> tuple[int, int]:
    """(padded tokens without packing, with packing) for micro-batches of ``micro_batch`` in this order."""
    padded = 0
    for i in range(0, len(lengths), micro_batch):
        chunk = lengths[i:i + micro_batch]
        padded += max(chunk) * len(chunk) - sum(chunk)
    return padded, 0
