"""The Playground page driving the real chat worker on a tiny run: streamed side-by-side answers, votes, saving."""
from __future__ import annotations

import io
import json

import pytest

from studio import paths, playground, runs
from studio.recipe import Recipe
from ui.main_window import MainWindow

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def tiny_run(tiny_model_dir):
    from test_chat_worker import make_adapter

    recipe = Recipe(name="tiny")
    recipe.model.name_or_path = str(tiny_model_dir)
    recipe.quant.mode = "none"
    run_dir = runs.create(recipe, paths.runs_dir())
    make_adapter(tiny_model_dir, run_dir / runs.ADAPTER, seed=3)
    runs.write_state(run_dir, status="finished", eval={"val_loss_base": 5.9, "val_loss_adapter": 2.1,
                                                       "score_base": 0, "score_adapter": 3, "score_total": 3})
    return run_dir


def test_playground_streams_both_panes_votes_and_saves(qtbot, tiny_run):
    w = MainWindow()
    qtbot.addWidget(w)
    w.show()
    page = w.playground_page
    try:
        w.show_page(6)
        page.select_run(tiny_run)
        assert page.pane_a.current().label == "base" and page.pane_b.current().label == tiny_run.name
        assert page.side.isChecked()
        page.sampling.max_new.setValue(12)
        pieces: list[tuple[str, str]] = []
        page.controller.sig_token.connect(lambda _id, variant, text: pieces.append((variant, text)))
        answers: list[dict] = []
        page.controller.sig_answer.connect(answers.append)
        assert page.send("What is two plus two?")
        qtbot.waitUntil(lambda: len(answers) == 2, timeout=90000)
        assert {a["variant"] for a in answers} == {"base", tiny_run.name}
        for pane, answer in ((page.pane_a, answers[0]), (page.pane_b, answers[1])):
            streamed = "".join(t for v, t in pieces if v == answer["variant"])
            assert streamed == answer["text"] and answer["text"]
            assert pane.text.toPlainText().endswith("Model: " + answer["text"])  # the pane showed the stream
            assert "tokens/s" in pane.stats.text() and "first token" in pane.stats.text()
        assert answers[0]["text"] != answers[1]["text"]
        # Mark B better: kept in the run folder, tallied on the Runs page.
        assert page.votes.vote_b.isEnabled()
        page.votes.vote_b.click()
        assert playground.tally(tiny_run) == {"a": 0, "b": 1, "tie": 0}
        w.runs_page.reload()
        row = next(r for r in w.runs_page.model._rows if r["run"] == tiny_run.name)
        assert row["votes"] == "A 0 · B 1 · tie 0"
        assert row["val loss"] == "5.900 → 2.100" and row["score"] == "0/3 → 3/3"
        # A second turn keeps the conversation; saving writes both panes.
        answers.clear()
        assert page.send("And three plus three?")
        qtbot.waitUntil(lambda: len(answers) == 2, timeout=90000)
        assert len(page.pane_a.history) == 4
        saved = json.loads(page.save_conversation().read_text())
        assert saved["panes"]["b"]["variant"] == tiny_run.name and len(saved["panes"]["b"]["messages"]) == 4
    finally:
        page.controller.kill_now()


def test_train_page_shows_the_evaluation_of_a_finished_run(qtbot, tmp_path):
    """The metric event a finished run ends with (eval_text) fills the Evaluation card."""
    from studio.events import Emitter

    w = MainWindow()
    qtbot.addWidget(w)
    run_dir = runs.create(Recipe(name="done"), tmp_path)
    em = Emitter(run=run_dir.name, log_path=run_dir / runs.EVENTS, stream=io.BytesIO())
    em.emit("progress", phase="sample-after", done=3, total=20, eta_s=42.0)
    em.emit("metric", step=20, loss=1.2)
    em.emit("metric", step=20, eval_report=str(run_dir / "eval.json"), val_loss_base=3.1, val_loss_adapter=1.5,
            eval_text="held-out format score 0/20 \u2192 20/20\nprompt: What is the capital of Italy?\n  base:\n"
                      "    The capital of Italy is Rome.\n  fine-tuned:\n    Answer: Rome.")
    em.close()
    page = w.train_page
    assert page.monitor.eval_card.isHidden()
    assert page.show_run(run_dir)
    assert not page.monitor.eval_card.isHidden()
    assert "held-out format score 0/20 → 20/20" in page.monitor.eval_card.text.text()
    assert "Answer: Rome." in page.monitor.eval_card.text.text()
