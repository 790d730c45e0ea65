"""GGUF export of the Phi family (Phi-2 ``phi``, Phi-3/3.5/4/4-mini ``phi3``) and SmolLM3 (``smollm3``).

One tiny random model per case, written by ``write_gguf`` at f16 and q8_0 and read back by the export's
own check (``check_gguf_weights``), plus the keys llama.cpp reads; plain Phi-3 is also loaded by
transformers from the GGUF and its logits compared (transformers' GGUF reader knows neither phi2,
smollm3, partial rotary nor LongRoPE). Greedy text in llama.cpp itself: docs/export.md.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import tiny

from studio.export.errors import UnsupportedModel

# Phi-3.5-mini's chat template, as in its tokenizer_config.json
PHI35 = ("{% for message in messages %}{% if message['role'] == 'system' and message['content'] %}"
         "{{'<|system|>\n' + message['content'] + '<|end|>\n'}}{% elif message['role'] == 'user' %}"
         "{{'<|user|>\n' + message['content'] + '<|end|>\n'}}{% elif message['role'] == 'assistant' %}"
         "{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}{% endif %}{% endfor %}"
         "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}")
PHI_SPECIALS = ["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
PAIRS = {"rot": 8, "rot75": 6}  # rotated pairs per head: head_dim 16 at 1.0 and 0.75
# Weight scales that make the tiny models' greedy text depend on positions: at the default init attention
# is nearly uniform and biases drown its output, and GGUFs with the wrong rotary dims, LongRoPE factors or
# rope in SmolLM3's no-rope layer gave the same text in llama.cpp as the right ones.
QK_SCALE, VO_SCALE, EMBED_SCALE, BIAS_STD, NORM_STD = 10.0, 3.0, 3.0, 0.02, 0.3


def phi_tokenizer(folder: Path):
    """The tiny BPE with Phi-3's turn tokens and chat template; ``<|end|>`` ends a turn."""
    tok = tiny.make_tokenizer(folder)
    tok.add_special_tokens({"additional_special_tokens": PHI_SPECIALS})
    tok.eos_token = "<|end|>"
    tok.chat_template = PHI35
    tok.save_pretrained(folder)
    return tok


def _longrope(pairs: int, short: float, long: float, **extra) -> dict:
    """LongRoPE with distinct factors per frequency, the context 4x the original one (as Phi-3.5-mini)."""
    return dict(max_position_embeddings=2048, original_max_position_embeddings=512, rope_parameters=dict(
        rope_type="longrope", rope_theta=10000.0, original_max_position_embeddings=512, **extra,
        short_factor=[round(1.0 + short * (i + 1), 3) for i in range(pairs)],
        long_factor=[round(1.0 + long * (i + 1), 3) for i in range(pairs)]))


CASES = {
    "phi": dict(partial_rotary_factor=0.5, num_key_value_heads=4),  # Phi-2: biases everywhere, 8 of 16 dims rotated
    "phi3": {},
    "phi3_longrope": _longrope(PAIRS["rot"], 0.05, 0.5),  # Phi-3.5-mini
    # Phi-4-mini: 3/4 of each head rotated, LongRoPE, output tied to the embeddings
    "phi3_partial": dict(_longrope(PAIRS["rot75"], 0.1, 0.3, partial_rotary_factor=0.75), tie_word_embeddings=True),
    "smollm3": dict(num_hidden_layers=4),  # layer 4 attends without rotary embeddings
}


