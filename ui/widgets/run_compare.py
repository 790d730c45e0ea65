"""What the Runs page shows of the selected runs: a metric overlaid (``RunChart``) and the recipe
settings that differ (``DiffView``, ``studio.registry.diff_text``); both follow a ``RunList``'s selection.
"""
from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import QComboBox, QHBoxLayout, QPlainTextEdit, QVBoxLayout, QWidget

from studio import registry
from ui.widgets.common import label
from ui.widgets.run_list import RunList

MAX_OVERLAY = 8
AXES = {"step": "step", "time (s)": "time"}


def _column(parent: QWidget) -> QVBoxLayout:
    lay = QVBoxLayout(parent)
    lay.setContentsMargins(0, 0, 0, 0)
    return lay


class RunChart(QWidget):
    """The chosen metric of the selected runs (up to eight), against steps or seconds."""

    def __init__(self, run_list: RunList, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.run_list = run_list
        self.chart = None
        lv = _column(self)
        row = QHBoxLayout()
        row.addWidget(label("Metric:", "muted"))
        self.metric_box = QComboBox()
        for key, (_, _, title) in registry.METRICS.items():
            self.metric_box.addItem(title, key)
        self.metric_box.setToolTip("The metric overlaid for the selected runs (from each run's events.jsonl)")
        self.metric_box.currentIndexChanged.connect(lambda *_: self.redraw())
        row.addWidget(self.metric_box)
        row.addWidget(label("Axis:", "muted"))
        self.axis_box = QComboBox()
        self.axis_box.addItems(list(AXES))
        self.axis_box.setToolTip("Optimizer steps, or seconds of training since the run started")
        self.axis_box.currentIndexChanged.connect(lambda *_: self.redraw())
        row.addWidget(self.axis_box)
        row.addStretch(1)
        lv.addLayout(row)
        self.chart_host = QWidget()
        self.chart_layout = QHBoxLayout(self.chart_host)
        self.chart_layout.setContentsMargins(0, 0, 0, 0)
        lv.addWidget(self.chart_host, 1)
        run_list.selection_changed.connect(self.redraw)

    def redraw(self) -> None:
        from ui.charts import PALETTE, LiveChart  # pyqtgraph: loaded when a chart is first drawn

        metric = self.metric_box.currentData() or "loss"
        axis = AXES.get(self.axis_box.currentText(), "step")
        title = registry.METRICS[metric][2]
        if self.chart is not None:
            self.chart_layout.removeWidget(self.chart)
            self.chart.deleteLater()
        self.chart = LiveChart(title[:1].upper() + title[1:], title, x_label="step" if axis == "step" else "seconds")
        self.chart_layout.addWidget(self.chart)
        for i, s in enumerate(self.run_list.selected[:MAX_OVERLAY]):
            xs, ys = registry.metric_series(s.path, metric, axis)
            name = registry.read_labels(s.path)["name"] or s.id
            self.chart.add_series(name, PALETTE[i % len(PALETTE)])
            for x, y in zip(xs, ys):
                self.chart.append(name, x, y)
        self.chart.refresh()


class DiffView(QPlainTextEdit):
    """'Settings that differ' between the selected runs, one line per setting (the page puts its heading above)."""

    def __init__(self, run_list: RunList, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.run_list = run_list
        self.setReadOnly(True)
        self.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.setPlainText(registry.diff_text([]))
        run_list.selection_changed.connect(self.redraw)

    def redraw(self) -> None:
        self.setPlainText(registry.diff_text([Path(s.path) for s in self.run_list.selected]))
