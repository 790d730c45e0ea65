"""The pages' widgets, each bound to its model: change the model, read the widget (napari's qt_dims style)."""
from __future__ import annotations

import json

from PySide6.QtCore import Qt

from studio import events as ev
from studio import paths, runqueue, runs
from studio.recipe import Recipe
from ui.widgets.data_tabs import DatasetTabs, TokenView
from ui.widgets.model_card import DownloadPanel
from ui.widgets.model_list import ROLE_ID, ModelList, ModelListModel
from ui.widgets.run_compare import DiffView, RunChart
from ui.widgets.run_list import RunList, run_table
from ui.widgets.run_queue import ENTRY_ID, QueueList

HIT = {"repo_id": "acme/tiny", "params": 1_500_000, "fits": True, "gated": False, "license": "mit", "downloads": 3}


def test_the_model_list_follows_its_search(qtbot):
    model = ModelListModel()
    widget = ModelList(model)
    qtbot.addWidget(widget)
    widget.populate()
    assert widget.item(0).text() == "BUILT IN" and "hub:acme/tiny" not in widget.idents()
    model.set_search("tiny", [HIT])
    assert widget.item(0).text() == "HUB SEARCH: TINY" and widget.idents()[:2] == ["hub:acme/tiny", "demo"]
    assert not widget.item(0).flags() & Qt.ItemFlag.ItemIsEnabled  # a header cannot be chosen
    with qtbot.waitSignal(widget.chosen) as chosen:
        widget.itemClicked.emit(widget.item(1))
    assert chosen.args == ["hub:acme/tiny"]
    widget.select("demo")
    assert widget.currentItem().data(ROLE_ID) == "demo"


