"""Without an NVIDIA GPU the Plan page plans for the CPU: RAM budget, 4-bit, a plain sentence, the speed."""
from __future__ import annotations

import pytest

from studio import hardware

pytestmark = pytest.mark.timeout(90)


def test_the_plan_page_plans_for_the_cpu_without_a_gpu(window, qtbot, monkeypatch):
    monkeypatch.setattr(hardware, "detect_gpus", lambda: hardware.GpuList(reason="no NVIDIA driver found"))
    window.finish_startup()
    with qtbot.waitSignal(window.session.sig_plan, timeout=5000):
        window.model_page.choose("smollm2-135m-instruct")
    window.plan_page.detect_hardware()
    plan = window.session.plan
    assert window.session.device == "cpu" and plan.device == "cpu"
    assert window.session.budget == hardware.cpu_budget_bytes()
    assert plan.settings.quant_mode == "4bit" and "cuda_context" not in plan.components
    assert "training runs on the CPU" in window.plan_page.budget.gpu_label.text()
    assert "Training runs on the CPU" in window.plan_page.fitted.reasons.text()
    assert "tokens/s" in window.plan_page.prediction.speed_label.text()  # from the probe cached by tests/ui/conftest.py
