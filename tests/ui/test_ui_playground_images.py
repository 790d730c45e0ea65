"""The Playground's prompt bar with images: attaching (Image…, drops on the page or the prompt), thumbnails,
refusals (a text model, a file that is not an image or is gone), and a real tiny vision-language run answering
about the same image in both panes, its votes and saved conversations keeping the image paths."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import tiny

from studio import paths, playground, runs

pytestmark = pytest.mark.timeout(900)


_KEEP: list = []  # a QDropEvent does not own its QMimeData: it must outlive the event


def dropped(paths_: list[Path]):
    """A drop of local files, as a file manager makes it."""
    from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
    from PySide6.QtGui import QDropEvent

    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths_])
    _KEEP.append(mime)
    return QDropEvent(QPointF(20, 20), Qt.DropAction.CopyAction, mime, Qt.MouseButton.NoButton,
                      Qt.KeyboardModifier.NoModifier)


def show_model(window, model: Path):
    """The Playground answering with ``model`` on its own (the session's base model)."""
    page = window.playground_page
    window.session.recipe.model.name_or_path = str(model)
    window.show_page(page)
    page.reload()
    assert page.source.currentData() == ("model", str(model))
    return page


def test_a_text_model_takes_no_images_and_bad_files_are_named(window, tiny_model_dir, tmp_path):
    red = tiny.write_image(tmp_path / "red.png", (96, 72), (220, 20, 20))
    page = show_model(window, tiny_model_dir)
    assert not page.reads_images and not page.ask.image_btn.isEnabled()
    assert "reads text only" in page.ask.image_btn.toolTip()
    page.dropEvent(dropped([red]))  # dropped on a text model: a clear banner, nothing attached or sent
    assert page.ask.images() == [] and page.banner.isVisible()
    assert "reads text only" in page.banner.headline.text() and "vision-language model" in page.banner.headline.text()

    vlm = tiny.make_vlm(tmp_path / "vlm", "qwen2_vl")
    page = show_model(window, vlm)
    assert page.reads_images and page.ask.image_btn.isEnabled()
    (tmp_path / "notes.txt").write_text("hi")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    assert page.attach_images([str(tmp_path / "notes.txt"), str(tmp_path / "broken.png")]) == []
    words = page.banner.headline.text()
    assert "notes.txt: not an image file" in words and "broken.png is not a PNG, JPEG" in words
    # dropped on the prompt line: attached, not typed into it; shown as a removable thumbnail
    blue = tiny.write_image(tmp_path / "blue.png", (30, 40), (20, 20, 220))
    assert page.eventFilter(page.ask.prompt, dropped([red, blue]))
    assert page.ask.images() == [str(red), str(blue)] and page.ask.prompt.text() == ""
    assert page.ask.strip.isVisibleTo(page) and page.ask.attached[0].picture.pixmap().size().toTuple() == (48, 36)
    page.ask.attached[1].remove_btn.click()
    assert page.ask.images() == [str(red)]
    # the file goes before sending: named, nothing sent, the prompt and the image kept
    moved = tmp_path / "moved.png"
    shutil.move(red, moved)
    page.ask.prompt.setText("What colour?")
    assert not page.send() and not page.round.busy and not page.controller.running
    assert "red.png does not exist" in page.banner.headline.text()
    assert page.ask.prompt.text() == "What colour?" and page.ask.images() == [str(red)]


@pytest.fixture
def vision_run(tmp_path):
    """A tiny Qwen2-VL run trained on colour images (test_vision's), in the studio's runs folder."""
    from test_vision import COLOURS, _recipe, colour_rows, run_in_process

    folder = tmp_path / "images"
    folder.mkdir()
    images = {name: str(tiny.write_image(folder / f"{name}.png", (56, 56), rgb)) for name, rgb in COLOURS.items()}
    qwen = tiny.make_vlm(tmp_path / "qwen2_vl", "qwen2_vl")
    run_dir = runs.create(_recipe(qwen, tmp_path / "rows.jsonl", max_steps=10), paths.runs_dir())
    code, events = run_in_process(run_dir, colour_rows(images, 10))
    assert code == 0, [e.data for e in events if e.type == "error"]
    return run_dir, images


def test_both_panes_answer_about_the_same_image_and_keep_it(window, qtbot, vision_run):
    run_dir, images = vision_run
    page = window.playground_page
    window.show_page(page)
    try:
        page.select_run(run_dir)
        assert page.pane_a.current().label == "base" and page.pane_b.current().label == run_dir.name
        assert page.side.isChecked() and page.reads_images and page.ask.image_btn.isEnabled()
        page.sampling.max_new.setValue(5)
        page.dropEvent(dropped([Path(images["green"])]))
        assert page.ask.images() == [images["green"]]
        answers: list[dict] = []
        page.controller.sig_answer.connect(answers.append)
        assert page.send("What colour is this?")
        assert page.ask.images() == [] and page.loaded_key[2] is True  # the worker loads the whole VLM
        qtbot.waitUntil(lambda: len(answers) == 2 or page.banner.isVisible(), timeout=600000)
        assert len(answers) == 2, page.banner.headline.text()
        turn = {"role": "user", "content": "<image>What colour is this?", "images": [images["green"]]}
        for pane, answer in ((page.pane_a, answers[0]), (page.pane_b, answers[1])):
            assert pane.history[0] == turn and pane.image_count() == 1  # its thumbnail in the user's turn
            assert pane.text.toPlainText().endswith("Model: " + answer["text"])
        assert answers[1]["text"].startswith("It is"), answers  # what the image rows taught it
        assert answers[0]["text"] != answers[1]["text"]
        page.votes.vote_b.click()
        assert playground.votes(run_dir)[-1]["images"] == [images["green"]]
        saved = json.loads(page.save_conversation().read_text())
        assert saved["panes"]["a"]["messages"][0] == turn and saved["panes"]["b"]["messages"][0] == turn
    finally:
        page.controller.kill_now()
