"""The Plan page's cards: the budget (slider and GPU picker), the predicted memory, the long context, the
adapter methods and the fitted settings. Each draws a value from ``studio.planview``, held in a ``State`` it is bound to, and
says what the user asked for with a signal; none reads a ``Plan`` or talks to the session."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QRadioButton,
    QSlider,
    QToolButton,
    QWidget,
)

from studio import methods
from studio.planner import Suggestion
from studio.planview import FITTED_ROWS, PlanView
from ui.widgets.common import Card, human_bytes, label
from ui.widgets.memory_bar import MemoryBar
from ui.widgets.state import State

GIB = 1024 ** 3
STEP = GIB // 4   # the slider moves in quarter GiB
DEBOUNCE_MS = 40  # a dragged slider re-plans once it rests


class BudgetCard(Card):
    """The memory budget slider, the detected GPUs, and one box per GPU when there are several."""

    sig_budget = Signal(object)   # bytes, once the slider rests (may exceed a C int)
    sig_gpus = Signal(list)       # the picked GPU indexes

    def __init__(self, budget: int, parent: QWidget | None = None) -> None:
        super().__init__("GPU memory budget", parent)
        self.heading = self.findChild(QLabel)
        row = QHBoxLayout()
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(4, 80 * 4)  # 1 GiB to 80 GiB in quarter steps
        self.slider.setPageStep(4)
        self.slider.setToolTip("How much GPU memory the run may use (defaults to your GPU's memory; 24 GB without one)")
        self.value_label = label(human_bytes(budget), "value")
        self.value_label.setMinimumWidth(90)
        row.addWidget(self.slider, 1)
        row.addWidget(self.value_label)
        self.body.addLayout(row)
        self.gpu_label = label("Detecting GPUs…", "muted", wrap=True)
        self.body.addWidget(self.gpu_label)
        self.gpu_row = QHBoxLayout()
        self.gpu_boxes: list[QCheckBox] = []
        self.body.addLayout(self.gpu_row)
        self.gpu_note = label("", "muted", wrap=True)
        self.gpu_note.setVisible(False)
        self.body.addWidget(self.gpu_note)
        self.pending = int(budget)
        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(DEBOUNCE_MS)
        self._debounce.timeout.connect(lambda: self.sig_budget.emit(self.pending))
        self.show_budget(budget)
        self.slider.valueChanged.connect(self._moved)

    def show_budget(self, value: int) -> None:
        """Put the slider and its figure at ``value`` without asking for a re-plan."""
        self.slider.blockSignals(True)
        self.slider.setValue(max(self.slider.minimum(), round(value / STEP)))
        self.slider.blockSignals(False)
        self.pending = int(value)
        self.value_label.setText(human_bytes(value))

    def on_cpu(self) -> None:
        self.heading.setText("Memory budget (training runs on the CPU)")
        self.slider.setToolTip("How much of this computer's memory the run may use")

    def _moved(self, v: int) -> None:
        self.pending = v * STEP
        self.value_label.setText(human_bytes(self.pending))
        self._debounce.start()

    def fill_gpus(self, gpus: Sequence[Any], why_not: str) -> None:
        """One check box per GPU (train.gpus), or the line ``why_not`` when there is no choice to make."""
        for box in self.gpu_boxes:
            box.deleteLater()
        self.gpu_boxes = []
        self.gpus = list(gpus)
        if why_not:
            self.show_note(why_not)
            return
        self.gpu_row.addWidget(QLabel("Train on:"))
        for g in gpus:
            box = QCheckBox(f"GPU {g.index}: {g.name}")
            box.setChecked(g.index == 0)
            box.setToolTip(f"{human_bytes(g.total_bytes)} total, {human_bytes(g.free_bytes)} free; two or more: "
                           "torchrun starts one process per GPU (DDP, or FSDP when the model fits no single card)")
            box.toggled.connect(lambda _on: self.sig_gpus.emit(self.picked()))
            self.gpu_row.addWidget(box)
            self.gpu_boxes.append(box)
        self.gpu_row.addStretch(1)

    def picked(self) -> list[int]:
        return [g.index for g, box in zip(self.gpus, self.gpu_boxes) if box.isChecked()]

    def show_note(self, text: str) -> None:
        self.gpu_note.setText(text)
        self.gpu_note.setVisible(bool(text))


class PredictionCard(Card):
    """The predicted memory as a stacked bar against the budget, the verdict, the suggestion, the speed."""

    sig_apply = Signal(object)  # the suggested change (studio.planner.Suggestion), to apply

    def __init__(self, state: State, parent: QWidget | None = None) -> None:
        super().__init__("Predicted memory", parent)
        self.bar = MemoryBar()
        self.body.addWidget(self.bar)
        self.fit_label = label("Choose a model to see a plan.", "muted", wrap=True)
        self.speed_label = label("", "muted", wrap=True)
        self.speed_label.setToolTip("From a FLOPs model of the training step and a measured rate for this device")
        row = QHBoxLayout()
        row.addWidget(self.fit_label, 1)
        self.suggest_btn = QToolButton()
        self.suggest_btn.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        self.suggest_btn.setToolTip("Apply the planner's smallest change that fits")
        self.suggest_btn.clicked.connect(lambda: self.sig_apply.emit(self.change))
        self.suggest_btn.hide()
        row.addWidget(self.suggest_btn)
        self.body.addLayout(row)
        self.body.addWidget(self.speed_label)
        self.change: Suggestion | None = None
        state.changed.connect(self.show_view)

    def show_view(self, view: PlanView | int) -> None:
        """A plan's view, or (no plan) the budget alone."""
        if not isinstance(view, PlanView):
            self.bar.set_components([], view)
            self.fit_label.setText("No plan yet: choose a model (and a dataset for real sequence lengths).")
            return
        self.bar.set_components(view.parts, view.budget)
        self.fit_label.setText(view.verdict)
        self.speed_label.setText(view.speed)
        self.change = view.change
        self.suggest_btn.setText(view.change_label)
        self.suggest_btn.setVisible(bool(view.change_label))


