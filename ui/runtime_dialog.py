"""First-run ML runtime setup and Help > Diagnostics, for the window (no torch here, ever).

``attach(window)`` adds Help > "Diagnostics…" and "Set up the ML runtime…", and when nothing can
run the workers yet (``studio.runtime.needs_setup()``) shows a bar at the top of the window that
offers the setup. The setup runs ``lora-studio runtime setup --events`` under the one process driver
(``ui.controllers.WorkerController``: it can be cancelled and never freezes the window) and speaks the
worker protocol: progress, pip's lines and, on failure, the error in words with the log's path. The
doctor runs the same way (``lora-studio doctor --events``) and answers with its report in a ``done`` event.
"""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, QUrl, Signal
from PySide6.QtGui import QAction, QDesktopServices, QGuiApplication
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QToolBar,
    QVBoxLayout,
    QWidget,
)

from studio import events, procs
from studio.runtime import setup, state
from studio.runtime.doctor import format_report
from ui.controllers import WorkerController

OFFER_NAME = "runtimeOffer"
LOG_LINES = 2000  # the dialog's log view keeps the last lines only; the file keeps everything
KILL_AFTER_S = 3.0


def _driver(parent, argv: list[str] | None, default: list[str]) -> tuple[WorkerController, list[str]]:
    """The process driver of a dialog and the command it runs (tests pass a fake one)."""
    return WorkerController(parent, stop_grace_s=0.0, term_grace_s=KILL_AFTER_S), list(argv or default)


