"""Plan: a VRAM budget, the settings the planner fitted with its reasons, the predicted memory as a
stacked bar against the budget, and an advanced panel where a changed field stays fixed while
the planner re-fits the rest."""
from __future__ import annotations

import dataclasses
from typing import Any

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (QButtonGroup, QCheckBox, QComboBox, QDoubleSpinBox, QGridLayout, QHBoxLayout, QLabel,
                               QLineEdit, QRadioButton, QSlider, QSpinBox, QToolButton, QWidget)

from studio import hardware, methods, procs, speed
from studio import recipe as rc
from studio.planner import Plan
from studio.planning import budget_bytes
from ui.controllers import CommandController
from ui.session import GIB, Session
from ui.widgets.common import Card, Page, human_bytes, label, primary_button
from ui.widgets.memory_bar import MemoryBar

STEP = GIB // 4            # the slider moves in quarter GiB
PROBE_RETRY_MS = 2000      # the CPU speed probe waits for the demo model's conversion to finish
ADVANCED = ("lora", "quant", "train")
ADV_COLUMNS = 3  # fields per row in the advanced panel
PLAN_ROWS = [("Method", "lora.method"), ("Quantisation", "quant.mode"), ("LoRA rank / alpha", "lora.rank"), ("Sequence length", "train.seq_len"),
             ("Micro-batch × accumulation", "train.micro_batch"), ("Gradient checkpointing", "train.grad_ckpt"),
             ("Optimizer", "train.optimizer"), ("Learning rate", "train.lr")]


class FieldEditor(QWidget):
    """One recipe field: an editor that pins the value when the user changes it, and a reset button."""

    def __init__(self, section: str, f: dataclasses.Field, on_pin, on_unpin) -> None:
        super().__init__()
        self.key = f"{section}.{f.name}"
        self.kind = type(f.default) if f.default is not dataclasses.MISSING else type(f.default_factory())
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        self.editor = self._make(f)
        self.editor.setToolTip(f.metadata.get("doc", ""))
        self.reset = QToolButton()
        self.reset.setText("↺")
        self.reset.setToolTip("Let the planner choose this again")
        self.reset.setAutoRaise(True)
        self.reset.clicked.connect(lambda: on_unpin(self.key))
        self.reset.setVisible(False)
        lay.addWidget(self.editor, 1)
        lay.addWidget(self.reset)
        self._on_pin = on_pin
        self._connect()

    def _make(self, f: dataclasses.Field) -> QWidget:
        """The editor the field's metadata asks for: its choices, or a spin box within its bounds."""
        meta = f.metadata
        if meta.get("choices"):
            w = QComboBox()
            w.addItems(list(meta["choices"]))
            return w
        if self.kind is bool:
            return QCheckBox()
        if self.kind is int:
            w = QSpinBox()
            w.setRange(int(meta.get("min", 0)), int(min(meta.get("max", 1_000_000), 2**31 - 1)))
            if f.name == "max_steps":
                w.setSpecialValueText("use epochs")  # -1 means: run train.epochs passes
            return w
        if self.kind is float:
            small = f.name == "lr"
            w = QDoubleSpinBox()
            w.setDecimals(6 if small else 3)
            step = 10 ** -w.decimals()  # an exclusive bound becomes the nearest value the box can show
            w.setRange(meta.get("min", meta.get("gt", 0.0) + step), meta.get("max", meta.get("lt", 1000.0) - step))
            w.setSingleStep(1e-5 if small else 0.05)
            return w
        return QLineEdit()

    def _connect(self) -> None:
        w = self.editor
        if isinstance(w, QComboBox):
            w.currentTextChanged.connect(lambda v: self._changed(v))
        elif isinstance(w, QCheckBox):
            w.toggled.connect(lambda v: self._changed(bool(v)))
        elif isinstance(w, (QSpinBox, QDoubleSpinBox)):
            w.valueChanged.connect(lambda v: self._changed(v))
        else:
            w.editingFinished.connect(lambda: self._changed(self._text_value()))

    def _text_value(self) -> Any:
        text = self.editor.text()
        if self.kind is list:
            return [t.strip() for t in text.split(",") if t.strip()]
        return text

    def _changed(self, value: Any) -> None:
        self._on_pin(self.key, value)

    def set_value(self, value: Any, pinned: bool) -> None:
        w = self.editor
        w.blockSignals(True)
        if isinstance(w, QComboBox):
            w.setCurrentText(str(value))
        elif isinstance(w, QCheckBox):
            w.setChecked(bool(value))
        elif isinstance(w, (QSpinBox, QDoubleSpinBox)):
            w.setValue(value)
        else:
            w.setText(", ".join(value) if isinstance(value, list) else str(value))
        w.blockSignals(False)
        self.reset.setVisible(pinned)
        font = w.font()
        font.setBold(pinned)
        w.setFont(font)


