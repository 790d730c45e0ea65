"""The Train page's sampled completions of a grpo run: the latest prompt's best, middle and worst completion
with their rewards, replaced by each metric event that carries ``samples``, so that what the rewards favour
can be read while the run trains (the charts show only their numbers)."""
from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QFontDatabase
from PySide6.QtWidgets import QPlainTextEdit, QVBoxLayout, QWidget

from studio import trainview
from ui.widgets.common import Card, content_row, label

COMPLETION_MIN_HEIGHT = 44  # two lines: the panel shares the page with eight charts


class SampleView(QWidget):
    """One sampled completion: its rank and reward, the prompt (its end), the completion in full."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(4)
        self.heading = label("", "value", wrap=True)
        self.prompt = label("", "muted", wrap=True)
        self.completion = QPlainTextEdit()
        self.completion.setReadOnly(True)  # read-only text stays selectable, so a completion can be copied
        self.completion.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.completion.setMinimumHeight(COMPLETION_MIN_HEIGHT)
        for w in (self.heading, self.prompt):
            w.setTextFormat(Qt.TextFormat.PlainText)  # a dataset's prompt is shown as written, never as HTML
            lay.addWidget(w)
        lay.addWidget(self.completion, 1)

    def show_sample(self, sample: dict, rank: str, own_prompt: bool) -> None:
        """``own_prompt``: show the prompt here (the samples answer different prompts)."""
        prompt = str(sample.get("prompt", ""))
        self.heading.setText(trainview.sample_heading(sample, rank))
        self.prompt.setText(f"prompt: {trainview.short_prompt(prompt)}")
        self.prompt.setToolTip(prompt)
        self.prompt.setVisible(own_prompt)
        self.completion.setPlainText(str(sample.get("completion", "")))


class SamplesPanel(Card):
    """The latest sampled completions side by side; hidden until a metric carries some, and after ``clear``."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("", parent)
        self.title = label("", "value", wrap=True)
        self.title.setTextFormat(Qt.TextFormat.PlainText)  # it carries the shared prompt
        self.body.addWidget(self.title)
        row = QWidget()
        cols = content_row(row)
        self.views = [SampleView() for _ in range(max(trainview.SAMPLE_RANKS))]
        for v in self.views:
            cols.addWidget(v, 1)
        self.body.addWidget(row, 1)
        self.hide()

    def show_samples(self, step: int, samples: list[dict]) -> None:
        """Show ``samples`` (best first, as the worker sends them) in place of the earlier ones; a prompt they
        share is shown once, in the title."""
        prompts = {str(s.get("prompt", "")) for s in samples}
        shared = prompts.pop() if len(prompts) == 1 else None
        self.title.setText(f"Sampled completions at step {step}, best first"
                           + (f" · prompt: {trainview.short_prompt(shared)}" if shared else ""))
        self.title.setToolTip(shared or "")
        for i, view in enumerate(self.views):
            view.setVisible(i < len(samples))
            if i < len(samples):
                view.show_sample(samples[i], trainview.sample_rank(i, len(samples)), shared is None)
        self.show()

    def clear(self) -> None:
        self.title.setText("")
        for view in self.views:
            view.completion.clear()
        self.hide()
