"""A value that widgets are bound to (napari's model and its events, in small): setting the value
redraws every widget bound to it, so a test changes the value and reads the widget."""
from __future__ import annotations

from typing import Any

from PySide6.QtCore import QObject, Signal


class State(QObject):
    """One value and a signal that carries each new one."""

    changed = Signal(object)

    def __init__(self, value: Any = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._value = value

    @property
    def value(self) -> Any:
        return self._value

    def set(self, value: Any) -> None:
        self._value = value
        self.changed.emit(value)
