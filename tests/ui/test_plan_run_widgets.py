"""The pages' widgets, each driven through the model it is bound to (napari's way: change the model,
read the widget), without a window or a session."""
from __future__ import annotations

import pytest
from PySide6.QtWidgets import QLabel

from studio import hardware, models, planner, planview
from studio.recipe import Recipe
from ui.widgets.state import State

GiB = 1024 ** 3


@pytest.fixture(scope="module")
def plan():
    return planner.fit(models.resolve("llama-3.1-8b-instruct"), 12 * GiB, fixed={"train.seq_len": 65536})


def test_the_prediction_card_draws_the_view_it_is_bound_to(qtbot, plan):
    from ui.widgets.plan_cards import PredictionCard

    state = State(12 * GiB)
    card = PredictionCard(state)
    qtbot.addWidget(card)
    state.set(12 * GiB)
    assert card.bar.total == 0 and card.bar.budget == 12 * GiB and card.fit_label.text().startswith("No plan yet")
    view = planview.plan_view(plan, 12 * GiB)
    state.set(view)
    assert card.bar.total == pytest.approx(view.total) and card.fit_label.text() == view.verdict
    assert not card.suggest_btn.isHidden() and card.suggest_btn.text() == view.change_label
    with qtbot.waitSignal(card.sig_apply) as applied:
        card.suggest_btn.click()
    assert applied.args == [view.change]
    state.set(planview.plan_view(planner.fit(models.resolve("llama-3.1-8b-instruct"), 24 * GiB), 24 * GiB))
    assert card.suggest_btn.isHidden()


def test_the_fitted_card_and_the_advanced_fields_follow_the_recipe(qtbot):
    from ui.widgets.field_editor import AdvancedCard
    from ui.widgets.plan_cards import FittedCard

    r = Recipe()
    rows, values = State({}), State((r, {}))
    fitted, advanced = FittedCard(rows), AdvancedCard(values)
    qtbot.addWidget(fitted)
    qtbot.addWidget(advanced)
    rows.set(planview.fitted_rows(r, {"train.seq_len": 512}))
    assert fitted.values["train.seq_len"].text() == f"{r.train.seq_len} tokens  (fixed)"
    editor = advanced.editors["train.seq_len"]
    assert editor.reset.isHidden() and editor.editor.value() == r.train.seq_len
    r.train.seq_len = 512
    values.set((r, {"train.seq_len": 512}))
    assert editor.editor.value() == 512 and not editor.reset.isHidden() and editor.editor.font().bold()
    with qtbot.waitSignal(advanced.sig_pin) as pinned:
        editor.editor.setValue(1024)
    assert pinned.args == ["train.seq_len", 1024]
    with qtbot.waitSignal(advanced.sig_unpin) as unpinned:
        editor.reset.click()
    assert unpinned.args == ["train.seq_len"]
    assert advanced.fields.isHidden()
    advanced.toggle.setChecked(True)
    assert not advanced.fields.isHidden()


def test_the_budget_card_offers_one_box_per_gpu(qtbot):
    from ui.widgets.plan_cards import BudgetCard

    card = BudgetCard(24 * GiB)
    qtbot.addWidget(card)
    gpus = [hardware.GpuInfo(index=i, name="RTX", total_bytes=24 * GiB, free_bytes=GiB, used_bytes=GiB,
                             utilization=0, temperature=40, driver="550") for i in range(2)]
    card.fill_gpus(gpus, "")
    assert [b.isChecked() for b in card.gpu_boxes] == [True, False] and card.gpu_note.isHidden()
    with qtbot.waitSignal(card.sig_gpus) as picked:
        card.gpu_boxes[1].setChecked(True)
    assert picked.args == [[0, 1]]
    card.fill_gpus(gpus[:1], "one GPU")
    assert card.gpu_boxes == [] and card.gpu_note.text() == "one GPU" and not card.gpu_note.isHidden()
    with qtbot.waitSignal(card.sig_budget) as budget:
        card.slider.setValue(8 * 4)
    assert budget.args == [8 * GiB] and card.value_label.text() == "8.00 GiB"


