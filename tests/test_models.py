"""studio.models: exact parameter counts (meta device), the catalog, and resolving names."""
from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tiny

from studio import models

CATALOG_IDS = [e.id for e in models.catalog()]


@pytest.mark.parametrize("entry_id", CATALOG_IDS)
def test_catalog_counts_equal_meta_device_counts(entry_id):
    entry = models.find_catalog(entry_id)
    params, linears = models.count_parameters(entry.config)
    assert params == entry.param_groups and entry.params == sum(params.values())
    assert [dataclasses.asdict(g) for g in linears] == entry.linears


def test_catalog_sizes_match_model_cards_and_span_half_to_70b():
    """The counts (a multimodal checkpoint: with or without its towers) against the published size: within 1%, or 15%
    where the only published figure is the nominal size in the model's name (Qwen3.5 "4B" is 4.54B in all)."""
    entries = models.catalog()
    assert len(entries) >= 15
    for e in entries:
        if not e.published_params_b:  # Gemma 4 E2B/E4B publish effective sizes only (said in the note)
            assert "effective" in e.note, e.id
            continue
        nominal = any("nominal" in v for k, v in e.sources.items() if "published_params_b" in k)
        # a model card gives the whole checkpoint (Gemma 3: 4.3B) or its language model (Gemma 4 31B: 30.7B)
        sizes = {(e.total_params + e.tower_params) / 1e9, e.total_params / 1e9}
        off = min(abs(size / e.published_params_b - 1) for size in sizes)
        assert off < (0.15 if nominal else 0.01), (e.id, sizes)
    sizes = [e.total_params for e in entries]
    assert min(sizes) < 0.6e9 and max(sizes) > 70e9
    families = {e.family for e in entries}
    assert {"Llama 3", "Qwen2.5", "Mistral", "Gemma 2", "Phi-3", "SmolLM2"} <= families
    assert {"Qwen3", "Gemma 3", "Phi-4", "SmolLM3", "gpt-oss"} <= families  # the families fine-tuned in 2026
    assert {"Qwen3.5", "Gemma 4"} <= families  # and those of the end of 2026


def test_gemma3_language_models_count_what_keras_hub_publishes():
    """Text training loads the language model alone: its count is the text-only figure published for it
    (keras-hub's gemma3 presets: 3,880,099,328 and 11,765,788,416 parameters) plus the embedding rows of the 64
    tokens the Hugging Face checkpoints add to keras' 262,144 (vocab_size 262,208)."""
    for entry_id, keras, hidden in (("gemma-3-4b-it", 3_880_099_328, 2560), ("gemma-3-12b-it", 11_765_788_416, 3840)):
        assert models.find_catalog(entry_id).total_params == keras + 64 * hidden


def test_every_entry_names_its_sources_licence_and_gating_and_plans():
    from studio import planner

    for e in models.catalog():
        assert e.sources and any(k.startswith(("config", "text_config", "architectures")) for k in e.sources), e.id
        assert e.licence or e.id in ("llama-3.3-70b-instruct", "phi-2"), e.id  # none found for those two (no guess)
        assert e.gated in (True, False, None)
        info = models.resolve(e.id)
        assert info.source == "catalog" and info.total_params == e.total_params
        plan = planner.fit(info, 24 << 30)
        assert plan.predicted["device_total_bytes"] > 0 and (plan.fits or plan.reasons), e.id


def test_moe_models_say_what_happens_to_their_experts():
    note = models.from_catalog(models.find_catalog("qwen3-30b-a3b")).note
    assert "29.0B of its parameters" in note and "NF4 per expert" in note and "frozen" in note
    assert models.from_catalog(models.find_catalog("gpt-oss-20b")).note
    assert not models.from_catalog(models.find_catalog("qwen3-8b")).note


def _expected_llama_groups(cfg: dict) -> dict:
    h, i, L, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"], cfg["vocab_size"]
    hd = h // cfg["num_attention_heads"]
    q, kv = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd
    groups = {"embeddings": v * h, "attention": L * (h * q + 2 * h * kv + q * h), "mlp": L * 3 * h * i,
              "norms": (2 * L + 1) * h}
    if not cfg.get("tie_word_embeddings"):
        groups["lm_head"] = v * h
    return groups


