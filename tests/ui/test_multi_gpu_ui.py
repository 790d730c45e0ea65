"""Several GPUs in the window: the Plan page's GPU picker and one memory line per GPU on the Train page."""
from __future__ import annotations

import json
import sys

import pytest

from studio import hardware, runs
from studio.recipe import Recipe

pytestmark = pytest.mark.timeout(90)
GiB = 2**30


def _gpu(i: int, name: str = "NVIDIA GeForce RTX 3090") -> hardware.GpuInfo:
    return hardware.GpuInfo(index=i, name=name, total_bytes=24 * GiB, free_bytes=23 * GiB, used_bytes=GiB,
                            utilization=0, temperature=40, driver="550")


def _choose_model(window, qtbot, gpus) -> None:
    window.finish_startup()
    with qtbot.waitSignal(window.session.sig_plan, timeout=5000):
        window.model_page.choose("llama-3.1-70b-instruct")
    window.plan_page.fill_gpu_picker(gpus)


def test_picking_two_gpus_plans_fsdp_per_gpu(window, qtbot, monkeypatch):
    _choose_model(window, qtbot, [_gpu(0), _gpu(1)])
    window.session.budget, window.session.device = 24 * GiB, "cuda"
    page = window.plan_page
    assert [b.isChecked() for b in page.budget.gpu_boxes] == [True, False]
    page.budget.gpu_boxes[1].setChecked(True)
    recipe = window.session.resolved_recipe()
    assert recipe.train.gpus == "0,1" and recipe.train.nproc == 2
    plan = window.session.plan
    assert plan.strategy == "fsdp" and plan.nproc == 2 and plan.fits
    assert "FSDP" in page.budget.gpu_note.text() and not page.budget.gpu_note.isHidden()
    page.budget.gpu_boxes[1].setChecked(False)
    assert window.session.resolved_recipe().train.nproc == 1 and window.session.plan.strategy == "single"


def test_mixed_gpus_and_a_single_gpu_say_what_works(window, qtbot, monkeypatch):
    _choose_model(window, qtbot, [_gpu(0), _gpu(1, "NVIDIA GeForce RTX 4090")])
    window.plan_page.budget.gpu_boxes[1].setChecked(True)
    assert "different models" in window.plan_page.budget.gpu_note.text()
    window.plan_page.fill_gpu_picker([_gpu(0)])
    assert "this machine has one GPU" in window.plan_page.budget.gpu_note.text()
    monkeypatch.setattr(sys, "platform", "win32")
    window.plan_page.fill_gpu_picker([_gpu(0), _gpu(1)])
    assert "Windows" in window.plan_page.budget.gpu_note.text()


def test_train_page_draws_one_memory_line_per_gpu(window, qtbot, tmp_path):
    page = window.train_page
    ranks = [{"rank": r, "device": "cuda", "allocated": (r + 1) * GiB, "reserved": (r + 2) * GiB} for r in range(2)]
    lines = [{"v": 1, "type": "hello", "seq": 1, "ts": 1.0, "run": "r", "data": {"world_size": 2}}] + [
        {"v": 1, "type": "memory", "seq": 2 + i, "ts": 2.0 + i, "run": "r",
         "data": {"step": i, "device": "cuda", "allocated": GiB, "reserved": 2 * GiB, "gpus": ranks}} for i in range(3)]
    script = "import sys\nfor line in sys.argv[1:]: print(line, flush=True)"
    with qtbot.waitSignal(page.controller.sig_finished, timeout=20000):
        page.start_run_dir(runs.create(Recipe(), tmp_path),
                           argv=[sys.executable, "-c", script, *[json.dumps(x) for x in lines]])
    mem = page.charts["memory"]
    assert mem.points("GPU 0 reserved") == 3 and mem.points("GPU 1 reserved") == 3
