"""Runs: the history from the runs folder, and the loss curves of selected runs overlaid.

A composition: ``RunList`` (ui.widgets.run_list) holds the runs and the selection; the table,
``RunActions`` (the registry bar), ``RunChart``, ``DiffView`` and ``QueueList`` are bound to it.
The cells, the order and the settings diff are ``studio.registry``'s.
"""
from __future__ import annotations

from PySide6.QtCore import Qt, QUrl, Signal, SignalInstance
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import QHBoxLayout, QPushButton, QSplitter, QVBoxLayout, QWidget

from studio import paths, runs
from ui.session import Session
from ui.widgets.common import Page, label
from ui.widgets.run_actions import RunActions
from ui.widgets.run_compare import DiffView, RunChart
from ui.widgets.run_list import RunList, run_table
from ui.widgets.run_queue import QueueList


class RunsPage(Page):
    title = "Runs"
    subtitle = ("Every run kept in your runs folder. Select runs to overlay a metric and see the settings that differ; "
                "the queue trains recipes one after another.")
    icon_name = "runs"
    sig_export = Signal(object)
    sig_resume = Signal(object)
    sig_show = Signal(object)
    sig_chat = Signal(object)

    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.run_list = RunList(self)
        self.run_list.changed.connect(self._count)
        self.content.addLayout(self._bar())
        self.actions = RunActions(self.run_list)
        self.content.addWidget(self.actions)
        self.split = QSplitter(Qt.Orientation.Vertical)
        self.table = run_table(self.run_list)
        self.model = self.table.model()  # the rows as shown (RowsModel)
        self.table.doubleClicked.connect(lambda idx: self.sig_show.emit(self.run_list.summaries[idx.row()].path))
        self.split.addWidget(self.table)
        self.split.addWidget(self._compare_panel())
        self.split.setSizes([260, 340])
        self.content.addWidget(self.split, 1)

    @property
    def summaries(self) -> list[runs.RunSummary]:
        return self.run_list.summaries

    def _bar(self) -> QHBoxLayout:
        bar = QHBoxLayout()
        for text, tip, slot in (
                ("Refresh", "Read the runs folder again (F5)", self.reload),
                ("Open folder", "Show the selected run's folder in the file manager", self.open_selected),
                ("Export…", "Export the selected run's adapter or merged model", lambda: self._emit(self.sig_export)),
                ("Resume", "Continue a stopped or interrupted run from its last checkpoint",
                 lambda: self._emit(self.sig_resume)),
                ("Chat…", "Open the selected run in the Playground: chat with it, base vs fine-tuned side by side",
                 lambda: self._emit(self.sig_chat))):
            b = QPushButton(text)
            b.setToolTip(tip)
            b.clicked.connect(slot)
            bar.addWidget(b)
            if text == "Refresh":
                b.setShortcut("F5")
        self.count_label = label("", "muted")
        bar.addWidget(self.count_label, 1)
        return bar

    def _compare_panel(self) -> QWidget:
        host = QSplitter(Qt.Orientation.Horizontal)
        self.chart_view = RunChart(self.run_list)
        host.addWidget(self.chart_view)
        right = QWidget()
        rv = QVBoxLayout(right)
        rv.setContentsMargins(0, 0, 0, 0)
        rv.addWidget(label("Settings that differ", "muted"))
        self.diff = DiffView(self.run_list)
        rv.addWidget(self.diff, 1)
        self.queue = QueueList()
        self.queue.message.connect(self.actions.status.setText)
        qrow = QHBoxLayout()
        qrow.addWidget(label("Queue", "muted"), 1)
        qrow.addWidget(self.queue.run_btn)
        qrow.addWidget(self.queue.cancel_btn)
        rv.addLayout(qrow)
        rv.addWidget(self.queue, 1)
        host.addWidget(right)
        host.setSizes([560, 340])
        return host

    def _emit(self, signal: SignalInstance) -> None:
        if self.run_list.selected:
            signal.emit(self.run_list.selected[0].path)

    def on_enter(self) -> None:
        self.reload()
        self.queue.timer.start()

    def reload(self) -> None:
        self.run_list.reload()
        self.queue.reload()

    def _count(self) -> None:
        damaged = self.run_list.damaged
        text = f"{len(self.summaries)} run(s) in {paths.runs_dir()}"
        if damaged:  # nothing is left out in silence: say which runs and why
            text += f"; {len(damaged)} damaged run(s) not shown (hover for why)"
        self.count_label.setText(text)
        self.count_label.setToolTip("\n".join(str(d) for d in damaged))

    def selected(self) -> list[runs.RunSummary]:
        return self.run_list.selected

    def open_selected(self) -> None:
        sel = self.selected()
        target = sel[0].path if sel else paths.runs_dir()
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(target)))

    def open_runs_folder(self) -> None:
        paths.runs_dir().mkdir(parents=True, exist_ok=True)
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(paths.runs_dir())))
