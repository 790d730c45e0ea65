"""The worker's side of a run on several processes (torchrun): ranks, the process group, agreement.

torchrun puts RANK, LOCAL_RANK and WORLD_SIZE in each process's environment; without them the
worker is the only process (rank 0 of 1) and every function here is a no-op. Rank 0 alone writes
the run folder and the event stream; the others train and agree with it at fixed points:

- ``agree_flags``: stop/pause, decided once per optimizer step by an all-reduce (max), so every
  rank stops or pauses at the same step whichever rank the command or SIGTERM reached;
- ``all_finite``: the NaN check of each micro-step (min), so every rank raises together;
- ``gather``: per-rank memory figures to rank 0, which reports one line per GPU;
- ``broadcast``: rank 0's answer (the checkpoint to resume from, the staging folder) to all.
"""
from __future__ import annotations

import ctypes
import datetime
import os
import signal
import sys
from typing import Any

TIMEOUT_MIN = 60  # a collective waits this long for a slow rank (held-out answers run on rank 0 alone)


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def rank() -> int:
    return int(os.environ.get("RANK", "0") or 0)


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0") or 0)


def is_main() -> bool:
    return rank() == 0


def distributed() -> bool:
    return world_size() > 1


def die_with_parent() -> None:
    """Linux: the kernel kills this rank when its launcher (torchrun) dies, even by SIGKILL.

    torchrun starts each rank in a session of its own; without this a killed launcher would leave
    ranks holding GPU memory. If the launcher is already gone, leave at once.
    """
    if not sys.platform.startswith("linux") or not distributed():
        return
    parent = os.getppid()
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG = 1
    except OSError:
        return
    if os.getppid() != parent or parent == 1:
        os._exit(1)


def init() -> None:
    """Join the process group (gloo on the CPU, NCCL on GPUs) before anything needs it."""
    if not distributed():
        return
    import torch
    import torch.distributed as td

    if td.is_initialized():
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank())
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    td.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=TIMEOUT_MIN))


def _ready() -> bool:
    if not distributed():
        return False
    import torch.distributed as td

    return td.is_available() and td.is_initialized()


def _device() -> Any:
    import torch

    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


def barrier() -> None:
    if _ready():
        import torch.distributed as td

        td.barrier()


def agree_flags(*flags: bool) -> list[bool]:
    """Each flag true on any rank is true on every rank (one all-reduce of a few bytes)."""
    if not _ready():
        return [bool(f) for f in flags]
    import torch
    import torch.distributed as td

    t = torch.tensor([1.0 if f else 0.0 for f in flags], device=_device())
    td.all_reduce(t, op=td.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


def all_finite(value: float) -> bool:
    """Whether ``value`` is finite on every rank."""
    import math

    ok = math.isfinite(value)
    if not _ready():
        return ok
    import torch
    import torch.distributed as td

    t = torch.tensor([1.0 if ok else 0.0], device=_device())
    td.all_reduce(t, op=td.ReduceOp.MIN)
    return bool(t.item())


def gather(obj: Any) -> list[Any]:
    """Every rank's ``obj`` on rank 0 (other ranks get ``[]``); ``[obj]`` in a single process."""
    if not _ready():
        return [obj]
    import torch.distributed as td

    out: list[Any] | None = [None] * world_size() if is_main() else None
    td.gather_object(obj, out, dst=0)
    return out or []


def broadcast(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not _ready():
        return obj
    import torch.distributed as td

    box = [obj if is_main() else None]
    td.broadcast_object_list(box, src=0)
    return box[0]


def shutdown() -> None:
    if _ready():
        import torch.distributed as td

        try:
            td.destroy_process_group()
        except Exception:  # noqa: BLE001 - a peer already gone: nothing left to tear down
            pass
