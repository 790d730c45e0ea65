"""GGUF export of gpt-oss: MXFP4 experts copied bit for bit, float experts split and encoded, the YaRN and
sliding-window keys, the harmony chat template in the Ollama Modelfile.

The tiny checkpoint stores its experts as the published gpt-oss does: ``*_blocks`` (experts, rows,
blocks, 16) and ``*_scales`` (experts, rows, blocks) uint8 tensors with ``quantization_config``
``mxfp4``, gate and up rows interleaved in ``gate_up_proj``.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from tiny import make_tokenizer

HARMONY_SPECIALS = ["<|start|>", "<|message|>", "<|end|>", "<|channel|>", "<|return|>", "<|call|>"]
PREAMBLE = "<|start|>system<|message|>Current date: "  # then today's date, as the published template writes it
HARMONY = (
    PREAMBLE + "{{ strftime_now('%Y-%m-%d') }}\n\nReasoning: medium\n\n# Valid channels: analysis, final.<|end|>"
    "{%- for m in messages -%}"
    "{%- if m['role'] == 'system' -%}<|start|>developer<|message|># Instructions\n\n{{ m['content'] }}\n\n<|end|>"
    "{%- elif m['role'] == 'assistant' -%}<|start|>assistant<|channel|>final<|message|>{{ m['content'] }}<|end|>"
    "{%- else -%}<|start|>{{ m['role'] }}<|message|>{{ m['content'] }}<|end|>{%- endif -%}"
    "{%- endfor -%}{%- if add_generation_prompt -%}<|start|>assistant{%- endif -%}"
)


def make_gpt_oss(out: Path, mxfp4: bool = True) -> Path:
    """A 2-layer gpt-oss with 4 experts (random norms, biases and sinks); with ``mxfp4`` its experts are
    random MXFP4 blocks and scales, stored as the published checkpoints store them."""
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForCausalLM, GenerationConfig, GptOssConfig

    out = Path(out)
    tok = make_tokenizer(out)
    tok.add_special_tokens({"additional_special_tokens": HARMONY_SPECIALS})
    tok.eos_token = "<|return|>"
    tok.chat_template = HARMONY
    tok.save_pretrained(out)
    config = GptOssConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, head_dim=16, num_local_experts=4,
                          num_experts_per_tok=2, sliding_window=8, max_position_embeddings=131072,
                          tie_word_embeddings=False, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                          pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.normal_(1.0, 0.2)
            elif name.endswith(("bias", "sinks")):
                p.normal_(0.0, 0.1)
    model.save_pretrained(out)
    GenerationConfig(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                     pad_token_id=tok.pad_token_id).save_pretrained(out)
    if mxfp4:
        weights = load_file(out / "model.safetensors")
        g = torch.Generator().manual_seed(1)
        for name in [n for n in weights if n.endswith(("experts.gate_up_proj", "experts.down_proj"))]:
            n_experts, n_in, n_out = weights.pop(name).shape
            weights[name + "_blocks"] = torch.randint(0, 256, (n_experts, n_out, n_in // 32, 16), dtype=torch.uint8,
                                                      generator=g)
            weights[name + "_scales"] = torch.randint(121, 127, (n_experts, n_out, n_in // 32), dtype=torch.uint8,
                                                      generator=g)
        save_file(weights, out / "model.safetensors", metadata={"format": "pt"})
        cfg = json.loads((out / "config.json").read_text())
        cfg["quantization_config"] = {"quant_method": "mxfp4", "modules_to_not_convert": [
            "model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens", "lm_head"]}
        (out / "config.json").write_text(json.dumps(cfg))
    return out


@pytest.fixture(scope="module")
def mxfp4_dir(tmp_path_factory) -> Path:
    return make_gpt_oss(tmp_path_factory.mktemp("gpt_oss_mxfp4"))


def _checkpoint(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(folder / "model.safetensors")


def test_mxfp4_codec_reads_blocks_as_transformers_and_ggml_do(mxfp4_dir):
    """Our dequantisation of a checkpoint block equals transformers'; the GGML bytes we make from it
    dequantise (gguf package) to the same values."""
    import numpy as np
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize as gguf_dequantize
    from transformers.integrations.mxfp4 import convert_moe_packed_tensors

    from studio.export import mxfp4

    sd = _checkpoint(mxfp4_dir)
    blocks, scales = sd["model.layers.0.mlp.experts.gate_up_proj_blocks"], sd["model.layers.0.mlp.experts.gate_up_proj_scales"]
    ours = mxfp4.dequantize(blocks, scales)
    theirs = convert_moe_packed_tensors(blocks, scales, dtype=__import__("torch").float32)  # (E, in, out)
    assert ours.abs().max() > 0 and bool((ours.transpose(1, 2) == theirs).all())
    ggml = mxfp4.to_ggml(blocks, scales)
    assert ggml.shape == (4, 128, 2 * 17)
    back = gguf_dequantize(ggml, GGMLQuantizationType.MXFP4).reshape(ours.shape)
    assert np.array_equal(back, ours.numpy())


def _blocks_of(data, n_rows: int):
    """GGML MXFP4 bytes (E, rows, n*17) -> scales (E, rows, n) and codes (E, rows, n, 32), unpacked by hand."""
    import numpy as np

    b = np.asarray(data).reshape(data.shape[0], n_rows, -1, 17)
    qs = b[..., 1:]
    return b[..., 0], np.concatenate([qs & 0x0F, qs >> 4], axis=-1)


def test_mxfp4_experts_are_copied_bit_for_bit(mxfp4_dir, tmp_path):
    import numpy as np

    from studio.export.gguf_readback import gguf_reader
    from studio.export.gguf_writer import write_gguf
    from studio.export.verify import check_gguf_weights

    path = write_gguf(mxfp4_dir, tmp_path / "m.gguf", "f16")
    r = gguf_reader(path)
    tensors = {t.name: t for t in r.tensors}
    sd = _checkpoint(mxfp4_dir)
    for layer in range(2):
        pre = f"model.layers.{layer}.mlp.experts."
        fused_b, fused_s = sd[pre + "gate_up_proj_blocks"].numpy(), sd[pre + "gate_up_proj_scales"].numpy()
        for name, rows in ((f"blk.{layer}.ffn_gate_exps.weight", slice(0, None, 2)),
                           (f"blk.{layer}.ffn_up_exps.weight", slice(1, None, 2)),
                           (f"blk.{layer}.ffn_down_exps.weight", slice(None))):
            t = tensors[name]
            assert t.tensor_type.name == "MXFP4"
            b, s = (fused_b, fused_s) if "down" not in name else (sd[pre + "down_proj_blocks"].numpy(),
                                                                   sd[pre + "down_proj_scales"].numpy())
            b, s = b[:, rows], s[:, rows]
            got_scales, got_codes = _blocks_of(t.data, b.shape[1])
            want_codes = np.stack([b & 0x0F, b >> 4], axis=-1).reshape(*b.shape[:-1], 32)  # checkpoint: pairs
            assert np.array_equal(got_scales, s) and np.array_equal(got_codes, want_codes)
        bias = sd[pre + "gate_up_proj_bias"].numpy()
        assert np.array_equal(tensors[f"blk.{layer}.ffn_up_exps.bias"].data, bias[:, 1::2])
        assert np.array_equal(tensors[f"blk.{layer}.ffn_gate_exps.bias"].data, bias[:, 0::2])
    assert np.array_equal(tensors["blk.0.attn_sinks.weight"].data, sd["model.layers.0.self_attn.sinks"].numpy())
    f = r.fields
    assert f["general.architecture"] == "gpt-oss" and f["gpt-oss.attention.sliding_window"] == 8
    assert f["gpt-oss.rope.scaling.type"] == "yarn" and f["gpt-oss.rope.scaling.factor"] == 32.0
    assert f["gpt-oss.rope.scaling.original_context_length"] == 4096 and f["gpt-oss.rope.freq_base"] == 150000.0
    assert f["gpt-oss.expert_feed_forward_length"] == 64 and f["gpt-oss.expert_count"] == 4
    check = check_gguf_weights(mxfp4_dir, path, "f16")
    assert check.ok, check.summary
    assert check.details["worst_rel_error"]["MXFP4"]["error"] == 0.0  # the checkpoint's own values


def test_readback_catches_codes_in_the_checkpoint_order(mxfp4_dir, tmp_path, monkeypatch):
    """The read-back check fails when the nibbles are not moved into ggml's order."""
    import torch

    from studio.export import mxfp4
    from studio.export.gguf_writer import write_gguf
    from studio.export.verify import check_gguf_weights

    def unmoved(blocks, scales):
        out = torch.cat((scales.to(torch.uint8).unsqueeze(-1), blocks), dim=-1)
        return out.reshape(*scales.shape[:-1], -1).numpy()

    monkeypatch.setattr(mxfp4, "to_ggml", unmoved)
    path = write_gguf(mxfp4_dir, tmp_path / "bad.gguf", "f16")
    check = check_gguf_weights(mxfp4_dir, path, "f16")
    assert not check.ok and "ffn_gate_exps" in check.summary


