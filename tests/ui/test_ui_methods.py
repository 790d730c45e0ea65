"""The adapter method on the Plan page (one sentence each, choosing one re-plans) and on the Export page
(targets a prefix/prompt-tuned run cannot give are disabled with the reason)."""
from __future__ import annotations

import json

import pytest

from studio import methods, runs
from studio.recipe import Recipe

pytestmark = pytest.mark.timeout(90)
CATALOG_MODEL = "qwen2.5-7b-instruct"


def test_plan_page_offers_every_method_with_its_sentence_and_replans(window, qtbot):
    from PySide6.QtWidgets import QLabel

    page = window.plan_page
    with qtbot.waitSignal(window.session.sig_plan, timeout=5000):
        window.model_page.choose(CATALOG_MODEL)
    assert list(page.methods.buttons) == list(methods.NAMES)
    texts = [w.text() for w in page.findChildren(QLabel)]
    for m in methods.METHODS.values():
        assert any(t.startswith(m.when) for t in texts), m.name
    assert page.methods.buttons["lora"].isChecked() and page.fitted.values["lora.method"].text() == "LoRA"
    lora_total = window.session.plan.predicted["device_total_bytes"]
    with qtbot.waitSignal(window.session.sig_plan, timeout=5000):
        page.methods.buttons["dora"].click()
    assert window.session.fixed == {"lora.method": "dora"}
    plan = window.session.plan
    assert plan.settings.method == "dora" and "dora_activations" in plan.components
    assert plan.predicted["device_total_bytes"] != lora_total  # re-fitted with DoRA's costs
    assert page.fitted.values["lora.method"].text().startswith("DoRA")
    assert any("DoRA" in r for r in plan.reasons)
    with qtbot.waitSignal(window.session.sig_plan, timeout=5000):
        page.methods.buttons["prompt"].click()
    assert window.session.resolved_recipe().lora.method == "prompt"
    assert "virtual tokens" in page.fitted.values["lora.method"].text()
    with qtbot.waitSignal(window.session.sig_plan, timeout=5000):
        page.methods.buttons["lora"].click()
    assert window.session.fixed == {} and window.session.resolved_recipe().lora.method == "lora"


def test_export_page_disables_what_a_prompt_tuned_run_cannot_give(window, qtbot):
    r = Recipe()
    r.data.path = "/data/x.jsonl"
    run_dir = runs.create(r)
    (run_dir / runs.ADAPTER).mkdir()
    (run_dir / runs.ADAPTER / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "PROMPT_TUNING", "num_virtual_tokens": 8, "task_type": "CAUSAL_LM"}))
    page = window.export_page
    window.show_page(page)
    assert page.buttons["adapter"].isEnabled()
    for fmt in ("merged", "gguf", "ollama", "ollama-lora"):
        assert not page.buttons[fmt].isEnabled(), fmt
        assert "Prompt tuning changes no weight" in page.buttons[fmt].toolTip()
        assert page.descs[fmt].text().startswith("Unavailable for this run")
