"""How a training run is launched: one worker process, or one per GPU under torchrun (torch-free).

A recipe with ``train.nproc`` > 1 (or several ``train.gpus``) runs the same worker,
``workers.train RUN_DIR``, under ``python -m torch.distributed.run``: torchrun starts one process
per GPU, gives each its rank in the environment (RANK, LOCAL_RANK, WORLD_SIZE) and ends them all
when one fails. Rank 0 alone writes the run folder (docs/multi-gpu.md).

Every caller (``lora-studio train``, the GUI's TrainController, resume, the cluster export) gets
its command line and environment from here, so a run starts the same way wherever it starts.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from studio import hardware, runs
from studio.procs import kill_tree, worker_argv, worker_env  # noqa: F401 - kill_tree: the launch's own stop
from studio.recipe import Recipe

TORCHRUN_MODULE = "torch.distributed.run"
WORKER_MODULE = "workers.train"


def processes(train: Any) -> int:
    """How many training processes a recipe's ``train`` section asks for."""
    gpus = gpu_list(getattr(train, "gpus", ""))
    return len(gpus) if gpus else max(1, int(getattr(train, "nproc", 1) or 1))


def gpu_list(text: str) -> list[int]:
    """``"0, 1"`` -> ``[0, 1]``; anything that is not a list of indices -> ``[]`` (validate() names it)."""
    parts = [p.strip() for p in str(text or "").split(",") if p.strip()]
    return [int(p) for p in parts] if parts and all(p.isdigit() for p in parts) else []


def _recipe(run_dir: Path) -> Any:
    effective = Path(run_dir) / "effective_recipe.json"  # the OOM ladder's settings win, as in the worker
    return Recipe.load(effective if effective.is_file() else Path(run_dir) / runs.RECIPE, [])


def torchrun_argv(nproc: int, worker_args: list[str], nnodes: int = 1, node_rank: str | None = None,
                  endpoint: str | None = None, run_id: str | None = None, python: str | None = None) -> list[str]:
    """``python -m torch.distributed.run ... -m workers.train ARGS``: one machine (standalone) or several.

    ``--max-restarts 0``: a failure of any rank ends every rank (the studio does not restart a
    failed group; ``--resume`` continues from the last checkpoint).
    """
    py = python or worker_argv(WORKER_MODULE)[0]
    argv = [py, "-m", TORCHRUN_MODULE, "--nproc-per-node", str(nproc), "--max-restarts", "0"]
    if nnodes == 1 and endpoint is None:
        argv += ["--standalone", "--nnodes", "1"]
    else:
        argv += ["--nnodes", str(nnodes), "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint or "localhost:29400",
                 "--rdzv-id", run_id or "lora-studio"]
        if node_rank is not None:
            argv += ["--node-rank", node_rank]
    return argv + ["-m", WORKER_MODULE, *worker_args]


def train_argv(run_dir: Path, *args: str) -> list[str]:
    """The command line that trains ``run_dir``: the worker itself, or torchrun around it."""
    run_dir = Path(run_dir)
    n = processes(_recipe(run_dir).train)
    if n <= 1:
        return worker_argv(WORKER_MODULE, str(run_dir), *args)
    return torchrun_argv(n, [str(run_dir), *[str(a) for a in args]])


def train_env(run_dir: Path, base: dict | None = None) -> dict:
    """The worker's environment; ``CUDA_VISIBLE_DEVICES`` names the GPUs the recipe picked."""
    env = worker_env(base)
    gpus = gpu_list(_recipe(Path(run_dir)).train.gpus)
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in gpus)
    return env


def unsupported(train: Any, gpus: list | None = None, platform: str | None = None) -> str | None:
    """Why this machine cannot run ``train``'s processes, in words with what works instead; None when it can.

    Windows has no NCCL (PyTorch's multi-GPU backend there is gloo, which is slow and does not
    work with FSDP on GPUs); mixed GPU models make DDP wait for the slowest card and FSDP split
    memory evenly; more processes than GPUs cannot each have one.
    """
    n = processes(train)
    if n <= 1:
        return None
    platform = platform or sys.platform
    if platform.startswith("win"):
        return ("training on several GPUs needs NCCL, which PyTorch does not ship for Windows: train on one GPU "
                "(train.nproc 1), or run the same recipe under Linux or WSL2, or on a cluster "
                "('lora-studio cluster export')")
    if gpus is None:
        gpus = list(hardware.detect_gpus())
    if not gpus:
        return None  # the CPU: torchrun with the gloo backend (slow, but the same code; tests use it)
    picked = gpu_list(getattr(train, "gpus", "")) or list(range(n))
    missing = [i for i in picked if i >= len(gpus)]
    if missing or len(picked) > len(gpus):
        return (f"the recipe asks for {n} GPUs ({', '.join(map(str, picked))}) and this machine has "
                f"{len(gpus)}: set train.nproc {len(gpus)} or pick GPUs from 0 to {len(gpus) - 1}")
    names = {gpus[i].name for i in picked}
    if len(names) > 1:
        return (f"the picked GPUs are different models ({', '.join(sorted(names))}): the processes would wait for "
                "the slowest card and the planner cannot size one batch for all; pick GPUs of one model with "
                "train.gpus, or train on the largest one alone")
    return None
