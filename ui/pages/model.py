"""Model: the demo model, the catalog, models in the Hugging Face cache and local folders.

Choosing one resolves it with ``studio.models.resolve`` (config.json only) and shows its shape
and whether it fits the current budget. The demo model is converted from its GGUF by a
``lora-studio demo-model`` subprocess the first time (conversion needs torch, the window does not).
"""
from __future__ import annotations

import os
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QFileDialog, QFormLayout, QHBoxLayout, QLabel, QListWidget, QListWidgetItem,
                               QPushButton, QVBoxLayout, QWidget)

from studio import models
from studio.demo import demo_model_dir, is_converted
from studio.models import ModelInfo
from ui.controllers import CommandController
from ui.prefs import settings
from ui.session import Session
from ui.widgets.common import Busy, Card, Page, human_bytes, human_count, label

ROLE_ID = Qt.ItemDataRole.UserRole


def hf_cache_models() -> list[tuple[str, str]]:
    """(repo id, snapshot folder) of every model in the local Hugging Face hub cache."""
    root = Path(os.environ.get("HF_HUB_CACHE") or Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "hub")
    out = []
    try:
        entries = sorted(root.iterdir())
    except OSError:
        return out
    for repo in entries:
        if not repo.name.startswith("models--"):
            continue
        snaps = sorted((repo / "snapshots").glob("*/config.json"), key=lambda p: p.stat().st_mtime, reverse=True)
        if snaps:
            out.append((repo.name[len("models--"):].replace("--", "/"), str(snaps[0].parent)))
    return out


