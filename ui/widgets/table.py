"""Table models that stay fast on a million rows: cells are formatted only when Qt asks for them."""
from __future__ import annotations

import json
from typing import Any, Sequence

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt
from PySide6.QtWidgets import QHeaderView, QTableView

CELL_CHARS = 160

Index = QModelIndex | QPersistentModelIndex


def cell_text(value: Any, limit: int = CELL_CHARS) -> str:
    """One line for a table cell: nested values as compact JSON, newlines shown as ⏎, long text cut."""
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        text = json.dumps(value, ensure_ascii=False)
    else:
        text = str(value)
    text = text.replace("\n", " ⏎ ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


class RowsModel(QAbstractTableModel):
    """Rows (dicts or sequences) shown by column; nothing is copied or precomputed per row."""

    def __init__(self, rows: Sequence[Any] = (), columns: Sequence[str] = (), row_numbers: Sequence[int] | None = None,
                 parent=None) -> None:
        super().__init__(parent)
        self._rows = rows
        self._columns = list(columns)
        self._numbers = row_numbers

    def set_rows(self, rows: Sequence[Any], columns: Sequence[str], row_numbers: Sequence[int] | None = None) -> None:
        self.beginResetModel()
        self._rows, self._columns, self._numbers = rows, list(columns), row_numbers
        self.endResetModel()

    def rowCount(self, parent: Index = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: Index = QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self._columns)

    def raw(self, row: int, column: int) -> Any:
        r = self._rows[row]
        return r.get(self._columns[column]) if isinstance(r, dict) else r[column]

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            return cell_text(self.raw(index.row(), index.column()))
        if role == Qt.ItemDataRole.ToolTipRole:
            return cell_text(self.raw(index.row(), index.column()), 2000)
        return None

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if role != Qt.ItemDataRole.DisplayRole:
            return None
        if orientation == Qt.Orientation.Horizontal:
            return self._columns[section] if section < len(self._columns) else None
        return str(self._numbers[section]) if self._numbers is not None and section < len(self._numbers) else str(section + 1)


def fast_table(model: QAbstractTableModel) -> QTableView:
    """A QTableView set up for large models: fixed row heights, no per-row size computation."""
    view = QTableView()
    view.setModel(model)
    view.setAlternatingRowColors(True)
    view.setWordWrap(False)
    view.setSelectionBehavior(QTableView.SelectionBehavior.SelectRows)
    vh = view.verticalHeader()
    vh.setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
    vh.setDefaultSectionSize(view.fontMetrics().height() + 8)
    hh = view.horizontalHeader()
    hh.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
    hh.setStretchLastSection(True)
    hh.setDefaultSectionSize(260)
    return view
