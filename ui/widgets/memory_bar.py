"""A stacked bar of predicted memory components against the budget, painted directly (no chart
library): it repaints instantly as the budget slider or a setting moves."""
from __future__ import annotations

from PySide6.QtCore import QRectF, QSize, Qt
from PySide6.QtGui import QColor, QFont, QPainter, QPalette, QPen
from PySide6.QtWidgets import QSizePolicy, QToolTip, QWidget

from ui.widgets.common import human_bytes

COLORS = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#999999",
          "#6A3D9A", "#B15928", "#1F78B4", "#33A02C", "#FB9A99"]
BAR_H = 30
LEGEND_ROW = 20


class MemoryBar(QWidget):
    """``set_components([(name, bytes, source), ...], budget)``; hover a segment for its source."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.components: list[tuple[str, float, str]] = []
        self.budget = 0.0
        self.setMouseTracking(True)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self._rects: list[tuple[QRectF, str]] = []

    def sizeHint(self) -> QSize:
        rows = max(1, (len(self.components) + 2) // 3)
        return QSize(600, BAR_H + 34 + rows * LEGEND_ROW)

    def minimumSizeHint(self) -> QSize:
        return QSize(300, self.sizeHint().height())

    def set_components(self, components: list[tuple[str, float, str]], budget: float) -> None:
        self.components = [(n.replace("_", " "), max(0.0, float(b)), s) for n, b, s in components]
        self.budget = float(budget)
        self.setFixedHeight(self.sizeHint().height())
        self.update()

    @property
    def total(self) -> float:
        return sum(b for _, b, _ in self.components)

    def paintEvent(self, _event) -> None:
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        pal = self.palette()
        fg = pal.color(QPalette.ColorRole.WindowText)
        w = self.width() - 2
        scale_max = max(self.total, self.budget, 1.0) * 1.04
        top = 18
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(pal.color(QPalette.ColorRole.AlternateBase))
        p.drawRoundedRect(QRectF(1, top, w, BAR_H), 5, 5)
        x = 1.0
        self._rects = []
        for i, (name, size, source) in enumerate(self.components):
            width = w * size / scale_max
            rect = QRectF(x, top, width, BAR_H)
            p.setBrush(QColor(COLORS[i % len(COLORS)]))
            p.drawRect(rect)
            self._rects.append((rect, f"{name}: {human_bytes(size)}" + (f"\n{source}" if source else "")))
            x += width
        over = self.total > self.budget > 0
        if self.budget > 0:
            bx = 1 + w * self.budget / scale_max
            p.setPen(QPen(QColor("#CF222E"), 2, Qt.PenStyle.DashLine))
            p.drawLine(int(bx), top - 4, int(bx), top + BAR_H + 4)
            p.setPen(fg)
            f = QFont(self.font())
            f.setPointSizeF(f.pointSizeF() * 0.9)
            p.setFont(f)
            text = f"budget {human_bytes(self.budget)}"
            tw = p.fontMetrics().horizontalAdvance(text)
            p.drawText(int(min(max(bx - tw / 2, 0), w - tw)), 12, text)
        p.setPen(QColor("#CF222E") if over else fg)
        p.drawText(4, 12, f"predicted {human_bytes(self.total)}" + ("  (over budget)" if over else ""))
        self._legend(p, fg, top + BAR_H + 10)
        p.end()

    def _legend(self, p: QPainter, fg: QColor, y0: int) -> None:
        col_w = max(180, self.width() // 3)
        per_row = max(1, self.width() // col_w)
        for i, (name, size, _src) in enumerate(self.components):
            cx = (i % per_row) * col_w
            cy = y0 + (i // per_row) * LEGEND_ROW
            p.setPen(Qt.PenStyle.NoPen)
            p.setBrush(QColor(COLORS[i % len(COLORS)]))
            p.drawRoundedRect(QRectF(cx + 2, cy + 3, 11, 11), 2, 2)
            p.setPen(fg)
            p.drawText(cx + 18, cy + 13, f"{name}  {human_bytes(size)}")

    def mouseMoveEvent(self, event) -> None:
        pos = event.position()
        for rect, tip in self._rects:
            if rect.contains(pos):
                QToolTip.showText(event.globalPosition().toPoint(), tip, self)
                return
        QToolTip.hideText()
