"""Plan: a VRAM budget, the settings the planner fitted with its reasons, the predicted memory as a
stacked bar against the budget, and an advanced panel where a changed field stays fixed while
the planner re-fits the rest.

The page composes the cards of ``ui.widgets.plan_cards`` and ``ui.widgets.field_editor``, binds them to
what ``studio.planview`` makes of the session's plan, and turns their signals into session calls.
"""
from __future__ import annotations

import sys

from PySide6.QtCore import QTimer, Signal
from PySide6.QtWidgets import QPushButton, QWidget

from studio import hardware, methods, paths, planview, procs, runqueue, speed
from studio.errors import UserError
from studio.launch import unsupported
from studio.planner import Plan, Suggestion
from studio.planning import budget_bytes
from ui import reward_file
from ui.controllers import CommandController
from ui.session import GIB, Session
from ui.widgets.common import Page, label, primary_button
from ui.widgets.field_editor import AdvancedCard
from ui.widgets.plan_cards import BudgetCard, ContextCard, FittedCard, MethodCard, PredictionCard
from ui.widgets.state import State

PROBE_RETRY_MS = 2000      # the CPU speed probe waits for the demo model's conversion to finish


class PlanPage(Page):
    title = "Plan"
    subtitle = "Set how much GPU memory the run may use. The planner picks settings that fit and explains why."
    icon_name = "plan"
    sig_train = Signal()

    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(parent, scroll=True)
        self.session = session
        self._probe_started = self._probe_failed = False
        self.view = State(session.budget, self)                      # PlanView, or the budget alone
        self.rows = State({}, self)                                  # the fitted settings' texts
        self.values = State((session.resolved_recipe(), dict(session.fixed)), self)  # (recipe, fixed)
        self._build()
        session.sig_plan.connect(self.show_plan)
        session.sig_plan_error.connect(self.fitted.show_error)
        session.sig_model.connect(lambda _i: self._sync_editors())
        if session.plan is not None:  # built after a model was chosen
            self.show_plan(session.plan)

    def _build(self) -> None:
        self.budget = BudgetCard(self.session.budget)
        self.budget.sig_budget.connect(self.session.set_budget)
        self.budget.sig_gpus.connect(self._gpus_picked)
        self.prediction = PredictionCard(self.view)
        self.prediction.sig_apply.connect(self._apply_suggestion)
        self._probe = CommandController(self)  # python -m studio.train.cpu_probe: one done event with the rates
        self._probe.sig_finished.connect(self._probe_done)
        self.long_context = ContextCard(self.view)
        self.methods = MethodCard()
        self.methods.sig_chosen.connect(self._method_chosen)
        self.fitted = FittedCard(self.rows)
        self.view.changed.connect(lambda v: self.fitted.reasons.setText(v.reasons) if isinstance(v, planview.PlanView) else None)
        self.advanced = AdvancedCard(self.values)
        self.advanced.sig_pin.connect(self._pin)
        self.advanced.sig_unpin.connect(self._unpin)
        for card in (self.budget, self.prediction, self.long_context, self.methods, self.fitted, self.advanced):
            self.content.addWidget(card)
        self.content.addStretch(1)
        self.footer_fit = label("", "muted")
        self.footer.addWidget(self.footer_fit, 1)
        self.sweep_btn = QPushButton("Sweep…")
        self.sweep_btn.setToolTip("Queue this recipe at several LoRA ranks and learning rates; every variant is "
                                  "checked to fit before any starts, and they run one after another")
        self.sweep_btn.clicked.connect(self.ask_sweep)
        self.queue_btn = QPushButton("Add to queue")
        self.queue_btn.setToolTip("Queue this recipe: the queue trains recipes one after another (Runs page)")
        self.queue_btn.clicked.connect(self.add_to_queue)
        self.train_btn = primary_button("Train with this plan")
        self.train_btn.setToolTip("Go to Train and start (Ctrl+R)")
        self.train_btn.clicked.connect(self.sig_train)
        for b in (self.sweep_btn, self.queue_btn, self.train_btn):
            self.footer.addWidget(b)
        self._sweep_cmd = CommandController(self)
        self._sweep_cmd.sig_done.connect(self._sweep_done)
        self._sweep_cmd.sig_error.connect(lambda _k, message, _h: self.footer_fit.setText(message))
        self._sweep_cmd.sig_log.connect(lambda text: self.footer_fit.setText(text.splitlines()[0]))
        self._sync_editors()

    # -- what the user picks ----------------------------------------------------------------------
    def _method_chosen(self, name: str) -> None:
        if name == methods.DEFAULT:
            self.session.unpin("lora.method")  # the default needs no pin
            self._sync_editors()
        else:
            self.session.pin("lora.method", name)

    def _pin(self, key: str, value) -> None:
        """A setting changed in the advanced card; a reward file is asked about before it is pinned."""
        if key == reward_file.FILE:
            self.set_reward_file(str(value))
        else:
            self.session.pin(key, value)

    def set_reward_file(self, path: str) -> None:
        """grpo's own reward file, pinned once the user agrees to run it (``ui.reward_file``): a No clears it, a
        file that cannot be read stays set and is shown as an error. Unless the rewards were chosen, the file
        becomes the reward (as ``--reward-file`` alone does in the CLI)."""
        agreed = self.session.resolved_recipe().train.grpo_reward_sha256
        d = reward_file.decide(path, agreed, lambda p, size, digest: reward_file.ask(self, p, size, digest))
        if d.message:
            self.session.pin(reward_file.FILE, path if d.error else "")
            self.advanced.show_note(d.message if d.error else f"{d.message} The reward file setting was cleared.", True)
        elif not d.pins:
            self.session.pin(reward_file.FILE, "")
            self.advanced.show_note("")
        else:
            pins = dict(d.pins)
            if reward_file.MIX not in self.session.fixed and not reward_file.mixes_file(self.session.recipe.train.grpo_rewards):
                pins[reward_file.MIX] = "file"
            for key, value in pins.items():
                self.session.pin(key, value)
            digest = self.session.resolved_recipe().train.grpo_reward_sha256
            note = f"{pins[reward_file.FILE]} runs as you agreed (sha256 {digest}); if it changes, you are asked again."
            self.advanced.show_note(note + (" It is now the reward (grpo rewards: file)." if reward_file.MIX in pins else ""))
        self._sync_editors()

    def _gpus_picked(self, picked: list[int]) -> None:
        self.session.pin("train.gpus", ",".join(map(str, picked)) if len(picked) > 1 else "")
        self.session.pin("train.nproc", max(1, len(picked)))
        why = unsupported(self.session.recipe.train, self.budget.gpus)
        self.budget.show_note(why or planview.several_gpus_note(self.session.plan, len(picked)))

    def fill_gpu_picker(self, gpus: list) -> None:
        """One check box per GPU when there are several (train.gpus); otherwise a line saying why not."""
        self.budget.fill_gpus(gpus, planview.no_picker_reason(gpus, sys.platform.startswith("win")))

    def _unpin(self, key: str) -> None:
        self.session.unpin(key)
        self._sync_editors()

    # -- budget -------------------------------------------------------------------------------
    def detect_hardware(self) -> None:
        """Default the budget to the detected GPU; without one, plan for the CPU with system RAM as the budget."""
        gpus = hardware.detect_gpus()
        budget = budget_bytes(gpus)
        self.gpu_name = gpus[0].name if gpus else ""
        self.budget.gpu_label.setText(planview.gpus_text(gpus, getattr(gpus, "reason", ""), budget))
        self.fill_gpu_picker(gpus)
        if not gpus:
            self.budget.on_cpu()
            self._probe_cpu()
        self.session.set_device(hardware.training_device(gpus), self.gpu_name)
        self.budget.slider.setMaximum(max(80 * 4, int(budget / (GIB // 4))))
        self.set_budget_bytes(budget)

    def set_budget_bytes(self, value: int) -> None:
        self.budget.show_budget(int(value))
        self.session.set_budget(int(value))

    # -- plan ---------------------------------------------------------------------------------
    def show_plan(self, plan: Plan | None) -> None:
        if plan is None:
            self.view.set(self.session.budget)
        else:
            view = planview.plan_view(plan, self.session.budget, self._probe_failed, self.session.fixed)
            self.view.set(view)
            self.footer_fit.setText(view.footer)
        self._sync_editors()

    def _probe_cpu(self) -> None:
        """Measure this CPU's training speed once in the background (cached per machine), then re-plan."""
        if speed.cpu_rates() is not None or self._probe.running or self._probe_started:
            return
        if self.session.preparing_model:  # converting the demo model takes the cores: the figure would be wrong
            QTimer.singleShot(PROBE_RETRY_MS, self._probe_cpu)
            return
        self._probe_started = True
        self._probe.run_argv(procs.worker_argv(speed.PROBE_MODULE))

    def _probe_done(self, _code: int, saw_done: bool) -> None:
        self._probe_failed = not saw_done
        self.session.refit()

    def _apply_suggestion(self, change: Suggestion | None) -> None:
        """Do what the planner suggested: a shorter length, release pins, or a bigger budget."""
        if change is None:
            return
        if change.seq_len is not None:
            self.session.pin("train.seq_len", change.seq_len)
        elif change.unfix:
            for key in change.unfix:
                self.session.unpin(key)
        elif change.budget_bytes is not None:
            self.set_budget_bytes(change.budget_bytes)
        self._sync_editors()

    def _sync_editors(self) -> None:
        """Show the values a run would start with; pinned fields in bold with a reset button."""
        recipe = self.session.resolved_recipe()
        self.values.set((recipe, self.session.fixed))
        self.methods.select(recipe.lora.method)
        self.rows.set(planview.fitted_rows(recipe, self.session.fixed))

    # -- the queue and sweeps (RUNS/queue.json; the Runs page shows it) -------------------------
    def add_to_queue(self) -> None:
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
