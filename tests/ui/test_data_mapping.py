"""The Data page sets what the CLI's --format, --columns and --roles set: a format menu with detection first, a
column menu per field the format reads, and the mappings the import tried as buttons; each change reads the file
again and the preview shows it."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("PySide6")


@pytest.fixture()
def page(qtbot):
    from ui.pages.data import DataPage
    from ui.session import Session

    p = DataPage(Session())
    qtbot.addWidget(p)
    p.resize(1100, 700)
    p.show()
    return p


def _odd(tmp_path):
    path = tmp_path / "odd.jsonl"
    path.write_text("".join(json.dumps({"ask": f"What is {i} plus 1?", "reply": f"It is {i + 1}.", "id": i}) + "\n"
                            for i in range(20)))
    return path


def _wait_read(qtbot, page):
    qtbot.waitUntil(lambda: not page.busy.isVisible() and "Reading" not in page.summary.text(), timeout=10000)


def test_a_file_no_format_reads_offers_what_works_and_a_click_uses_it(qtbot, page, tmp_path):
    page.load(_odd(tmp_path))
    _wait_read(qtbot, page)
    assert page.report is None and "no known format" in page.summary.text()
    assert [b.text() for b in page.suggest_buttons][0] == "Use prompt_completion: prompt from ask, completion from reply"
    with qtbot.waitSignal(page.sig_loaded, timeout=10000):
        page.suggest_buttons[0].click()
    data = page.session.recipe.data
    assert (data.format, data.columns) == ("prompt_completion", {"prompt": "ask", "completion": "reply"})
    assert page.report.usable == 20 and page.format.currentData() == "prompt_completion"
    assert {n: m.currentData() for n, m in page.field_menus.items()} == {
        "prompt": "ask", "completion": "reply", "system": "", "tools": ""}
    assert page.suggest_buttons == []  # every row usable: nothing more to offer
    shown = [page.preview_model.data(page.preview_model.index(0, c)) for c in range(page.preview_model.columnCount())]
    assert any("What is 0 plus 1?" in str(v) for v in shown)


def test_choosing_a_format_and_its_columns_in_the_menus(qtbot, page, tmp_path):
    page.load(_odd(tmp_path))
    _wait_read(qtbot, page)
    qa = page.format.findData("question_answer")
    page.format.setCurrentIndex(qa)
    page.format.activated.emit(qa)  # as a click on the menu does
    _wait_read(qtbot, page)
    assert page.session.recipe.data.format == "question_answer" and page.report is None  # no 'question' column
    assert list(page.field_menus) == ["question", "answer", "context", "system"]
    menu = page.field_menus["question"]
    assert [menu.itemData(i) for i in range(menu.count())] == ["", "ask", "reply", "id"]  # the file's columns
    menu.setCurrentIndex(menu.findData("ask"))
    menu.activated.emit(menu.currentIndex())
    _wait_read(qtbot, page)
    answer = page.field_menus["answer"]
    answer.setCurrentIndex(answer.findData("reply"))
    with qtbot.waitSignal(page.sig_loaded, timeout=10000):
        answer.activated.emit(answer.currentIndex())
    assert page.session.recipe.data.columns == {"question": "ask", "answer": "reply"}
    assert page.report.format == "question_answer" and page.report.usable == 20
    assert page.format.itemText(0).startswith("Detect automatically")
    # the token statistics are asked for with the same format and columns
    from studio.data import display

    args = display.inspect_args(page.path, "m", 64, {}, True, None, "question_answer", {"question": "ask"})
    assert args[args.index("--format") + 1] == "question_answer"
    assert json.loads(args[args.index("--columns") + 1]) == {"question": "ask"}


def test_another_file_starts_from_detection(qtbot, page, tmp_path, chat_jsonl):
    page.load(_odd(tmp_path))
    _wait_read(qtbot, page)
    with qtbot.waitSignal(page.sig_loaded, timeout=10000):
        page.suggest_buttons[0].click()
    with qtbot.waitSignal(page.sig_loaded, timeout=10000):
        page.load(chat_jsonl)
    assert (page.session.recipe.data.format, page.session.recipe.data.columns) == ("auto", {})
    assert page.report.format == "messages" and "found messages" in page.format.itemText(0)
