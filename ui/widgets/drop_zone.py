"""The Data page's drop target: a headline, what files it takes, and Choose file…."""
from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QFrame, QHBoxLayout, QPushButton, QVBoxLayout, QWidget

from ui.widgets.common import label


class DropZone(QFrame):
    """The visible target; the whole window accepts drops (see MainWindow.dropEvent)."""

    clicked = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("dropzone")
        self.setMinimumHeight(84)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(18, 12, 18, 12)
        text = QVBoxLayout()
        self.headline = label("Drop a dataset file anywhere on the window", "value")
        self.detail = label("JSONL, JSON, CSV, TSV, Parquet or text: chat messages, prompt/completion, "
                            "instruction/output, question/answer or plain text.", "muted", wrap=True)
        text.addWidget(self.headline)
        text.addWidget(self.detail)
        lay.addLayout(text, 1)
        self.browse = QPushButton("Choose file…")
        self.browse.setToolTip("Open a dataset file (Ctrl+O)")
        self.browse.clicked.connect(self.clicked)
        lay.addWidget(self.browse)

    def highlight(self, on: bool) -> None:
        self.setProperty("hot", on)
        self.setStyleSheet("QFrame#dropzone { border-style: solid; }" if on else "")
