"""What makes an export's verification cheap: the vocabulary and llama.cpp's confirmed answers kept in the
export cache, the weight check merging only the rows it samples and reading them without the memory map,
and llama.cpp's answers judged by one teacher-forced pass of the merged model."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from studio.export import llama_cpp, verify
from studio.export.adapter import Adapter, LoraDelta
from studio.export.gguf_readback import gguf_reader
from studio.export.gguf_writer import write_gguf
from studio.export.merge import MergedWeights


def test_the_cached_vocabulary_writes_the_same_gguf(tiny_model_dir, tmp_path):
    from studio.export.gguf_vocab import build_vocab

    config = json.loads((tiny_model_dir / "config.json").read_text())
    first = build_vocab(tiny_model_dir, config)
    assert "read with transformers" in first.notes[0]
    again = build_vocab(tiny_model_dir, config)
    assert "from the export cache" in again.notes[0] and again.cached and not first.cached
    for name in ("model", "pre", "tokens", "types", "scores"):
        assert getattr(again, name) == getattr(first, name), name
    assert again.special.add_special_token == first.special.add_special_token
    assert again.special.special_token_ids == first.special.special_token_ids
    assert again.special.merges == first.special.merges and again.special.chat_template == first.special.chat_template
    a = write_gguf(tiny_model_dir, tmp_path / "a.gguf", "f16", vocab=first)
    b = write_gguf(tiny_model_dir, tmp_path / "b.gguf", "f16", vocab=again)
    assert a.read_bytes() == b.read_bytes()

    changed = tmp_path / "changed"  # another tokenizer is another cache entry
    shutil.copytree(tiny_model_dir, changed)
    cfg = json.loads((changed / "tokenizer_config.json").read_text())
    cfg["chat_template"] = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    (changed / "tokenizer_config.json").write_text(json.dumps(cfg))
    (changed / "chat_template.jinja").unlink(missing_ok=True)
    other = build_vocab(changed, config)
    assert "read with transformers" in other.notes[0] and other.special.chat_template == cfg["chat_template"]


def _adapter(base: Path) -> Adapter:
    """LoRA on q_proj, DoRA on v_proj, LoRA on the embedding and a replaced norm, with random factors."""
    from studio.safetensors_io import model_tensors

    shapes = {m.name: tuple(m.shape) for m in model_tensors(base)}
    g = torch.Generator().manual_seed(0)
    q, v, emb = "model.layers.0.self_attn.q_proj.weight", "model.layers.1.self_attn.v_proj.weight", "model.embed_tokens.weight"
    deltas = {
        q: LoraDelta(torch.randn(4, shapes[q][1], generator=g), torch.randn(shapes[q][0], 4, generator=g), 0.5),
        v: LoraDelta(torch.randn(4, shapes[v][1], generator=g), torch.randn(shapes[v][0], 4, generator=g), 0.5,
                     magnitude=torch.rand(shapes[v][0], generator=g) + 0.5),
        emb: LoraDelta(torch.randn(4, shapes[emb][0], generator=g), torch.randn(shapes[emb][1], 4, generator=g), 2.0,
                       embedding=True),
    }
    norm = "model.layers.0.input_layernorm.weight"
    return Adapter({}, deltas, {norm: torch.randn(shapes[norm], generator=g)})


def test_sampled_rows_are_merged_as_the_whole_tensor(tiny_model_dir):
    weights = MergedWeights(tiny_model_dir, _adapter(tiny_model_dir))
    metas = {m.name: m for m in weights.metas()}
    for name in [*weights.changed(), "model.layers.1.mlp.up_proj.weight"]:
        meta = metas[name]
        rows = torch.tensor([meta.shape[0] - 1, 0, 3, 2])  # any order
        full = weights.read(meta, check=False)
        got = weights.read_rows(meta, rows)
        assert got.dtype == full.dtype
        assert torch.allclose(got.float(), full[rows].float(), rtol=1e-6, atol=1e-6), name


def test_gguf_rows_read_from_the_file_equal_the_mapped_rows(tiny_model_dir, tmp_path):
    path = write_gguf(tiny_model_dir, tmp_path / "m.gguf", "q8_0")
    rows = np.array([5, 0, 63, 7])
    for t in gguf_reader(path).tensors:
        if t.data.ndim == 2 and t.data.shape[0] > 63:
            assert np.array_equal(t.read_rows(rows), t.data[rows]), t.name


def test_the_weight_check_catches_a_wrong_sampled_row(tiny_model_dir, tmp_path):
    """Rows merged on their own still find a GGUF that does not hold the merged weights."""
    weights = MergedWeights(tiny_model_dir, _adapter(tiny_model_dir))
    merged = write_gguf(tiny_model_dir, tmp_path / "merged.gguf", "f16", weights=weights)
    ok = verify.check_gguf_weights(tiny_model_dir, merged, "f16", weights=weights)
    assert ok.ok, ok.summary
    plain = write_gguf(tiny_model_dir, tmp_path / "plain.gguf", "f16")  # the base, not merged
    bad = verify.check_gguf_weights(tiny_model_dir, plain, "f16", weights=weights)
    assert bad.ok is False and "attn_q" in bad.summary and "token_embd" in " ".join(bad.details["over_bound"])


# -- llama.cpp's answers, judged by the merged model ---------------------------------------------------

STAND_IN = """#!{python}
# Answers like llama-simple (prompt, answer, newline) from answers.json, as the test wrote them.
import json, sys
from pathlib import Path
answers = json.loads((Path(__file__).parent / "answers.json").read_text())
if "fail" in answers:
    print("llama_model_load: error loading model: " + answers["fail"], file=sys.stderr)
    sys.exit(1)
