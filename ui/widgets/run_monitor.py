"""Everything the Train page shows of the run it follows, drawn from the worker's events: the progress and
time left, the error banner, the evaluation, the charts, a grpo run's sampled completions and the log. The page
owns the run's lifecycle (start, stop, resume); the monitor only renders, so a test feeds it events and reads it."""
from __future__ import annotations

import time

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QLabel, QSplitter, QVBoxLayout, QWidget

from studio import trainview
from studio.units import number
from ui.widgets.common import CONTENT_SPACING, Banner
from ui.widgets.run_charts import RunCharts
from ui.widgets.run_controls import EvalCard, RunLog, RunProgress
from ui.widgets.run_samples import SamplesPanel

LOG_MIN_HEIGHT = 48  # three lines: with a grpo run's charts and samples, the page still fits a 900-pixel screen


class RunMonitor(QWidget):
    """Progress, banner, evaluation, charts, samples and log of one run; ``status_label`` gets the metric line."""

    def __init__(self, status_label: QLabel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(CONTENT_SPACING)
        self.status_label = status_label
        self.progress = RunProgress()
        self.banner = Banner()
        self.eval_card = EvalCard()
        self.split = split = QSplitter(Qt.Orientation.Vertical)
        self.run_charts = RunCharts()
        self.samples = SamplesPanel()
        self.log = RunLog()
        self.log.setMinimumHeight(LOG_MIN_HEIGHT)
        for i, (w, stretch) in enumerate(((self.run_charts, 4), (self.samples, 2), (self.log, 1))):
            split.addWidget(w)
            split.setStretchFactor(i, stretch)
        for w in (self.progress, self.banner, self.eval_card):
            lay.addWidget(w)
        lay.addWidget(split, 1)
        self.clock = trainview.RunClock()
        self.expected_tps: float | None = None
        self.train_total = 0
        self.paused = False
        self.eta_timer = QTimer(self)
        self.eta_timer.setInterval(1000)
        self.eta_timer.timeout.connect(self.update_eta)

    def watch(self, c) -> None:
        """Draw what the controller ``c`` reports (a TrainController, or one that follows a run)."""
        c.sig_event.connect(lambda e: self.clock.event(e.type, e.data, e.ts))
        c.sig_hello.connect(lambda d: self.append_log(f"worker started on {d.get('device') or d.get('gpu') or '?'}"))
        c.sig_log.connect(self.append_log)
        c.sig_progress.connect(self.on_progress)
        c.sig_metric.connect(self.on_metric)
        c.sig_memory.connect(self.on_memory)
        c.sig_checkpoint.connect(lambda d: self.append_log(f"checkpoint saved: {d.get('path', d.get('step', ''))}"))
        c.sig_warning.connect(lambda m: self.append_log(f"warning: {m}"))
        c.sig_error.connect(self.on_error)
        c.sig_malformed.connect(lambda n, line: self.append_log(f"(ignored {n} unreadable line(s) from the worker: {line[:80]})"))

    def reset(self) -> None:
        """Empty every read-out for the next run and start its clock."""
        self.banner.hide()
        self.eval_card.hide()
        self.log.clear()
        self.clock = trainview.RunClock(started=time.monotonic())
        self.train_total, self.paused = 0, False
        self.progress.reset()
        self.run_charts.clear()
        self.samples.clear()

    def append_log(self, line: str) -> None:
        self.log.appendPlainText(line)

    def on_progress(self, phase: str, done: int, total: int) -> None:
        if phase in trainview.TRAIN_PHASES:
            self.train_total = max(total, 1)
            self.progress.show_steps(done, total)
            self.clock.step(done)
        else:
            self.progress.show_phase(phase, done, total, self.clock.phase_eta)

    def on_metric(self, d: dict) -> None:
        if d.get("eval_text"):  # the end of a finished run: eval.json's summary
            self.show_eval(str(d["eval_text"]))
        step = number(d.get("step"))
        if step is None or not self.run_charts.charts:
            return
        self.run_charts.add_metric(d, step)
        samples = trainview.metric_samples(d)
        if samples:
            appears = self.samples.isHidden()
            self.samples.show_samples(int(step), samples)
            if appears:
                self._make_room()
        self.status_label.setText(trainview.metric_status(d, self.expected_tps, self.status_label.text()))

    def _make_room(self) -> None:
        """The samples panel appears mid-run: it gets a fifth of the height, the log a tenth at most, the charts
        the rest (the splitter keeps each above its minimum)."""
        sizes = self.split.sizes()
        total = sum(sizes)
        samples = max(self.samples.minimumSizeHint().height(), total // 5)
        log = max(min(sizes[2], total // 10), self.log.minimumHeight())
        self.split.setSizes([total - samples - log, samples, log])

    def show_eval(self, text: str) -> None:
        """The evaluation at the end of a run: the held-out score before → after, losses, one answer each."""
        self.eval_card.show_text(text)
        first = text.splitlines()[0] if text else ""
        if first:
            self.append_log(first)

    def on_memory(self, d: dict) -> None:
        if self.run_charts.charts and self.clock.started is not None:
            self.run_charts.add_memory(d, self.clock.seconds())

    def on_error(self, kind: str, message: str, hint: str) -> None:
        self.banner.show_message(f"{trainview.error_title(kind)}: {message}", hint)
        self.append_log(f"error ({kind}): {message}" + (f" — {hint}" if hint else ""))

    def update_eta(self) -> None:
        text = None if self.paused else self.clock.eta_text(self.progress.bar.maximum())
        if text is not None:
            self.progress.eta_label.setText(text)
