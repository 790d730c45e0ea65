"""The studio window: a sidebar of pages (Model, Data, Plan, Train, Runs, Export), menus with
shortcuts, drag-and-drop of files and folders anywhere, remembered geometry and choices."""
from __future__ import annotations

import gc
import importlib
import platform
from pathlib import Path

from PySide6 import __version__ as PYSIDE_VERSION
from PySide6.QtCore import QSize, QTimer, qVersion
from PySide6.QtGui import QAction, QCloseEvent, QKeySequence
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QMessageBox,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from studio import __version__, paths
from studio.attach import live_runs
from studio.models import looks_like_model
from studio.procs import worker_python
from ui import theme
from ui.controllers import WorkerController
from ui.prefs import settings
from ui.runtime_dialog import attach as attach_runtime_ui
from ui.session import Session
from ui.widgets.common import Busy

APP_TITLE = "LoRA Studio"


# (module, class, title, icon, one line): the sidebar is drawn from this before any page exists.
PAGES = (("ui.pages.model", "ModelPage", "Model", "model", "Pick the base model"),
         ("ui.pages.data", "DataPage", "Data", "data", "Bring your dataset"),
         ("ui.pages.plan", "PlanPage", "Plan", "plan", "Fit the settings to your GPU memory"),
         ("ui.pages.train", "TrainPage", "Train", "train", "Train and watch it live"),
         ("ui.pages.runs", "RunsPage", "Runs", "runs", "Compare past runs"),
         ("ui.pages.export", "ExportPage", "Export", "export", "Export the result"),
         ("ui.pages.playground", "PlaygroundPage", "Playground", "playground", "Chat with the fine-tuned model"))


