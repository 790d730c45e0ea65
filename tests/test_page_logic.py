"""The pages' logic without Qt: studio.modelview (Model), studio.registry's table and diff (Runs),
studio.data.display (Data), studio.tboard and studio.units."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from studio import events as ev
from studio import hub, modelview, registry, runs, tboard
from studio.data import display
from studio.recipe import Recipe
from studio.train.trackers import TB_DIR
from studio.units import human_bytes, human_count, human_eta


# -- figures ----------------------------------------------------------------------------------------
def test_figures_in_words():
    assert (human_bytes(None), human_bytes(512), human_bytes(3 << 30)) == ("–", "512 B", "3.00 GiB")
    assert (human_count(134_500_000), human_count(7.62e9), human_count(12)) == ("134.5M", "7.62B", "12")
    assert [human_eta(s) for s in (None, 30, 600, 7200)] == ["estimating time left", "30 s left", "10 min left",
                                                             "2.0 h left"]


# -- the Model page ---------------------------------------------------------------------------------
def _cache_model(root: Path, repo: str, snapshot: str = "abc") -> Path:
    folder = root / f"models--{repo.replace('/', '--')}" / "snapshots" / snapshot
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    return folder


def test_the_hub_cache_lists_models_with_a_config_only(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    folder = _cache_model(tmp_path, "acme/tiny")
    (tmp_path / "models--acme--empty" / "snapshots" / "x").mkdir(parents=True)  # no config.json: not a model
    (tmp_path / "datasets--acme--data").mkdir()
    assert hub.cached_models() == [("acme/tiny", str(folder))]
    assert modelview.is_cached("acme/tiny") and not modelview.is_cached("acme/empty")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "missing"))
    assert hub.cached_models() == []
    # the older name huggingface_hub still honours, and HF_HOME/hub, are where the scan looks too
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.setenv("HUGGINGFACE_HUB_CACHE", str(tmp_path))
    assert hub.cached_models() == [("acme/tiny", str(folder))]
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    _cache_model(tmp_path / "home" / "hub", "acme/other")
    assert [r for r, _ in hub.cached_models()] == ["acme/other"]


def test_the_model_list_puts_the_search_first_and_skips_empty_sections(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    hits = {"acme/tiny": {"repo_id": "acme/tiny", "params": 1_500_000, "fits": True, "gated": True, "license": "mit",
                          "downloads": 1234}}
    folder = tmp_path / "my-model"
    folder.mkdir()
    titles = [t for t, _ in modelview.sections(hits, "tiny", [str(folder), str(tmp_path / "gone")])]
    assert titles == ["Hub search: tiny", "Built in", "Catalog", "Local folders"]
    search, *_, local = modelview.sections(hits, "tiny", [str(folder)])
    assert search[1] == [modelview.Entry("hub:acme/tiny", "acme/tiny  ·  1.5M  ·  fits  ·  gated",
                                         "acme/tiny: mit licence, 1,234 downloads, gated")]
    assert local[1] == [modelview.Entry(str(folder), "my-model", str(folder))]
    assert [t for t, _ in modelview.sections({}, "", [])] == ["Built in", "Catalog"]


def test_recent_folders_keep_the_newest_eight_once_each():
    recent = [f"/m/{i}" for i in range(8)]
    assert modelview.remember(recent, "/m/3") == ["/m/3"] + [p for p in recent if p != "/m/3"]
    assert modelview.remember(recent, "/m/new")[:2] == ["/m/new", "/m/0"] and len(modelview.remember(recent, "/x")) == 8


def test_search_summary_and_a_hits_card():
    hit = {"repo_id": "acme/huge", "params": 70e9, "license": "llama3", "gated": True, "fits": False,
           "peak_bytes": 90 << 30}
    assert modelview.search_summary({"query": "huge", "budget": 8 << 30, "hits": [hit]}) == (
        "1 model on the Hub match 'huge' (most downloaded first; fit judged for 8.00 GiB).")
    assert "No text-generation model" in modelview.search_summary({"query": "zzz", "hits": []})
    card = modelview.hit_card(hit)
    assert card["name"] == "acme/huge" and card["arch"] == "–" and card["params"] == "70.00B"
    assert card["path"] == "on the Hugging Face Hub (llama3 licence, gated: accept its licence on its page first)"
    assert card["fit"] == "no: needs about 90.00 GiB (estimated from config.json)"
    assert modelview.hit_card({"repo_id": "a/b"})["fit"] == "unknown (no config.json to plan with)"
    assert (modelview.fit_colour(True), modelview.fit_colour(None)) == ("color: #1A7F37;", "")


def test_a_catalog_models_card_says_where_to_download_it():
    entry = modelview.models.catalog()[0]
    info = modelview.models.from_catalog(entry)
    card = modelview.card(entry.id, info)
    assert card["arch"] == info.architecture and card["context"] == f"{info.context:,} tokens"
    assert f"download {entry.hf_id}" in card["path"]
    assert modelview.catalog_hf_id(entry.id, info) == entry.hf_id
    demo = modelview.demo_info()
    assert (demo.name, demo.source) == ("demo", "demo") and modelview.catalog_hf_id("demo", demo) is None
    assert "prepared from the bundled file" in modelview.location("demo", demo)
    assert set(modelview.card("x", None).values()) == {"x", "–"}
    assert modelview.fit_text(3 << 30, 8 << 30, True) == "yes: about 3.00 GiB of 8.00 GiB"


def test_download_events_in_words():
    prog = ev.Event(ev.PROGRESS, {"done": 1 << 20, "total": 4 << 20, "speed_bps": 1 << 20, "eta_s": 3})
    assert modelview.download_progress(prog) == (0.25, "1.00 MiB of 4.00 MiB · 1.00 MiB/s · 3 s left")
    done = ev.Event(ev.DONE, {"status": "downloaded", "repo_id": "a/b", "bytes": 2048})
    assert modelview.download_progress(done) == (None, "Downloaded a/b (2 KiB) into your Hugging Face cache.")
    assert modelview.download_progress(ev.Event(ev.DONE, {"status": "cancelled"})) == (None, "Download cancelled.")
    assert modelview.download_progress(ev.Event(ev.PROGRESS, {"done": 1})) is None  # no total yet


# -- the Runs page ----------------------------------------------------------------------------------
def _run(root: Path, name: str, **lora) -> Path:
    r = Recipe(name=name)
    r.model.name_or_path, r.data.path = "/models/tiny", "/data/chat.jsonl"
    for k, v in lora.items():
        setattr(r.lora, k, v)
    return runs.create(r, root)


def test_one_diff_for_two_runs_and_for_many(tmp_path):
    a, b, c = _run(tmp_path, "a", rank=8), _run(tmp_path, "b", rank=16), _run(tmp_path, "c", rank=8, alpha=64)
    recipes = [json.loads((d / runs.RECIPE).read_text()) for d in (a, b)]
    assert registry.config_diff(*recipes) == [("lora.rank", 8, 16)]  # the names differ too: never shown
    text = registry.diff_text([a, b, c])
    assert text.splitlines()[:3] == [f"A: {a.name}", f"B: {b.name}", f"C: {c.name}"]
    assert "lora.rank: A 8  |  B 16  |  C 8" in text and "lora.alpha:" in text and "name:" not in text
    assert registry.diff_text([a]).startswith("Select two or more runs")
    assert registry.diff_text([a, _run(tmp_path, "d", rank=8)]) == "The selected runs have the same settings."


def test_a_runs_table_row_reads_damaged_files_as_empty_cells(tmp_path):
    d = _run(tmp_path, "r", rank=12)
    runs.write_state(d, status="finished", last_loss=1.23456, step=7)
    row = registry.table_row(runs.summarize(d))
    assert list(row) == registry.TABLE_COLUMNS
    assert (row["model"], row["dataset"], row["last loss"], row["steps"], row["rank"]) == ("tiny", "chat.jsonl",
                                                                                           "1.2346", 7, 12)
    meta = d / runs.ADAPTER / registry.META_FILE
    meta.parent.mkdir()
    meta.write_text(json.dumps({"recipe": [1], "duration_s": 61}))
    row = registry.table_row(runs.summarize(d))
    assert (row["rank"], row["time"]) == (12, "1m01s")


def test_runs_sort_by_validation_loss_with_unknown_last(tmp_path):
    ss = []
    for name, val in (("a", 2.0), ("b", None), ("c", 1.0)):
        s = runs.summarize(_run(tmp_path, name))
        s.eval = {"val_loss_adapter": val} if val is not None else None
        ss.append(s)
    assert [s.id[-1] for s in sorted(ss, key=lambda s: registry.summary_rank_key(s, "val_loss"))] == ["c", "a", "b"]


def test_tags_are_replaced(tmp_path):
    d = _run(tmp_path, "r")
    registry.set_labels(d, add_tags=["old", "keep"])
    registry.replace_tags(d, ["keep", "new"])
    assert registry.read_labels(d)["tags"] == ["keep", "new"]


def test_tensorboard_serves_only_runs_with_event_files(tmp_path):
    with_tb, without = tmp_path / "r1", tmp_path / "r2"
    (with_tb / TB_DIR).mkdir(parents=True)
    without.mkdir()
    assert tboard.event_dirs([with_tb, without]) == [with_tb]
    argv = tboard.argv([with_tb], 6006)
    assert "tensorboard.main" in argv and f"r1:{with_tb / TB_DIR}" in argv and argv[-2:] == ["--port", "6006"]
    assert 0 < tboard.free_port() < 65536


# -- the Data page ----------------------------------------------------------------------------------
def test_chat_rows_preview_as_one_column_per_role():
    preview = [{"row": 3, "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"},
                                       {"role": "user", "content": "again"}]}]
    rows, cols, numbers = display.preview_table(preview, ["messages"])
    assert cols == ["turns", "user", "assistant"] and numbers == [3]
    assert rows == [{"turns": 3, "user": "hi", "assistant": "yo"}]
    assert display.preview_table([{"prompt": "p", "completion": "c"}], [])[1] == ["prompt", "completion"]


def test_role_names_from_the_field():
    assert display.roles_from_text("bing=Assistant; human = user,") == {"bing": "assistant", "human": "user"}
    with pytest.raises(ValueError, match="'bing=robot': write ROLE=system|user|assistant|tool"):
        display.roles_from_text("bing=robot")


def test_summary_and_problem_lines():
    d = {"format": "messages", "confidence": 0.95, "reader": "jsonl", "rows": 1200, "usable": 1100, "skipped": 100,
         "filtered": 2, "problem_groups": [{"count": 100, "field": "messages", "example": "not a list", "hint": "fix"}],
         "problems": [{"line": 3, "message": "bad JSON"}, {"row": 5, "field": "text", "message": "empty"}, {}],
         "problems_total": 100}
    html = display.summary_html(d)
    assert "<b>messages</b> (95% sure)" in html and "1,200 rows" in html and "<b>1,100</b> usable" in html
    assert "100 skipped" in html and "2 marked bad (left out)" in html
    assert display.problem_lines(d) == [("100 × messages: not a list  →  fix", True), ("line 3: bad JSON", False),
                                        ("row 5: text: empty", False), ("file: ", False)]
    assert display.problems_total(d) == 100 and display.notes_html(["a<b"]) == "a&lt;b"


def test_token_line_counts_the_examples_the_sequence_length_cuts():
    tokens, hist = {"count": 10, "p50": 100, "p95": 900, "max": 1500}, {"edges": [0, 512, 1024, 1536],
                                                                        "counts": [6, 2, 2]}
    assert display.token_summary(tokens, hist, 1024).endswith("about 2 longer than the planned 1024 (they are truncated)")
    assert display.token_summary(tokens, hist, 2048).endswith("all fit in the planned sequence length of 2048")
    assert display.bars(hist) == ([256.0, 768.0, 1280.0], [6, 2, 2], [460.8, 460.8, 460.8])
    assert display.bars({"edges": [0, 1], "counts": [1, 2]}) is None


def test_the_lengths_against_the_longest_context_the_card_holds():
    tokens = {"count": 480, "min": 100, "p50": 900, "p95": 7000, "max": 12000, "seq_len": 2048, "truncated": 40,
              "histogram": {"edges": [100, 4100, 8100, 12001], "counts": [440, 28, 12]}}
    assert display.longer_than(tokens, 2048) == (40, True)        # the length the statistics were counted at
    assert display.longer_than(tokens, 12000) == (0, True) and display.longer_than(tokens, 99) == (480, True)
    assert display.longer_than(tokens, 8099) == (12, True)        # a bin's edge: whole bins, exact
    assert display.longer_than(tokens, 6099) == (26, False)       # half the second bin: read from the histogram
    assert display.context_line(tokens, 8099, 2048) == (
        "12 of 480 examples (2.5%) are longer than the 8,099 tokens this card holds with these settings; they would "
        "be truncated. The plan's sequence length of 2,048 cuts 40 of 480 examples (8.3%); a longer one, up to "
        "8,099, fits this card.")
    assert display.context_line(tokens, 6099, 6099, "this memory budget") == (
        "About 26 of 480 examples (5.4%) are longer than the 6,099 tokens this memory budget holds with these "
        "settings; they would be truncated.")
    assert display.context_line(tokens, 16384, 2048).startswith("All 480 examples fit in the 16,384 tokens")
    assert display.context_line(tokens, None, 2048) == "" and display.context_line({}, 8099, 2048) == ""


def test_the_mask_view_and_the_inspect_command():
    html = display.mask_html([("<s>", False), ("answer\n", True)], dark=False)
    assert "<span>&lt;s&gt;</span>" in html and "#FFE58F" in html and "answer↵<br>" in html
    assert display.mask_html([], dark=True) == "<i>No example available.</i>"
    assert display.inspect_args(Path("d.jsonl"), "m", 512, {"bing": "assistant"}, False, 4) == [
        "data", "inspect", "d.jsonl", "--model", "m", "--seq-len", "512", "--roles", "bing=assistant",
        "--label-filter", "off", "--packing", "4"]
    assert display.inspect_args(Path("d"), "m", 8, {}, True, None) == ["data", "inspect", "d", "--model", "m",
                                                                       "--seq-len", "8"]
