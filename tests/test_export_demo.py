"""The demo model (real SmolLM2-135M-Instruct: BPE with merges, 'smollm' pre-tokenizer, tied
embeddings, ChatML with a default system prompt) exported to Ollama: GGUF greedy tokens equal the
merged model's when read back by transformers, and the Modelfile reproduces the chat template."""
from __future__ import annotations

import re

import pytest

from test_export import _gguf_fields, make_run

pytestmark = pytest.mark.slow


def test_demo_model_ollama_export_round_trips(demo_model, tmp_path):
    from transformers import AutoTokenizer

    from studio.export import export
    from studio.export.ollama import FAMILIES, PROBES, ollama_render

    run_dir = make_run(tmp_path / "runs", demo_model, four_bit=False, r=4, targets=["q_proj", "v_proj"])
    res = export(run_dir, "ollama", "f16")
    checks = {c["name"]: c for c in res.checks}
    assert checks["gguf_greedy"]["ok"] and checks["gguf_greedy"]["details"]["identical"] == 3
    assert checks["gguf_greedy"]["details"]["tokenizer_match"]

    gguf_path = res.path / "model-f16.gguf"
    meta = _gguf_fields(gguf_path)
    assert meta["tokenizer.ggml.pre"] == "smollm" and meta["tokenizer.ggml.model"] == "gpt2"
    assert meta["tokenizer.ggml.eos_token_id"] == 2 and meta["tokenizer.ggml.bos_token_id"] == 1
    assert "output.weight" not in meta["_types"]  # tied embeddings: llama.cpp reuses token_embd
    assert meta["llama.attention.head_count_kv"] == 3 and meta["llama.rope.freq_base"] == 100000.0

    tok = AutoTokenizer.from_pretrained(str(demo_model))
    modelfile = (res.path / "Modelfile").read_text()
    assert 'SYSTEM """You are a helpful AI assistant named SmolLM, trained by Hugging Face"""' in modelfile
    assert re.search(r'PARAMETER stop "<\|im_end\|>"', modelfile)
    chatml = FAMILIES[0]
    for probe in PROBES:
        assert ollama_render(chatml, probe, "You are a helpful AI assistant named SmolLM, trained by Hugging Face") \
            == tok.apply_chat_template(probe, tokenize=False, add_generation_prompt=True)
