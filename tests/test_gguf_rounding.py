"""The greedy check's answer to a model whose next tokens are near ties: the merged model given the GGUF's own
rounding (``llama_cpp.add_gguf_rounding``) reads llama.cpp's answers again.

A random tiny Qwen3.5 MoE is such a model: at Q8_0 two of its three greedy answers change once its weights (and the
inputs of its layers, as ggml rounds them) carry the file's rounding, at Q4_0 all three, so a check that needs one
answer of three unchanged fails on it though the file is right (bench/gguf_families.py ran such files in llama.cpp).
The rounding is put back through the writer's own layout (Qwen3.5's V-head row and column orders, the experts
that transformers fuses on load): read back and laid out again, the model's weights are the GGUF's.
"""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from test_export_cache import _stand_in
from test_gguf_qwen35 import make_qwen35

from studio import multimodal
from studio.export import llama_cpp, verify
from studio.export.gguf_readback import gguf_reader
from studio.export.gguf_writer import check_supported, oriented, plan_tensors, write_gguf


@pytest.fixture(scope="module")
def moe_q4(tmp_path_factory):
    folder = make_qwen35(tmp_path_factory.mktemp("q35moe") / "model", moe=True)
    gguf = write_gguf(folder, folder.parent / "m-q4_0.gguf", "q4_0")
    return folder, gguf


def _load(folder):
    return multimodal.load_causal_lm(folder, dict(dtype=torch.float32))


def _answers(model, tok) -> list[str]:
    """Greedy answers as llama-simple prints them, to the prompts as transformers tokenises them (what the
    GGUF's pre-tokenizer reproduces in llama.cpp; Qwen3.5's tokenizer class splits digits)."""
    out = []
    for p in verify.prompt_ids(tok):
        ids = model.generate(torch.tensor([p]), max_new_tokens=8, do_sample=False,
                             pad_token_id=tok.pad_token_id or 0)[0, len(p):].tolist()
        ids = ids[:ids.index(tok.eos_token_id)] if tok.eos_token_id in ids else ids
        out.append(llama_cpp.printed(tok, ids))
    return out


def test_the_rounded_model_holds_exactly_the_gguf_weights(moe_q4):
    from gguf.quants import dequantize

    from studio.export.arches import text_config

    folder, gguf = moe_q4
    model = _load(folder)
    done, left = llama_cpp.add_gguf_rounding(model, folder, gguf, "q4_0")
    stored = {t.name: t for t in gguf_reader(gguf).tensors}
    quantised = [n for n, t in stored.items() if t.tensor_type.name in ("Q8_0", "Q4_0")]
    assert (done, left) == (len(quantised), 0) and done > 30  # experts, V-head reordered rows and columns included

    import json
    config = text_config(json.loads((folder / "config.json").read_text()))
    arch = check_supported(config)
    params = llama_cpp.checkpoint_params(model, [n for n, _ in model.named_parameters()])
    worst = 0.0
    for p in plan_tensors(folder, config, arch, "q4_0"):
        if p.gguf_name not in quantised:
            continue
        views = [llama_cpp._checkpoint_view(params, m.name, tuple(m.shape)) for m in (p.experts or [p.meta])]
        now = torch.stack(views) if p.experts else views[0]
        t = stored[p.gguf_name]
        got = torch.from_numpy(np.ascontiguousarray(dequantize(np.asarray(t.data), t.tensor_type))).float()
        laid = oriented(p, now, config, arch).float()
        worst = max(worst, float((laid - got.reshape(laid.shape)).abs().max()))
    assert worst < 1e-6


