"""Hostile input: pickle weights, a model that wants to run its own code, network and shell access."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from faultkit import new_run, of_type, run_worker

from studio import runs, safety
from studio.procs import worker_env
from studio.recipe import Recipe
from studio.train import loading

ROOT = Path(__file__).resolve().parents[2]


def _copy_config(src: Path, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for p in src.iterdir():
        if p.suffix in (".json", ".jinja"):
            shutil.copy(p, dest / p.name)
    return dest


@pytest.fixture
def evil_pickle_model(tmp_path, tiny_model_dir) -> tuple[Path, Path]:
    """A model folder whose only weights are a pickle that creates a file when unpickled."""
    import pathlib

    import torch
    from safetensors.torch import load_file

    folder = _copy_config(tiny_model_dir, tmp_path / "pickled")
    canary = tmp_path / "CANARY"
    state = load_file(str(tiny_model_dir / "model.safetensors"))
    state["payload"] = _Payload(canary)
    torch.save(state, folder / "pytorch_model.bin")
    assert not canary.exists() and pathlib.Path(folder / "pytorch_model.bin").stat().st_size > 0
    return folder, canary


class _Payload:
    def __init__(self, canary: Path) -> None:
        self.canary = canary

    def __reduce__(self):
        return (Path.touch, (self.canary,))


def test_pickle_weights_are_refused_by_default(evil_pickle_model):
    folder, canary = evil_pickle_model
    with pytest.raises(loading.LoadError, match=r"pytorch_model\.bin.*can run code.*model\.allow_pickle"):
        safety.check_weights_are_safe(folder, allow_pickle=False)
    with pytest.raises(loading.LoadError, match="is a pickle file, which can run code"):
        safety.check_model_path(str(folder / "pytorch_model.bin"))
    assert not canary.exists()


def test_opting_in_to_pickle_still_refuses_code_in_it(tmp_path, evil_pickle_model, chat_jsonl):
    """With model.allow_pickle the file is loaded with weights_only=True: the payload never runs."""
    folder, canary = evil_pickle_model
    recipe = Recipe(name="pickle")
    recipe.model.name_or_path, recipe.model.allow_pickle = str(folder), True
    recipe.data.path, recipe.train.max_steps, recipe.train.seq_len = str(chat_jsonl), 2, 48
    run_dir = runs.create(recipe, tmp_path / "runs")
    rc, events = run_worker(run_dir)
    assert rc == 1
    err = of_type(events, "error")[0].data
    assert err["kind"] == "config"
    assert "pytorch_model.bin) hold more than tensors and were refused" in err["message"]
    assert "weights_only=True" in err["message"]
    assert not canary.exists()
    assert "Traceback" not in (run_dir / "worker.log").read_text()


def _remote_code_model(src: Path, dest: Path, canary: Path) -> Path:
    folder = _copy_config(src, dest)
    shutil.copy(src / "model.safetensors", folder / "model.safetensors")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "configuration_evil.EvilConfig",
                          "AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}
    (folder / "config.json").write_text(json.dumps(config))
    code = f"from pathlib import Path\nPath({str(canary)!r}).touch()\n"
    (folder / "modeling_evil.py").write_text(code)
    (folder / "configuration_evil.py").write_text(code)
    return folder


def test_model_asking_for_remote_code_is_refused(tmp_path, tiny_model_dir, chat_jsonl):
    canary = tmp_path / "CANARY"
    folder = _remote_code_model(tiny_model_dir, tmp_path / "remote", canary)
    run_dir = new_run(tmp_path / "runs", folder, chat_jsonl)
    rc, events = run_worker(run_dir)
    assert rc == 1
    err = of_type(events, "error")[0].data
    assert err["kind"] == "config"
    assert "asks to run Python code shipped in its folder (configuration_evil.py, modeling_evil.py)" in err["message"]
    assert "set model.trust_remote_code to true" in err["message"]
    assert err["files"] == ["configuration_evil.py", "modeling_evil.py"]
    assert not canary.exists()
    assert runs.read_state(run_dir)["status"] == "failed"


def test_trusting_remote_code_names_the_files_that_will_run(tmp_path, tiny_model_dir):
    folder = _remote_code_model(tiny_model_dir, tmp_path / "remote", tmp_path / "CANARY")
    (warning,) = safety.check_remote_code(folder, trusted=True)
    assert "configuration_evil.py, modeling_evil.py" in warning and str(folder) in warning
    assert safety.check_remote_code(tiny_model_dir, trusted=False) == []


def test_worker_is_offline_before_any_import():
    env = {k: v for k, v in worker_env().items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    code = ("import sys, workers.train, huggingface_hub.constants as c; "
            "print(c.HF_HUB_OFFLINE, 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert out.stdout.split() == ["True", "False"], out.stderr[-2000:]


def test_no_shell_and_no_listening_sockets_in_the_code():
    """Paths from recipes and datasets are never interpolated into a shell; nothing serves on a port."""
    pattern = re.compile(r"shell\s*=\s*True|os\.system\(|os\.popen\(|\.listen\(\d|socketserver|http\.server")
    offenders = [f"{p.relative_to(ROOT)}:{i}" for folder in ("studio", "workers") for p in (ROOT / folder).rglob("*.py")
                 for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if pattern.search(line)]
    assert offenders == []


def test_dataset_paths_that_are_devices_or_pipes_are_refused(tmp_path, chat_jsonl):
    import os

    fifo = tmp_path / "data.jsonl"
    os.mkfifo(fifo)  # reading it would block the worker forever
    for bad in (str(fifo), "/dev/zero"):
        with pytest.raises(safety.UnsafeInput, match="not a regular file or folder"):
            safety.check_input_path(bad, "data.path")
    assert safety.check_input_path(str(chat_jsonl), "data.path") == chat_jsonl.resolve()
    assert safety.check_input_path("", "data.heldout") is None
