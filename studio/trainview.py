"""What the Train page makes of a run's events, without Qt: the status line, the phase and time left, the
error titles, a grpo run's sampled completions, and the clock of a followed run (its events' own times, so a
replayed run keeps them)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from studio import runs
from studio.units import clock, number

ERROR_TITLES = {"oom": "Out of GPU memory", "nan": "The loss became NaN", "data": "A problem with the dataset",
                "io": "A file could not be read or written", "config": "A setting cannot be used",
                "internal": "The training worker failed"}
TRAIN_PHASES = ("train", "training", "step", "steps")
PROGRESS_KEPT = 50  # the last progress points the time left is measured over
SAMPLE_RANKS = {1: ("",), 2: ("best", "worst"), 3: ("best", "middle", "worst")}  # the worker sorts them by reward
PROMPT_CHARS = 160  # a sample's prompt is shown by its end (the question), the whole of it in a tooltip


def error_title(kind: str) -> str:
    return ERROR_TITLES.get(kind, "The run failed")


def expected_tokens_per_s(run_dir: Path) -> float | None:
    """The plan's expected training speed (plan.json ``estimate``), if it made one."""
    est = runs.read_plan(run_dir).get("estimate")
    return number(est.get("tokens_per_s")) if isinstance(est, dict) else None


def can_resume(run_dir: Path | None) -> bool:
    """A run folder with at least one checkpoint to continue from."""
    ckpt = Path(run_dir) / runs.CHECKPOINTS if run_dir else None
    return bool(ckpt and ckpt.is_dir() and any(ckpt.glob("step-*")))


def problems_message(problems: list[Any]) -> tuple[str, str]:
    """A recipe's validation problems as the banner's headline and hint."""
    head = "Cannot start yet: " + "; ".join(p.message if p.field in p.message else f"{p.field}: {p.message}"
                                            for p in problems)
    return head, " ".join(f"{p.hint[0].upper()}{p.hint[1:]}." for p in problems if p.hint)


def metric_status(d: dict, expected_tps: float | None, shown: str) -> str:
    """The status line after a metric event (``shown`` is the line before): step and loss, the preference
    margin or grpo's mean reward, the measured speed against the plan's."""
    step, loss = number(d.get("step")), number(d.get("loss"))
    text = shown
    if step is not None and loss is not None:
        text = f"step {int(step)} · loss {loss:.4f}"
        for key, name in (("rewards/margins", "margin"), ("reward", "mean reward")):
            value = number(d.get(key))
            if value is not None:
                text += f" · {name} {value:.3f}"
    tps = number(d.get("tokens_per_s"))
    if tps is not None and expected_tps:  # the plan's estimate against the measured rate
        text += f" · {tps:,.0f} tokens/s (planned ≈ {expected_tps:,.0f}, {tps / expected_tps:.0%})"
    return text


def metric_samples(d: dict) -> list[dict]:
    """A grpo metric's sampled completions (best, middle and worst of the latest prompt), malformed ones left out."""
    samples = d.get("samples")
    return [s for s in samples if isinstance(s, dict)][:max(SAMPLE_RANKS)] if isinstance(samples, list) else []


def sample_rank(i: int, n: int) -> str:
    """Where the ``i``-th of ``n`` shown samples ranks by reward ("best", "middle", "worst")."""
    return SAMPLE_RANKS[n][i]


def sample_heading(sample: dict, rank: str) -> str:
    """"Best · reward 0.439 (pattern 0.439)": the rank, the weighted reward and each reward's own score."""
    total = number(sample.get("reward"))
    given = sample.get("rewards")
    parts: dict = given if isinstance(given, dict) else {}
    scores = ", ".join(f"{name} {v:.3f}" for name, v in ((n, number(v)) for n, v in parts.items()) if v is not None)
    text = f"reward {total:.3f}" if total is not None else "no reward"
    text = f"{rank.capitalize()} · {text}" if rank else text.capitalize()
    return f"{text} ({scores})" if scores else text


def short_prompt(prompt: str) -> str:
    """A sample's prompt on one line, its end kept (where the question usually is)."""
    text = " ".join(str(prompt).split())
    return text if len(text) <= PROMPT_CHARS else "…" + text[-PROMPT_CHARS:]


def phase_text(phase: str, done: int, total: int, eta_s: float | None) -> str:
    """A phase other than training (samples, evaluation): how far, and the worker's time left."""
    return ((f"{phase}: {done}/{total}" if total else phase)
            + (f" · left ≈ {clock(eta_s)}" if eta_s is not None and done < total else ""))


@dataclass
class RunClock:
    """The times of the run the page follows: from the worker's start, the steps' pace, the time left."""

    started: float | None = None              # time.monotonic() when the page began following
    ts0: float = 0.0                          # the worker's hello (event time)
    ts: float = 0.0                           # the latest event's time
    steps: list[tuple[float, int]] = field(default_factory=list)
    after_train_s: float = 0.0                # answering the samples again after training
    phase_eta: float | None = None
    _before_t0: float | None = None

    def event(self, kind: str, data: dict, ts: float) -> None:
        """Note an event's time; the "before" samples' duration predicts the "after" ones."""
        if kind == "progress" and data.get("phase") not in ("train", None):
            phase = str(data.get("phase"))
            if phase == "sample-before" and data.get("done") == 0:
                self._before_t0 = time.monotonic()
            elif phase == "sample-before" and data.get("done") == data.get("total") and self._before_t0:
                self.after_train_s = time.monotonic() - self._before_t0
            self.phase_eta = number(data.get("eta_s"))
        if ts:
            if kind == "hello" or not self.ts0:  # elapsed counts from this worker's start
                self.ts0 = ts
            self.ts = ts

    def step(self, done: int) -> None:
        """A training progress event: the event's own time (a reattached run replays them all at once)."""
        self.steps = [*self.steps, (self.ts or time.time(), done)][-PROGRESS_KEPT:]

    def seconds(self) -> float:
        """Where a memory sample goes on the time axis: event time since the worker started."""
        return (self.ts - self.ts0) if self.ts0 else time.monotonic() - (self.started or time.monotonic())

    def eta_text(self, total_steps: int, now: float | None = None) -> str | None:
        """"elapsed · left ≈", from the pace of the last steps plus the samples after training; None: unknown."""
        if len(self.steps) < 2:
            return None
        (t0, s0), (t1, s1) = self.steps[0], self.steps[-1]
        if s1 <= s0 or t1 <= t0:
            return None
        now = time.time() if now is None else now
        remaining = (total_steps - s1) / ((s1 - s0) / (t1 - t0)) - (now - t1) + self.after_train_s
        elapsed = now - self.ts0 if self.ts0 else time.monotonic() - (self.started or time.monotonic())
        return f"elapsed {clock(elapsed)} · left ≈ {clock(remaining)}"


def ending(saw_error: bool, saw_done: bool, code: int, done_status: str | None, run_dir: Path | None) -> tuple[str, str]:
    """(status, status line) once the worker has exited: failed, what its done event said, or stopped."""
    if saw_error:
        return "failed", "Failed. The error and what to do are shown above."
    if saw_done and code == 0:
        status = done_status or (runs.read_state(run_dir).get("status", "finished") if run_dir else "finished")
        return status, f"{status.capitalize()}: {run_dir.name if run_dir else ''}"
    return "stopped", f"Stopped (exit code {code})."