class ContextCard(Card):
    """The longest context the card holds with these settings, and the long-sequence parts and kernels that run."""

    # planview.context_rows' parts; the last only for a model with linear-attention layers (Qwen3.5)
    ROWS = ("Tiled loss head", "Tiled MLP", "Activation offloading", "Kernels", "Linear attention")

    def __init__(self, state: State, parent: QWidget | None = None) -> None:
        super().__init__("Long context", parent)
        self.longest = label("No plan yet.", "muted", wrap=True)
        self.longest.setToolTip("The planner's search over lengths with the other settings of this plan kept")
        self.body.addWidget(self.longest)
        grid = QGridLayout()
        grid.setColumnStretch(1, 1)
        self.values: dict[str, QLabel] = {}
        self.titles: dict[str, QLabel] = {}
        for i, title in enumerate(self.ROWS):
            self.titles[title] = label(title + ":", "muted")
            grid.addWidget(self.titles[title], i, 0, Qt.AlignmentFlag.AlignTop)
            self.values[title] = label("–", "value", wrap=True)
            grid.addWidget(self.values[title], i, 1)
        self.body.addLayout(grid)
        state.changed.connect(self.show_view)

    def show_view(self, view: PlanView | int) -> None:
        """A plan's view, or (no plan) dashes."""
        if not isinstance(view, PlanView):
            self.longest.setText("No plan yet.")
            for value in self.values.values():
                value.setText("–")
            return
        self.longest.setText(view.longest or "No longest context for this plan (it does not fit, or runs on "
                                             "several GPUs).")
        given = dict(view.context)
        for title in self.ROWS:  # a part the plan does not name (no linear-attention layers) is not shown
            self.values[title].setText(given.get(title, "–"))
            self.titles[title].setVisible(title in given)
            self.values[title].setVisible(title in given)


class MethodCard(Card):
    """The adapter methods (studio.methods), each with its one sentence."""

    sig_chosen = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Adapter method", parent)
        grid = QGridLayout()
        grid.setColumnStretch(1, 1)
        grid.setVerticalSpacing(2)
        self.group = QButtonGroup(self)
        self.buttons: dict[str, QRadioButton] = {}
        for i, m in enumerate(methods.METHODS.values()):
            b = QRadioButton(m.label)
            b.setToolTip(f"lora.method = {m.name} (--peft {m.name})")
            self.group.addButton(b, i)
            self.buttons[m.name] = b
            grid.addWidget(b, i, 0, Qt.AlignmentFlag.AlignTop)
            text = m.when + ("" if m.mergeable else " Export gives the adapter only (nothing to merge).")
            grid.addWidget(label(text, "muted", wrap=True), i, 1)
        self.group.idClicked.connect(lambda i: self.sig_chosen.emit(methods.NAMES[i]))
        self.body.addLayout(grid)

    def select(self, name: str) -> None:
        chosen = self.buttons.get(name)
        if chosen is not None and not chosen.isChecked():
            chosen.setChecked(True)


class FittedCard(Card):
    """The fitted settings, one row per field, bound to a ``State`` of their texts; then the reasons."""

    def __init__(self, rows: State, parent: QWidget | None = None) -> None:
        super().__init__("Fitted settings", parent)
        grid = QGridLayout()
        grid.setColumnStretch(1, 1)
        self.values: dict[str, QLabel] = {}
        for i, (title, key) in enumerate(FITTED_ROWS):
            grid.addWidget(label(title + ":", "muted"), i, 0)
            self.values[key] = label("–", "value")
            grid.addWidget(self.values[key], i, 1)
        self.body.addLayout(grid)
        self.reasons = label("", wrap=True)
        self.reasons.setTextFormat(Qt.TextFormat.RichText)
        self.body.addWidget(self.reasons)
        rows.changed.connect(self.show_rows)

    def show_rows(self, texts: dict[str, str]) -> None:
        for key, text in texts.items():
            self.values[key].setText(text)

    def show_error(self, message: str) -> None:
        self.reasons.setText(f"<span style='color:#CF222E'>{message}</span>")