def test_float_experts_split_and_quantised(tmp_path):
    """A dequantised checkpoint (float experts, stored transposed): f16 keeps them F16, q4_k_m encodes them
    as MXFP4; both read back within bounds."""
    from studio.export.gguf_readback import gguf_reader
    from studio.export.gguf_writer import write_gguf
    from studio.export.verify import check_gguf_weights

    folder = make_gpt_oss(tmp_path / "float", mxfp4=False)
    for quant, kind in (("f16", "F16"), ("q4_k_m", "MXFP4")):
        path = write_gguf(folder, tmp_path / f"{quant}.gguf", quant)
        types = {t.name: t.tensor_type.name for t in gguf_reader(path).tensors}
        assert types["blk.1.ffn_up_exps.weight"] == types["blk.1.ffn_down_exps.weight"] == kind
        assert types["blk.1.ffn_down_exps.bias"] == "F32"
        check = check_gguf_weights(folder, path, quant)
        assert check.ok, check.summary


def test_variants_llama_cpp_cannot_run_are_refused(mxfp4_dir):
    from studio.export.errors import UnsupportedModel
    from studio.export.gguf_writer import check_supported

    config = json.loads((mxfp4_dir / "config.json").read_text())
    check_supported(config)
    for change in ({"swiglu_limit": 5.0}, {"layer_types": ["full_attention", "sliding_attention"]},
                   {"rope_parameters": {**config["rope_parameters"], "attention_factor": 2.0}}):
        with pytest.raises(UnsupportedModel):
            check_supported({**config, **change})


def test_harmony_template_becomes_the_modelfile(mxfp4_dir):
    from transformers import AutoTokenizer

    from studio.export.ollama import PROBES, detect_chat, hf_render, modelfile, ollama_render

    tok = AutoTokenizer.from_pretrained(str(mxfp4_dir))
    chat = detect_chat(tok)
    assert chat.family.name == "harmony" and chat.family.template.startswith(PREAMBLE + "{{ currentDate }}\n")
    assert all(ollama_render(chat.family, p, chat.system) == hf_render(tok, p) for p in PROBES)
    text = modelfile("m.gguf", chat, ["<|return|>"], {"top_k": 1})
    assert 'PARAMETER stop "<|return|>"' in text and 'PARAMETER stop "<|call|>"' in text
