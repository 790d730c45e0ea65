"""The Export page's cards: one button per export target (with its quantisation and description, disabled
with the reason where the run cannot give it), and the result of the last export, bound to a ``State``
holding the worker's done event."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QUrl, Signal
from PySide6.QtGui import QDesktopServices, QGuiApplication
from PySide6.QtWidgets import QComboBox, QGridLayout, QHBoxLayout, QLabel, QLineEdit, QPushButton, QWidget

from studio import exportview
from studio.export import ExportTarget
from ui.widgets.common import Card, label
from ui.widgets.state import State


class TargetsCard(Card):
    """One row per target: its button, its quantisation choice when it has several, its description."""

    sig_export = Signal(str, object)  # target name, quantisation or None

    def __init__(self, targets: list[ExportTarget], parent: QWidget | None = None) -> None:
        super().__init__("Targets", parent)
        self.targets = targets
        self.grid = QGridLayout()
        self.body.addLayout(self.grid)
        self.empty = label("", "muted", wrap=True)
        self.body.addWidget(self.empty)
        self.buttons: dict[str, QPushButton] = {}
        self.descs: dict[str, QLabel] = {}

    def make_buttons(self) -> None:
        for i, t in enumerate(self.targets):
            b = QPushButton(t.label)
            b.setToolTip(t.description)
            b.setMinimumHeight(34)
            quant = None
            if t.quants:
                quant = QComboBox()
                quant.addItems(list(t.quants))
                if t.default_quant in t.quants:
                    quant.setCurrentText(t.default_quant)
                quant.setToolTip("Quantisation of the exported weights")
            b.clicked.connect(lambda _=False, t=t, q=quant: self.sig_export.emit(t.name, q.currentText() if q else None))
            self.grid.addWidget(b, i, 0)
            if quant:
                self.grid.addWidget(quant, i, 1)
            self.descs[t.name] = label(t.description, "muted", wrap=True)
            self.grid.addWidget(self.descs[t.name], i, 2)
            self.buttons[t.name] = b
        self.grid.setColumnStretch(2, 1)

    def show_availability(self, missing: dict[str, str], busy: bool) -> None:
        """Targets the run cannot give are disabled, with the reason in place of their description."""
        for t in self.targets:
            b, why = self.buttons.get(t.name), missing.get(t.name)
            if b is None:
                continue
            b.setEnabled(not busy and not why)
            b.setToolTip(f"Unavailable for this run: {why}" if why else t.description)
            self.descs[t.name].setText(f"Unavailable for this run: {why}" if why else t.description)


class ResultCard(Card):
    """What the last export wrote: files with sizes and quantisation, its folder, the next command."""

    def __init__(self, state: State, parent: QWidget | None = None) -> None:
        super().__init__("Exported", parent)
        self.head = label("", wrap=True)
        self.body.addWidget(self.head)
        self.files_grid = QGridLayout()
        self.body.addLayout(self.files_grid)
        row = QHBoxLayout()
        self.folder_label = label("", "muted", wrap=True)
        row.addWidget(self.folder_label, 1)
        self.open_btn = QPushButton("Open folder")
        self.open_btn.clicked.connect(self.open_folder)
        row.addWidget(self.open_btn)
        self.body.addLayout(row)
        cmd = QHBoxLayout()
        self.command = QLineEdit()
        self.command.setReadOnly(True)
        self.command.setToolTip("Run this in a terminal to add the model to Ollama")
        self.copy_btn = QPushButton("Copy")
        self.copy_btn.setToolTip("Copy the ollama command")
        self.copy_btn.clicked.connect(lambda: QGuiApplication.clipboard().setText(self.command.text()))
        cmd.addWidget(self.command, 1)
        cmd.addWidget(self.copy_btn)
        self.body.addLayout(cmd)
        self.hide()
        self.path: Path | None = None
        state.changed.connect(self.show_done)

    def show_done(self, d: dict | None) -> None:
        """Fill the card from the worker's done event (None: hide it)."""
        if d is None:
            self.hide()
            return
        while self.files_grid.count():
            item = self.files_grid.takeAt(0)
            if item.widget():
                item.widget().deleteLater()
        self.head.setText(exportview.result_heading(d))
        for i, (name, size, what) in enumerate(exportview.result_files(d)):
            self.files_grid.addWidget(label(name), i, 0)
            self.files_grid.addWidget(label(size), i, 1)
            self.files_grid.addWidget(label(what, "muted"), i, 2)
        self.files_grid.setColumnStretch(2, 1)
        self.path = Path(d["path"])
        self.folder_label.setText(f"Folder: {self.path}")
        command = d.get("next_command") or ""
        self.command.setText(command)
        self.command.setVisible(bool(command))
        self.copy_btn.setVisible(bool(command))
        self.show()

    def open_folder(self) -> None:
        if self.path is not None:
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.path)))
