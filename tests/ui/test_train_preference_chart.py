"""The Train page adds a preference chart (margin, accuracy) when a DPO/ORPO run reports them, and drops it after."""
from __future__ import annotations

import os
from pathlib import Path


def test_margins_get_their_own_chart_and_a_new_run_drops_it(window, qtbot):
    page = window.train_page
    window.show()
    page.ensure_charts()
    page.monitor.on_metric({"step": 1, "loss": 0.69, "learning_rate": 1e-3})
    assert "preference" not in page.charts  # an SFT run: four charts
    for step, margin in ((1, 0.0), (2, 0.4), (3, 1.2)):
        page.monitor.on_metric({"step": step, "loss": 0.69 - margin / 4, "rewards/margins": margin,
                         "rewards/accuracies": 0.5 + step / 10})
    chart = page.charts["preference"]
    assert chart.series["margin"].n == 3 and list(chart.series["margin"].y[:3]) == [0.0, 0.4, 1.2]
    assert chart.series["accuracy"].n == 3
    assert "margin 1.200" in page.controls.status_label.text()
    page.monitor.run_charts.refresher.refresh()
    shot = os.environ.get("LORA_STUDIO_SHOT")
    if shot:
        page.grab().save(str(Path(shot)))
    page._reset_view()
    assert "preference" not in page.charts and chart not in page.monitor.run_charts.refresher.charts
