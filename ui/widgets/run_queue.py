"""The Runs page's queue: the entries of RUNS/queue.json, Run queue (a detached runner) and Cancel entry.

Reads ``studio.runqueue`` every three seconds while shown; ``message`` carries what to tell the user.
The list owns its two buttons; the page lays them out in its own row above it.
"""
from __future__ import annotations

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import QListWidget, QListWidgetItem, QPushButton, QWidget

from studio import paths, runqueue
from studio.errors import UserError
from ui.controllers import CommandController

ENTRY_ID = Qt.ItemDataRole.UserRole


class QueueList(QListWidget):
    message = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setToolTip("RUNS/queue.json: add recipes from the Plan page (Add to queue, Sweep…) or "
                        "with lora-studio queue add / sweep")
        self.run_btn = QPushButton("Run queue")
        self.run_btn.setToolTip("Train the waiting recipes one after another in a background process that "
                                "keeps going when this window closes (lora-studio queue run --detach)")
        self.run_btn.clicked.connect(self.run_queue)
        self.cancel_btn = QPushButton("Cancel entry")
        self.cancel_btn.setToolTip("Take the selected waiting entry off the queue")
        self.cancel_btn.clicked.connect(self.cancel_entry)
        self.timer = QTimer(self)
        self.timer.setInterval(3000)
        self.timer.timeout.connect(self.reload)
        self.runner = CommandController(self)
        self.runner.sig_done.connect(lambda d: self.message.emit(str(d.get("message", ""))))
        self.runner.sig_finished.connect(lambda *_: self.reload())

    def reload(self) -> None:
        if not self.isVisible() and self.timer.isActive():
            self.timer.stop()
        entries = runqueue.read()
        pid = runqueue.runner_pid() if entries else None
        self.clear()
        for e in entries:
            item = QListWidgetItem(f"{e['status']:<9} {e['label']}  ({e['id']})")
            item.setData(ENTRY_ID, e["id"])
            self.addItem(item)
        if not entries:
            self.addItem("(empty)")
        self.run_btn.setEnabled(not pid and any(e["status"] == runqueue.WAITING for e in entries))
        self.run_btn.setText(f"Runner pid {pid}" if pid else "Run queue")

    def run_queue(self) -> None:
        """A detached queue runner (it keeps going after the window closes)."""
        self.runner.run_command("queue", "run", "--detach", "--runs-dir", str(paths.runs_dir()))

    def cancel_entry(self) -> None:
        item = self.currentItem()
        if item is None or not item.data(ENTRY_ID):
            return
        try:
            runqueue.cancel(str(item.data(ENTRY_ID)))
        except UserError as e:
            self.message.emit(str(e))
        self.reload()
