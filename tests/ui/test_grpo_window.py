"""The window's side of grpo: the Train page charts a run's rewards, KL, completion length and the share cut at
the length limit and shows its sampled completions; the Plan and Train pages ask before the user's reward file
runs, bound to its sha256. The metric events are a real grpo run's (the demo's first step, and a tiny model's
run that mixes three rewards)."""
from __future__ import annotations

import hashlib

import pytest
from PySide6.QtWidgets import QLabel

from studio import rewards, runs
from studio.recipe import Recipe
from ui import reward_file

DEMO_STEP_1 = {
    "step": 1, "epoch": 0.0052, "loss": -0.03421546518802643, "tokens_per_s": 27.69, "learning_rate": 0.0,
    "grad_norm": 0.45233631134033203, "completions/mean_length": 52.875, "completions/max_length": 80.0,
    "completions/clipped_ratio": 0.5, "completions/mean_terminated_length": 25.75,
    "rewards/pattern/mean": 0.10938328504562378, "rewards/pattern/std": 0.17547841370105743,
    "reward": 0.10938328504562378, "reward_std": 0.17547841370105743, "frac_reward_zero_std": 0.0, "kl": 0.0,
    "entropy": 3.2491108179092407,
    "samples": [
        {"prompt": "What does a CPU do?", "completion": "Answer: printing a document with paper\nKey points:\n- "
         "According to IBM, 2,000 blue spots are produced per hour of 18 seconds.", "reward": 0.4389,
         "rewards": {"pattern": 0.4389}},
        {"prompt": "What does a CPU do?", "completion": "A computer executes instructions stored on digital devices, "
         "converts raw data into instructions for computer hardware.", "reward": 0.0013, "rewards": {"pattern": 0.0013}},
        {"prompt": "What does a CPU do?", "completion": "Deep within a computer CPU stands as a metal ball where dealt "
         "multit;, silicon chips are so far made of nearly pure carbon silicon", "reward": 0.0,
         "rewards": {"pattern": 0.0}}]}
TINY_STEPS = [
    {"step": 1, "epoch": 0.0714, "loss": -0.04236435890197754, "tokens_per_s": 727.72, "learning_rate": 0.005,
     "completions/mean_length": 14.75, "completions/max_length": 16.0, "completions/clipped_ratio": 0.875,
     "rewards/pattern/mean": 0.0, "rewards/pattern/std": 0.0, "rewards/answer/mean": 0.125,
     "rewards/answer/std": 0.3535533845424652, "rewards/length/mean": 1.0, "rewards/length/std": 0.0,
     "reward": 0.3250000476837158, "reward_std": 0.3535533845424652, "frac_reward_zero_std": 0.5, "kl": 0.0,
     "entropy": 5.938024044036865,
     "samples": [{"prompt": "What is 7 plus 1?", "completion": "O\ufffdCowk\u000fit [PaD", "reward": 0.2,
                  "rewards": {"pattern": 0.0, "answer": 0.0, "length": 1.0}}]},
    {"step": 2, "epoch": 0.1429, "loss": 6.247442797757685e-05, "tokens_per_s": 981.15, "learning_rate": 0.0025,
     "completions/mean_length": 16.0, "completions/max_length": 16.0, "completions/clipped_ratio": 0.875,
     "rewards/pattern/mean": 0.0, "rewards/pattern/std": 0.0, "rewards/answer/mean": 0.0, "rewards/answer/std": 0.0,
     "rewards/length/mean": 1.0, "rewards/length/std": 0.0, "reward": 0.20000001788139343,
     "reward_std": 1.5930011088016727e-08, "frac_reward_zero_std": 1.0, "kl": 0.001561860553920269,
     "entropy": 5.9374823570251465,
     "samples": [{"prompt": "What is 8 plus 4?", "completion": " s adap pdio", "reward": 0.2,
                  "rewards": {"pattern": 0.0, "answer": 0.0, "length": 1.0}},
                 {"prompt": "What is 3 plus 5?", "completion": "moNum", "reward": 0.0,
                  "rewards": {"pattern": 0.0, "answer": 0.0, "length": 0.0}}]},
]


