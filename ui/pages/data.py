"""Data: drop a file (anywhere on the window) or pick one; see the format, a preview, the problems
with their row numbers, token lengths against the sequence length, and which tokens are trained on.

``studio.data.inspect`` (pure Python) runs on a background thread so a large file never freezes
the window; token statistics need the model's tokenizer (transformers), so they come from a
``lora-studio data inspect FILE --model M --events`` subprocess.
"""
from __future__ import annotations

import html
import threading
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import (QCheckBox, QFileDialog, QFrame, QHBoxLayout, QLineEdit, QListWidget, QListWidgetItem,
                               QPushButton, QSplitter, QTabWidget, QTextBrowser, QVBoxLayout, QWidget)

from studio.data import inspect
from studio.data.report import DatasetReport, TokenStats
from ui.controllers import CommandController
from ui.session import Session
from ui.widgets.common import Busy, Page, label
from ui.widgets.table import RowsModel, fast_table


def preview_table(preview: list, columns: list) -> tuple[list, list, list | None]:
    """Rows, column names and row numbers for the preview: chat turns become one column per role."""
    if not preview or not isinstance(preview[0], dict):
        return preview, list(columns), None
    numbers = [r.get("row", i + 1) for i, r in enumerate(preview)] if "row" in preview[0] else None
    if "messages" in preview[0]:
        rows = [_turns(r.get("messages") or []) for r in preview]
        roles = [role for role in ("system", "user", "assistant") if any(r.get(role) for r in rows)]
        extra = sorted({k for r in rows for k in r} - {"system", "user", "assistant", "turns"})
        return rows, ["turns", *extra, *roles], numbers  # the assistant's answer last: it gets the spare width
    cols = [c for c in (list(columns) or list(preview[0])) if c != "row"]
    cols += [k for k in preview[0] if k not in cols and k != "row"]
    return preview, cols, numbers


def _turns(messages: list) -> dict:
    """The first message of each role (what a reader wants to see) and the number of turns."""
    out: dict = {"turns": len(messages)}
    for m in messages:
        if isinstance(m, dict) and m.get("role") and m["role"] not in out:
            out[str(m["role"])] = m.get("content", "")
    return out


class _Inspector(QObject):
    """Runs ``studio.data.inspect`` on a daemon thread; the result arrives in the GUI thread."""

    done = Signal(object, object)   # path, report
    failed = Signal(object, str)    # path, message

    def run(self, path: Path, fmt: str = "auto", roles: dict | None = None, label_filter: bool = True) -> None:
        threading.Thread(target=self._work, args=(path, fmt, roles or {}, label_filter), daemon=True).start()

    def _work(self, path: Path, fmt: str, roles: dict, label_filter: bool) -> None:
        try:
            self.done.emit(path, inspect(path, fmt=fmt, roles=roles or None, label_filter=label_filter))
        except Exception as e:  # DataError and friends carry a user-facing message
            self.failed.emit(path, str(e))