def test_the_result_card_shows_the_done_event_it_is_bound_to(qtbot, tmp_path):
    from ui.widgets.export_cards import ResultCard

    state = State(None)
    card = ResultCard(state)
    qtbot.addWidget(card)
    assert card.isHidden()
    state.set({"path": str(tmp_path), "format": "gguf", "quant": "q8_0", "next_command": None,
               "files": [{"name": "model.gguf", "bytes": 2_000_000, "kind": "merged model (GGUF)"}]})
    texts = [card.files_grid.itemAt(i).widget().text() for i in range(card.files_grid.count())]
    assert texts == ["model.gguf", "2.0 MB", "merged model (GGUF)"] and card.head.text() == "gguf (q8_0)"
    assert card.command.isHidden() and str(tmp_path) in card.folder_label.text()
    state.set(None)
    assert card.isHidden()


def test_the_run_monitor_draws_the_events_it_is_fed(qtbot):
    from ui.widgets.run_monitor import RunMonitor

    status = QLabel()
    monitor = RunMonitor(status)
    qtbot.addWidget(monitor)
    monitor.on_metric({"step": 1, "loss": 1.0})  # before the charts exist: nothing drawn, nothing fails
    monitor.run_charts.ensure()
    monitor.reset()
    monitor.expected_tps = 1000.0
    for step in (1, 2):
        monitor.on_metric({"step": step, "loss": 1.0 / step, "learning_rate": 1e-4, "tokens_per_s": 500})
    charts = monitor.run_charts.charts
    assert charts["loss"].points("train") == 2 and charts["lr"].points("lr") == 2 and "preference" not in charts
    assert status.text() == "step 2 · loss 0.5000 · 500 tokens/s (planned ≈ 1,000, 50%)"
    monitor.on_progress("train", 5, 10)
    assert monitor.progress.bar.format() == "%v / %m steps" and monitor.progress.bar.value() == 5
    monitor.on_progress("merge", 1, 4)
    assert monitor.progress.eta_label.text() == "merge: 1/4"
    monitor.on_error("oom", "CUDA out of memory", "Lower the budget.")
    assert not monitor.banner.isHidden() and "Out of GPU memory" in monitor.banner.headline.text()
    monitor.reset()
    assert charts["loss"].points("train") == 0 and monitor.banner.isHidden() and monitor.log.blockCount() == 1


def test_the_vote_bar_and_the_panes(qtbot):
    from studio import chat_client
    from ui.widgets.chat_pane import PanePair, VoteBar

    votes, pair = VoteBar(), PanePair()
    qtbot.addWidget(votes)
    qtbot.addWidget(pair)
    assert not votes.vote_b.isEnabled()
    votes.allow(True)
    with qtbot.waitSignal(votes.sig_vote) as voted:
        votes.vote_b.click()
    assert voted.args == ["b"]
    base = chat_client.Variant(chat_client.BASE, None, "demo", None)
    pair.show_variants([base])
    assert pair.a.variant.itemText(0) == "base model" and pair.b.current() is base and pair.pane("b") is pair.b
    pair.a.begin_answer("hi")
    pair.a.add_text("hello")
    pair.a.end_answer({"tokens": 1})
    assert pair.a.history[-1] == {"role": "assistant", "content": "hello"} and pair.a.stats.text().startswith("1 tokens")
    pair.clear()
    assert pair.a.history == [] and pair.a.text.toPlainText() == ""


def test_the_memory_chart_compares_the_measured_peak_with_the_prediction(qtbot):
    from ui.widgets.run_charts import RunCharts

    charts = RunCharts()
    qtbot.addWidget(charts)
    charts.ensure()
    charts.add_memory({"device": "cpu", "allocated": 2 * GiB, "reserved": 2 * GiB, "budget": 16 * GiB,
                       "predicted_peak": 6 * GiB, "measured_peak": 6.3 * GiB, "peak_ratio": 1.05}, 1.0)
    mem = charts.charts["memory"]
    assert mem.lines["measured peak"].value() == pytest.approx(6.3) and mem.lines["predicted peak"].value() == 6
    assert mem.getPlotItem().titleLabel.text == "Process memory (no GPU): peak 1.05× predicted"
    charts.clear()
    assert "measured peak" not in mem.lines
    assert mem.getPlotItem().titleLabel.text == "Process memory (no GPU)"
