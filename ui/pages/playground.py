"""Playground: chat with a run's fine-tuned model, or answer each prompt side by side with two variants.

The page renders what a ``ChatController`` (workers/chat.py) streams; the worker keeps the base
model warm and attaches adapters on demand, so switching variants costs no reload. In
side-by-side mode the same prompt goes to A, then to B (one worker answers one prompt at a time),
each pane streaming as its answer arrives. Conversations and "A better / B better / tie" marks
are kept in the run folder (studio.playground).
"""
from __future__ import annotations

import itertools
from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtGui import QTextCursor
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QGridLayout, QHBoxLayout, QLineEdit,
                               QPlainTextEdit, QPushButton, QSpinBox, QVBoxLayout, QWidget)

from studio import chat, playground, runs
from ui.controllers import ChatController
from ui.session import Session
from ui.widgets.common import Banner, Card, Page, label, primary_button


class Pane(QWidget):
    """One side of the conversation: its variant, the streamed transcript, and the last answer's speed."""

    def __init__(self, title: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        head = QHBoxLayout()
        head.addWidget(label(title))
        self.variant = QComboBox()
        self.variant.setToolTip("What answers in this pane: the base model, the run's adapter, a checkpoint, "
                                "or another run on the same base")
        head.addWidget(self.variant, 1)
        lay.addLayout(head)
        self.text = QPlainTextEdit()
        self.text.setReadOnly(True)
        lay.addWidget(self.text, 1)
        self.stats = label("", "muted")
        lay.addWidget(self.stats)
        self.history: list[dict] = []
        self.partial = ""

    def current(self) -> chat.Variant | None:
        return self.variant.currentData()

    def begin_answer(self, prompt: str) -> None:
        self.history.append({"role": "user", "content": prompt})
        self.partial = ""
        self._append(("\n\n" if self.text.toPlainText() else "") + f"You: {prompt}\n\nModel: ")

    def add_text(self, piece: str) -> None:
        self.partial += piece
        self._append(piece)

    def end_answer(self, d: dict) -> None:
        text = str(d.get("text", self.partial))
        self.history.append({"role": "assistant", "content": text})
        ttft, tps = d.get("time_to_first_token_s"), d.get("tokens_per_s")
        stopped = " · stopped" if d.get("stopped") else ""
        self.stats.setText(f"{d.get('tokens', 0)} tokens · first token {ttft if ttft is not None else '–'} s · "
                           f"{tps if tps is not None else '–'} tokens/s{stopped}")

    def clear(self) -> None:
        self.history = []
        self.partial = ""
        self.text.clear()
        self.stats.setText("")

    def _append(self, text: str) -> None:
        cursor = self.text.textCursor()
        cursor.movePosition(QTextCursor.MoveOperation.End)
        cursor.insertText(text)
        self.text.setTextCursor(cursor)
        self.text.ensureCursorVisible()


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
        self._ids = itertools.count(1)
        self._queue: list[tuple[Pane, str]] = []   # (pane, prompt) still to answer
        self._current: tuple[str, Pane] | None = None
        self._last_prompt = ""
        self._answered: dict[int, str] = {}
        self._hello: dict = {}
        self._build()
        self._wire()

    # -- layout -------------------------------------------------------------------------------------
    def _build(self) -> None:
        top = QHBoxLayout()
        top.addWidget(label("Run or model:"))
        self.source = QComboBox()
        self.source.setMinimumWidth(320)
        self.source.setToolTip("A run (its base model, adapter and checkpoints), or a base model on its own")
        top.addWidget(self.source, 1)
        self.side = QCheckBox("Side by side")
        self.side.setChecked(True)
        self.side.setToolTip("Answer every prompt with two variants, A and B, in two panes")
        top.addWidget(self.side)
        self.reload_btn = QPushButton("Refresh")
        self.reload_btn.setToolTip("List the runs again")
        top.addWidget(self.reload_btn)
        self.content.addLayout(top)

        settings = Card()
        grid = QGridLayout()
        settings.body.addLayout(grid)
        self.system = QLineEdit()
        self.system.setPlaceholderText("System prompt (optional)")
        self.temperature = QDoubleSpinBox()
        self.temperature.setRange(0.0, 5.0)
        self.temperature.setSingleStep(0.1)
        self.temperature.setToolTip("0 = greedy (the same answer every time)")
        self.top_p = QDoubleSpinBox()
        self.top_p.setRange(0.01, 1.0)
        self.top_p.setSingleStep(0.05)
        self.top_p.setValue(1.0)
        self.max_new = QSpinBox()
        self.max_new.setRange(1, 32768)
        self.max_new.setValue(256)
        self.rep_penalty = QDoubleSpinBox()
        self.rep_penalty.setRange(0.5, 3.0)
        self.rep_penalty.setSingleStep(0.05)
        self.rep_penalty.setValue(1.0)
        self.seed = QSpinBox()
        self.seed.setRange(-1, 2 ** 31 - 1)
        self.seed.setValue(-1)
        self.seed.setSpecialValueText("none")
        grid.addWidget(self.system, 0, 0, 1, 10)
        for col, (text, w) in enumerate((("Temperature", self.temperature), ("Top-p", self.top_p),
                                         ("Max new tokens", self.max_new), ("Repetition penalty", self.rep_penalty),
                                         ("Seed", self.seed))):
            grid.addWidget(label(text), 1, col * 2)
            grid.addWidget(w, 1, col * 2 + 1)
        self.content.addWidget(settings)

        self.banner = Banner()
        self.banner.hide()
        self.content.addWidget(self.banner)
        panes = QHBoxLayout()
        self.pane_a, self.pane_b = Pane("A"), Pane("B")
        panes.addWidget(self.pane_a, 1)
        panes.addWidget(self.pane_b, 1)
        self.content.addLayout(panes, 1)

        votes = QHBoxLayout()
        self.vote_a = QPushButton("A better")
        self.vote_b = QPushButton("B better")
        self.vote_tie = QPushButton("Tie")
        for b in (self.vote_a, self.vote_b, self.vote_tie):
            b.setEnabled(False)
            b.setToolTip("Mark the last side-by-side answer; the marks are kept in the run folder and tallied "
                         "on the Runs page")
            votes.addWidget(b)
        self.vote_label = label("", "muted")
        votes.addWidget(self.vote_label, 1)
        self.save_btn = QPushButton("Save conversation")
        self.save_btn.setToolTip("Write this conversation (both panes, settings, timings) into the run folder")
        votes.addWidget(self.save_btn)
        self.new_btn = QPushButton("New chat")
        votes.addWidget(self.new_btn)
        self.content.addLayout(votes)

        ask = QHBoxLayout()
        self.prompt = QLineEdit()
        self.prompt.setPlaceholderText("Ask something and press Enter")
        ask.addWidget(self.prompt, 1)
        self.send_btn = primary_button("Send")
        self.stop_btn = QPushButton("Stop")
        self.stop_btn.setEnabled(False)
        self.stop_btn.setToolTip("End the answer now (the model stays loaded)")
        ask.addWidget(self.send_btn)
        ask.addWidget(self.stop_btn)
        self.content.addLayout(ask)
        self.status = label("Pick a run to chat with its fine-tuned model.", "muted", wrap=True)
        self.content.addWidget(self.status)

    def _wire(self) -> None:
        self.reload_btn.clicked.connect(self.reload)
        self.source.currentIndexChanged.connect(lambda _i: self._source_changed())
        self.side.toggled.connect(self.pane_b.setVisible)
        self.send_btn.clicked.connect(self.send)
        self.prompt.returnPressed.connect(self.send)
        self.stop_btn.clicked.connect(self.stop)
        self.new_btn.clicked.connect(self.new_chat)
        self.save_btn.clicked.connect(self.save_conversation)
        self.vote_a.clicked.connect(lambda: self.vote("a"))
        self.vote_b.clicked.connect(lambda: self.vote("b"))
        self.vote_tie.clicked.connect(lambda: self.vote("tie"))
        self._wire_controller()

    # -- choosing what answers ------------------------------------------------------------------------
    def on_enter(self) -> None:
        if self.source.count() == 0:
            self.reload()

    def reload(self) -> None:
        keep = self.source.currentData()
        self.source.blockSignals(True)
        self.source.clear()
        for s in runs.list_runs():
            has = (s.path / runs.ADAPTER / "adapter_config.json").is_file() or (s.path / runs.CHECKPOINTS).is_dir()
            if has and s.status != "running":
                self.source.addItem(f"{s.id}  ({Path(s.model).name if '/' in s.model else s.model})", ("run", s.path))
        model = str(self.session.recipe.model.name_or_path or "demo")
        self.source.addItem(f"{model}  (base model only)", ("model", model))
        idx = max(0, self.source.findData(keep)) if keep is not None else 0
        self.source.setCurrentIndex(idx)
        self.source.blockSignals(False)
        if keep is None or self.source.currentData() != keep or self.pane_a.variant.count() == 0:
            self._source_changed()  # the same choice keeps its conversation and its loaded model

    def select_run(self, run_dir: Path) -> None:
        self.reload()
        idx = self.source.findData(("run", Path(run_dir)))
        if idx >= 0:
            self.source.setCurrentIndex(idx)

    def _source_changed(self) -> None:
        data = self.source.currentData()
        for pane in (self.pane_a, self.pane_b):
            pane.variant.blockSignals(True)
            pane.variant.clear()
        if not data:
            return
        kind, value = data
        if kind == "run":
            self.run_dir = Path(value)
            variants = chat.run_variants(self.run_dir)
        else:
            self.run_dir = None
            variants = [chat.Variant(chat.BASE, None, str(value), None)]
        for pane in (self.pane_a, self.pane_b):
            for v in variants:
                pane.variant.addItem(v.label if v.adapter is not None else "base model", v)
            pane.variant.blockSignals(False)
        # Base vs fine-tuned by default: A = the base, B = the run's adapter (or its newest checkpoint).
        self.pane_a.variant.setCurrentIndex(0)
        self.pane_b.variant.setCurrentIndex(1 if len(variants) > 1 else 0)
        if len(variants) == 1:
            self.side.setChecked(False)
        self.new_chat()
        self._update_votes()  # the model loads on the first prompt (a page visit starts nothing)

    def _worker_key(self) -> tuple:
        data = self.source.currentData()
        return (data[0], str(data[1])) if data else ()

    def _ensure_worker(self) -> None:
        """Start (or restart for another base model) the worker with the chosen variants attached."""
        key = self._worker_key()
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
        self.controller.start_chat(chat.worker_args(wanted or [chat.Variant(chat.BASE, None, key[1], None)]))

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
        c.sig_error.connect(lambda kind, msg, hint: self._show_error(msg, hint))
        c.sig_finished.connect(self._on_finished)

    # -- asking -----------------------------------------------------------------------------------------
    def settings(self) -> dict:
        return {"system": self.system.text(), "temperature": self.temperature.value(), "top_p": self.top_p.value(),
                "max_new_tokens": self.max_new.value(), "repetition_penalty": self.rep_penalty.value(),
                "seed": None if self.seed.value() < 0 else self.seed.value()}

    def panes(self) -> list[Pane]:
        return [self.pane_a, self.pane_b] if self.side.isChecked() else [self.pane_a]

    def send(self, text: str | None = None) -> bool:
        prompt = (text if isinstance(text, str) else self.prompt.text()).strip()
        if not prompt or self._current is not None or self._queue:
            return False
        self._ensure_worker()
        self.banner.hide()
        self.prompt.clear()
        self._last_prompt = prompt
        self._answered = {}
        for b in (self.vote_a, self.vote_b, self.vote_tie):
            b.setEnabled(False)
        self._queue = [(p, prompt) for p in self.panes()]
        self._set_busy(True)
        if self.controller.running and "device" in self._hello:
            self._next()
        return True

    def _next(self) -> None:
        if not self._queue:
            self._current = None
            self._set_busy(False)
            self._update_votes()
            return
        pane, prompt = self._queue.pop(0)
        v = pane.current()
        if v is None:
            self._next()
            return
        if v.adapter is not None and v.name not in self.attached:
            self.controller.attach_adapter(v.name, v.adapter)  # answered in order: the worker attaches first
            self.attached.add(v.name)
        gid = f"p{next(self._ids)}"
        self._current = (gid, pane)
        pane.begin_answer(prompt)
        self.controller.generate(gid, v.name, list(pane.history), self.settings())

    def stop(self) -> None:
        self._queue = []
        self.controller.stop()

    def new_chat(self) -> None:
        for pane in (self.pane_a, self.pane_b):
            pane.clear()
        self._answered = {}
        for b in (self.vote_a, self.vote_b, self.vote_tie):
            b.setEnabled(False)

    # -- worker events ------------------------------------------------------------------------------------
    def _on_hello(self, d: dict) -> None:
        self._hello = d
        self.status.setText(f"Loaded on {d.get('device')} ({'4-bit' if d.get('quant') == '4bit' else d.get('quant')}"
                            f" weights). Ask something.")
        if self._queue:
            self._next()
        else:
            self._set_busy(False)

    def _on_token(self, gid: str, _variant: str, text: str) -> None:
        if self._current and self._current[0] == gid:
            self._current[1].add_text(text)

    def _on_answer(self, d: dict) -> None:
        if not self._current or self._current[0] != d.get("id"):
            return
        pane = self._current[1]
        pane.end_answer(d)
        self._answered[id(pane)] = str(d.get("text", ""))
        self._next()

    def _on_failed(self, gid: str, message: str) -> None:
        self._show_error(message, "")
        if self._current and self._current[0] == gid:
            self._current[1].history.pop()  # the prompt that got no answer
            self._queue = []
            self._current = None
            self._set_busy(False)

    def _on_finished(self, code: int, _saw_done: bool) -> None:
        self.loaded_key = None
        self._hello = {}
        self._queue = []
        self._current = None
        self._set_busy(False)
        if code not in (0, -9, -15):
            self.status.setText("The chat worker ended; sending a prompt starts it again.")

    def _show_error(self, message: str, hint: str) -> None:
        self.banner.show_message(message, hint)

    def _set_busy(self, busy: bool) -> None:
        self.send_btn.setEnabled(not busy)
        self.stop_btn.setEnabled(busy and self._current is not None or bool(self._queue))
        self.source.setEnabled(not busy)

    # -- keeping results ----------------------------------------------------------------------------------
    def _update_votes(self) -> None:
        both = self.side.isChecked() and len(self._answered) == 2 and self.run_dir is not None
        for b in (self.vote_a, self.vote_b, self.vote_tie):
            b.setEnabled(both)
        self.vote_label.setText(playground.tally_text(playground.tally(self.run_dir)) if self.run_dir else "")
        self.save_btn.setEnabled(self.run_dir is not None)

    def vote(self, winner: str) -> dict | None:
        if self.run_dir is None or len(self._answered) != 2:
            return None
        a, b = self.pane_a.current(), self.pane_b.current()
        rec = playground.add_vote(self.run_dir, winner, a.label if a else "", b.label if b else "", self._last_prompt,
                                  {"a": self._answered.get(id(self.pane_a), ""),
                                   "b": self._answered.get(id(self.pane_b), "")})
        self._answered = {}
        self._update_votes()
        self.sig_voted.emit(self.run_dir)
        return rec

    def save_conversation(self) -> Path | None:
        if self.run_dir is None:
            return None
        panes = {}
        for key, pane in (("a", self.pane_a), ("b", self.pane_b)):
            v = pane.current()
            if pane in self.panes() and pane.history:
                panes[key] = {"variant": v.label if v else "", "adapter": str(v.adapter) if v and v.adapter else None,
                              "messages": pane.history}
        path = playground.save_conversation(self.run_dir, {"settings": self.settings(), "panes": panes})
        self.status.setText(f"Saved to {path}")
        return path

    def shutdown(self) -> None:
        self.controller.shutdown()
