"""What the user has chosen so far (model, dataset, budget, plan), shared by every page.

The pages never talk to each other: they read and change the session, which emits a signal for
each kind of change. Core objects (ModelInfo, DatasetReport, Plan) are held as they are; the
session owns no business logic beyond asking the planner to re-fit.
"""
from __future__ import annotations

import copy
import importlib
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Signal

from studio.recipe import Recipe

GIB = 1024 ** 3
DEFAULT_BUDGET = 24 * GIB
# Recipe fields whose planner setting has another name (studio/planner.py SETTING_KEYS).
PLANNER_KEYS = {"quant.mode": "quant", "lora.dropout": "dropout"}


def core(module: str) -> Any | None:
    """Import a core module if it exists yet (the studio is assembled in parallel)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


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
        self.model_info: Any = None
        self.dataset_report: Any = None
        self.plan: Any = None
        self.budget = DEFAULT_BUDGET
        self.fixed: dict[str, Any] = {}   # "section.field" -> value the user pinned in the advanced panel
        self.preparing_model = False      # the demo model is being converted by a subprocess

    # -- choices ------------------------------------------------------------------------------
    def set_model(self, name_or_path: str, info: Any) -> None:
        self.recipe.model.name_or_path = str(name_or_path)
        self.model_info = info
        self.sig_model.emit(info)
        self.sig_recipe.emit()
        self.refit()

    def set_dataset(self, path: Path | str, report: Any) -> None:
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

    def pin(self, key: str, value: Any) -> None:
        """Fix one setting (``"train.seq_len"``); the planner re-fits everything else."""
        section, name = key.split(".", 1)
        setattr(getattr(self.recipe, section), name, value)
        self.fixed[key] = value
        self.sig_recipe.emit()
        self.refit()

    def unpin(self, key: str) -> None:
        self.fixed.pop(key, None)
        self.refit()

    # -- planning -----------------------------------------------------------------------------
    def fixed_for_planner(self) -> dict:
        """The pinned settings as the planner takes them: ``{"seq_len": 512, "rank": 8, ...}``."""
        return {PLANNER_KEYS.get(k, k.split(".", 1)[1]): v for k, v in self.fixed.items()}

    def refit(self) -> None:
        planner = core("studio.planner")
        if planner is None or self.model_info is None:
            return
        try:
            plan = planner.fit(self.model_info, self.budget, dataset_report=self.dataset_report,
                               fixed=self.fixed_for_planner())
        except Exception as e:  # the planner's own errors are user-facing messages
            self.plan = None
            self.sig_plan_error.emit(str(e))
            self.sig_plan.emit(None)
            return
        self.plan = plan
        self.sig_plan.emit(plan)

    def resolved_recipe(self) -> Recipe:
        """The recipe a run would start with: the plan applied, then the user's pins on top."""
        recipe = copy.deepcopy(self.recipe)
        if self.plan is not None and hasattr(self.plan, "apply"):
            applied = self.plan.apply(recipe)
            recipe = applied if isinstance(applied, Recipe) else recipe
        for key, value in self.fixed.items():
            section, name = key.split(".", 1)
            setattr(getattr(recipe, section), name, value)
        return recipe

    def plan_dict(self) -> dict | None:
        if self.plan is not None and hasattr(self.plan, "to_dict"):
            return self.plan.to_dict()
        return None
