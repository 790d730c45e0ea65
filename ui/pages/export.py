"""Export: one button per target the export worker offers (adapter, merged safetensors, GGUF,
Ollama…), with progress from ``python -m workers.export RUN --format F [--quant Q]``.

The targets come from the export registry (``studio.export.TARGETS``), read without importing torch; the
page composes ``ui.widgets.export_cards`` and ``studio.exportview`` says what to list and show.
"""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QUrl
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QPlainTextEdit, QProgressBar, QPushButton, QWidget

from studio import exportview, runs
from studio.export import TARGETS
from studio.export.targets import unavailable
from ui.controllers import ExportController
from ui.session import Session
from ui.widgets.common import Banner, Page, label
from ui.widgets.export_cards import ResultCard, TargetsCard
from ui.widgets.state import State


class ExportPage(Page):
    title = "Export"
    subtitle = "Turn a finished run into something you can use: the adapter, a merged model, GGUF for llama.cpp or Ollama."
    icon_name = "export"

    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.controller = ExportController(self, stop_grace_s=2, term_grace_s=3)
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
        self.targets = TargetsCard(list(TARGETS.values()))
        self.targets.sig_export.connect(self.export)
        self.buttons, self.descs = self.targets.buttons, self.targets.descs
        self.content.addWidget(self.targets)
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
        self.done = State(None, self)  # the last export's done event
        self.result = ResultCard(self.done)
        self.content.addWidget(self.result)
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
        for text, path in exportview.exportable_runs():
            self.run_combo.addItem(text, str(path))
        if current:
            i = self.run_combo.findData(current)
            if i >= 0:
                self.run_combo.setCurrentIndex(i)
        if not self.buttons:
            self.targets.make_buttons()
        self.targets.empty.setText("" if self.run_combo.count() else "No run with a saved adapter yet: train one first.")
        self._apply_availability()

    def _apply_availability(self) -> None:
        """Targets the run's adapter method cannot give (prefix/prompt tuning: nothing to merge) are
        disabled, with the reason in place of their description."""
        run_dir = self.run_combo.currentData()
        self.targets.show_availability(unavailable(Path(run_dir)) if run_dir else {}, self.controller.running)

    def select_run(self, run_dir: Path) -> None:
        self.reload()
        i = self.run_combo.findData(str(run_dir))
        if i >= 0:
            self.run_combo.setCurrentIndex(i)

    def export(self, fmt: str, quant: str | None = None) -> None:
        run_dir = self.run_combo.currentData()
        if not run_dir or self.controller.running:
            return
        self.banner.hide()
        self.done.set(None)
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

    def _done(self, d: dict) -> None:
        where = d.get("path") or d.get("output") or ""
        self.log.appendPlainText(f"done{': ' + str(where) if where else ''}")
        if d.get("status", "exported") == "exported" and where:
            self.done.set(d)

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
