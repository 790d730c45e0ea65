"""`lora-studio doctor`: the report, the probe under a real interpreter, and what it tells the user."""
from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

from studio.commands.doctor import format_report
from studio.runtime import doctor

ROOT = Path(__file__).resolve().parent.parent


def _env(tmp_path) -> dict:
    env = {**os.environ, "LORA_STUDIO_HOME": str(tmp_path), "PYTHONPATH": str(ROOT)}
    env.pop("LORA_STUDIO_PYTHON", None)
    return env


def test_doctor_json_without_probe_is_fast_and_torch_free(tmp_path):
    code = ("import json, sys; from studio.cli import main; rc = main(['doctor', '--json', '--no-probe']); "
            "print(json.dumps({'rc': rc, 'torch': 'torch' in sys.modules}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(tmp_path), timeout=60)
    lines = out.stdout.strip().splitlines()
    tail = json.loads(lines[-1])
    report = json.loads("\n".join(lines[:-1]))
    assert tail == {"rc": 0, "torch": False}
    assert report["data_dir"] == str(tmp_path) and report["disk"]["free_gb"] > 0
    assert report["runtime"]["state"] == "missing" and report["ml"] is None
    assert report["workers_python"] == sys.executable  # no runtime: this interpreter runs the workers


def test_probe_reports_the_interpreter_the_workers_use():
    ml = doctor.run_probe(sys.executable)
    assert "error" not in ml and "torch_error" not in ml
    assert ml["versions"]["torch"] == importlib.metadata.version("torch")
    assert ml["versions"]["bitsandbytes"] == importlib.metadata.version("bitsandbytes")
    assert ml["cuda_available"] in (True, False) and ml["python_path"] == sys.executable
    assert ml["bnb_4bit"]["ok"] is True, ml["bnb_4bit"]  # NF4 works on the CPU too


def test_probe_failure_is_words_not_a_traceback(tmp_path):
    broken = tmp_path / "python"
    broken.write_text("#!/bin/sh\necho 'boom: no interpreter here' >&2\nexit 3\n")
    broken.chmod(0o755)
    ml = doctor.run_probe(str(broken))
    assert ml["error"].startswith(f"the probe failed under {broken} (exit code 3)") and "boom" in ml["error"]


def _report(**over) -> dict:
    base = {"app": {"version": "0.1.0", "python": "3.11.7", "platform": "Linux", "frozen": False},
            "disk": {"path": "/data", "free_gb": 120.0, "total_gb": 500.0},
            "nvidia": {"gpus": [{"index": 0, "name": "RTX 4090", "memory_total_mb": 24564, "memory_free_mb": 23000}],
                       "driver": "570.1", "cuda_driver": "12.8", "error": None},
            "runtime": {"state": "ready", "path": "/data/runtime", "variant": "cuda"},
            "needs_setup": False, "workers_python": "/data/runtime/bin/python",
            "ml": {"python_path": "/data/runtime/bin/python", "python": "3.11.7", "torch_cuda": "12.8",
                   "cuda_available": True, "versions": {"torch": "2.13.0", "bitsandbytes": "0.50.2"},
                   "bnb_4bit": {"ok": True, "device": "cuda"}}}
    for key, value in over.items():
        base[key] = {**base[key], **value} if isinstance(value, dict) else value
    return base


def test_a_healthy_gpu_machine_has_no_problems():
    report = _report()
    assert doctor.problems(report) == []
    text = format_report({**report, "problems": []})
    assert "RTX 4090" in text and "supports CUDA 12.8" in text and "No problems found." in text


def test_problems_say_what_to_do():
    cpu_torch = _report(ml={"cuda_available": False, "torch_cuda": None})
    assert any("cannot use it" in p and "LORA_STUDIO_TORCH_VARIANT=cuda" in p for p in doctor.problems(cpu_torch))
    old_driver = _report(nvidia={"cuda_driver": "12.2"})
    assert any("update the NVIDIA driver" in p for p in doctor.problems(old_driver))
    no_bnb = _report(ml={"bnb_4bit": {"ok": False, "error": "libbitsandbytes_cuda.so missing"}})
    assert any("libbitsandbytes_cuda.so missing" in p for p in doctor.problems(no_bnb))
    full = _report(disk={"free_gb": 3.2})
    assert any("Only 3.2 GB is free" in p for p in doctor.problems(full))
    missing = _report(runtime={"state": "missing"}, needs_setup=True, ml={"error": "no ML runtime is set up yet"})
    assert any("lora-studio runtime setup" in p for p in doctor.problems(missing))
