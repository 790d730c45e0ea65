"""The Model page's card: the chosen model's fields, the Download panel and the token field.

``ModelCard.show`` takes the field texts ``studio.modelview`` computes; ``DownloadPanel`` runs
the download worker and turns its events into a bar and a line (``modelview.download_progress``);
``TokenField`` saves a Hugging Face token through ``lora-studio models login``.
"""
from __future__ import annotations

from typing import Callable

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QFormLayout, QHBoxLayout, QLabel, QLineEdit, QProgressBar, QPushButton, QVBoxLayout, QWidget

from studio import events as ev
from studio import modelview, procs
from ui.controllers import CommandController
from ui.widgets.common import Busy, Card, label

FIELDS = (("name", "Model"), ("arch", "Architecture"), ("params", "Parameters"), ("context", "Context length"),
          ("vocab", "Vocabulary"), ("template", "Chat template"), ("path", "Location"), ("fit", "Fits the budget"))


def _column(parent: QWidget) -> QVBoxLayout:
    lay = QVBoxLayout(parent)
    lay.setContentsMargins(0, 0, 0, 0)
    lay.setSpacing(8)  # the card's own spacing: the panel reads as part of it
    return lay


class DownloadPanel(QWidget):
    """Download (and Cancel) of one Hub repo into the HF cache, with progress; ``downloaded`` names the repo."""

    downloaded = Signal(str)

    def __init__(self, allow_pickle: Callable[[], bool], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.allow_pickle = allow_pickle
        self.repo_id: str | None = None  # offered by the card
        self.downloading: str | None = None
        self.downloader = CommandController(self, stop_grace_s=10, term_grace_s=5)
        self.downloader.sig_event.connect(self.show_event)
        self.downloader.sig_error.connect(lambda _k, message, hint: self._say(f"{message} {hint}".strip()))
        self.downloader.sig_finished.connect(self._finished)
        lay = _column(self)
        row = QHBoxLayout()
        self.download_btn = QPushButton("Download")
        self.download_btn.setObjectName("download")
        self.download_btn.setToolTip("Download the weights, config and tokenizer into your Hugging Face cache "
                                     "(resumable: a stopped download continues where it stopped).")
        self.download_btn.clicked.connect(self.download)
        self.download_btn.hide()
        row.addWidget(self.download_btn)
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.clicked.connect(self.downloader.stop)
        self.cancel_btn.hide()
        row.addWidget(self.cancel_btn)
        row.addStretch(1)
        lay.addLayout(row)
        self.progress = QProgressBar()
        self.progress.setObjectName("download-progress")
        self.progress.setRange(0, 1000)
        self.progress.setTextVisible(False)
        self.progress.hide()
        lay.addWidget(self.progress)
        self.progress_text = label("", "muted")
        self.progress_text.hide()
        lay.addWidget(self.progress_text)

    def offer(self, repo_id: str | None) -> None:
        """Show Download for a Hub repo not in the cache yet (kept as it is while a download runs)."""
        if self.downloader.running:
            return
        self.repo_id = repo_id
        self.download_btn.setVisible(repo_id is not None and not modelview.is_cached(repo_id))
        if repo_id is not None:
            self.download_btn.setText(f"Download {repo_id}")

    def download(self) -> None:
        if not self.repo_id or self.downloader.running:
            return
        self.downloading = self.repo_id
        self.download_btn.setEnabled(False)
        self.cancel_btn.show()
        self.progress.setValue(0)
        self.progress.show()
        self._say(f"Starting the download of {self.repo_id}…")
        pickle = ["--allow-pickle"] if self.allow_pickle() else []  # the recipe's choice
        # The download worker speaks the protocol itself (the one worker allowed online).
        self.downloader.run_argv(procs.worker_argv("workers.download", self.repo_id, *pickle))

    def show_event(self, event: ev.Event) -> None:
        shown = modelview.download_progress(event)
        if shown is None:
            return
        fraction, text = shown
        if fraction is not None:
            self.progress.setValue(int(1000 * fraction))
        self.progress_text.setText(text)

    def _say(self, text: str) -> None:
        self.progress_text.setText(text)
        self.progress_text.show()

    def _finished(self, code: int, saw_done: bool) -> None:
        self.download_btn.setEnabled(True)
        self.cancel_btn.hide()
        if not (code == 0 and saw_done):
            self.progress.hide()
            if not saw_done and not self.downloader.saw_error:
                self.progress_text.setText(f"The download stopped (exit code {code}); download again to continue.")
            return
        if self.downloading and modelview.is_cached(self.downloading):
            self.download_btn.hide()
        self.downloaded.emit(self.downloading or "")


class TokenField(QWidget):
    """A password field and Save: the token goes to ``lora-studio models login`` in the environment."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        lay = _column(self)
        row = QHBoxLayout()
        self.token = QLineEdit()
        self.token.setObjectName("hf-token")
        self.token.setEchoMode(QLineEdit.EchoMode.Password)
        self.token.setPlaceholderText("Hugging Face token, for gated and private models")
        self.token.returnPressed.connect(self.save)
        row.addWidget(self.token, 1)
        save = QPushButton("Save token")
        save.setToolTip("Checked with the Hub and stored in huggingface_hub's own token file (other tools use it "
                        "too). Create a 'Read' token at huggingface.co/settings/tokens.")
        save.clicked.connect(self.save)
        row.addWidget(save)
        lay.addLayout(row)
        self.status = label("", "muted", wrap=True)
        lay.addWidget(self.status)
        self.login = CommandController(self)
        self.login.sig_done.connect(lambda d: self.status.setText(
            f"Token saved for {d.get('account') or 'your account'}."))
        self.login.sig_error.connect(lambda _k, message, hint: self.status.setText(f"{message} {hint}".strip()))

    def save(self) -> None:
        token = self.token.text().strip()
        if self.login.running:
            return
        if not token:
            self.status.setText("Paste a token from huggingface.co/settings/tokens first.")
            return
        self.token.clear()
        self.status.setText("Checking the token with the Hub…")
        env = procs.worker_env()
        env["HF_TOKEN"] = token  # the environment, not the command line, which other users can read
        self.login.start(procs.worker_argv("studio.cli", "models", "login", "--events"), env=env)


class ModelCard(Card):
    """'Selected model': the fields, Download, a busy bar and status line, the token field."""

    def __init__(self, allow_pickle: Callable[[], bool], parent: QWidget | None = None) -> None:
        super().__init__("Selected model", parent)
        form = QFormLayout()
        form.setLabelAlignment(Qt.AlignmentFlag.AlignRight)
        self.fields: dict[str, QLabel] = {}
        for key, text in FIELDS:
            self.fields[key] = label("–", "value", wrap=True)
            form.addRow(text + ":", self.fields[key])
        self.body.addLayout(form)
        self.download = DownloadPanel(allow_pickle)
        self.body.addWidget(self.download)
        self.busy = Busy()
        self.body.addWidget(self.busy)
        self.status = label("", "muted", wrap=True)
        self.body.addWidget(self.status)
        self.body.addStretch(1)
        self.token = TokenField()
        self.body.addWidget(self.token)

    def show_fields(self, fields: dict[str, str]) -> None:
        for key, text in fields.items():
            self.fields[key].setText(text)

    def show_fit(self, text: str, fits: bool | None) -> None:
        self.fields["fit"].setText(text)
        self.fields["fit"].setStyleSheet(modelview.fit_colour(fits))
