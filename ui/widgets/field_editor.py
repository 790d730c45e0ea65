"""The Plan page's advanced settings: one editor per recipe field (built from the field's metadata),
where a change pins the value and ↺ releases it. Bound to a ``State`` holding ``(recipe, fixed)``."""
from __future__ import annotations

import dataclasses
import html
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QSpinBox,
    QToolButton,
    QWidget,
)

from studio import recipe as rc
from ui.widgets.common import Card, label
from ui.widgets.state import State

SECTIONS = ("lora", "quant", "train", "data")
# Set elsewhere: on the Data page, or by the answer to the reward file's question (ui.reward_file).
HIDDEN = {"data": ("path", "format", "columns", "heldout", "roles", "label_filter"), "train": ("grpo_reward_sha256",)}
GRPO_HEADING = "GRPO: SAMPLING AND REWARDS"
COLUMNS = 3  # fields per row


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



class AdvancedCard(Card):
    """Every recipe field the planner may fit, folded away behind a toggle; shows the ``(recipe, fixed)`` it is bound to."""

    sig_pin = Signal(str, object)
    sig_unpin = Signal(str)

    def __init__(self, state: State, parent: QWidget | None = None) -> None:
        super().__init__("", parent)
        self.editors: dict[str, FieldEditor] = {}
        head = QHBoxLayout()
        self.toggle = QToolButton()
        self.toggle.setText("Advanced settings")
        self.toggle.setCheckable(True)
        self.toggle.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.toggle.setArrowType(Qt.ArrowType.RightArrow)
        self.toggle.setAutoRaise(True)
        head.addWidget(self.toggle)
        head.addWidget(label("A field you change stays fixed; the planner re-fits the rest. ↺ releases it.", "muted"), 1)
        self.body.addLayout(head)
        self.note = label("", wrap=True)
        self.note.setTextFormat(Qt.TextFormat.RichText)
        self.note.hide()
        self.body.addWidget(self.note)
        self.grpo_widgets: list[QWidget] = []  # shown only while the objective is grpo
        self.fields = QWidget()
        self._fill(QGridLayout(self.fields))
        self.fields.setVisible(False)
        self.body.addWidget(self.fields)
        self.toggle.toggled.connect(self.unfold)
        state.changed.connect(self.show_values)
        if state.value is not None:
            self.show_values(state.value)

    def _fill(self, grid: QGridLayout) -> None:
        """Sections one under the other, fields left to right: Tab then moves the way a reader does, and
        the page scrolls one way instead of jumping between the tops and bottoms of columns. grpo's settings
        are a block of their own after the train section, shown for that objective only."""
        grid.setContentsMargins(0, 0, 0, 0)
        grid.setHorizontalSpacing(10)
        row = 0
        for heading, section, fields in self._blocks():
            widgets = [label(heading, "muted")]
            grid.addWidget(widgets[0], row, 0, 1, 2 * COLUMNS)
            row += 1
            for i, f in enumerate(fields):
                ed = FieldEditor(section, f, self.sig_pin.emit, self.sig_unpin.emit)
                self.editors[ed.key] = ed
                lab = QLabel(f.name.replace("_", " ") + ":")
                lab.setToolTip(f.metadata.get("doc", ""))
                lab.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                lab.setBuddy(ed.editor)
                r, c = row + i // COLUMNS, 2 * (i % COLUMNS)
                grid.addWidget(lab, r, c)
                grid.addWidget(ed, r, c + 1)
                widgets += [lab, ed]
            row += (len(fields) + COLUMNS - 1) // COLUMNS
            if heading == GRPO_HEADING:
                self.grpo_widgets = widgets
        for c in range(COLUMNS):
            grid.setColumnStretch(2 * c + 1, 1)

    @staticmethod
    def _blocks() -> list[tuple[str, str, list[dataclasses.Field]]]:
        """(heading, section, fields) in the order shown: each section, grpo's fields split off the train one."""
        out = []
        for section in SECTIONS:
            fields = [f for f in dataclasses.fields(rc.SECTIONS[section]) if f.name not in HIDDEN.get(section, ())]
            grpo = [f for f in fields if f"{section}.{f.name}" in rc.GRPO_SETTINGS]
            out.append((section.upper(), section, [f for f in fields if f not in grpo]))
            if grpo:
                out.append((GRPO_HEADING, section, grpo))
        return out

    def unfold(self, on: bool) -> None:
        self.fields.setVisible(on)
        self.toggle.setArrowType(Qt.ArrowType.DownArrow if on else Qt.ArrowType.RightArrow)

    def show_values(self, value: tuple[rc.Recipe, dict[str, Any]]) -> None:
        """The values a run would start with; pinned fields in bold with a reset button."""
        recipe, fixed = value
        for key, ed in self.editors.items():
            section, name = key.split(".", 1)
            ed.set_value(getattr(getattr(recipe, section), name), key in fixed)
        for w in self.grpo_widgets:
            w.setVisible(recipe.train.objective in rc.REWARD_OBJECTIVES)

    def show_note(self, text: str, error: bool = False) -> None:
        """A line under the heading: what became of a setting the page checked (the reward file's agreement)."""
        text = html.escape(text)
        self.note.setText(f"<span style='color:#CF222E'>{text}</span>" if error else text)
        self.note.setVisible(bool(text))
