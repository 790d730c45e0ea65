"""GGUF export of Gemma 4 (``gemma4_text`` and the language model of a ``gemma4`` multimodal checkpoint):
tiny random models written with write_gguf and read back tensor by tensor, the keys and computed tensors
llama.cpp's gemma4 reader needs, and the refusals.

Two shapes: E2B-like (per-layer embeddings, the last two layers reading the KV cache of the two before,
a double-wide MLP there, a final soft-cap) and 26B-A4B-like (keys as values in the full layers with their
own KV head count, MoE blocks beside the dense MLP). Full layers have wider heads than sliding ones, so
a key written for the wrong kind shows. transformers cannot load a gemma4 GGUF: llama.cpp's greedy
check is run on the export (see docs/export.md), not here."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

KINDS = ["sliding_attention", "full_attention"] * 3


def make_gemma4(out_dir: Path, shape: str, seed: int = 0) -> Path:
    """A tiny gemma4_text (``e2b`` or ``moe``) with random norms, scales and a decisive router."""
    import tiny
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    out_dir = Path(out_dir)
    tok = tiny.make_tokenizer(out_dir)
    kw: dict = dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=6,
                    num_attention_heads=4, num_key_value_heads=2, head_dim=16, global_head_dim=32, sliding_window=4,
                    max_position_embeddings=512, layer_types=KINDS, bos_token_id=tok.bos_token_id,
                    eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, tie_word_embeddings=True)
    if shape == "e2b":
        kw.update(hidden_size_per_layer_input=8, vocab_size_per_layer_input=len(tok), num_kv_shared_layers=2,
                  use_double_wide_mlp=True, final_logit_softcapping=30.0)
    else:
        kw.update(hidden_size_per_layer_input=0, attention_k_eq_v=True, num_global_key_value_heads=1,
                  enable_moe_block=True, num_experts=4, top_k_experts=2, moe_intermediate_size=32)
    config = AutoConfig.for_model("gemma4_text", **kw)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("scale"):
                p.normal_(1.0, 0.3)  # a norm or scale left at 1 would hide a wrong one
            if name.endswith("embed_tokens.weight"):
                p.normal_(0.0, 0.5)  # peaked logits: greedy answers of a flat random model tie at every step
            if name.endswith("router.proj.weight"):
                p.normal_(0.0, 3.0)  # a near-uniform router flips experts on rounding
        for name, b in model.named_buffers():
            if name.endswith("layer_scalar"):
                b.normal_(1.0, 0.2)
    model.save_pretrained(out_dir)
    return out_dir


def _reader(path: Path):
    import gguf

    return gguf.GGUFReader(str(path))


def _fields(r) -> dict:
    return {k: f.contents() for k, f in r.fields.items()}


@pytest.mark.parametrize("shape", ["e2b", "moe"])
def test_gemma4_text_gguf(tmp_path, shape):
    import torch
    from transformers import AutoModelForCausalLM

    from studio.export.gguf_writer import write_gguf
    from studio.export.verify import check_gguf_weights

    folder = make_gemma4(tmp_path / "m", shape)
    out = write_gguf(folder, tmp_path / "m-f16.gguf", "f16")
    check = check_gguf_weights(folder, out, "f16")
    assert check.ok, check.summary
    r = _reader(out)
    f = _fields(r)
    tensors = {t.name: t for t in r.tensors}
    assert f["general.architecture"] == "gemma4"
    assert (f["gemma4.attention.key_length"], f["gemma4.attention.key_length_swa"]) == (32, 16)
    assert (f["gemma4.rope.dimension_count"], f["gemma4.rope.dimension_count_swa"]) == (32, 16)
    assert f["gemma4.rope.freq_base"] == pytest.approx(1e6) and f["gemma4.rope.freq_base_swa"] == pytest.approx(1e4)
    assert f["gemma4.attention.sliding_window"] == 4
    assert f["gemma4.attention.sliding_window_pattern"] == [k == "sliding_attention" for k in KINDS]
    assert "output.weight" not in tensors and not any(n.startswith("blk.6.") for n in tensors)
    for i in range(6):  # transformers' layer_scalar buffer is llama.cpp's per-layer output scale
        assert f"blk.{i}.layer_output_scale.weight" in tensors

    # proportional rope: llama.cpp turns pair i by base^(-2i/32) / rope_freqs[i]; transformers' full layers
    # by inv_freq[i] (0 for the pairs it leaves unturned)
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    want = model.model.rotary_emb.full_attention_inv_freq
    factors = torch.tensor(tensors["rope_freqs.weight"].data.copy())
    got = 1e6 ** (-torch.arange(0, 32, 2, dtype=torch.float64) / 32) / factors.double()
    assert torch.allclose(got.float(), want, rtol=1e-5, atol=1e-12) and (want == 0).sum() == 12

    if shape == "e2b":
        assert f["gemma4.attention.shared_kv_layers"] == 2
        assert f["gemma4.embedding_length_per_layer_input"] == 8
        assert f["gemma4.feed_forward_length"] == [128] * 4 + [256] * 2  # double-wide in the shared layers
        assert f["gemma4.final_logit_softcapping"] == pytest.approx(30.0)
        assert tuple(tensors["per_layer_token_embd.weight"].shape) == (48, 384)  # ggml order: (row, rows)
        assert "blk.3.attn_k.weight" in tensors and "blk.4.attn_k.weight" not in tensors
        assert {"blk.0.inp_gate.weight", "blk.0.proj.weight", "blk.0.post_norm.weight",
                "per_layer_model_proj.weight", "per_layer_proj_norm.weight"} <= set(tensors)
    else:
        assert f["gemma4.attention.head_count_kv"] == [2, 1] * 3
        assert (f["gemma4.expert_count"], f["gemma4.expert_used_count"]) == (4, 2)
        assert f["gemma4.expert_feed_forward_length"] == 32
        assert "blk.1.attn_v.weight" not in tensors and "blk.0.attn_v.weight" in tensors  # keys as values
        assert tuple(tensors["blk.0.ffn_gate_up_exps.weight"].shape) == (64, 64, 4)
        assert {"blk.0.ffn_gate_inp.scale", "blk.0.ffn_down_exps.scale", "blk.0.pre_ffw_norm_2.weight",
                "blk.0.post_ffw_norm_1.weight", "blk.0.post_ffw_norm_2.weight"} <= set(tensors)

    q = write_gguf(folder, tmp_path / "m-q4_k_m.gguf", "q4_k_m")
    check = check_gguf_weights(folder, q, "q4_k_m")
    assert check.ok, check.summary
    types = {t.name: t.tensor_type.name for t in _reader(q).tensors}
    if shape == "moe":
        assert types["blk.0.ffn_gate_inp.weight"] == "F32"  # routers stay unrounded, as llama.cpp keeps them
    else:
        assert types["per_layer_model_proj.weight"] == "F16"


def test_gemma4_multimodal_gguf(tmp_path):
    """The language model of a Gemma4ForConditionalGeneration checkpoint (``model.language_model.*``)."""
    import tiny

    from studio.export.gguf_writer import write_gguf
    from studio.export.verify import check_gguf_weights

    folder = tiny.make_multimodal(tmp_path / "mm", "gemma4")
    out = write_gguf(folder, tmp_path / "mm-q8_0.gguf", "q8_0")
    check = check_gguf_weights(folder, out, "q8_0")
    assert check.ok, check.summary
    r = _reader(out)
    f = _fields(r)
    names = {t.name for t in r.tensors}
    assert f["general.architecture"] == "gemma4" and f["gemma4.attention.shared_kv_layers"] == 2
    assert not any("vision" in n or "mm" in n.split(".")[0] for n in names)
    assert "per_layer_token_embd.weight" in names and "blk.3.attn_k.weight" not in names


BASE = {"model_type": "gemma4_text", "num_hidden_layers": 4, "hidden_size": 64, "num_attention_heads": 4,
        "num_key_value_heads": 2, "head_dim": 16, "global_head_dim": 32, "vocab_size": 384,
        "layer_types": ["sliding_attention", "full_attention"] * 2}


@pytest.mark.parametrize("change,match", [
    ({"num_kv_shared_layers": 1}, "shared-KV"),  # layer 2 (sliding) then none: llama.cpp would read layer 1
    ({"use_bidirectional_attention": "all"}, "bidirectional"),
    ({"hidden_size_per_layer_input": 8, "vocab_size_per_layer_input": 262144}, "per-layer embeddings"),
    ({"attention_bias": True}, "biases"),
    ({"layer_types": ["full_attention"] * 4}, "sliding"),
    ({"hidden_activation": "silu"}, "GELU"),
], ids=["shared-order", "bidirectional", "ple-vocab", "bias", "no-sliding", "silu"])
def test_gemma4_refusals(change, match):
    from studio.export.errors import UnsupportedModel
    from studio.export.gguf_writer import check_supported

    check_supported(BASE)
    check_supported({**BASE, "num_kv_shared_layers": 2})  # layers 0 (sliding) and 1 (full) keep the cache
    with pytest.raises(UnsupportedModel, match=match):
        check_supported({**BASE, **change})
    multimodal = {"model_type": "gemma4", "architectures": ["Gemma4ForConditionalGeneration"],
                  "text_config": {k: v for k, v in {**BASE, **change}.items()}}
    with pytest.raises(UnsupportedModel, match=match):
        check_supported(multimodal)


# Gemma 4's chat template as google ships it (26B/31B), shortened to string contents without tools or images:
# a system turn of its own, and with thinking off an empty thought channel after the generation prompt
GEMMA4_TEMPLATE = (
    "{{- bos_token -}}{%- set loop_messages = messages -%}"
    "{%- if messages[0]['role'] in ['system', 'developer'] -%}"
    "{{- '<|turn>system\\n' -}}{{- messages[0]['content'] | trim -}}{{- '<turn|>\\n' -}}"
    "{%- set loop_messages = messages[1:] -%}{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{- '<|turn>' + role + '\\n' -}}{{- message['content'] | trim -}}{{- '<turn|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|turn>model\\n' -}}"
    "{%- if not enable_thinking | default(false) -%}{{- '<|channel>thought\\n<channel|>' -}}{%- endif -%}"
    "{%- endif -%}"
)
TURN_TOKENS = ("<|turn>", "<turn|>", "<|channel>", "<channel|>")


@pytest.mark.parametrize("channel", [True, False], ids=["thought-channel", "plain"])
def test_gemma4_ollama_template(tmp_path, channel):
    from test_gguf_gemma import gemma_tokenizer

    from studio.export.ollama import PROBES, detect_chat, modelfile, ollama_render

    template = GEMMA4_TEMPLATE if channel else GEMMA4_TEMPLATE.replace("<|channel>thought\\n<channel|>", "")
    tok = gemma_tokenizer(tmp_path, template, TURN_TOKENS)
    chat = detect_chat(tok)
    assert chat.family.name == ("gemma4" if channel else "gemma4-plain") and chat.system is None
    assert chat.checked == len(PROBES)  # a system turn of its own: every probe compared
    assert ollama_render(chat.family, PROBES[1], None) == (
        "<|turn>system\nAnswer briefly.<turn|>\n<|turn>user\nName a colour.<turn|>\n<|turn>model\n"
        + ("<|channel>thought\n<channel|>" if channel else ""))
    text = modelfile("m.gguf", chat, ["<eos>"], {"temperature": 0})
    assert 'PARAMETER stop "<turn|>"' in text and 'PARAMETER stop "<eos>"' in text


def spm_bpe_tokenizer(out_dir: Path):
    """Gemma 4's tokenizer kind, small: BPE over raw UTF-8 with spaces as '▁' (a normalizer, no
    pre-tokenizer), byte-fallback tokens <0x00>..<0xFF> in the vocabulary, special and turn tokens added."""
    import tiny
    from tokenizers import Tokenizer, decoders, models, normalizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<eos>", "<bos>", "<unk>", *TURN_TOKENS]
    tok = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>", fuse_unk=True))
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=specials + [f"<0x{i:02X}>" for i in range(256)],
                                  show_progress=False)
    tok.train_from_iterator([t.replace(" ", "▁") for t in tiny._CORPUS * 4], trainer=trainer)
    data = json.loads(tok.to_str())
    data["added_tokens"] = [a for a in data["added_tokens"] if not a["content"].startswith("<0x")]  # vocabulary
    tok = Tokenizer.from_str(json.dumps(data))
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                                   unk_token="<unk>")
    fast.chat_template = GEMMA4_TEMPLATE
    fast.save_pretrained(out_dir)
    return fast


def test_gemma4_tokenizer_model(tmp_path):
    """A byte-fallback BPE tokenizer.json on Gemma 4 is written as llama.cpp's ``gemma4`` tokenizer model
    (BPE merges over raw UTF-8, spaces as '▁'), not as SentencePiece: byte tokens BYTE, turn tokens whole
    (CONTROL), the thought-channel markers printed (USER_DEFINED) as llama.cpp's converter marks them."""
    import gguf
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from studio.export.gguf_writer import write_gguf
    from studio.export.verify import check_gguf_vocab

    tok = spm_bpe_tokenizer(tmp_path)
    config = AutoConfig.for_model("gemma4_text", vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                  num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, head_dim=16,
                                  global_head_dim=16, hidden_size_per_layer_input=0, pad_token_id=0, eos_token_id=1,
                                  bos_token_id=2, layer_types=["sliding_attention", "full_attention"])
    AutoModelForCausalLM.from_config(config, dtype=torch.float32).save_pretrained(tmp_path)
    out = write_gguf(tmp_path, tmp_path / "t.gguf", "f16")
    check = check_gguf_vocab(tmp_path, out)
    assert check.ok, check.summary
    f = _fields(_reader(out))
    assert (f["tokenizer.ggml.model"], f["tokenizer.ggml.pre"]) == ("gemma4", "gemma4")
    assert len(f["tokenizer.ggml.merges"]) > 100 and f["tokenizer.ggml.add_bos_token"] is True
    kinds = dict(zip(f["tokenizer.ggml.tokens"], f["tokenizer.ggml.token_type"]))
    T = gguf.TokenType
    assert kinds["<0x0A>"] == T.BYTE and kinds["<bos>"] == T.CONTROL and kinds["<|turn>"] == T.CONTROL
    assert kinds["<|channel>"] == T.USER_DEFINED and kinds["<channel|>"] == T.USER_DEFINED
    assert any("▁" in t and kinds[t] == T.NORMAL for t in kinds)
