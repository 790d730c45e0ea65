"""GGUF export of the Gemma families (gemma, gemma2, gemma3_text, the language model of a multimodal
gemma3 checkpoint): tiny random models written with write_gguf, read back tensor by tensor, the GGUF
keys llama.cpp reads, logits of the GGUF loaded by transformers, and the Ollama chat template.

Norms are random so a missing ``+1`` shows in the logits; the sliding window is shorter than the
prompt and the layer pattern is not llama.cpp's default, so those keys matter to llama.cpp."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from tiny import _CORPUS

# Gemma 3's chat template (a system message heads the first user turn), as google ships it, shortened
# to string contents; Gemma 2's refuses a system message.
GEMMA3_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}{%- set first_user_prefix = '' -%}{%- set loop_messages = messages -%}{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{%- endif -%}"
    "{%- if (message['role'] == 'assistant') -%}{%- set role = 'model' -%}"
    "{%- else -%}{%- set role = message['role'] -%}{%- endif -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}"
    "{{ message['content'] | trim }}{{ '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{'<start_of_turn>model\n'}}{%- endif -%}"
)
GEMMA2_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
    "{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"
)
SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
IMAGE_TOKENS = ("<start_of_image>", "<end_of_image>", "<image_soft_token>")
IDS = [2, 40, 41, 90, 120, 7, 200, 33, 61, 150, 11, 77]  # longer than the tiny sliding window (4)


def gemma_tokenizer(out_dir: Path, template: str = GEMMA3_TEMPLATE, extra: tuple[str, ...] = ()):
    """A byte-level BPE with Gemma's special tokens (and ``extra`` ones), adding <bos> as Gemma's does."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=384, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", pair="<bos> $A <bos> $B",
                                                       special_tokens=[("<bos>", 2)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                                   unk_token="<unk>")
    fast.add_special_tokens({"additional_special_tokens": list(extra)})
    fast.chat_template = template
    fast.save_pretrained(out_dir)
    return fast


