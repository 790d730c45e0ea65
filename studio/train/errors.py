"""Failures the worker explains itself: each carries its protocol error kind, a hint and details."""
from __future__ import annotations

import shutil
from pathlib import Path

from studio import checkpoint
from studio.errors import Fault as TrainingFault
from studio.fsutil import disk_full


class NonFiniteLoss(TrainingFault):
    kind = "nan"

    def __init__(self, step: int, value: float, last_good: Path | None) -> None:
        where = f"the last good checkpoint is {last_good}" if last_good else "no checkpoint was written yet"
        super().__init__(
            f"the loss became {value} at step {step}; training stopped before that step changed the adapter "
            f"or the optimizer, and {where}",
            "lower train.lr (halve it) or keep train.max_grad_norm at 1.0, and check the dataset for empty or "
            "extreme examples; then start a new run",
            step=step, value=str(value), last_good_checkpoint=str(last_good) if last_good else None)


class NonFiniteWeights(TrainingFault):
    """The adapter holds NaN or infinite values: never saved as a checkpoint or as the final adapter."""

    kind = "nan"

    def __init__(self, step: int, names: list[str], last_good: Path | None, what: str) -> None:
        where = f"the last good checkpoint is {last_good}" if last_good else "no checkpoint was written yet"
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        super().__init__(
            f"the adapter's weights became NaN or infinite by step {step} ({shown}); the {what} was not written, "
            f"and {where}",
            "lower train.lr (halve it), keep train.max_grad_norm at 1.0 and train.weight_decay small (0 to 0.1); "
            "then start a new run",
            step=step, tensors=names[:20], last_good_checkpoint=str(last_good) if last_good else None)


class CheckpointWriteError(TrainingFault):
    kind = "io"

    def __init__(self, step: int, run_dir: Path, exc: BaseException) -> None:
        previous = checkpoint.list_checkpoints(run_dir)
        kept = f"the previous checkpoint {previous[0].path} is intact" if previous else "no earlier checkpoint exists"
        what = _why_write_failed(exc, checkpoint.root(run_dir), checkpoint.size_bytes(previous[0].path) if previous else 0)
        super().__init__(
            f"could not write the checkpoint of step {step} in {checkpoint.root(run_dir)}: {what}. Nothing partial "
            f"was kept; {kept}",
            f"free disk space on {checkpoint.root(run_dir)} (or fix the error above), then run "
            f"'lora-studio resume {run_dir}'",
            step=step, errno=getattr(exc, "errno", None),
            last_good_checkpoint=str(previous[0].path) if previous else None)


class AdapterWriteError(TrainingFault):
    kind = "io"

    def __init__(self, final: Path, run_dir: Path, exc: BaseException) -> None:
        previous = checkpoint.list_checkpoints(run_dir)
        kept = f"the last checkpoint {previous[0].path} is intact" if previous else "no checkpoint exists"
        what = "the disk is full" if disk_full(exc) else f"the write failed ({getattr(exc, 'strerror', None) or exc})"
        super().__init__(f"could not write the final adapter {final}: {what}. Nothing partial was kept; {kept}",
                         f"free disk space on {final.parent} (or fix the error above), then run "
                         f"'lora-studio resume {run_dir}'", last_good_checkpoint=str(previous[0].path) if previous else None)


def _why_write_failed(exc: BaseException, folder: Path, needed: int) -> str:
    """'the disk is full' when it is (torch.save says so only as 'unexpected pos'), else the error itself."""
    if disk_full(exc):
        return "the disk is full"
    free = shutil.disk_usage(folder).free if folder.exists() else None
    if free is not None and needed and free < needed * 1.5:
        return f"the disk is full ({free / 2**20:.1f} MiB free; a checkpoint needs about {needed / 2**20:.1f} MiB)"
    return f"the write failed ({getattr(exc, 'strerror', None) or exc})"


class OutOfMemory(TrainingFault):
    kind = "oom"
