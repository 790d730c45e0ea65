"""Data: drop a file (anywhere on the window) or pick one; see the format, a preview, the problems
with their row numbers, token lengths against the sequence length, and which tokens are trained on.
A dropped folder of documents (PDF, DOCX, ...) shows each document's extracted text beside its name, the
files skipped and why (Problems), and with the model's tokenizer the chunks training reads.
The format menu (detection first, with how sure it is), a column menu per field the format reads and the
role names are the CLI's --format, --columns and --roles: each change reads the file again, so the preview
shows it at once; the mappings the import tried on the first rows are buttons that apply them.

``studio.data.inspect`` (pure Python) runs on a background thread so a large file never freezes
the window; token statistics need the model's tokenizer (transformers), so they come from a
``lora-studio data inspect FILE --model M --events`` subprocess. The words are
``studio.data.display``'s; the tabs are ``ui.widgets.data_tabs``'s.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QCheckBox, QComboBox, QFileDialog, QHBoxLayout, QLineEdit, QPushButton, QWidget

from studio import planview
from studio.data import display, inspect
from studio.data.report import DatasetReport, TokenStats
from ui.controllers import CommandController
from ui.session import Session
from ui.widgets.common import Busy, Page, label
from ui.widgets.data_tabs import DatasetTabs
from ui.widgets.drop_zone import DropZone


class _Superseded(Exception):
    """Another dataset was chosen while a folder was being read: its reader stops."""


class _Inspector(QObject):
    """Runs ``studio.data.inspect`` on a daemon thread; the result arrives in the GUI thread."""

    done = Signal(object, object)   # path, report
    failed = Signal(object, str, object)    # path, message, what the failure knows ({"columns", "suggestions"})
    progress = Signal(object, int, int, str)  # path, files read, files in all, the file now (a folder of documents)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.current: Path | None = None  # the newest path: an older folder's read stops at its next file

    def run(self, path: Path, fmt: str = "auto", roles: dict | None = None, label_filter: bool = True,
            columns: dict | None = None) -> None:
        self.current = path
        threading.Thread(target=self._work, args=(path, fmt, roles or {}, label_filter, columns or {}),
                         daemon=True).start()

    def _work(self, path: Path, fmt: str, roles: dict, label_filter: bool, columns: dict) -> None:
        def files(i: int, n: int, name: str) -> None:
            if self.current != path:
                raise _Superseded(path)
            self.progress.emit(path, i, n, name)

        try:
            self.done.emit(path, inspect(path, fmt=fmt, columns=columns or None, roles=roles or None,
                                         label_filter=label_filter, files_progress=files))
        except _Superseded:
            return  # another dataset was chosen meanwhile: nothing to say about this one
        except Exception as e:  # DataError and friends carry a user-facing message
            self.failed.emit(path, str(e), {"columns": list(getattr(e, "columns", None) or []),
                                            "suggestions": list(getattr(e, "suggestions", None) or [])})


class DataPage(Page):
    title = "Data"
    subtitle = "Bring your examples. The studio detects the format, checks every row and shows what will be trained."
    icon_name = "data"
    sig_busy = Signal(bool)
    sig_loaded = Signal(object)

    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.path: Path | None = None
        self.report: DatasetReport | None = None
        self._inspector = _Inspector(self)
        self._inspector.done.connect(self._inspected)
        self._inspector.failed.connect(self._failed)
        self._inspector.progress.connect(self._reading)
        self._build()
        self.tokens = CommandController(self)
        self.tokens.sig_done.connect(lambda d: self._tokens_ready(d["report"]))
        self.tokens.sig_error.connect(lambda _k, m, _h: self.token_status.setText(f"Token statistics unavailable: {m}"))
        self.tokens.sig_busy.connect(self._token_busy)
        session.sig_model.connect(lambda _i: self.request_tokens())
        session.sig_plan.connect(self._plan_changed)

    def _build(self) -> None:
        self.drop = DropZone()
        self.drop.clicked.connect(self.browse)
        self.content.addWidget(self.drop)
        self.busy = Busy()
        self.content.addWidget(self.busy)
        self.summary = label("No dataset yet.", "muted", wrap=True)
        self.content.addWidget(self.summary)
        self.notes = label("", "muted", wrap=True)  # what the import left out or changed (never silent)
        self.notes.hide()
        self.content.addWidget(self.notes)
        mapping = QHBoxLayout()
        self.format = QComboBox()
        self.format.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.format.setMinimumContentsLength(28)  # the descriptions are long: the menu shows them whole
        self.format.setToolTip("How to read the rows (like --format): detection, or a format you choose")
        self._fill_formats(None)
        self.format.activated.connect(self._format_chosen)
        mapping.addWidget(label("Format", "muted"))
        mapping.addWidget(self.format, 2)
        self.fields = QHBoxLayout()  # one column menu per field the format reads (like --columns)
        mapping.addLayout(self.fields, 3)
        self.content.addLayout(mapping)
        self.field_menus: dict[str, QComboBox] = {}
        self.extra_columns = label("", "muted", wrap=True)  # mapped keys no menu shows (a turn's role/content)
        self.extra_columns.hide()
        self.content.addWidget(self.extra_columns)
        self.suggest_row = QHBoxLayout()  # the mappings the import tried on the first rows, as buttons
        self.content.addLayout(self.suggest_row)
        self.suggest_buttons: list[QPushButton] = []
        options = QHBoxLayout()
        self.roles = QLineEdit()
        self.roles.setPlaceholderText("Role names, e.g. bing=assistant, human=user")
        self.roles.setToolTip("Map role values in your file to system, user, assistant or tool (like --roles)")
        self.roles.editingFinished.connect(self._options_changed)
        options.addWidget(self.roles, 1)
        self.label_filter = QCheckBox("Train only rows marked good")
        self.label_filter.setChecked(True)
        self.label_filter.setToolTip("The file has a good/bad label column: rows marked bad are left out")
        self.label_filter.hide()
        self.label_filter.toggled.connect(self._options_changed)
        options.addWidget(self.label_filter)
        self.open_folder = QPushButton("Open a folder of documents…")
        self.open_folder.setToolTip("PDF, Word (DOCX), ODT, EPUB, HTML, Markdown and text files: the model learns "
                                    "their text (continued pre-training). Dropping a folder does the same.")
        self.open_folder.clicked.connect(self.browse_folder)
        options.addWidget(self.open_folder)
        self.content.addLayout(options)
        self.tabs = DatasetTabs()
        self.content.addWidget(self.tabs, 1)
        self.preview_model, self.problems, self.token_view = self.tabs.preview_model, self.tabs.problems, self.tabs.token_view
        self.token_status, self.example = self.token_view.status, self.token_view.example

    # -- loading ------------------------------------------------------------------------------
    def browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open a dataset", "",
                                              "Datasets (*.jsonl *.json *.csv *.tsv *.parquet *.txt);;"
                                              "Documents (*.pdf *.docx *.odt *.epub *.html *.htm);;All files (*)")
        if path:
            self.load(Path(path))

    def browse_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open a folder of documents")
        if path:
            self.load(Path(path))

    def set_drop_highlight(self, on: bool) -> None:
        self.drop.highlight(on)

    def load(self, path: Path) -> None:
        """Inspect ``path`` in the background; the page fills in when the report arrives."""
        data = self.session.recipe.data
        if self.path is not None and Path(path) != self.path and (data.format != "auto" or data.columns):
            data.format, data.columns = "auto", {}  # another file: the old one's format and columns do not apply
        self.path = Path(path)
        self.drop.headline.setText(self.path.name)
        self.drop.detail.setText(str(self.path))
        self.summary.setText("Reading and checking every row…")
        self.busy.set_busy(True)
        self.sig_busy.emit(True)
        self.token_view.clear(f"Waiting for {self.path.name} to be read…")
        self._inspector.run(self.path, fmt=data.format or "auto", roles=dict(data.roles or {}),
                            label_filter=bool(data.label_filter), columns=dict(data.columns or {}))

    # -- format, columns and suggestions ----------------------------------------------------------
    def _fill_formats(self, d: dict | None) -> None:
        self.format.blockSignals(True)
        self.format.clear()
        for text, value in display.format_choices(d):
            self.format.addItem(text, value)
        self.format.setCurrentIndex(max(0, self.format.findData(self.session.recipe.data.format or "auto")))
        self.format.blockSignals(False)

    def _fill_fields(self, d: dict | None) -> None:
        """A column menu per field of the format in use (the chosen one, else the detected one)."""
        while self.fields.count():
            item = self.fields.takeAt(0)
            if item.widget() is not None:
                item.widget().deleteLater()
        self.field_menus = {}
        data = self.session.recipe.data
        fmt = data.format if data.format and data.format != "auto" else (d or {}).get("format") or ""
        columns = dict(data.columns or {})
        for name, required in display.mapping_fields(fmt):
            menu = QComboBox()
            menu.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            menu.setMinimumContentsLength(12)
            menu.setToolTip(f"The column {fmt} reads as '{name}'" + ("" if required else " (optional)"))
            for text, value in display.column_choices(d, name, columns.get(name)):
                menu.addItem(f"{name}: {text}", value)
            menu.setCurrentIndex(max(0, menu.findData(columns.get(name, ""))))
            menu.activated.connect(lambda _i, field=name: self._column_chosen(field))
            self.fields.addWidget(menu)
            self.field_menus[name] = menu
        rest = {k: v for k, v in columns.items() if k not in self.field_menus}
        self.extra_columns.setText("Also mapped: " + ", ".join(f"{k} from {v}" for k, v in rest.items()) if rest else "")
        self.extra_columns.setVisible(bool(rest))

    def _fill_suggestions(self, d: dict | None) -> None:
        for b in self.suggest_buttons:
            b.deleteLater()
        self.suggest_buttons = []
        for s in (d or {}).get("suggestions") or []:
            button = QPushButton(display.suggestion_label(s))
            button.setToolTip("Tried on the first rows, where it makes most of them usable")
            button.clicked.connect(lambda _c=False, s=s: self.apply_suggestion(s))
            self.suggest_row.addWidget(button)
            self.suggest_buttons.append(button)

    def _format_chosen(self, _index: int) -> None:
        data = self.session.recipe.data
        value = self.format.currentData() or "auto"
        if value == (data.format or "auto"):
            return
        data.format, data.columns = value, {}  # another format reads other fields
        if self.path is not None:
            self.load(self.path)

    def _column_chosen(self, field: str) -> None:
        data = self.session.recipe.data
        value = self.field_menus[field].currentData() or ""
        columns = dict(data.columns or {})
        if value:
            columns[field] = value
        else:
            columns.pop(field, None)
        if columns == dict(data.columns or {}):
            return
        if data.format in (None, "", "auto") and self.report is not None:
            data.format = self.report.format  # a column mapping belongs to a format: keep the one it was made for
        data.columns = columns
        if self.path is not None:
            self.load(self.path)

    def apply_suggestion(self, s: dict) -> None:
        """Use a mapping the import tried on the first rows: its format, columns and role names."""
        data = self.session.recipe.data
        data.format, data.columns = s["format"], dict(s.get("columns") or {})
        if s.get("roles"):
            data.roles = dict(s["roles"])
            self.roles.setText(display.roles_text(data.roles))
        if self.path is not None:
            self.load(self.path)

    def _options_changed(self, *_: Any) -> None:
        """Role mapping or label filter changed: store them in the recipe and read the file again."""
        try:
            roles = display.roles_from_text(self.roles.text())
        except ValueError as e:
            self.roles.setToolTip(str(e))
            self.summary.setText(display.red(f"Role names: {e}"))
            return
        data = self.session.recipe.data
        if roles == (data.roles or {}) and self.label_filter.isChecked() == bool(data.label_filter):
            return
        data.roles, data.label_filter = roles, self.label_filter.isChecked()
        if self.path is not None:
            self.load(self.path)

    def _inspected(self, path: Path, report: Any) -> None:
        self._end_busy()
        if path != self.path:
            return  # a newer file was dropped meanwhile
        self.report = report
        self.show_report(report.to_dict())
        self.session.set_dataset(path, report)
        self.sig_loaded.emit(report)
        self.request_tokens()

    def _failed(self, path: Path, message: str, known: dict | None = None) -> None:
        self._end_busy()
        if path != self.path:
            return
        self.summary.setText(display.red(message))
        # no report, but the columns and the mappings that work are known: choose a format and map them here
        self._fill_formats(None)
        self._fill_fields({"columns": (known or {}).get("columns") or []})
        self._fill_suggestions(known)

    def _reading(self, path: Path, i: int, n: int, name: str) -> None:
        if path == self.path:
            self.summary.setText(display.reading_text(i, n, name))

    def _end_busy(self) -> None:
        self.busy.set_busy(False)
        self.sig_busy.emit(False)

    def show_report(self, d: dict) -> None:
        self.summary.setText(display.summary_html(d))
        documents = d.get("format") == "documents"
        for widget in (self.format, self.roles):  # a folder of documents has no rows to map
            widget.setEnabled(not documents)
        self._fill_formats(d)
        self._fill_fields(d)
        self._fill_suggestions(d)
        self._show_notes(d.get("notes") or [])
        self.label_filter.setVisible(bool(d.get("label_column")))
        self.tabs.show_report(d)

    def _show_notes(self, notes: list) -> None:
        self.notes.setText(display.notes_html(notes))
        self.notes.setVisible(bool(notes))

    # -- tokens (subprocess: needs the model's tokenizer) ---------------------------------------
    def _seq_len(self) -> int:
        return self.session.resolved_recipe().train.seq_len

    def request_tokens(self) -> None:
        model = self.session.recipe.model.name_or_path
        if not self.path or not model or self.report is None:
            return
        self.token_view.clear(f"Tokenising {self.path.name} with {model}'s chat template…")
        data, train = self.session.recipe.data, self.session.resolved_recipe().train
        self.tokens.run_command(*display.inspect_args(self.path, model, train.seq_len, dict(data.roles or {}),
                                                      bool(data.label_filter),
                                                      train.micro_batch if train.packing else None,
                                                      data.format or "auto", dict(data.columns or {})))

    def _token_busy(self, on: bool) -> None:
        self.token_view.busy.set_busy(on)
        self.sig_busy.emit(on)

    def _tokens_ready(self, d: dict) -> None:
        tokens = d.get("tokens")
        if not tokens:
            self.token_status.setText("No token statistics in the answer.")
            return
        self._attach_tokens(tokens)
        if d.get("format") == "documents" and self.report is not None and isinstance(d.get("documents"), int):
            # the model's tokenizer counted every document and cut the chunks: exact figures replace the estimate
            self.report.documents = {k: d.get(k) for k in DatasetReport.DOCUMENT_KEYS}
            self.summary.setText(display.summary_html(d))
            self.tabs.show_documents(d)
            self.session.set_dataset(self.path, self.report)
        if d.get("notes"):  # with the model: how its template writes tool calls, among the rest
            self._show_notes(d["notes"])
        self.token_view.show_tokens(tokens, self._seq_len(), d.get("mask_view"))
        self._show_context()

    def _plan_changed(self, _plan: Any) -> None:
        """A new plan: its sequence length on the histogram, and the lengths against its longest context."""
        if self.token_view.hist:
            self.token_view.show_histogram(self.token_view.hist, self._seq_len())
        self._show_context()

    def _show_context(self) -> None:
        longest, where = planview.longest_context(self.session.plan)
        tokens = self.token_view.tokens
        self.token_view.show_context(display.context_line(tokens, longest, self._seq_len(), where) if tokens else "",
                                     longest if tokens else None)

    def _attach_tokens(self, tokens: dict) -> None:
        """Give the in-process report its token statistics so the planner sees real lengths."""
        if self.report is None:
            return
        known = set(TokenStats.__dataclass_fields__)
        self.report.tokens = TokenStats(**{k: v for k, v in tokens.items() if k in known})
        self.session.set_dataset(self.path, self.report)
