"""Runs: the history from the runs folder, and the loss curves of selected runs overlaid."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

from PySide6.QtCore import QProcess, Qt, QTimer, QUrl, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (QAbstractItemView, QComboBox, QHBoxLayout, QInputDialog, QListWidget, QPlainTextEdit,
                               QPushButton, QSplitter, QVBoxLayout, QWidget)

from studio import events as ev
from studio import paths, registry, runqueue, runs
from ui.session import Session
from ui.widgets.common import Page, label
from ui.widgets.table import RowsModel, fast_table

COLUMNS = ["run", "status", "model", "dataset", "last loss", "val loss", "score", "votes", "steps", "date",
           "name", "tags", "rank", "time"]  # a running run has no final loss
MAX_OVERLAY = 8
SORTS = {"newest first": None, "validation loss (lowest first)": "val_loss", "held-out score (highest first)": "score"}
AXES = {"step": "step", "time (s)": "time"}


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
            "steps": s.step, "date": _date(s.created), **_registry_cells(s)}


def _registry_cells(s: runs.RunSummary) -> dict:
    """The registry's columns: the user's labels, the rank and the training time (from the metadata)."""
    from studio.fsutil import read_json

    def dig(obj, *keys):  # a damaged file may hold any type at any level: only dicts are walked
        for k in keys:
            obj = obj.get(k) if isinstance(obj, dict) else None
        return obj

    labels = registry.read_labels(s.path)
    meta = registry.read_metadata(s.path)
    rank = dig(meta, "recipe", "lora", "rank")
    if rank is None:
        rank = dig(read_json(s.path / runs.RECIPE, default={}), "lora", "rank")
    rank = rank if isinstance(rank, int) and not isinstance(rank, bool) else None
    secs = dig(meta, "duration_s")
    return {"name": labels["name"], "tags": ", ".join(labels["tags"]), "rank": rank,
            "time": f"{int(secs) // 60}m{int(secs) % 60:02d}s" if isinstance(secs, (int, float)) else ""}


def sort_key(s: runs.RunSummary, by: str) -> tuple:
    """Lowest validation loss or highest held-out score first; runs without one last."""
    e = s.eval or {}
    value = e.get("val_loss_adapter") if by == "val_loss" else (
        e["score_adapter"] / e["score_total"] if e.get("score_total") else None)
    return registry.rank_key({by: value}, by)


def config_diff_text(run_dirs: list[Path]) -> str:
    """The recipe settings that differ between the selected runs, one line per setting."""
    from studio.fsutil import read_json

    if len(run_dirs) < 2:
        return "Select two or more runs to see the settings that differ."
    flat = [registry.flatten(read_json(d / runs.RECIPE, default={}) or {}) for d in run_dirs]
    keys = sorted({k for f in flat for k in f if k != "name"})
    differ = [k for k in keys if len({repr(f.get(k)) for f in flat}) > 1]
    if not differ:
        return "The selected runs have the same settings."
    letters = [chr(ord("A") + i) for i in range(len(run_dirs))]
    lines = [f"{ch}: {d.name}" for ch, d in zip(letters, run_dirs)] + [""]
    for k in differ:
        lines.append(f"{k}: " + "  |  ".join(f"{ch} {f.get(k)}" for ch, f in zip(letters, flat)))
    return "\n".join(lines)


def _date(text: str) -> str:
    try:
        return dt.datetime.fromisoformat(text).strftime("%Y-%m-%d %H:%M")
    except (TypeError, ValueError):
        return str(text or "")


def _floatable(v: object) -> bool:
    """A number ``float()`` takes: events.jsonl can be edited to hold an int of 400 digits (OverflowError)."""
    return isinstance(v, float) or isinstance(v, int) and abs(v) < 1e300


def loss_curve(run_dir: Path) -> tuple[list[float], list[float]]:
    """(steps, losses) of a run from its events.jsonl."""
    xs, ys = [], []
    for e in ev.read_events(Path(run_dir) / runs.EVENTS):
        if e.type == ev.METRIC and _floatable(e.data.get("loss")) and _floatable(e.data.get("step")):
            xs.append(float(e.data["step"]))
            ys.append(float(e.data["loss"]))
    return xs, ys


class RunsPage(Page):
    title = "Runs"
    subtitle = ("Every run kept in your runs folder. Select runs to overlay a metric and see the settings that differ; "
                "the queue trains recipes one after another.")
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
        self.tensorboard: QProcess | None = None
        self.last_trashed: str | None = None
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
        self.content.addLayout(self._registry_bar())
        self.split = QSplitter(Qt.Orientation.Vertical)
        self.model = RowsModel()
        self.table = fast_table(self.model)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table.verticalHeader().hide()
        self.table.setToolTip("Double-click a run to see its charts on the Train page")
        self.table.doubleClicked.connect(lambda idx: self.sig_show.emit(self.summaries[idx.row()].path))
        self.table.selectionModel().selectionChanged.connect(lambda *_: self.compare())
        self.split.addWidget(self.table)
        self.split.addWidget(self._compare_panel())
        self.split.setSizes([260, 340])
        self.content.addWidget(self.split, 1)
        self._queue_timer = QTimer(self)
        self._queue_timer.setInterval(3000)
        self._queue_timer.timeout.connect(self.reload_queue)

    # -- building ---------------------------------------------------------------------------
    def _registry_bar(self) -> QHBoxLayout:
        bar = QHBoxLayout()
        buttons = (("Rename…", "Give the selected run a display name (its folder keeps its id)", self.rename_selected),
                   ("Tags…", "Set the selected runs' tags, comma-separated", self.tag_selected),
                   ("Note…", "Write a note on the selected run", self.note_selected),
                   ("Delete", "Move the selected runs to the trash of the runs folder (Undo puts them back)",
                    self.delete_selected),
                   ("Undo delete", "Put the last deleted run back", self.undo_delete),
                   ("Open in TensorBoard", "Serve the selected runs' TensorBoard event files on localhost and open "
                                           "them in the browser", self.open_tensorboard))
        self.registry_buttons = {}
        for text, tip, slot in buttons:
            b = QPushButton(text)
            b.setToolTip(tip)
            b.clicked.connect(slot)
            bar.addWidget(b)
            self.registry_buttons[text] = b
        self.undo_btn = self.registry_buttons["Undo delete"]
        self.tb_btn = self.registry_buttons["Open in TensorBoard"]
        self.tb_btn.setEnabled(_tensorboard_installed())
        if not self.tb_btn.isEnabled():
            self.tb_btn.setToolTip("tensorboard is not installed in the training runtime: pip install tensorboard")
        bar.addStretch(1)
        bar.addWidget(label("Sort:", "muted"))
        self.sort_box = QComboBox()
        self.sort_box.addItems(list(SORTS))
        self.sort_box.setToolTip("Order of the runs: newest first, or the best validation loss or held-out score first")
        self.sort_box.currentIndexChanged.connect(lambda *_: self.reload())
        bar.addWidget(self.sort_box)
        self.status_label = label("", "muted")
        bar.addWidget(self.status_label)
        return bar

    def _compare_panel(self) -> QWidget:
        host = QSplitter(Qt.Orientation.Horizontal)
        left = QWidget()
        lv = QVBoxLayout(left)
        lv.setContentsMargins(0, 0, 0, 0)
        row = QHBoxLayout()
        row.addWidget(label("Metric:", "muted"))
        self.metric_box = QComboBox()
        for key, (_, _, title) in registry.METRICS.items():
            self.metric_box.addItem(title, key)
        self.metric_box.setToolTip("The metric overlaid for the selected runs (from each run's events.jsonl)")
        self.metric_box.currentIndexChanged.connect(lambda *_: self.compare())
        row.addWidget(self.metric_box)
        row.addWidget(label("Axis:", "muted"))
        self.axis_box = QComboBox()
        self.axis_box.addItems(list(AXES))
        self.axis_box.setToolTip("Optimizer steps, or seconds of training since the run started")
        self.axis_box.currentIndexChanged.connect(lambda *_: self.compare())
        row.addWidget(self.axis_box)
        row.addStretch(1)
        lv.addLayout(row)
        self.chart_host = QWidget()
        self.chart_layout = QHBoxLayout(self.chart_host)
        self.chart_layout.setContentsMargins(0, 0, 0, 0)
        lv.addWidget(self.chart_host, 1)
        host.addWidget(left)
        right = QWidget()
        rv = QVBoxLayout(right)
        rv.setContentsMargins(0, 0, 0, 0)
        rv.addWidget(label("Settings that differ", "muted"))
        self.diff_view = QPlainTextEdit()
        self.diff_view.setReadOnly(True)
        self.diff_view.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.diff_view.setPlainText(config_diff_text([]))
        rv.addWidget(self.diff_view, 1)
        qrow = QHBoxLayout()
        qrow.addWidget(label("Queue", "muted"), 1)
        self.queue_run_btn = QPushButton("Run queue")
        self.queue_run_btn.setToolTip("Train the waiting recipes one after another in a background process that "
                                      "keeps going when this window closes (lora-studio queue run --detach)")
        self.queue_run_btn.clicked.connect(self.run_queue)
        self.queue_cancel_btn = QPushButton("Cancel entry")
        self.queue_cancel_btn.setToolTip("Take the selected waiting entry off the queue")
        self.queue_cancel_btn.clicked.connect(self.cancel_queue_entry)
        qrow.addWidget(self.queue_run_btn)
        qrow.addWidget(self.queue_cancel_btn)
        rv.addLayout(qrow)
        self.queue_list = QListWidget()
        self.queue_list.setToolTip("RUNS/queue.json: add recipes from the Plan page (Add to queue, Sweep…) or "
                                   "with lora-studio queue add / sweep")
        rv.addWidget(self.queue_list, 1)
        host.addWidget(right)
        host.setSizes([560, 340])
        return host

    # -- the list ---------------------------------------------------------------------------
    def on_enter(self) -> None:
        self.reload()
        self._queue_timer.start()

    def reload(self) -> None:
        damaged: list = []
        self.summaries = runs.list_runs(skipped=damaged)
        by = SORTS.get(self.sort_box.currentText()) if hasattr(self, "sort_box") else None
        if by:
            self.summaries.sort(key=lambda s: sort_key(s, by))
        self.model.set_rows([run_row(s) for s in self.summaries], COLUMNS)
        self.table.resizeColumnsToContents()
        text = f"{len(self.summaries)} run(s) in {paths.runs_dir()}"
        if damaged:  # nothing is left out in silence: say which runs and why
            text += f"; {len(damaged)} damaged run(s) not shown (hover for why)"
        self.count_label.setText(text)
        self.count_label.setToolTip("\n".join(str(d) for d in damaged))
        self.undo_btn.setEnabled(bool(registry.trashed()))
        self.reload_queue()

    def reload_queue(self) -> None:
        if not self.isVisible() and self._queue_timer.isActive():
            self._queue_timer.stop()
        entries = runqueue.read()
        pid = runqueue.runner_pid() if entries else None
        self.queue_list.clear()
        for e in entries:
            self.queue_list.addItem(f"{e['status']:<9} {e['label']}  ({e['id']})")
        if not entries:
            self.queue_list.addItem("(empty)")
        self.queue_run_btn.setEnabled(not pid and any(e["status"] == runqueue.WAITING for e in entries))
        self.queue_run_btn.setText(f"Runner pid {pid}" if pid else "Run queue")

    def selected(self) -> list[runs.RunSummary]:
        rows = sorted({i.row() for i in self.table.selectionModel().selectedRows()})
        return [self.summaries[r] for r in rows if r < len(self.summaries)]

    # -- compare ----------------------------------------------------------------------------
    def compare(self) -> None:
        """Overlay the chosen metric of the selected runs (up to eight) and show their settings that differ."""
        from ui.charts import PALETTE, LiveChart

        metric = self.metric_box.currentData() or "loss"
        axis = AXES.get(self.axis_box.currentText(), "step")
        title = registry.METRICS[metric][2]
        if self.chart is not None:
            self.chart_layout.removeWidget(self.chart)
            self.chart.deleteLater()
        self.chart = LiveChart(title[:1].upper() + title[1:], title, x_label="step" if axis == "step" else "seconds")
        self.chart_layout.addWidget(self.chart)
        sel = self.selected()
        for i, s in enumerate(sel[:MAX_OVERLAY]):
            xs, ys = registry.metric_series(s.path, metric, axis)
            name = registry.read_labels(s.path)["name"] or s.id
            self.chart.add_series(name, PALETTE[i % len(PALETTE)])
            for x, y in zip(xs, ys):
                self.chart.append(name, x, y)
        self.chart.refresh()
        self.diff_view.setPlainText(config_diff_text([s.path for s in sel]))

    # -- registry actions -------------------------------------------------------------------
    def rename_selected(self) -> None:
        sel = self.selected()
        if not sel:
            return
        current = registry.read_labels(sel[0].path)["name"]
        text, ok = QInputDialog.getText(self, "Rename run", f"Display name of {sel[0].id}:", text=current)
        if ok:
            registry.set_labels(sel[0].path, name=text)
            self.reload()

    def tag_selected(self) -> None:
        sel = self.selected()
        if not sel:
            return
        current = ", ".join(registry.read_labels(sel[0].path)["tags"])
        text, ok = QInputDialog.getText(self, "Tags", "Tags (comma-separated; empty removes them):", text=current)
        if ok:
            tags = [t.strip() for t in text.split(",") if t.strip()]
            for s in sel:
                old = registry.read_labels(s.path)["tags"]
                registry.set_labels(s.path, add_tags=tags, remove_tags=[t for t in old if t not in tags])
            self.reload()

    def note_selected(self) -> None:
        sel = self.selected()
        if not sel:
            return
        text, ok = QInputDialog.getMultiLineText(self, "Note", f"Note on {sel[0].id}:",
                                                 registry.read_labels(sel[0].path)["note"])
        if ok:
            registry.set_labels(sel[0].path, note=text)
            self.reload()

    def delete_selected(self) -> None:
        from studio.errors import UserError

        moved = []
        for s in self.selected():
            try:
                registry.trash(s.path)
                moved.append(s.id)
            except (UserError, OSError) as e:
                self.status_label.setText(str(e))
        if moved:
            self.status_label.setText(f"Moved {', '.join(moved)} to the trash. Undo puts {'it' if len(moved) == 1 else 'them'} back.")
        self.reload()

    def undo_delete(self) -> None:
        from studio.errors import UserError

        try:
            target = registry.restore()
            self.status_label.setText(f"Restored {target.name}.")
        except (UserError, OSError) as e:
            self.status_label.setText(str(e))
        self.reload()

    def open_tensorboard(self) -> None:
        """TensorBoard on localhost over the selected runs' event files (every run's when none is selected)."""
        import socket

        from studio import procs
        from studio.train.trackers import TB_DIR

        dirs = [s.path for s in (self.selected() or self.summaries) if (s.path / TB_DIR).is_dir()]
        if not dirs:
            self.status_label.setText("No TensorBoard event files in these runs (runs trained with tensorboard have them).")
            return
        if self.tensorboard is not None:
            self.tensorboard.kill()
            self.tensorboard.waitForFinished(2000)
        with socket.socket() as sock:
            sock.bind(("localhost", 0))
            port = sock.getsockname()[1]
        argv = procs.worker_argv("tensorboard.main", "--logdir_spec",
                                 ",".join(f"{d.name}:{d / TB_DIR}" for d in dirs), "--host", "localhost",
                                 "--port", str(port))
        self.tensorboard = QProcess(self)  # ended with the window
        self.tensorboard.start(argv[0], argv[1:])
        url = QUrl(f"http://localhost:{port}/")
        QTimer.singleShot(4000, lambda: QDesktopServices.openUrl(url))
        self.status_label.setText(f"TensorBoard for {len(dirs)} run(s): {url.toString()}")

    # -- the queue --------------------------------------------------------------------------
    def run_queue(self) -> None:
        """A detached queue runner (it keeps going after the window closes)."""
        from ui.controllers import CommandController

        self._queue_cmd = CommandController(self)
        self._queue_cmd.sig_done.connect(lambda d: self.status_label.setText(str(d.get("message", ""))))
        self._queue_cmd.sig_finished.connect(lambda *_: self.reload_queue())
        self._queue_cmd.run_command("queue", "run", "--detach", "--runs-dir", str(paths.runs_dir()))

    def cancel_queue_entry(self) -> None:
        from studio.errors import UserError

        item = self.queue_list.currentItem()
        if item is None or "(" not in item.text():
            return
        try:
            runqueue.cancel(item.text().rsplit("(", 1)[1].rstrip(")"))
        except UserError as e:
            self.status_label.setText(str(e))
        self.reload_queue()

    def open_selected(self) -> None:
        sel = self.selected()
        target = sel[0].path if sel else paths.runs_dir()
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(target)))

    def open_runs_folder(self) -> None:
        paths.runs_dir().mkdir(parents=True, exist_ok=True)
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(paths.runs_dir())))


def _tensorboard_installed() -> bool:
    """Whether the training runtime can serve TensorBoard (the window's own interpreter is asked when it is that one)."""
    import importlib.util
    import sys

    from studio import procs

    if procs.worker_python() != sys.executable:
        return True  # a separate managed runtime: its lock installs tensorboard
    return importlib.util.find_spec("tensorboard") is not None
