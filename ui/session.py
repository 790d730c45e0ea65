"""What the user has chosen so far (model, dataset, budget, plan), shared by every page.

The pages never talk to each other: they read and change the session, which emits a signal for
each kind of change. Core objects (ModelInfo, DatasetReport, Plan) are held as they are; the
session owns no business logic beyond asking the planner to re-fit.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Signal

from studio.data.report import DatasetReport
from studio.hardware import DEFAULT_BUDGET
from studio.launch import processes
from studio.models import ModelInfo
from studio.planner import Plan
from studio.planning import Machine, host_budget, plan_for
from studio.recipe import Recipe, set_setting

GIB = 1024 ** 3


class Session(QObject):
    sig_model = Signal(object)     # ModelInfo or None
    sig_data = Signal(object)      # DatasetReport or None
    sig_budget = Signal(object)    # bytes (may exceed a C int)
    sig_plan = Signal(object)      # Plan or None
    sig_plan_error = Signal(str)
    sig_recipe = Signal()          # any recipe field changed
    sig_status = Signal(str)       # a line for the status bar

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.recipe = Recipe()
        self.recipe.model.name_or_path = ""
        self.model_info: ModelInfo | None = None
        self.dataset_report: DatasetReport | None = None
        self.plan: Plan | None = None
        self.budget = DEFAULT_BUDGET  # the slider's start until the Plan page detects the device
        self.device = "cuda"              # "cpu" when there is no NVIDIA GPU: the budget is then system RAM
        self.gpu_name = ""
        self.host_bytes: int | None = None  # host RAM activation offloading may fill: known for a GPU found here
        self.fixed: dict[str, Any] = {}   # "section.field" -> value the user pinned in the advanced panel
        self.preparing_model = False      # the demo model is being converted by a subprocess

    # -- choices ------------------------------------------------------------------------------
    def set_model(self, name_or_path: str, info: ModelInfo | None) -> None:
        self.recipe.model.name_or_path = str(name_or_path)
        self.model_info = info
        self.sig_model.emit(info)
        self.sig_recipe.emit()
        self.refit()

    def set_dataset(self, path: Path | str, report: DatasetReport | None) -> None:
        if self.recipe.name and self.recipe.data.path and Path(self.recipe.data.path) != Path(path):
            self.recipe.name = ""  # the demo's name described the demo data: the run is named after this file
        self.recipe.data.path = str(path)
        self.dataset_report = report
        self.sig_data.emit(report)
        self.sig_recipe.emit()
        self.refit()

    def set_budget(self, budget_bytes: int) -> None:
        if int(budget_bytes) == self.budget:
            return
        self.budget = int(budget_bytes)
        self.sig_budget.emit(self.budget)
        self.refit()

    def set_device(self, device: str, gpu_name: str = "") -> None:
        """Plan for the GPU or, without one, for the CPU (the plan page detects which). A GPU found here
        trains in this computer, so offloading may fill the RAM a CPU run could use (studio.planning.Machine)."""
        self.device, self.gpu_name = device, gpu_name
        self.host_bytes = host_budget(device, bool(gpu_name))
        self.refit()

    def use_recipe(self, recipe: Recipe, pin: dict | None = None) -> None:
        """Start from ``recipe`` (the demo's); the settings in ``pin`` stay as given while the rest are fitted."""
        self.recipe = copy.deepcopy(recipe)
        self.fixed.update(pin or {})
        self.sig_recipe.emit()
        self.refit()

    def pin(self, key: str, value: Any) -> None:
        """Fix one setting (``"train.seq_len"``); the planner re-fits everything else."""
        set_setting(self.recipe, key, value)
        self.fixed[key] = value
        self.sig_recipe.emit()
        self.refit()

    def unpin(self, key: str) -> None:
        self.fixed.pop(key, None)
        self.refit()

    # -- planning -----------------------------------------------------------------------------
    def refit(self) -> None:
        if self.model_info is None:
            return
        try:
            n = processes(self.recipe.train)  # several GPUs picked: one GPU, DDP or FSDP, per-GPU memory
            t = self.recipe.train
            machine = Machine(self.device, (self.budget,) * n, self.gpu_name, self.host_bytes)
            plan = plan_for(self.model_info, machine, self.fixed,
                            dataset_report=self.dataset_report, steps=t.max_steps if t.max_steps > 0 else None,
                            examples=getattr(self.dataset_report, "usable", None), epochs=t.epochs)
        except ValueError as e:  # the planner's own errors are user-facing messages
            self.plan = None
            self.sig_plan_error.emit(str(e))
            self.sig_plan.emit(None)
            return
        self.plan = plan
        self.sig_plan.emit(plan)

    def resolved_recipe(self) -> Recipe:
        """The recipe a run would start with: the plan applied, then the user's pins on top."""
        recipe = self.plan.apply(self.recipe) if self.plan is not None else copy.deepcopy(self.recipe)
        for key, value in self.fixed.items():
            set_setting(recipe, key, value)
        return recipe

    def plan_dict(self) -> dict | None:
        return self.plan.to_dict() if self.plan is not None else None
