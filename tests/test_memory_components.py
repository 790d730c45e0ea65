"""Every memory component the planner predicts, measured through the worker's loader on the CPU (a slice of
bench/memory_components.py): stored weights, quantisation constants, adapter, gradients, optimizer state,
saved activations and the loss, each within 2%."""
from __future__ import annotations

import importlib.util
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
    the worst phase's live tensors within 2%, the first step's resident rise within 10%."""
    bench = _bench()
    lines: list[str] = []
    totals: dict[str, float] = {}
    worst = bench.run(bench.long_points()[:1], tmp_path, out=lines.append, totals=totals)
    assert worst <= 0.02 and totals["peak_tensors"] <= 0.02 and totals["step_resident"] <= 0.10, "\n".join(lines)
    assert all(f"  phase_{p} " in "\n".join(lines) for p in bench.PHASES)
