"""The Model page's list and its Hub search box, bound to a ``ModelListModel``.

The model holds the last search (query and hits) and the recent folders; the list redraws
from ``studio.modelview.sections`` whenever the model says it changed, so a test sets a search
on the model and reads the list.
"""
from __future__ import annotations

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import QHBoxLayout, QLineEdit, QListWidget, QListWidgetItem, QPushButton, QVBoxLayout, QWidget

from studio import modelview
from ui.controllers import CommandController
from ui.prefs import settings
from ui.widgets.common import label

ROLE_ID = Qt.ItemDataRole.UserRole


class ModelListModel(QObject):
    """The list's state: the Hub search just made (query, hits by repo id); recent folders live in the prefs."""

    changed = Signal()

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.query = ""
        self.hits: dict[str, dict] = {}

    def set_search(self, query: str, hits: list[dict]) -> None:
        self.query, self.hits = query, {h["repo_id"]: h for h in hits}
        self.changed.emit()

    def recent(self) -> list[str]:
        value = settings().value("recent_models") or []
        return [value] if isinstance(value, str) else list(value)

    def remember(self, folder: str) -> None:
        settings().setValue("recent_models", modelview.remember(self.recent(), folder))


class ModelList(QListWidget):
    """Section headers and choosable models; ``chosen`` carries the entry's ident (a name, path or hub:ID)."""

    chosen = Signal(str)

    def __init__(self, model: ModelListModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = model
        self.setObjectName("models")
        self.setMinimumWidth(320)
        self.itemActivated.connect(self._activated)
        self.itemClicked.connect(self._activated)
        model.changed.connect(self.populate)

    def populate(self) -> None:
        """Fill the list: search hits, demo, catalog, HF cache, folders (cheap: config files only)."""
        self.clear()
        for title, entries in modelview.sections(self.model.hits, self.model.query, self.model.recent()):
            self._header(title)
            for entry in entries:
                item = QListWidgetItem("   " + entry.text)
                item.setData(ROLE_ID, entry.ident)
                item.setToolTip(entry.tip)
                self.addItem(item)

    def _header(self, text: str) -> None:
        item = QListWidgetItem(text.upper())
        item.setFlags(Qt.ItemFlag.NoItemFlags)
        f = item.font()
        f.setBold(True)
        f.setPointSizeF(f.pointSizeF() * 0.85)
        item.setFont(f)
        self.addItem(item)

    def idents(self) -> list[str]:
        return [str(self.item(i).data(ROLE_ID)) for i in range(self.count()) if self.item(i).data(ROLE_ID)]

    def select(self, ident: str) -> None:
        for i in range(self.count()):
            if self.item(i).data(ROLE_ID) == ident:
                self.setCurrentRow(i)
                return

    def _activated(self, item: QListWidgetItem) -> None:
        ident = item.data(ROLE_ID)
        if ident:
            self.chosen.emit(str(ident))


class HubSearch(QWidget):
    """The search box: ``lora-studio models search TEXT --events`` in a subprocess; the hits go to the model."""

    def __init__(self, model: ModelListModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model = model
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(12)  # the page's spacing: the box reads as part of the page's column
        row = QHBoxLayout()
        self.search_box = QLineEdit()
        self.search_box.setObjectName("hub-search")
        self.search_box.setPlaceholderText("Search the Hugging Face Hub (e.g. qwen3, llama 3.2)…")
        self.search_box.setClearButtonEnabled(True)
        self.search_box.returnPressed.connect(self.search)
        row.addWidget(self.search_box, 1)
        self.search_btn = QPushButton("Search")
        self.search_btn.setToolTip("Text-generation models with safetensors weights, most downloaded first, "
                                   "with whether each fits your GPU budget. Uses the network.")
        self.search_btn.clicked.connect(self.search)
        row.addWidget(self.search_btn)
        lay.addLayout(row)
        self.status = label("", "muted", wrap=True)
        self.status.hide()
        lay.addWidget(self.status)
        self.searcher = CommandController(self)
        self.searcher.sig_done.connect(self._searched)
        self.searcher.sig_error.connect(lambda _k, message, hint: self._failed(f"{message} {hint}".strip()))
        self.searcher.sig_finished.connect(lambda code, done: None if done or self.searcher.saw_error else
                                           self._failed(f"The search failed (exit code {code})."))

    def search(self) -> None:
        text = self.search_box.text().strip()
        if not text:
            return
        self.status.setText(f"Searching the Hugging Face Hub for {text!r}…")
        self.status.show()
        self.search_btn.setEnabled(False)
        self.searcher.run_command("models", "search", text)

    def _searched(self, result: dict) -> None:
        self.search_btn.setEnabled(True)
        self.status.setText(modelview.search_summary(result))
        self.model.set_search(self.search_box.text().strip(), result.get("hits") or [])

    def _failed(self, message: str) -> None:
        self.search_btn.setEnabled(True)
        self.status.setText(message)
        self.status.show()
