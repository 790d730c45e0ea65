"""The Data page sets what the CLI's --format, --columns and --roles set: a format menu with detection first, a
column menu per field the format reads, and the mappings the import tried as buttons; each change reads the file
again and the preview shows it."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("PySide6")


def _odd(tmp_path):
    path = tmp_path / "odd.jsonl"
    path.write_text("".join(json.dumps({"ask": f"What is {i} plus 1?", "reply": f"It is {i + 1}.", "id": i}) + "\n"
                            for i in range(20)))
    return path


def _wait_read(qtbot, data_page):
    qtbot.waitUntil(lambda: not data_page.busy.isVisible() and "Reading" not in data_page.summary.text(), timeout=10000)


def test_a_file_no_format_reads_offers_what_works_and_a_click_uses_it(qtbot, data_page, tmp_path):
    data_page.load(_odd(tmp_path))
    _wait_read(qtbot, data_page)
    assert data_page.report is None and "no known format" in data_page.summary.text()
    assert [b.text() for b in data_page.suggest_buttons][0] == "Use prompt_completion: prompt from ask, completion from reply"
    with qtbot.waitSignal(data_page.sig_loaded, timeout=10000):
        data_page.suggest_buttons[0].click()
    data = data_page.session.recipe.data
    assert (data.format, data.columns) == ("prompt_completion", {"prompt": "ask", "completion": "reply"})
    assert data_page.report.usable == 20 and data_page.format.currentData() == "prompt_completion"
    assert {n: m.currentData() for n, m in data_page.field_menus.items()} == {
        "prompt": "ask", "completion": "reply", "system": "", "tools": ""}
    assert data_page.suggest_buttons == []  # every row usable: nothing more to offer
    shown = [data_page.preview_model.data(data_page.preview_model.index(0, c)) for c in range(data_page.preview_model.columnCount())]
    assert any("What is 0 plus 1?" in str(v) for v in shown)


def test_choosing_a_format_and_its_columns_in_the_menus(qtbot, data_page, tmp_path):
    data_page.load(_odd(tmp_path))
    _wait_read(qtbot, data_page)
    qa = data_page.format.findData("question_answer")
    data_page.format.setCurrentIndex(qa)
    data_page.format.activated.emit(qa)  # as a click on the menu does
    _wait_read(qtbot, data_page)
    assert data_page.session.recipe.data.format == "question_answer" and data_page.report is None  # no 'question' column
    assert list(data_page.field_menus) == ["question", "answer", "context", "system"]
    menu = data_page.field_menus["question"]
    assert [menu.itemData(i) for i in range(menu.count())] == ["", "ask", "reply", "id"]  # the file's columns
    menu.setCurrentIndex(menu.findData("ask"))
    menu.activated.emit(menu.currentIndex())
    _wait_read(qtbot, data_page)
    answer = data_page.field_menus["answer"]
    answer.setCurrentIndex(answer.findData("reply"))
    with qtbot.waitSignal(data_page.sig_loaded, timeout=10000):
        answer.activated.emit(answer.currentIndex())
    assert data_page.session.recipe.data.columns == {"question": "ask", "answer": "reply"}
    assert data_page.report.format == "question_answer" and data_page.report.usable == 20
    assert data_page.format.itemText(0).startswith("Detect automatically")
    # the token statistics are asked for with the same format and columns
    from studio.data import display

    args = display.inspect_args(data_page.path, "m", 64, {}, True, None, "question_answer", {"question": "ask"})
    assert args[args.index("--format") + 1] == "question_answer"
    assert json.loads(args[args.index("--columns") + 1]) == {"question": "ask"}


def test_another_file_starts_from_detection(qtbot, data_page, tmp_path, chat_jsonl):
    data_page.load(_odd(tmp_path))
    _wait_read(qtbot, data_page)
    with qtbot.waitSignal(data_page.sig_loaded, timeout=10000):
        data_page.suggest_buttons[0].click()
    with qtbot.waitSignal(data_page.sig_loaded, timeout=10000):
        data_page.load(chat_jsonl)
    assert (data_page.session.recipe.data.format, data_page.session.recipe.data.columns) == ("auto", {})
    assert data_page.report.format == "messages" and "found messages" in data_page.format.itemText(0)
