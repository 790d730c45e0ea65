"""Export: one button per target the export worker offers (adapter, merged safetensors, GGUF,
Ollama…), with progress from ``python -m workers.export RUN --format F [--quant Q]``.

The targets come from the export registry (``studio.export.TARGETS``), read without importing torch.
"""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QUrl
from PySide6.QtGui import QDesktopServices, QGuiApplication
from PySide6.QtWidgets import (QComboBox, QGridLayout, QHBoxLayout, QLabel, QLineEdit, QPlainTextEdit, QProgressBar,
                               QPushButton, QWidget)

from studio import runs
from studio.export import TARGETS, ExportTarget
from studio.export.targets import unavailable
from ui.controllers import ExportController
from ui.session import Session
from ui.widgets.common import Banner, Card, Page, label


class ExportPage(Page):
    title = "Export"
    subtitle = "Turn a finished run into something you can use: the adapter, a merged model, GGUF for llama.cpp or Ollama."
    icon_name = "export"

    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.controller = ExportController(self, stop_grace_s=2, term_grace_s=3)
        self.buttons: dict[str, QPushButton] = {}
        self.descs: dict[str, QLabel] = {}
        self.targets: list[ExportTarget] = list(TARGETS.values())
        row = QHBoxLayout()
        row.addWidget(label("Run:"))
        self.run_combo = QComboBox()
        self.run_combo.setMinimumWidth(420)
        self.run_combo.setToolTip("Runs that saved an adapter")
        row.addWidget(self.run_combo, 1)
        self.run_combo.currentIndexChanged.connect(lambda _i: self._apply_availability())
        self.open_btn = QPushButton("Open exports folder")
        self.open_btn.clicked.connect(self.open_exports)
        row.addWidget(self.open_btn)
        self.content.addLayout(row)
        self.card = Card("Targets")
        self.grid = QGridLayout()
        self.card.body.addLayout(self.grid)
        self.empty = label("", "muted", wrap=True)
        self.card.body.addWidget(self.empty)
        self.content.addWidget(self.card)
        prog = QHBoxLayout()
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("idle")
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setEnabled(False)
        self.cancel_btn.clicked.connect(self.controller.stop)
        prog.addWidget(self.progress, 1)
        prog.addWidget(self.cancel_btn)
        self.content.addLayout(prog)
        self.banner = Banner()
        self.content.addWidget(self.banner)
        self._make_result_card()
        self.log = QPlainTextEdit()
        self.log.setObjectName("log")
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(2000)
        self.log.setPlaceholderText("The export's steps and checks appear here; what the libraries print goes to "
                                    "the run's export.log.")
        self.content.addWidget(self.log, 1)
        c = self.controller
        c.sig_progress.connect(self._progress)
        c.sig_log.connect(self.log.appendPlainText)
        c.sig_warning.connect(lambda m: self.log.appendPlainText(f"warning: {m}"))
        c.sig_error.connect(lambda k, m, h: self.banner.show_message(f"Export failed: {m}", h))
        c.sig_done.connect(self._done)
        c.sig_finished.connect(self._finished)

    def on_enter(self) -> None:
        self.reload()

    def reload(self) -> None:
        current = self.run_combo.currentData()
        self.run_combo.clear()
        for s in runs.list_runs():
            if (s.path / runs.ADAPTER).is_dir():
                loss = f"{s.final_loss:.4f}" if isinstance(s.final_loss, (int, float)) else "–"
                self.run_combo.addItem(f"{s.id}  ({s.status}, last loss {loss})", str(s.path))
        if current:
            i = self.run_combo.findData(current)
            if i >= 0:
                self.run_combo.setCurrentIndex(i)
        if not self.buttons:
            self._make_buttons()
        self.empty.setText("" if self.run_combo.count() else "No run with a saved adapter yet: train one first.")
        self._apply_availability()

    def _apply_availability(self) -> None:
        """Targets the run's adapter method cannot give (prefix/prompt tuning: nothing to merge) are
        disabled, with the reason in place of their description."""
        run_dir = self.run_combo.currentData()
        missing = unavailable(Path(run_dir)) if run_dir else {}
        busy = self.controller.running
        for t in self.targets:
            b, why = self.buttons.get(t.name), missing.get(t.name)
            if b is None:
                continue
            b.setEnabled(not busy and not why)
            b.setToolTip(f"Unavailable for this run: {why}" if why else t.description)
            self.descs[t.name].setText(f"Unavailable for this run: {why}" if why else t.description)

    def select_run(self, run_dir: Path) -> None:
        self.reload()
        i = self.run_combo.findData(str(run_dir))
        if i >= 0:
            self.run_combo.setCurrentIndex(i)

    def _make_buttons(self) -> None:
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
            b.clicked.connect(lambda _=False, t=t, q=quant: self.export(t.name, q.currentText() if q else None))
            self.grid.addWidget(b, i, 0)
            if quant:
                self.grid.addWidget(quant, i, 1)
            self.descs[t.name] = label(t.description, "muted", wrap=True)
            self.grid.addWidget(self.descs[t.name], i, 2)
            self.buttons[t.name] = b
        self.grid.setColumnStretch(2, 1)

    def export(self, fmt: str, quant: str | None = None) -> None:
        run_dir = self.run_combo.currentData()
        if not run_dir or self.controller.running:
            return
        self.banner.hide()
        self.result.hide()
        self.log.clear()
        self.progress.setRange(0, 0)
        for b in self.buttons.values():
            b.setEnabled(False)
        self.cancel_btn.setEnabled(True)
        self.controller.start_export(Path(run_dir), fmt, quant)

    def _progress(self, phase: str, done: int, total: int) -> None:
        self.progress.setRange(0, max(total, 0))
        self.progress.setValue(done)
        self.progress.setFormat(f"{phase}: %p%" if total else phase)

    def _make_result_card(self) -> None:
        """What the last export wrote: files with sizes and quantisation, its folder, the next command."""
        self.result = Card("Exported")
        self.result_head = label("", wrap=True)
        self.result.body.addWidget(self.result_head)
        self.files_grid = QGridLayout()
        self.result.body.addLayout(self.files_grid)
        row = QHBoxLayout()
        self.folder_label = label("", "muted", wrap=True)
        row.addWidget(self.folder_label, 1)
        self.open_result_btn = QPushButton("Open folder")
        self.open_result_btn.clicked.connect(self.open_result)
        row.addWidget(self.open_result_btn)
        self.result.body.addLayout(row)
        cmd = QHBoxLayout()
        self.command = QLineEdit()
        self.command.setReadOnly(True)
        self.command.setToolTip("Run this in a terminal to add the model to Ollama")
        self.copy_btn = QPushButton("Copy")
        self.copy_btn.setToolTip("Copy the ollama command")
        self.copy_btn.clicked.connect(lambda: QGuiApplication.clipboard().setText(self.command.text()))
        cmd.addWidget(self.command, 1)
        cmd.addWidget(self.copy_btn)
        self.result.body.addLayout(cmd)
        self.result.hide()
        self.result_path: Path | None = None
        self.content.addWidget(self.result)

    def _done(self, d: dict) -> None:
        where = d.get("path") or d.get("output") or ""
        self.log.appendPlainText(f"done{': ' + str(where) if where else ''}")
        if d.get("status", "exported") == "exported" and where:
            self.show_result(d)

    def show_result(self, d: dict) -> None:
        """Fill the result card from the worker's done event."""
        while self.files_grid.count():
            item = self.files_grid.takeAt(0)
            if item.widget():
                item.widget().deleteLater()
        quant = f" ({d['quant']})" if d.get("quant") else ""
        source = d.get("source") or {}
        step = source.get("step")
        origin = (f" from run {source.get('run_id')}" + (f", step {step}" if step is not None else "")) if source else ""
        self.result_head.setText(f"{d.get('format', '')}{quant}{origin}")
        for i, f in enumerate(d.get("files") or []):
            self.files_grid.addWidget(label(str(f.get("name", ""))), i, 0)
            self.files_grid.addWidget(label(human_size(int(f.get("bytes") or 0))), i, 1)
            what = ", ".join(str(x) for x in (f.get("kind"), f.get("quant")) if x)
            self.files_grid.addWidget(label(what, "muted"), i, 2)
        self.files_grid.setColumnStretch(2, 1)
        self.result_path = Path(d["path"])
        self.folder_label.setText(f"Folder: {self.result_path}")
        command = d.get("next_command") or ""
        self.command.setText(command)
        self.command.setVisible(bool(command))
        self.copy_btn.setVisible(bool(command))
        self.result.show()

    def open_result(self) -> None:
        if self.result_path is not None:
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.result_path)))

    def _finished(self, code: int, saw_done: bool) -> None:
        self.cancel_btn.setEnabled(False)
        self._apply_availability()
        self.progress.setRange(0, 1)
        ok = saw_done and code == 0
        self.progress.setValue(1 if ok else 0)
        self.progress.setFormat("done" if ok else "failed" if code else "idle")

    def open_exports(self) -> None:
        run_dir = self.run_combo.currentData()
        if run_dir:
            folder = Path(run_dir) / runs.EXPORTS
            folder.mkdir(exist_ok=True)
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(folder)))


def human_size(n: int) -> str:
    """Bytes in decimal units, as the CLI prints them."""
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"
