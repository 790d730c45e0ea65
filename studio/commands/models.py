"""`lora-studio models`: the catalog, one model's facts, and the Hub (download, search, login).

    lora-studio models                       the catalog
    lora-studio models MODEL                 what the studio reads from a model
    lora-studio models download REPO_ID      into the Hugging Face cache (resumable, Ctrl-C cancels)
    lora-studio models search TEXT           the Hub's text-generation models, and whether each fits
    lora-studio models login                 save a Hugging Face token (gated and private models)

Downloading, searching and logging in are the studio's only network use; each is asked for.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TYPE_CHECKING

from studio import driver, events, hardware, hub, models, modelview
from studio.commands import add_events_flag
from studio.errors import UserError
from studio.planning import budget_bytes
from studio.procs import worker_argv
from studio.termtext import printable

if TYPE_CHECKING:  # the bar loads tqdm only when it draws
    from tqdm import tqdm

ACTIONS = ("download", "search", "login")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "models", help="The model catalog, one model's facts, and downloading or searching the Hugging Face Hub.",
        description=__doc__.split("\n\n")[1] + "\n\nA MODEL is 'demo', a folder, a Hugging Face cache id or a "
        "catalog id (a folder named like an action: write ./download).",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", nargs="?", metavar="MODEL|ACTION", help="show this model's facts, or "
                   "download / search / login")
    p.add_argument("words", nargs="*", metavar="ARG", help="the action's argument: a REPO_ID or search TEXT")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--revision", help="download: branch, tag or commit (default main)")
    p.add_argument("--allow-pickle", action="store_true",
                   help="download: take pytorch_model*.bin weights when a repo has no safetensors")
    p.add_argument("--limit", type=int, default=20, help="search: how many results (default 20)")
    p.add_argument("--vram-gb", type=float, default=None,
                   help="search: the budget in GiB the fit is judged for (default: the detected GPU's, else 24)")
    add_events_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.model in ACTIONS and not os.path.isdir(args.model):
        return {"download": _download, "search": _search, "login": _login}[args.model](args)
    if args.words:
        raise UserError(f"unexpected {' '.join(args.words)!r}: 'lora-studio models MODEL' takes one model "
                        f"(actions: {', '.join(ACTIONS)})")

    if args.model:
        try:
            info = models.resolve(args.model)
        except models.ModelError as e:
            raise UserError(str(e)) from None
        if args.emitter:  # the window: counting on the meta device needs torch, which it never imports
            args.emitter.emit(events.DONE, model=info.to_dict())
        elif args.json:
            print(json.dumps(info.to_dict(), indent=2))
        else:
            print(info.summary())
            for group, n in info.params.items():
                print(f"  {group:<12}{n:>16,}")
            if info.note:
                print(info.note)
            _catalog_facts(args.model)
        return 0
    entries = models.catalog()
    if args.json:
        print(json.dumps([{"id": e.id, "name": e.name, "hf_id": e.hf_id, "params": e.total_params,
                           "tower_params": e.tower_params, "licence": e.licence, "gated": e.gated, "note": e.note}
                          for e in entries], indent=2))
        return 0
    print(f"{'id':<38}{'params':>8}  {'licence':<16}{'gated':<7}hugging face id")
    for entry in entries:
        gated = {True: "yes", False: "no", None: "?"}[entry.gated]
        print(f"{entry.id:<38}{entry.total_params / 1e9:7.2f}B  {(entry.licence or '?')[:15]:<16}{gated:<7}{entry.hf_id}")
    print("params: what trains (a multimodal checkpoint's language model); 'lora-studio models ID' for one model's facts")
    return 0


def _catalog_facts(name: str) -> None:
    """Licence, gating, towers and the publisher's advice of a catalog model, and where its facts come from."""
    entry = models.find_catalog(name)
    if entry is None:
        return
    print(modelview.licence_text(entry))
    if entry.tower_params:
        print(f"towers: {entry.tower_params / 1e9:.2f}B parameters of vision/audio, not loaded for text training")
    if entry.note:
        print(f"note: {entry.note}")
    for what, source in entry.sources.items():
        print(f"source of {what}: {source}")


def _one(args: argparse.Namespace, what: str) -> str:
    if len(args.words) != 1:
        raise UserError(f"models {args.model} takes one {what}" + (" (quote text with spaces)" if what == "TEXT" else ""))
    return args.words[0]


# --- download ----------------------------------------------------------------------------------------
def _download(args: argparse.Namespace) -> int:
    repo_id = _one(args, "REPO_ID (owner/name)")

    entry = models.find_catalog(repo_id)
    if entry is not None and "/" not in repo_id:
        repo_id = entry.hf_id  # a catalog id downloads its Hugging Face repo
    if repo_id.count("/") != 1:
        raise UserError(f"{repo_id!r} is not a Hugging Face model id: write owner/name, e.g. Qwen/Qwen3-4B")
    if args.emitter is not None:
        raise UserError("the window runs 'python -m workers.download REPO_ID' itself; download --events is not needed")

    extra = ([f"--revision={args.revision}"] if args.revision else []) + (["--allow-pickle"] if args.allow_pickle else [])
    view = _DownloadView()
    code = driver.follow(worker_argv("workers.download", repo_id, *extra), None, view.show, driver.DOWNLOAD,
                         "cancelling the download (what arrived is kept)...")
    view.close()
    if view.error:
        hint = f"\n  {printable(view.error.get('hint'))}" if view.error.get("hint") else ""
        print(f"lora-studio models download: {printable(view.error.get('message'))}{hint}", file=sys.stderr)
        return 1
    done = view.done or {}
    if done.get("status") == "downloaded":
        print(f"{repo_id}: {len(done['files'])} files in {done['path']}\n"
              f"train with it: lora-studio plan DATA --model {repo_id}")
        return 0
    print(done.get("message") or f"the download worker exited with code {code}", file=sys.stderr)
    return 3 if done.get("status") == "cancelled" else 1


