"""Each page with its core objects: model, data, plan, train (fake worker), runs; the window's
conventions (title, shortcuts, settings, closing during training) and the torch-free GUI process."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QAction

from studio import events as ev
from studio import procs, runs
from studio.recipe import Recipe
from ui.main_window import APP_TITLE, MainWindow
from ui.prefs import settings
from ui.widgets.table import RowsModel, fast_table

pytestmark = pytest.mark.timeout(90)
GIB = 1024 ** 3
CATALOG_MODEL = "qwen2.5-7b-instruct"


def test_window_title_pages_and_shortcuts(window):
    assert window.windowTitle().startswith("LoRA Studio") and APP_TITLE == "LoRA Studio"
    assert [p.title for p in window.pages] == ["Model", "Data", "Plan", "Train", "Runs", "Export", "Playground"]
    shortcuts = {a.text(): a.shortcut().toString() for a in window.findChildren(QAction) if a.shortcut().toString()}
    assert shortcuts["&Start training"] == "Ctrl+R" and shortcuts["S&top"] == "Ctrl+."
    assert shortcuts["Plan"] == "Ctrl+3"


def test_catalog_model_plan_and_budget(window, qtbot):
    window.finish_startup()
    with qtbot.waitSignal(window.session.sig_plan, timeout=5000):
        window.model_page.choose(CATALOG_MODEL)
    assert window.model_page.fields["arch"].text() == "Qwen2ForCausalLM"
    assert "tokens" in window.model_page.fields["context"].text()
    big = window.plan_page.prediction.bar.total
    assert window.session.plan.fits
    with qtbot.waitSignal(window.session.sig_plan, timeout=5000):
        window.plan_page.set_budget_bytes(8 * GIB)
    assert window.plan_page.prediction.bar.budget == 8 * GIB
    assert window.plan_page.prediction.bar.total < big  # the planner re-fitted to the smaller budget
    assert "4bit" in window.plan_page.fitted.values["quant.mode"].text()


def test_a_pinned_setting_stays_while_the_rest_refits(window, qtbot):
    window.model_page.choose(CATALOG_MODEL)
    editor = window.plan_page.advanced.editors["train.seq_len"]
    with qtbot.waitSignal(window.session.sig_plan, timeout=5000):
        editor.editor.setValue(512)
    assert window.session.fixed == {"train.seq_len": 512}
    assert window.session.plan.settings.seq_len == 512
    with qtbot.waitSignal(window.session.sig_plan, timeout=5000):
        window.plan_page.set_budget_bytes(12 * GIB)
    assert window.session.resolved_recipe().train.seq_len == 512 and not editor.reset.isHidden()
    with qtbot.waitSignal(window.session.sig_plan, timeout=5000):
        editor.reset.click()
    assert window.session.fixed == {}
    assert window.plan_page.advanced.editors["train.seq_len"].editor.toolTip().startswith("Longest example")


def test_tab_walks_the_advanced_settings_in_reading_order(window, qtbot):
    page = window.plan_page
    window.show_page(page)
    page.advanced.toggle.setChecked(True)
    editors = {ed.editor: key for key, ed in page.advanced.editors.items()}
    order, widget = [], page.advanced.editors["lora.rank"].editor
    for _ in range(400):  # follow the focus chain from the first editor
        if widget in editors and editors[widget] not in order:
            order.append(editors[widget])
        widget = widget.nextInFocusChain()
    grid = page.advanced.fields.layout()
    cells = [grid.getItemPosition(grid.indexOf(page.advanced.editors[k]))[:2] for k in order]  # (row, column)
    assert len(order) == len(page.advanced.editors) and cells == sorted(cells)  # row by row, left to right


def test_the_window_demo_trains_what_the_readme_says(window, qtbot):
    from ui.app import apply_choices, parse_args

    with qtbot.waitSignal(window.session.sig_plan, timeout=10000):
        apply_choices(window, parse_args(["--demo"]))
    r = window.session.resolved_recipe()
    assert (r.quant.mode, r.lora.rank, r.train.seq_len, r.train.micro_batch, r.train.max_steps) == ("4bit", 16, 256, 4, 60)
    assert window.session.recipe.data.heldout  # the before/after score needs the held-out prompts


def test_dropping_a_dataset_shows_format_preview_and_problems(window, qtbot, tmp_path, chat_jsonl, drop):
    bad = tmp_path / "bad.jsonl"
    lines = chat_jsonl.read_text().splitlines()[:5]
    lines.insert(2, '{"messages": [{"role": "user", "content": "unterminated"')
    bad.write_text("\n".join(lines) + "\n")
    with qtbot.waitSignal(window.session.sig_data, timeout=10000):
        drop(window, bad)
    assert window.stack.currentWidget() is window.data_page
    assert "messages" in window.data_page.summary.text()
    model = window.data_page.preview_model
    assert model.rowCount() == 5
    assert [model.headerData(i, Qt.Orientation.Horizontal) for i in range(3)] == ["turns", "user", "assistant"]
    assert model.data(model.index(0, 1)) == "What is 0 plus 0?"
    problems = [window.data_page.problems.item(i).text() for i in range(window.data_page.problems.count())]
    assert any(p.startswith("line 3") for p in problems), problems
    assert window.session.recipe.data.path == str(bad)


def test_a_clean_file_says_no_problems_and_a_new_file_clears_the_old_tokens(window, qtbot, tmp_path, drop):
    clean = tmp_path / "clean.jsonl"
    clean.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"What is {i} plus {i}?"},
                                                      {"role": "assistant", "content": f"{2 * i}."}]}) + "\n"
                             for i in range(6)))
    page = window.data_page
    page.token_view.tokens = {"count": 9, "p50": 12, "p95": 20, "max": 30}
    page.example.setHtml("<p>the previous file's example</p>")
    page.token_status.setText("9 examples · median 12 (previous file)")
    with qtbot.waitSignal(window.session.sig_data, timeout=10000):
        drop(window, clean)
    problems = [page.problems.item(i).text() for i in range(page.problems.count())]
    assert problems == ["No problems found: all 6 rows are usable."]
    assert page.example.toPlainText() == "" and "previous file" not in page.token_status.text()
    assert page.token_view.tokens == {}


def test_the_preview_table_model_handles_a_million_rows(qtbot):
    class Rows(Sequence):
        def __len__(self):
            return 1_000_000

        def __getitem__(self, i):
            if not 0 <= i < len(self):
                raise IndexError(i)
            return {"prompt": f"question {i}", "completion": "x" * 500}

    model = RowsModel(Rows(), ["prompt", "completion"])
    view = fast_table(model)
    qtbot.addWidget(view)
    view.show()
    view.scrollToBottom()
    assert model.rowCount() == 1_000_000
    assert model.data(model.index(999_999, 0)) == "question 999999"
    assert model.data(model.index(0, 1)).endswith("…")  # long cells are cut for display


def test_train_page_charts_and_error_banner_from_a_worker(window, qtbot, tmp_path, fake_argv):
    page = window.train_page
    run_dir = runs.create(Recipe(), tmp_path)
    with qtbot.waitSignal(page.controller.sig_finished, timeout=20000):
        page.start_run_dir(run_dir, argv=fake_argv("flood", 400, 0.5))
    for chart in page.charts.values():
        chart.refresh()
    assert page.charts["loss"].points("train") > 100
    assert page.charts["memory"].points("allocated") > 10
    assert "budget" in page.charts["memory"].lines and "predicted peak" in page.charts["memory"].lines
    assert page.status == "finished" or page.status in runs.STATUSES
    assert page.log.blockCount() > 1
    with qtbot.waitSignal(page.controller.sig_finished, timeout=20000):
        page.start_run_dir(runs.create(Recipe(), tmp_path), argv=fake_argv("error"))
    assert page.status == "failed"
    assert not page.banner.isHidden() and "Out of GPU memory" in page.banner.headline.text()
    assert page.banner.detail.text() == "lower the micro-batch"


def test_start_without_a_dataset_explains_what_is_missing(window):
    window.train_page.start()
    assert not window.train_page.training
    assert "no dataset given" in window.train_page.banner.headline.text()


def _fake_run(root: Path, name: str, losses: list[float]) -> Path:
    r = Recipe(name=name)
    r.data.path = "/data/x.jsonl"
    run_dir = runs.create(r, root)
    em = ev.Emitter(run=run_dir.name, log_path=run_dir / runs.EVENTS, stream=open("/dev/null", "wb"))
    for i, loss in enumerate(losses, 1):
        em.emit(ev.METRIC, step=i, loss=loss)
    em.close()
    runs.write_state(run_dir, status="finished", last_loss=losses[-1], step=len(losses))
    return run_dir


def test_runs_history_and_overlaid_loss_curves(window, qtbot):
    _fake_run(runs.paths.runs_dir(), "first", [2.0, 1.5, 1.2])
    _fake_run(runs.paths.runs_dir(), "second", [2.2, 1.1])
    page = window.runs_page
    window.show_page(page)
    assert page.model.rowCount() == 2
    assert {page.model.data(page.model.index(r, 4)) for r in range(2)} == {"1.2000", "1.1000"}
    page.table.selectAll()
    assert sorted(s.n for s in page.chart_view.chart.series.values()) == [2, 3]


def test_choices_and_geometry_are_remembered(qtbot, chat_jsonl):
    w = MainWindow()
    qtbot.addWidget(w)
    w.show()
    w.session.recipe.model.name_or_path = CATALOG_MODEL
    w.session.recipe.data.path = str(chat_jsonl)
    w.session.budget = 10 * GIB
    w.show_page(2)
    w.resize(w.minimumSizeHint().width(), 640)  # the offscreen screen is only 800 pixels high
    qtbot.waitUntil(lambda: w.height() == 640, timeout=2000)
    w.remember_choices()
    s = settings()
    device = w.session.device
    assert s.value("model") == CATALOG_MODEL and s.value("dataset") == str(chat_jsonl)
    assert int(s.value(f"budget/{device}")) == 10 * GIB
    w2 = MainWindow()
    qtbot.addWidget(w2)
    w2.show()
    assert w2.sidebar.currentRow() == 2
    assert abs(w2.height() - 640) < 30 and w2.height() < 700  # not the 820 default
    with qtbot.waitSignal(w2.session.sig_data, timeout=10000):
        w2.restore_choices()
    assert w2.session.recipe.model.name_or_path == CATALOG_MODEL and w2.session.budget == 10 * GIB
    # a budget kept for the other device (a GPU's on a machine that now trains on the CPU) is not restored
    other = "cpu" if device == "cuda" else "cuda"
    s.setValue(f"budget/{other}", 3 * GIB)
    s.remove(f"budget/{device}")
    w3 = MainWindow()
    qtbot.addWidget(w3)
    w3.session.device = device
    before = w3.session.budget
    w3.restore_choices()
    assert w3.session.budget == before != 3 * GIB


@pytest.mark.parametrize("choice", ["keep", "cancel", "stop"])
def test_closing_during_training_asks(window, qtbot, tmp_path, fake_argv, monkeypatch, choice):
    page = window.train_page
    with qtbot.waitSignal(page.controller.sig_hello, timeout=10000):  # obey stops on request; hang never ends
        page.start_run_dir(runs.create(Recipe(), tmp_path), argv=fake_argv("obey" if choice == "stop" else "hang"))
    monkeypatch.setattr(window, "ask_close_choice", lambda: choice)
    if choice == "stop":
        with qtbot.waitSignal(page.controller.sig_finished, timeout=10000):
            assert window.close() is False  # waits for the worker to save and exit, then closes
        qtbot.waitUntil(lambda: not window.isVisible(), timeout=5000)
        assert page.controller.saw_done
        return
    closed = window.close()
    assert closed is (choice == "keep")
    assert page.controller.running  # kept running, or the close was cancelled
    assert page.controller.detached is (choice == "keep")
    page.controller.kill_now()


def test_the_gui_process_never_imports_ml_libraries(tmp_path, chat_jsonl):
    """Build the window in a fresh interpreter, visit and use every page, then look at sys.modules."""
    script = f"""
