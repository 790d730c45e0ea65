"""The studio window: a sidebar of pages (Model, Data, Plan, Train, Runs, Export), menus with
shortcuts, drag-and-drop of files and folders anywhere, remembered geometry and choices."""
from __future__ import annotations

import os
import platform
from pathlib import Path

from PySide6 import __version__ as PYSIDE_VERSION
from PySide6.QtCore import QSettings, QSize, Qt, QTimer, qVersion
from PySide6.QtGui import QAction, QCloseEvent, QKeySequence
from PySide6.QtWidgets import (QFileDialog, QHBoxLayout, QLabel, QListWidget, QListWidgetItem, QMainWindow,
                               QMessageBox, QStackedWidget, QWidget)

from studio import __version__, paths
from ui import theme
from ui.pages.data import DataPage
from ui.pages.export import ExportPage
from ui.pages.model import ModelPage, looks_like_model
from ui.pages.plan import PlanPage
from ui.pages.runs import RunsPage
from ui.pages.train import TrainPage
from ui.session import Session
from ui.widgets.common import Busy

APP_TITLE = "LoRA Studio"


def settings() -> QSettings:
    """QSettings in the platform's place; beside the data folder when LORA_STUDIO_HOME is set (tests)."""
    home = os.environ.get("LORA_STUDIO_HOME")
    if home:
        return QSettings(str(Path(home) / "studio-settings.ini"), QSettings.Format.IniFormat)
    return QSettings()