class DropZone(QFrame):
    """The visible target; the whole window accepts drops (see MainWindow.dropEvent)."""

    clicked = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("dropzone")
        self.setMinimumHeight(84)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(18, 12, 18, 12)
        text = QVBoxLayout()
        self.headline = label("Drop a dataset file anywhere on the window", "value")
        self.detail = label("JSONL, JSON, CSV, TSV, Parquet or text: chat messages, prompt/completion, "
                            "instruction/output, question/answer or plain text.", "muted", wrap=True)
        text.addWidget(self.headline)
        text.addWidget(self.detail)
        lay.addLayout(text, 1)
        self.browse = QPushButton("Choose file…")
        self.browse.setToolTip("Open a dataset file (Ctrl+O)")
        self.browse.clicked.connect(self.clicked)
        lay.addWidget(self.browse)

    def highlight(self, on: bool) -> None:
        self.setProperty("hot", on)
        self.setStyleSheet("QFrame#dropzone { border-style: solid; }" if on else "")


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
        self.tokens = CommandController(self)
        self.tokens.sig_done.connect(lambda d: self._tokens_ready(d["report"]))
        self.tokens.sig_error.connect(lambda _k, m, _h: self.token_status.setText(f"Token statistics unavailable: {m}"))
        self.tokens.sig_busy.connect(self._token_busy)
        self._hist = None
        self._hist_data: dict = {}
        self._tokens: dict = {}
        self._build()
        session.sig_model.connect(lambda _i: self.request_tokens())
        session.sig_plan.connect(lambda _p: self._hist_data and self.show_histogram(self._hist_data))

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
        self.content.addLayout(options)

        self.tabs = QTabWidget()
        self.preview_model = RowsModel()
        self.preview = fast_table(self.preview_model)
        self.tabs.addTab(self.preview, "Preview")
        self.problems = QListWidget()
        self.problems.setAlternatingRowColors(True)
        self.tabs.addTab(self.problems, "Problems")
        tok = QWidget()
        tl = QVBoxLayout(tok)
        tl.setContentsMargins(6, 6, 6, 6)
        self.token_status = label("Token lengths appear once a model is chosen.", "muted", wrap=True)
        self.token_busy = Busy()
        tl.addWidget(self.token_status)
        tl.addWidget(self.token_busy)
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
        self.tabs.addTab(tok, "Tokens")
        self.content.addWidget(self.tabs, 1)

    # -- loading ------------------------------------------------------------------------------
    def browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open a dataset", "",
                                              "Datasets (*.jsonl *.json *.csv *.tsv *.parquet *.txt);;All files (*)")
        if path:
            self.load(Path(path))

    def set_drop_highlight(self, on: bool) -> None:
        self.drop.highlight(on)

    def load(self, path: Path) -> None:
        """Inspect ``path`` in the background; the page fills in when the report arrives."""
        self.path = Path(path)
        self.drop.headline.setText(self.path.name)
        self.drop.detail.setText(str(self.path))
        self.summary.setText("Reading and checking every row…")
        self.busy.set_busy(True)
        self.sig_busy.emit(True)
        self.clear_tokens(f"Waiting for {self.path.name} to be read…")
        data = self.session.recipe.data
        self._inspector.run(self.path, roles=dict(data.roles or {}), label_filter=bool(data.label_filter))

    def parse_roles(self, text: str) -> dict:
        """``bing=assistant, human=user`` -> a mapping; raises ValueError naming the bad part."""
        out = {}
        for part in (p.strip() for p in text.replace(";", ",").split(",")):
            if not part:
                continue
            key, sep, value = part.partition("=")
            if not sep or not key.strip() or value.strip().lower() not in ("system", "user", "assistant", "tool"):
                raise ValueError(f"'{part}': write ROLE=system|user|assistant|tool, e.g. bing=assistant")
            out[key.strip()] = value.strip().lower()
        return out

    def _options_changed(self, *_: Any) -> None:
        """Role mapping or label filter changed: store them in the recipe and read the file again."""
        try:
            roles = self.parse_roles(self.roles.text())
        except ValueError as e:
            self.roles.setToolTip(str(e))
            self.summary.setText(f"<span style='color:#CF222E'>Role names: {html.escape(str(e))}</span>")
            return
        data = self.session.recipe.data
        if roles == (data.roles or {}) and self.label_filter.isChecked() == bool(data.label_filter):
            return
        data.roles, data.label_filter = roles, self.label_filter.isChecked()
        if self.path is not None:
            self.load(self.path)

    def clear_tokens(self, status: str) -> None:
        """Nothing of the previous file stays on the Tokens tab while this one is tokenised."""
        self._tokens = {}
        self._hist_data = {}
        if self._hist is not None:
            self.show_histogram({})
        self.example.clear()
        self.token_status.setText(status)

    def _inspected(self, path: Path, report: Any) -> None:
        self._end_busy()
        if path != self.path:
            return  # a newer file was dropped meanwhile
        self.report = report
        self.show_report(report.to_dict())
        self.session.set_dataset(path, report)
        self.sig_loaded.emit(report)
        self.request_tokens()

    def _failed(self, path: Path, message: str) -> None:
        self._end_busy()
        if path != self.path:
            return
        self.summary.setText(f"<span style='color:#CF222E'>{html.escape(message)}</span>")

    def _end_busy(self) -> None:
        self.busy.set_busy(False)
        self.sig_busy.emit(False)

    # -- display ------------------------------------------------------------------------------
    def show_report(self, d: dict) -> None:
        fmt = d.get("format") or "?"
        conf = d.get("confidence")
        rows, usable, skipped = d.get("rows", 0), d.get("usable", 0), d.get("skipped", 0)
        parts = [f"<b>{html.escape(str(fmt))}</b>" + (f" ({float(conf):.0%} sure)" if conf else ""),
                 f"{d.get('reader', '')} file", f"{rows:,} rows", f"<b>{usable:,}</b> usable"]
        if skipped:
            parts.append(f"<span style='color:#CF222E'>{skipped:,} skipped</span>")
        if d.get("duplicates"):
            parts.append(f"{d['duplicates']:,} duplicates")
        if d.get("filtered"):
            parts.append(f"{d['filtered']:,} marked bad (left out)")
        self.summary.setText(" · ".join(parts))
        notes = d.get("notes") or []
        self.notes.setText("<br>".join(html.escape(str(n)) for n in notes))
        self.notes.setVisible(bool(notes))
        self.label_filter.setVisible(bool(d.get("label_column")))
        rows, columns, numbers = preview_table(d.get("preview") or [], d.get("columns") or [])
        self.preview_model.set_rows(rows, columns, numbers)
        if columns and columns[0] == "turns":
            self.preview.setColumnWidth(0, self.preview.fontMetrics().horizontalAdvance("turns") + 24)
        self.tabs.setTabText(0, f"Preview ({len(rows):,} of {d.get('rows', 0):,} rows)")
        self._show_problems(d)

    def _show_problems(self, d: dict) -> None:
        self.problems.clear()
        for g in d.get("problem_groups") or []:
            item = QListWidgetItem(f"{g['count']:,} × {g.get('field') or 'row'}: {g['example']}" +
                                   (f"  →  {g['hint']}" if g.get("hint") else ""))
            f = item.font()
            f.setBold(True)
            item.setFont(f)
            self.problems.addItem(item)
        for p in d.get("problems") or []:
            where = f"line {p['line']}" if p.get("line") is not None else f"row {p.get('row')}" if p.get("row") is not None else "file"
            text = f"{where}: " + (f"{p['field']}: " if p.get("field") else "") + str(p.get("message", ""))
            if p.get("hint"):
                text += f"  →  {p['hint']}"
            self.problems.addItem(QListWidgetItem(text))
        total = d.get("problems_total", len(d.get("problems") or []))
        self.tabs.setTabText(1, f"Problems ({total:,})" if total else "Problems")
        if not total and not d.get("problem_groups"):
            item = QListWidgetItem(f"No problems found: all {d.get('rows', 0):,} rows are usable.")
            item.setFlags(Qt.ItemFlag.NoItemFlags)
            self.problems.addItem(item)

    # -- tokens (subprocess: needs the model's tokenizer) ---------------------------------------
    def request_tokens(self) -> None:
        model = self.session.recipe.model.name_or_path
        if not self.path or not model or self.report is None:
            return
        seq_len = self.session.resolved_recipe().train.seq_len
        self.clear_tokens(f"Tokenising {self.path.name} with {model}'s chat template…")
        data = self.session.recipe.data
        extra = ["--roles", ",".join(f"{k}={v}" for k, v in data.roles.items())] if data.roles else []
        extra += [] if data.label_filter else ["--label-filter", "off"]
        train = self.session.resolved_recipe().train
        extra += ["--packing", str(train.micro_batch)] if train.packing else []  # the mask view as packed
        self.tokens.run_command("data", "inspect", str(self.path), "--model", model, "--seq-len", str(seq_len), *extra)

    def _token_busy(self, on: bool) -> None:
        self.token_busy.set_busy(on)
        self.sig_busy.emit(on)

    def _tokens_ready(self, d: dict) -> None:
        tokens = d.get("tokens")
        if not tokens:
            self.token_status.setText("No token statistics in the answer.")
            return
        self._attach_tokens(tokens)
        self._tokens = tokens
        if d.get("notes"):  # with the model: how its template writes tool calls, among the rest
            self.notes.setText("<br>".join(html.escape(str(n)) for n in d["notes"]))
            self.notes.setVisible(True)
        self.show_histogram(tokens.get("histogram") or {})
        self.show_mask(d.get("mask_view"))

    def _attach_tokens(self, tokens: dict) -> None:
        """Give the in-process report its token statistics so the planner sees real lengths."""
        if self.report is None:
            return
        known = set(TokenStats.__dataclass_fields__)
        self.report.tokens = TokenStats(**{k: v for k, v in tokens.items() if k in known})
        self.session.set_dataset(self.path, self.report)

    def show_histogram(self, hist: dict) -> None:
        """Token lengths as bars, with the sequence length the run would use (it follows the plan)."""
        import pyqtgraph as pg

        from ui.charts import LiveChart

        self._hist_data = hist
        seq_len = self.session.resolved_recipe().train.seq_len
        if hist:
            self.token_status.setText(self._token_summary(self._tokens, hist, seq_len))
        if self._hist is None:
            self._hist = LiveChart("Token length per example", "examples", x_label="tokens", count_y=True)
            self.hist_layout.addWidget(self._hist)
        plot = self._hist.getPlotItem()
        for item in list(plot.items):
            if isinstance(item, pg.BarGraphItem):
                plot.removeItem(item)
        edges, counts = hist.get("edges") or [], hist.get("counts") or []
        if len(edges) == len(counts) + 1 and counts:
            xs = [(a + b) / 2 for a, b in zip(edges, edges[1:])]
            widths = [(b - a) * 0.9 for a, b in zip(edges, edges[1:])]
            plot.addItem(pg.BarGraphItem(x=xs, height=counts, width=widths, brush=pg.mkBrush("#0072B2"),
                                         pen=pg.mkPen("#0072B2")))
        old = self._hist.lines.pop("seq_len", None)
        if old is not None:
            plot.removeItem(old)
        if seq_len:
            line = pg.InfiniteLine(pos=seq_len, angle=90, pen=pg.mkPen("#CF222E", width=2), label=f"seq_len {seq_len}",
                                   labelOpts={"position": 0.9, "color": "#CF222E"})
            plot.addItem(line)
            self._hist.lines["seq_len"] = line

    @staticmethod
    def _token_summary(tokens: dict, hist: dict, seq_len: int) -> str:
        """One line: lengths, and how many examples the run's sequence length would cut."""
        text = (f"{tokens.get('count', 0):,} examples · median {tokens.get('p50')} · 95th percentile "
                f"{tokens.get('p95')} · longest {tokens.get('max')} tokens")
        if (tokens.get("max") or 0) <= seq_len:
            return text + f" · all fit in the planned sequence length of {seq_len}"
        edges, counts = hist.get("edges") or [], hist.get("counts") or []
        over = sum(c for lo, c in zip(edges, counts) if lo >= seq_len)
        return text + f" · about {over:,} longer than the planned {seq_len} (they are truncated)"

    def show_mask(self, mask_view: list | None) -> None:
        if not mask_view:
            self.example.setHtml("<i>No example available.</i>")
            return
        from PySide6.QtWidgets import QApplication

        dark = bool(QApplication.instance().property("studio_dark"))
        mark = "background-color:#5C4B00; color:#FFF3C4" if dark else "background-color:#FFE58F; color:#3D2E00"
        spans = []
        for text, trained in mask_view:
            t = html.escape(str(text)).replace("\n", "↵<br>")
            spans.append(f"<span style='{mark}'>{t}</span>" if trained else f"<span>{t}</span>")
        self.example.setHtml("<p><b>Example as the model sees it</b> — highlighted tokens carry the loss.</p>"
                             f"<pre style='white-space:pre-wrap; font-family:monospace'>{''.join(spans)}</pre>")
