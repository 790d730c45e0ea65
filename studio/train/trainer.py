"""The Trainer with the studio's safety layer around its own checkpoint and resume machinery.

- ``_save_checkpoint``: the Trainer writes its usual checkpoint into a staging folder; we add a
  manifest, fsync and rename it to ``checkpoints/step-N`` (studio.checkpoint), keep the
  last K and emit a ``checkpoint`` event. A failed write leaves nothing under a final name.
- ``training_step``: a loss that is NaN or infinite stops the run before the optimizer applies
  that step, so no checkpoint ever holds the bad step's optimizer state.
- ``phase`` says where an out-of-memory error happened (step, eval, save) for recovery.py.
"""
from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback

from studio import checkpoint
from studio.events import CHECKPOINT, Emitter
from studio.fsutil import is_write_error
from studio.train import dist, long_context, peft_methods, recovery
from studio.train.errors import CheckpointWriteError, NonFiniteLoss, NonFiniteWeights


def nonfinite_params(model: Any) -> list[str]:
    """Names of trainable (adapter) parameters holding NaN or inf; one fused reduction per tensor."""
    return [name for name, p in model.named_parameters()
            if p.requires_grad and p.numel() and not bool(torch.isfinite(p.detach()).all())]


def check_finite_adapter(model: Any, run_dir: Path, step: int, what: str) -> None:
    """Refuse to write a checkpoint or adapter whose weights are not finite (a loss can stay finite a step longer)."""
    bad = nonfinite_params(model)
    if bad:
        last = checkpoint.latest_good(run_dir)
        raise NonFiniteWeights(step, bad, last.path if last else None, what)


class SaveOnStop(TrainerCallback):
    """A stop request (command or SIGTERM) ends the run with a checkpoint, so resume loses nothing."""

    def __init__(self, control: Any) -> None:
        self.ctl = control

    def on_step_end(self, args, state, control, **kw):
        agreed = getattr(self.ctl, "agreed_stop", None)  # several processes: what every rank agreed on
        if agreed if agreed is not None else self.ctl.stop.is_set():
            control.should_save = True
            control.should_training_stop = True
        return control


class StudioTrainer(Trainer):
    def __init__(self, *args: Any, run_dir: Path, emitter: Emitter, keep: int = 2,
                 settings: dict | None = None, fresh_optimizer: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._offload: Any = None
        self.run_dir = Path(run_dir)
        self.em = emitter
        self.keep = keep
        self.settings = settings or {}
        self.fresh_optimizer = fresh_optimizer  # the optimizer type changed (OOM ladder): do not load its state
        self.phase = "step"

    # -- the loss (studio.train.long_context) -------------------------------------------------
    def compute_loss(self, model, inputs, *args: Any, **kwargs: Any):
        if "labels" in inputs and long_context.has_tiled_head(self.model):
            inputs = {**inputs, "tiled_loss": True}  # through the tiled output layer: no full logits
        return super().compute_loss(model, inputs, *args, **kwargs)

    def _offload_context(self) -> Any:
        """TRL's activation offloading around the step when the loader turned it on (GPU, checkpointing)."""
        if not long_context.applied(self.model).offload:
            return contextlib.nullcontext()
        if self._offload is None:
            self._offload = long_context.offload_context(self.model)
        return self._offload

    # -- NaN / inf ------------------------------------------------------------------------
    def training_step(self, model, inputs, num_items_in_batch=None):
        self.phase = "step"
        step = self.state.global_step + 1
        with self._offload_context():
            loss = super().training_step(model, inputs, num_items_in_batch)
        value = float(loss.detach().float().item())
        if not dist.all_finite(value):  # several processes: every rank stops at the same micro-step
            last = checkpoint.latest_good(self.run_dir)
            raise NonFiniteLoss(step, value, last.path if last else None)
        return loss

    def evaluate(self, *args: Any, **kwargs: Any):
        previous, self.phase = self.phase, "eval"
        try:
            return super().evaluate(*args, **kwargs)
        finally:
            self.phase = previous

    # -- checkpoints ----------------------------------------------------------------------
    def _save_checkpoint(self, model, trial) -> None:
        self.phase = "save"
        step = self.state.global_step
        check_finite_adapter(model, self.run_dir, step, f"checkpoint of step {step}")
        # One staging folder for every rank (each writes its own RNG state there); rank 0 commits it.
        staging = Path(dist.broadcast(str(checkpoint.staging_dir(self.run_dir, step)) if dist.is_main() else None))
        real_output = self.args.output_dir
        try:
            self.args.output_dir = str(staging)  # the Trainer writes staging/checkpoint-N
            with peft_methods.full_rank_checkpoint(self.model):
                super()._save_checkpoint(model, trial)
            peft_methods.save_method_state(self.model, staging / f"checkpoint-{step}")
            self.args.output_dir = real_output
            dist.barrier()
            if not dist.is_main():
                dist.barrier()  # rank 0 commits; the next save or a resume sees the final folder
                self.phase = "step"
                return
            final = checkpoint.commit(staging / f"checkpoint-{step}", self.run_dir, step, self.settings)
        except Exception as exc:  # torch.save: RuntimeError; safetensors: SafetensorError; else OSError
            if recovery.is_oom(exc) or not (isinstance(exc, RuntimeError) or is_write_error(exc)):
                raise
            raise CheckpointWriteError(step, self.run_dir, exc) from exc
        finally:
            self.args.output_dir = real_output
            if dist.is_main():
                shutil.rmtree(staging, ignore_errors=True)
        deleted = checkpoint.prune(self.run_dir, self.keep)
        kept = [c.step for c in checkpoint.list_checkpoints(self.run_dir)]
        self.em.emit(CHECKPOINT, step=step, path=str(final), bytes=checkpoint.size_bytes(final),
                     kept=kept, deleted=deleted)
        dist.barrier()
        self.phase = "step"

    def _load_optimizer_and_scheduler(self, ck: str | None) -> None:
        if ck is not None:
            peft_methods.load_method_state(self.model, Path(ck))  # AdaLoRA's allocator, with the optimizer
        if ck is None or not self.fresh_optimizer:
            return super()._load_optimizer_and_scheduler(ck)
        # A different optimizer cannot take the old one's state; the schedule continues where it was.
        self.lr_scheduler.load_state_dict(torch.load(os.path.join(ck, "scheduler.pt"), weights_only=True))
