"""Attack class: inputs where the data was safe but the message was wrong (a traceback, "internal").

Each gets one line naming the file or field and the fix: hostile recipes, a symlink loop as the
dataset, damaged safetensors headers, a config asking for 10,000 layers, a full disk seen through
safetensors or numpy.
"""
from __future__ import annotations

import json
import os
import shutil
import struct
import time
from pathlib import Path

import pytest
from faultkit import cli, fake_run_with_adapter, new_run, of_type, run_worker

from studio import models, runs, safety


def _recipe(tmp_path, chat_jsonl, model="demo", **train) -> dict:
    return {"model": {"name_or_path": str(model)}, "data": {"path": str(chat_jsonl)}, "train": train}


@pytest.mark.parametrize("name, content, words", [
    ("latin1", b'{"name": "caf\xe9"}', "not UTF-8 text"),
    ("deep", b"[" * 100000 + b"]" * 100000, "nested too deeply"),
    ("deep-object", b'{"data": {"columns": ' + b'{"a": ' * 40 + b"1" + b"}" * 41 + b"}", "nested more than 16"),
    ("list", b"[1, 2]", "a recipe is a JSON object, found list"),
    ("folder", None, "is a folder, not a recipe file"),
    ("typed", json.dumps({"name": {}, "train": {"lr": "fast", "max_steps": 1.5}}).encode(),
     "train.lr: expected float, got 'fast'"),
    ("nan", b'{"data": {"path": "x.jsonl"}, "train": {"epochs": NaN, "warmup_ratio": -5, "logging_steps": 0}}',
     "train.epochs: nan is not a finite number"),
    ("rank", b'{"data": {"path": "x.jsonl"}, "lora": {"rank": 1000000000}}', "lora.rank: 1000000000 is outside"),
])
def test_hostile_recipes_get_one_line_naming_the_problem(tmp_path, name, content, words):
    path = tmp_path / f"{name}.json"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    out = cli("train", str(path), "--runs-dir", str(tmp_path / "runs"), timeout=120)
    assert out.returncode == 2, out.stderr[-2000:]
    assert words in out.stderr and "Traceback" not in out.stderr and "internal" not in out.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_a_symlink_loop_as_the_dataset_is_named(tmp_path):
    loop = tmp_path / "data.jsonl"
    os.symlink(loop, loop)
    with pytest.raises(safety.UnsafeInput, match="symbolic link that loops"):
        safety.check_input_path(str(loop), "data.path")
    out = cli("data", "inspect", str(loop), timeout=120)
    assert out.returncode == 2 and "symbolic link that loops or points nowhere" in out.stderr
    assert "Traceback" not in out.stderr


def _damaged_copy(src: Path, dest: Path, how: str) -> Path:
    folder = shutil.copytree(src, dest)
    path = folder / "model.safetensors"
    data = path.read_bytes()
    if how == "lying-header":
        path.write_bytes(struct.pack("<Q", 1 << 40) + data[8:])
    else:
        path.write_bytes(data[: len(data) // 2])
    return folder


@pytest.mark.parametrize("how", ["lying-header", "truncated"])
def test_a_damaged_safetensors_base_is_named_by_training_and_export(tmp_path, tiny_model_dir, chat_jsonl, how):
    from studio.export.errors import ConfigError
    from studio.export.targets import export

    base = _damaged_copy(tiny_model_dir, tmp_path / "base", how)
    run_dir = new_run(tmp_path / "runs", base, chat_jsonl)
    rc, events = run_worker(run_dir)
    err = of_type(events, "error")[0].data
    assert rc == 1 and err["kind"] == "config", err
    assert f"{base / 'model.safetensors'}: the safetensors file is damaged" in err["message"]
    assert "Traceback" not in (run_dir / "worker.log").read_text()
    finished = fake_run_with_adapter(tmp_path / "f", base)
    with pytest.raises(ConfigError, match="the safetensors file is damaged"):
        export(finished, "adapter")


def test_a_config_with_10000_layers_is_refused_at_once(tmp_path, tiny_model_dir, chat_jsonl):
    folder = shutil.copytree(tiny_model_dir, tmp_path / "huge")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["num_hidden_layers"] = 10000
    (folder / "config.json").write_text(json.dumps(cfg))
    start = time.monotonic()
    with pytest.raises(models.ModelError, match="layers = 10000, outside what LoRA Studio handles"):
        models.resolve(str(folder))
    out = cli("plan", "--model", str(folder), timeout=120)
    assert out.returncode == 2 and "layers = 10000" in out.stderr, out.stderr[-2000:]
    run_dir = new_run(tmp_path / "runs", folder, chat_jsonl)
    rc, events = run_worker(run_dir)
    assert rc == 1 and "layers = 10000" in of_type(events, "error")[0].data["message"]
    assert time.monotonic() - start < 60


def test_a_full_disk_reported_by_safetensors_is_io_not_internal():
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from safetensors import SafetensorError

    from workers.train import classify

    full = SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull, "
                           "message: \"No space left on device\" })")
    assert classify(full)[0] == "io"
    assert classify(SafetensorError("Error while deserializing header: HeaderTooLarge"))[0] == "config"


def test_a_full_disk_without_errno_during_an_export_is_a_disk_error(tmp_path, tiny_model_dir, monkeypatch):
    """Every format writes inside the same guarded block; the GGUF writer's numpy reports no errno."""
    from studio.export import targets
    from studio.export.errors import DiskError

    run_dir = fake_run_with_adapter(tmp_path, tiny_model_dir)

    def full(*a, **k):
        raise OSError("123 requested and 0 written")  # numpy's tofile on a full disk: no errno

    monkeypatch.setattr(targets, "copy_adapter", full)
    monkeypatch.setattr(targets, "_nearly_full", lambda final: True)
    with pytest.raises(DiskError, match="the disk filled up while writing"):
        targets.export(run_dir, "adapter")
    assert not list((run_dir / runs.EXPORTS).glob("*"))  # the temp folder went with the failure
