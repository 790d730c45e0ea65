"""Model: the demo model, the catalog, models in the Hugging Face cache and local folders.

Choosing one resolves it with ``studio.models.resolve`` (config.json only) and shows its shape
and whether it fits the current budget. The demo model is converted from its GGUF by a
``lora-studio demo-model`` subprocess the first time (conversion needs torch, the window does not).

The Hub: a search box (``lora-studio models search TEXT --events``), a Download button for catalog
models and search results (``lora-studio models download REPO --events``: progress in bytes,
speed, ETA, Cancel), and a token field (``lora-studio models login``, huggingface_hub's own token
file). Each is a subprocess through ``CommandController``; nothing here touches the network.
"""
from __future__ import annotations

import os
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QFileDialog, QFormLayout, QHBoxLayout, QLabel, QLineEdit, QListWidget,
                               QListWidgetItem, QProgressBar, QPushButton, QVBoxLayout, QWidget)

from studio import events as ev
from studio import models, procs
from studio.demo import demo_model_dir, is_converted
from studio.models import ModelInfo
from ui.controllers import CommandController
from ui.prefs import settings
from ui.session import Session
from ui.widgets.common import Busy, Card, Page, human_bytes, human_count, label

ROLE_ID = Qt.ItemDataRole.UserRole
HUB_PREFIX = "hub:"  # list items of search results: hub:OWNER/NAME


