"""The K-quant recipes pick each tensor's type as llama.cpp's own quantiser does, MoE and large models included.

``data/llama_quantize_types.json`` holds what ``llama-quantize`` (llama.cpp as vendored in llama-cpp-python 0.3.36,
``llama_tensor_get_type``) chose for Q4_K_M, Q5_K_M and Q6_K from the f16 GGUF the studio wrote of each model below
(written by bench-free script; the types depend on tensor names and shapes only, so the weights here are random):
a 16-layer Llama; an 80-layer Llama with grouped KV heads (llama.cpp's 70B rule: attn_v Q4_K -> Q5_K); Mixtral with
8 experts (attn_v and attn_k Q8_0, attn_output Q5_K); Qwen3-MoE (ffn_down_exps in the layers with more bits); and
Qwen3.5 dense and MoE hybrids (attn_qkv of the linear-attention layers counted with attn_v, in llama.cpp's order).
Rows are 256 wide so that the K-types apply.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import tiny

from studio.export.arches import text_config
from studio.export.gguf_writer import check_supported, plan_tensors

RECORDED = json.loads((Path(__file__).parent / "data" / "llama_quantize_types.json").read_text())


def _qwen35(out: Path, moe: bool) -> Path:
    import torch
    from test_gguf_qwen35 import _text_kw
    from transformers import AutoConfig, AutoModelForCausalLM

    tok = tiny.make_tokenizer(out)
    kw = _text_kw(moe)
    kw.update(hidden_size=256, intermediate_size=512, num_hidden_layers=8, head_dim=64, linear_key_head_dim=64,
              linear_value_head_dim=64, layer_types=(["linear_attention"] * 3 + ["full_attention"]) * 2,
              bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    if moe:
        kw.update(moe_intermediate_size=256, shared_expert_intermediate_size=256)
    config = AutoConfig.for_model("qwen3_5_moe_text" if moe else "qwen3_5_text", **kw)
    AutoModelForCausalLM.from_config(config, dtype=torch.float16).save_pretrained(out)
    return out


CASES = {
    "llama": lambda d: tiny.make_model(d, "llama", hidden=256, layers=16, dtype="float16"),
    "llama70b": lambda d: tiny.make_model(d, "llama", hidden=256, layers=80, dtype="float16"),
    "mixtral8": lambda d: tiny.make_model(d, "mixtral", hidden=256, layers=4, num_local_experts=8,
                                          num_experts_per_tok=2, intermediate_size=256, dtype="float16"),
    "qwen3moe": lambda d: tiny.make_model(d, "qwen3_moe", hidden=256, layers=4, num_experts=4, num_experts_per_tok=2,
                                          moe_intermediate_size=256, head_dim=64, intermediate_size=512,
                                          dtype="float16"),
    "qwen35": lambda d: _qwen35(d, moe=False),
    "qwen35moe": lambda d: _qwen35(d, moe=True),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_tensor_gets_the_type_llama_quantize_gives_it(case, tmp_path):
    folder = CASES[case](tmp_path / case)
    config = json.loads((folder / "config.json").read_text())
    arch = check_supported(text_config(config))
    for recipe in ("q4_k_m", "q5_k_m", "q6_k"):
        ours = {p.gguf_name: p.qtype.name for p in plan_tensors(folder, config, arch, recipe)}
        theirs = RECORDED[f"{case}/{recipe}"]
        assert ours.keys() == theirs.keys()
        assert {n: (t, theirs[n]) for n, t in ours.items() if t != theirs[n]} == {}, recipe