class RuntimeSetupDialog(QDialog):
    """Progress of the runtime setup: the step, a bar, pip's output, and the outcome in words."""

    sig_done = Signal(bool)

    def __init__(self, parent: QWidget | None = None, argv: list[str] | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Set up the ML runtime")
        self.setMinimumWidth(620)
        self.ok: bool | None = None
        self.log_path: str | None = None
        self.process, self.argv = _driver(self, argv, setup.setup_command("--events"))
        self._build()
        self.process.sig_event.connect(self._event)
        self.process.sig_stderr.connect(self._stderr_line)
        self.process.sig_finished.connect(lambda code, _done: self._finished(code))

    def _build(self) -> None:
        lay = QVBoxLayout(self)
        intro = QLabel("Training needs PyTorch, transformers, peft and bitsandbytes. They go into a private "
                       f"Python environment in <code>{state.runtime_dir()}</code> (a few GB; needs the "
                       "internet once). Nothing else on this computer is changed.")
        intro.setWordWrap(True)
        self.step = QLabel("Starting…")
        self.bar = QProgressBar()
        self.bar.setRange(0, 0)
        self.output = QPlainTextEdit()
        self.output.setReadOnly(True)
        self.output.setMaximumBlockCount(LOG_LINES)
        self.output.setMinimumHeight(160)
        self.message = QLabel()
        self.message.setWordWrap(True)
        self.message.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.message.hide()
        self.buttons = QDialogButtonBox()
        self.cancel_button = self.buttons.addButton(QDialogButtonBox.StandardButton.Cancel)
        self.log_button = self.buttons.addButton("Open log", QDialogButtonBox.ButtonRole.ActionRole)
        self.log_button.hide()
        self.cancel_button.clicked.connect(self._cancel)
        self.log_button.clicked.connect(self._open_log)
        for w in (intro, self.step, self.bar, self.output, self.message, self.buttons):
            lay.addWidget(w)

    def start(self) -> None:
        try:
            self.process.start(self.argv, env=procs.worker_env())
        except OSError as e:
            self._line(f"could not start {self.argv[0]}: {e.strerror or e}")
            self._finished(-1)

    def _event(self, event) -> None:
        if event.type == events.PROGRESS:
            self.bar.setRange(0, int(event.data.get("total", 0)))
            self.bar.setValue(int(event.data.get("done", 0)))
            self.step.setText(str(event.data.get("label", "")))
        elif event.type == events.LOG:
            self._line(str(event.data.get("line", "")))
        elif event.type == events.ERROR:
            self.log_path = event.data.get("log")
            self._finish(False, str(event.data.get("message", "The setup failed.")))
        elif event.type == events.DONE:
            self.log_path = event.data.get("log")
            self._finish(True, "The ML runtime is ready: training can start.")

    def _line(self, text: str) -> None:
        self.output.appendPlainText(text)

    def _stderr_line(self, text: str) -> None:
        if self.ok is None or text.strip():  # the protocol's log events arrive through _event
            self._line(text)

    def _finished(self, code: int) -> None:
        if self.ok is None:  # ended without a done or error event: crashed, killed or cancelled
            self._finish(False, f"The setup stopped before it finished (exit code {code}). "
                                f"The log is {state.log_path()}.")
            self.log_path = str(state.log_path())
            self.log_button.setVisible(Path(self.log_path).is_file())

    def _finish(self, ok: bool, text: str) -> None:
        self.ok = ok
        self.bar.setRange(0, 1)
        self.bar.setValue(1 if ok else 0)
        self.step.setText("Done." if ok else "The setup failed.")
        self.message.setText(text)
        self.message.setProperty("role", "ok" if ok else "error")
        self.message.show()
        self.log_button.setVisible(bool(self.log_path) and not ok)
        self.cancel_button.setText("Close")
        self.sig_done.emit(ok)

    def _cancel(self) -> None:
        if self.process.running:
            self.step.setText("Cancelling…")
            self.process.terminate()
        else:
            self.done(QDialog.DialogCode.Accepted if self.ok else QDialog.DialogCode.Rejected)

    def _open_log(self) -> None:
        if self.log_path:
            QDesktopServices.openUrl(QUrl.fromLocalFile(self.log_path))

    def reject(self) -> None:  # Esc or the window's close button: cancel a running setup first
        if self.process.running:
            self._cancel()
        else:
            super().reject()


class DiagnosticsDialog(QDialog):
    """Help > Diagnostics: the doctor's report (GPU, driver, CUDA, bitsandbytes, disk, runtime)."""

    def __init__(self, parent: QWidget | None = None, argv: list[str] | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Diagnostics")
        self.resize(720, 460)
        self.report: dict | None = None
        lay = QVBoxLayout(self)
        self.text = QPlainTextEdit("Checking the GPU, the driver and the ML runtime…")
        self.text.setReadOnly(True)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        copy = buttons.addButton("Copy", QDialogButtonBox.ButtonRole.ActionRole)
        copy.clicked.connect(lambda: QGuiApplication.clipboard().setText(self.text.toPlainText()))
        buttons.rejected.connect(self.reject)
        self.bar = QProgressBar()
        self.bar.setRange(0, 0)  # busy until the report is complete
        self.bar.setTextVisible(False)
        lay.addWidget(self.text)
        lay.addWidget(self.bar)
        lay.addWidget(buttons)
        self.process, self.argv = _driver(self, argv, setup.cli_command("doctor", "--events"))
        self.process.sig_event.connect(self._event)
        self.process.sig_finished.connect(self._finished)

    def start(self) -> None:
        try:
            self.process.start(self.argv, env=procs.worker_env())
        except OSError as e:
            self.text.setPlainText(f"The diagnostics could not start ({e.strerror or e}).")

    def _event(self, event) -> None:
        if event.type == events.PROGRESS:
            partial = event.data.get("report")
            label = str(event.data.get("label", ""))
            self.text.setPlainText(f"{format_report(partial)}\n\n{label}" if partial else label)
        elif event.type == events.DONE:
            self.report = event.data["report"]
            self.text.setPlainText(format_report(self.report))

    def _finished(self, code: int, saw_done: bool) -> None:
        self.bar.hide()
        if not saw_done:
            self.text.setPlainText(f"The diagnostics could not run (exit code {code}). "
                                   "Run 'lora-studio doctor' in a terminal to see why.")


class RuntimeOffer(QToolBar):
    """The bar that offers to set up the runtime; hides itself once the runtime is ready."""

    def __init__(self, window: QMainWindow) -> None:
        super().__init__("ML runtime", window)
        self.setObjectName(OFFER_NAME)
        self.setMovable(False)
        self.setFloatable(False)
        body = QWidget()
        row = QHBoxLayout(body)
        row.setContentsMargins(8, 4, 8, 4)
        text = QLabel("Training needs the ML runtime (PyTorch and friends), which is not set up yet.")
        text.setWordWrap(True)
        self.button = QPushButton("Set up now…")
        self.button.setProperty("primary", True)
        self.button.clicked.connect(lambda: open_setup(window))
        row.addWidget(text, 1)
        row.addWidget(self.button)
        self.addWidget(body)


def open_setup(window: QMainWindow, argv: list[str] | None = None) -> RuntimeSetupDialog:
    """Show the setup dialog and start the setup; the offer bar goes away when it succeeds."""
    dialog = RuntimeSetupDialog(window, argv)
    dialog.sig_done.connect(lambda ok: ok and _hide_offer(window))
    dialog.setModal(True)
    dialog.show()
    dialog.start()
    return dialog


def open_diagnostics(window: QMainWindow, argv: list[str] | None = None) -> DiagnosticsDialog:
    dialog = DiagnosticsDialog(window, argv)
    dialog.show()
    dialog.start()
    return dialog


def attach(window: QMainWindow) -> None:
    """Add the Help menu entries and, when needed, the offer bar (idempotent)."""
    if window.findChild(QAction, "actionDiagnostics") is None:
        help_menu = _help_menu(window)
        for name, text, slot in (("actionDiagnostics", "&Diagnostics…", lambda: open_diagnostics(window)),
                                 ("actionRuntimeSetup", "Set up the ML &runtime…", lambda: open_setup(window))):
            if any(a.text().replace("&", "") == text.replace("&", "") for a in help_menu.actions()):
                continue  # the window already has one
            action = QAction(text, window)
            action.setObjectName(name)
            action.triggered.connect(slot)
            help_menu.addAction(action)
    if state.needs_setup() and window.findChild(QToolBar, OFFER_NAME) is None:
        bar = RuntimeOffer(window)
        window.addToolBar(Qt.ToolBarArea.TopToolBarArea, bar)
        bar.show()  # a bar added to a window that is already shown stays hidden until asked


def offer_visible(window: QMainWindow) -> bool:
    """Whether the window currently offers to set up the runtime (the smoke test reads this)."""
    bar = window.findChild(QToolBar, OFFER_NAME)
    return bar is not None and bar.isVisible()


def _hide_offer(window: QMainWindow) -> None:
    bar = window.findChild(QToolBar, OFFER_NAME)
    if bar is not None:
        bar.hide()


def _help_menu(window: QMainWindow):
    for action in window.menuBar().actions():
        if action.menu() is not None and action.text().replace("&", "") == "Help":
            return action.menu()
    return window.menuBar().addMenu("&Help")