class MainWindow(QMainWindow):
    """Pages are built on first use (the one on screen first, the rest right after the window
    is shown), so the window appears quickly."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(f"{APP_TITLE} {__version__}")
        self.setWindowIcon(theme.icon("app"))
        self.setAcceptDrops(True)
        self.settings = settings()
        self.session = Session(self)
        self._pages: list = [None] * len(PAGES)
        self._closing_after_stop = False
        self._busy_count = 0
        self._build()
        self._menus()
        self.sidebar.currentRowChanged.connect(self._on_page)
        self.session.sig_status.connect(self.status_text.setText)
        self.session.sig_budget.connect(lambda _b: self._show_device())
        self._restore()

    # -- pages, built on demand ---------------------------------------------------------------
    def page(self, index: int):
        """The page at ``index``, building (and wiring) it the first time it is needed."""
        if self._pages[index] is None:
            module, cls, *_ = PAGES[index]
            page = getattr(importlib.import_module(module), cls)(self.session)
            self._pages[index] = page
            placeholder = self.stack.widget(index)
            self.stack.insertWidget(index, page)
            self.stack.removeWidget(placeholder)
            placeholder.deleteLater()
            self._wire_page(index, page)
        return self._pages[index]

    @property
    def pages(self) -> list:
        return [self.page(i) for i in range(len(PAGES))]

    model_page = property(lambda self: self.page(0))
    data_page = property(lambda self: self.page(1))
    plan_page = property(lambda self: self.page(2))
    train_page = property(lambda self: self.page(3))
    runs_page = property(lambda self: self.page(4))
    export_page = property(lambda self: self.page(5))
    playground_page = property(lambda self: self.page(6))

    def _built(self, index: int):
        return self._pages[index]

    def _wire_page(self, index: int, page) -> None:
        name = PAGES[index][1]
        if name in ("ModelPage", "DataPage"):
            page.sig_busy.connect(self._busy)
        elif name == "ExportPage":
            page.controller.sig_busy.connect(self._busy)
        elif name == "TrainPage":
            page.sig_run_ended.connect(self._run_ended)
            page.controller.sig_finished.connect(self._after_training_finished)
        elif name == "PlanPage":
            page.sig_train.connect(self._start)
        elif name == "RunsPage":
            page.sig_export.connect(self._export_run)
            page.sig_resume.connect(self._resume_run)
            page.sig_show.connect(self._show_run)
            page.sig_chat.connect(self._chat_run)
        elif name == "PlaygroundPage":
            page.sig_voted.connect(lambda _r: self._built(4) is not None and self._built(4).reload())

    def _show_device(self) -> None:
        """The sidebar footer: the GPU (or none) and the budget the planner uses."""
        gpu = getattr(self._built(2), "gpu_name", "") if self._built(2) is not None else ""
        budget = self.session.budget / 1024 ** 3
        self.device_label.setText(f"{gpu or 'No GPU detected'}<br>Budget {budget:.1f} GiB")

    def _chat_run(self, run_dir) -> None:
        self.show_page(6)
        self.playground_page.select_run(run_dir)

    def _run_ended(self, *_args) -> None:
        for i in (4, 5, 6):
            if self._built(i) is not None:
                self._built(i).reload()

    def _show_run(self, run_dir) -> None:
        if self.train_page.show_run(run_dir):
            self.show_page(3)

    def _resume_run(self, run_dir) -> None:
        """A live run (kept running by an earlier window) is followed; a stopped one resumed."""
        self.show_page(3)
        if not self.train_page.attach(run_dir):
            self.train_page.resume_run(run_dir)

    def attach_live_run(self) -> None:
        """Follow the newest run an earlier window left training, if any."""

        live = live_runs()
        if live and self.train_page.attach(live[0].path):
            self.status_text.setText(f"Following {live[0].id}, still training from an earlier session.")

    def _export_run(self, run_dir) -> None:
        self.show_page(5)
        self.export_page.select_run(run_dir)

    # -- layout -------------------------------------------------------------------------------
    def _build(self) -> None:
        central = QWidget()
        lay = QHBoxLayout(central)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(0)
        side = QWidget()
        side.setObjectName("sidepanel")
        side.setFixedWidth(180)
        side_lay = QVBoxLayout(side)
        side_lay.setContentsMargins(0, 0, 0, 0)
        side_lay.setSpacing(0)
        brand = QLabel(f"<img src='{theme.icon_path('app')}' width='26' height='26' style='vertical-align:middle'>"
                       f"&nbsp;&nbsp;<b>LoRA Studio</b>")
        brand.setObjectName("brand")
        side_lay.addWidget(brand)
        self.sidebar = QListWidget()
        self.sidebar.setObjectName("sidebar")
        self.sidebar.setIconSize(QSize(20, 20))
        side_lay.addWidget(self.sidebar, 1)
        self.device_label = QLabel("")
        self.device_label.setObjectName("device")
        self.device_label.setWordWrap(True)
        side_lay.addWidget(self.device_label)
        self.stack = QStackedWidget()
        for i, (_m, _c, title, icon, tip) in enumerate(PAGES):
            item = QListWidgetItem(theme.icon(icon), title)
            item.setToolTip(f"{tip} (Ctrl+{i + 1})")
            self.sidebar.addItem(item)
            self.stack.addWidget(QWidget())
        lay.addWidget(side)
        lay.addWidget(self.stack, 1)
        self.setCentralWidget(central)
        self.busy = Busy()
        self.busy.setFixedWidth(120)
        self.status_text = QLabel("Ready.")
        self.statusBar().addWidget(self.status_text, 1)
        self.statusBar().addPermanentWidget(self.busy)
        self.busy.hide()  # addPermanentWidget shows it

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
        self._action(f, "Open &runs folder", lambda: self.runs_page.open_runs_folder(), None, "Show the runs folder")
        f.addSeparator()
        self._action(f, "&Quit", self.close, QKeySequence.StandardKey.Quit)
        r = mb.addMenu("&Run")
        self.act_start = self._action(r, "&Start training", self._start, "Ctrl+R", "Start a run with the current plan")
        self.act_pause = self._action(r, "&Pause / Resume", lambda: self.train_page.toggle_pause(), "Ctrl+P")
        self.act_stop = self._action(r, "S&top", lambda: self.train_page.stop(), "Ctrl+.", "Stop the run, saving the adapter")
        v = mb.addMenu("&View")
        for i, spec in enumerate(PAGES):
            self._action(v, spec[2], lambda _=False, i=i: self.show_page(i), f"Ctrl+{i + 1}")
        h = mb.addMenu("&Help")
        self._action(h, "&About LoRA Studio", self.about, QKeySequence.StandardKey.HelpContents)

    def _busy(self, on: bool) -> None:
        self._busy_count = max(0, self._busy_count + (1 if on else -1))
        self.busy.set_busy(self._busy_count > 0)

    def _on_page(self, row: int) -> None:
        if 0 <= row < len(PAGES):
            page = self.page(row)
            self.stack.setCurrentIndex(row)
            page.on_enter()

    def show_page(self, index_or_page) -> None:
        index = index_or_page if isinstance(index_or_page, int) else self._pages.index(index_or_page)
        if self.sidebar.currentRow() == index:
            self._on_page(index)
        self.sidebar.setCurrentRow(index)

    def startup_steps(self) -> list:
        """The work done once the window is on screen, in short steps (the app runs one per turn of
        the event loop, so input is handled between them): the other pages, the charts (pyqtgraph),
        the hardware, the run history, the model list, the runtime offer."""
        steps = [lambda i=i: self.page(i) for i in range(len(PAGES))]
        steps += [self.train_page.ensure_charts, self.plan_page.detect_hardware, self._show_device,
                  self.runs_page.reload, self.export_page.reload, self.model_page.populate,
                  self.attach_live_run, self._attach_runtime_ui]
        return steps

    def finish_startup(self) -> None:
        """All the start-up steps at once (tests and screenshots, which need the whole window)."""
        for step in self.startup_steps():
            step()

    def _attach_runtime_ui(self) -> None:
        # Help > Diagnostics and the first-run ML runtime offer (ui/runtime_dialog.py).
        attach_runtime_ui(self)

    @staticmethod
    def park_long_lived() -> None:
        """Move the window's long-lived objects out of the garbage collector's way.

        Tens of thousands of Qt wrappers and pyqtgraph items would otherwise be re-scanned by every
        full collection (~100 ms on a busy machine: a visible stall during a run). The app calls
        this once after start-up; tests, which build many windows, do not.
        """
        gc.collect()
        gc.freeze()

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
        if self._built(1) is not None:
            self._built(1).set_drop_highlight(False)

    def dropEvent(self, event) -> None:
        self.dragLeaveEvent(event)
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
        # per device: a GPU's memory and this computer's RAM are different budgets (a CPU-only machine that
        # once restored a saved GPU budget planned a run for memory it does not have)
        s.setValue(f"budget/{self.session.device}", self.session.budget)
        s.sync()

    def restore_choices(self) -> None:
        """Re-open the last model, dataset and budget (unless the command line chose others); the budget is the
        one last set for the device this computer trains on (detected before this runs)."""
        s = self.settings
        budget = s.value(f"budget/{self.session.device}")
        if budget:
            self.plan_page.set_budget_bytes(int(budget))
        model = s.value("model")
        if model:
            self.model_page.choose(str(model))
        dataset = s.value("dataset")
        if dataset and Path(str(dataset)).exists():
            self.data_page.load(Path(str(dataset)))

    def closeEvent(self, event: QCloseEvent) -> None:
        train = self._built(3)
        if train is not None and train.training and not self._closing_after_stop:
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
        self.end_workers()
        self.remember_choices()
        event.accept()

    def end_workers(self) -> None:
        """End every worker that does not outlive the window (a download keeps its partial file for the next
        one; a chat's model reloads next time; a probe runs again)."""
        for controller in self.findChildren(WorkerController):
            if not controller.outlives_window:
                controller.kill_now()

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