import sys, json
from ui.app import build_app
app = build_app()
from ui.main_window import MainWindow
w = MainWindow(); w.show(); w.finish_startup()
w.model_page.choose({CATALOG_MODEL!r})
import time
w.data_page.load(__import__('pathlib').Path({str(chat_jsonl)!r}))
deadline = time.monotonic() + 20
while w.session.dataset_report is None and time.monotonic() < deadline:
    app.processEvents()
for i in range(len(w.pages)):
    w.show_page(i); app.processEvents()
w.plan_page.set_budget_bytes(8 * 1024 ** 3)
w.runs_page.reload(); w.export_page.reload()
heavy = sorted(m for m in ("torch", "transformers", "peft", "bitsandbytes", "datasets", "accelerate") if m in sys.modules)
print(json.dumps({{"heavy": heavy, "plan": w.session.plan is not None, "data": w.session.dataset_report is not None}}))
"""
    env = procs.worker_env()
    env["QT_QPA_PLATFORM"] = "offscreen"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"heavy": [], "plan": True, "data": True}


@pytest.mark.platform
def test_a_stopped_run_with_a_checkpoint_offers_resume(window, qtbot, tmp_path, fake_argv):
    page = window.train_page
    run_dir = runs.create(Recipe(), tmp_path)
    (run_dir / runs.CHECKPOINTS / "step-2").mkdir(parents=True)
    with qtbot.waitSignal(page.controller.sig_hello, timeout=10000):
        page.start_run_dir(run_dir, argv=fake_argv("obey"))
    assert page.controls.resume_btn.isHidden()
    with qtbot.waitSignal(page.controller.sig_finished, timeout=10000):
        page.stop()
    assert page.status == "stopped" and not page.controls.resume_btn.isHidden()


@pytest.mark.platform
@pytest.mark.parametrize("stop", [False, True])
def test_a_run_left_running_by_an_earlier_window_is_followed(window, qtbot, tmp_path, fake_argv, stop):
    run_dir = runs.create(Recipe(), runs.paths.runs_dir())
    # "workers.train RUN_DIR" on the command line: studio.attach follows only this run's training worker
    worker = subprocess.Popen(fake_argv("record", run_dir, 30 if stop else 5, "workers.train", run_dir),
                              env=procs.worker_env(), start_new_session=True)
    threading.Thread(target=worker.wait, daemon=True).start()  # reap it as init would (no zombie)
    try:
        qtbot.waitUntil(lambda: runs.read_state(run_dir).get("status") == "running", timeout=10000)
        window.attach_live_run()
        page = window.train_page
        assert page.training and page.status == "running" and page.controls.pause_btn.isEnabled()  # through the inbox
        page.toggle_pause()
        assert [ev.decode_command(line)["cmd"] for line in (run_dir / runs.COMMANDS).read_bytes().splitlines()] \
            == ["pause"] and page.status == "paused"
        with qtbot.waitSignal(page.controller.sig_finished, timeout=20000) as done:
            if stop:
                qtbot.waitUntil(lambda: page.charts["loss"].series["train"].total > 3, timeout=10000)
                page.stop()  # the inbox's stop (then SIGTERM): the worker saves and says done
        assert done.args == [0, True]
        assert page.status == ("stopped" if stop else "finished")
        assert page.charts["loss"].series["train"].total > 3 and page.charts["memory"].points("allocated") > 3
    finally:
        worker.kill()
        worker.wait()


def test_export_offers_the_registry_targets_and_reports_the_workers_error(window, qtbot):
    r = Recipe()
    r.data.path = "/data/x.jsonl"
    run_dir = runs.create(r)
    (run_dir / runs.ADAPTER).mkdir()  # an adapter folder without the adapter files
    page = window.export_page
    window.show_page(page)
    from studio.export import TARGETS

    assert set(page.buttons) == set(TARGETS) and page.run_combo.count() == 1
    with qtbot.waitSignal(page.controller.sig_finished, timeout=30000):
        page.buttons["adapter"].click()
    assert not page.banner.isHidden() and "adapter_config.json" in page.banner.headline.text()
    assert page.banner.detail.text().startswith("the run has not finished training")
    assert all(b.isEnabled() for b in page.buttons.values())


def test_the_palette_follows_the_colour_scheme(qapp, monkeypatch):
    from PySide6.QtGui import QPalette

    from ui import theme

    try:
        for scheme, dark in (("dark", True), ("light", False)):
            monkeypatch.setenv("LORA_STUDIO_THEME", scheme)
            theme._apply_scheme(qapp)
            window_color = qapp.palette().color(QPalette.ColorRole.Window)
            assert (window_color.lightness() < 80) is dark and qapp.property("studio_dark") is dark
            assert "QListWidget#sidebar" in qapp.styleSheet()
    finally:
        qapp.setStyleSheet("")


def test_a_broken_model_folder_says_what_is_wrong(window, qtbot, tmp_path, drop):
    folder = tmp_path / "broken-model"
    folder.mkdir()
    (folder / "config.json").write_text("{not json")
    page = window.model_page
    qtbot.waitUntil(lambda: not page.prober.running, timeout=1000)
    drop(window, folder)
    assert window.stack.currentWidget() is page
    qtbot.waitUntil(lambda: "not valid JSON" in page.status.text(), timeout=30000)
    assert str(folder / "config.json") in page.status.text() and window.session.model_info is None


def test_double_clicking_a_past_run_shows_its_charts(window, qtbot):
    run_dir = _fake_run(runs.paths.runs_dir(), "past", [2.0, 1.5, 1.2, 1.0])
    window.show_page(window.runs_page)
    table = window.runs_page.table
    table.doubleClicked.emit(window.runs_page.model.index(0, 0))
    assert window.stack.currentWidget() is window.train_page
    assert window.train_page.run_dir == run_dir and window.train_page.status == "finished"
    assert window.train_page.charts["loss"].points("train") == 4


def test_a_plan_that_does_not_fit_offers_the_planners_fix(window, qtbot):
    window.model_page.choose(CATALOG_MODEL)
    window.plan_page.set_budget_bytes(12 * GIB)
    window.session.pin("train.seq_len", 32768)  # beyond the longest context 12 GiB holds even with the tiled head
    page = window.plan_page
    assert not window.session.plan.fits and not page.prediction.suggest_btn.isHidden()
    assert page.prediction.suggest_btn.text().startswith("Use sequence length")
    page.prediction.suggest_btn.click()
    assert window.session.plan.fits and page.prediction.suggest_btn.isHidden()
    assert window.session.fixed["train.seq_len"] < 32768


def test_data_page_maps_roles_and_shows_what_was_left_out(window, qtbot):
    fix = Path(__file__).parents[1] / "fixtures" / "data"
    page = window.data_page
    with qtbot.waitSignal(window.session.sig_data, timeout=10000):
        page.load(fix / "roles_custom.jsonl")
    assert "<b>0</b> usable" in page.summary.text()
    assert "this works" in page.notes.text() and not page.notes.isHidden()
    page.roles.setText("bing=assistant, bard=assistant")
    with qtbot.waitSignal(window.session.sig_data, timeout=10000):
        page.roles.editingFinished.emit()
    assert "<b>3</b> usable" in page.summary.text()
    assert window.session.recipe.data.roles == {"bing": "assistant", "bard": "assistant"}
    window.session.recipe.data.roles = {}
    with qtbot.waitSignal(window.session.sig_data, timeout=10000):
        page.load(fix / "kto_label.jsonl")
    assert not page.label_filter.isHidden() and "2 marked bad" in page.summary.text()
    with qtbot.waitSignal(window.session.sig_data, timeout=10000):
        page.label_filter.setChecked(False)
    assert "<b>5</b> usable" in page.summary.text() and window.session.recipe.data.label_filter is False


def test_export_page_shows_what_was_written_and_the_ollama_command(window, qtbot, monkeypatch, tmp_path):
    from PySide6.QtGui import QDesktopServices, QGuiApplication

    page = window.export_page
    window.show_page(page)
    assert page.result.isHidden()
    command = f"ollama create smollm2-run1 -f {tmp_path / 'Modelfile'}"
    done = {"status": "exported", "path": str(tmp_path), "format": "ollama", "quant": "q4_k_m",
            "files": [{"name": "model-q4_k_m.gguf", "bytes": 105_400_000, "kind": "merged model (GGUF)",
                       "quant": "q4_k_m"}, {"name": "Modelfile", "bytes": 410, "kind": "Ollama Modelfile"}],
            "checks": [], "next_command": command, "source": {"run_id": "run1", "step": 12}}
    page.controller.sig_done.emit(done)
    assert not page.result.isHidden()
    texts = [page.result.files_grid.itemAt(i).widget().text() for i in range(page.result.files_grid.count())]
    assert texts[:3] == ["model-q4_k_m.gguf", "105.4 MB", "merged model (GGUF), q4_k_m"]
    assert "step 12" in page.result.head.text() and str(tmp_path) in page.result.folder_label.text()
    assert page.result.command.text() == command and page.result.copy_btn.isVisibleTo(page)
    page.result.copy_btn.click()
    assert QGuiApplication.clipboard().text() == command
    opened = []
    monkeypatch.setattr(QDesktopServices, "openUrl", lambda url: opened.append(url.toLocalFile()))
    page.result.open_btn.click()
    assert opened == [str(tmp_path)]
    page.controller.sig_done.emit({**done, "format": "gguf", "next_command": None})
    assert page.result.command.isHidden() and page.result.copy_btn.isHidden()
