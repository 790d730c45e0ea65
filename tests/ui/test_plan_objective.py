"""The Plan page offers the objective and packing (recipe metadata) and the plan re-fits with them."""
from __future__ import annotations

import os

CATALOG_MODEL = "qwen2.5-7b-instruct"


def test_choosing_dpo_on_the_plan_page_refits_with_its_memory_and_reason(window, qtbot):
    window.finish_startup()
    with qtbot.waitSignal(window.session.sig_plan, timeout=5000):
        window.model_page.choose(CATALOG_MODEL)
    page = window.plan_page
    assert {"train.objective", "train.pref_beta", "train.packing"} <= set(page.advanced.editors)
    with qtbot.waitSignal(window.session.sig_plan, timeout=5000):
        window.session.pin("train.objective", "dpo")
    plan = window.session.plan
    assert plan.settings.objective == "dpo" and "reference_forward" in plan.components
    assert any("Objective dpo" in r for r in plan.reasons) and "Objective dpo" in page.fitted.reasons.text()
    assert window.session.resolved_recipe().train.objective == "dpo"
    shot = os.environ.get("LORA_STUDIO_SHOT")
    if shot:
        window.show()
        window.go(window.plan_page) if hasattr(window, "go") else None
        page.advanced.unfold(True)
        page.grab().save(shot)
