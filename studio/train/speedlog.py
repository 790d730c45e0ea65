"""The run's measured step time against the time estimate, recorded for the next estimate.

At the end of training the worker compares the median seconds per optimizer step it measured (the
first step, which warms up, and steps that also evaluated or saved are left out: only the time from
a step's start to its end counts) with ``studio.speed``'s uncalibrated prediction for exactly these
settings and this dataset's example lengths, and keeps the pair in the data folder
(``speed.record_run``); the next plan's estimate is scaled by the recent ratios (``speed.calibration``).
A failure here never touches the run: the record is simply not kept.
"""
from __future__ import annotations

import logging
import statistics
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from studio import models, objectives, speed
from studio.recipe import PLANNED, get_setting
from studio.settings import SHAPE

log = logging.getLogger(__name__)
MIN_STEPS = 3  # steps measured (after the first) before a run says anything about this machine's speed


def example_lengths(train: Any) -> list[int]:
    """Tokens per training example (the encoded rows' input_ids), read from the Arrow column."""
    import pyarrow.compute as pc

    return pc.list_value_length(train.data.column("input_ids")).to_pylist()


def predicted_step_seconds(recipe: Any, model_name: str, device: str, lengths: list[int],
                           gpu_name: str = "", p95: int | None = None) -> tuple[float, dict | None] | None:
    """(the uncalibrated predicted seconds per optimizer step, the CPU rates used) as the planner
    makes it for this recipe and dataset (``p95``: the length the plan timed the step at, from plan.json, where
    ``lengths`` are not the planner's measure, as for grpo prompts); None when nothing can be predicted (a CPU never probed)."""

    info = models.resolve(model_name)
    s = {key: get_setting(recipe, key) for key in PLANNED + SHAPE}
    rates = speed.cpu_rates() if device == "cpu" else None
    if p95 is None and lengths:
        p95 = sorted(lengths)[min(len(lengths) - 1, int(0.95 * len(lengths)))]
    est = speed.estimate(info, s, device, gpu_name=gpu_name, rates=rates, example_tokens=p95)
    return (est.step_seconds, rates) if est is not None else None


class StepTimes(TrainerCallback):
    """Times each optimizer step (on_step_begin to on_step_end) and records the run's speed at the end."""

    def __init__(self, run_dir: Path, recipe: Any, device: str, lengths: list[int], gpu_name: str = "",
                 model: str | None = None, p95: int | None = None) -> None:
        self.run_dir, self.recipe, self.device, self.lengths, self.gpu_name = run_dir, recipe, device, lengths, gpu_name
        self.p95 = p95
        self.sampling = objectives.get(recipe.train.objective).samples  # grpo keeps a ratio of its own
        self.model = model or str(recipe.model.name_or_path)  # the base model's folder, as the worker resolved it
        self.durations: list[float] = []
        self._t: float | None = None

    def on_step_begin(self, args, state, control, **kw):
        self._t = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        if self._t is not None:
            self.durations.append(time.perf_counter() - self._t)
            self._t = None

    def on_train_end(self, args, state, control, **kw):
        self.record()

    def record(self) -> None:
        steady = self.durations[1:]
        if len(steady) < MIN_STEPS:
            return
        try:
            from studio import speed

            pred = predicted_step_seconds(self.recipe, self.model, self.device, self.lengths, self.gpu_name, self.p95)
            if pred is None:
                return
            predicted, rates = pred
            speed.record_run(Path(self.run_dir).name, self.device, predicted, statistics.median(steady),
                             len(steady), gpu_name=self.gpu_name, probe=(rates or {}).get("measured_at"),
                             sampling=self.sampling)
        except Exception as e:  # noqa: BLE001 - a speed record must never fail a run
            log.warning("speed calibration not recorded: %s", e)
