"""The Data page's tabs: Preview (the first rows), Problems (grouped, with row numbers) and Tokens
(the length histogram against the sequence length, and one example with its trained tokens).

Each shows the plain dicts of a dataset report and of the token answer through
``studio.data.display``; a test hands them a dict and reads the widgets.
"""
from __future__ import annotations

from typing import Any

from PySide6.QtCore import QModelIndex, QPersistentModelIndex, QSize, Qt
from PySide6.QtGui import QImageReader, QPixmap
from PySide6.QtWidgets import (
    QApplication,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QSplitter,
    QTabWidget,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from studio.data import display
from ui.widgets.common import Busy, label
from ui.widgets.table import RowsModel, fast_table


class TokenView(QWidget):
    """Token lengths as bars with the run's sequence length, and the example as the model sees it."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.tokens: dict = {}  # the last token statistics shown, {} while none
        self.hist: dict = {}
        self.seq_len = 0  # the line drawn on the histogram
        self.longest = 0  # the longest context the plan's device holds, drawn too (0: none)
        self.chart = None  # made on first use: pyqtgraph loads then
        tl = QVBoxLayout(self)
        tl.setContentsMargins(6, 6, 6, 6)
        self.status = label("Token lengths appear once a model is chosen.", "muted", wrap=True)
        self.context = label("", "muted", wrap=True)  # the lengths against the longest context (planview)
        self.context.setVisible(False)
        self.busy = Busy()
        tl.addWidget(self.status)
        tl.addWidget(self.context)
        tl.addWidget(self.busy)
        split = QSplitter(Qt.Orientation.Horizontal)
        self.hist_host = QWidget()
        self.hist_layout = QVBoxLayout(self.hist_host)
        self.hist_layout.setContentsMargins(0, 0, 0, 0)
        split.addWidget(self.hist_host)
        self.example = QTextBrowser()
        self.example.setPlaceholderText("One example rendered with the chat template; highlighted tokens carry the loss.")
        split.addWidget(self.example)
        split.setSizes([500, 500])
        tl.addWidget(split, 1)

    def clear(self, status: str) -> None:
        """Nothing of the previous file stays while the next one is tokenised."""
        self.tokens, self.hist = {}, {}
        if self.chart is not None:
            self.show_histogram({}, self.seq_len)
        self.example.clear()
        self.status.setText(status)
        self.context.setVisible(False)

    def show_tokens(self, tokens: dict, seq_len: int, mask_view: list | None) -> None:
        self.tokens = tokens
        self.show_histogram(tokens.get("histogram") or {}, seq_len)
        dark = bool(QApplication.instance().property("studio_dark"))
        self.example.setHtml(display.mask_html(mask_view, dark))

    def show_histogram(self, hist: dict, seq_len: int) -> None:
        """Token lengths as bars, with the sequence length the run would use (it follows the plan)."""
        import pyqtgraph as pg

        from ui.charts import LiveChart

        self.hist, self.seq_len = hist, seq_len
        if hist:
            self.status.setText(display.token_summary(self.tokens, hist, seq_len))
        if self.chart is None:
            self.chart = LiveChart("Token length per example", "examples", x_label="tokens", count_y=True)
            self.hist_layout.addWidget(self.chart)
        plot = self.chart.getPlotItem()
        for item in [i for i in plot.items if isinstance(i, pg.BarGraphItem)]:
            plot.removeItem(item)
        shape = display.bars(hist)
        if shape is not None:
            xs, heights, widths = shape
            plot.addItem(pg.BarGraphItem(x=xs, height=heights, width=widths, brush=pg.mkBrush("#0072B2"),
                                         pen=pg.mkPen("#0072B2")))
        self._line("seq_len", seq_len, pg.mkPen(display.RED, width=2), f"seq_len {seq_len}", display.RED, 0.9)
        self._line("longest", self.longest if hist else 0, pg.mkPen("#6E7781", width=2, style=Qt.PenStyle.DashLine),
                   f"longest context {self.longest}", "#6E7781", 0.75)

    def show_context(self, text: str, longest: int | None) -> None:
        """The line on the examples against the longest context, and that length on the histogram."""
        self.context.setText(text)
        self.context.setVisible(bool(text))
        self.longest = int(longest or 0)
        if self.chart is not None:
            self.show_histogram(self.hist, self.seq_len)

    def _line(self, key: str, x: int, pen: object, text: str, color: str, position: float) -> None:
        """A vertical line at ``x`` tokens (none at 0), replacing the one of the same ``key``."""
        import pyqtgraph as pg

        plot = self.chart.getPlotItem()
        old = self.chart.lines.pop(key, None)
        if old is not None:
            plot.removeItem(old)
        if x:
            line = pg.InfiniteLine(pos=x, angle=90, pen=pen, label=text, labelOpts={"position": position, "color": color})
            plot.addItem(line)
            self.chart.lines[key] = line


class TextList(QWidget):
    """A list of titles beside the text of the chosen one (the Documents and Chunks tabs)."""

    def __init__(self, empty: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        split = QSplitter(Qt.Orientation.Horizontal)
        self.items = QListWidget()
        self.items.setAlternatingRowColors(True)
        self.text = QPlainTextEdit()
        self.text.setReadOnly(True)
        split.addWidget(self.items)
        split.addWidget(self.text)
        split.setStretchFactor(0, 2)
        split.setStretchFactor(1, 3)
        layout.addWidget(split)
        self.empty = empty
        self._texts: list[str] = []
        self.items.currentRowChanged.connect(self._show)

    def set_items(self, items: list[tuple[str, str]]) -> None:
        self.items.clear()
        self._texts = [text for _, text in items]
        for title, _ in items:
            item = QListWidgetItem(title)
            item.setToolTip(title)
            self.items.addItem(item)
        if items:
            self.items.setCurrentRow(0)
        else:
            self.text.setPlainText(self.empty)

    def _show(self, row: int) -> None:
        self.text.setPlainText(self._texts[row] if 0 <= row < len(self._texts) else "")


THUMB = 56  # pixels: a preview row with images is this tall


def thumbnail(path: str, side: int = THUMB) -> QPixmap | None:
    """``path`` scaled to fit ``side`` pixels, decoded at that size (QImageReader scales while reading, so a
    large photo costs a thumbnail's memory); None when Qt cannot read it (the import names such rows)."""
    reader = QImageReader(path)
    reader.setAutoTransform(True)
    size = reader.size()
    if size.isValid() and size.width() > 0 and size.height() > 0:
        size.scale(side, side, Qt.AspectRatioMode.KeepAspectRatio)
        reader.setScaledSize(size)
    image = reader.read()
    return None if image.isNull() else QPixmap.fromImage(image)


class PreviewModel(RowsModel):
    """The preview rows; the ``images`` column shows the row's first image as a thumbnail, every path on hover."""

    def __init__(self) -> None:
        super().__init__()
        self._thumbs: dict[str, QPixmap | None] = {}

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if index.isValid() and self._columns[index.column()] == "images":
            paths = self.raw(index.row(), index.column()) or []
            if role == Qt.ItemDataRole.DecorationRole and paths:
                first = str(paths[0])
                if first not in self._thumbs:
                    self._thumbs[first] = thumbnail(first)
                return self._thumbs[first]
            if role == Qt.ItemDataRole.DisplayRole:
                return f"{len(paths)} image{'s' if len(paths) != 1 else ''}" if len(paths) != 1 else ""
            if role == Qt.ItemDataRole.ToolTipRole:
                return "\n".join(f"<image> {i + 1}: {p}" for i, p in enumerate(paths))
            return None
        return super().data(index, role)


class DatasetTabs(QTabWidget):
    """Preview, Problems, Tokens; ``show_report`` fills the first two from a report's dict."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.preview_model = PreviewModel()
        self.preview = fast_table(self.preview_model)
        self.preview.setIconSize(QSize(THUMB, THUMB))
        self.addTab(self.preview, "Preview")
        self.problems = QListWidget()
        self.problems.setAlternatingRowColors(True)
        self.addTab(self.problems, "Problems")
        self.token_view = TokenView()
        self.addTab(self.token_view, "Tokens")
        # a folder of documents: each file's extracted text, and the chunks training reads (with a model)
        self.documents = TextList("No documents.")
        self.chunks = TextList("The chunks and their token counts appear once the model's tokenizer has counted them.")

    def show_documents(self, d: dict) -> None:
        """Show (or, for a dataset of rows, hide) the Documents and Chunks tabs."""
        is_docs = d.get("format") == "documents" and isinstance(d.get("documents"), int)
        for i, (widget, name) in enumerate(((self.documents, "Documents"), (self.chunks, "Chunks"))):
            at = self.indexOf(widget)
            if is_docs and at < 0:
                self.insertTab(1 + i, widget, name)
            elif not is_docs and at >= 0:
                self.removeTab(at)
        if not is_docs:
            return
        self.documents.set_items(display.document_items(d))
        self.setTabText(self.indexOf(self.documents), f"Documents ({d['documents']:,})")
        chunks = display.chunk_items(d)
        self.chunks.set_items(chunks)
        self.setTabText(self.indexOf(self.chunks), f"Chunks ({d.get('chunks') or 0:,})" if chunks else "Chunks")

    def show_report(self, d: dict) -> None:
        self.show_documents(d)
        rows, columns, numbers = display.preview_table(d.get("preview") or [], d.get("columns") or [])
        self.preview_model.set_rows(rows, columns, numbers)
        if columns and columns[0] == "turns":
            self.preview.setColumnWidth(0, self.preview.fontMetrics().horizontalAdvance("turns") + 24)
        line = self.preview.fontMetrics().height() + 8
        if "images" in columns:  # rows tall enough for a thumbnail; the column as wide as one
            self.preview.verticalHeader().setDefaultSectionSize(max(line, THUMB + 6))
            self.preview.setColumnWidth(columns.index("images"), THUMB + 70)
        else:
            self.preview.verticalHeader().setDefaultSectionSize(line)
        unit = "documents" if d.get("format") == "documents" else "rows"
        self.setTabText(0, f"Preview ({len(rows):,} of {d.get('rows', 0):,} {unit})")
        self.problems.clear()
        for text, header in display.problem_lines(d):
            item = QListWidgetItem(text)
            if header:
                f = item.font()
                f.setBold(True)
                item.setFont(f)
            self.problems.addItem(item)
        total = display.problems_total(d)
        self.setTabText(self.indexOf(self.problems), f"Problems ({total:,})" if total else "Problems")
        if not total and not d.get("problem_groups"):
            item = QListWidgetItem(f"No problems found: all {d.get('rows', 0):,} rows are usable.")
            item.setFlags(Qt.ItemFlag.NoItemFlags)
            self.problems.addItem(item)
