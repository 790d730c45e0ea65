"""Live charts on pyqtgraph that stay cheap however long a run is.

Points go into a bounded ``Series`` (when it is full, every other point is dropped, so memory is
fixed and the curve keeps its shape); the widgets repaint on a timer, never once per event, and
pyqtgraph's peak downsampling plus clip-to-view keep each repaint proportional to the screen width.
pyqtgraph is imported here only, and this module is imported after the window is on screen.
"""
from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication

MAX_POINTS = 4096
REFRESH_MS = 250

# Colours that read on both light and dark backgrounds (Okabe-Ito, colour-blind safe).
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442"]


class Series:
    """A bounded x/y buffer: appends are O(1) amortised and memory never exceeds ``cap`` points."""

    def __init__(self, cap: int = MAX_POINTS) -> None:
        self.cap = cap
        self.x = np.empty(cap, dtype=np.float64)
        self.y = np.empty(cap, dtype=np.float64)
        self.n = 0
        self.stride = 1      # keep one point in `stride` once decimated
        self._skip = 0
        self.total = 0       # points ever offered (for tests and the status line)

    def append(self, x: float, y: float) -> None:
        self.total += 1
        if not (math.isfinite(x) and math.isfinite(y)):
            return
        self._skip += 1
        if self._skip < self.stride:
            return
        self._skip = 0
        if self.n == self.cap:
            half = self.cap // 2
            self.x[:half] = self.x[: self.cap : 2]
            self.y[:half] = self.y[: self.cap : 2]
            self.n = half
            self.stride *= 2
        self.x[self.n] = x
        self.y[self.n] = y
        self.n += 1

    def clear(self) -> None:
        self.n = 0
        self.stride = 1
        self._skip = 0
        self.total = 0

    def data(self) -> tuple[np.ndarray, np.ndarray]:
        return self.x[: self.n], self.y[: self.n]


def _fg() -> QColor:
    app = QApplication.instance()
    return app.palette().color(QPalette.ColorRole.WindowText) if app else QColor("black")


def _bg() -> QColor:
    app = QApplication.instance()
    return app.palette().color(QPalette.ColorRole.Base) if app else QColor("white")


class LiveChart(pg.PlotWidget):
    """A titled plot with named, bounded series and horizontal reference lines."""

    def __init__(self, title: str, y_label: str = "", x_label: str = "step", parent=None) -> None:
        super().__init__(parent=parent, background=_bg())
        self.setMinimumHeight(160)
        fg = _fg()
        item = self.getPlotItem()
        item.setTitle(title, color=fg.name(), size="10pt")
        item.showGrid(x=True, y=True, alpha=0.15)
        item.setLabel("bottom", x_label, color=fg.name())
        if y_label:
            item.setLabel("left", y_label, color=fg.name())
        for axis in ("left", "bottom"):
            item.getAxis(axis).setPen(pg.mkPen(fg))
            item.getAxis(axis).setTextPen(pg.mkPen(fg))
        item.setClipToView(True)
        item.setDownsampling(auto=True, mode="peak")
        item.addLegend(offset=(-10, 10), labelTextColor=fg.name())
        self.setMenuEnabled(False)
        self.series: dict[str, Series] = {}
        self.curves: dict[str, pg.PlotDataItem] = {}
        self.lines: dict[str, pg.InfiniteLine] = {}
        self._dirty = False

    def add_series(self, name: str, color: str | None = None, dashed: bool = False, width: float = 2.0) -> None:
        color = color or PALETTE[len(self.series) % len(PALETTE)]
        pen = pg.mkPen(color, width=width, style=Qt.PenStyle.DashLine if dashed else Qt.PenStyle.SolidLine)
        self.series[name] = Series()
        self.curves[name] = self.getPlotItem().plot([], [], pen=pen, name=name)

    def append(self, name: str, x: float, y: float) -> None:
        if name not in self.series:
            self.add_series(name)
        self.series[name].append(float(x), float(y))
        self._dirty = True

    def set_hline(self, name: str, y: float | None, color: str = "#888888", below: bool = False) -> None:
        """A labelled horizontal line (budget, predicted peak); None removes it. ``below`` puts the
        label under the line (for a line that is usually the top of the chart)."""
        line = self.lines.get(name)
        if y is None or not math.isfinite(y):
            if line is not None:
                self.getPlotItem().removeItem(line)
                del self.lines[name]
            return
        if line is None:
            line = pg.InfiniteLine(angle=0, movable=False, pen=pg.mkPen(color, width=1.5, style=Qt.PenStyle.DashLine),
                                   label=name, labelOpts={"position": 0.05, "color": color,
                                                          "anchors": [(0, 0), (0, 0)] if below else [(0, 1), (0, 1)]})
            self.getPlotItem().addItem(line)
            self.lines[name] = line
        line.setValue(y)

    def points(self, name: str) -> int:
        s = self.series.get(name)
        return s.n if s else 0

    def refresh(self) -> None:
        """Push buffered points to the curves (called by a ChartRefresher timer)."""
        if not self._dirty:
            return
        self._dirty = False
        for name, s in self.series.items():
            x, y = s.data()
            self.curves[name].setData(x.copy(), y.copy())

    def clear_data(self) -> None:
        for name, s in self.series.items():
            s.clear()
            self.curves[name].setData([], [])


class ChartRefresher:
    """Repaints a group of charts in turn: one dirty chart per tick, whatever the event rate.

    A repaint of one chart costs a few milliseconds (tens on a busy machine); doing them one at a
    time keeps every event-loop slice short, and each chart still updates about once a second.
    """

    def __init__(self, charts: list[LiveChart], parent, interval_ms: int = REFRESH_MS) -> None:
        self.charts = charts
        self._next = 0
        self.timer = QTimer(parent)
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(self.tick)
        self.timer.start()

    def tick(self) -> None:
        for k in range(len(self.charts)):
            chart = self.charts[(self._next + k) % len(self.charts)]
            if chart._dirty:
                self._next = (self._next + k + 1) % len(self.charts)
                chart.refresh()
                return

    def refresh(self) -> None:
        """Everything now (end of a run, screenshots)."""
        for c in self.charts:
            c.refresh()


pg.setConfigOptions(antialias=False)  # antialiased paths cost several times more to paint