def test_the_download_panel_shows_progress_and_hides_for_cached_models(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    panel = DownloadPanel(lambda: False)
    qtbot.addWidget(panel)
    panel.show()
    panel.offer("acme/tiny")
    assert panel.download_btn.isVisible() and panel.download_btn.text() == "Download acme/tiny"
    panel.show_event(ev.Event(ev.PROGRESS, {"done": 1 << 20, "total": 4 << 20}))
    assert panel.progress.value() == 250 and panel.progress_text.text() == "1.00 MiB of 4.00 MiB"
    snap = tmp_path / "models--acme--tiny" / "snapshots" / "a"
    snap.mkdir(parents=True)
    (snap / "config.json").write_text("{}")
    panel.offer("acme/tiny")
    assert not panel.download_btn.isVisible()


def _run(name: str, rank: int):
    r = Recipe(name=name)
    r.model.name_or_path, r.data.path, r.lora.rank = "/models/tiny", "/data/chat.jsonl", rank
    d = runs.create(r, paths.runs_dir())
    (d / runs.EVENTS).write_text("".join(json.dumps({"v": 1, "type": "metric", "seq": s, "ts": 1.0 + s,
                                                     "data": {"step": s, "loss": 2.0 / s}}) + "\n" for s in (1, 2, 3)))
    return d


def test_the_runs_widgets_follow_the_run_list(qtbot):
    _run("a", 8), _run("b", 16)
    run_list = RunList()
    table, chart, diff = run_table(run_list), RunChart(run_list), DiffView(run_list)
    for w in (table, chart, diff):
        qtbot.addWidget(w)
    run_list.reload()
    assert table.model().rowCount() == 2 and table.model().raw(0, 12) in (8, 16)  # the rank column
    run_list.select([0, 1])
    assert sorted(s.n for s in chart.chart.series.values()) == [3, 3]
    assert "lora.rank:" in diff.toPlainText()
    run_list.select([0])
    assert len(chart.chart.series) == 1 and diff.toPlainText().startswith("Select two or more runs")
    table.selectRow(1)
    assert [s.id for s in run_list.selected] == [run_list.summaries[1].id]  # the table selects on the list


def test_the_queue_list_lists_and_cancels_entries(qtbot):
    panel = QueueList()
    qtbot.addWidget(panel)
    panel.reload()
    assert panel.item(0).text() == "(empty)" and not panel.run_btn.isEnabled()
    r = Recipe(name="q")
    r.model.name_or_path, r.data.path = "/models/tiny", "/data/chat.jsonl"
    entry = runqueue.add(r, None, "queued recipe")
    panel.reload()
    assert panel.item(0).data(ENTRY_ID) == entry["id"] and "queued recipe" in panel.item(0).text()
    assert panel.run_btn.isEnabled()
    panel.setCurrentRow(0)
    panel.cancel_entry()
    assert not panel.item(0).text().startswith("waiting")


def test_the_dataset_tabs_show_a_report(qtbot):
    tabs = DatasetTabs()
    qtbot.addWidget(tabs)
    tabs.show_report({"rows": 3, "preview": [{"row": 1, "messages": [{"role": "user", "content": "hi"}]}],
                      "problems": [{"line": 2, "message": "bad JSON"}], "problems_total": 1})
    assert tabs.preview_model.rowCount() == 1 and tabs.tabText(0) == "Preview (1 of 3 rows)"
    assert tabs.problems.item(0).text() == "line 2: bad JSON" and tabs.tabText(1) == "Problems (1)"
    tabs.show_report({"rows": 4, "preview": []})
    assert tabs.problems.item(0).text() == "No problems found: all 4 rows are usable." and tabs.tabText(1) == "Problems"


def test_a_preview_row_with_images_shows_a_thumbnail_and_every_path(qtbot, tmp_path):
    from PIL import Image

    big, small = tmp_path / "receipt.png", tmp_path / "chart.jpg"
    Image.new("RGB", (640, 320), (10, 120, 200)).save(big)
    Image.new("RGB", (20, 40), (200, 10, 10)).save(small)
    tabs = DatasetTabs()
    qtbot.addWidget(tabs)
    chat = [{"role": "user", "content": "<image>What is the total?"}, {"role": "assistant", "content": "12.50"}]
    tabs.show_report({"rows": 2, "images": 3, "preview": [
        {"row": 1, "messages": chat, "images": [str(big)], "image_sizes": [[640, 320]]},
        {"row": 2, "messages": [{"role": "user", "content": "<image><image>Compare"},
                                {"role": "assistant", "content": "The first."}], "images": [str(small), str(big)]}]})
    model = tabs.preview_model
    col = model._columns.index("images")
    assert model._columns[:2] == ["turns", "images"]
    thumb = model.data(model.index(0, col), Qt.ItemDataRole.DecorationRole)
    assert thumb is not None and (thumb.width(), thumb.height()) == (56, 28)  # scaled while read, aspect kept
    second = model.data(model.index(1, col), Qt.ItemDataRole.DecorationRole)
    assert (second.width(), second.height()) == (28, 56)
    assert model.data(model.index(1, col), Qt.ItemDataRole.DisplayRole) == "2 images"
    tip = model.data(model.index(1, col), Qt.ItemDataRole.ToolTipRole)
    assert tip.splitlines() == [f"<image> 1: {small}", f"<image> 2: {big}"]
    assert model.data(model.index(0, model._columns.index("user")), Qt.ItemDataRole.DisplayRole).startswith("<image>")
    assert tabs.preview.verticalHeader().defaultSectionSize() >= 56
    tabs.show_report({"rows": 1, "preview": [{"row": 1, "messages": chat}]})  # text rows again: no column
    assert "images" not in tabs.preview_model._columns
    assert tabs.preview.verticalHeader().defaultSectionSize() < 56


def test_a_folder_of_documents_shows_each_text_the_skipped_files_and_the_chunks(qtbot):
    tabs = DatasetTabs()
    qtbot.addWidget(tabs)
    report = {"format": "documents", "documents": 1, "rows": 2, "chunks": 3, "chunk_tokens": 62,
              "files": [{"file": "a/lease.pdf", "kind": "pdf", "pages": 2, "characters": 40, "tokens": 12,
                         "chunks": 3, "tables": 0, "header_footer_lines_removed": 4, "text": "Clause 1. Rent.",
                         "text_truncated": False}],
              "skipped_files": [{"file": "scan.pdf", "reason": "no text layer: it looks like a scan"}],
              "chunk_preview": [{"file": "a/lease.pdf", "tokens": 9, "text": "Clause 1."}],
              "problem_groups": [], "problems": [], "problems_total": 1, "preview": []}
    tabs.show_report(report)
    names = [tabs.tabText(i) for i in range(tabs.count())]
    assert names[:3] == ["Preview (0 of 2 documents)", "Documents (1)", "Chunks (3)"]
    assert names[3] == "Problems (1)"
    assert [tabs.problems.item(i).text() for i in range(tabs.problems.count())] == [
        "1 file(s) skipped; the others are read. Fix or convert a file to use it",
        "scan.pdf: no text layer: it looks like a scan"]
    docs = tabs.documents
    assert docs.items.count() == 2 and docs.items.item(0).text().startswith("a/lease.pdf")
    assert "4 header/footer line(s) removed" in docs.items.item(0).text()
    assert docs.text.toPlainText() == "Clause 1. Rent."
    docs.items.setCurrentRow(1)
    assert docs.text.toPlainText() == "Skipped: no text layer: it looks like a scan"
    chunks = tabs.chunks
    assert chunks.items.item(0).text() == "a/lease.pdf  ·  9 tokens" and chunks.text.toPlainText() == "Clause 1."
    assert chunks.items.item(1).text() == "… and 2 more chunk(s)"
    tabs.show_report({"rows": 4, "preview": []})  # a file of rows again: the two tabs go
    assert [tabs.tabText(i) for i in range(tabs.count())] == ["Preview (0 of 4 rows)", "Problems", "Tokens"]


def test_the_token_view_shows_and_clears_the_statistics(qtbot):
    view = TokenView()
    qtbot.addWidget(view)
    tokens = {"count": 4, "p50": 10, "p95": 30, "max": 40, "histogram": {"edges": [0, 20, 40], "counts": [3, 1]}}
    view.show_tokens(tokens, 20, [("hello", False), ("world", True)])
    assert view.status.text().startswith("4 examples · median 10") and "about 1 longer than the planned 20" in view.status.text()
    assert view.chart.lines["seq_len"].value() == 20 and "helloworld" in view.example.toPlainText()
    assert view.context.isHidden() and "longest" not in view.chart.lines
    view.show_context("1 of 4 examples (25.0%) are longer than the 30 tokens this card holds", 30)
    assert not view.context.isHidden() and view.chart.lines["longest"].value() == 30
    assert view.chart.lines["seq_len"].value() == 20  # redrawn with the histogram, not lost
    view.clear("Waiting…")
    assert view.tokens == {} and view.example.toPlainText() == "" and view.status.text() == "Waiting…"
    assert view.context.isHidden()