def test_near_ties_the_gguf_rounding_explains_pass_and_a_broken_answer_still_fails(moe_q4, tmp_path, monkeypatch):
    from transformers import AutoTokenizer

    folder, gguf = moe_q4
    light = llama_cpp.tokenizer_for(folder)  # the prompts' text as the check gives it to llama.cpp
    prompts = [light.decode(llama_cpp.without_added_bos(light, p), skip_special_tokens=False)
               for p in verify.prompt_ids(light)]
    tok = AutoTokenizer.from_pretrained(str(folder))
    model = _load(folder)
    merged = _answers(model, tok)
    llama_cpp.add_gguf_rounding(model, folder, gguf, "q4_0")
    rounded = _answers(model, tok)
    assert all(a != b for a, b in zip(merged, rounded))  # Q4_0 changes every answer of this random model

    (tmp_path / "ok").mkdir()
    _stand_in(tmp_path / "ok", dict(zip(prompts, rounded)), monkeypatch)
    check = llama_cpp.check_gguf_llama(folder, gguf, "q4_0")
    assert check.ok, check.summary
    assert check.details["identical"] == 0 and all(v["rounding"] for v in check.details["per_prompt"])
    assert "the GGUF's rounding explains 3 of the others" in check.summary and "3 answered as llama.cpp did" in check.summary
    # the verdicts were kept: the same answers again are judged from the export cache, without the model
    with monkeypatch.context() as m:  # (undo() would also end the test's own data folder)
        m.setattr(verify, "memory_ok", lambda need: pytest.fail("the model was needed"))
        again = llama_cpp.check_gguf_llama(folder, gguf, "q4_0")
    assert again.ok and "export cache" in again.summary

    # answers the model would never write (its least likely word first): on this model the rounding alone changes
    # every answer of its own, so greedy text cannot judge the file, and the check says so instead of failing it
    garbled = _unlikely(folder, tok)
    (tmp_path / "bad").mkdir()
    _stand_in(tmp_path / "bad", dict(zip(prompts, garbled)), monkeypatch)
    moot = llama_cpp.check_gguf_llama(folder, gguf, "q4_0")
    assert moot.ok and all(v.get("unstable") for v in moot.details["per_prompt"]), moot.summary
    assert "3 changed its own answer: greedy text cannot judge the file on those" in moot.summary

    # an f16 file has no rounding to give: the rule never applies
    f16 = write_gguf(folder, tmp_path / "m-f16.gguf", "f16")
    _stand_in(tmp_path / "bad", dict(zip(prompts, rounded)), monkeypatch)
    assert llama_cpp.check_gguf_llama(folder, f16, "f16").ok is False


def _unlikely(folder, tok) -> list[str]:
    """Per prompt, an answer starting with the word the merged model finds least likely there."""
    out = []
    model = _load(folder)
    for ids in verify.prompt_ids(tok):
        with torch.no_grad():
            row = model(torch.tensor([ids])).logits[0, -1]
        words = [t for t in row.argsort().tolist() if tok.decode([t]).strip().isalnum()]
        out.append(tok.decode([words[0]]) + " sea")
    return out


def test_a_broken_answer_on_a_model_the_rounding_leaves_alone_still_fails(tiny_model_dir, tmp_path, monkeypatch):
    """On a model whose greedy answers the file's rounding does not change (the tiny Llama at Q8_0), answers it
    would never write are a broken file: no rule explains them."""
    from transformers import AutoTokenizer

    gguf = write_gguf(tiny_model_dir, tmp_path / "m-q8_0.gguf", "q8_0")
    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    model = _load(tiny_model_dir)
    merged = _answers(model, tok)
    llama_cpp.add_gguf_rounding(model, tiny_model_dir, gguf, "q8_0")
    assert _answers(model, tok) == merged  # stable under its own rounding
    light = llama_cpp.tokenizer_for(tiny_model_dir)
    prompts = [light.decode(llama_cpp.without_added_bos(light, p), skip_special_tokens=False)
               for p in verify.prompt_ids(light)]
    _stand_in(tmp_path, dict(zip(prompts, _unlikely(tiny_model_dir, tok))), monkeypatch)
    bad = llama_cpp.check_gguf_llama(tiny_model_dir, gguf, "q8_0")
    assert bad.ok is False and bad.details["identical"] == 0, bad.summary
    judged = bad.details["per_prompt"]
    assert [v["rounding"] for v in judged] == [False] * 3 and all(v["at"] == 0 and v["gap"] > 0 for v in judged)


def test_a_near_tie_is_a_margin_the_rounding_itself_could_close():
    before = torch.tensor([[0.0, 1.0, 0.8], [0.0, 0.0, 0.0]])  # prefers token 1 by 0.2 over llama.cpp's token 2
    moved = torch.tensor([[0.0, 0.0, 0.15], [0.0, 0.0, 0.0]])  # the rounding moves a logit by 0.15 there
    tie = llama_cpp._within_rounding(before, before + moved, [2])
    assert tie is not None and tie["at"] == 0 and tie["gap"] == pytest.approx(0.2) and tie["shift"] == pytest.approx(0.15)
    assert llama_cpp._within_rounding(before, before + moved / 3, [2]) is None  # 0.2 > 2 x 0.05: decided
    assert llama_cpp._within_rounding(before, before + moved, [1]) is None  # no divergence to explain
    # the shift counted up to the divergence only: what the rounding does to the tokens after it explains nothing
    assert llama_cpp._within_rounding(before, before + torch.tensor([[0.0, 0.0, 0.0], [9.0, 0.0, 0.0]]), [2, 0]) is None


