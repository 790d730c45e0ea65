"""The Runs page's registry bar: rename, tag, note, delete and undo, TensorBoard, the sort order, a status line.

Acts on a ``RunList``'s selection through ``studio.registry`` and reloads the list after each
change; TensorBoard's command line is ``studio.tboard``'s.
"""
from __future__ import annotations

from PySide6.QtCore import QProcess, QTimer, QUrl
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QInputDialog, QPushButton, QWidget

from studio import registry, tboard
from studio.errors import UserError
from ui.widgets.common import label
from ui.widgets.run_list import SORTS, RunList


class RunActions(QWidget):
    def __init__(self, run_list: RunList, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.run_list = run_list
        self.tensorboard: QProcess | None = None
        bar = QHBoxLayout(self)
        bar.setContentsMargins(0, 0, 0, 0)
        bar.setSpacing(12)  # the page's spacing, as when the bar was one of its rows
        buttons = (("Rename…", "Give the selected run a display name (its folder keeps its id)", self.rename),
                   ("Tags…", "Set the selected runs' tags, comma-separated", self.tag),
                   ("Note…", "Write a note on the selected run", self.note),
                   ("Delete", "Move the selected runs to the trash of the runs folder (Undo puts them back)",
                    self.delete),
                   ("Undo delete", "Put the last deleted run back", self.undo_delete),
                   ("Open in TensorBoard", "Serve the selected runs' TensorBoard event files on localhost and open "
                                           "them in the browser", self.open_tensorboard))
        self.buttons: dict[str, QPushButton] = {}
        for text, tip, slot in buttons:
            b = self.buttons[text] = QPushButton(text)
            b.setToolTip(tip)
            b.clicked.connect(slot)
            bar.addWidget(b)
        self.undo_btn, self.tb_btn = self.buttons["Undo delete"], self.buttons["Open in TensorBoard"]
        self.tb_btn.setEnabled(tboard.installed())
        if not self.tb_btn.isEnabled():
            self.tb_btn.setToolTip("tensorboard is not installed in the training runtime: pip install tensorboard")
        bar.addStretch(1)
        bar.addWidget(label("Sort:", "muted"))
        self.sort_box = QComboBox()
        self.sort_box.addItems(list(SORTS))
        self.sort_box.setToolTip("Order of the runs: newest first, or the best validation loss or held-out score first")
        self.sort_box.currentIndexChanged.connect(self._sort)
        bar.addWidget(self.sort_box)
        self.status = label("", "muted")
        bar.addWidget(self.status)
        run_list.changed.connect(lambda: self.undo_btn.setEnabled(bool(registry.trashed())))

    def _sort(self) -> None:
        self.run_list.sort_by = SORTS.get(self.sort_box.currentText())
        self.run_list.reload()

    def rename(self) -> None:
        sel = self.run_list.selected
        if not sel:
            return
        current = registry.read_labels(sel[0].path)["name"]
        text, ok = QInputDialog.getText(self, "Rename run", f"Display name of {sel[0].id}:", text=current)
        if ok:
            registry.set_labels(sel[0].path, name=text)
            self.run_list.reload()

    def tag(self) -> None:
        sel = self.run_list.selected
        if not sel:
            return
        current = ", ".join(registry.read_labels(sel[0].path)["tags"])
        text, ok = QInputDialog.getText(self, "Tags", "Tags (comma-separated; empty removes them):", text=current)
        if ok:
            for s in sel:
                registry.replace_tags(s.path, [t.strip() for t in text.split(",") if t.strip()])
            self.run_list.reload()

    def note(self) -> None:
        sel = self.run_list.selected
        if not sel:
            return
        text, ok = QInputDialog.getMultiLineText(self, "Note", f"Note on {sel[0].id}:",
                                                 registry.read_labels(sel[0].path)["note"])
        if ok:
            registry.set_labels(sel[0].path, note=text)
            self.run_list.reload()

    def delete(self) -> None:
        moved = []
        for s in self.run_list.selected:
            try:
                registry.trash(s.path)
                moved.append(s.id)
            except (UserError, OSError) as e:
                self.status.setText(str(e))
        if moved:
            self.status.setText(f"Moved {', '.join(moved)} to the trash. Undo puts {'it' if len(moved) == 1 else 'them'} back.")
        self.run_list.reload()

    def undo_delete(self) -> None:
        try:
            self.status.setText(f"Restored {registry.restore().name}.")
        except (UserError, OSError) as e:
            self.status.setText(str(e))
        self.run_list.reload()

    def open_tensorboard(self) -> None:
        """TensorBoard on localhost over the selected runs' event files (every run's when none is selected)."""
        dirs = tboard.event_dirs([s.path for s in (self.run_list.selected or self.run_list.summaries)])
        if not dirs:
            self.status.setText("No TensorBoard event files in these runs (runs trained with tensorboard have them).")
            return
        if self.tensorboard is not None:
            self.tensorboard.kill()
            self.tensorboard.waitForFinished(2000)
        port = tboard.free_port()
        argv = tboard.argv(dirs, port)
        self.tensorboard = QProcess(self)  # ended with the window
        self.tensorboard.start(argv[0], argv[1:])
        url = QUrl(f"http://localhost:{port}/")
        QTimer.singleShot(4000, lambda: QDesktopServices.openUrl(url))
        self.status.setText(f"TensorBoard for {len(dirs)} run(s): {url.toString()}")
