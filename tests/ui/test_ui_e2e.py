"""End to end through the real window and the real training worker: drop the demo dataset on the
window, pick a tiny model, plan, train to completion, and check the charts received the points."""
from __future__ import annotations

import pytest

from studio import runs
from studio.demo import demo_dataset
from ui.main_window import MainWindow

pytestmark = pytest.mark.timeout(240)


def test_drop_plan_train_to_completion(qtbot, tiny_model_dir, drop):
    w = MainWindow()
    qtbot.addWidget(w)
    w.show()
    w.finish_startup()
    try:
        with qtbot.waitSignal(w.session.sig_data, timeout=20000):
            drop(w, demo_dataset())
        assert w.stack.currentWidget() is w.data_page and w.data_page.report.usable > 100

        with qtbot.waitSignal(w.session.sig_plan, timeout=60000, check_params_cb=lambda p: p is not None):
            drop(w, tiny_model_dir)  # a folder with config.json is a model
        assert w.session.model_info.layers == 2 and w.session.plan.fits

        for key, value in (("train.max_steps", 3), ("train.seq_len", 128), ("train.micro_batch", 2),
                           ("train.grad_accum", 1), ("train.eval_steps", 0), ("train.save_steps", 100)):
            w.session.pin(key, value)
        assert w.session.plan.settings.seq_len == 128

        page = w.train_page
        with qtbot.waitSignal(page.controller.sig_finished, timeout=180000) as done:
            w.plan_page.train_btn.click()
        log = page.log.toPlainText()
        assert done.args == [0, True], log[-3000:]
        assert page.status == "finished", log[-3000:]
        for chart in page.charts.values():
            chart.refresh()
        assert page.charts["loss"].points("train") == 3
        assert page.charts["lr"].points("lr") == 3
        assert page.charts["memory"].points("allocated") >= 1
        assert page.progress.bar.value() == page.progress.bar.maximum() == 3
        assert (page.run_dir / runs.ADAPTER / "adapter_config.json").is_file()
        assert runs.read_state(page.run_dir)["status"] == "finished"
        w.runs_page.reload()
        assert w.runs_page.model.rowCount() == 1
        w.export_page.reload()
        assert w.export_page.run_combo.count() == 1
    finally:
        w.train_page.controller.kill_now()
        w.data_page.tokens.kill_now()
