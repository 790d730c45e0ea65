"""What the Model page says about models, without Qt: the list's sections, a Hub search hit in
words, a model's card, where its weights are, whether it fits, and a download's progress.

The page (``ui/pages/model.py``) and its widgets only place these texts; every rule about what
the user reads lives here, where a test checks it without a window.
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from studio import events as ev
from studio import hub, models
from studio.demo import demo_model_dir
from studio.models import ModelInfo
from studio.units import human_bytes, human_count, human_eta

HUB_PREFIX = "hub:"  # list entries of search results: hub:OWNER/NAME
RECENT_KEEP = 8
GOOD, BAD = "#1A7F37", "#CF222E"
CARD_KEYS = ("name", "arch", "params", "context", "vocab", "template", "path", "fit")


class Entry(NamedTuple):
    """One choosable line of the model list: what choosing it passes on, its text and tooltip."""

    ident: str
    text: str
    tip: str


def sections(hits: dict[str, dict], query: str, recent: list[str]) -> list[tuple[str, list[Entry]]]:
    """The list, top to bottom: the search just made, the demo, the catalog, the HF cache, folders."""
    out: list[tuple[str, list[Entry]]] = []
    if hits:  # what the user just searched for comes first
        out.append((f"Hub search: {query}", [Entry(HUB_PREFIX + r, hit_text(h), f"{r}: {hit_tip(h)}")
                                             for r, h in hits.items()]))
    out.append(("Built in", [Entry("demo", "SmolLM2-135M-Instruct (demo)",
                                   "A 135M-parameter chat model shipped with the studio.")]))
    out.append(("Catalog", [Entry(e.id, f"{e.name}  ·  {human_count(e.total_params)}", f"{e.hf_id}: {licence_text(e)}")
                            for e in models.catalog()]))
    cached = [Entry(folder, repo_id, folder) for repo_id, folder in hub.cached_models()]
    folders = [Entry(p, Path(p).name, p) for p in recent if Path(p).is_dir()]
    out += [(title, entries) for title, entries in (("Hugging Face cache", cached), ("Local folders", folders))
            if entries]
    return out


def remember(recent: list[str], folder: str) -> list[str]:
    """The recent folders with ``folder`` first, each once, the newest eight."""
    return ([folder] + [p for p in recent if p != folder])[:RECENT_KEEP]


def is_cached(repo_id: str | None) -> bool:
    return repo_id is not None and repo_id in dict(hub.cached_models())


def hit_text(hit: dict) -> str:
    size = human_count(hit["params"]) if hit.get("params") else "?"
    fit = {True: "fits", False: "too big", None: ""}.get(hit.get("fits"), "")  # None: no budget to judge by
    return "  ·  ".join(t for t in (hit["repo_id"], size, fit, "gated" if hit.get("gated") else "") if t)


def hit_tip(hit: dict) -> str:
    return (f"{hit.get('license', 'unknown')} licence, {hit.get('downloads', 0):,} downloads"
            + (", gated" if hit.get("gated") else ""))


def search_summary(result: dict) -> str:
    """The line above the list after a search: how many matched, and the budget the fit was judged for."""
    hits = result.get("hits") or []
    if not hits:
        return f"No text-generation model with safetensors weights matches {result.get('query')!r}."
    return (f"{len(hits)} model{'s' if len(hits) != 1 else ''} on the Hub match {result.get('query', '')!r} "
            f"(most downloaded first; fit judged for {human_bytes(result.get('budget'))}).")


def demo_info() -> ModelInfo:
    """The demo's shape: its catalog entry's, under the name the session knows it by."""
    info = models.from_catalog(models.shipped_entry(models.DEMO_CATALOG_ID))
    info.name, info.source = "demo", "demo"
    return info


def catalog_hf_id(name: str, info: ModelInfo) -> str | None:
    """The Hub repo a catalog model downloads from (None for the demo, folders and the cache)."""
    entry = models.find_catalog(name) if info.source == "catalog" else None
    return entry.hf_id if entry else None


def card(name: str, info: ModelInfo | None) -> dict[str, str]:
    """The card's fields (all but ``fit``, which follows the plan) for a model, or dashes when unknown."""
    if info is None:
        return {"name": name, **{k: "–" for k in CARD_KEYS[1:]}}
    return {"name": info.name, "arch": info.architecture, "params": human_count(info.total_params),
            "context": f"{info.context:,} tokens", "vocab": f"{info.vocab:,}",
            "template": "yes" if info.has_chat_template else "no (plain text training only)",
            "path": location(name, info)}


def hit_card(hit: dict) -> dict[str, str]:
    """The card's fields for a search result not downloaded yet (estimated from its config.json)."""
    fits = hit.get("fits")
    est = "(estimated from config.json)"
    return {**card(hit.get("repo_id", "?"), None),
            "params": human_count(hit["params"]) if hit.get("params") else "–",
            "path": f"on the Hugging Face Hub ({hit.get('license', 'unknown')} licence"
                    f"{', gated: accept its licence on its page first' if hit.get('gated') else ''})",
            "fit": "unknown (no config.json to plan with)" if fits is None else
                   (f"yes: about {human_bytes(hit['peak_bytes'])} {est}" if fits else
                    f"no: needs about {human_bytes(hit['peak_bytes'])} {est}")}


def location(name: str, info: ModelInfo) -> str:
    """Where the weights are (or will come from), in words."""
    if info.path:
        return str(info.path)
    if info.source == "demo":
        return f"{demo_model_dir()} (prepared from the bundled file on first use)"
    if info.source == "catalog":
        entry = models.find_catalog(name)
        if entry is None:
            return name
        towers = (f" Its {human_count(entry.tower_params)} vision/audio parameters are not loaded for text training."
                  if entry.tower_params else "")
        # the publisher's advice is in the model's note, which the page shows below the card
        return (f"catalog entry ({licence_text(entry)}): plan with it now; to train, download {entry.hf_id} into your "
                f"Hugging Face cache (the Download button).{towers}")
    return name


def licence_text(entry: models.CatalogEntry) -> str:
    """The entry's licence and whether the Hub gates it, in words."""
    gated = {True: ", gated: accept its licence on its page first", False: "", None: ", gating not known"}[entry.gated]
    return f"{entry.licence or 'unknown'} licence{gated}"


def fit_text(peak: float, budget: float | None, fits: bool) -> str:
    budget_text = human_bytes(budget)
    return (f"yes: about {human_bytes(peak)} of {budget_text}" if fits
            else f"no: needs about {human_bytes(peak)}, budget {budget_text}")


def fit_colour(fits: bool | None) -> str:
    """The style sheet of the fit line: green when it fits, red when not, plain when unknown."""
    return "" if fits is None else f"color: {GOOD if fits else BAD};"


def download_progress(event: ev.Event) -> tuple[float | None, str] | None:
    """(fraction done or None, the line under the bar) for a download worker's event; None: nothing to show."""
    d = event.data
    if event.type == ev.PROGRESS and d.get("total"):
        done, total = int(d.get("done") or 0), int(d["total"])
        speed = float(d.get("speed_bps") or 0)
        return done / total, (f"{human_bytes(done)} of {human_bytes(total)}"
                              + (f" · {human_bytes(speed)}/s · {human_eta(d.get('eta_s'))}" if speed else ""))
    if event.type == ev.LOG:
        return None, str(d.get("message", ""))
    if event.type == ev.DONE:
        if d.get("status") == "downloaded":
            return None, (f"Downloaded {d.get('repo_id')} ({human_bytes(d.get('bytes'))}) into "
                          "your Hugging Face cache.")
        return None, str(d.get("message") or "Download cancelled.")
    return None
