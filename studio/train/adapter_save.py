"""The run's final adapter on disk: written whole or not at all, its config naming the local base.

One process writes the PEFT model's adapter into a temporary folder that is renamed into place;
under FSDP every rank takes part in gathering the sharded weights (the Trainer's ``save_model``)
and rank 0 writes them. A write that fails (a full disk) leaves the previous adapter and the last
checkpoint as they were and becomes ``AdapterWriteError``, which says so.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from studio import runs
from studio.events import LOG, Emitter
from studio.fsutil import atomic_dir, atomic_write_json, is_write_error, read_json, replace
from studio.train import dist
from studio.train.errors import AdapterWriteError


def save_adapter(model: Any, trainer: Any, run_dir: Path, base: Path, em: Emitter, sharded: bool) -> Path:
    """Check the adapter is finite, write ``run_dir/adapter`` (every rank calls this), and say where."""
    from studio.train.trainer import check_finite_adapter

    final = run_dir / runs.ADAPTER
    step = trainer.state.global_step if trainer is not None else 0
    check_finite_adapter(model, run_dir, step, "final adapter")
    if sharded:
        return _save_sharded(trainer, final, base, step, em)
    if not dist.is_main():
        return final
    try:
        with atomic_dir(final, overwrite=True) as tmp:
            model.save_pretrained(str(tmp), safe_serialization=True)
            _name_base(tmp, base)
    except Exception as exc:  # OSError, or safetensors' own SafetensorError for a full disk
        if not is_write_error(exc):
            raise
        raise AdapterWriteError(final, run_dir, exc) from exc
    _saved(final, step, em)
    return final


def _save_sharded(trainer: Any, final: Path, base: Path, step: int, em: Emitter) -> Path:
    """FSDP: every rank takes part in gathering the adapter's full state; rank 0 writes it."""
    import torch.distributed as td

    tmp = dist.broadcast(str(final.with_name(f".{final.name}.tmp-{os.getpid()}")))
    trainer.save_model(tmp)  # the Trainer gathers the sharded LoRA weights (all ranks), rank 0 saves
    td.barrier()
    if dist.is_main():
        for extra in ("training_args.bin", "README.md"):  # a pickle has no place in an adapter folder
            (Path(tmp) / extra).unlink(missing_ok=True)
        _name_base(Path(tmp), base)
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        if final.exists():
            replace(final, old)
        replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
        _saved(final, step, em)
    td.barrier()
    return final


def _name_base(folder: Path, base: Path) -> None:
    """adapter_config.json names the local base folder the adapter was trained on (export and chat read it)."""
    cfg_path = folder / "adapter_config.json"
    cfg = read_json(cfg_path, default={})
    cfg["base_model_name_or_path"] = str(base)
    atomic_write_json(cfg_path, cfg)


def _saved(final: Path, step: int, em: Emitter) -> None:
    runs.write_state(final.parent, adapter_step=step)  # export.json records which step it exported
    em.emit(LOG, message=f"adapter saved to {final}", path=str(final), step=step)
