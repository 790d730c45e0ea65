"""The Runs page's state and its table: ``RunList`` (the runs in the chosen order, the damaged ones
left out, the selection) and the table bound to it.

Widgets that show the selected runs (``ui.widgets.run_compare``) listen to ``selection_changed``;
a test reloads or selects on the ``RunList`` and reads the widgets.
"""
from __future__ import annotations

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QAbstractItemView, QTableView

from studio import registry, runs
from ui.widgets.table import RowsModel, fast_table

SORTS = {"newest first": None, "validation loss (lowest first)": "val_loss", "held-out score (highest first)": "score"}


class RunList(QObject):
    """The runs folder as the page shows it; ``changed`` after a reload, ``selection_changed`` with the selection."""

    changed = Signal()
    selection_changed = Signal()

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.summaries: list[runs.RunSummary] = []
        self.damaged: list = []  # runfiles.Damaged of the runs left out, each naming its file and why
        self.selected: list[runs.RunSummary] = []
        self.sort_by: str | None = None  # a key of registry.rank_key; None: newest first

    def reload(self) -> None:
        damaged: list = []
        summaries = runs.list_runs(skipped=damaged)
        if self.sort_by:
            summaries.sort(key=lambda s: registry.summary_rank_key(s, self.sort_by))
        # The table's model resets, which clears its selection without a signal: so does the list (the
        # chart and the diff keep what they show until the next selection, as they always did).
        self.summaries, self.damaged, self.selected = summaries, damaged, []
        self.changed.emit()

    def select(self, rows: list[int]) -> None:
        self.selected = [self.summaries[r] for r in sorted(set(rows)) if r < len(self.summaries)]
        self.selection_changed.emit()


def run_table(run_list: RunList) -> QTableView:
    """The table of ``run_list``: refilled on ``changed``; selecting rows selects runs on the list."""
    model = RowsModel()
    view = fast_table(model)
    view.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
    view.verticalHeader().hide()
    view.setToolTip("Double-click a run to see its charts on the Train page")

    def refill() -> None:
        model.set_rows([registry.table_row(s) for s in run_list.summaries], registry.TABLE_COLUMNS)
        view.resizeColumnsToContents()

    run_list.changed.connect(refill)
    view.selectionModel().selectionChanged.connect(
        lambda *_: run_list.select([i.row() for i in view.selectionModel().selectedRows()]))
    return view
