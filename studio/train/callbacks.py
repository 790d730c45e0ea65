"""Trainer callbacks that turn training into protocol events, and the stdin command reader."""
from __future__ import annotations

import math
import sys
import threading
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from studio import runs
from studio.events import LOG, MEMORY, METRIC, PROGRESS, Emitter, decode_command, read_commands
from studio.hardware import gpu_memory_used
from studio.train import dist
from studio.train.preference import GRPO_METRICS, PREFERENCE_METRICS


class Control:
    """Commands from the controller (stdin) and from the run's inbox (``commands.jsonl``), on daemon threads."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.paused = threading.Event()
        self.agreed_stop: bool | None = None  # several processes: the stop every rank agreed on this step

    def listen(self, fd: int | None = None) -> None:
        """Take commands from ``fd`` (stdin); when it closes the controller went away: keep training."""
        read_commands(lambda line: self.handle(decode_command(line)), fd=fd)

    def watch(self, path: Path, interval_s: float = 0.3) -> None:
        """Also take commands appended to ``path`` from now on (a reattached window has no stdin to us)."""
        try:
            start = path.stat().st_size
        except OSError:
            start = 0
        threading.Thread(target=self._poll, args=(path, start, interval_s), daemon=True, name="inbox").start()

    def _poll(self, path: Path, pos: int, interval_s: float) -> None:
        buf = b""
        while not self.stop.is_set():
            try:
                with open(path, "rb") as fh:
                    fh.seek(pos)
                    chunk = fh.read(65536)
            except OSError:
                chunk = b""
            pos += len(chunk)
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                self.handle(decode_command(line))  # anything else is ignored, like on stdin
            buf = buf[-65536:]  # a line with no end is garbage: never let it grow
            time.sleep(interval_s)

    def handle(self, cmd: dict | None) -> None:
        name = cmd["cmd"] if cmd else None
        if name == "stop":
            self.stop.set()
            self.paused.clear()
        elif name == "pause":
            self.paused.set()
        elif name == "resume":
            self.paused.clear()

    def wait_while_paused(self) -> None:
        while self.paused.is_set() and not self.stop.is_set():
            time.sleep(0.2)

    def agree(self) -> bool:
        """Several processes: stop and pause as one. Rank 0 reads the commands; each step every rank
        all-reduces its (stop, pause) flags, so all stop (or wait paused) at the same step. Returns stop."""

        if not dist.distributed():
            self.wait_while_paused()
            return self.stop.is_set()
        stop, pause = dist.agree_flags(self.stop.is_set(), self.paused.is_set())
        while pause and not stop:
            time.sleep(0.2)
            stop, pause = dist.agree_flags(self.stop.is_set(), self.paused.is_set())
        if stop:
            self.stop.set()
        self.agreed_stop = stop
        return stop


def memory_snapshot(budget: int | None = None, predicted_peak: int | None = None, floor: int = 0) -> dict:
    """Allocator figures on a GPU (what the planner predicts); process RSS on the CPU. ``measured_peak`` is the
    figure the prediction (the plan's device total) stands for, ``peak_ratio`` the one over the other: on a
    GPU the allocator's reserved peak plus what the device holds outside it (context, kernels) now, on the CPU
    the process's resident peak (VmHWM; the peak working set on Windows). A peak never falls: it is at least
    ``floor`` (the run's last measured peak) and what the process holds now."""
    import torch

    out: dict[str, Any] = {"budget": budget, "predicted_peak": predicted_peak}
    if torch.cuda.is_available():
        out.update(device="cuda", allocated=torch.cuda.memory_allocated(), reserved=torch.cuda.memory_reserved(),
                   peak_allocated=torch.cuda.max_memory_allocated(), peak_reserved=torch.cuda.max_memory_reserved())
        try:
            out["device_used"] = gpu_memory_used(torch.cuda.current_device())
        except Exception:  # NVML missing or failing never stops a run
            out["device_used"] = None
        outside = max(0, out["device_used"] - out["reserved"]) if out["device_used"] else 0
        out["measured_peak"] = max(out["peak_reserved"] + outside, floor)
    else:
        import psutil

        rss = psutil.Process().memory_info().rss
        # never below what the process holds now (Wine's peak working set reads a few MiB)
        out.update(device="cpu", allocated=rss, reserved=rss, device_used=None,
                   measured_peak=max(resident_peak() or 0, rss, floor))
    out["peak_ratio"] = round(out["measured_peak"] / predicted_peak, 3) if predicted_peak else None
    return out


def resident_peak() -> int | None:
    """The process's peak resident memory in bytes: VmHWM on Linux, the peak working set on Windows, ru_maxrss
    elsewhere (None without any)."""
    try:
        for line in open("/proc/self/status", encoding="ascii", errors="replace"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    if sys.platform == "win32":
        import psutil

        return int(getattr(psutil.Process().memory_info(), "peak_wset", 0)) or None
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024  # bytes on macOS, KiB elsewhere


def preference_metrics(logs: dict) -> dict:
    """DPO's and ORPO's rewards, margins and accuracies (train and eval_), under TRL's own names."""

    names = PREFERENCE_METRICS + tuple(f"eval_{k}" for k in PREFERENCE_METRICS)
    return {k: float(logs[k]) for k in names if k in logs}


def grpo_metrics(logs: dict) -> dict:
    """GRPO's reward mean and spread, KL, completion lengths and the share cut at the length limit, and each
    reward's own mean and spread (``rewards/<name>/mean``), under TRL's names; None (no value) is left out."""
    keys = [k for k in logs if k in GRPO_METRICS or (k.startswith("rewards/") and k.endswith(("/mean", "/std")))]
    return {k: float(logs[k]) for k in keys if isinstance(logs[k], (int, float))}


class EventCallback(TrainerCallback):
    """Emits metric, progress and memory events; honours stop and pause between steps."""

    def __init__(self, emitter: Emitter, control: Control, run_dir: Any, budget: int | None = None,
                 predicted_peak: int | None = None) -> None:
        self.em, self.ctl, self.run_dir = emitter, control, run_dir
        self.budget, self.predicted_peak = budget, predicted_peak
        self._peak = 0  # the run's measured peak so far (memory_snapshot never reports less)
        self._t0 = self._last_t = time.time()
        self._last_tokens = 0
        self._step0 = 0
        self.last_loss: float | None = None
        self.after_train_s = 0.0  # work after the last step (held-out answers, eval.json): part of the ETA
        self.trainer: Any = None  # set by the run: a grpo trainer's shown_samples go into the metric events

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self._t0 = self._last_t = time.time()
        self._last_tokens = state.num_input_tokens_seen
        self._step0 = state.global_step
        self._say_how(kw.get("model"))
        self.em.emit(PROGRESS, phase="train", done=state.global_step, total=state.max_steps)

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> Any:
        if self.ctl.agree():
            control.should_training_stop = True
        self.em.emit(PROGRESS, phase="train", done=state.global_step, total=state.max_steps,
                     eta_s=self._eta(state))
        return control

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kw: Any) -> Any:
        logs = dict(logs or {})
        now = time.time()
        tokens = state.num_input_tokens_seen
        data: dict[str, Any] = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4)}
        if "loss" in logs:
            data["loss"] = float(logs["loss"])
            self.last_loss = data["loss"]
            dt = max(now - self._last_t, 1e-9)
            data["tokens_per_s"] = round((tokens - self._last_tokens) / dt, 2)
            self._last_t, self._last_tokens = now, tokens
        for src, dst in (("learning_rate", "learning_rate"), ("grad_norm", "grad_norm"), ("eval_loss", "eval_loss")):
            if src in logs:
                data[dst] = float(logs[src])
        data.update(preference_metrics(logs))
        data.update(grpo_metrics(logs))
        samples = getattr(self.trainer, "shown_samples", None) if self.trainer is not None else None
        if samples and "loss" in data:  # grpo: the latest prompt's completions with their rewards, shown once
            data["samples"] = samples
            self.trainer.shown_samples = None
        if len(data) > 2:
            self.em.emit(METRIC, **data)
            self._memory(state.global_step)
            runs.write_state(self.run_dir, step=state.global_step, last_loss=self.last_loss)
        return control

    def _say_how(self, model: Any) -> None:
        """Several processes: say how the model is spread (the wrapping the Trainer really did)."""

        if not dist.distributed() or model is None:
            return
        sharded = sum(1 for m in model.modules() if type(m).__name__.startswith("FSDP"))
        how = (f"FSDP: {sharded} modules sharded over {dist.world_size()} processes" if sharded
               else f"DDP: a full copy of the model in each of {dist.world_size()} processes")
        self.em.emit(LOG, message=f"training on {dist.world_size()} processes, {how}", world_size=dist.world_size(),
                     sharded_modules=sharded)

    def _memory(self, step: int) -> None:
        """One memory event; with several processes it carries every rank's figures (``gpus``, by rank)
        and rank 0's at the top level, as in a single-process run."""

        mine = memory_snapshot(self.budget, self.predicted_peak, floor=self._peak)
        self._peak = mine["measured_peak"]
        every = dist.gather({"rank": dist.rank(), **{k: v for k, v in mine.items()
                                                    if k not in ("budget", "predicted_peak")}})
        extra = {"gpus": every} if dist.distributed() else {}
        self.em.emit(MEMORY, step=step, **mine, **extra)
        # every run a calibration point: the peak against the prediction, kept in state.json (runs show prints it)
        runs.write_state(self.run_dir, memory_peak={k: mine.get(k) for k in ("device", "predicted_peak",
                                                                              "measured_peak", "peak_ratio")})

    def _eta(self, state: Any) -> float | None:
        done = state.global_step - self._step0
        if not state.max_steps or done <= 0:
            return None
        per_step = (time.time() - self._t0) / done
        eta = per_step * (state.max_steps - state.global_step) + self.after_train_s
        return round(eta, 1) if math.isfinite(eta) else None