def test_tiny_model_exact_counts(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM

    info = models.resolve(str(tiny_model_dir))
    cfg = json.loads((tiny_model_dir / "config.json").read_text())
    assert info.params == _expected_llama_groups(cfg)
    real = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
    assert info.total_params == sum(p.numel() for p in real.parameters())
    assert (info.layers, info.hidden, info.heads, info.kv_heads, info.head_dim) == (2, 64, 4, 2, 16)
    assert info.source == "folder" and info.path == str(tiny_model_dir.resolve())
    assert info.has_chat_template and not info.tied
    assert models.ModelInfo.from_dict(json.loads(json.dumps(info.to_dict()))) == info
    lm_head = [g for g in info.linears if g.name == "lm_head"]
    assert lm_head and not lm_head[0].quantized and not lm_head[0].lora_all_linear
    assert {g.name for g in info.linears if g.lora_all_linear} == {
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


def test_tied_model_counts_embeddings_once(tmp_path):
    folder = tiny.make_model(tmp_path / "tied", tie=True, hidden=32)
    info = models.resolve(str(folder))
    assert info.tied and "lm_head" not in info.params
    cfg = json.loads((folder / "config.json").read_text())
    assert info.params == _expected_llama_groups(cfg)


def test_counts_are_cached_per_config(tiny_model_dir, monkeypatch):
    models.resolve(str(tiny_model_dir))  # fills the cache in this test's LORA_STUDIO_HOME
    monkeypatch.setattr(models, "count_parameters", lambda *a, **k: pytest.fail("cache not used"))
    assert models.resolve(str(tiny_model_dir)).total_params > 0


def test_demo_before_conversion_uses_the_catalog_shapes():
    info = models.resolve("demo")
    assert info.name == "demo" and info.source == "demo" and "not converted" in info.note
    assert info.vocab == 49152 and info.tied and info.layers == 30


def test_hf_cache_id_is_read_from_the_local_cache(tmp_path, tiny_model_dir, monkeypatch):
    cache = tmp_path / "hub"
    snap = cache / "models--acme--tiny-llama" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    shutil.copy(tiny_model_dir / "config.json", snap / "config.json")
    (cache / "models--acme--tiny-llama" / "refs").mkdir()
    (cache / "models--acme--tiny-llama" / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(cache))
    info = models.resolve("acme/tiny-llama")
    assert info.source == "hf-cache" and info.name == "acme/tiny-llama" and info.hidden == 64


def test_hf_id_not_cached_falls_back_to_the_catalog(tmp_path, monkeypatch):
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "empty"))
    info = models.resolve("Qwen/Qwen2.5-7B-Instruct")
    assert info.source == "catalog" and info.name == "qwen2.5-7b-instruct"


@pytest.mark.parametrize("name, words", [
    ("no-such-model-anywhere", ["not found", "lora-studio models"]),
    ("", ["no model given"]),
    ("weights.gguf", ["GGUF", "config.json"]),
])
def test_resolve_errors_say_what_to_do(name, words):
    with pytest.raises(models.ModelError) as e:
        models.resolve(name)
    for w in words:
        assert w in str(e.value)


def test_bad_config_json_names_the_file(tmp_path):
    (tmp_path / "config.json").write_text("{ not json")
    with pytest.raises(models.ModelError, match="config.json: not valid JSON at line 1"):
        models.resolve(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(models.ModelError, match="hidden_size or vocab_size"):
        models.resolve(str(tmp_path))


def test_planning_modules_import_without_torch_or_qt():
    code = ("import sys; import studio.models, studio.memory, studio.planner, studio.hardware; "
            "from studio import planner, models; planner.fit(models.resolve('llama-3.1-8b-instruct'), 24 * 2**30); "
            "bad = [m for m in ('torch', 'transformers', 'PySide6') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parent.parent)


def test_an_entry_the_studio_relies_on_missing_from_the_catalog_says_the_install_is_damaged(monkeypatch):
    """The demo's shape (Model page) and the speed anchor read catalog entries the studio ships: without
    them the error says to reinstall (it was an AttributeError on None)."""
    from studio import modelview, speed

    monkeypatch.setattr(models, "_CATALOG", [e for e in models.catalog()
                                             if e.id not in (models.DEMO_CATALOG_ID, speed.ANCHOR["model"])])
    for call in (modelview.demo_info, speed.gpu_efficiency):
        with pytest.raises(models.ModelError, match="reinstall LoRA Studio"):
            call()
