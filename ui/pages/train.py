"""Train: start the worker, follow it live (loss, learning rate, throughput, GPU memory), stop it.

The page only renders what the TrainController reports; the controller owns the process.
Charts come from ``ui.charts`` (pyqtgraph), built after the window is first shown so that
opening the studio stays fast.
"""
from __future__ import annotations

import time
from pathlib import Path

from PySide6.QtCore import Qt, QTimer, QUrl, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (QGridLayout, QHBoxLayout, QMessageBox, QPlainTextEdit, QProgressBar, QPushButton,
                               QSplitter, QWidget)

from studio import runs
from ui.controllers import TrainController
from ui.session import GIB, Session
from ui.widgets.common import Banner, Card, Page, label, primary_button

LOG_MAX_LINES = 2000
ERROR_TITLES = {"oom": "Out of GPU memory", "nan": "The loss became NaN", "data": "A problem with the dataset",
                "io": "A file could not be read or written", "config": "A setting cannot be used",
                "internal": "The training worker failed"}


def _expected_tokens_per_s(run_dir: Path) -> float | None:
    """The plan's expected training speed (plan.json ``estimate``), if it made one."""
    import json

    try:
        est = json.loads((Path(run_dir) / runs.PLAN).read_text(encoding="utf-8")).get("estimate") or {}
    except (OSError, ValueError, AttributeError):
        return None
    return _num(est.get("tokens_per_s"))


