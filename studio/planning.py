"""Planning's one entry: ``plan_for(model, machine, fixed, dataset)``, shared by the CLI (`plan`,
`train`'s prediction, sweeps) and the window's Session, so each asks the same question the same way.

``Machine`` says what a run gets: the device, one budget per GPU (one budget on the CPU) and the
GPU's name for the speed estimate. ``budget_bytes`` is the one budget rule: the user's budget if
given, else on the CPU (no GPU, or the CPU asked for) the CPU budget of studio.hardware, else the first
GPU's total memory; planning for a GPU that is not in this computer falls back to hardware.DEFAULT_BUDGET.
``host_bytes`` is the host RAM activation offloading may fill: this computer's CPU budget when it plans for
its own GPU, what the user says (``--ram-gb``) for another, else unknown (the plan then says what it needs).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from studio import hardware, planner
from studio.hardware import GpuInfo
from studio.models import ModelInfo
from studio.planner import Plan


def budget_bytes(gpus: Sequence[GpuInfo], user_budget: int | None = None, device: str | None = None) -> int:
    """The one budget rule (see the module docstring); ``device`` defaults to the GPU when there is one."""
    if user_budget:
        return int(user_budget)
    if (device or ("cuda" if gpus else "cpu")) == "cpu":
        return hardware.cpu_budget_bytes()
    return int(gpus[0].total_bytes) if gpus else hardware.DEFAULT_BUDGET  # DEFAULT: a GPU that is not here


def host_budget(device: str, gpu_here: bool, user_bytes: int | None = None) -> int | None:
    """The host RAM activation offloading may fill (see the module docstring): what the user says, else this
    computer's CPU budget when it trains on its own GPU; None (not checked) for a GPU that is not here."""
    if device != "cuda":
        return None
    if user_bytes:
        return int(user_bytes)
    return hardware.cpu_budget_bytes() if gpu_here else None


@dataclass(frozen=True)
class Machine:
    """Where a run trains: ``budgets`` holds one budget per training process (one on the CPU)."""

    device: str  # "cuda" or "cpu" (the budget is then system RAM)
    budgets: tuple[int, ...]
    gpu_name: str = ""
    host_bytes: int | None = None  # host RAM activation offloading may fill (None: unknown, not checked)

    @classmethod
    def detect(cls, gpus: Sequence[GpuInfo] | None = None, budget: int | None = None, device: str | None = None,
               processes: int = 1, picked: Sequence[int] = ()) -> "Machine":
        """This computer (``gpus``: hardware.detect_gpus() when None) with ``processes`` GPUs of ``budget``
        each; without a budget, the ``picked`` GPUs' own totals (the first ``processes`` when none are picked),
        and on the CPU the one budget shared by the processes."""
        gpus = hardware.detect_gpus() if gpus is None else gpus
        device = device or ("cuda" if gpus else "cpu")
        one = budget_bytes(gpus, budget, device)
        n = max(1, processes)
        if budget or not gpus:
            budgets = [one] * n if budget or n == 1 else [one // n] * n
        else:
            budgets = [gpus[i].total_bytes for i in (list(picked) or range(n)) if i < len(gpus)] or [one]
        return cls(device, tuple(budgets), gpus[0].name if gpus else "", host_budget(device, bool(gpus)))


def plan_for(info: ModelInfo, machine: Machine, fixed: Mapping[str, Any] | None = None, dataset_report: Any = None,
             effective_batch: int = 16, steps: int | None = None, epochs: float = 1.0, examples: int | None = None,
             measure: bool = False, speed: bool = True) -> Plan:
    """The plan of ``info`` on ``machine``: the settings in ``fixed`` (recipe names) kept, the rest fitted
    (one GPU, DDP or FSDP over several), with its expected speed and duration.

    Raises ValueError (a user-facing message) for an unknown setting name.
    """
    plan = planner.fit_gpus(info, list(machine.budgets), dataset_report=dataset_report, fixed=dict(fixed or {}),
                            effective_batch=effective_batch, device=machine.device, host_limit=machine.host_bytes)
    if speed:
        planner.add_time_estimate(plan, info, gpu_name=machine.gpu_name, steps=steps, examples=examples,
                                  epochs=epochs,
                                  measure=measure, dataset_report=dataset_report)
    return plan
