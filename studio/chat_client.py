"""Talking to the chat worker from the CLI (torch-free): what a name means, and a blocking client.

A *variant* is what answers a prompt: ``base`` (the bare base model), a run (its final adapter),
``RUN@N`` (the run's checkpoint at step N), or a model (folder, catalog id, ``demo``) on its own.
"""
from __future__ import annotations

import itertools
import queue
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from studio import checkpoint, driver, paths, runs
from studio.events import ANSWER, ERROR, HELLO, LOG, MAX_LINE_BYTES, TOKEN, WARNING, encode_command
from studio.fsutil import read_json
from studio.procs import worker_argv

BASE = "base"


class VariantError(ValueError):
    """A run, checkpoint or model name that cannot be used; the message says what to do."""


@dataclass
class Variant:
    label: str                 # shown to the user: "base", a run id, "RUN@20"
    run_dir: Path | None       # the run whose base model this is (None: a bare model)
    model: str                 # the base model as the recipe names it
    adapter: Path | None       # None: the bare base

    @property
    def name(self) -> str:
        """The adapter's name inside the worker (``base`` for none)."""
        return BASE if self.adapter is None else self.label


def find_run(text: str, runs_root: Path | None = None) -> Path | None:
    """A run folder from a path or a run id in the runs folder (None when neither)."""
    p = Path(text).expanduser()
    if (p / runs.RECIPE).is_file():
        return p.resolve()
    root = paths.runs_dir(runs_root)
    if "/" not in text and (root / text / runs.RECIPE).is_file():
        return (root / text).resolve()
    return None


def run_model(run_dir: Path) -> str:
    raw = read_json(Path(run_dir) / runs.RECIPE, default={}) or {}
    return str((raw.get("model") or {}).get("name_or_path", ""))


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    for ck in checkpoint.list_checkpoints(run_dir):
        if ck.step == step:
            return ck.path
    have = ", ".join(str(c.step) for c in checkpoint.list_checkpoints(run_dir)) or "none"
    raise VariantError(f"{run_dir.name}: no checkpoint at step {step} (checkpoints: {have})")


def resolve(spec: str, base_of: Variant | None = None, runs_root: Path | None = None) -> Variant:
    """``base`` (needs ``base_of``: the run it is the base of), ``RUN``, ``RUN@N`` or a model."""
    spec = spec.strip()
    if spec == BASE:
        if base_of is None:
            raise VariantError("'base' needs a run to take the base model from; name a run or a model instead")
        return Variant(BASE, base_of.run_dir, base_of.model, None)
    name, at, step = spec.rpartition("@") if "@" in spec else (spec, "", "")
    run_dir = find_run(name, runs_root)
    if at:
        if run_dir is None:
            raise VariantError(f"{name}: not a run folder (no {runs.RECIPE}); 'RUN@N' needs a run")
        if not step.isdigit():
            raise VariantError(f"{spec}: the checkpoint after '@' must be a step number, e.g. {name}@20")
        return Variant(f"{run_dir.name}@{step}", run_dir, run_model(run_dir), checkpoint_dir(run_dir, int(step)))
    if run_dir is not None:
        adapter = run_dir / runs.ADAPTER
        if not (adapter / "adapter_config.json").is_file():
            raise VariantError(f"{run_dir.name}: the run has no adapter yet (status "
                               f"{runs.read_state(run_dir).get('status', 'created')}); name a checkpoint "
                               f"with RUN@N or let the run finish")
        return Variant(run_dir.name, run_dir, run_model(run_dir), adapter)
    if Path(spec).expanduser().is_file():
        raise VariantError(f"{spec}: a file, not a run folder or a model folder")
    return Variant(BASE, None, spec, None)


def same_base(a: Variant, b: Variant) -> bool:
    if a.run_dir is not None and b.run_dir is not None and a.run_dir == b.run_dir:
        return True
    return a.model == b.model or (Path(a.model).expanduser().resolve() == Path(b.model).expanduser().resolve())