prompt = sys.argv[-1]
print(prompt + answers[prompt], end="\\n")
"""


def _stand_in(folder: Path, answers: dict[str, str], monkeypatch) -> None:
    exe = folder / "llama-simple"
    exe.write_text(STAND_IN.format(python=sys.executable))
    exe.chmod(0o755)
    (folder / "answers.json").write_text(json.dumps(answers))
    monkeypatch.setenv("LORA_STUDIO_LLAMA_CPP", str(folder))


def _greedy_answers(model_dir: Path) -> tuple[list[str], list[list[int]], object]:
    """The prompts as llama.cpp gets them, and the model's own greedy answers (at most 8 tokens, without
    the end-of-turn token, as llama-simple prints them) as token ids."""
    from transformers import AutoModelForCausalLM

    tok = llama_cpp.tokenizer_for(model_dir)
    ids = verify.prompt_ids(tok)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    answers = []
    for p in ids:
        out = model.generate(torch.tensor([p]), max_new_tokens=8, do_sample=False,
                             pad_token_id=tok.pad_token_id or 0)[0, len(p):].tolist()
        answers.append(out[:out.index(tok.eos_token_id)] if tok.eos_token_id in out else out)
    return [tok.decode(p, skip_special_tokens=False) for p in ids], answers, tok


def test_llama_cpp_answers_are_judged_by_the_merged_model(tiny_model_dir, tmp_path, monkeypatch):
    prompts, own, tok = _greedy_answers(tiny_model_dir)
    right = [tok.decode(a, skip_special_tokens=False) for a in own]
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"")  # the stand-in does not read it
    k = len(own[1]) - 1
    wrong = tok.decode(own[1][:k] + [(own[1][k] + 1) % 100 + 5], skip_special_tokens=False)  # another last token
    assert wrong != right[1]
    _stand_in(tmp_path, {prompts[0]: right[0], prompts[1]: wrong, prompts[2]: right[2]}, monkeypatch)

    first = llama_cpp.check_gguf_llama(tiny_model_dir, gguf, "f16")
    assert first.ok and first.details["identical"] == 2, first.summary
    judged = first.details["per_prompt"]
    assert judged[0]["identical"] and judged[2]["identical"] and judged[1]["identical"] is False
    assert "at" in judged[1] and "export cache" not in first.summary

    # the merged model's answers were kept: every later verdict comes from the cache, no model is loaded
    monkeypatch.setattr(verify, "memory_ok", lambda need: pytest.fail("the model was needed"))
    _stand_in(tmp_path, dict(zip(prompts, right)), monkeypatch)
    second = llama_cpp.check_gguf_llama(tiny_model_dir, gguf, "f16")
    assert second.ok and second.details["identical"] == 3 and "from the export cache" in second.summary
    _stand_in(tmp_path, {prompts[0]: right[0], prompts[1]: wrong, prompts[2]: "nonsense"}, monkeypatch)
    third = llama_cpp.check_gguf_llama(tiny_model_dir, gguf, "f16")
    assert third.ok and third.details["identical"] == 1
    assert third.details["per_prompt"][1]["at"] == judged[1]["at"]  # the same answer, the same diagnosis


def test_no_matching_answer_fails_the_check(tiny_model_dir, tmp_path, monkeypatch):
    prompts, own, tok = _greedy_answers(tiny_model_dir)
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"")
    garbled = {p: tok.decode([(a[0] + 7) % 100 + 5] + a[1:], skip_special_tokens=False) for p, a in zip(prompts, own)}
    _stand_in(tmp_path, garbled, monkeypatch)
    check = llama_cpp.check_gguf_llama(tiny_model_dir, gguf, "f16")
    assert check.ok is False and check.details["identical"] == 0


def test_one_teacher_forced_pass_decides_a_followed_answer():
    ends = {2}
    assert llama_cpp._follows([5, 6, 7, 8], [5, 6, 7], 3, ends)  # the cap reached, every token the model's own
    assert not llama_cpp._follows([5, 9, 7, 8], [5, 6, 7], 3, ends)  # the model preferred 9 at the second token
    assert llama_cpp._follows([5, 6, 2], [5, 6], 3, ends)  # llama.cpp ended the turn early, and so does the model
    assert not llama_cpp._follows([5, 6, 4], [5, 6], 3, ends)  # llama.cpp ended early, the model goes on
    assert not llama_cpp._follows([5, 6, 7, 8, 9], [5, 6, 7, 8], 3, ends)  # longer than a greedy answer of 3


def test_llama_cpp_that_cannot_run_the_file_says_why(tiny_model_dir, tmp_path, monkeypatch):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"")
    _stand_in(tmp_path, {"fail": "tensor 'blk.0.attn_q.weight' has wrong shape"}, monkeypatch)
    check = llama_cpp.check_gguf_llama(tiny_model_dir, gguf, "f16")
    assert check.ok is False and check.details["identical"] == 0
    assert "llama.cpp failed on 3 prompt(s) (exit code 1: llama_model_load: error loading model" in check.summary


def test_an_answer_with_a_nul_token_is_compared_as_llama_simple_prints_it(tiny_model_dir):
    """llama-simple prints each piece with printf("%s"): a token that decodes to a NUL byte prints nothing, so
    the merged model's answer is compared without it (a random model's answers hold such tokens)."""
    tok = llama_cpp.tokenizer_for(tiny_model_dir)
    nul = next(i for i in range(384) if tok.decode([i], skip_special_tokens=False) == "\x00")  # the tiny vocabulary
    a, b = tok("sea", add_special_tokens=False)["input_ids"][0], tok("sun", add_special_tokens=False)["input_ids"][0]
    assert llama_cpp.printed(tok, [a, nul, b]) == tok.decode([a, b]) != tok.decode([a, nul, b])
