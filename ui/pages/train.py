"""Train: start the worker, follow it live (loss, learning rate, throughput, GPU memory), stop it.

The TrainController owns the process; the page owns the run's lifecycle (start, resume, attach, stop) and
composes ``ui.widgets.run_controls`` (the buttons) and ``ui.widgets.run_monitor`` (progress, charts, log:
what the controller reports). ``studio.trainview`` makes the texts and keeps the run's clock.
"""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QUrl, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import QMessageBox, QWidget

from studio import runs, trainview
from studio.attach import worker_pid
from studio.events import read_events
from studio.launch import train_argv
from ui import reward_file
from ui.controllers import TrainController
from ui.session import Session
from ui.widgets.common import Page
from ui.widgets.run_controls import RunControls
from ui.widgets.run_monitor import RunMonitor


class TrainPage(Page):
    title = "Train"
    subtitle = "Start a run and follow it live. Training runs in its own process, so the window never freezes."
    icon_name = "train"

    sig_run_started = Signal(object)   # run dir
    sig_run_ended = Signal(object, str)

    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.controller = TrainController(self)
        self.run_dir: Path | None = None
        self._done_status: str | None = None
        self._status = "idle"
        self.controls = RunControls()
        self.monitor = RunMonitor(self.controls.status_label)
        self.content.addWidget(self.controls)
        self.content.addWidget(self.monitor, 1)
        self.progress, self.log, self.banner = self.monitor.progress, self.monitor.log, self.monitor.banner
        self._wire()

    @property
    def charts(self) -> dict:
        return self.monitor.run_charts.charts

    def ensure_charts(self) -> None:
        self.monitor.run_charts.ensure()

    def _wire(self) -> None:
        c, b = self.controller, self.controls
        b.start_btn.clicked.connect(self.start)
        b.stop_btn.clicked.connect(self.stop)
        b.pause_btn.clicked.connect(self.toggle_pause)
        b.resume_btn.clicked.connect(lambda: self.run_dir and self.resume_run(self.run_dir))
        b.worker_log_btn.clicked.connect(self.open_worker_log)
        self.monitor.watch(c)
        c.sig_done.connect(self._on_done)
        c.sig_finished.connect(self._on_finished)

    @property
    def training(self) -> bool:
        return self.controller.running

    @property
    def status(self) -> str:
        return self._status

    def start(self) -> None:
        """Create the run folder from the session's recipe and plan, then launch the worker."""
        if self.controller.running:
            return
        if self.session.preparing_model:
            self.banner.show_message("The demo model is still being prepared.",
                                     "Training can start as soon as the Model page says it is ready.")
            return
        recipe = self.session.resolved_recipe()
        problems = recipe.validate()
        if problems:
            self.banner.show_message(*trainview.problems_message(problems))
            return
        if not self._reward_file_agreed(recipe.train):
            return
        recipe = self.session.resolved_recipe()  # with the agreed reward file's sha256
        if self.session.plan is not None and getattr(self.session.plan, "fits", True) is False:
            answer = QMessageBox.question(
                self, "The plan does not fit", "The planner predicts this run needs more memory than the budget. "
                "Start anyway?", QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                QMessageBox.StandardButton.No)
            if answer != QMessageBox.StandardButton.Yes:
                return
        self.start_run_dir(runs.create(recipe, plan=self.session.plan_dict()))

    def _reward_file_agreed(self, train) -> bool:
        """grpo's own reward file runs only as the user agreed to it (``ui.reward_file``): a file changed since
        is asked about again; a No, or a file that cannot be read, starts nothing."""
        if not reward_file.runs_file(train):
            return True
        d = reward_file.decide(train.grpo_reward_file, train.grpo_reward_sha256,
                               lambda p, size, digest: reward_file.ask(self, p, size, digest))
        if d.message:
            self.banner.show_message(f"{d.message} Nothing was started.",
                                     "Set train.grpo_reward_file on the Plan page (advanced settings, GRPO)."
                                     if d.error else "Read the file, then start again and answer Yes.")
            return False
        for key, value in d.pins.items():
            self.session.pin(key, value)
        return True

    def start_run_dir(self, run_dir: Path, argv: list[str] | None = None) -> None:
        """Launch the worker on an existing run folder (a fresh run, or a resume)."""
        self._open(run_dir, f"run folder: {Path(run_dir)}")
        try:
            self.controller.start_run(self.run_dir, argv=argv)
        except OSError as e:
            self.monitor.on_error("internal", f"Could not start the training worker: {e}", "Check the Python runtime in Help ▸ About.")
            return
        self.monitor.expected_tps = trainview.expected_tokens_per_s(self.run_dir)
        self.monitor.run_charts.set_planned(self.monitor.expected_tps)
        self._following(f"Running {self.run_dir.name}")
        self.sig_run_started.emit(self.run_dir)

    def resume_run(self, run_dir: Path) -> None:
        """Continue a stopped or interrupted run from its last good checkpoint (``--resume``)."""

        if not self.controller.running:  # the same number of processes as the run started with
            self.start_run_dir(Path(run_dir), argv=train_argv(Path(run_dir), "--resume"))

    can_resume = staticmethod(trainview.can_resume)

    def attach(self, run_dir: Path) -> bool:
        """Follow a run that an earlier window left running (its worker is alive); False if it is not."""
        pid = worker_pid(run_dir)  # checks the pid really is this run's worker
        if self.controller.running or pid is None:
            return False
        self._open(run_dir, f"following {Path(run_dir)} (worker pid {pid}, started by an earlier window)")
        self.controller.follow(self.run_dir, int(pid))
        self._following(f"Following {self.run_dir.name}")  # pause and stop reach it through commands.jsonl
        return True

    def show_run(self, run_dir: Path) -> bool:
        """Draw a past run's charts and log from its events.jsonl (when nothing is training)."""
        if self.controller.running:
            return False

        self._open(run_dir)
        for event in read_events(self.run_dir / runs.EVENTS):
            self.controller._dispatch(event)
        status = runs.read_state(self.run_dir).get("status", "created")
        self._set_status(status, f"{status.capitalize()}: {self.run_dir.name} (from its run folder)")
        self.progress.eta_label.setText("")
        self._set_buttons(False)
        self.monitor.run_charts.refresh()
        return True

    def _open(self, run_dir: Path, line: str = "") -> None:
        """Empty the view for the run in ``run_dir`` and start its clock."""
        self.ensure_charts()
        self._reset_view()
        self.run_dir = Path(run_dir)
        if line:
            self.append_log(line)

    def _reset_view(self) -> None:
        self.monitor.reset()
        self._done_status = None
        self.controls.show_paused(False)

    def _following(self, text: str) -> None:
        self._set_status("running", text)
        self._set_buttons(True)
        self.monitor.eta_timer.start()

    def stop(self) -> None:
        if self.controller.running:
            self._set_status("stopping", "Stopping: the worker is saving a checkpoint and the adapter…")
            self.controls.stop_btn.setEnabled(False)
            self.controller.stop()

    def toggle_pause(self) -> None:
        if not self.controller.running:
            return
        m = self.monitor
        if m.paused:
            if self.controller.resume():
                m.paused = False
                self._set_status("running", f"Running {self.run_dir.name}")
        elif self.controller.pause():
            m.paused = True
            self._set_status("paused", "Paused (the worker waits after the current step).")
        self.controls.show_paused(m.paused)

    # -- events -------------------------------------------------------------------------------
    def _on_done(self, d: dict) -> None:
        self._done_status = str(d.get("status", "finished"))
        self.append_log(f"done: {self._done_status}" + (f", adapter in {d['adapter']}" if d.get("adapter") else ""))

    def _on_finished(self, code: int, saw_done: bool) -> None:
        self.monitor.eta_timer.stop()
        status, text = trainview.ending(self.controller.saw_error, saw_done, code, self._done_status, self.run_dir)
        self._set_status(status, text)
        if status == "finished":
            self.progress.finish(self.monitor.train_total)
        self._set_buttons(False)  # the chart refresher draws the last points on its next ticks
        self.sig_run_ended.emit(self.run_dir, status)

    # -- helpers ------------------------------------------------------------------------------
    def open_worker_log(self) -> None:
        if self.run_dir is not None and (self.run_dir / "worker.log").is_file():
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.run_dir / "worker.log")))

    def append_log(self, line: str) -> None:
        self.monitor.append_log(line)

    def _set_buttons(self, running: bool) -> None:
        self.controls.show_state(running, self.run_dir is not None, self._status, self.can_resume(self.run_dir))

    def _set_status(self, status: str, text: str) -> None:
        self._status = status
        self.controls.status_label.setText(text)
        self.session.sig_status.emit(text)