def worker_args(variants: list[Variant], vision: bool = False) -> list[str]:
    """``workers.chat`` arguments that load the shared base once and attach every adapter (``vision``: the whole
    vision-language model with its processor, for prompts with images)."""
    first = variants[0]
    run = next((v.run_dir for v in variants if v.run_dir is not None), None)
    args = ["--run", str(run)] if run is not None else ["--model", first.model]
    seen = set()
    for v in variants:
        if v.adapter is not None and v.name not in seen:
            seen.add(v.name)
            args += ["--adapter", f"{v.name}={v.adapter}"]
    return args + ["--vision"] * vision


def checked_images(paths: list[str]) -> list[str]:
    """Image files as absolute paths, each opened and decoded here first: a missing or unreadable one is named
    (studio.vision.VisionError, a UserError) before any model loads or any prompt is sent."""
    from studio.vision import load_image

    out = []
    for path in paths:
        full = str(Path(path).expanduser().resolve())  # --image ~/x.png from a shell that did not expand it
        load_image(full)
        out.append(full)
    return out


def image_message(prompt: str, images: list[str]) -> dict:
    """The user turn: one <image> marker per image ahead of the prompt (unless it places them itself)."""
    from studio.vision import IMAGE

    if not images:
        return {"role": "user", "content": prompt}
    content = prompt if prompt.count(IMAGE) == len(images) else IMAGE * len(images) + prompt.replace(IMAGE, "")
    return {"role": "user", "content": content, "images": list(images)}


class WorkerFailed(RuntimeError):
    """The chat worker reported an error, ended, or did not answer in time; the message carries its words."""


# No event at all for this long while an answer is due means the worker is stuck: a CPU answer streams a
# token every second or so, and even a long prompt's first token comes well within it.
ANSWER_DEADLINE_S = 300.0
LOAD_DEADLINE_S = 1800.0  # loading a large base from a slow disk (and quantising it) takes minutes
KEEP_LOGS = 20  # chat logs kept in the data folder's logs/ (the newest)


def new_log_path() -> Path:
    """A fresh file for one chat worker's stderr, in the data folder's logs/ (the oldest beyond KEEP_LOGS go)."""
    import os
    import time

    folder = paths.data_dir() / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    old = sorted(folder.glob("chat-*.log"), key=lambda p: p.stat().st_mtime)
    for stale in old[:max(0, len(old) - KEEP_LOGS + 1)]:
        stale.unlink(missing_ok=True)
    return folder / f"chat-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"