@pytest.fixture
def monitor(qtbot):
    from ui.widgets.run_monitor import RunMonitor

    m = RunMonitor(QLabel())
    qtbot.addWidget(m)
    m.run_charts.ensure()
    return m


def ys(chart, series: str) -> list[float]:
    return [float(v) for v in chart.series[series].data()[1]]


def test_a_grpo_run_charts_reward_kl_length_and_the_share_cut(monitor):
    charts = monitor.run_charts.charts
    monitor.on_metric({"step": 0, "heldout_score_before": 0.0, "sample_prompt": "What is the capital of Italy?"})
    assert set(charts) == {"loss", "lr", "throughput", "memory"}
    monitor.on_metric(DEMO_STEP_1)
    monitor.on_metric({**DEMO_STEP_1, "step": 2, "reward": 0.2, "reward_std": 0.1, "kl": 0.004,
                       "completions/mean_length": 61.0, "completions/clipped_ratio": 0.25, "samples": []})
    assert {"reward", "kl", "completions", "cut"} <= set(charts)
    assert ys(charts["reward"], "mean") == pytest.approx([0.10938, 0.2], abs=1e-5)
    assert ys(charts["reward"], "spread") == pytest.approx([0.17548, 0.1], abs=1e-5)
    assert set(charts["reward"].series) == {"mean", "spread"}  # one reward: its mean is the mean
    assert ys(charts["kl"], "KL") == pytest.approx([0.0, 0.004])
    assert ys(charts["completions"], "mean") == [52.875, 61.0] and ys(charts["completions"], "longest") == [80.0, 80.0]
    assert ys(charts["cut"], "cut") == [50.0, 25.0]  # percent
    assert ys(charts["cut"], "no signal") == [0.0, 0.0]  # every prompt's completions scored differently
    assert monitor.status_label.text().startswith("step 2 · loss -0.0342 · mean reward 0.200")
    grid = monitor.run_charts.grid
    assert grid.getItemPosition(grid.indexOf(charts["cut"]))[:2] == (2, 1)  # eight charts: three columns
    reward = charts["reward"]
    monitor.reset()
    assert set(charts) == {"loss", "lr", "throughput", "memory"}
    assert reward not in monitor.run_charts.refresher.charts
    assert grid.getItemPosition(grid.indexOf(charts["memory"]))[:2] == (1, 1)  # back to two columns
    monitor.on_metric({"step": 1, "loss": 1.0})
    assert "reward" not in charts


def test_several_rewards_get_one_line_each(monitor):
    for d in TINY_STEPS:
        monitor.on_metric(d)
    chart = monitor.run_charts.charts["reward"]
    assert ys(chart, "answer") == [0.125, 0.0] and ys(chart, "length") == [1.0, 1.0] and ys(chart, "pattern") == [0, 0]
    assert ys(chart, "mean") == pytest.approx([0.325, 0.2])
    assert ys(monitor.run_charts.charts["cut"], "no signal") == [50.0, 100.0]  # step 2: every group scored alike


