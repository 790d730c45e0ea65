"""Every memory component the planner predicts, measured through the worker's loader on the CPU (a slice of
bench/memory_components.py): stored weights, quantisation constants, adapter, gradients, optimizer state,
saved activations and the loss, each within 2%."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _bench():
    spec = importlib.util.spec_from_file_location("memory_components", ROOT / "bench" / "memory_components.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_component_within_two_percent(tmp_path):
    bench = _bench()
    lines: list[str] = []
    worst = bench.run(bench.grid(quick=True), tmp_path, out=lines.append)
    assert worst <= 0.02, "\n".join(lines)
    measured = "\n".join(lines)
    for name in ("weights", "quant_constants", "lora_weights", "lora_grads", "optimizer_state", "activations",
                 "logits_and_loss"):
        assert measured.count(f"  {name} ") == len(bench.QUICK)


def test_at_a_length_users_train_the_step_totals_match(tmp_path):
    """The demo model's shape at 512 tokens (``--lengths`` also runs 2048 and 8192): every component within 2%,
    the worst phase's live tensors within 2%, the first step's resident rise within 10%.

    Measured in a fresh interpreter, as the worker is one: the resident rise of a process is what it takes
    from the system, and a test process that already freed hundreds of MiB (the tests before this one) hands
    the step its own freed memory back (16% under the prediction in the whole suite, 4% in a fresh process)."""
    script = (
        "import importlib.util, json, sys\n"
        f"spec = importlib.util.spec_from_file_location('memory_components', {str(ROOT / 'bench' / 'memory_components.py')!r})\n"
        "bench = importlib.util.module_from_spec(spec); spec.loader.exec_module(bench)\n"
        "lines, totals = [], {}\n"
        f"worst = bench.run(bench.long_points()[:1], __import__('pathlib').Path({str(tmp_path)!r}), out=lines.append, totals=totals)\n"
        "print(json.dumps({'worst': worst, 'totals': totals, 'lines': lines, 'phases': list(bench.PHASES)}))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    text, totals = "\n".join(result["lines"]), result["totals"]
    assert result["worst"] <= 0.02 and totals["peak_tensors"] <= 0.02 and totals["step_resident"] <= 0.10, text
    assert all(f"  phase_{p} " in text for p in result["phases"])


def test_an_image_runs_vision_tower_and_the_rest_within_two_percent(tmp_path):
    """bench/memory_vision.py's quick slice: a tiny Qwen2-VL loaded as an image run (4-bit language model, tower
    and projector in the compute dtype): the tower's bytes are the planner's vision_weights, and the frozen
    tower keeps nothing for backward in a real step with an image batch."""
    spec = importlib.util.spec_from_file_location("memory_vision", ROOT / "bench" / "memory_vision.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    lines: list[str] = []
    worst = bench.run(tmp_path, out=lines.append, quick=True)
    text = "\n".join(lines)
    assert worst <= 0.02, text
    assert "vision_weights" in text and "tower_saved" in text and " 0.00%" in text
