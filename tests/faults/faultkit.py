"""Helpers for the fault tests: tiny runs driven through the real worker process.

A module of its own (not conftest) so test files import it by a unique name; two conftest
modules in one session shadow each other under `from conftest import ...`.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sysconfig
from pathlib import Path

from studio import procs, runs
from studio.events import EventReader, read_events
from studio.procs import worker_argv, worker_env
from studio.recipe import Recipe

MAX_STEPS = 8


def tiny_recipe(model_dir: Path, data: Path, **train: object) -> Recipe:
    r = Recipe(name="fault")
    r.model.name_or_path, r.data.path, r.data.val_fraction = str(model_dir), str(data), 0.0
    r.lora.rank, r.lora.alpha = 4, 8  # dropout stays on: resume must restore the RNG to be exact
    t = r.train
    t.max_steps, t.micro_batch, t.grad_accum, t.seq_len, t.grad_ckpt = MAX_STEPS, 2, 2, 48, False
    t.save_steps, t.keep_checkpoints, t.warmup_ratio, t.lr = 2, 3, 0.0, 1e-3
    for k, v in train.items():
        setattr(t, k, v)
    return r


def new_run(root: Path, model_dir: Path, data: Path, **train: object) -> Path:
    return runs.create(tiny_recipe(model_dir, data, **train), root)


def start_worker(run_dir: Path, *args: str, fault: str | None = None) -> subprocess.Popen:
    env = worker_env()
    env.pop("LORA_STUDIO_TEST_FAULT", None)
    if fault:
        env["LORA_STUDIO_TEST_FAULT"] = fault
    # as the studio starts one (its own session or process group), so a stop reaches it the product's way
    return procs.start_worker(worker_argv("workers.train", run_dir, *args),
                              stderr=open(Path(run_dir) / "worker.log", "ab"), env=env)


def run_worker(run_dir: Path, *args: str, fault: str | None = None, timeout: float = 240) -> tuple[int, list]:
    """Run the worker to its end; its exit code and the events it printed on stdout."""
    proc = start_worker(run_dir, *args, fault=fault)
    out, _ = proc.communicate(timeout=timeout)
    reader = EventReader()
    return proc.returncode, reader.feed(out) + reader.close()


def kill_at_step(run_dir: Path, step: int) -> int:
    """Start the worker and kill it (SIGKILL, TerminateProcess) once it reports ``step``; returns the step last reported."""
    proc = start_worker(run_dir)
    reader, seen = EventReader(), 0
    while True:
        chunk = proc.stdout.read1(65536)
        if not chunk:
            break
        for ev in reader.feed(chunk):
            if ev.type == "progress" and ev.data.get("phase") == "train":
                seen = max(seen, ev.data.get("done", 0))
        if seen >= step:
            proc.kill()  # SIGKILL; TerminateProcess on Windows: no handler runs either way
            break
    proc.wait(timeout=60)
    return seen


def losses(run_dir: Path) -> dict[int, float]:
    """step -> logged training loss (a step logged twice, before a kill and after resume, must agree)."""
    out: dict[int, float] = {}
    for ev in read_events(Path(run_dir) / runs.EVENTS):
        if ev.type == "metric" and "loss" in ev.data:
            step, loss = ev.data["step"], ev.data["loss"]
            assert out.get(step, loss) == loss, f"step {step} logged {out[step]} then {loss}"
            out[step] = loss
    return out


def adapter_tensors(run_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(Path(run_dir) / runs.ADAPTER / "adapter_model.safetensors"))


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def of_type(events: list, kind: str) -> list:
    return [e for e in events if e.type == kind]


def cli_exe() -> str:
    """The installed ``lora-studio`` entry point, as a user runs it: beside python in a venv's bin/ on POSIX,
    ``Scripts\\lora-studio.exe`` on Windows (where it is not in the interpreter's own folder)."""
    return str(Path(sysconfig.get_path("scripts")) / ("lora-studio.exe" if os.name == "nt" else "lora-studio"))


def cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([cli_exe(), *args], capture_output=True, text=True,
                          timeout=timeout, env=worker_env())


def copy_run(run_dir: Path, dest_root: Path) -> Path:
    dest = dest_root / run_dir.name
    shutil.copytree(run_dir, dest)
    return dest


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def lora_tensors(width: int = 64, rank: int = 2) -> dict:
    import torch

    key = "base_model.model.model.layers.0.self_attn.q_proj"
    return {f"{key}.lora_A.weight": torch.zeros(rank, width), f"{key}.lora_B.weight": torch.zeros(width, rank)}


def fake_run_with_adapter(tmp_path: Path, base: Path, tensors: dict | None = None, **state: object) -> Path:
    """A run folder as a finished training leaves it (recipe, state, adapter/) without training: export tests."""
    from safetensors.torch import save_file

    recipe = Recipe(name="x")
    recipe.model.name_or_path, recipe.data.path = str(base), "d.jsonl"
    run_dir = runs.create(recipe, Path(tmp_path) / "runs")
    adapter = run_dir / runs.ADAPTER
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 2, "lora_alpha": 4,
         "base_model_name_or_path": str(base), "target_modules": ["q_proj"]}))
    save_file(tensors if tensors is not None else lora_tensors(), str(adapter / "adapter_model.safetensors"))
    runs.write_state(run_dir, **{"status": "finished", "base_model": str(base), "step": 8, **state})
    return run_dir
