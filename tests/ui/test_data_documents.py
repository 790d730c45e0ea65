"""The Data page on a folder of documents: file-by-file progress while it is read, the Documents tab when it
is, and a folder's read abandoned when another dataset is chosen meanwhile."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("PySide6")


def _folder(tmp_path, n: int):
    folder = tmp_path / f"docs{n}"
    folder.mkdir()
    for i in range(n):
        (folder / f"note{i:02}.md").write_text(f"# Note {i}\n\nThe clinic opens at {8 + i % 3} on weekday {i}.\n",
                                               encoding="utf-8")
    return folder


def test_a_folder_is_read_file_by_file_and_shown_as_documents(qtbot, data_page, tmp_path):
    seen = []
    data_page._inspector.progress.connect(lambda path, i, n, name: seen.append((i, n, name, data_page.summary.text())))
    folder = _folder(tmp_path, 3)
    with qtbot.waitSignal(data_page.sig_loaded, timeout=60000):
        data_page.load(folder)
    assert [(i, n, name) for i, n, name, _ in seen] == [(0, 3, "note00.md"), (1, 3, "note01.md"), (2, 3, "note02.md")]
    assert seen[1][3] == "Reading documents: 2 of 3 (note01.md)…"  # the summary line as the file was read
    assert data_page.report.format == "documents" and data_page.report.usable == 3
    tabs = data_page.tabs
    assert tabs.tabText(1) == "Documents (3)" and tabs.documents.items.count() == 3
    assert tabs.documents.text.toPlainText().startswith("# Note 0")
    assert "3</b> read" in data_page.summary.text() and not data_page.format.isEnabled()


def test_choosing_another_dataset_abandons_a_folder_being_read(qtbot, data_page, tmp_path):
    emitted = []
    folder = _folder(tmp_path, 30)
    data_page._inspector.progress.connect(lambda path, i, n, name: emitted.append(path))
    data_page.load(folder)
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"prompt": f"q{i}", "completion": f"a{i}"}) + "\n" for i in range(5)))
    with qtbot.waitSignal(data_page.sig_loaded, timeout=60000):
        data_page.load(rows)
    assert data_page.report.format == "prompt_completion" and data_page.tabs.indexOf(data_page.tabs.documents) < 0
    qtbot.wait(1500)  # the folder's thread meets the newer path at its next file and stops
    assert emitted.count(folder) < 30 and data_page.report.format == "prompt_completion"