def test_activations_are_rounded_as_ggml_rounds_them():
    """Q8_0 activations equal the gguf package's own Q8_0 round trip (ggml's reference quantiser); Q8_K keeps the
    value of largest magnitude exact at -127 steps and every other value within half a step."""
    from gguf import GGMLQuantizationType as T
    from gguf.quants import dequantize, quantize

    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 512, generator=g) * torch.linspace(0.01, 5, 512)
    x[0, :32] = 0  # an all-zero block stays zero
    ours = llama_cpp.round_activations(x, "Q8_0")
    ref = torch.from_numpy(dequantize(quantize(x.numpy(), T.Q8_0), T.Q8_0)).reshape(x.shape)
    assert torch.equal(ours, ref) and not torch.equal(ours, x)
    k = llama_cpp.round_activations(x, "Q4_K").reshape(3, 2, 256)
    blocks = x.reshape(3, 2, 256)
    step = blocks.abs().amax(-1, keepdim=True) / 127
    assert torch.all((k - blocks).abs() <= step / 2 + 1e-6)
    at = blocks.abs().argmax(-1, keepdim=True)
    assert torch.allclose(k.gather(-1, at), blocks.gather(-1, at))
    assert torch.equal(llama_cpp.round_activations(x[:, :100], "Q8_0"), x[:, :100])  # not whole blocks: as is


BYTES_STAND_IN = """#!{python}
# Answers like llama-simple, as raw bytes (a random model's answer can be bytes that are no UTF-8).
import json, sys
from pathlib import Path
answers = json.loads((Path(__file__).parent / "answers.json").read_text())
prompt = sys.argv[-1]
sys.stdout.buffer.write(prompt.encode() + bytes.fromhex(answers[prompt]) + b"\\n")
"""


def test_an_answer_that_is_no_utf8_is_followed_byte_by_byte(tiny_model_dir, tmp_path, monkeypatch):
    """llama.cpp can print byte tokens that are no UTF-8: its text then shows U+FFFD, which no tokenizer reads
    back into its tokens. The check follows the bytes instead and finds where the answer really leaves the
    merged model's (here, the token swapped for a lone 0xFF byte), not where the re-read text does."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    model = _load(tiny_model_dir)
    vocab = llama_cpp.token_bytes(tok)
    assert all(bytes([b]) in vocab for b in range(256))  # byte-level BPE: every byte is a token
    ff = vocab[b"\xff"][0]
    ends = llama_cpp._turn_end_ids(tok, tiny_model_dir)
    prompts = verify.prompt_ids(tok)
    own = []
    for p in prompts:
        ids = model.generate(torch.tensor([p]), max_new_tokens=8, do_sample=False, pad_token_id=0)[0, len(p):].tolist()
        own.append(ids[:ids.index(tok.eos_token_id)] if tok.eos_token_id in ids else ids)
    piece = {i: b for b, ids in vocab.items() for i in ids}
    for p, ids in zip(prompts, own):  # its own answer: followed to the end, token for token
        followed = llama_cpp.follow_bytes(model, vocab, p, b"".join(piece[t] for t in ids), 8, ends)
        assert followed == {"ids": ids, "at": None, "gap": 0.0}
    k = max(range(len(own)), key=lambda i: len(own[i]))  # the longest answer gets a token swapped mid-way
    j = len(own[k]) // 2
    assert j >= 1 and ff not in own[k]
    swapped = own[k][:j] + [ff] + own[k][j + 1:]
    data = b"".join(piece[t] for t in swapped)
    followed = llama_cpp.follow_bytes(model, vocab, prompts[k], data, 8, ends)
    assert followed["at"] == j and followed["gap"] > 0 and followed["ids"][j] == ff

    # through the whole check, with a stand-in llama-simple that prints those bytes for the first prompt
    light = llama_cpp.tokenizer_for(tiny_model_dir)
    texts = [light.decode(llama_cpp.without_added_bos(light, p), skip_special_tokens=False)
             for p in verify.prompt_ids(light)]
    answers = [data if i == k else b"".join(piece[t] for t in ids) for i, ids in enumerate(own)]
    exe = tmp_path / "llama-simple"
    exe.write_text(BYTES_STAND_IN.format(python=sys.executable))
    exe.chmod(0o755)
    (tmp_path / "answers.json").write_text(json.dumps({t: a.hex() for t, a in zip(texts, answers)}))
    monkeypatch.setenv("LORA_STUDIO_LLAMA_CPP", str(tmp_path))
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"")  # the stand-in does not read it
    check = llama_cpp.check_gguf_llama(tiny_model_dir, gguf, None)
    judged = check.details["per_prompt"][k]
    assert check.ok and check.details["identical"] == 2, check.summary
    assert judged["identical"] is False and judged["at"] == j
    assert judged["gap"] == pytest.approx(followed["gap"], abs=1e-3)
