"""Playground: chat with a run's fine-tuned model, or answer each prompt side by side with two variants.

The page renders what a ``ChatController`` (workers/chat.py) streams; the worker keeps the base
model warm and attaches adapters on demand, so switching variants costs no reload. In
side-by-side mode the same prompt goes to A, then to B (one worker answers one prompt at a time),
each pane streaming as its answer arrives. Conversations and "A better / B better / tie" marks
are kept in the run folder (studio.playground, which also says what can answer and keeps the round of
answers). The bars, panes and sampling settings are widgets of ``ui.widgets.chat_pane``.

Images: on a vision-language model (its base folder has a ``vision_config`` and a processor, or the run's adapter
was trained on image rows) the prompt bar takes images (Image…, or files dropped on the page or the prompt); each
is read before it is attached and again before sending, and the same images go with the prompt to both panes
(``images`` and one ``<image>`` marker each in the user's turn). The worker then loads the whole model
(``--vision``). A text model's Image… button is off and a dropped image is refused with a banner.
"""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QEvent, QObject, Signal
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QFileDialog, QWidget

from studio import chat_client, playground
from studio.errors import UserError
from ui.controllers import ChatController
from ui.session import Session
from ui.widgets.chat_pane import AskBar, Pane, PanePair, SamplingCard, SourceBar, VoteBar
from ui.widgets.common import Banner, Page, label