def _text_kw(vocab: int, model_type: str) -> dict:
    kw: dict = dict(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                    num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=512,
                    pad_token_id=0, eos_token_id=1, bos_token_id=2, rms_norm_eps=1e-6)
    if model_type in ("gemma2", "gemma3_text"):
        kw.update(query_pre_attn_scalar=16, sliding_window=4,
                  layer_types=["sliding_attention", "full_attention", "full_attention", "sliding_attention"])
    if model_type == "gemma2":
        kw.update(attn_logit_softcapping=2.0, final_logit_softcapping=3.0)
    if model_type == "gemma3_text":
        kw.update(rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                                   "full_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 100000.0}})
    return kw


def make_gemma(out_dir: Path, model_type: str, seed: int = 0, template: str = GEMMA3_TEMPLATE,
               norm_std: float = 0.4) -> Path:
    """A tiny Gemma of ``model_type`` (``gemma3`` is the multimodal checkpoint) with random norms."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText

    out_dir = Path(out_dir)
    # a multimodal Gemma 3's tokenizer has its image tokens (every id the model can answer is a token)
    tok = gemma_tokenizer(out_dir, template, IMAGE_TOKENS if model_type == "gemma3" else ())
    if model_type == "gemma3":
        boi, eoi, image = tok.convert_tokens_to_ids(list(IMAGE_TOKENS))
        config = AutoConfig.for_model(
            "gemma3", text_config=_text_kw(len(tok), "gemma3_text"), mm_tokens_per_image=4, boi_token_index=boi,
            eoi_token_index=eoi, image_token_index=image, tie_word_embeddings=True,
            vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                               image_size=56, patch_size=14))
        torch.manual_seed(seed)
        model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32)
    else:
        config = AutoConfig.for_model(model_type, **_text_kw(len(tok), model_type))
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.normal_(0.0, norm_std)  # Gemma initialises them to 0 (a scale of 1): a missing +1 would not show
    model.save_pretrained(out_dir, safe_serialization=True)
    return out_dir


def _logits(model, ids):
    import torch

    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float()


def _fields(path: Path) -> dict:
    from studio.export.gguf_readback import gguf_reader

    return dict(gguf_reader(path).fields)


CASES = [  # model type, the GGUF arch, whether transformers reads the GGUF back
    ("gemma", "gemma", False),
    ("gemma2", "gemma2", True),
    ("gemma3_text", "gemma3", True),
    ("gemma3", "gemma3", True),
]


@pytest.mark.parametrize("model_type,arch,hf_reads", CASES, ids=[c[0] for c in CASES])
def test_gemma_gguf(tmp_path, model_type, arch, hf_reads):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from studio.export.arches import text_config
    from studio.export.gguf_writer import write_gguf
    from studio.export.verify import check_gguf_weights

    folder = make_gemma(tmp_path / "m", model_type)
    config = text_config(json.loads((folder / "config.json").read_text()))
    out = write_gguf(folder, tmp_path / "m-f16.gguf", "f16")
    check = check_gguf_weights(folder, out, "f16")
    assert check.ok, check.summary
    f = _fields(out)
    assert f["general.architecture"] == arch
    assert "output.weight" not in {t.name for t in __import__("gguf").GGUFReader(str(out)).tensors}  # tied
    assert not any("vision" in k or "mm_" in k for k in f)
    if arch != "gemma":
        assert f[f"{arch}.attention.sliding_window"] == 4
        # not llama.cpp's default pattern: the per-layer array it reads first
        assert list(f[f"{arch}.attention.sliding_window_pattern"]) == [True, False, False, True]
    if arch == "gemma2":
        assert f["gemma2.attn_logit_softcapping"] == pytest.approx(2.0)
        assert f["gemma2.final_logit_softcapping"] == pytest.approx(3.0)
    if arch == "gemma3":
        assert f["gemma3.rope.freq_base"] == pytest.approx(100000.0)  # global layers
        assert f["gemma3.rope.freq_base_swa"] == pytest.approx(10000.0)  # sliding layers
        assert f["gemma3.rope.scaling.type"] == "linear" and f["gemma3.rope.scaling.factor"] == pytest.approx(2.0)
    if hf_reads:  # transformers undoes the +1 on norms; its GGUF config lacks softcaps etc.: give it ours
        text = AutoConfig.for_model(config["model_type"], **{k: v for k, v in config.items()
                                                              if k not in ("model_type", "studio_multimodal")})
        ref_model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
        ref = _logits(ref_model, IDS)
        got_model = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file=out.name, config=text,
                                                         dtype=torch.float32)
        got = _logits(got_model, IDS)
        assert (got - ref).abs().max() <= 1e-2 * max(1.0, float(ref.abs().max()))

    q8 = write_gguf(folder, tmp_path / "m-q4_k_m.gguf", "q4_k_m")
    check = check_gguf_weights(folder, q8, "q4_k_m")
    assert check.ok, check.summary


def test_gemma_refusals(tmp_path):
    from studio.export.errors import UnsupportedModel
    from studio.export.gguf_writer import check_supported

    base = {"model_type": "gemma2", "num_hidden_layers": 4, "hidden_size": 64, "num_attention_heads": 4,
            "head_dim": 16, "tie_word_embeddings": True, "query_pre_attn_scalar": 16}
    check_supported(base)
    with pytest.raises(UnsupportedModel, match="query_pre_attn_scalar"):
        check_supported({**base, "query_pre_attn_scalar": 256})
    with pytest.raises(UnsupportedModel, match="output layer"):
        check_supported({**base, "tie_word_embeddings": False})
    big = {**base, "num_hidden_layers": 46, "hidden_size": 4608, "num_attention_heads": 32, "head_dim": 128,
           "query_pre_attn_scalar": 144}  # Gemma 2 27B: llama.cpp scales by hidden/heads for its layer count
    check_supported(big)


@pytest.mark.parametrize("template,checked", [(GEMMA3_TEMPLATE, 4), (GEMMA2_TEMPLATE, 2)], ids=["gemma3", "gemma2"])
def test_gemma_ollama_template(tmp_path, template, checked):
    from studio.export.ollama import PROBES, detect_chat, hf_render, modelfile, ollama_render

    tok = gemma_tokenizer(tmp_path, template)
    chat = detect_chat(tok)
    assert chat.family.name == "gemma" and chat.system is None and chat.checked == checked
    system_probe = PROBES[1]
    assert ollama_render(chat.family, system_probe, None) == (
        "<start_of_turn>user\nAnswer briefly.\n\nName a colour.<end_of_turn>\n<start_of_turn>model\n")
    assert hf_render(tok, PROBES[2]).startswith("<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n")
    text = modelfile("m.gguf", chat, ["<eos>"], {"temperature": 0})
    assert 'PARAMETER stop "<end_of_turn>"' in text and 'PARAMETER stop "<eos>"' in text


def test_llama_cpp_prompt_has_one_bos(tmp_path):
    """llama.cpp adds BOS itself where the tokenizer does: the prompt text given to it must not carry one
    (a Gemma or Llama 3 template writes bos_token), or llama.cpp reads two."""
    import tiny

    from studio.export.llama_cpp import without_added_bos
    from studio.export.verify import prompt_ids

    tok = gemma_tokenizer(tmp_path / "g")
    ids = prompt_ids(tok)[0]
    assert ids[:2] == [tok.bos_token_id, tok.convert_tokens_to_ids("<start_of_turn>")]
    assert without_added_bos(tok, ids) == ids[1:]
    chatml = tiny.make_tokenizer(tmp_path / "c")  # its bos is not added by the tokenizer: kept
    ids = prompt_ids(chatml)[0]
    assert without_added_bos(chatml, ids) == ids


def test_gemma3_multimodal_run_exports(tmp_path, monkeypatch):
    """A run on a multimodal Gemma 3 (LoRA on its language model and its vision tower) exports: transformers
    saves the checkpoint as ``language_model.model.*`` / ``vision_tower.*`` while the adapter names the loaded
    modules (``model.language_model.*``); the GGUF holds the merged language model only."""
    from test_export import make_run

    from studio.export import export

    monkeypatch.delenv("LORA_STUDIO_LLAMA_CPP", raising=False)
    base = make_gemma(tmp_path / "base", "gemma3")
    names = __import__("safetensors").safe_open(str(base / "model.safetensors"), "pt").keys()
    assert any(n.startswith("language_model.model.") for n in names)  # the older layout, as saved
    run = make_run(tmp_path / "runs", base, four_bit=False, targets=["q_proj", "v_proj", "down_proj"])
    res = export(run, "gguf", quant="f16")
    checks = {c["name"]: c for c in res.checks}
    assert checks["gguf_weights"]["ok"] and checks["gguf_vocab"]["ok"], res.checks
    assert checks["gguf_weights"]["details"]["types"] == {"F16": 29, "F32": 25}  # no tower tensor


def test_gemma3_hub_config_is_completed(tmp_path):
    """The Hub's Gemma 3 4B config lists only what differs from Gemma3TextConfig (no head counts, vocab
    size or rope bases; a legacy linear rope_scaling): the GGUF keys are transformers' values."""
    import gguf

    from studio.export.gguf_writer import add_hparams, check_supported

    hub = {"architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3", "mm_tokens_per_image": 256,
           "text_config": {"hidden_size": 2560, "intermediate_size": 10240, "model_type": "gemma3_text",
                           "num_hidden_layers": 34, "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
                           "sliding_window": 1024},
           "vision_config": {"model_type": "siglip_vision_model", "hidden_size": 1152}}
    arch = check_supported(hub)
    w = gguf.GGUFWriter(str(tmp_path / "k.gguf"), arch.arch)
    add_hparams(w, hub, arch, 262208)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.close()
    f = _fields(tmp_path / "k.gguf")
    assert (f["gemma3.attention.head_count"], f["gemma3.attention.head_count_kv"], f["gemma3.attention.key_length"]) \
        == (8, 4, 256)
    assert f["gemma3.rope.freq_base"] == pytest.approx(1e6) and f["gemma3.rope.freq_base_swa"] == pytest.approx(1e4)
    assert f["gemma3.rope.scaling.type"] == "linear" and f["gemma3.rope.scaling.factor"] == pytest.approx(8.0)
    assert f["gemma3.attention.sliding_window"] == 1024
    assert "gemma3.attention.sliding_window_pattern" not in f  # every 6th layer global: llama.cpp's default
