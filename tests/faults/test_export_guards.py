"""Attack class: an export pointed at its own inputs, or at a run that is still training.

``--out`` may never be, hold or lie inside the run folder (outside its exports/), the base model
folder or the adapter, whatever ``--force`` says; a live run is refused rather than exported stale.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys

import pytest
from faultkit import fake_run_with_adapter

from studio import runs
from studio.export.errors import ConfigError
from studio.export.targets import REPORT, export


def _digest(folder) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(folder)).encode() + p.read_bytes())
    return h.hexdigest()


@pytest.fixture
def base(tmp_path, tiny_model_dir):
    return shutil.copytree(tiny_model_dir, tmp_path / "base")


@pytest.mark.parametrize("where", ["run", "base", "adapter", "base/sub", "adapter/x", "run/checkpoints",
                                   "run-parent", "base-parent", "run/exports"])
def test_force_never_replaces_what_the_export_reads(tmp_path, base, where):
    run_dir = fake_run_with_adapter(tmp_path, base)
    (run_dir / runs.CHECKPOINTS).mkdir()
    targets = {"run": run_dir, "base": base, "adapter": run_dir / runs.ADAPTER, "base/sub": base / "sub",
               "adapter/x": run_dir / runs.ADAPTER / "x", "run/checkpoints": run_dir / runs.CHECKPOINTS,
               "run-parent": run_dir.parent, "base-parent": base.parent, "run/exports": run_dir / runs.EXPORTS}
    before = (_digest(base), _digest(run_dir))
    with pytest.raises(ConfigError, match=r"--out .* (is|holds|is inside)"):
        export(run_dir, "adapter", out=targets[where], force=True)
    assert (_digest(base), _digest(run_dir)) == before


def test_a_symlink_to_the_base_folder_is_seen_through(tmp_path, base):
    run_dir = fake_run_with_adapter(tmp_path, base)
    link = tmp_path / "innocent"
    link.symlink_to(base)
    with pytest.raises(ConfigError, match="is the base model folder"):
        export(run_dir, "merged", out=link, force=True)
    assert (base / "model.safetensors").is_file()


def test_outputs_under_exports_and_outside_still_work_and_record_the_step(tmp_path, base):
    run_dir = fake_run_with_adapter(tmp_path, base, adapter_step=6)
    result = export(run_dir, "adapter", out=run_dir / runs.EXPORTS / "mine")
    assert json.loads((result.path / REPORT).read_text())["step"] == 6
    result = export(run_dir, "adapter", out=tmp_path / "elsewhere")
    assert json.loads((result.path / REPORT).read_text())["step"] == 6


def test_a_run_that_is_still_training_is_refused(tmp_path, base):
    run_dir = fake_run_with_adapter(tmp_path, base)
    # A process whose command line is that of this run's worker (what the liveness check looks for).
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "workers.train", str(run_dir)])
    try:
        runs.write_state(run_dir, status="running", pid=proc.pid, step=3)
        with pytest.raises(ConfigError, match=r"is still training \(worker pid \d+, step 3\)"):
            export(run_dir, "adapter")
        assert not (run_dir / runs.EXPORTS).exists()
    finally:
        proc.kill()
        proc.wait()
    runs.write_state(run_dir, status="interrupted", pid=None)
    assert export(run_dir, "adapter").path.is_dir()


@pytest.mark.parametrize("name, content, words", [
    ("state.json", b"[1, 2]", "the base model folder"),           # read as no state: the adapter's base is used
    ("adapter/adapter_config.json", b"\xff garbage", "adapter_config.json: not a readable JSON object"),
    ("recipe.json", b"[" * 50000 + b"]" * 50000, None),            # too deep: read as no recipe, export goes on
    ("base/config.json", b'{"model_type": "llama", "hidden_size": 64, "vocab_size": 10, '
                         b'"num_hidden_layers": 10000}', "layers = 10000"),
])
def test_hostile_run_folder_files_are_named_not_tracebacks(tmp_path, base, name, content, words):
    run_dir = fake_run_with_adapter(tmp_path, base)
    if name == "state.json":
        (run_dir / runs.STATE).write_bytes(content)
        cfg = json.loads((run_dir / runs.ADAPTER / "adapter_config.json").read_text())
        cfg["base_model_name_or_path"] = 5  # and the adapter names no usable folder either
        (run_dir / runs.ADAPTER / "adapter_config.json").write_text(json.dumps(cfg))
    elif name.startswith("base/"):
        (base / "config.json").write_bytes(content)
    else:
        (run_dir / name).write_bytes(content)
    if words is None:
        assert export(run_dir, "adapter").path.is_dir()
    else:
        with pytest.raises(ConfigError, match=words):
            export(run_dir, "adapter")
