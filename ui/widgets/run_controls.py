"""The Train page's controls and read-outs: the start/pause/stop/resume buttons with the status line, the
progress bar with the time left, the run's log and its evaluation card. They show a run's state; the page decides what the buttons do."""
from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QPlainTextEdit, QProgressBar, QPushButton, QWidget

from studio.trainview import phase_text
from ui.widgets.common import Card, content_row, label, primary_button

LOG_MAX_LINES = 2000
RESUMABLE = ("stopped", "failed", "interrupted")  # statuses after which a run may continue from a checkpoint


class RunControls(QWidget):
    """Start, pause, stop, resume, the status line and the worker log button, in one row."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        bar = content_row(self)
        self.start_btn = primary_button("Start training")
        self.start_btn.setToolTip("Create a run with the current plan and start it (Ctrl+R)")
        self.pause_btn = QPushButton("Pause")
        self.pause_btn.setToolTip("Pause after the current step; Resume continues (Ctrl+P)")
        self.stop_btn = QPushButton("Stop")
        self.stop_btn.setToolTip("Stop the run: the worker saves a checkpoint and the adapter, then exits (Ctrl+.)")
        self.resume_btn = QPushButton("Resume run")
        self.resume_btn.setToolTip("Continue the stopped run from its last checkpoint")
        self.resume_btn.setVisible(False)
        for b in (self.pause_btn, self.stop_btn):
            b.setEnabled(False)
        for b in (self.start_btn, self.pause_btn, self.stop_btn, self.resume_btn):
            bar.addWidget(b)
        bar.addSpacing(16)
        self.status_label = label("No run yet.", "muted")
        bar.addWidget(self.status_label, 1)
        self.worker_log_btn = QPushButton("Worker log")
        self.worker_log_btn.setToolTip("Open the run's worker.log: everything torch, transformers and peft printed")
        self.worker_log_btn.setEnabled(False)
        bar.addWidget(self.worker_log_btn)

    def show_state(self, running: bool, has_run: bool, status: str, resumable: bool) -> None:
        """Which buttons apply: a running run pauses and stops; a stopped one with a checkpoint resumes."""
        self.worker_log_btn.setEnabled(has_run)
        self.resume_btn.setVisible(not running and status in RESUMABLE and resumable)
        self.start_btn.setEnabled(not running)
        self.pause_btn.setEnabled(running)
        self.stop_btn.setEnabled(running)

    def show_paused(self, paused: bool) -> None:
        self.pause_btn.setText("Resume" if paused else "Pause")


class RunProgress(QWidget):
    """The steps bar (or the current phase's bar) and, beside it, elapsed and time left."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        row = content_row(self)
        self.bar = QProgressBar()
        self.bar.setFormat("not started")
        self.bar.setRange(0, 1)
        self.bar.setValue(0)
        self.eta_label = label("", "muted")
        self.eta_label.setMinimumWidth(180)
        self.eta_label.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        row.addWidget(self.bar, 1)
        row.addWidget(self.eta_label)

    def show_steps(self, done: int, total: int) -> None:
        self.bar.setFormat("%v / %m steps")
        self.bar.setRange(0, max(total, 1))
        self.bar.setValue(min(done, max(total, 1)))

    def show_phase(self, phase: str, done: int, total: int, eta_s: float | None) -> None:
        """A phase other than training (samples, evaluation) with the worker's own estimate of its time left."""
        self.bar.setFormat(f"{phase}: %p%" if total else phase)
        self.bar.setRange(0, max(total, 0))
        self.bar.setValue(done)
        self.eta_label.setText(phase_text(phase, done, total, eta_s))

    def finish(self, total_steps: int) -> None:
        """A finished run ends on the steps bar, full, after its evaluation phases."""
        if total_steps:
            self.bar.setFormat("%v / %m steps")
            self.bar.setRange(0, total_steps)
        self.bar.setValue(self.bar.maximum())

    def reset(self) -> None:
        self.bar.setRange(0, 1)
        self.bar.setValue(0)
        self.bar.setFormat("starting…")
        self.eta_label.setText("")


class RunLog(QPlainTextEdit):
    """The run's messages (the studio's lines, not what the libraries print: that goes to worker.log)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("log")
        self.setReadOnly(True)
        self.setMaximumBlockCount(LOG_MAX_LINES)
        self.setPlaceholderText("The run's messages appear here. What the libraries print goes to the "
                                "run's worker.log (Worker log button).")


class EvalCard(Card):
    """The evaluation at the end of a run: the held-out score before → after, losses, one answer each."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Evaluation", parent)
        self.text = label("", wrap=True)
        self.text.setObjectName("evalText")
        self.body.addWidget(self.text)
        self.hide()

    def show_text(self, text: str) -> None:
        self.text.setText(text)
        self.show()