def test_the_samples_panel_shows_the_latest_completions_with_their_rewards(monitor):
    panel = monitor.samples
    assert panel.isHidden()
    monitor.on_metric({"step": 1, "loss": 0.5})
    assert panel.isHidden()
    monitor.on_metric(DEMO_STEP_1)
    assert not panel.isHidden()
    assert "step 1" in panel.title.text() and "What does a CPU do?" in panel.title.text()
    best, middle, worst = panel.views
    assert best.heading.text() == "Best · reward 0.439 (pattern 0.439)"
    assert middle.heading.text().startswith("Middle · reward 0.001") and worst.heading.text().startswith("Worst")
    assert best.completion.toPlainText() == DEMO_STEP_1["samples"][0]["completion"]
    assert best.completion.isReadOnly() and best.prompt.isHidden()  # the shared prompt is in the title
    monitor.on_metric(TINY_STEPS[1])  # a newer step replaces the samples; two prompts: each shows its own
    assert "step 2" in panel.title.text() and "What is" not in panel.title.text()
    assert best.heading.text() == "Best · reward 0.200 (pattern 0.000, answer 0.000, length 1.000)"
    second, third = middle, worst  # two samples: the best and the worst, the third view hidden
    assert second.heading.text() == "Worst · reward 0.000 (pattern 0.000, answer 0.000, length 0.000)"
    assert third.isHidden() and second.completion.toPlainText() == "moNum"
    assert not best.prompt.isHidden() and best.prompt.text() == "prompt: What is 8 plus 4?"
    monitor.on_metric({"step": 3, "loss": 0.1, "reward": 0.3})  # no samples in this event: the last ones stay
    assert "step 2" in panel.title.text()
    monitor.reset()
    assert panel.isHidden() and best.completion.toPlainText() == "" and panel.title.text() == ""


def test_the_samples_panel_appearing_mid_run_takes_a_fifth_of_the_height(monitor, qtbot):
    monitor.resize(1200, 760)
    monitor.show()
    qtbot.waitExposed(monitor)
    monitor.on_metric({"step": 0, "heldout_score_before": 0.0})
    monitor.split.setSizes([380, 0, 330])  # as Qt first shares it between the charts and the log
    monitor.on_metric(DEMO_STEP_1)
    qtbot.wait(50)
    charts, samples, log = monitor.split.sizes()
    total = charts + samples + log
    assert samples >= total // 5 - 2 and log <= total // 10 + 2 and charts >= total * 3 // 5  # ± the handles


# -- the reward file ----------------------------------------------------------------------------------
@pytest.fixture
def answers(monkeypatch):
    """The reward file's question, answered from a list; each question is recorded as (path, size, sha256)."""
    asked: list[tuple] = []
    replies: list[bool] = []

    def ask(_parent, path, size, digest):
        asked.append((path, size, digest))
        return replies.pop(0)

    monkeypatch.setattr(reward_file, "ask", ask)
    return asked, replies


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_decision_pins_the_sha256_on_yes_only_and_asks_again_after_a_change(tmp_path):
    f = tmp_path / "my_reward.py"
    f.write_text("def reward(prompt, completion, **row):\n    return float('Paris' in completion)\n")
    asked = []

    def ask(reply):
        return lambda path, size, digest: asked.append((path, size, digest)) or reply

    d = reward_file.decide(str(f), "", ask(True))
    assert asked == [(f, f.stat().st_size, sha(f))]
    assert d.pins == {reward_file.FILE: str(f), reward_file.SHA256: sha(f)} and not d.message
    assert reward_file.decide(str(f), sha(f), ask(True)).pins == {reward_file.FILE: str(f)} and len(asked) == 1
    assert rewards.agreed(f, sha(f))  # the yes is kept in the user's data folder, where the worker looks
    other = tmp_path / "other.py"
    other.write_text("def reward(prompt, completion, **row):\n    return 0.5\n")
    assert reward_file.decide(str(other), sha(other), ask(False)).message  # a recipe's sha256 alone: asked
    f.write_text("def reward(prompt, completion, **row):\n    return 1.0\n")
    d = reward_file.decide(str(f), d.pins[reward_file.SHA256], ask(False))
    assert len(asked) == 3 and d.pins == {} and "Not running" in d.message and not d.error
    missing = reward_file.decide(str(tmp_path / "nope.py"), "", ask(True))
    big = tmp_path / "big.py"
    big.write_bytes(b"#" * (1 << 20) + b"\n")
    too_big = reward_file.decide(str(big), "", ask(True))
    assert len(asked) == 3 and missing.error and "is not a file" in missing.message and too_big.error
    assert reward_file.decide("", "", ask(True)) == reward_file.Decision() and len(asked) == 3


