"""GGUF export of Qwen3.5 (llama.cpp's qwen35 / qwen35moe): Gated DeltaNet and gated full-attention layers.

Tiny models (hidden 64, 4 layers alternating linear and full attention, 2 key heads and 4 value heads
in the linear layers so the V-head reorder has something to move) with every weight random, norms
included, so that a missed +1, a wrong -exp or a wrong reorder changes the numbers checked. The
read-back (``check_gguf_weights``) goes through the writer's own hooks; the tests also check the
layout by hand against what llama.cpp's reader expects. llama.cpp itself answered the f16 files of
these models with the same greedy text as transformers (not in the suite: it needs a llama.cpp build).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tiny import make_tokenizer

LAYERS = ["linear_attention", "full_attention", "linear_attention", "full_attention"]
TILED = [0, 2, 1, 3]  # V heads grouped by key head (k0: v0 v1, k1: v2 v3) as llama.cpp tiles them


def _text_kw(moe: bool) -> dict:
    kw = dict(vocab_size=384, hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
              num_key_value_heads=2, head_dim=16, linear_num_key_heads=2, linear_num_value_heads=4,
              linear_key_head_dim=16, linear_value_head_dim=16, linear_conv_kernel_dim=4, layer_types=LAYERS,
              max_position_embeddings=512, rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                            "partial_rotary_factor": 0.5, "mrope_section": [2, 1, 1]})
    if moe:
        kw.update(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, shared_expert_intermediate_size=48)
    return kw


def _randomise(model, seed: int) -> None:
    """Every parameter random (norms around 0 or 1 as their kind starts), big enough to decide greedy tokens."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.3 if p.dim() == 1 else 0.15) + p.mean())


