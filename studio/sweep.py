"""Sweeps: one recipe, several LoRA ranks and learning rates, every variant checked to fit before any starts.

Each variant is a normal queued run (``studio.runqueue``) tagged with the sweep's id, so the Runs
page and ``lora-studio runs list --tag SWEEP`` show them together; ``ranked`` orders them by
validation loss.
"""
from __future__ import annotations

import copy
import datetime as _dt
import itertools
from pathlib import Path

from studio import models, planner, registry
from studio.errors import UserError
from studio.planning import Machine, plan_for
from studio.recipe import Recipe, bounds_text, default_of, in_bounds, setting_field


def parse_values(text: str, key: str) -> list:
    """``"8,16,32"`` as values of the recipe setting ``key`` (its type and bounds), duplicates dropped."""
    f = setting_field(key)
    meta, kind = f.metadata, type(default_of(f))
    out = []
    for part in (p.strip() for p in str(text).split(",")):
        if not part:
            continue
        try:
            value = kind(float(part)) if kind is int and float(part).is_integer() else kind(part)
        except ValueError:
            raise UserError(f"{key}: {part!r} is not a{'n integer' if kind is int else ' number'}") from None
        if bounds_text(meta) and not in_bounds(value, meta):
            raise UserError(f"{key}: {part} is out of range: it must be {bounds_text(meta)}")
        if value not in out:
            out.append(value)
    if not out:
        raise UserError(f"{key}: give at least one value, e.g. 8,16,32")
    return out


def variants(recipe: Recipe, ranks: list[int] | None = None, lrs: list[float] | None = None) -> list[Recipe]:
    """Every (rank, lr) combination of ``recipe``; alpha keeps the recipe's alpha/rank ratio."""
    ranks = ranks or [recipe.lora.rank]
    lrs = lrs or [recipe.train.lr]
    base = recipe.name or Path(str(recipe.model.name_or_path)).name
    ratio = recipe.lora.alpha / recipe.lora.rank
    out = []
    for rank, lr in itertools.product(ranks, lrs):
        r = copy.deepcopy(recipe)
        r.lora.rank, r.lora.alpha, r.train.lr = int(rank), max(1, round(ratio * rank)), float(lr)
        r.name = f"{base}-r{rank}" + (f"-lr{lr:g}" if len(lrs) > 1 else "")
        out.append(r)
    return out


def check_fits(recipes: list[Recipe], budget_bytes: int | None = None) -> list[dict]:
    """The planner's prediction for each variant exactly as set: ``{"name", "fits", "predicted_bytes",
    "budget_bytes", "plan"}``. Raises UserError when the model cannot be read."""

    machine = Machine.detect(budget=budget_bytes)
    budget = machine.budgets[0]
    out, infos = [], {}
    for r in recipes:
        name = str(r.model.name_or_path)
        if name not in infos:
            try:
                infos[name] = models.resolve(name)
            except ValueError as e:
                raise UserError(f"model.name_or_path: {e}") from None
        t = r.train
        plan = plan_for(infos[name], machine, planner.fixed_from_recipe(r),
                        effective_batch=t.micro_batch * t.grad_accum, speed=False)
        out.append({"name": r.name, "fits": bool(plan.fits), "budget_bytes": int(budget),
                    "predicted_bytes": int(plan.predicted.get("device_total_bytes") or 0),
                    "suggestion": plan.suggestion, "plan": plan.to_dict()})
    return out


def new_id() -> str:
    return "sweep-" + _dt.datetime.now().strftime("%Y%m%d-%H%M%S")


def ranked(sweep_id: str, runs_root: Path | None = None, skipped: list | None = None) -> list[dict]:
    """The sweep's runs as ``registry.row`` dicts, lowest validation loss first (runs without one last).

    Runs with damaged files are left out and named in ``skipped`` (``registry.rows``)."""
    rows = registry.rows(runs_root, skipped)
    rows = [r for r in rows if sweep_id in r["tags"]]
    return sorted(rows, key=lambda r: (registry.rank_key(r, "val_loss"), r["id"]))


def summary_text(checks: list[dict]) -> str:
    """One line per variant: predicted memory against the budget."""
    lines = []
    for c in checks:
        verdict = "fits" if c["fits"] else "does NOT fit"
        lines.append(f"  {c['name']}: {c['predicted_bytes'] / 2**30:.2f} GiB predicted of "
                     f"{c['budget_bytes'] / 2**30:.2f} GiB: {verdict}"
                     + ("" if c["fits"] or not c.get("suggestion") else f" ({c['suggestion']})"))
    return "\n".join(lines)