def human_eta(seconds: float | None) -> str:
    if seconds is None:
        return "estimating time left"
    seconds = int(seconds)
    if seconds < 90:
        return f"{seconds} s left"
    if seconds < 5400:
        return f"{round(seconds / 60)} min left"
    return f"{seconds / 3600:.1f} h left"


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
        self.converter.outlives_window = True  # the conversion is atomic: let it finish for next time
        self.converter.sig_finished.connect(self._conversion_finished)
        self.converter.sig_busy.connect(self.sig_busy)
        self.converter.sig_progress.connect(self._conversion_progress)
        self.prober = CommandController(self)
        self.prober.sig_done.connect(self._probed)
        self.prober.sig_error.connect(lambda _kind, message, _hint: self._probe_failed(message))
        self.prober.sig_finished.connect(self._probe_ended)
        self.prober.sig_busy.connect(self.sig_busy)
        self._hits: dict[str, dict] = {}
        self._hub_id: str | None = None  # the Hugging Face repo the card's Download button fetches
        self.searcher = CommandController(self)
        self.searcher.sig_done.connect(self._searched)
        self.searcher.sig_error.connect(lambda _k, message, hint: self._search_failed(f"{message} {hint}".strip()))
        self.searcher.sig_finished.connect(lambda code, done: None if done or self.searcher.saw_error else
                                           self._search_failed(f"The search failed (exit code {code})."))
        self.downloader = CommandController(self, stop_grace_s=10, term_grace_s=5)
        self.downloader.sig_event.connect(self._download_event)
        self.downloader.sig_error.connect(lambda _k, message, hint: self._download_failed(message, hint))
        self.downloader.sig_finished.connect(self._download_finished)
        self.downloader.sig_busy.connect(self.sig_busy)
        self.login = CommandController(self)
        self.login.sig_done.connect(lambda d: self.token_status.setText(
            f"Token saved for {d.get('account') or 'your account'}."))
        self.login.sig_error.connect(lambda _k, message, hint: self.token_status.setText(f"{message} {hint}".strip()))
        self._build()
        session.sig_plan.connect(lambda _p: self._show_fit())
        session.sig_budget.connect(lambda _b: self._show_fit())

    def _build(self) -> None:
        row = QHBoxLayout()
        left = QVBoxLayout()
        search = QHBoxLayout()
        self.search_box = QLineEdit()
        self.search_box.setObjectName("hub-search")
        self.search_box.setPlaceholderText("Search the Hugging Face Hub (e.g. qwen3, llama 3.2)…")
        self.search_box.setClearButtonEnabled(True)
        self.search_box.returnPressed.connect(self.search)
        search.addWidget(self.search_box, 1)
        self.search_btn = QPushButton("Search")
        self.search_btn.setToolTip("Text-generation models with safetensors weights, most downloaded first, "
                                   "with whether each fits your GPU budget. Uses the network.")
        self.search_btn.clicked.connect(self.search)
        search.addWidget(self.search_btn)
        left.addLayout(search)
        self.search_status = label("", "muted", wrap=True)
        self.search_status.hide()
        left.addWidget(self.search_status)
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
        dl = QHBoxLayout()
        self.download_btn = QPushButton("Download")
        self.download_btn.setObjectName("download")
        self.download_btn.setToolTip("Download the weights, config and tokenizer into your Hugging Face cache "
                                     "(resumable: a stopped download continues where it stopped).")
        self.download_btn.clicked.connect(self.download)
        self.download_btn.hide()
        dl.addWidget(self.download_btn)
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.clicked.connect(self.downloader.stop)
        self.cancel_btn.hide()
        dl.addWidget(self.cancel_btn)
        dl.addStretch(1)
        card.body.addLayout(dl)
        self.progress = QProgressBar()
        self.progress.setObjectName("download-progress")
        self.progress.setRange(0, 1000)
        self.progress.setTextVisible(False)
        self.progress.hide()
        card.body.addWidget(self.progress)
        self.progress_text = label("", "muted")
        self.progress_text.hide()
        card.body.addWidget(self.progress_text)
        self.busy = Busy()
        card.body.addWidget(self.busy)
        self.status = label("", "muted", wrap=True)
        card.body.addWidget(self.status)
        card.body.addStretch(1)
        token = QHBoxLayout()
        self.token = QLineEdit()
        self.token.setObjectName("hf-token")
        self.token.setEchoMode(QLineEdit.EchoMode.Password)
        self.token.setPlaceholderText("Hugging Face token, for gated and private models")
        self.token.returnPressed.connect(self.save_token)
        token.addWidget(self.token, 1)
        save = QPushButton("Save token")
        save.setToolTip("Checked with the Hub and stored in huggingface_hub's own token file (other tools use it "
                        "too). Create a 'Read' token at huggingface.co/settings/tokens.")
        save.clicked.connect(self.save_token)
        token.addWidget(save)
        card.body.addLayout(token)
        self.token_status = label("", "muted", wrap=True)
        card.body.addWidget(self.token_status)
        row.addWidget(card, 3)
        self.content.addLayout(row, 1)

    # -- the list -----------------------------------------------------------------------------
    def populate(self) -> None:
        """Fill the list: demo, catalog, HF cache (cheap: config files only)."""
        self.list.clear()
        if self._hits:  # what the user just searched for comes first
            self._header(f"Hub search: {self.search_box.text().strip()}")
            for repo_id, hit in self._hits.items():
                self._item(HUB_PREFIX + repo_id, _hit_text(hit), f"{repo_id}: {_hit_tip(hit)}")
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
        if name_or_path.startswith(HUB_PREFIX):
            self._show_hit(name_or_path[len(HUB_PREFIX):])
            return
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
        entry = models.find_catalog(name_or_path) if info.source == "catalog" else None
        self._offer_download(entry.hf_id if entry else None)
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

    # -- the Hub: search, download, token -------------------------------------------------------
    def search(self) -> None:
        text = self.search_box.text().strip()
        if not text:
            return
        self.search_status.setText(f"Searching the Hugging Face Hub for {text!r}…")
        self.search_status.show()
        self.search_btn.setEnabled(False)
        self.searcher.run_command("models", "search", text)

    def _searched(self, result: dict) -> None:
        self.search_btn.setEnabled(True)
        hits = result.get("hits") or []
        self._hits = {h["repo_id"]: h for h in hits}
        self.search_status.setText(f"{len(hits)} model{'s' if len(hits) != 1 else ''} on the Hub match "
                                   f"{result.get('query', '')!r} (most downloaded first; fit judged for "
                                   f"{human_bytes(result.get('budget'))})." if hits else
                                   f"No text-generation model with safetensors weights matches {result.get('query')!r}.")
        self.populate()
        self.list.scrollToTop()

    def _search_failed(self, message: str) -> None:
        self.search_btn.setEnabled(True)
        self.search_status.setText(message)
        self.search_status.show()

    def _show_hit(self, repo_id: str) -> None:
        """A search result: the catalog's card when the catalog knows it, the cache's when downloaded."""
        hit = self._hits.get(repo_id, {})
        if hit.get("catalog_id"):
            self.choose(hit["catalog_id"])
            self._select(HUB_PREFIX + repo_id)
            return
        if repo_id in dict(hf_cache_models()):
            self.choose(repo_id)
            return
        f = self.fields
        self._show_info(repo_id, None)
        f["params"].setText(human_count(hit["params"]) if hit.get("params") else "–")
        f["path"].setText(f"on the Hugging Face Hub ({hit.get('license', 'unknown')} licence"
                          f"{', gated: accept its licence on its page first' if hit.get('gated') else ''})")
        fits = hit.get("fits")
        f["fit"].setText("unknown (no config.json to plan with)" if fits is None else
                         (f"yes: about {human_bytes(hit['peak_bytes'])} (estimated from config.json)" if fits else
                          f"no: needs about {human_bytes(hit['peak_bytes'])} (estimated from config.json)"))
        f["fit"].setStyleSheet("" if fits is None else f"color: {'#1A7F37' if fits else '#CF222E'};")
        self.status.setText("Download it to read its exact shape and train with it.")
        self._offer_download(repo_id)

    def _offer_download(self, repo_id: str | None) -> None:
        if self.downloader.running:
            return
        self._hub_id = repo_id
        cached = repo_id is not None and repo_id in dict(hf_cache_models())
        self.download_btn.setVisible(repo_id is not None and not cached)
        if repo_id is not None:
            self.download_btn.setText(f"Download {repo_id}")

    def download(self) -> None:
        if not self._hub_id or self.downloader.running:
            return
        self._downloading = self._hub_id
        self.download_btn.setEnabled(False)
        self.cancel_btn.show()
        self.progress.setValue(0)
        self.progress.show()
        self.progress_text.setText(f"Starting the download of {self._hub_id}…")
        self.progress_text.show()
        pickle = ["--allow-pickle"] if self.session.recipe.model.allow_pickle else []  # the recipe's choice
        # The download worker speaks the protocol itself (the one worker allowed online).
        self.downloader.run_argv(procs.worker_argv("workers.download", self._hub_id, *pickle))

    def _download_event(self, event: ev.Event) -> None:
        d = event.data
        if event.type == ev.PROGRESS and d.get("total"):
            done, total = int(d.get("done") or 0), int(d["total"])
            self.progress.setValue(int(1000 * done / total))
            speed = float(d.get("speed_bps") or 0)
            self.progress_text.setText(f"{human_bytes(done)} of {human_bytes(total)}"
                                       + (f" · {human_bytes(speed)}/s · {human_eta(d.get('eta_s'))}" if speed else ""))
        elif event.type == ev.LOG:
            self.progress_text.setText(str(d.get("message", "")))
        elif event.type == ev.DONE:
            if d.get("status") == "downloaded":
                self.progress_text.setText(f"Downloaded {d.get('repo_id')} ({human_bytes(d.get('bytes'))}) into "
                                           "your Hugging Face cache.")
            else:
                self.progress_text.setText(str(d.get("message") or "Download cancelled."))

    def _download_failed(self, message: str, hint: str) -> None:
        self.progress_text.setText(f"{message} {hint}".strip())
        self.progress_text.show()

    def _download_finished(self, code: int, saw_done: bool) -> None:
        repo_id = getattr(self, "_downloading", None)
        self.download_btn.setEnabled(True)
        self.cancel_btn.hide()
        if not (code == 0 and saw_done):
            self.progress.hide()
            if not saw_done and not self.downloader.saw_error:
                self.progress_text.setText(f"The download stopped (exit code {code}); download again to continue.")
            return
        self.populate()
        if repo_id and repo_id in dict(hf_cache_models()):
            self.download_btn.hide()
            self.choose(repo_id)

    def save_token(self) -> None:
        token = self.token.text().strip()
        if self.login.running:
            return
        if not token:
            self.token_status.setText("Paste a token from huggingface.co/settings/tokens first.")
            return
        self.token.clear()
        self.token_status.setText("Checking the token with the Hub…")
        env = procs.worker_env()
        env["HF_TOKEN"] = token  # the environment, not the command line, which other users can read
        self.login.start(procs.worker_argv("studio.cli", "models", "login", "--events"), env=env)

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
            return (f"catalog entry: plan with it now; to train, download {hf_id} into your Hugging Face cache "
                    "(the Download button)")
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



def _hit_text(hit: dict) -> str:
    size = human_count(hit["params"]) if hit.get("params") else "?"
    fit = {True: "fits", False: "too big"}.get(hit.get("fits"), "")
    return "  ·  ".join(t for t in (hit["repo_id"], size, fit, "gated" if hit.get("gated") else "") if t)


def _hit_tip(hit: dict) -> str:
    return (f"{hit.get('license', 'unknown')} licence, {hit.get('downloads', 0):,} downloads"
            + (", gated" if hit.get("gated") else ""))