def make_qwen35(out_dir: Path, moe: bool = False, multimodal: bool = False, seed: int = 0) -> Path:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    out_dir = Path(out_dir)
    tok = make_tokenizer(out_dir)
    kw = _text_kw(moe)
    kw.update(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    if multimodal:
        import transformers

        kind = "qwen3_5_moe" if moe else "qwen3_5"
        config = AutoConfig.for_model(kind, text_config=kw, vision_config=dict(
            depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64, patch_size=4,
            num_position_embeddings=16))
        cls = transformers.Qwen3_5MoeForConditionalGeneration if moe else transformers.Qwen3_5ForConditionalGeneration
        torch.manual_seed(seed)
        model = cls(config)
    else:
        config = AutoConfig.for_model("qwen3_5_moe_text" if moe else "qwen3_5_text", **kw)
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    _randomise(model, seed)
    model.save_pretrained(out_dir, safe_serialization=True)
    return out_dir


def _write(folder: Path, quant: str) -> tuple[Path, object]:
    from gguf import GGUFReader

    from studio.export.gguf_writer import write_gguf
    from studio.export.verify import check_gguf_weights

    out = write_gguf(folder, folder / f"model-{quant}.gguf", quant)
    check = check_gguf_weights(folder, out, quant)
    assert check.ok, check.summary
    return out, GGUFReader(str(out))


def _tensors(reader) -> dict:
    from gguf.quants import dequantize

    return {t.name: dequantize(t.data, t.tensor_type).reshape([int(x) for x in reversed(t.shape)])
            for t in reader.tensors}


def _field(reader, key: str):
    return reader.fields[key].contents()


def _stored(folder: Path) -> dict:
    from safetensors.numpy import load_file

    return load_file(str(folder / "model.safetensors"))


@pytest.fixture(scope="module")
def dense(tmp_path_factory) -> Path:
    return make_qwen35(tmp_path_factory.mktemp("qwen35"))


def test_dense_layout_keys_and_read_back(dense):
    _, reader = _write(dense, "f16")
    got, hf = _tensors(reader), _stored(dense)
    arch = "qwen35"
    assert _field(reader, "general.architecture") == arch
    assert _field(reader, f"{arch}.ssm.conv_kernel") == 4 and _field(reader, f"{arch}.ssm.state_size") == 16
    assert _field(reader, f"{arch}.ssm.group_count") == 2 and _field(reader, f"{arch}.ssm.time_step_rank") == 4
    assert _field(reader, f"{arch}.ssm.inner_size") == 64
    assert _field(reader, f"{arch}.attention.recurrent_layers") == [True, False, True, False]
    assert _field(reader, f"{arch}.full_attention_interval") == 2
    assert _field(reader, f"{arch}.rope.dimension_count") == 8  # head 16 x partial_rotary_factor 0.5
    assert _field(reader, f"{arch}.rope.dimension_sections") == [2, 1, 1, 0]
    # linear layer 0: what llama.cpp's reader expects, computed here by hand
    L = "model.layers.0.linear_attn."
    heads = np.array(TILED)
    np.testing.assert_allclose(got["blk.0.ssm_a"], -np.exp(hf[L + "A_log"][heads]), rtol=1e-6)
    np.testing.assert_allclose(got["blk.0.ssm_dt.bias"], hf[L + "dt_bias"][heads], rtol=1e-6)
    np.testing.assert_allclose(got["blk.0.ssm_norm.weight"], hf[L + "norm.weight"], rtol=1e-6)  # gated norm: as stored
    v_rows = (heads[:, None] * 16 + np.arange(16)).reshape(-1)  # head-sized blocks in the tiled order
    qkv = hf[L + "in_proj_qkv.weight"]
    want_qkv = np.concatenate([qkv[:64], qkv[64:][v_rows]])
    np.testing.assert_allclose(got["blk.0.attn_qkv.weight"], want_qkv, atol=2e-3)
    np.testing.assert_allclose(got["blk.0.attn_gate.weight"], hf[L + "in_proj_z.weight"][v_rows], atol=2e-3)
    np.testing.assert_allclose(got["blk.0.ssm_beta.weight"], hf[L + "in_proj_b.weight"][heads], atol=2e-3)
    np.testing.assert_allclose(got["blk.0.ssm_alpha.weight"], hf[L + "in_proj_a.weight"][heads], atol=2e-3)
    np.testing.assert_allclose(got["blk.0.ssm_out.weight"], hf[L + "out_proj.weight"][:, v_rows], atol=2e-3)
    conv = hf[L + "conv1d.weight"][:, 0, :]
    assert got["blk.0.ssm_conv1d.weight"].shape == (128, 4)
    np.testing.assert_array_equal(got["blk.0.ssm_conv1d.weight"], np.concatenate([conv[:64], conv[64:][v_rows]]))
    # norms of the (1 + w) kind get +1; the gated q projection (query and gate per head) stays as stored
    np.testing.assert_allclose(got["blk.1.attn_q_norm.weight"], hf["model.layers.1.self_attn.q_norm.weight"] + 1, rtol=1e-6)
    np.testing.assert_allclose(got["blk.1.post_attention_norm.weight"],
                               hf["model.layers.1.post_attention_layernorm.weight"] + 1, rtol=1e-6)
    np.testing.assert_allclose(got["output_norm.weight"], hf["model.norm.weight"] + 1, rtol=1e-6)
    np.testing.assert_allclose(got["blk.1.attn_q.weight"], hf["model.layers.1.self_attn.q_proj.weight"], atol=2e-3)
    assert "blk.1.attn_qkv.weight" not in got and "blk.0.attn_q.weight" not in got
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert types["blk.0.ssm_conv1d.weight"] == "F32"


def test_dense_quantised_and_mtp_left_out(dense, tmp_path):
    """A checkpoint carrying a multi-token-prediction head (mtp.*): llama.cpp's model has no place for it."""
    import shutil

    from safetensors.numpy import save_file

    folder = tmp_path / "with-mtp"
    shutil.copytree(dense, folder)
    hf = _stored(folder)
    hf["mtp.fc.weight"] = np.ones((64, 128), dtype=np.float32)
    hf["mtp.layers.0.input_layernorm.weight"] = np.ones(64, dtype=np.float32)
    save_file(hf, str(folder / "model.safetensors"), metadata={"format": "pt"})
    _, reader = _write(folder, "q4_k_m")
    names = [t.name for t in reader.tensors]
    assert len(names) == len(set(names)) == 53 and not any("nextn" in n or "eh_proj" in n for n in names)
    assert "blk.4.attn_norm.weight" not in names


def test_moe_shared_expert(tmp_path):
    folder = make_qwen35(tmp_path / "moe", moe=True, seed=1)
    _, reader = _write(folder, "q8_0")
    got, hf = _tensors(reader), _stored(folder)
    assert _field(reader, "general.architecture") == "qwen35moe"
    assert _field(reader, "qwen35moe.expert_count") == 4 and _field(reader, "qwen35moe.expert_used_count") == 2
    assert _field(reader, "qwen35moe.expert_feed_forward_length") == 32
    assert _field(reader, "qwen35moe.expert_shared_feed_forward_length") == 48
    assert got["blk.2.ffn_gate_exps.weight"].shape == (4, 32, 64)
    assert got["blk.2.ffn_down_shexp.weight"].shape == (64, 48)
    gate = got["blk.2.ffn_gate_inp_shexp.weight"]  # (1, hidden) in transformers, a vector in llama.cpp
    assert gate.shape == (64,)
    np.testing.assert_allclose(gate, hf["model.layers.2.mlp.shared_expert_gate.weight"][0], rtol=1e-6)
    np.testing.assert_allclose(got["blk.3.ffn_up_exps.weight"][2], hf["model.layers.3.mlp.experts.2.up_proj.weight"],
                               atol=0.02)
    # a checkpoint with fused experts (3-D gate_up_proj, gate rows first) is written fused, as llama.cpp reads it
    from safetensors.numpy import save_file

    fused = {k: v for k, v in hf.items() if ".mlp.experts." not in k}
    for layer in range(4):
        pre = f"model.layers.{layer}.mlp.experts."
        fused[pre + "gate_up_proj"] = np.stack([np.concatenate([hf[f"{pre}{e}.gate_proj.weight"],
                                                                hf[f"{pre}{e}.up_proj.weight"]]) for e in range(4)])
        fused[pre + "down_proj"] = np.stack([hf[f"{pre}{e}.down_proj.weight"] for e in range(4)])
    save_file(fused, str(folder / "model.safetensors"), metadata={"format": "pt"})
    _, reader = _write(folder, "f16")
    got = _tensors(reader)
    assert "blk.1.ffn_gate_exps.weight" not in got and got["blk.1.ffn_gate_up_exps.weight"].shape == (4, 64, 64)
    np.testing.assert_allclose(got["blk.1.ffn_gate_up_exps.weight"][3, 32:],
                               hf["model.layers.1.mlp.experts.3.up_proj.weight"], atol=2e-3)
    np.testing.assert_allclose(got["blk.1.ffn_down_exps.weight"][3], hf["model.layers.1.mlp.experts.3.down_proj.weight"],
                               atol=2e-3)


def test_conditional_generation_writes_the_language_model_only(tmp_path):
    folder = make_qwen35(tmp_path / "vl", multimodal=True, seed=2)
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "qwen3_5" and any(k.startswith("model.visual.") for k in _stored(folder))
    _, reader = _write(folder, "f16")
    names = [t.name for t in reader.tensors]
    assert len(names) == 53 and all(n.startswith(("blk.", "token_embd", "output")) for n in names)
    assert _field(reader, "general.architecture") == "qwen35"
    got, hf = _tensors(reader), _stored(folder)
    np.testing.assert_allclose(got["blk.2.ssm_a"],
                               -np.exp(hf["model.language_model.layers.2.linear_attn.A_log"][np.array(TILED)]), rtol=1e-6)


@pytest.mark.parametrize("change, message", [
    ({"linear_value_head_dim": 32}, "key and value head sizes"),
    ({"layer_types": ["linear_attention"] * 4}, "both linear and full attention"),
])
def test_configs_llama_cpp_cannot_run_are_refused(change, message):
    from studio.export.errors import UnsupportedModel
    from studio.export.gguf_writer import check_supported

    config = dict(_text_kw(False), model_type="qwen3_5_text", **change)
    with pytest.raises(UnsupportedModel, match=message):
        check_supported(config)


def test_rope_sections_cover_every_rotary_pair():
    """llama.cpp turns a pair no section covers by another position than the token's (the logits drift)."""
    from studio.export.arches.qwen35 import rope_sections

    def config(partial: float, head: int = 16, sections: list | None = None) -> dict:
        rope = {"partial_rotary_factor": partial, **({"mrope_section": sections} if sections else {})}
        return {"head_dim": head, "rope_parameters": rope}

    assert rope_sections(config(0.25, 256)) == [11, 11, 10, 0]  # Qwen3.5's own: kept
    assert rope_sections(config(0.5, sections=[2, 1, 1])) == [2, 1, 1, 0]
    assert rope_sections(config(0.5, sections=[4, 0, 0])) == [2, 1, 1, 0]  # leaves pairs 1 and 2 uncovered
    assert rope_sections(config(0.25)) == [1, 1, 0, 0]  # the default [11, 11, 10] is wider than the head


def test_lora_gguf_pairs_follow_the_reordered_weights(dense, tmp_path):
    """base GGUF + the LoRA GGUF applied as llama.cpp applies it == the merged model's GGUF, on the
    V-head-reordered weights (rows of attn_qkv / attn_gate, columns of ssm_out) as on the others."""
    import sys

    import gguf

    sys.path.insert(0, str(Path(__file__).parent))
    from test_export import make_run

    from studio.export.adapter import load_adapter
    from studio.export.gguf_writer import write_gguf
    from studio.export.lora_gguf import read_lora_gguf, write_lora_gguf
    from studio.export.merge import merge_to_folder
    from studio.export.verify import check_lora_gguf

    run = make_run(tmp_path / "runs", dense, four_bit=False, r=4,
                   targets=["in_proj_qkv", "in_proj_z", "out_proj", "q_proj", "down_proj"])
    adapter = load_adapter(run / "adapter")
    lora = write_lora_gguf(adapter, dense, tmp_path / "adapter.gguf")
    check = check_lora_gguf(adapter, dense, lora)
    assert check.ok, check.summary
    meta, pairs = read_lora_gguf(lora)
    assert {f"{n}.weight" for n in ("blk.0.attn_qkv", "blk.0.attn_gate", "blk.0.ssm_out", "blk.1.attn_q")} <= set(pairs)
    merged_dir = tmp_path / "merged"
    merged_dir.mkdir()
    merge_to_folder(dense, adapter, merged_dir)
    write_gguf(dense, tmp_path / "base.gguf", "f16")
    write_gguf(merged_dir, tmp_path / "merged.gguf", "f16")

    def read(path: Path) -> dict:
        return {t.name: np.asarray(t.data, dtype=np.float32) for t in gguf.GGUFReader(str(path)).tensors}

    base, merged = read(tmp_path / "base.gguf"), read(tmp_path / "merged.gguf")
    alpha = meta["adapter.lora.alpha"]
    for name, (a, b) in pairs.items():
        assert np.abs(merged[name] - base[name]).max() > 1e-3
        np.testing.assert_allclose(base[name] + alpha / a.shape[0] * (b @ a), merged[name], atol=4e-3)


# Qwen3.5's chat template reduced to what the probes reach: ChatML turns, the reasoning of earlier
# assistant turns dropped, and a generation prompt that opens <think> unless thinking is turned off.
QWEN35_CHAT = (
    "{%- for message in messages %}"
    "{%- if message.role == 'assistant' %}"
    "{%- set content = message.content.split('</think>')[-1].lstrip('\\n') %}"
    "{{- '<|im_start|>assistant\\n' + content + '<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}"
    "{%- else %}{{- '<think>\\n' }}{%- endif %}{%- endif %}"
)


def test_ollama_template_for_the_thinking_chat_format(tmp_path):
    from studio.export.ollama import detect_chat, hf_render, ollama_render

    tok = make_tokenizer(tmp_path / "tok")
    tok.chat_template = QWEN35_CHAT
    chat = detect_chat(tok)
    assert chat.family.name == "chatml-think" and chat.system is None and chat.family.stops[0] == "<|im_end|>"
    talk = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": "Bye"}]
    assert ollama_render(chat.family, talk, None) == hf_render(tok, talk)
    assert ollama_render(chat.family, talk, None).endswith("<|im_start|>assistant\n<think>\n")
