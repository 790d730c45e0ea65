"""The Playground's widgets: the source bar, a pane that streams one variant's answers, the sampling
settings, the vote bar and the prompt line. They show and ask; the page drives the chat worker."""
from __future__ import annotations

from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtGui import QTextCursor
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QGridLayout,
    QHBoxLayout,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from studio import chat_client, playground
from ui.widgets.common import Card, content_row, label, primary_button


class Pane(QWidget):
    """One side of the conversation: its variant, the streamed transcript, and the last answer's speed."""

    def __init__(self, title: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        head = QHBoxLayout()
        head.addWidget(label(title))
        self.variant = QComboBox()
        self.variant.setToolTip("What answers in this pane: the base model, the run's adapter, a checkpoint, "
                                "or another run on the same base")
        head.addWidget(self.variant, 1)
        lay.addLayout(head)
        self.text = QPlainTextEdit()
        self.text.setReadOnly(True)
        lay.addWidget(self.text, 1)
        self.stats = label("", "muted")
        lay.addWidget(self.stats)
        self.history: list[dict] = []
        self.partial = ""

    def current(self) -> chat_client.Variant | None:
        return self.variant.currentData()

    def show_variants(self, variants: list[chat_client.Variant], index: int) -> None:
        """What can answer in this pane (the base shows as "base model"), ``index`` chosen."""
        self.variant.blockSignals(True)
        self.variant.clear()
        for v in variants:
            self.variant.addItem(v.label if v.adapter is not None else "base model", v)
        self.variant.blockSignals(False)
        if variants:
            self.variant.setCurrentIndex(index)

    def begin_answer(self, prompt: str) -> None:
        self.history.append({"role": "user", "content": prompt})
        self.partial = ""
        self._append(("\n\n" if self.text.toPlainText() else "") + f"You: {prompt}\n\nModel: ")

    def add_text(self, piece: str) -> None:
        self.partial += piece
        self._append(piece)

    def end_answer(self, d: dict) -> None:
        text = str(d.get("text", self.partial))
        self.history.append({"role": "assistant", "content": text})
        self.stats.setText(playground.answer_stats(d))

    def clear(self) -> None:
        self.history = []
        self.partial = ""
        self.text.clear()
        self.stats.setText("")

    def _append(self, text: str) -> None:
        cursor = self.text.textCursor()
        cursor.movePosition(QTextCursor.MoveOperation.End)
        cursor.insertText(text)
        self.text.setTextCursor(cursor)
        self.text.ensureCursorVisible()


class PanePair(QWidget):
    """Panes A and B side by side (the page hides B when side by side is off)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        lay = content_row(self)
        self.a, self.b = Pane("A"), Pane("B")
        lay.addWidget(self.a, 1)
        lay.addWidget(self.b, 1)

    def pane(self, key: str | None) -> Pane | None:
        return {"a": self.a, "b": self.b}.get(key or "")

    def show_variants(self, variants: list[chat_client.Variant]) -> None:
        """Base vs fine-tuned by default: A = the base, B = the run's adapter (or its newest checkpoint)."""
        self.a.show_variants(variants, 0)
        self.b.show_variants(variants, 1 if len(variants) > 1 else 0)

    def clear(self) -> None:
        self.a.clear()
        self.b.clear()


class SamplingCard(Card):
    """The system prompt and the sampling settings every prompt is answered with."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("", parent)
        grid = QGridLayout()
        self.body.addLayout(grid)
        self.system = QLineEdit()
        self.system.setPlaceholderText("System prompt (optional)")
        self.temperature = _spin(QDoubleSpinBox(), 0.0, 5.0, 0.0, 0.1)
        self.temperature.setToolTip("0 = greedy (the same answer every time)")
        self.top_p = _spin(QDoubleSpinBox(), 0.01, 1.0, 1.0, 0.05)
        self.max_new = _spin(QSpinBox(), 1, 32768, 256)
        self.rep_penalty = _spin(QDoubleSpinBox(), 0.5, 3.0, 1.0, 0.05)
        self.seed = _spin(QSpinBox(), -1, 2 ** 31 - 1, -1)
        self.seed.setSpecialValueText("none")
        grid.addWidget(self.system, 0, 0, 1, 10)
        for col, (text, w) in enumerate((("Temperature", self.temperature), ("Top-p", self.top_p),
                                         ("Max new tokens", self.max_new), ("Repetition penalty", self.rep_penalty),
                                         ("Seed", self.seed))):
            grid.addWidget(label(text), 1, col * 2)
            grid.addWidget(w, 1, col * 2 + 1)

    def settings(self) -> dict[str, Any]:
        return {"system": self.system.text(), "temperature": self.temperature.value(), "top_p": self.top_p.value(),
                "max_new_tokens": self.max_new.value(), "repetition_penalty": self.rep_penalty.value(),
                "seed": None if self.seed.value() < 0 else self.seed.value()}


def _spin(w: QSpinBox | QDoubleSpinBox, low: float, high: float, value: float, step: float | None = None):
    w.setRange(low, high)
    if step is not None:
        w.setSingleStep(step)
    w.setValue(value)
    return w


class SourceBar(QWidget):
    """What answers: a run or a bare model, side by side or not, and a refresh of the list."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        top = content_row(self)
        top.addWidget(label("Run or model:"))
        self.source = QComboBox()
        self.source.setMinimumWidth(320)
        self.source.setToolTip("A run (its base model, adapter and checkpoints), or a base model on its own")
        top.addWidget(self.source, 1)
        self.side = QCheckBox("Side by side")
        self.side.setChecked(True)
        self.side.setToolTip("Answer every prompt with two variants, A and B, in two panes")
        top.addWidget(self.side)
        self.reload_btn = QPushButton("Refresh")
        self.reload_btn.setToolTip("List the runs again")
        top.addWidget(self.reload_btn)

    def fill(self, items: list[tuple[str, Any]]) -> bool:
        """List ``items`` (label, data), keeping the current choice; True when the choice changed (or was none)."""
        keep = self.source.currentData()
        self.source.blockSignals(True)
        self.source.clear()
        for text, data in items:
            self.source.addItem(text, data)
        self.source.setCurrentIndex(max(0, self.source.findData(keep)) if keep is not None else 0)
        self.source.blockSignals(False)
        return keep is None or self.source.currentData() != keep

    def select(self, data: Any) -> None:
        idx = self.source.findData(data)
        if idx >= 0:
            self.source.setCurrentIndex(idx)


class VoteBar(QWidget):
    """"A better / B better / Tie" for the last side-by-side answer, the tally, save and new chat."""

    sig_vote = Signal(str)  # a, b or tie

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        votes = content_row(self)
        self.vote_a, self.vote_b, self.vote_tie = QPushButton("A better"), QPushButton("B better"), QPushButton("Tie")
        for b, winner in ((self.vote_a, "a"), (self.vote_b, "b"), (self.vote_tie, "tie")):
            b.setEnabled(False)
            b.setToolTip("Mark the last side-by-side answer; the marks are kept in the run folder and tallied "
                         "on the Runs page")
            b.clicked.connect(lambda _=False, w=winner: self.sig_vote.emit(w))
            votes.addWidget(b)
        self.tally = label("", "muted")
        votes.addWidget(self.tally, 1)
        self.save_btn = QPushButton("Save conversation")
        self.save_btn.setToolTip("Write this conversation (both panes, settings, timings) into the run folder")
        votes.addWidget(self.save_btn)
        self.new_btn = QPushButton("New chat")
        votes.addWidget(self.new_btn)

    def allow(self, on: bool) -> None:
        for b in (self.vote_a, self.vote_b, self.vote_tie):
            b.setEnabled(on)


class AskBar(QWidget):
    """The prompt line, Send and Stop."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        ask = content_row(self)
        self.prompt = QLineEdit()
        self.prompt.setPlaceholderText("Ask something and press Enter")
        ask.addWidget(self.prompt, 1)
        self.send_btn = primary_button("Send")
        self.stop_btn = QPushButton("Stop")
        self.stop_btn.setEnabled(False)
        self.stop_btn.setToolTip("End the answer now (the model stays loaded)")
        ask.addWidget(self.send_btn)
        ask.addWidget(self.stop_btn)
