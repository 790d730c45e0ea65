"""Talking to the chat worker from the CLI (torch-free): what a name means, and a blocking client.

A *variant* is what answers a prompt: ``base`` (the bare base model), a run (its final adapter),
``RUN@N`` (the run's checkpoint at step N), or a model (folder, catalog id, ``demo``) on its own.
"""
from __future__ import annotations

import itertools
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from studio import paths, runs
from studio.events import ANSWER, ERROR, HELLO, LOG, TOKEN, EventReader
from studio.fsutil import read_json
from studio.procs import pump_events, send_command, start_worker, worker_argv

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
    from studio.train import checkpoint

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


def worker_args(variants: list[Variant]) -> list[str]:
    """``workers.chat`` arguments that load the shared base once and attach every adapter."""
    first = variants[0]
    run = next((v.run_dir for v in variants if v.run_dir is not None), None)
    args = ["--run", str(run)] if run is not None else ["--model", first.model]
    seen = set()
    for v in variants:
        if v.adapter is not None and v.name not in seen:
            seen.add(v.name)
            args += ["--adapter", f"{v.name}={v.adapter}"]
    return args


class WorkerFailed(RuntimeError):
    """The chat worker reported an error or ended; the message carries its words."""


class ChatClient:
    """Starts ``workers.chat`` and answers prompts through it, one at a time (blocking)."""

    def __init__(self, args: list[str]) -> None:
        self._log = tempfile.TemporaryFile()
        self.proc = start_worker(worker_argv("workers.chat", *args), stderr=self._log)
        self.reader = EventReader()
        self.hello: dict = {}
        self._ids = itertools.count(1)
        self._pending: list = []

    def _next(self):
        while not self._pending:
            if not pump_events(self.proc, self.reader, self._pending.append):
                self.proc.wait()
                raise WorkerFailed(f"the chat worker ended (exit code {self.proc.returncode}): {self.log_tail()}")
        return self._pending.pop(0)

    def log_tail(self, n: int = 1500) -> str:
        self._log.seek(0, 2)
        size = self._log.tell()
        self._log.seek(max(0, size - n))
        return self._log.read().decode("utf-8", "replace").strip()

    def wait_ready(self) -> dict:
        while True:
            ev = self._next()
            if ev.type == HELLO:
                self.hello = ev.data
                return ev.data
            if ev.type == ERROR:
                raise WorkerFailed(f"{ev.data.get('message')} ({ev.data.get('hint', '')})")

    def add_adapter(self, name: str, path: Path) -> None:
        send_command(self.proc, "adapter", adapter=name, path=str(path))
        while True:
            ev = self._next()
            if ev.type == LOG and ev.data.get("adapter") == name:
                return
            if ev.type == ERROR and ev.data.get("adapter") == name:
                raise WorkerFailed(str(ev.data.get("message")))

    def generate(self, messages: list[dict], variant: str = BASE, settings: dict | None = None,
                 on_text: Callable[[str], None] | None = None, stop_on_interrupt: bool = False) -> dict:
        """The answer event's data; with ``stop_on_interrupt`` Ctrl-C ends the answer, not the program."""
        gid = f"q{next(self._ids)}"
        if not send_command(self.proc, "generate", id=gid, variant=variant, messages=messages,
                            settings=settings or {}):
            raise WorkerFailed(f"the chat worker is gone: {self.log_tail()}")
        while True:
            try:
                ev = self._next()
            except KeyboardInterrupt:
                if not stop_on_interrupt:
                    raise
                stop_on_interrupt = False  # a second Ctrl-C leaves
                self.stop()
                continue
            if ev.data.get("id") != gid:
                continue
            if ev.type == TOKEN and on_text:
                on_text(ev.data.get("text", ""))
            elif ev.type == ANSWER:
                return ev.data
            elif ev.type == ERROR:
                raise WorkerFailed(f"{ev.data.get('message')}")

    def stop(self) -> None:
        send_command(self.proc, "stop")

    def close(self) -> None:
        try:
            if self.proc.stdin:
                self.proc.stdin.close()
            self.proc.wait(timeout=30)
        except Exception:  # noqa: BLE001
            self.proc.kill()
            self.proc.wait()
        finally:
            self._log.close()

    def __enter__(self) -> "ChatClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def run_variants(run_dir: Path, runs_root: Path | None = None) -> list[Variant]:
    """What can answer in a run's Playground: its base, its adapter, its checkpoints, and the
    adapters of other runs on the same base model."""
    from studio.train import checkpoint

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