class _DownloadView:
    """One progress bar in bytes on stderr (tqdm shows speed and ETA)."""

    def __init__(self) -> None:
        self.bar: tqdm | None = None  # made at the first progress event (tqdm loads only then)
        self.done: dict | None = None
        self.error: dict | None = None

    def show(self, ev: events.Event) -> None:
        d = ev.data
        if ev.type == events.PROGRESS:
            if self.bar is None:
                from tqdm import tqdm

                self.bar = tqdm(total=d.get("total") or None, initial=d.get("done", 0), unit="B", unit_scale=True,
                                unit_divisor=1024, dynamic_ncols=True, file=sys.stderr, desc="download")
            self.bar.n = d.get("done", 0)
            self.bar.set_postfix_str(printable(d.get("file", ""), 80), refresh=False)
            self.bar.refresh()
        elif ev.type == events.LOG:
            print(printable(d.get("message", "")), file=sys.stderr)
        elif ev.type == events.ERROR:
            self.error = d
        elif ev.type == events.DONE:
            self.done = d

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# --- search ------------------------------------------------------------------------------------------
def _search(args: argparse.Namespace) -> int:
    text = _one(args, "TEXT")
    try:
        hits = hub.search(text, limit=max(1, min(args.limit, 100)))
    except hub.HubError as e:
        raise UserError(f"{e} {e.hint}".strip()) from None

    budget = budget_bytes(hardware.detect_gpus(), int(args.vram_gb * (1 << 30)) if args.vram_gb else None, "cuda")
    judge_fits(hits, budget)
    if args.emitter:
        args.emitter.emit(events.DONE, query=text, budget=budget, hits=[h.to_dict() for h in hits])
        return 0
    if args.json:
        print(json.dumps({"query": text, "budget_bytes": budget, "hits": [h.to_dict() for h in hits]}, indent=2))
        return 0
    if not hits:
        print(f"no text-generation models with safetensors match {text!r}")
        return 0
    print(f"{'model':<48}{'size':>8}  {'licence':<14}{'gated':<7}{'fits ' + hub.gib(budget):<14}downloads")
    for h in hits:
        size = f"{h.params / 1e9:.1f}B" if h.params else "?"
        fits = "?" if h.fits is None else ("yes" if h.fits else "no")
        print(f"{h.repo_id:<48}{size:>8}  {h.license[:13]:<14}{'yes' if h.gated else 'no':<7}{fits:<14}{h.downloads:,}")
    return 0


def judge_fits(hits: list, budget: int) -> None:
    """The planner's verdict for each hit: exact for catalog models, from config.json for the rest."""
    from concurrent.futures import ThreadPoolExecutor

    from studio import models, planner

    def info_for(h):
        entry = models.find_catalog(h.repo_id)
        if entry is not None:
            h.catalog_id = entry.id
            return models.from_catalog(entry)
        config = _remote_config(h.repo_id)
        return models.estimate_from_config(config, h.repo_id) if config else None

    with ThreadPoolExecutor(max_workers=8) as pool:
        infos = list(pool.map(info_for, hits))
    for h, info in zip(hits, infos):
        if info is None:
            continue
        try:
            plan = planner.fit(info, budget)
        except Exception:  # a config the planner cannot read: no verdict rather than a wrong one
            continue
        h.fits, h.peak_bytes = bool(plan.fits), int(plan.predicted.get("device_total_bytes", 0))


def _remote_config(repo_id: str) -> dict | None:
    """A model's config.json read into memory (never into the cache: a config alone is not a model)."""
    import tempfile

    try:
        hub.online()
        from huggingface_hub import hf_hub_download

        with tempfile.TemporaryDirectory() as tmp:
            path = hf_hub_download(repo_id, "config.json", local_dir=tmp)
            with open(path, encoding="utf-8") as fh:
                return json.load(fh)
    except Exception:  # gated, missing, offline: no verdict
        return None


# --- login -------------------------------------------------------------------------------------------
def _login(args: argparse.Namespace) -> int:
    """The token comes from HF_TOKEN or stdin (never the command line, where other users can read it)."""

    if args.words:
        raise UserError("models login reads the token from stdin or HF_TOKEN, not from the command line")
    token = os.environ.get("HF_TOKEN", "")
    if not token:
        if sys.stdin.isatty():
            import getpass

            token = getpass.getpass("Hugging Face token (huggingface.co/settings/tokens): ")
        else:
            token = sys.stdin.readline()
    try:
        name = hub.save_token(token)
    except hub.HubError as e:
        raise UserError(f"{e} {e.hint}".strip()) from None
    if args.emitter:
        args.emitter.emit(events.DONE, account=name)
    else:
        print(f"token saved for {name or 'your account'} (huggingface_hub's token file; other tools use it too)")
    return 0