class MainWindow(QMainWindow):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(f"{APP_TITLE} {__version__}")
        self.setWindowIcon(theme.icon("app"))
        self.setAcceptDrops(True)
        self.settings = settings()
        self.session = Session(self)
        self.model_page = ModelPage(self.session)
        self.data_page = DataPage(self.session)
        self.plan_page = PlanPage(self.session)
        self.train_page = TrainPage(self.session)
        self.runs_page = RunsPage(self.session)
        self.export_page = ExportPage(self.session)
        self.pages = [self.model_page, self.data_page, self.plan_page, self.train_page, self.runs_page, self.export_page]
        self._closing_after_stop = False
        self._build()
        self._menus()
        self._wire()
        self._restore()

    # -- layout -------------------------------------------------------------------------------
    def _build(self) -> None:
        central = QWidget()
        lay = QHBoxLayout(central)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(0)
        self.sidebar = QListWidget()
        self.sidebar.setObjectName("sidebar")
        self.sidebar.setFixedWidth(168)
        self.sidebar.setIconSize(QSize(20, 20))
        self.stack = QStackedWidget()
        for i, page in enumerate(self.pages):
            item = QListWidgetItem(theme.icon(page.icon_name), page.title)
            item.setToolTip(f"{page.subtitle} (Ctrl+{i + 1})")
            self.sidebar.addItem(item)
            self.stack.addWidget(page)
        lay.addWidget(self.sidebar)
        lay.addWidget(self.stack, 1)
        self.setCentralWidget(central)
        self.busy = Busy()
        self.busy.setFixedWidth(120)
        self.status_text = QLabel("Ready.")
        self.statusBar().addWidget(self.status_text, 1)
        self.statusBar().addPermanentWidget(self.busy)

    def _action(self, menu, text: str, slot, shortcut=None, tip: str = "") -> QAction:
        act = QAction(text, self)
        if shortcut is not None:
            act.setShortcut(QKeySequence(shortcut))
        if tip:
            act.setStatusTip(tip)
        act.triggered.connect(slot)
        menu.addAction(act)
        return act

    def _menus(self) -> None:
        mb = self.menuBar()
        f = mb.addMenu("&File")
        self._action(f, "Open &dataset…", self.open_dataset, QKeySequence.StandardKey.Open, "Choose a dataset file")
        self._action(f, "Open &model folder…", self.open_model_folder, "Ctrl+Shift+O", "Choose a local model folder")
        self._action(f, "Open &runs folder", self.runs_page.open_runs_folder, None, "Show the runs folder")
        f.addSeparator()
        self._action(f, "&Quit", self.close, QKeySequence.StandardKey.Quit)
        r = mb.addMenu("&Run")
        self.act_start = self._action(r, "&Start training", self._start, "Ctrl+R", "Start a run with the current plan")
        self.act_pause = self._action(r, "&Pause / Resume", self.train_page.toggle_pause, "Ctrl+P")
        self.act_stop = self._action(r, "S&top", self.train_page.stop, "Ctrl+.", "Stop the run, saving the adapter")
        v = mb.addMenu("&View")
        for i, page in enumerate(self.pages):
            self._action(v, page.title, lambda _=False, i=i: self.show_page(i), f"Ctrl+{i + 1}")
        h = mb.addMenu("&Help")
        self._action(h, "&About LoRA Studio", self.about, QKeySequence.StandardKey.HelpContents)

    def _wire(self) -> None:
        self.sidebar.currentRowChanged.connect(self._on_page)
        self.session.sig_status.connect(self.status_text.setText)
        self.model_page.sig_busy.connect(self._busy)
        self.data_page.sig_busy.connect(self._busy)
        self.export_page.controller.sig_busy.connect(self._busy)
        self.train_page.sig_run_ended.connect(lambda *_: self.runs_page.reload())
        self.train_page.sig_run_ended.connect(lambda *_: self.export_page.reload())
        self.train_page.controller.sig_finished.connect(self._after_training_finished)
        self.plan_page.sig_train.connect(self._start)

    def _busy(self, on: bool) -> None:
        self._busy_count = max(0, getattr(self, "_busy_count", 0) + (1 if on else -1))
        self.busy.set_busy(self._busy_count > 0)

    def _on_page(self, row: int) -> None:
        self.stack.setCurrentIndex(row)
        if 0 <= row < len(self.pages):
            self.pages[row].on_enter()

    def show_page(self, index_or_page) -> None:
        index = index_or_page if isinstance(index_or_page, int) else self.pages.index(index_or_page)
        self.sidebar.setCurrentRow(index)

    def finish_startup(self) -> None:
        """Work done once the window is on screen: charts (pyqtgraph), hardware, run history."""
        self.train_page.ensure_charts()
        self.plan_page.detect_hardware()
        self.runs_page.reload()
        self.export_page.reload()
        self.model_page.populate()

    # -- actions ------------------------------------------------------------------------------
    def _start(self) -> None:
        self.show_page(self.train_page)
        self.train_page.start()

    def open_dataset(self) -> None:
        start = self.settings.value("last_dir", str(Path.home()))
        path, _ = QFileDialog.getOpenFileName(self, "Open a dataset", start,
                                              "Datasets (*.jsonl *.json *.csv *.tsv *.parquet *.txt);;All files (*)")
        if path:
            self.settings.setValue("last_dir", str(Path(path).parent))
            self.open_path(Path(path))

    def open_model_folder(self) -> None:
        start = self.settings.value("last_model_dir", str(Path.home()))
        path = QFileDialog.getExistingDirectory(self, "Open a model folder", start)
        if path:
            self.settings.setValue("last_model_dir", path)
            self.open_path(Path(path))

    def open_path(self, path: Path) -> None:
        """A dropped or chosen path: a model folder goes to Model, anything else to Data."""
        if looks_like_model(path):
            self.show_page(self.model_page)
            self.model_page.choose(str(path))
        else:
            self.show_page(self.data_page)
            self.data_page.load(path)

    def about(self) -> None:
        from studio.procs import worker_python

        QMessageBox.about(self, "About LoRA Studio", (
            f"<h3>LoRA Studio {__version__}</h3>"
            "<p>Fine-tune an open LLM on your own GPU, privately and offline.</p>"
            f"<p>Qt {qVersion()} · PySide6 {PYSIDE_VERSION} · Python {platform.python_version()}<br>"
            f"pyqtgraph {_version('pyqtgraph')} · {platform.system()} {platform.release()}</p>"
            f"<p>Training runtime: <code>{worker_python()}</code><br>Runs: <code>{paths.runs_dir()}</code></p>"
            "<p>Licensed under the Apache License 2.0.</p>"))

    # -- drag and drop ------------------------------------------------------------------------
    def dragEnterEvent(self, event) -> None:
        if event.mimeData().hasUrls() and any(u.isLocalFile() for u in event.mimeData().urls()):
            event.acceptProposedAction()
            self.data_page.set_drop_highlight(True)

    def dragLeaveEvent(self, event) -> None:
        self.data_page.set_drop_highlight(False)

    def dropEvent(self, event) -> None:
        self.data_page.set_drop_highlight(False)
        urls = [u for u in event.mimeData().urls() if u.isLocalFile()]
        if urls:
            event.acceptProposedAction()
            self.open_path(Path(urls[0].toLocalFile()))

    # -- settings and closing -----------------------------------------------------------------
    def _restore(self) -> None:
        geometry = self.settings.value("geometry")
        if geometry is not None:
            self.restoreGeometry(geometry)
        else:
            self.resize(1280, 820)
        state = self.settings.value("window_state")
        if state is not None:
            self.restoreState(state)
        self.show_page(int(self.settings.value("page", 0) or 0))

    def remember_choices(self) -> None:
        s = self.settings
        s.setValue("geometry", self.saveGeometry())
        s.setValue("window_state", self.saveState())
        s.setValue("page", self.sidebar.currentRow())
        if self.session.recipe.model.name_or_path:
            s.setValue("model", self.session.recipe.model.name_or_path)
        if self.session.recipe.data.path:
            s.setValue("dataset", self.session.recipe.data.path)
        s.setValue("budget", self.session.budget)
        s.sync()

    def restore_choices(self) -> None:
        """Re-open the last model, dataset and budget (unless the command line chose others)."""
        s = self.settings
        budget = s.value("budget")
        if budget:
            self.plan_page.set_budget_bytes(int(budget))
        model = s.value("model")
        if model:
            self.model_page.choose(str(model))
        dataset = s.value("dataset")
        if dataset and Path(str(dataset)).exists():
            self.data_page.load(Path(str(dataset)))

    def closeEvent(self, event: QCloseEvent) -> None:
        if self.train_page.training and not self._closing_after_stop:
            choice = self.ask_close_choice()
            if choice == "stop":
                self._closing_after_stop = True
                self.train_page.stop()
                self.status_text.setText("Stopping the run before closing…")
                event.ignore()
                return
            if choice != "keep":
                event.ignore()
                return
            self.train_page.controller.detach()
        self.export_page.controller.kill_now()
        self.remember_choices()
        event.accept()

    def ask_close_choice(self) -> str:
        """Ask what to do with a run that is still training: 'stop', 'keep' or 'cancel'."""
        box = QMessageBox(self)
        box.setIcon(QMessageBox.Icon.Question)
        box.setWindowTitle("A run is still training")
        box.setText("A run is still training. Stop it, or keep it running after the window closes?")
        box.setInformativeText("Stopping saves a checkpoint and the adapter first. A run kept going writes its "
                               "progress to its run folder; the Runs page shows it next time.")
        stop = box.addButton("Stop and save", QMessageBox.ButtonRole.DestructiveRole)
        keep = box.addButton("Keep running", QMessageBox.ButtonRole.AcceptRole)
        box.addButton(QMessageBox.StandardButton.Cancel)
        box.setDefaultButton(keep)
        box.exec()
        clicked = box.clickedButton()
        return "stop" if clicked is stop else "keep" if clicked is keep else "cancel"

    def _after_training_finished(self, *_):
        if self._closing_after_stop:
            QTimer.singleShot(0, self.close)


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"