def make_case(folder: Path, case: str) -> Path:
    """A tiny model of ``case`` (weights as ``_reshape_weights`` leaves them), saved with the Phi tokenizer
    (the Phi cases) or the ChatML one."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    model_type = case.split("_")[0]
    tok = phi_tokenizer(folder) if model_type.startswith("phi") else tiny.make_tokenizer(folder)
    kw = dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=False,
              bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    config = AutoConfig.for_model(model_type, **{**kw, **CASES[case]})
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():
        for name, p in model.named_parameters():
            _reshape_weights(name, p, v_rows=config.num_key_value_heads * 16)
    model.save_pretrained(folder)
    return folder


def _reshape_weights(name: str, p, v_rows: int) -> None:
    """Random norms and biases (a bias left out or a norm written as ones shows in the read-back) and the
    scales above (``v_rows``: the value rows at the end of a fused qkv_proj)."""
    import torch

    if p.dim() == 1:
        norm = name.endswith("norm.weight")
        p.copy_(float(norm) + (NORM_STD if norm else BIAS_STD) * torch.randn_like(p))
    elif name.endswith(("q_proj.weight", "k_proj.weight")):
        p.mul_(QK_SCALE)
    elif name.endswith("qkv_proj.weight"):
        p[:-v_rows].mul_(QK_SCALE)
        p[-v_rows:].mul_(VO_SCALE)
    elif name.endswith(("v_proj.weight", "o_proj.weight", "dense.weight")):
        p.mul_(VO_SCALE)
    elif name.endswith("embed_tokens.weight"):
        p.mul_(EMBED_SCALE)


def _fields(path: Path) -> dict:
    from studio.export.gguf_readback import gguf_reader

    reader = gguf_reader(path)
    return {**{k: v for k, v in reader.fields.items() if not k.startswith("tokenizer.")},
            "_tensors": {t.name: t for t in reader.tensors}}


@pytest.mark.parametrize("case", list(CASES))
def test_gguf_phi_and_smollm3(case, tmp_path):
    import numpy as np

    from studio.export.gguf_writer import write_gguf
    from studio.export.verify import check_gguf_weights

    folder = make_case(tmp_path / case, case)
    config = json.loads((folder / "config.json").read_text())
    arch = {"phi": "phi2", "smollm3": "smollm3"}.get(case, "phi3")
    for quant in ("f16", "q8_0"):
        path = write_gguf(folder, tmp_path / f"{quant}.gguf", quant)
        check = check_gguf_weights(folder, path, quant)
        assert check.ok, check.summary
    meta = _fields(tmp_path / "f16.gguf")  # keys and computed tensors are the same at every quantisation
    tensors = meta["_tensors"]
    assert meta["general.architecture"] == arch
    rot = {"phi": 8, "phi3_partial": 12}.get(case, 16)
    assert meta[f"{arch}.rope.dimension_count"] == rot
    if case == "phi":
        assert meta["phi2.attention.layer_norm_epsilon"] == pytest.approx(1e-5)
        for name in ("output.bias", "output_norm.bias", "blk.0.attn_norm.bias", "blk.0.attn_q.bias",
                     "blk.1.attn_output.bias", "blk.1.ffn_up.bias", "blk.1.ffn_down.bias"):
            assert name in tensors, name
        assert not any(".ffn_norm." in n or ".ffn_gate." in n for n in tensors)
    if arch == "phi3":  # fused as llama.cpp reads them: q, k and v rows in one, gate then up in one
        assert tensors["blk.0.attn_qkv.weight"].shape[::-1] == (16 * 4 + 2 * 16 * 2, 64)
        assert tensors["blk.0.ffn_up.weight"].shape[::-1] == (2 * 128, 64)
        assert ("output.weight" in tensors) == (case != "phi3_partial")
        assert meta["phi3.attention.sliding_window"] == 0
    if case.startswith("phi3_"):
        rope = config["rope_parameters"]
        np.testing.assert_array_equal(tensors["rope_factors_short.weight"].data, np.float32(rope["short_factor"]))
        np.testing.assert_array_equal(tensors["rope_factors_long.weight"].data, np.float32(rope["long_factor"]))
        assert len(rope["short_factor"]) == rot // 2
        assert meta["phi3.rope.scaling.original_context_length"] == 512
        # transformers' LongRoPE scale on cos/sin for a 4x longer context
        assert meta["phi3.rope.scaling.attn_factor"] == pytest.approx(np.sqrt(1 + np.log(4) / np.log(512)))
    elif arch == "phi3":
        assert "rope_factors_short.weight" not in tensors and "phi3.rope.scaling.attn_factor" not in meta
    if case == "phi3":
        _same_logits_in_transformers(folder, tmp_path / "f16.gguf")


def _same_logits_in_transformers(folder: Path, path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    ids = torch.tensor([[1, 40, 41, 90, 120, 7, 200, 33]])
    want = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    got = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    with torch.no_grad():
        torch.testing.assert_close(got(ids).logits, want(ids).logits, atol=3e-3, rtol=0)


def test_what_llama_cpp_would_run_differently_is_refused():
    from studio.export.gguf_writer import check_supported

    base = dict(hidden_size=64, num_attention_heads=4, num_hidden_layers=4)
    check_supported({**base, "model_type": "smollm3", "no_rope_layers": [1, 1, 1, 0]})
    with pytest.raises(UnsupportedModel, match="every fourth"):  # llama.cpp skips rope in every 4th layer only
        check_supported({**base, "model_type": "smollm3", "no_rope_layers": [1, 0, 1, 0]})
    with pytest.raises(UnsupportedModel, match="every fourth"):
        check_supported({**base, "model_type": "smollm3", "no_rope_layer_interval": 2})
    with pytest.raises(UnsupportedModel, match="qk_layernorm"):
        check_supported({**base, "model_type": "phi", "qk_layernorm": True})
    longrope = {"rope_type": "longrope", "short_factor": [1.0] * 8, "long_factor": [1.0] * 8,
                "original_max_position_embeddings": 512}
    check_supported({**base, "model_type": "phi3", "rope_parameters": longrope})
    with pytest.raises(UnsupportedModel, match="8 values"):
        check_supported({**base, "model_type": "phi3", "rope_parameters": {**longrope, "short_factor": [1.0] * 6}})
    with pytest.raises(UnsupportedModel, match="longrope"):  # only Phi-3 writes LongRoPE's factor tensors
        check_supported({**base, "model_type": "llama", "rope_parameters": longrope})


def test_ollama_modelfile_for_phi_chat_formats(tmp_path):
    """Phi-3's <|user|>/<|end|> turns, Phi-4-mini's (no newlines) and Phi-4's <|im_sep|> each become a
    Go template that renders every probe conversation exactly as the tokenizer's own template."""
    from studio.export.ollama import detect_chat, modelfile

    tok = phi_tokenizer(tmp_path / "tok")
    chat = detect_chat(tok)
    assert chat.family.name == "phi3" and chat.system is None and chat.checked == 4
    text = modelfile("m.gguf", chat, [tok.eos_token], {})
    assert 'TEMPLATE """{{- range .Messages }}<|{{ .Role }}|>\n{{ .Content }}<|end|>\n' in text
    assert 'PARAMETER stop "<|end|>"' in text and 'PARAMETER stop "<|user|>"' in text
    tok.chat_template = PHI35.replace("|>\n'", "|>'").replace("<|end|>\n'", "<|end|>'")
    assert detect_chat(tok).family.name == "phi4-mini"
    tok.chat_template = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '<|im_sep|>' + "
                         "message['content'] + '<|im_end|>'}}{% endfor %}"
                         "{% if add_generation_prompt %}{{ '<|im_start|>assistant<|im_sep|>' }}{% endif %}")
    assert detect_chat(tok).family.name == "phi4"