class PlanPage(Page):
    title = "Plan"
    subtitle = "Set how much GPU memory the run may use. The planner picks settings that fit and explains why."
    icon_name = "plan"
    sig_train = Signal()

    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(parent, scroll=True)
        self.session = session
        self.editors: dict[str, FieldEditor] = {}
        self._suggestion: dict = {}
        self._probe_started = self._probe_failed = False
        self._pending_budget = session.budget
        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(40)
        self._debounce.timeout.connect(lambda: self.session.set_budget(self._pending_budget))
        self._build()
        session.sig_plan.connect(self.show_plan)
        session.sig_plan_error.connect(lambda m: self.reasons.setText(f"<span style='color:#CF222E'>{m}</span>"))
        session.sig_model.connect(lambda _i: self._sync_editors())
        self.slider.blockSignals(True)
        self.slider.setValue(max(self.slider.minimum(), round(session.budget / STEP)))
        self.slider.blockSignals(False)
        if session.plan is not None:  # built after a model was chosen
            self.show_plan(session.plan)

    # -- layout -------------------------------------------------------------------------------
    def _build(self) -> None:
        budget = Card("GPU memory budget")
        self._budget_heading = budget.findChild(QLabel)
        row = QHBoxLayout()
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(4, 80 * 4)  # 1 GiB to 80 GiB in quarter steps
        self.slider.setPageStep(4)
        self.slider.setToolTip("How much GPU memory the run may use (defaults to your GPU's memory; 24 GB without one)")
        self.slider.valueChanged.connect(self._slider_moved)
        self.budget_label = label(human_bytes(self.session.budget), "value")
        self.budget_label.setMinimumWidth(90)
        row.addWidget(self.slider, 1)
        row.addWidget(self.budget_label)
        budget.body.addLayout(row)
        self.gpu_label = label("Detecting GPUs…", "muted", wrap=True)
        budget.body.addWidget(self.gpu_label)
        self.gpu_row = QHBoxLayout()  # the GPU picker: one box per GPU (train.gpus), filled by detect_hardware
        self.gpu_boxes: list[QCheckBox] = []
        budget.body.addLayout(self.gpu_row)
        self.gpu_note = label("", "muted", wrap=True)
        self.gpu_note.setVisible(False)
        budget.body.addWidget(self.gpu_note)
        self.content.addWidget(budget)

        pred = Card("Predicted memory")
        self.bar = MemoryBar()
        pred.body.addWidget(self.bar)
        self.fit_label = label("Choose a model to see a plan.", "muted", wrap=True)
        self.speed_label = label("", "muted", wrap=True)
        self.speed_label.setToolTip("From a FLOPs model of the training step and a measured rate for this device")
        self._probe = CommandController(self)  # python -m studio.speed: one done event with the rates
        self._probe.sig_finished.connect(self._probe_done)
        fit_row = QHBoxLayout()
        fit_row.addWidget(self.fit_label, 1)
        self.suggest_btn = QToolButton()
        self.suggest_btn.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        self.suggest_btn.setToolTip("Apply the planner's smallest change that fits")
        self.suggest_btn.clicked.connect(self._apply_suggestion)
        self.suggest_btn.hide()
        fit_row.addWidget(self.suggest_btn)
        pred.body.addLayout(fit_row)
        pred.body.addWidget(self.speed_label)
        self.content.addWidget(pred)

        self._build_methods()
        settings = Card("Fitted settings")
        grid = QGridLayout()
        grid.setColumnStretch(1, 1)
        self.plan_values: dict[str, QLabel] = {}
        for i, (title, key) in enumerate(PLAN_ROWS):
            grid.addWidget(label(title + ":", "muted"), i, 0)
            self.plan_values[key] = label("–", "value")
            grid.addWidget(self.plan_values[key], i, 1)
        settings.body.addLayout(grid)
        self.reasons = label("", wrap=True)
        self.reasons.setTextFormat(Qt.TextFormat.RichText)
        settings.body.addWidget(self.reasons)
        self.content.addWidget(settings)
        self.footer_fit = label("", "muted")
        self.footer.addWidget(self.footer_fit, 1)
        self.train_btn = primary_button("Train with this plan")
        self.train_btn.setToolTip("Go to Train and start (Ctrl+R)")
        self.train_btn.clicked.connect(self.sig_train)
        self.footer.addWidget(self.train_btn)
        self._build_queue_buttons()

        adv = Card("")
        head = QHBoxLayout()
        self.adv_toggle = QToolButton()
        self.adv_toggle.setText("Advanced settings")
        self.adv_toggle.setCheckable(True)
        self.adv_toggle.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.adv_toggle.setArrowType(Qt.ArrowType.RightArrow)
        self.adv_toggle.setAutoRaise(True)
        head.addWidget(self.adv_toggle)
        head.addWidget(label("A field you change stays fixed; the planner re-fits the rest. ↺ releases it.", "muted"), 1)
        adv.body.addLayout(head)
        self.adv_body = QWidget()
        # Sections one under the other, fields left to right: Tab then moves the way a reader does,
        # and the page scrolls one way instead of jumping between the tops and bottoms of columns.
        grid = QGridLayout(self.adv_body)
        grid.setContentsMargins(0, 0, 0, 0)
        grid.setHorizontalSpacing(10)
        row = 0
        for section in (*ADVANCED, "data"):
            grid.addWidget(label(section.upper(), "muted"), row, 0, 1, 2 * ADV_COLUMNS)
            row += 1
            fields = [f for f in dataclasses.fields(rc.SECTIONS[section])
                      if not (section == "data" and f.name in ("path", "format", "columns", "heldout", "roles", "label_filter"))]
            for i, f in enumerate(fields):
                ed = FieldEditor(section, f, self.session.pin, self._unpin)
                self.editors[ed.key] = ed
                lab = QLabel(f.name.replace("_", " ") + ":")
                lab.setToolTip(f.metadata.get("doc", ""))
                lab.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                lab.setBuddy(ed.editor)
                r, c = row + i // ADV_COLUMNS, 2 * (i % ADV_COLUMNS)
                grid.addWidget(lab, r, c)
                grid.addWidget(ed, r, c + 1)
            row += (len(fields) + ADV_COLUMNS - 1) // ADV_COLUMNS
        for c in range(ADV_COLUMNS):
            grid.setColumnStretch(2 * c + 1, 1)
        self.adv_body.setVisible(False)
        adv.body.addWidget(self.adv_body)
        self.adv_toggle.toggled.connect(self._toggle_advanced)
        self.content.addWidget(adv)
        self.content.addStretch(1)
        self._sync_editors()

    def _build_methods(self) -> None:
        """The adapter methods (studio.methods), each with its one sentence; choosing one fixes lora.method."""
        card = Card("Adapter method")
        grid = QGridLayout()
        grid.setColumnStretch(1, 1)
        grid.setVerticalSpacing(2)
        self.method_group = QButtonGroup(self)
        self.method_buttons: dict[str, QRadioButton] = {}
        for i, m in enumerate(methods.METHODS.values()):
            b = QRadioButton(m.label)
            b.setToolTip(f"lora.method = {m.name} (--peft {m.name})")
            self.method_group.addButton(b, i)
            self.method_buttons[m.name] = b
            grid.addWidget(b, i, 0, Qt.AlignmentFlag.AlignTop)
            text = m.when + ("" if m.mergeable else " Export gives the adapter only (nothing to merge).")
            grid.addWidget(label(text, "muted", wrap=True), i, 1)
        self.method_group.idClicked.connect(self._method_chosen)
        card.body.addLayout(grid)
        self.content.addWidget(card)

    def _method_chosen(self, index: int) -> None:
        name = methods.NAMES[index]
        if name == methods.DEFAULT:
            self.session.unpin("lora.method")  # the default needs no pin
            self._sync_editors()
        else:
            self.session.pin("lora.method", name)

    # -- several GPUs ---------------------------------------------------------------------------
    def _fill_gpu_picker(self, gpus: list) -> None:
        """One check box per GPU when there are several (train.gpus); otherwise a line saying why not."""
        import sys

        for box in self.gpu_boxes:
            box.deleteLater()
        self.gpu_boxes = []
        self._gpus = gpus
        if len(gpus) < 2 or sys.platform.startswith("win"):
            why = ("Training on several GPUs needs NCCL, which PyTorch does not ship for Windows: this run uses one "
                   "GPU (Linux, WSL2 or 'lora-studio cluster export' can use several)."
                   if len(gpus) >= 2 else "Several GPUs: this machine has "
                   + ("one GPU" if gpus else "none") + ", so the run uses " + ("it" if gpus else "the CPU")
                   + "; 'lora-studio cluster export' runs the same recipe on a cluster.")
            self.gpu_note.setText(why)
            self.gpu_note.setVisible(True)
            return
        self.gpu_row.addWidget(QLabel("Train on:"))
        for g in gpus:
            box = QCheckBox(f"GPU {g.index}: {g.name}")
            box.setChecked(g.index == 0)
            box.setToolTip(f"{human_bytes(g.total_bytes)} total, {human_bytes(g.free_bytes)} free; two or more: "
                           "torchrun starts one process per GPU (DDP, or FSDP when the model fits no single card)")
            box.toggled.connect(self._gpus_picked)
            self.gpu_row.addWidget(box)
            self.gpu_boxes.append(box)
        self.gpu_row.addStretch(1)

    def _gpus_picked(self, _on: bool = False) -> None:
        from studio.launch import unsupported

        picked = [g.index for g, box in zip(self._gpus, self.gpu_boxes) if box.isChecked()]
        self.session.pin("train.gpus", ",".join(map(str, picked)) if len(picked) > 1 else "")
        self.session.pin("train.nproc", max(1, len(picked)))
        why = unsupported(self.session.recipe.train, self._gpus)
        plan = self.session.plan
        if why:
            self.gpu_note.setText(why)
        elif len(picked) > 1 and plan is not None:
            self.gpu_note.setText(f"{len(picked)} GPUs: {plan.strategy.upper()}. " + (plan.reasons[0] if plan.reasons else ""))
        self.gpu_note.setVisible(bool(why) or len(picked) > 1)

    def _toggle_advanced(self, on: bool) -> None:
        self.adv_body.setVisible(on)
        self.adv_toggle.setArrowType(Qt.ArrowType.DownArrow if on else Qt.ArrowType.RightArrow)

    # -- budget -------------------------------------------------------------------------------
    def detect_hardware(self) -> None:
        """Default the budget to the detected GPU; without one, plan for the CPU with system RAM as the budget."""
        gpus = hardware.detect_gpus()
        budget = budget_bytes(gpus)
        self.gpu_name = gpus[0].name if gpus else ""
        if gpus:
            g = gpus[0]
            self.gpu_label.setText(f"{g.name}: {human_bytes(g.total_bytes)} total, {human_bytes(g.free_bytes)} free.")
        self._fill_gpu_picker(list(gpus))
        if not gpus:
            self.gpu_label.setText(f"No NVIDIA GPU detected ({gpus.reason}): training runs on the CPU, so the budget "
                                   f"is this computer's memory ({human_bytes(budget)} after what the system and "
                                   "the studio need) and the plan uses 4-bit QLoRA with short steps.")
            self._budget_heading.setText("Memory budget (training runs on the CPU)")
            self.slider.setToolTip("How much of this computer's memory the run may use")
            self._probe_cpu()
        self.session.set_device(hardware.training_device(gpus), self.gpu_name)
        self.slider.setMaximum(max(80 * 4, int(budget / STEP)))
        self.set_budget_bytes(budget)

    def set_budget_bytes(self, value: int) -> None:
        self.slider.setValue(max(self.slider.minimum(), round(value / STEP)))
        self._pending_budget = int(value)
        self.budget_label.setText(human_bytes(value))
        self.session.set_budget(int(value))

    def _slider_moved(self, v: int) -> None:
        self._pending_budget = v * STEP
        self.budget_label.setText(human_bytes(self._pending_budget))
        self._debounce.start()

    # -- plan ---------------------------------------------------------------------------------
    def _unpin(self, key: str) -> None:
        self.session.unpin(key)
        self._sync_editors()

    def show_plan(self, plan: Plan | None) -> None:
        if plan is None:
            self.bar.set_components([], self.session.budget)
            self.fit_label.setText("No plan yet: choose a model (and a dataset for real sequence lengths).")
            self._sync_editors()
            return
        parts = [(name, float(size), plan.sources.get(name, "")) for name, size in plan.components.items()]
        device_total = plan.predicted["device_total_bytes"]
        if device_total > sum(b for _, b, _ in parts):
            parts.append(("allocator cache + CUDA context", float(device_total) - sum(b for _, b, _ in parts),
                          "what nvidia-smi shows beyond the tensors: caching allocator, CUDA context, kernels"))
        self.bar.set_components(parts, self.session.budget)
        fits = plan.fits
        total = self.bar.total
        verdict = (f"<b style='color:#1A7F37'>Fits:</b> about {human_bytes(total)} of {human_bytes(self.session.budget)}."
                   if fits else f"<b style='color:#CF222E'>Does not fit:</b> about {human_bytes(total)} needed, "
                   f"budget {human_bytes(self.session.budget)}.")
        if plan.suggestion and not fits:
            verdict += f" {plan.suggestion}"
        self.fit_label.setText(verdict)
        self.footer_fit.setText(f"Fits in {human_bytes(self.session.budget)}" if fits else "Does not fit the budget")
        self.speed_label.setText(self._speed_text(plan))
        self._suggestion = plan.suggestion_change.to_dict() if plan.suggestion_change and not fits else {}
        self.suggest_btn.setText(self._suggestion_text(self._suggestion))
        self.suggest_btn.setVisible(bool(self.suggest_btn.text()))
        self.reasons.setText("<ul style='margin-left:-20px'>" + "".join(f"<li>{r}</li>" for r in plan.reasons)
                             + "</ul>" if plan.reasons else "")
        self._sync_editors()

    def _speed_text(self, plan: Plan) -> str:
        est = plan.estimate.to_dict() if plan.estimate is not None else None
        if not est:
            if plan.device != "cpu":
                return ""
            if self._probe_failed:
                return "Speed unknown: measuring this CPU failed (python -m studio.speed shows why)."
            return "Speed: measuring this CPU (a few seconds, once)…"
        text = f"Expected speed: about {est['tokens_per_s']:,.0f} tokens/s, {est['step_seconds']:.1f} s per step"
        if est.get("seconds") is not None:
            text += f"; the run about {speed.duration(est['seconds'])} ({est['steps']} steps)"
        return text + "."

    def _probe_cpu(self) -> None:
        """Measure this CPU's training speed once in the background (cached per machine), then re-plan."""
        if speed.cpu_rates() is not None or self._probe.running or self._probe_started:
            return
        if self.session.preparing_model:  # converting the demo model takes the cores: the figure would be wrong
            QTimer.singleShot(PROBE_RETRY_MS, self._probe_cpu)
            return
        self._probe_started = True
        self._probe.run_argv(procs.worker_argv("studio.speed"))

    def _probe_done(self, _code: int, saw_done: bool) -> None:
        self._probe_failed = not saw_done
        self.session.refit()

    @staticmethod
    def _suggestion_text(change: dict) -> str:
        if "train.seq_len" in change:
            return f"Use sequence length {change['train.seq_len']}"
        if change.get("unfix"):
            return "Release the fixed settings"
        if "budget_bytes" in change:
            return f"Set the budget to {human_bytes(change['budget_bytes'])}"
        return ""

    def _apply_suggestion(self) -> None:
        """Do what the planner suggested: a shorter length, release pins, or a bigger budget."""
        change = self._suggestion
        if "train.seq_len" in change:
            self.session.pin("train.seq_len", int(change["train.seq_len"]))
        elif change.get("unfix"):
            for key in change["unfix"]:
                self.session.unpin(key)
        elif "budget_bytes" in change:
            self.set_budget_bytes(int(change["budget_bytes"]))
        self._sync_editors()

    def _sync_editors(self) -> None:
        """Show the values a run would start with; pinned fields in bold with a reset button."""
        recipe = self.session.resolved_recipe()
        for key, ed in self.editors.items():
            section, name = key.split(".", 1)
            ed.set_value(getattr(getattr(recipe, section), name), key in self.session.fixed)
        t, lo, q = recipe.train, recipe.lora, recipe.quant
        chosen = self.method_buttons.get(lo.method)
        if chosen is not None and not chosen.isChecked():
            chosen.setChecked(True)
        m = methods.get(lo.method)
        values = {"lora.method": m.label + ("" if m.low_rank else f" ({lo.virtual_tokens} virtual tokens)"),
                  "quant.mode": f"{q.mode}" + (f" ({q.quant_type}{', double quant' if q.double_quant else ''})" if q.mode == "4bit" else ""),
                  "lora.rank": f"{lo.rank} / {lo.alpha}  on {', '.join(lo.targets)}",
                  "train.seq_len": f"{t.seq_len} tokens", "train.micro_batch": f"{t.micro_batch} × {t.grad_accum} = {t.micro_batch * t.grad_accum} examples per step",
                  "train.grad_ckpt": "on" if t.grad_ckpt else "off", "train.optimizer": t.optimizer,
                  "train.lr": f"{t.lr:g} ({t.scheduler}, warm-up {t.warmup_ratio:g})"}
        for key, text in values.items():
            self.plan_values[key].setText(text + ("  (fixed)" if key in self.session.fixed else ""))

    # -- the queue and sweeps (RUNS/queue.json; the Runs page shows it) -------------------------
    def _build_queue_buttons(self) -> None:
        from PySide6.QtWidgets import QPushButton

        self.queue_btn = QPushButton("Add to queue")
        self.queue_btn.setToolTip("Queue this recipe: the queue trains recipes one after another (Runs page)")
        self.queue_btn.clicked.connect(self.add_to_queue)
        self.sweep_btn = QPushButton("Sweep…")
        self.sweep_btn.setToolTip("Queue this recipe at several LoRA ranks and learning rates; every variant is "
                                  "checked to fit before any starts, and they run one after another")
        self.sweep_btn.clicked.connect(self.ask_sweep)
        self._sweep_cmd = CommandController(self)
        self._sweep_cmd.sig_done.connect(self._sweep_done)
        self._sweep_cmd.sig_error.connect(lambda _k, message, _h: self.footer_fit.setText(message))
        self._sweep_cmd.sig_log.connect(lambda text: self.footer_fit.setText(text.splitlines()[0]))
        self.footer.insertWidget(self.footer.indexOf(self.train_btn), self.sweep_btn)
        self.footer.insertWidget(self.footer.indexOf(self.train_btn), self.queue_btn)

    def add_to_queue(self) -> None:
        from studio import runqueue
        from studio.errors import UserError

        try:
            entry = runqueue.add(self.session.resolved_recipe())
        except UserError as e:
            self.footer_fit.setText(str(e).splitlines()[0])
            return
        self.footer_fit.setText(f"Queued {entry['label']}: the Runs page runs the queue.")

    def ask_sweep(self) -> None:
        from PySide6.QtWidgets import QInputDialog

        r = self.session.resolved_recipe()
        ranks, ok = QInputDialog.getText(self, "Sweep", "LoRA ranks (comma-separated):",
                                         text=",".join(str(x) for x in (r.lora.rank // 2, r.lora.rank, r.lora.rank * 2)))
        if not ok:
            return
        lrs, ok = QInputDialog.getText(self, "Sweep", "Learning rates (comma-separated; empty keeps this one):")
        if ok:
            self.start_sweep(ranks, lrs)

    def start_sweep(self, ranks: str, lrs: str = "") -> None:
        """``lora-studio sweep`` with this recipe: the planner checks every variant, then a background runner trains them."""
        import datetime as dt

        from studio import paths

        folder = paths.data_dir() / "sweeps"
        folder.mkdir(parents=True, exist_ok=True)
        recipe_file = folder / f"recipe-{dt.datetime.now():%Y%m%d-%H%M%S}.json"
        self.session.resolved_recipe().save(recipe_file)
        args = ["sweep", str(recipe_file), "--detach", "--runs-dir", str(paths.runs_dir()),
                "--budget-gib", f"{self.session.budget / GIB:.6g}"]
        if ranks.strip():
            args += ["--rank", ranks.strip()]
        if lrs.strip():
            args += ["--lr", lrs.strip()]
        self.footer_fit.setText("Checking that every variant fits…")
        self._sweep_cmd.run_command(*args)

    def _sweep_done(self, data: dict) -> None:
        n = len(data.get("entries") or [])
        self.footer_fit.setText(f"{data.get('sweep')}: {n} variants queued and running; the Runs page shows them.")