class ChatClient:
    """Starts ``workers.chat`` and answers prompts through it, one at a time (blocking).

    The worker is a ``studio.driver.Worker``: every wait has a deadline, and a worker that says
    nothing for ``deadline_s`` (``load_deadline_s`` while it loads) is ended and reported. ``close``
    is the driver's ladder with the chat's deadlines: stdin closed (the worker's stop), the polite
    signal, the end of the tree. Its stderr is kept in ``log_path``, which every error that mentions
    the log names.
    """

    def __init__(self, args: list[str], deadline_s: float = ANSWER_DEADLINE_S,
                 load_deadline_s: float = LOAD_DEADLINE_S) -> None:
        self.deadline_s, self.load_deadline_s = deadline_s, load_deadline_s
        self.log_path = new_log_path()
        self._log = open(self.log_path, "ab")
        self.worker = driver.Worker(worker_argv("workers.chat", *args), self._log, driver.CHAT)
        self.proc = self.worker.proc
        self.hello: dict = {}
        self.warnings: list[str] = []
        self._ids = itertools.count(1)

    def _next(self, deadline_s: float | None = None):
        deadline_s = self.deadline_s if deadline_s is None else deadline_s
        try:
            ev = self.worker.next_event(deadline_s)
        except queue.Empty:
            self.worker.kill()
            raise WorkerFailed(f"the chat worker did not answer within {deadline_s:g} s and was stopped "
                               f"(log: {self.log_path})") from None
        if ev is None:
            self.proc.wait()
            raise WorkerFailed(f"the chat worker ended (exit code {self.proc.returncode}): {self.log_tail()} "
                               f"(log: {self.log_path})")
        return ev

    def _failed(self, data: dict) -> WorkerFailed:
        """The worker's error in its words; the log named where its hint points there."""
        hint = str(data.get("hint") or "")
        where = f" (log: {self.log_path})" if "log" in hint or data.get("kind") == "internal" else ""
        return WorkerFailed(f"{data.get('message')}" + (f"; {hint.replace(' (stderr)', '')}" if hint else "") + where)

    def log_tail(self, n: int = 1500) -> str:
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(max(0, fh.seek(0, 2) - n))
                return fh.read().decode("utf-8", "replace").strip()
        except OSError:
            return ""

    def wait_ready(self) -> dict:
        while True:
            ev = self._next(self.load_deadline_s)
            if ev.type == HELLO:
                self.hello = ev.data
                return ev.data
            if ev.type == WARNING:
                self.warnings.append(str(ev.data.get("message")))
            if ev.type == ERROR:
                raise self._failed(ev.data)

    def _send(self, name: str, **args: Any) -> None:
        """Send one command; one the worker's line limit would refuse is refused here, before it is sent."""
        size = len(encode_command(name, **args))
        if size > MAX_LINE_BYTES:
            raise WorkerFailed(f"the conversation is {size / (1 << 20):.1f} MiB as a command; the chat worker takes "
                               f"at most {MAX_LINE_BYTES >> 20} MiB (far beyond any model's context): shorten it")
        if not self.worker.send(name, **args):
            raise WorkerFailed(f"the chat worker is gone: {self.log_tail()} (log: {self.log_path})")

    def add_adapter(self, name: str, path: Path) -> None:
        self._send("adapter", adapter=name, path=str(path))
        while True:
            ev = self._next(self.load_deadline_s)
            if ev.type == LOG and ev.data.get("adapter") == name:
                return
            if ev.type == ERROR and ev.data.get("adapter") == name:
                raise self._failed(ev.data)

    def generate(self, messages: list[dict], variant: str = BASE, settings: dict | None = None,
                 on_text: Callable[[str], None] | None = None, stop_on_interrupt: bool = False) -> dict:
        """The answer event's data; with ``stop_on_interrupt`` Ctrl-C ends the answer, not the program."""
        gid = f"q{next(self._ids)}"
        self._send("generate", id=gid, variant=variant, messages=messages, settings=settings or {})
        while True:
            try:
                ev = self._next()
            except KeyboardInterrupt:
                if not stop_on_interrupt:
                    raise
                stop_on_interrupt = False  # a second Ctrl-C leaves
                self.stop()
                continue
            if ev.type == ERROR and not ev.data.get("id") and "adapter" not in ev.data:
                raise self._failed(ev.data)  # one command is outstanding: an error with no id is about it
            if ev.data.get("id") != gid:
                continue
            if ev.type == TOKEN and on_text:
                on_text(ev.data.get("text", ""))
            elif ev.type == ANSWER:
                return ev.data
            elif ev.type == ERROR:
                raise self._failed(ev.data)

    def stop(self) -> None:
        """End the running answer (the worker stays up)."""
        self.worker.send("stop")

    def close(self) -> None:
        """End the worker: its stdin closed, then the driver's ladder (``driver.CHAT``)."""
        try:
            self.worker.shutdown(ask=self.worker.close_stdin)
        finally:
            self._log.close()

    def __enter__(self) -> "ChatClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def run_variants(run_dir: Path, runs_root: Path | None = None) -> list[Variant]:
    """What can answer in a run's Playground: its base, its adapter, its checkpoints, and the
    adapters of other runs on the same base model."""

    run_dir = Path(run_dir)
    model = run_model(run_dir)
    out = [Variant(BASE, run_dir, model, None)]
    if (run_dir / runs.ADAPTER / "adapter_config.json").is_file():
        out.append(Variant(run_dir.name, run_dir, model, run_dir / runs.ADAPTER))
    for ck in checkpoint.list_checkpoints(run_dir):
        if (ck.path / "adapter_config.json").is_file():
            out.append(Variant(f"{run_dir.name}@{ck.step}", run_dir, model, ck.path))
    for s in runs.list_runs(runs_root):
        if s.path != run_dir and s.model == model and (s.path / runs.ADAPTER / "adapter_config.json").is_file():
            out.append(Variant(s.id, s.path, model, s.path / runs.ADAPTER))
    return out