def test_the_plan_page_asks_when_a_reward_file_is_set_and_shows_grpo_settings_for_grpo_only(qtbot, tmp_path, answers):
    from ui.pages.plan import PlanPage
    from ui.session import Session

    asked, replies = answers
    session = Session()
    page = PlanPage(session)
    qtbot.addWidget(page)
    page.advanced.unfold(True)
    editor = page.advanced.editors[reward_file.FILE]
    objective = page.advanced.editors["train.objective"].editor
    assert "grpo" in [objective.itemText(i) for i in range(objective.count())]
    assert editor.isHidden() and "train.grpo_reward_sha256" not in page.advanced.editors
    session.pin("train.objective", "grpo")
    page._sync_editors()
    assert not editor.isHidden() and not page.advanced.editors["train.grpo_generations"].isHidden()
    f = tmp_path / "my_reward.py"
    f.write_text("def reward(prompt, completion, **row):\n    return 1.0\n")
    replies.append(True)
    editor.editor.setText(str(f))
    editor.editor.editingFinished.emit()
    t = session.resolved_recipe().train
    assert len(asked) == 1 and asked[0][2] == sha(f)
    assert (t.grpo_reward_file, t.grpo_reward_sha256, t.grpo_rewards) == (str(f), sha(f), "file")
    assert sha(f) in page.advanced.note.text() and not page.advanced.note.isHidden()
    page.set_reward_file(str(f))  # the same bytes: agreed already
    assert len(asked) == 1
    f.write_text("def reward(prompt, completion, **row):\n    return 0.0\n")
    replies.append(False)
    page.set_reward_file(str(f))
    t = session.resolved_recipe().train
    assert len(asked) == 2 and t.grpo_reward_file == "" and editor.editor.text() == ""
    assert "cleared" in page.advanced.note.text()
    page.set_reward_file(str(tmp_path / "nope.py"))
    assert len(asked) == 2 and "is not a file" in page.advanced.note.text()
    session.pin("train.objective", "sft")
    page._sync_editors()
    assert editor.isHidden()


def test_a_run_with_a_changed_reward_file_starts_only_after_a_yes(qtbot, tmp_path, answers, monkeypatch):
    from ui.pages.train import TrainPage
    from ui.session import Session

    asked, replies = answers
    session = Session()
    page = TrainPage(session)
    qtbot.addWidget(page)
    started: list = []
    monkeypatch.setattr(page, "start_run_dir", lambda run_dir, argv=None: started.append(run_dir))  # no worker
    f = tmp_path / "my_reward.py"
    f.write_text("def reward(prompt, completion, **row):\n    return 1.0\n")
    r = session.recipe
    r.model.name_or_path, r.data.path = "demo", str(tmp_path / "prompts.jsonl")
    r.train.objective, r.train.grpo_rewards, r.train.grpo_reward_file = "grpo", "file", str(f)
    replies.append(False)
    page.start()
    assert len(asked) == 1 and started == []
    assert not page.banner.isHidden() and "Nothing was started" in page.banner.headline.text()
    replies.append(True)
    page.start()
    assert len(asked) == 2 and len(started) == 1
    assert Recipe.load(started[0] / runs.RECIPE).train.grpo_reward_sha256 == sha(f)
    page.start()  # the same file: not asked again
    assert len(asked) == 2 and len(started) == 2
    f.write_text("def reward(prompt, completion, **row):\n    return 0.5\n")
    replies.append(True)
    page.start()
    assert len(asked) == 3 and asked[-1][2] == sha(f) and session.resolved_recipe().train.grpo_reward_sha256 == sha(f)
    f.unlink()
    page.start()
    assert len(asked) == 3 and len(started) == 3 and "is not a file" in page.banner.headline.text()
