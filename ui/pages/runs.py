"""Runs: the history from the runs folder, and the loss curves of selected runs overlaid."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

from PySide6.QtCore import Qt, QUrl, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import QAbstractItemView, QHBoxLayout, QPushButton, QSplitter, QWidget

from studio import events as ev
from studio import paths, runs
from ui.session import Session
from ui.widgets.common import Page, label
from ui.widgets.table import RowsModel, fast_table

COLUMNS = ["run", "status", "model", "dataset", "last loss", "val loss", "score", "votes", "steps", "date"]  # a running run has no final loss
MAX_OVERLAY = 4


def run_row(s: runs.RunSummary) -> dict:
    from studio import playground

    loss = s.final_loss
    ev_ = s.eval or {}
    vb, va = ev_.get("val_loss_base"), ev_.get("val_loss_adapter")
    val = f"{vb:.3f} → {va:.3f}" if isinstance(vb, (int, float)) and isinstance(va, (int, float)) else ""
    score = (f"{ev_['score_base']}/{ev_['score_total']} → {ev_['score_adapter']}/{ev_['score_total']}"
             if ev_.get("score_total") else "")
    return {"run": s.id, "status": s.status, "model": Path(s.model).name if "/" in s.model else s.model,
            "dataset": Path(s.dataset).name if s.dataset else "", "last loss": f"{loss:.4f}" if isinstance(loss, (int, float)) else "",
            "val loss": val, "score": score, "votes": playground.tally_text(playground.tally(s.path)),
            "steps": s.step, "date": _date(s.created)}


def _date(text: str) -> str:
    try:
        return dt.datetime.fromisoformat(text).strftime("%Y-%m-%d %H:%M")
    except (TypeError, ValueError):
        return str(text or "")


def loss_curve(run_dir: Path) -> tuple[list[float], list[float]]:
    """(steps, losses) of a run from its events.jsonl."""
    xs, ys = [], []
    for e in ev.read_events(Path(run_dir) / runs.EVENTS):
        if e.type == ev.METRIC and isinstance(e.data.get("loss"), (int, float)) and isinstance(e.data.get("step"), (int, float)):
            xs.append(float(e.data["step"]))
            ys.append(float(e.data["loss"]))
    return xs, ys


class RunsPage(Page):
    title = "Runs"
    subtitle = "Every run kept in your runs folder. Select two or more to compare their loss curves."
    icon_name = "runs"
    sig_export = Signal(object)
    sig_resume = Signal(object)
    sig_show = Signal(object)
    sig_chat = Signal(object)

    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.summaries: list[runs.RunSummary] = []
        self.chart = None
        bar = QHBoxLayout()
        self.refresh_btn = QPushButton("Refresh")
        self.refresh_btn.setShortcut("F5")
        self.refresh_btn.setToolTip("Read the runs folder again (F5)")
        self.refresh_btn.clicked.connect(self.reload)
        self.open_btn = QPushButton("Open folder")
        self.open_btn.setToolTip("Show the selected run's folder in the file manager")
        self.open_btn.clicked.connect(self.open_selected)
        self.export_btn = QPushButton("Export…")
        self.export_btn.setToolTip("Export the selected run's adapter or merged model")
        self.export_btn.clicked.connect(lambda: self.selected() and self.sig_export.emit(self.selected()[0].path))
        self.resume_btn = QPushButton("Resume")
        self.resume_btn.setToolTip("Continue a stopped or interrupted run from its last checkpoint")
        self.resume_btn.clicked.connect(lambda: self.selected() and self.sig_resume.emit(self.selected()[0].path))
        self.chat_btn = QPushButton("Chat…")
        self.chat_btn.setToolTip("Open the selected run in the Playground: chat with it, base vs fine-tuned side by side")
        self.chat_btn.clicked.connect(lambda: self.selected() and self.sig_chat.emit(self.selected()[0].path))
        for b in (self.refresh_btn, self.open_btn, self.export_btn, self.resume_btn, self.chat_btn):
            bar.addWidget(b)
        self.count_label = label("", "muted")
        bar.addWidget(self.count_label, 1)
        self.content.addLayout(bar)
        self.split = QSplitter(Qt.Orientation.Vertical)
        self.model = RowsModel()
        self.table = fast_table(self.model)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table.verticalHeader().hide()
        self.table.setToolTip("Double-click a run to see its charts on the Train page")
        self.table.doubleClicked.connect(lambda idx: self.sig_show.emit(self.summaries[idx.row()].path))
        self.table.selectionModel().selectionChanged.connect(lambda *_: self.compare())
        self.split.addWidget(self.table)
        self.chart_host = QWidget()
        self.chart_layout = QHBoxLayout(self.chart_host)
        self.chart_layout.setContentsMargins(0, 0, 0, 0)
        self.split.addWidget(self.chart_host)
        self.split.setSizes([300, 300])
        self.content.addWidget(self.split, 1)

    def on_enter(self) -> None:
        self.reload()

    def reload(self) -> None:
        self.summaries = runs.list_runs()
        self.model.set_rows([run_row(s) for s in self.summaries], COLUMNS)
        self.table.resizeColumnsToContents()
        self.count_label.setText(f"{len(self.summaries)} run(s) in {paths.runs_dir()}")

    def selected(self) -> list[runs.RunSummary]:
        rows = sorted({i.row() for i in self.table.selectionModel().selectedRows()})
        return [self.summaries[r] for r in rows if r < len(self.summaries)]

    def compare(self) -> None:
        """Overlay the loss curves of the selected runs (up to four)."""
        from ui.charts import PALETTE, LiveChart

        if self.chart is None:
            self.chart = LiveChart("Training loss", "loss")
            self.chart_layout.addWidget(self.chart)
        plot = self.chart.getPlotItem()
        self.chart.clear_data()
        for name in list(self.chart.curves):
            plot.removeItem(self.chart.curves.pop(name))
            self.chart.series.pop(name, None)
        for i, s in enumerate(self.selected()[:MAX_OVERLAY]):
            xs, ys = loss_curve(s.path)
            self.chart.add_series(s.id, PALETTE[i % len(PALETTE)])
            for x, y in zip(xs, ys):
                self.chart.append(s.id, x, y)
        self.chart.refresh()

    def open_selected(self) -> None:
        sel = self.selected()
        target = sel[0].path if sel else paths.runs_dir()
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(target)))

    def open_runs_folder(self) -> None:
        paths.runs_dir().mkdir(parents=True, exist_ok=True)
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(paths.runs_dir())))
