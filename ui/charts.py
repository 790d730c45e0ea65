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
FEW_POINTS = 40  # up to this many points a curve also draws its points: one point is visible
LEGEND_ROWS = 3  # a legend of more series goes in two columns, so that it covers less of a low chart

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


class CountAxis(pg.AxisItem):
    """An axis of whole things (steps, examples): ticks at integers only, never 1.1, 1.2, …"""

    def tickSpacing(self, minVal: float, maxVal: float, size: float):  # noqa: N802 - pyqtgraph's name
        levels = super().tickSpacing(minVal, maxVal, size)
        return [(max(1.0, round(spacing)), offset) for spacing, offset in levels]

    def tickValues(self, minVal: float, maxVal: float, size: float):  # noqa: N802
        return [(spacing, [v for v in values if float(v).is_integer()])
                for spacing, values in super().tickValues(minVal, maxVal, size)]


def _fg() -> QColor:
    app = QApplication.instance()
    return app.palette().color(QPalette.ColorRole.WindowText) if app else QColor("black")


def _bg() -> QColor:
    app = QApplication.instance()
    return app.palette().color(QPalette.ColorRole.Base) if app else QColor("white")


class LiveChart(pg.PlotWidget):
    """A titled plot with named, bounded series and horizontal reference lines.

    A series enters the legend when its first point arrives (no "validation" entry for a run
    without validation), the legend shows only when two or more series have points, a flat curve
    gets a readable range instead of pyqtgraph's ±0.5 around it, and axis labels never switch to SI
    prefixes (the learning rate stays "lr", not "lr (x0.001)" in one run and "lr" in the next).
    ``count_x``/``count_y``: that axis counts whole things (steps, examples): integer ticks only.
    ``y_range``: a fixed y range (a share in percent reads against 0–100, not against its own wobble).
    """

    def __init__(self, title: str, y_label: str = "", x_label: str = "step", parent=None,
                 count_x: bool | None = None, count_y: bool = False, y_range: tuple[float, float] | None = None) -> None:
        count_x = x_label == "step" if count_x is None else count_x
        axes = {k: CountAxis(orientation=k) for k, on in (("bottom", count_x), ("left", count_y)) if on}
        super().__init__(parent=parent, background=_bg(), axisItems=axes)
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
            item.getAxis(axis).enableAutoSIPrefix(False)
        item.setClipToView(True)
        item.setDownsampling(auto=True, mode="peak")
        bg = _bg()
        bg.setAlpha(210)  # the legend sits over the plot: let the curves show through it
        self.legend = item.addLegend(offset=(-10, 10), labelTextColor=fg.name(), brush=pg.mkBrush(bg))
        self.legend.hide()
        self.setMenuEnabled(False)
        self.series: dict[str, Series] = {}
        self.curves: dict[str, pg.PlotDataItem] = {}
        self._named: set[str] = set()  # series shown in the legend (they have points)
        self.lines: dict[str, pg.InfiniteLine] = {}
        self.y_range = y_range
        self._dirty = False

    def add_series(self, name: str, color: str | None = None, dashed: bool = False, width: float = 2.0) -> None:
        color = color or PALETTE[len(self.series) % len(PALETTE)]
        pen = pg.mkPen(color, width=width, style=Qt.PenStyle.DashLine if dashed else Qt.PenStyle.SolidLine)
        self.series[name] = Series()
        self.curves[name] = self.getPlotItem().plot([], [], pen=pen, symbolBrush=color, symbolPen=None, symbolSize=5)

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
        lo, hi = math.inf, -math.inf
        for name, s in self.series.items():
            x, y = s.data()
            curve = self.curves[name]
            curve.setData(x.copy(), y.copy(), symbol="o" if 0 < s.n <= FEW_POINTS else None)
            if s.n and name not in self._named:
                self._named.add(name)
                self.legend.addItem(curve, name)
            if s.n:
                lo, hi = min(lo, float(y.min())), max(hi, float(y.max()))
        self.legend.setVisible(len(self._named) > 1)
        self.legend.setColumnCount(2 if len(self._named) > LEGEND_ROWS else 1)
        self._fit_flat(lo, hi)

    def _fit_flat(self, lo: float, hi: float) -> None:
        """A flat curve (one point, a constant learning rate) gets a range around its value."""
        vb = self.getPlotItem().getViewBox()
        if self.y_range is not None:
            vb.setYRange(*self.y_range, padding=0.05)
            return
        if not math.isfinite(lo) or hi - lo > 1e-9 * max(abs(hi), abs(lo), 1e-300):
            vb.enableAutoRange(axis="y")
            return
        pad = abs(hi) * 0.25 or 1.0
        vb.setYRange(hi - pad, hi + pad, padding=0)

    def clear_data(self) -> None:
        """Empty every series and start the next run on fresh axes."""
        for name, s in self.series.items():
            s.clear()
            self.curves[name].setData([], [])
        self.legend.clear()
        self.legend.hide()
        self._named.clear()
        vb = self.getPlotItem().getViewBox()
        vb.setRange(xRange=(0, 1), yRange=(0, 1), padding=0)
        vb.enableAutoRange()


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
