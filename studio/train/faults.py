"""TEST-ONLY fault injection for tests/faults/: read once from ``LORA_STUDIO_TEST_FAULT``.

A CPU has no out-of-memory error to provoke and a test disk is never full, so the fault tests
ask the worker to raise the real exception at a chosen point. Syntax: ``KIND@WHERE[xN]`` joined
by commas, e.g. ``oom@step=3x2`` (out of memory on the first two attempts at step 3),
``nan@step=5``, ``enospc@save=4``, ``oom@load``.

The training code knows nothing of this: the worker passes its trainer class and its model loader
through ``hook()`` once, which hands them back unchanged unless the variable is set (always,
outside tests), and otherwise wraps them so the faults happen where the real ones would.
"""
from __future__ import annotations

import errno
import os
from typing import Any, Callable

ENV = "LORA_STUDIO_TEST_FAULT"


def _parse(spec: str) -> dict[tuple[str, str], int]:
    out: dict[tuple[str, str], int] = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        kind, _, where = item.partition("@")
        where, _, times = where.partition("x")
        out[(kind, where)] = int(times or 1)
    return out


_pending = _parse(os.environ.get(ENV, ""))


def due(kind: str, where: str) -> bool:
    """True (once per remaining count) when a test asked for ``kind`` at ``where``."""
    left = _pending.get((kind, where), 0)
    if left <= 0:
        return False
    _pending[(kind, where)] = left - 1
    return True


def hook(trainer_cls: type, load_model: Callable[..., Any]) -> tuple[type, Callable[..., Any]]:
    """The trainer class and model loader to use: themselves, or with the asked-for faults built in."""
    if not _pending:
        return trainer_cls, load_model
    return _faulty_trainer(trainer_cls), _faulty_load(load_model)


def _faulty_load(load_model: Callable[..., Any]) -> Callable[..., Any]:
    def load(*args: Any, **kwargs: Any) -> Any:
        if due("oom", "load"):
            raise RuntimeError(f"CUDA out of memory (injected by {ENV} at load)")
        return load_model(*args, **kwargs)
    return load


def _faulty_trainer(base: type) -> type:
    import torch

    class FaultyTrainer(base):
        def compute_loss(self, model, inputs, *args: Any, **kwargs: Any):
            out = super().compute_loss(model, inputs, *args, **kwargs)
            if due("nan", f"step={self.state.global_step + 1}"):
                out = (out[0] * float("nan"), *out[1:]) if isinstance(out, tuple) else out * float("nan")
            return out

        def training_step(self, model, inputs, num_items_in_batch=None):
            step = self.state.global_step + 1
            if due("oom", f"step={step}"):  # a CPU has no out-of-memory error to provoke
                self.phase = "step"
                raise torch.OutOfMemoryError(f"CUDA out of memory (injected by {ENV} at step {step})")
            loss = super().training_step(model, inputs, num_items_in_batch)
            if due("nanweights", f"step={step}"):  # weights poisoned while the loss stays finite
                with torch.no_grad():
                    next(p for p in model.parameters() if p.requires_grad).fill_(float("nan"))
            return loss

        def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
            if due("enospc", f"save={self.state.global_step}"):  # a disk that fills mid-write
                with open(os.path.join(output_dir, "optimizer.pt"), "wb") as fh:
                    fh.write(b"\0" * 1000)
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.path.join(output_dir, "optimizer.pt"))
            super()._save_optimizer_and_scheduler(output_dir)

    return FaultyTrainer
