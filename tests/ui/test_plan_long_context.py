"""Issue 30 in the window: the Plan page says the longest context the card holds, which long-sequence parts
and kernels run and the host RAM offloading takes; the Data page sets the dataset's lengths against it."""
from __future__ import annotations

import os

import pytest

from studio import hardware, models
from studio.planner import MAX_CONTEXT

GiB = 1024 ** 3
pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def session(qtbot, monkeypatch):
    """Llama-3.1-8B on a 24 GiB GPU found in a computer that can spare 64 GiB of RAM, seq_len 80,000 fixed
    (it fits with the tiled MLP and offloading; offloading takes about 21 GiB of host RAM)."""
    from ui.session import Session

    monkeypatch.setattr(hardware, "cpu_budget_bytes", lambda total=None: 64 * GiB)
    s = Session()
    s.set_device("cuda", "NVIDIA GeForce RTX 3090")
    s.set_budget(24 * GiB)
    s.pin("train.seq_len", 80000)
    s.set_model("llama-3.1-8b-instruct", models.resolve("llama-3.1-8b-instruct"))
    return s


def test_the_plan_page_says_how_long_a_context_fits_and_what_runs(qtbot, session):
    from ui.pages.plan import PlanPage

    page = PlanPage(session)
    qtbot.addWidget(page)
    plan, card = session.plan, page.long_context
    assert plan.fits and plan.settings.tiled_mlp and plan.settings.offload and session.host_bytes
    assert 80000 <= plan.longest_seq_len < MAX_CONTEXT
    assert card.longest.text() == f"Longest context on this card with these settings: {plan.longest_seq_len:,} tokens."
    assert card.values["Tiled loss head"].text().startswith("on: the loss goes through the output layer")
    assert card.values["Tiled MLP"].text().startswith("on: each layer's MLP runs 4,096 tokens at a time")
    offload = card.values["Activation offloading"].text()
    assert offload.startswith("on: the saved layer inputs take ") and "GiB of host RAM, of the " in offload
    assert offload.endswith("of the 64.00 GiB this computer can spare")
    assert card.values["Kernels"].text().startswith("torch's kernels") or "liger-kernel's fused" in card.values[
        "Kernels"].text()
    for key in ("train.tiled_head", "train.tiled_mlp", "train.offload_activations", "train.kernels"):
        assert page.advanced.editors[key].editor.toolTip()  # the recipe field's help
    assert page.advanced.editors["train.offload_activations"].editor.isChecked()  # the plan's value
    shot = os.environ.get("LORA_STUDIO_SHOT")
    if shot:
        page.resize(1100, 1400)
        page.grab().save(shot)
    with qtbot.waitSignal(session.sig_plan, timeout=5000):
        session.unpin("train.seq_len")  # the default length: neither part is needed, the figure says it would be
    assert card.values["Tiled MLP"].text() == "off" and card.values["Activation offloading"].text() == "off"
    assert "(with the tiled MLP and activation offloading turned on where a length needs them)" in card.longest.text()


def test_the_data_page_sets_the_lengths_against_the_longest_context(qtbot, session):
    from ui.pages.data import DataPage

    page = DataPage(session)
    qtbot.addWidget(page)
    longest = session.plan.longest_seq_len
    edges = [1000, 40000, 79000, 118000]
    tokens = {"count": 40, "min": 1000, "p50": 20000, "p95": 100000, "max": 117999, "seq_len": 80000,
              "truncated": 4, "histogram": {"edges": edges, "counts": [30, 6, 4]}}
    page.token_view.show_tokens(tokens, 80000, None)
    assert page.token_view.context.isHidden()  # no plan has been seen since the tokens came
    with qtbot.waitSignal(session.sig_plan, timeout=5000):
        session.refit()
    text = page.token_view.context.text()
    assert not page.token_view.context.isHidden()
    assert "of 40 examples" in text and f"are longer than the {longest:,} tokens this card holds" in text
    assert page.token_view.chart.lines["longest"].value() == longest
    with qtbot.waitSignal(session.sig_plan, timeout=5000):
        session.pin("train.seq_len", 40000)  # shorter than the card holds: it cuts more, and the line says so
    assert "The plan's sequence length of 40,000 cuts about" in page.token_view.context.text()
    shot = os.environ.get("LORA_STUDIO_SHOT")
    if shot:
        page.tabs.setCurrentWidget(page.token_view)
        page.resize(1100, 800)
        page.grab().save(shot.replace(".png", "-data.png"))
    page.token_view.clear("Waiting…")
    assert page.token_view.context.isHidden()


def test_the_linear_attention_row_shows_for_qwen35_only(qtbot, session):
    """A model with linear-attention layers adds a row to the card (which path runs them); others do not show it."""
    from ui.pages.plan import PlanPage

    page = PlanPage(session)
    qtbot.addWidget(page)
    card = page.long_context
    assert card.values["Linear attention"].isHidden() and card.titles["Linear attention"].isHidden()
    with qtbot.waitSignal(session.sig_plan, timeout=10000):
        session.set_model("qwen3.5-9b", models.resolve("qwen3.5-9b"))
    assert not card.values["Linear attention"].isHidden() and "linear-attention layers" in card.values[
        "Linear attention"].text()
    assert not card.values["Kernels"].isHidden()
