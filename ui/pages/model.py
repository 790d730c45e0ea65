"""Model: the demo model, the catalog, models in the Hugging Face cache and local folders.

Choosing one resolves it with ``studio.models.resolve`` (config.json only) and shows its shape
and whether it fits the current budget. The demo model is converted from its GGUF by a
``lora-studio demo-model`` subprocess the first time (conversion needs torch, the window does not).

The Hub: a search box (``lora-studio models search TEXT --events``), a Download button for catalog
models and search results (``lora-studio models download REPO --events``: progress in bytes,
speed, ETA, Cancel), and a token field (``lora-studio models login``, huggingface_hub's own token
file). Each is a subprocess through ``CommandController``; nothing here touches the network.
The words are ``studio.modelview``'s; the widgets are ``ui.widgets.model_list`` and ``model_card``.
"""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QFileDialog, QHBoxLayout, QPushButton, QVBoxLayout, QWidget

from studio import models, modelview
from studio.demo import demo_model_dir, is_converted
from studio.models import ModelInfo
from studio.modelview import HUB_PREFIX
from ui.controllers import CommandController
from ui.session import Session
from ui.widgets.common import Page
from ui.widgets.model_card import ModelCard
from ui.widgets.model_list import HubSearch, ModelList, ModelListModel


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
        self.converter.outlives_window = True  # the conversion is atomic: let it finish for next time
        self.converter.sig_finished.connect(self._conversion_finished)
        self.converter.sig_busy.connect(self.sig_busy)
        self.converter.sig_progress.connect(self._conversion_progress)
        self.prober = CommandController(self)
        self.prober.sig_done.connect(self._probed)
        self.prober.sig_error.connect(lambda _kind, message, _hint: self._probe_failed(message))
        self.prober.sig_finished.connect(self._probe_ended)
        self.prober.sig_busy.connect(self.sig_busy)
        self.listing = ModelListModel(self)
        self._build()
        self.download.downloader.sig_busy.connect(self.sig_busy)
        self.download.downloaded.connect(self._downloaded)
        session.sig_plan.connect(lambda _p: self._show_fit())
        session.sig_budget.connect(lambda _b: self._show_fit())

    def _build(self) -> None:
        row = QHBoxLayout()
        left = QVBoxLayout()
        self.hub = HubSearch(self.listing)
        left.addWidget(self.hub)
        self.list = ModelList(self.listing)
        self.list.chosen.connect(self.choose)
        self.listing.changed.connect(self.list.scrollToTop)  # a new search shows its hits
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
        self.card = ModelCard(lambda: self.session.recipe.model.allow_pickle)
        self.fields, self.download, self.status, self.busy = (self.card.fields, self.card.download,
                                                               self.card.status, self.card.busy)
        row.addWidget(self.card, 3)
        self.content.addLayout(row, 1)

    def populate(self) -> None:
        self.list.populate()

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
        if name_or_path.startswith(HUB_PREFIX):
            self._show_hit(name_or_path[len(HUB_PREFIX):])
            return
        if name_or_path == "demo":
            self._accept(name_or_path, modelview.demo_info())
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
            self.listing.remember(str(Path(name).resolve()))
        self._accept(name or info.name, info)

    def _probe_failed(self, message: str) -> None:
        self.busy.set_busy(False)
        self.status.setText(message)
        self.card.show_fields(modelview.card(self._pending or "?", None))
        self._pending = None

    def _probe_ended(self, code: int, saw_done: bool) -> None:
        if self._pending is not None and not saw_done and not self.prober.saw_error:
            self._probe_failed(f"Reading the model failed (exit code {code}); run 'lora-studio models "
                               f"{self._pending}' in a terminal to see why.")

    def _accept(self, name_or_path: str, info: ModelInfo) -> None:
        self.status.setText(info.note)
        self.card.show_fields(modelview.card(name_or_path, info))
        self._show_fit()
        self.download.offer(modelview.catalog_hf_id(name_or_path, info))
        self.session.set_model(name_or_path, info)
        self.list.select(name_or_path)

    def _show_hit(self, repo_id: str) -> None:
        """A search result: the catalog's card when the catalog knows it, the cache's when downloaded."""
        hit = self.listing.hits.get(repo_id, {})
        if hit.get("catalog_id"):
            self.choose(hit["catalog_id"])
            self.list.select(HUB_PREFIX + repo_id)
            return
        if modelview.is_cached(repo_id):
            self.choose(repo_id)
            return
        self.card.show_fields(modelview.hit_card({"repo_id": repo_id, **hit}))
        self.card.show_fit(self.fields["fit"].text(), hit.get("fits"))
        self.status.setText("Download it to read its exact shape and train with it.")
        self.download.offer(repo_id)

    def _downloaded(self, repo_id: str) -> None:
        self.populate()
        if modelview.is_cached(repo_id):
            self.choose(repo_id)

    def _show_fit(self) -> None:
        plan = self.session.plan
        if plan is None:
            self.fields["fit"].setText("–")
            return
        peak = plan.predicted["device_total_bytes"]
        self.card.show_fit(modelview.fit_text(peak, self.session.budget, plan.fits), plan.fits)

    # -- the demo -------------------------------------------------------------------------------
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