def _num(value) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if v == v and abs(v) != float("inf") else None


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
        self.charts: dict = {}
        self._refresher = None
        self._t0: float | None = None
        self._progress_t: list[tuple[float, int]] = []
        self._last_step = 0
        self._paused = False
        self._ts0 = self._ts = 0.0
        self._status = "idle"
        self._build()
        self._wire()

    # -- layout -------------------------------------------------------------------------------
    def _build(self) -> None:
        bar = QHBoxLayout()
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
        bar.addWidget(self.start_btn)
        bar.addWidget(self.pause_btn)
        bar.addWidget(self.stop_btn)
        bar.addWidget(self.resume_btn)
        bar.addSpacing(16)
        self.status_label = label("No run yet.", "muted")
        bar.addWidget(self.status_label, 1)
        self.worker_log_btn = QPushButton("Worker log")
        self.worker_log_btn.setToolTip("Open the run's worker.log: everything torch, transformers and peft printed")
        self.worker_log_btn.setEnabled(False)
        self.worker_log_btn.clicked.connect(self.open_worker_log)
        bar.addWidget(self.worker_log_btn)
        self.content.addLayout(bar)

        prog = QHBoxLayout()
        self.progress = QProgressBar()
        self.progress.setFormat("not started")
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.eta_label = label("", "muted")
        self.eta_label.setMinimumWidth(180)
        self.eta_label.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        prog.addWidget(self.progress, 1)
        prog.addWidget(self.eta_label)
        self.content.addLayout(prog)

        self.banner = Banner()
        self.content.addWidget(self.banner)
        self.eval_card = Card("Evaluation")
        self.eval_text = label("", wrap=True)
        self.eval_text.setObjectName("evalText")
        self.eval_card.body.addWidget(self.eval_text)
        self.eval_card.hide()
        self.content.addWidget(self.eval_card)

        split = QSplitter(Qt.Orientation.Vertical)
        self.chart_host = QWidget()
        self.chart_grid = QGridLayout(self.chart_host)
        self.chart_grid.setContentsMargins(0, 0, 0, 0)
        self.chart_grid.setSpacing(8)
        self.chart_placeholder = label("Charts appear here when a run starts.", "muted")
        self.chart_grid.addWidget(self.chart_placeholder, 0, 0)
        split.addWidget(self.chart_host)
        self.log = QPlainTextEdit()
        self.log.setObjectName("log")
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(LOG_MAX_LINES)
        self.log.setPlaceholderText("The run's messages appear here. What the libraries print goes to the "
                                    "run's worker.log (Worker log button).")
        split.addWidget(self.log)
        split.setStretchFactor(0, 4)
        split.setStretchFactor(1, 1)
        self.content.addWidget(split, 1)

    def ensure_charts(self) -> None:
        """Build the pyqtgraph charts (imports pyqtgraph; done once, after the window is up)."""
        if self.charts:
            return
        from ui.charts import ChartRefresher, LiveChart

        self.chart_placeholder.hide()
        loss = LiveChart("Loss", "loss")
        loss.add_series("train", "#0072B2")
        loss.add_series("validation", "#D55E00", width=2.5)
        lr = LiveChart("Learning rate", "lr")
        lr.add_series("lr", "#009E73")
        tput = LiveChart("Throughput", "tokens/s")
        tput.add_series("tokens/s", "#CC79A7")
        mem = LiveChart("GPU memory", "GiB", x_label="seconds")
        mem.add_series("allocated", "#0072B2")
        mem.add_series("reserved", "#E69F00")
        mem.add_series("device used", "#009E73")
        self.charts = {"loss": loss, "lr": lr, "throughput": tput, "memory": mem}
        for i, chart in enumerate(self.charts.values()):
            self.chart_grid.addWidget(chart, i // 2, i % 2)
        self._refresher = ChartRefresher(list(self.charts.values()), self)

    # -- wiring -------------------------------------------------------------------------------
    def _wire(self) -> None:
        c = self.controller
        self.start_btn.clicked.connect(self.start)
        self.stop_btn.clicked.connect(self.stop)
        self.pause_btn.clicked.connect(self.toggle_pause)
        self.resume_btn.clicked.connect(lambda: self.run_dir and self.resume_run(self.run_dir))
        c.sig_event.connect(self._on_event_time)
        c.sig_hello.connect(self._on_hello)
        c.sig_log.connect(self.append_log)
        c.sig_progress.connect(self._on_progress)
        c.sig_metric.connect(self._on_metric)
        c.sig_memory.connect(self._on_memory)
        c.sig_checkpoint.connect(lambda d: self.append_log(f"checkpoint saved: {d.get('path', d.get('step', ''))}"))
        c.sig_warning.connect(lambda m: self.append_log(f"warning: {m}"))
        c.sig_error.connect(self._on_error)
        c.sig_done.connect(self._on_done)
        c.sig_malformed.connect(lambda n, line: self.append_log(f"(ignored {n} unreadable line(s) from the worker: {line[:80]})"))
        c.sig_finished.connect(self._on_finished)
        self._eta_timer = QTimer(self)
        self._eta_timer.setInterval(1000)
        self._eta_timer.timeout.connect(self._update_eta)

    @property
    def training(self) -> bool:
        return self.controller.running

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
            self.banner.show_message("Cannot start yet: " + "; ".join(p.message if p.field in p.message else f"{p.field}: {p.message}"
                                                                 for p in problems),
                                     " ".join(f"{p.hint[0].upper()}{p.hint[1:]}." for p in problems if p.hint))
            return
        if self.session.plan is not None and getattr(self.session.plan, "fits", True) is False:
            answer = QMessageBox.question(
                self, "The plan does not fit", "The planner predicts this run needs more memory than the budget. "
                "Start anyway?", QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
                QMessageBox.StandardButton.No)
            if answer != QMessageBox.StandardButton.Yes:
                return
        run_dir = runs.create(recipe, plan=self.session.plan_dict())
        self.start_run_dir(run_dir)

    def start_run_dir(self, run_dir: Path, argv: list[str] | None = None) -> None:
        """Launch the worker on an existing run folder (a fresh run, or a resume)."""
        self.ensure_charts()
        self._reset_view()
        self.run_dir = Path(run_dir)
        self.append_log(f"run folder: {self.run_dir}")
        try:
            self.controller.start_run(self.run_dir, argv=argv)
        except OSError as e:
            self._on_error("internal", f"Could not start the training worker: {e}", "Check the Python runtime in Help ▸ About.")
            return
        self._t0 = time.monotonic()
        self._expected_tps = _expected_tokens_per_s(self.run_dir)
        if self.charts and self._expected_tps:
            self.charts["throughput"].set_hline("planned", self._expected_tps)
        self._set_status("running", f"Running {self.run_dir.name}")
        self._set_buttons(True)
        self._eta_timer.start()
        self.sig_run_started.emit(self.run_dir)

    def resume_run(self, run_dir: Path) -> None:
        """Continue a stopped or interrupted run from its last good checkpoint (``--resume``)."""
        from studio.launch import train_argv

        if not self.controller.running:  # the same number of processes as the run started with
            self.start_run_dir(Path(run_dir), argv=train_argv(Path(run_dir), "--resume"))

    @staticmethod
    def can_resume(run_dir: Path | None) -> bool:
        ckpt = Path(run_dir) / runs.CHECKPOINTS if run_dir else None
        return bool(ckpt and ckpt.is_dir() and any(ckpt.glob("step-*")))

    def attach(self, run_dir: Path) -> bool:
        """Follow a run that an earlier window left running (its worker is alive); False if it is not."""
        from studio.attach import worker_pid  # checks the pid really is this run's worker

        pid = worker_pid(run_dir)
        if self.controller.running or pid is None:
            return False
        self.ensure_charts()
        self._reset_view()
        self.run_dir = Path(run_dir)
        self.append_log(f"following {self.run_dir} (worker pid {pid}, started by an earlier window)")
        self.controller.follow(self.run_dir, int(pid))
        self._t0 = time.monotonic()
        self._set_status("running", f"Following {self.run_dir.name}")
        self._set_buttons(True)  # pause and stop reach it through the run's inbox (commands.jsonl)
        self._eta_timer.start()
        return True

    def show_run(self, run_dir: Path) -> bool:
        """Draw a past run's charts and log from its events.jsonl (when nothing is training)."""
        if self.controller.running:
            return False
        from studio.events import read_events

        self.ensure_charts()
        self._reset_view()
        self.run_dir = Path(run_dir)
        self._t0 = time.monotonic()
        for event in read_events(self.run_dir / runs.EVENTS):
            self.controller._dispatch(event)
        status = runs.read_state(self.run_dir).get("status", "created")
        self._set_status(status, f"{status.capitalize()}: {self.run_dir.name} (from its run folder)")
        self.eta_label.setText("")
        self._set_buttons(False)
        for chart in self.charts.values():
            chart.refresh()
        return True

    def stop(self) -> None:
        if self.controller.running:
            self._set_status("stopping", "Stopping: the worker is saving a checkpoint and the adapter…")
            self.stop_btn.setEnabled(False)
            self.controller.stop()

    def toggle_pause(self) -> None:
        if not self.controller.running:
            return
        if self._paused:
            if self.controller.resume():
                self._paused = False
                self.pause_btn.setText("Pause")
                self._set_status("running", f"Running {self.run_dir.name}")
        elif self.controller.pause():
            self._paused = True
            self.pause_btn.setText("Resume")
            self._set_status("paused", "Paused (the worker waits after the current step).")

    # -- events -------------------------------------------------------------------------------
    def _on_hello(self, d: dict) -> None:
        device = d.get("device") or d.get("gpu") or "?"
        self.append_log(f"worker started on {device}")

    def _on_progress(self, phase: str, done: int, total: int) -> None:
        if phase in ("train", "training", "step", "steps"):
            self.progress.setFormat("%v / %m steps")
            self._train_total = max(total, 1)
            self.progress.setRange(0, max(total, 1))
            self.progress.setValue(min(done, max(total, 1)))
            # The event's own time: a run followed after a reattach replays its progress all at once.
            self._progress_t.append((self._ts or time.time(), done))
            self._progress_t = self._progress_t[-50:]
        else:
            self.progress.setFormat(f"{phase}: %p%" if total else phase)
            self.progress.setRange(0, max(total, 0))
            self.progress.setValue(done)
            eta = getattr(self, "_phase_eta", None)
            self.eta_label.setText((f"{phase}: {done}/{total}" if total else phase)
                                   + (f" · left ≈ {_fmt(eta)}" if eta is not None and done < total else ""))

    def _on_metric(self, d: dict) -> None:
        if d.get("eval_text"):  # the end of a finished run: eval.json's summary
            self.show_eval(str(d["eval_text"]))
        step = _num(d.get("step"))
        if step is None or not self.charts:
            return
        self._last_step = int(step)
        c = self.charts
        for key, chart, series in (("loss", c["loss"], "train"), ("eval_loss", c["loss"], "validation"),
                                   ("learning_rate", c["lr"], "lr"), ("tokens_per_s", c["throughput"], "tokens/s")):
            v = _num(d.get(key))
            if v is not None:
                chart.append(series, step, v)
        self._on_preference_metric(d, step)
        loss = _num(d.get("loss"))
        if loss is not None:
            self.status_label.setText(f"step {int(step)} · loss {loss:.4f}")
            margin = _num(d.get("rewards/margins"))
            if margin is not None:
                self.status_label.setText(f"{self.status_label.text()} · margin {margin:.3f}")
        tps, expected = _num(d.get("tokens_per_s")), getattr(self, "_expected_tps", None)
        if tps is not None and expected:  # the plan's estimate against the measured rate
            self.status_label.setText(f"{self.status_label.text()} · {tps:,.0f} tokens/s "
                                      f"(planned ≈ {expected:,.0f}, {tps / expected:.0%})")

    def _on_preference_metric(self, d: dict, step: float) -> None:
        """DPO/ORPO runs: a chart of the reward margin (chosen minus rejected) and the pairs ranked right."""
        series = (("rewards/margins", "margin"), ("rewards/accuracies", "accuracy"),
                  ("eval_rewards/margins", "validation margin"))
        if not any(_num(d.get(key)) is not None for key, _ in series):
            return
        chart = self.charts.get("preference")
        if chart is None:
            from ui.charts import LiveChart

            chart = LiveChart("Preference: chosen − rejected", "reward")
            chart.add_series("margin", "#0072B2")
            chart.add_series("accuracy", "#009E73", dashed=True)
            chart.add_series("validation margin", "#D55E00", width=2.5)
            self.charts["preference"] = chart
            n = len(self.charts) - 1
            self.chart_grid.addWidget(chart, n // 2, n % 2)
            if self._refresher is not None:
                self._refresher.charts.append(chart)
        for key, name in series:
            v = _num(d.get(key))
            if v is not None:
                chart.append(name, step, v)

    def show_eval(self, text: str) -> None:
        """The evaluation at the end of a run: the held-out score before → after, losses, one answer each."""
        self.eval_text.setText(text)
        self.eval_card.show()
        first = text.splitlines()[0] if text else ""
        if first:
            self.append_log(first)

    def _on_event_time(self, event) -> None:
        d = event.data
        if event.type == "progress" and d.get("phase") not in ("train", None):
            phase = str(d.get("phase"))
            if phase == "sample-before" and d.get("done") == 0:
                self._before_t0 = time.monotonic()
            elif phase == "sample-before" and d.get("done") == d.get("total") and getattr(self, "_before_t0", None):
                self._after_train_s = time.monotonic() - self._before_t0  # answering again after training
            self._phase_eta = _num(d.get("eta_s"))  # shown by _on_progress, which runs next
        if event.ts:
            if event.type == "hello" or not self._ts0:  # elapsed counts from this worker's start
                self._ts0 = event.ts
            self._ts = event.ts

    def _on_memory(self, d: dict) -> None:
        if not self.charts or self._t0 is None:
            return
        t = (self._ts - self._ts0) if self._ts0 else time.monotonic() - self._t0  # replayed runs keep their times
        mem = self.charts["memory"]
        for key, series in (("allocated", "allocated"), ("reserved", "reserved"), ("device_used", "device used")):
            v = _num(d.get(key))
            if v is not None:
                mem.append(series, t, v / GIB)
        on_cpu = d.get("device") == "cpu"
        if on_cpu != getattr(self, "_mem_on_cpu", False):
            self._mem_on_cpu = on_cpu
            mem.getPlotItem().setTitle("Memory (no GPU: the worker process)" if on_cpu else "GPU memory",
                                       color=mem.getPlotItem().titleLabel.opts.get("color"), size="10pt")
        ranks = d.get("gpus") if isinstance(d.get("gpus"), list) else []
        for r in ranks if len(ranks) > 1 else []:  # several processes: one line per GPU (per process on the CPU)
            v = _num(r.get("reserved")) if isinstance(r, dict) else None
            if v is not None:
                mem.append(f"{'process' if on_cpu else 'GPU'} {r.get('rank')} reserved", t, v / GIB)
        budget, peak = _num(d.get("budget")), _num(d.get("predicted_peak"))
        mem.set_hline("budget", budget / GIB if budget else None, "#CF222E", below=True)
        mem.set_hline("predicted peak", peak / GIB if peak else None, "#8250DF")

    def _on_error(self, kind: str, message: str, hint: str) -> None:
        title = ERROR_TITLES.get(kind, "The run failed")
        self.banner.show_message(f"{title}: {message}", hint)
        self.append_log(f"error ({kind}): {message}" + (f" — {hint}" if hint else ""))

    def _on_done(self, d: dict) -> None:
        status = str(d.get("status", "finished"))
        self._done_status = status
        self.append_log(f"done: {status}" + (f", adapter in {d['adapter']}" if d.get("adapter") else ""))

    def _on_finished(self, code: int, saw_done: bool) -> None:
        self._eta_timer.stop()
        if self.controller.saw_error:
            status = "failed"
            self._set_status(status, "Failed. The error and what to do are shown above.")
        elif saw_done and code == 0:
            status = getattr(self, "_done_status", None) or runs.read_state(self.run_dir).get("status", "finished")
            self._set_status(status, f"{status.capitalize()}: {self.run_dir.name if self.run_dir else ''}")
            if status == "finished":
                total = getattr(self, "_train_total", 0)
                if total:  # after the evaluation phases: end on the steps bar
                    self.progress.setFormat("%v / %m steps")
                    self.progress.setRange(0, total)
                self.progress.setValue(self.progress.maximum())
        else:
            status = "stopped"
            self._set_status(status, f"Stopped (exit code {code}).")
        self._set_buttons(False)  # the chart refresher draws the last points on its next ticks
        self.sig_run_ended.emit(self.run_dir, status)

    # -- helpers ------------------------------------------------------------------------------
    def open_worker_log(self) -> None:
        if self.run_dir is not None and (self.run_dir / "worker.log").is_file():
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.run_dir / "worker.log")))

    def append_log(self, line: str) -> None:
        self.log.appendPlainText(line)

    def _reset_view(self) -> None:
        self.banner.hide()
        self.eval_card.hide()
        self._after_train_s = 0.0
        self._train_total = 0
        self.log.clear()
        self._done_status = None
        self._ts0 = self._ts = 0.0
        self._progress_t = []
        self._last_step = 0
        self._paused = False
        self.pause_btn.setText("Pause")
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("starting…")
        self.eta_label.setText("")
        pref = self.charts.pop("preference", None)  # shown again when a DPO/ORPO run reports margins
        if pref is not None:
            self.chart_grid.removeWidget(pref)
            pref.deleteLater()
            if self._refresher is not None:
                self._refresher.charts.remove(pref)
        for chart in self.charts.values():
            chart.clear_data()
            for name in list(chart.lines):
                chart.set_hline(name, None)

    def _set_buttons(self, running: bool) -> None:
        self.worker_log_btn.setEnabled(self.run_dir is not None)
        self.resume_btn.setVisible(not running and self._status in ("stopped", "failed", "interrupted")
                                   and self.can_resume(self.run_dir))
        self.start_btn.setEnabled(not running)
        self.pause_btn.setEnabled(running)
        self.stop_btn.setEnabled(running)

    def _set_status(self, status: str, text: str) -> None:
        self._status = status
        self.status_label.setText(text)
        self.session.sig_status.emit(text)

    def _update_eta(self) -> None:
        if len(self._progress_t) < 2 or self._paused:
            return
        (t0, s0), (t1, s1) = self._progress_t[0], self._progress_t[-1]
        if s1 <= s0 or t1 <= t0:
            return
        remaining = ((self.progress.maximum() - s1) / ((s1 - s0) / (t1 - t0)) - (time.time() - t1)
                     + self._after_train_s)
        elapsed = time.time() - self._ts0 if self._ts0 else time.monotonic() - (self._t0 or time.monotonic())
        self.eta_label.setText(f"elapsed {_fmt(elapsed)} · left ≈ {_fmt(remaining)}")

    @property
    def status(self) -> str:
        return self._status


def _fmt(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