class PlaygroundPage(Page):
    title = "Playground"
    subtitle = ("Chat with a fine-tuned model. Side by side answers each prompt with two variants (base vs "
                "fine-tuned by default); mark which answer is better.")
    icon_name = "playground"
    sig_voted = Signal(object)  # run dir

    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.controller = ChatController(self)
        self.run_dir: Path | None = None
        self.loaded_key: tuple | None = None
        self.attached: set[str] = set()
        self.round = playground.Round()
        self._hello: dict = {}
        self.reads_images = False  # the chosen variants load the whole vision-language model (images allowed)
        self._build()
        self._wire()
        self.setAcceptDrops(True)
        self.ask.prompt.installEventFilter(self)  # a QLineEdit would take a dropped file as its text

    # -- layout -------------------------------------------------------------------------------------
    def _build(self) -> None:
        self.bar, self.sampling, self.votes, self.ask = SourceBar(), SamplingCard(), VoteBar(), AskBar()
        self.source, self.side = self.bar.source, self.bar.side
        self.banner = Banner()
        self.banner.hide()
        self.pair = PanePair()
        self.pane_a, self.pane_b = self.pair.a, self.pair.b
        self.status = label("Pick a run to chat with its fine-tuned model.", "muted", wrap=True)
        for w in (self.bar, self.sampling, self.banner):
            self.content.addWidget(w)
        self.content.addWidget(self.pair, 1)
        for w in (self.votes, self.ask, self.status):
            self.content.addWidget(w)

    def _wire(self) -> None:
        self.bar.reload_btn.clicked.connect(self.reload)
        self.source.currentIndexChanged.connect(lambda _i: self._source_changed())
        self.side.toggled.connect(self.pane_b.setVisible)
        self.ask.send_btn.clicked.connect(self.send)
        self.ask.prompt.returnPressed.connect(self.send)
        self.ask.stop_btn.clicked.connect(self.stop)
        self.ask.image_btn.clicked.connect(self.choose_images)
        for pane in (self.pane_a, self.pane_b):
            pane.variant.currentIndexChanged.connect(lambda _i: self._update_images())
        self.votes.new_btn.clicked.connect(self.new_chat)
        self.votes.save_btn.clicked.connect(self.save_conversation)
        self.votes.sig_vote.connect(self.vote)
        self._wire_controller()

    # -- choosing what answers ------------------------------------------------------------------------
    def on_enter(self) -> None:
        if self.source.count() == 0:
            self.reload()

    def reload(self) -> None:
        changed = self.bar.fill(playground.sources(str(self.session.recipe.model.name_or_path or "demo")))
        if changed or self.pane_a.variant.count() == 0:
            self._source_changed()  # the same choice keeps its conversation and its loaded model

    def select_run(self, run_dir: Path) -> None:
        self.reload()
        self.bar.select(("run", Path(run_dir)))

    def _source_changed(self) -> None:
        data = self.source.currentData()
        variants = playground.variants(*data) if data else []
        self.pair.show_variants(variants)
        if not data:
            return
        self.run_dir = Path(data[1]) if data[0] == "run" else None
        if len(variants) == 1:
            self.side.setChecked(False)
        self._update_images()
        self.new_chat()
        self._update_votes()  # the model loads on the first prompt (a page visit starts nothing)

    def _ensure_worker(self) -> None:
        """Start (or restart for another base model) the worker with the chosen variants attached."""
        data = self.source.currentData()
        key = (data[0], str(data[1]), self.reads_images) if data else ()
        if not key:
            return
        if key == self.loaded_key and self.controller.running:
            return
        if self.controller.running:
            self._retire(self.controller)
            self.controller = ChatController(self)
            self._wire_controller()
        self.loaded_key = key
        wanted = [v for v in (self.pane_a.current(), self.pane_b.current()) if v is not None]
        self.attached = {v.name for v in wanted if v.adapter is not None}
        self.status.setText("Loading the model (once; it stays loaded while you chat)…")
        self._set_busy(True)
        self.controller.start_chat(chat_client.worker_args(
            wanted or [chat_client.Variant(chat_client.BASE, None, key[1], None)], vision=self.reads_images))

    @staticmethod
    def _retire(c: ChatController) -> None:
        """A worker for another base model: silence it and end it (it is reaped in the background)."""
        for sig in (c.sig_hello, c.sig_token, c.sig_answer, c.sig_failed, c.sig_error, c.sig_finished):
            try:
                sig.disconnect()
            except (RuntimeError, TypeError):
                pass
        c.kill_now()

    def _wire_controller(self) -> None:
        c = self.controller
        c.sig_hello.connect(self._on_hello)
        c.sig_token.connect(self._on_token)
        c.sig_answer.connect(self._on_answer)
        c.sig_failed.connect(self._on_failed)
        c.sig_error.connect(lambda _kind, msg, hint: self.banner.show_message(msg, hint))
        c.sig_finished.connect(self._on_finished)

    # -- asking -----------------------------------------------------------------------------------------
    def panes(self) -> list[Pane]:
        return [self.pane_a, self.pane_b] if self.side.isChecked() else [self.pane_a]

    def send(self, text: str | None = None) -> bool:
        prompt = (text if isinstance(text, str) else self.ask.prompt.text()).strip()
        if not prompt or self.round.busy:
            return False
        images = self.ask.images()
        if images:
            try:  # each one read again: a file moved or damaged since it was attached is named, nothing sent
                images = chat_client.checked_images(images)
            except UserError as e:
                self.banner.show_message(f"The image cannot be sent: {e}", "attach it again, or remove it "
                                         "(\u00d7 on its thumbnail) to send the prompt alone")
                return False
        self._ensure_worker()
        self.banner.hide()
        self.ask.prompt.clear()
        self.ask.clear_images()
        self.votes.allow(False)
        self.round.ask(prompt, ["a", "b"] if self.side.isChecked() else ["a"], images)
        self._set_busy(True)
        if self.controller.running and "device" in self._hello:
            self._next()
        return True

    def _next(self) -> None:
        taken = self.round.take()
        if taken is None:
            self._set_busy(False)
            self._update_votes()
            return
        gid, pane = taken[0], self.pair.pane(taken[1])
        v = pane.current()
        if v is None:
            self._next()
            return
        if v.adapter is not None and v.name not in self.attached:
            self.controller.attach_adapter(v.name, v.adapter)  # answered in order: the worker attaches first
            self.attached.add(v.name)
        pane.begin_answer(self.round.prompt, self.round.images)
        self.controller.generate(gid, v.name, list(pane.history), self.sampling.settings())

    def stop(self) -> None:
        self.round.waiting = []
        self.controller.stop()

    # -- images ---------------------------------------------------------------------------------------------
    def _chosen(self) -> list[chat_client.Variant]:
        return [v for v in (self.pane_a.current(), self.pane_b.current()) if v is not None]

    def _update_images(self) -> None:
        """Images allowed when the chosen variants load the whole vision-language model (read without torch)."""
        data = self.source.currentData()
        self.reads_images = bool(data) and playground.takes_images(data[0], data[1], self._chosen())
        self.ask.allow_images(self.reads_images, self._text_only())

    def _text_only(self) -> str:
        data = self.source.currentData()
        model = chat_client.run_model(Path(data[1])) if data and data[0] == "run" else str(data[1] if data else "")
        return playground.text_only_message(model or "this model")

    def choose_images(self) -> list[str]:
        paths, _ = QFileDialog.getOpenFileNames(self, "Attach images", "", playground.IMAGE_FILTER)
        return self.attach_images(paths) if paths else []

    def attach_images(self, paths: list[str]) -> list[str]:
        """Attach the image files ``paths`` above the prompt, each read first; what cannot be attached (a text
        model, a file that is not an image, one that cannot be read) is named in the banner. Returns the
        attached paths."""
        if not paths:
            return []
        if not self.reads_images:
            self.banner.show_message("Images were not attached: " + self._text_only(), "")
            return []
        images, others = playground.image_files(paths)
        done, refused = [], [f"{Path(p).name}: not an image file ({', '.join(playground.IMAGE_SUFFIXES)})"
                             for p in others]
        for path in images:
            try:
                done += chat_client.checked_images([path])
            except UserError as e:
                refused.append(str(e))
        for path in done:
            self.ask.attach(path)
        if refused:
            self.banner.show_message("Not attached: " + "; ".join(refused), "pick another image file")
        elif done:
            self.banner.hide()
        return done

    @staticmethod
    def _dropped(event: QDropEvent | QDragEnterEvent) -> list[str]:
        mime = event.mimeData()
        return [u.toLocalFile() for u in mime.urls() if u.isLocalFile()] if mime.hasUrls() else []

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802 - Qt's name
        if self._dropped(event):
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802 - Qt's name
        paths = self._dropped(event)
        if paths:
            event.acceptProposedAction()
            self.attach_images(paths)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt's name
        """Files dropped on the prompt line are attached, not typed into it."""
        if watched is self.ask.prompt and event.type() in (QEvent.Type.DragEnter, QEvent.Type.DragMove,
                                                           QEvent.Type.Drop):
            drop = event if isinstance(event, (QDragEnterEvent, QDropEvent)) else None
            if drop is not None and self._dropped(drop):
                drop.acceptProposedAction()
                if event.type() == QEvent.Type.Drop:
                    self.attach_images(self._dropped(drop))
                return True
        return super().eventFilter(watched, event)

    def new_chat(self) -> None:
        self.pair.clear()
        self.round.answers = {}
        self.votes.allow(False)

    # -- worker events ------------------------------------------------------------------------------------
    def _on_hello(self, d: dict) -> None:
        self._hello = d
        self.status.setText(playground.loaded_text(d))
        if self.round.waiting:
            self._next()
        else:
            self._set_busy(False)

    def _on_token(self, gid: str, _variant: str, text: str) -> None:
        pane = self.pair.pane(self.round.pane_of(gid))
        if pane is not None:
            pane.add_text(text)

    def _on_answer(self, d: dict) -> None:
        pane = self.pair.pane(self.round.pane_of(d.get("id")))
        if pane is not None:
            pane.end_answer(d)
            self.round.answered(str(d.get("text", "")))
            self._next()

    def _on_failed(self, gid: str, message: str) -> None:
        self.banner.show_message(message, "")
        pane = self.pair.pane(self.round.pane_of(gid))
        if pane is not None:
            pane.history.pop()  # the prompt that got no answer
            self.round.end()
            self._set_busy(False)

    def _on_finished(self, code: int, _saw_done: bool) -> None:
        self.loaded_key = None
        self._hello = {}
        self.round.end()
        self._set_busy(False)
        if code not in (0, -9, -15):
            self.status.setText("The chat worker ended; sending a prompt starts it again.")

    def _set_busy(self, busy: bool) -> None:
        self.ask.send_btn.setEnabled(not busy)
        self.ask.stop_btn.setEnabled(busy and self.round.current is not None or bool(self.round.waiting))
        self.source.setEnabled(not busy)

    # -- keeping results ----------------------------------------------------------------------------------
    def _update_votes(self) -> None:
        both = self.side.isChecked() and self.round.complete and self.run_dir is not None
        self.votes.allow(both)
        self.votes.tally.setText(playground.tally_text(playground.tally(self.run_dir)) if self.run_dir else "")
        self.votes.save_btn.setEnabled(self.run_dir is not None)

    def vote(self, winner: str) -> dict | None:
        if self.run_dir is None or not self.round.complete:
            return None
        a, b = self.pane_a.current(), self.pane_b.current()
        rec = playground.add_vote(self.run_dir, winner, a.label if a else "", b.label if b else "", self.round.prompt,
                                  {"a": self.round.answers.get("a", ""), "b": self.round.answers.get("b", "")},
                                  self.round.images)
        self.round.answers = {}
        self._update_votes()
        self.sig_voted.emit(self.run_dir)
        return rec

    def save_conversation(self) -> Path | None:
        if self.run_dir is None:
            return None
        panes = {key: playground.pane_record(p.current(), p.history)
                 for key, p in (("a", self.pane_a), ("b", self.pane_b)) if p in self.panes() and p.history}
        path = playground.save_conversation(self.run_dir, {"settings": self.sampling.settings(), "panes": panes})
        self.status.setText(f"Saved to {path}")
        return path

    def shutdown(self) -> None:
        self.controller.shutdown()