class ModelPage(Page):
    title = "Model"
    subtitle = "Pick the base model to fine-tune: the built-in demo, a catalog model, your Hugging Face cache or a folder."
    icon_name = "model"
    sig_busy = Signal(bool)

    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self._pending: str | None = None
        self.converter = CommandController(self, stop_grace_s=1, term_grace_s=2)
        self.converter.sig_finished.connect(self._conversion_finished)
        self.converter.sig_busy.connect(self.sig_busy)
        self.converter.sig_progress.connect(self._conversion_progress)
        self.prober = CommandController(self)
        self.prober.sig_done.connect(self._probed)
        self.prober.sig_error.connect(lambda _kind, message, _hint: self._probe_failed(message))
        self.prober.sig_finished.connect(self._probe_ended)
        self.prober.sig_busy.connect(self.sig_busy)
        self._build()
        session.sig_plan.connect(lambda _p: self._show_fit())
        session.sig_budget.connect(lambda _b: self._show_fit())

    def _build(self) -> None:
        row = QHBoxLayout()
        left = QVBoxLayout()
        self.list = QListWidget()
        self.list.setObjectName("models")
        self.list.setMinimumWidth(320)
        self.list.itemActivated.connect(self._activated)
        self.list.itemClicked.connect(self._activated)
        left.addWidget(self.list, 1)
        buttons = QHBoxLayout()
        self.add_btn = QPushButton("Add folder…")
        self.add_btn.setToolTip("Choose a local model folder (with config.json and safetensors weights). "
                                "You can also drop a folder on the window.")
        self.add_btn.clicked.connect(self._pick_folder)
        buttons.addWidget(self.add_btn)
        buttons.addStretch(1)
        left.addLayout(buttons)
        row.addLayout(left, 2)

        card = Card("Selected model")
        form = QFormLayout()
        form.setLabelAlignment(Qt.AlignmentFlag.AlignRight)
        self.fields: dict[str, QLabel] = {}
        for key, text in (("name", "Model"), ("arch", "Architecture"), ("params", "Parameters"),
                          ("context", "Context length"), ("vocab", "Vocabulary"), ("template", "Chat template"),
                          ("path", "Location"), ("fit", "Fits the budget")):
            self.fields[key] = label("–", "value", wrap=True)
            form.addRow(text + ":", self.fields[key])
        card.body.addLayout(form)
        self.busy = Busy()
        card.body.addWidget(self.busy)
        self.status = label("", "muted", wrap=True)
        card.body.addWidget(self.status)
        card.body.addStretch(1)
        row.addWidget(card, 3)
        self.content.addLayout(row, 1)

    # -- the list -----------------------------------------------------------------------------
    def populate(self) -> None:
        """Fill the list: demo, catalog, HF cache (cheap: config files only)."""
        self.list.clear()
        self._header("Built in")
        self._item("demo", "SmolLM2-135M-Instruct (demo)", "A 135M-parameter chat model shipped with the studio.")
        self._header("Catalog")
        for entry in models.catalog():
            self._item(entry.id, f"{entry.name}  ·  {human_count(entry.total_params)}", entry.hf_id)
        cached = hf_cache_models()
        if cached:
            self._header("Hugging Face cache")
            for repo_id, folder in cached:
                self._item(folder, repo_id, folder)
        recent = [p for p in (self._recent()) if Path(p).is_dir()]
        if recent:
            self._header("Local folders")
            for p in recent:
                self._item(p, Path(p).name, p)

    def _header(self, text: str) -> None:
        item = QListWidgetItem(text.upper())
        item.setFlags(Qt.ItemFlag.NoItemFlags)
        f = item.font()
        f.setBold(True)
        f.setPointSizeF(f.pointSizeF() * 0.85)
        item.setFont(f)
        self.list.addItem(item)

    def _item(self, ident: str, text: str, tip: str) -> None:
        item = QListWidgetItem("   " + text)
        item.setData(ROLE_ID, ident)
        item.setToolTip(tip)
        self.list.addItem(item)

    def _recent(self) -> list[str]:
        value = settings().value("recent_models") or []
        return [value] if isinstance(value, str) else list(value)

    def _remember(self, folder: str) -> None:
        recent = [folder] + [p for p in self._recent() if p != folder]
        settings().setValue("recent_models", recent[:8])

    def _activated(self, item: QListWidgetItem) -> None:
        ident = item.data(ROLE_ID)
        if ident:
            self.choose(str(ident))

    def _pick_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Choose a model folder")
        if path:
            self.choose(path)

    # -- choosing -----------------------------------------------------------------------------
    def choose(self, name_or_path: str) -> None:
        """Resolve the model and make it the session's model.

        Catalog models (and the demo, which has the same shapes as its catalog entry) resolve
        in-process from stored counts; folders are counted on torch's meta device, so they go
        through ``lora-studio models NAME --events`` in a subprocess while a busy bar shows.
        """
        if name_or_path == "demo":
            info = models.from_catalog(models.find_catalog(models.DEMO_CATALOG_ID))
            info.name, info.source = "demo", "demo"
            self._accept(name_or_path, info)
            if not self._demo_ready():
                self._convert_demo()
            return
        entry = None if Path(name_or_path).exists() else models.find_catalog(name_or_path)
        if entry is not None:
            self._accept(name_or_path, models.from_catalog(entry))
            return
        self._pending = name_or_path
        self.busy.set_busy(True)
        self.status.setText(f"Reading {name_or_path}…")
        self.prober.run_command("models", name_or_path)

    def _probed(self, result: dict) -> None:
        self.busy.set_busy(False)
        name, self._pending = self._pending, None
        info = ModelInfo.from_dict(result["model"])
        if name and Path(name).is_dir():
            self._remember(str(Path(name).resolve()))
        self._accept(name or info.name, info)

    def _probe_failed(self, message: str) -> None:
        self.busy.set_busy(False)
        self.status.setText(message)
        self._show_info(self._pending or "?", None)
        self._pending = None

    def _probe_ended(self, code: int, saw_done: bool) -> None:
        if self._pending is not None and not saw_done and not self.prober.saw_error:
            self._probe_failed(f"Reading the model failed (exit code {code}); run 'lora-studio models "
                               f"{self._pending}' in a terminal to see why.")

    def _accept(self, name_or_path: str, info: ModelInfo) -> None:
        self.status.setText(info.note)
        self._show_info(name_or_path, info)
        self.session.set_model(name_or_path, info)
        self._select(name_or_path)

    def _select(self, ident: str) -> None:
        for i in range(self.list.count()):
            if self.list.item(i).data(ROLE_ID) == ident:
                self.list.setCurrentRow(i)
                return

    def _demo_ready(self) -> bool:
        return is_converted(demo_model_dir())

    @property
    def converting(self) -> bool:
        return self.converter.running

    def _convert_demo(self) -> None:
        if self.converter.running:
            return
        self.busy.set_busy(True)
        self.session.preparing_model = True
        self.status.setText("Preparing the demo model (first use: converting the bundled GGUF, under a minute)…")
        self.converter.run_command("demo-model")

    def _conversion_progress(self, _phase: str, done: int, total: int) -> None:
        self.status.setText(f"Preparing the demo model: step {done + 1} of {total}…" if done < total
                            else "Preparing the demo model: done.")

    def _conversion_finished(self, code: int, _done: bool) -> None:
        self.busy.set_busy(False)
        self.session.preparing_model = False
        if code == 0 and self._demo_ready():
            self.status.setText("Demo model ready.")
        else:
            self.status.setText(f"The demo model could not be prepared (exit code {code}). "
                                "Run 'lora-studio demo-model' in a terminal to see why.")

    # -- display ------------------------------------------------------------------------------
    def _show_info(self, name: str, info: ModelInfo | None) -> None:
        f = self.fields
        f["name"].setText(info.name if info else name)
        if info is None:
            for key in ("arch", "params", "context", "vocab", "template", "path", "fit"):
                f[key].setText("–")
            return
        f["arch"].setText(info.architecture)
        f["params"].setText(human_count(info.total_params))
        f["context"].setText(f"{info.context:,} tokens")
        f["vocab"].setText(f"{info.vocab:,}")
        f["template"].setText("yes" if info.has_chat_template else "no (plain text training only)")
        f["path"].setText(self._location(name, info))
        self._show_fit()

    def _location(self, name: str, info: ModelInfo) -> str:
        """Where the weights are (or will come from), in words."""
        if info.path:
            return str(info.path)
        if info.source == "demo":
            return f"{demo_model_dir()} (prepared from the bundled file on first use)"
        if info.source == "catalog":
            entry = models.find_catalog(name)
            hf_id = entry.hf_id if entry else name
            return f"catalog entry: plan with it now; to train, download {hf_id} into your Hugging Face cache"
        return name

    def _show_fit(self) -> None:
        plan = self.session.plan
        budget = human_bytes(self.session.budget)
        if plan is None:
            self.fields["fit"].setText("–")
            return
        peak = plan.predicted["device_total_bytes"]
        fits = plan.fits
        text = (f"yes: about {human_bytes(peak)} of {budget}" if fits else f"no: needs about {human_bytes(peak)}, budget {budget}")
        self.fields["fit"].setText(text)
        self.fields["fit"].setStyleSheet(f"color: {'#1A7F37' if fits else '#CF222E'};")

