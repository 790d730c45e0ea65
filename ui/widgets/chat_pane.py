"""The Playground's widgets: the source bar, a pane that streams one variant's answers, the sampling
settings, the vote bar and the prompt line with its attached images. They show and ask; the page drives the chat
worker."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import QSize, Qt, QUrl, Signal
from PySide6.QtGui import QImage, QImageReader, QPixmap, QTextCursor, QTextDocument, QTextImageFormat
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QTextEdit,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from studio import chat_client, playground
from ui.widgets.common import Card, content_row, label, primary_button

THUMB = 64  # pixels: the longer side of an image's thumbnail (prompt bar and transcript)


def thumbnail(path: str, side: int = THUMB) -> QImage:
    """The image at ``path`` scaled to fit ``side`` x ``side`` (decoded at that size; a null image if unreadable)."""
    reader = QImageReader(path)
    reader.setAutoTransform(True)
    size = reader.size()
    if size.isValid() and max(size.width(), size.height()) > side:
        reader.setScaledSize(size.scaled(QSize(side, side), Qt.AspectRatioMode.KeepAspectRatio))
    return reader.read()


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
        self.text = QTextEdit()
        self.text.setReadOnly(True)
        self.text.setAcceptRichText(False)
        lay.addWidget(self.text, 1)
        self.stats = label("", "muted")
        lay.addWidget(self.stats)
        self.history: list[dict] = []
        self.partial = ""
        self._images: list[str] = []  # the images shown in the transcript, in order

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

    def begin_answer(self, prompt: str, images: list[str] | None = None) -> None:
        """The user's turn (``images`` in it, one ``<image>`` marker each, as ``chat_client.image_message``
        writes it; their thumbnails shown in the transcript), then the answer streams after "Model: "."""
        images = list(images or [])
        self.history.append(chat_client.image_message(prompt, images))
        self.partial = ""
        self._append(("\n\n" if self.text.toPlainText() else "") + "You: ")
        for path in images:
            self._append_image(path)
        self._append(f"{' ' if images else ''}{prompt}\n\nModel: ")

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
        self._images = []
        self.text.clear()
        self.stats.setText("")

    def image_count(self) -> int:
        """Thumbnails shown in the transcript."""
        return len(self._images)

    def _append_image(self, path: str) -> None:
        """The image's thumbnail at the end of the transcript (its name where it cannot be read)."""
        img = thumbnail(path)
        if img.isNull():
            self._append(f"[{Path(path).name}] ")
            return
        name = f"playground-image-{len(self._images)}-{Path(path).name}"
        self.text.document().addResource(QTextDocument.ResourceType.ImageResource, QUrl(name), img)
        fmt = QTextImageFormat()
        fmt.setName(name)
        fmt.setWidth(img.width())
        fmt.setHeight(img.height())
        fmt.setToolTip(path)
        cursor = self.text.textCursor()
        cursor.movePosition(QTextCursor.MoveOperation.End)
        cursor.insertImage(fmt)
        self.text.setTextCursor(cursor)
        self._images.append(path)

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


class Attachment(QWidget):
    """One attached image above the prompt: its thumbnail (the path as tooltip) and a button that removes it."""

    sig_remove = Signal(str)

    def __init__(self, path: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.path = path
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(2)
        self.picture = QLabel()
        img = thumbnail(path, 48)
        if img.isNull():
            self.picture.setText(Path(path).name)
        else:
            self.picture.setPixmap(QPixmap.fromImage(img))
        self.picture.setToolTip(path)
        lay.addWidget(self.picture)
        self.remove_btn = QToolButton()
        self.remove_btn.setText("\u00d7")
        self.remove_btn.setToolTip(f"Remove {Path(path).name}")
        self.remove_btn.setAutoRaise(True)
        self.remove_btn.clicked.connect(lambda: self.sig_remove.emit(self.path))
        lay.addWidget(self.remove_btn, 0, Qt.AlignmentFlag.AlignTop)


class AskBar(QWidget):
    """The attached images (thumbnails, each removable), then Image…, the prompt line, Send and Stop."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.setSpacing(4)
        self.strip = QWidget()
        self.strip_row = QHBoxLayout(self.strip)
        self.strip_row.setContentsMargins(0, 0, 0, 0)
        self.strip_row.addStretch(1)
        self.strip.hide()
        outer.addWidget(self.strip)
        row = QWidget()
        ask = content_row(row)
        outer.addWidget(row)
        self.image_btn = QPushButton("Image\u2026")
        self.image_btn.setToolTip("Attach an image the prompt is about (or drop image files here); both panes "
                                  "answer about the same image")
        ask.addWidget(self.image_btn)
        self.prompt = QLineEdit()
        self.prompt.setPlaceholderText("Ask something and press Enter")
        ask.addWidget(self.prompt, 1)
        self.send_btn = primary_button("Send")
        self.stop_btn = QPushButton("Stop")
        self.stop_btn.setEnabled(False)
        self.stop_btn.setToolTip("End the answer now (the model stays loaded)")
        ask.addWidget(self.send_btn)
        ask.addWidget(self.stop_btn)
        self.attached: list[Attachment] = []

    def images(self) -> list[str]:
        return [a.path for a in self.attached]

    def attach(self, path: str) -> None:
        """Show ``path`` (absolute, already checked) above the prompt; an image attached twice shows once."""
        if path in self.images():
            return
        item = Attachment(path)
        item.sig_remove.connect(self.remove)
        self.attached.append(item)
        self.strip_row.insertWidget(len(self.attached) - 1, item)
        self.strip.show()

    def remove(self, path: str) -> None:
        for item in [a for a in self.attached if a.path == path]:
            self.attached.remove(item)
            self.strip_row.removeWidget(item)
            item.deleteLater()
        self.strip.setVisible(bool(self.attached))

    def clear_images(self) -> None:
        for path in self.images():
            self.remove(path)

    def allow_images(self, on: bool, why: str = "") -> None:
        """The Image… button on for a model that reads images; off, with ``why`` as its tooltip, for one that
        reads text only (attached images are dropped then)."""
        self.image_btn.setEnabled(on)
        self.image_btn.setToolTip("Attach an image the prompt is about (or drop image files here); both panes "
                                  "answer about the same image" if on else why)
        if not on:
            self.clear_images()
