"""Export: streaming merge, GGUF, Ollama, adapter, safety (space, cancel, overwrite), worker and CLI.

The run folder is built the way training leaves it: a tiny Llama, a LoRA adapter trained on a
bitsandbytes 4-bit NF4 load of it (lora_B made non-zero), state.json naming the base folder.
"""
from __future__ import annotations

import errno
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tiny

from studio import runs
from studio.recipe import Recipe

ROOT = Path(__file__).resolve().parent.parent


def make_run(root: Path, base: Path, four_bit: bool = True, r: int = 8, targets="all-linear", seed: int = 1) -> Path:
    """A finished run folder: recipe, state.json with base_model, adapter/ saved by peft."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    recipe = Recipe()
    recipe.model.name_or_path = str(base)
    run_dir = runs.create(recipe, root)
    kw = {}
    if four_bit:
        kw = dict(quantization_config=BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                         bnb_4bit_compute_dtype=torch.float32), device_map={"": "cpu"})
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32, **kw)
    model = get_peft_model(model, LoraConfig(r=r, lora_alpha=2 * r, target_modules=targets))
    torch.manual_seed(seed)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.05)
    model.save_pretrained(str(run_dir / runs.ADAPTER))
    runs.write_state(run_dir, base_model=str(base), status="finished")
    return run_dir


@pytest.fixture(scope="module")
def qlora_run(tiny_model_dir, tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("runs"), tiny_model_dir)


def _logits(model, ids):
    import torch

    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0]


IDS = [1, 40, 41, 90, 120, 7, 200, 33]


# -- merge ---------------------------------------------------------------------------------------

def test_merged_export_matches_base_plus_adapter(qlora_run, tiny_model_dir):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from studio.export import export

    res = export(qlora_run, "merged")
    assert res.path == qlora_run / "exports" / "merged"
    check = {c["name"]: c for c in res.checks}["merge_logits"]
    assert check["ok"] and check["details"]["adapter_effect"] > 100 * check["details"]["max_abs_diff"]

    ref_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)),
                                          str(qlora_run / "adapter"))
    merged = AutoModelForCausalLM.from_pretrained(str(res.path))
    assert not [n for n, _ in merged.named_modules() if "lora" in n.lower()]
    assert all(torch.isfinite(p).all() for p in merged.parameters())
    torch.testing.assert_close(_logits(merged, IDS), _logits(ref_model, IDS), atol=1e-4, rtol=1e-4)
    cfg = json.loads((res.path / "config.json").read_text())
    assert "quantization_config" not in cfg
    index = json.loads((res.path / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == {f["name"] for f in res.files if f["name"].endswith(".safetensors")}
    gen = json.loads((res.path / "generation_config.json").read_text())
    assert gen["eos_token_id"] in (2, [2]) or 2 in gen["eos_token_id"]  # <|im_end|> ends a turn
    assert (res.path / "chat_template.jinja").is_file() and (res.path / "tokenizer.json").is_file()


def test_streaming_merge_writes_shards_with_the_lora_update(qlora_run, tiny_model_dir, tmp_path):
    from safetensors.torch import load_file

    from studio.export.adapter import load_adapter
    from studio.export.merge import merge_to_folder

    report = merge_to_folder(tiny_model_dir, load_adapter(qlora_run / "adapter"), tmp_path, max_shard_bytes=64_000)
    assert len(report.shards) > 3 and report.merged == 14
    base = load_file(str(tiny_model_dir / "model.safetensors"))
    lora = load_file(str(qlora_run / "adapter" / "adapter_model.safetensors"))
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())["weight_map"]
    name = "model.layers.1.self_attn.k_proj.weight"
    out = load_file(str(tmp_path / index[name]))[name]
    a = lora["base_model.model.model.layers.1.self_attn.k_proj.lora_A.weight"]
    b = lora["base_model.model.model.layers.1.self_attn.k_proj.lora_B.weight"]
    expected = base[name] + (16 / 8) * (b @ a)
    assert (out - expected).abs().max() < 1e-6
    untouched = "model.norm.weight"
    assert load_file(str(tmp_path / index[untouched]))[untouched].equal(base[untouched])


def test_non_finite_adapter_is_refused(qlora_run, tiny_model_dir, tmp_path):
    from studio.export.adapter import load_adapter
    from studio.export.errors import VerificationFailed
    from studio.export.merge import merge_to_folder

    adapter = load_adapter(qlora_run / "adapter")
    next(iter(adapter.deltas.values())).b[0, 0] = float("nan")
    with pytest.raises(VerificationFailed, match="NaN"):
        merge_to_folder(tiny_model_dir, adapter, tmp_path)


# -- GGUF ----------------------------------------------------------------------------------------

def _gguf_fields(path: Path) -> dict:
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    out = {}
    for key, field in reader.fields.items():
        if key.startswith("tokenizer.ggml.") and key.endswith(("tokens", "merges", "token_type", "scores")):
            continue
        out[key] = field.contents()
    out["_types"] = {t.name: t.tensor_type.name for t in reader.tensors}
    return out


def test_gguf_round_trip_through_transformers(qlora_run, tiny_model_dir, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from studio.export.adapter import load_adapter
    from studio.export.gguf_writer import write_gguf
    from studio.export.merge import merge_to_folder

    merged = tmp_path / "merged"
    merged.mkdir()
    merge_to_folder(tiny_model_dir, load_adapter(qlora_run / "adapter"), merged)
    path = write_gguf(merged, tmp_path / "m.gguf", "f16", name="tiny")
    meta = _gguf_fields(path)
    assert meta["general.architecture"] == "llama" and meta["tokenizer.ggml.model"] == "gpt2"
    assert meta["tokenizer.ggml.pre"] == "gpt-2"
    assert (meta["tokenizer.ggml.bos_token_id"], meta["tokenizer.ggml.eos_token_id"]) == (1, 2)
    assert meta["tokenizer.ggml.padding_token_id"] == 0
    assert meta["tokenizer.chat_template"] == tiny.CHATML
    assert meta["_types"]["blk.0.attn_q.weight"] == "F16" and meta["_types"]["output_norm.weight"] == "F32"

    want = AutoModelForCausalLM.from_pretrained(str(merged), dtype=torch.float32)
    got = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file="m.gguf", dtype=torch.float32)
    torch.testing.assert_close(_logits(got, IDS), _logits(want, IDS), atol=2e-3, rtol=0)  # f16 rounding only
    text = "Hello world, what is 12 plus 345?<|im_start|>user\nhi<|im_end|>"
    tok_gguf = AutoTokenizer.from_pretrained(str(tmp_path), gguf_file="m.gguf")
    assert tok_gguf(text)["input_ids"] == AutoTokenizer.from_pretrained(str(merged))(text)["input_ids"]


def test_gguf_quant_types(tiny_model_dir, tmp_path):
    from studio.export.gguf_writer import write_gguf

    types = {}
    for quant in ("bf16", "q8_0", "q4_0"):
        types[quant] = _gguf_fields(write_gguf(tiny_model_dir, tmp_path / f"{quant}.gguf", quant))["_types"]
    assert types["bf16"]["blk.1.ffn_up.weight"] == "BF16"
    assert types["q8_0"]["blk.1.ffn_up.weight"] == "Q8_0" and types["q8_0"]["output.weight"] == "Q8_0"
    assert types["q4_0"]["blk.1.ffn_up.weight"] == "Q4_0"
    assert types["q4_0"]["token_embd.weight"] == "Q8_0"  # embeddings keep 8 bits
    assert all(t == "F32" for n, t in types["q4_0"].items() if "norm" in n)


@pytest.mark.parametrize("arch", ["qwen2", "mistral"])
def test_gguf_other_llama_family_architectures(arch, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from studio.export.gguf_writer import write_gguf

    folder = tiny.make_model(tmp_path / arch, arch=arch, tie=arch == "qwen2")
    if arch == "qwen2":  # give the q/k/v biases values, so a lost bias shows
        from safetensors.torch import load_file, save_file

        sd = load_file(str(folder / "model.safetensors"))
        for k in sd:
            if k.endswith("_proj.bias"):
                sd[k] = torch.randn_like(sd[k])
        save_file(sd, str(folder / "model.safetensors"), metadata={"format": "pt"})
    write_gguf(folder, tmp_path / "m.gguf", "f16", name=f"tiny-{arch}")
    meta = _gguf_fields(tmp_path / "m.gguf")
    assert meta["general.architecture"] == ("qwen2" if arch == "qwen2" else "llama")
    # transformers runs a qwen2 folder's tokenizer with Qwen2's split regex (single digits), so
    # llama.cpp must be told "qwen2", not what the plain byte-level tokenizer.json suggests
    assert meta["tokenizer.ggml.pre"] == ("qwen2" if arch == "qwen2" else "gpt-2")
    want = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    got = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file="m.gguf", dtype=torch.float32)
    torch.testing.assert_close(_logits(got, IDS), _logits(want, IDS), atol=2e-3, rtol=0)


@pytest.mark.parametrize("arch", ["qwen3", "qwen3_moe", "mixtral"])
def test_gguf_qwen3_and_mixture_of_experts(arch, tmp_path):
    """Dense Qwen3 and the MoE families: experts stacked per layer, as llama.cpp reads them
    (greedy text identical to transformers in llama-simple: docs/export.md)."""
    import numpy as np
    import torch
    from gguf import GGUFReader
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM

    from studio.export.gguf_writer import write_gguf
    from studio.export.verify import check_gguf_weights

    folder = tmp_path / arch
    tok = tiny.make_tokenizer(folder)
    extra = {"qwen3": dict(intermediate_size=128, head_dim=16),
             "qwen3_moe": dict(intermediate_size=128, moe_intermediate_size=32, head_dim=16, num_experts=4,
                               num_experts_per_tok=2, norm_topk_prob=True),
             "mixtral": dict(intermediate_size=32, num_local_experts=4, num_experts_per_tok=2)}[arch]
    config = AutoConfig.for_model(arch, vocab_size=len(tok), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                  num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=False,
                                  bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, **extra)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config, dtype=torch.float32).save_pretrained(folder)
    path = write_gguf(folder, tmp_path / "m.gguf", "f16")
    meta = _gguf_fields(path)
    gguf_arch = {"qwen3": "qwen3", "qwen3_moe": "qwen3moe", "mixtral": "llama"}[arch]
    assert meta["general.architecture"] == gguf_arch
    if arch != "mixtral":
        assert meta[f"{gguf_arch}.attention.key_length"] == 16
    reader = GGUFReader(str(path))
    tensors = {t.name: t for t in reader.tensors}
    if arch == "qwen3":
        assert "blk.0.attn_q_norm.weight" in tensors and not any("_exps" in n for n in tensors)
    else:
        assert meta[f"{gguf_arch}.expert_count"] == 4 and meta[f"{gguf_arch}.expert_used_count"] == 2
        sd = load_file(str(folder / "model.safetensors"))
        one = "mlp.experts.{}.up_proj" if arch == "qwen3_moe" else "block_sparse_moe.experts.{}.w3"
        want = torch.stack([sd[f"model.layers.1.{one.format(e)}.weight"] for e in range(4)])
        got = np.asarray(tensors["blk.1.ffn_up_exps.weight"].data)
        assert got.shape == tuple(want.shape)  # (experts, rows, columns), experts outermost
        np.testing.assert_array_equal(got, want.numpy().astype(np.float16))
        assert "blk.1.ffn_gate_inp.weight" in tensors
    assert check_gguf_weights(folder, path, "f16").ok


def test_unsupported_architecture_fails_before_any_work(qlora_run, tiny_model_dir, tmp_path):
    from studio.export import UnsupportedModel, export

    base = tmp_path / "base"
    shutil.copytree(tiny_model_dir, base)
    cfg = json.loads((base / "config.json").read_text())
    cfg["model_type"] = "gpt_neox"
    (base / "config.json").write_text(json.dumps(cfg))
    run_dir = tmp_path / "run"
    shutil.copytree(qlora_run, run_dir, ignore=shutil.ignore_patterns("exports"))
    runs.write_state(run_dir, base_model=str(base))
    with pytest.raises(UnsupportedModel, match="gpt_neox") as e:
        export(run_dir, "gguf")
    assert all(t in e.value.hint for t in ("llama", "qwen3_moe", "gemma3_text", "phi3", "gpt_oss", "qwen3_5_text", "smollm3"))
    assert not (run_dir / "exports").exists()


# -- Ollama --------------------------------------------------------------------------------------

def _template(modelfile: str) -> str:
    return re.search(r'TEMPLATE """(.*?)"""', modelfile, re.S).group(1)


def test_ollama_export_template_renders_like_the_chat_template(qlora_run, tmp_path):
    from transformers import AutoTokenizer

    from studio.export import export
    from studio.export.ollama import render_go

    res = export(qlora_run, "ollama", "q8_0", out=tmp_path / "ollama")
    checks = {c["name"]: c for c in res.checks}
    assert checks["gguf_weights"]["ok"] and checks["gguf_vocab"]["ok"] and checks["ollama_template"]["ok"]
    assert checks["gguf_greedy"]["ok"] is None and "llama.cpp is not installed" in checks["gguf_greedy"]["summary"]
    text = (res.path / "Modelfile").read_text()
    assert text.startswith("FROM ./model-q8_0.gguf\n") and (res.path / "model-q8_0.gguf").is_file()
    assert 'PARAMETER stop "<|im_end|>"' in text and "PARAMETER temperature 0" in text and "SYSTEM" not in text
    tok = AutoTokenizer.from_pretrained(runs.read_state(qlora_run)["base_model"])
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": "4"}, {"role": "user", "content": "and 3+3?"}]
    go = render_go(_template(text), {"Messages": [{"Role": m["role"], "Content": m["content"]} for m in chat]})
    assert go == tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    assert not list(tmp_path.glob(".*partial"))


def test_go_template_subset():
    from studio.export.ollama import render_go

    tpl = "{{- if .System }}S={{ .System }}\n{{ else }}none\n{{ end -}}\n  {{ range .Messages }}[{{ .Role }}]{{ end }}"
    assert render_go(tpl, {"System": "x", "Messages": [{"Role": "a"}, {"Role": "b"}]}) == "S=x\n[a][b]"
    assert render_go(tpl, {"Messages": []}) == "none\n"
    with pytest.raises(ValueError):
        render_go("{{ len .Messages }}", {"Messages": []})


# -- safety --------------------------------------------------------------------------------------

def test_existing_output_needs_force(qlora_run, tmp_path):
    from studio.export import ConfigError, export

    out = tmp_path / "adapter-out"
    out.mkdir()
    (out / "keep.txt").write_text("user file")
    with pytest.raises(ConfigError, match="already exists"):
        export(qlora_run, "adapter", out=out)
    assert (out / "keep.txt").read_text() == "user file"
    res = export(qlora_run, "adapter", out=out, force=True)
    assert not (out / "keep.txt").exists() and (out / "adapter_model.safetensors").is_file()
    assert {c["name"]: c["ok"] for c in res.checks} == {"adapter_files": True}
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == runs.read_state(qlora_run)["base_model"]


def test_not_enough_space_is_refused_before_writing(qlora_run, tmp_path, monkeypatch):
    from studio.export import DiskError, export, targets

    monkeypatch.setattr(targets.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(DiskError, match="free"):
        export(qlora_run, "merged", out=tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_disk_full_while_writing_leaves_nothing(qlora_run, tmp_path, monkeypatch):
    from studio.export import DiskError, export
    from studio.safetensors_io import StreamingWriter

    real, calls = StreamingWriter.write, []

    def failing(self, name, tensor):
        calls.append(name)
        if len(calls) == 5:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, name, tensor)

    monkeypatch.setattr(StreamingWriter, "write", failing)
    with pytest.raises(DiskError, match="filled up"):
        export(qlora_run, "merged", out=tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_cancel_during_merge_leaves_nothing(qlora_run, tmp_path):
    from studio.export import Cancelled, export

    def progress(phase, done, total):
        if phase in ("merge", "gguf") and done > 0:  # a GGUF export merges while it converts
            raise Cancelled("stop")

    with pytest.raises(Cancelled):
        export(qlora_run, "gguf", "q8_0", out=tmp_path / "out", progress=progress)
    assert list(tmp_path.iterdir()) == []


# -- worker and CLI ------------------------------------------------------------------------------

def _env() -> dict:
    from studio.procs import worker_env

    return worker_env()


def test_worker_stop_command_cancels_cleanly(qlora_run, tmp_path):
    from studio.events import EventReader, encode_command

    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "workers.export", str(qlora_run), "--format", "merged",
                             "--out", str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, cwd=ROOT, env=_env())
    proc.stdin.write(encode_command("stop"))
    proc.stdin.flush()
    stdout, _ = proc.communicate(timeout=120)
    events = EventReader().feed(stdout)
    assert proc.returncode == 3
    assert events[0].type == "hello" and events[-1].type == "done"
    assert events[-1].data["status"] == "cancelled" and events[-1].data["path"] is None
    assert list(tmp_path.iterdir()) == []


def test_cli_export_reports_path_and_verification(qlora_run, tmp_path, capsys):
    from studio.cli import main

    out = tmp_path / "merged"
    assert main(["export", str(qlora_run), "--format", "merged", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"exported merged: {out}" in printed
    assert re.search(r"ok\s+merged vs base\+adapter logits: max diff", printed)
    assert (out / "export.json").is_file() and not list(tmp_path.glob(".*partial"))
    assert main(["export", str(qlora_run), "--format", "adapter", "--quant", "q8_0"]) == 2
    assert "--quant applies to gguf, ollama, ollama-lora only" in capsys.readouterr().err


def test_worker_lists_targets_without_torch():
    code = ("import sys, runpy\nsys.argv = ['x', '--list']\ntry:\n    runpy.run_module('workers.export', run_name='__main__')\n"
            "except SystemExit:\n    pass\nprint('torch loaded:', 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, cwd=ROOT, env=_env(), timeout=60)
    lines = out.stdout.decode().strip().splitlines()
    assert lines[-1] == "torch loaded: False"
    rows = json.loads(lines[-2])
    assert [r["name"] for r in rows] == ["merged", "adapter", "gguf", "ollama", "ollama-lora"]
    assert rows[2]["quants"] == ["f16", "bf16", "q8_0", "q6_k", "q5_k_m", "q4_k_m", "q4_0"] and rows[2]["default_quant"] == "q8_0"
    from studio.commands.export import FORMATS, QUANTS
    assert list(QUANTS) == rows[2]["quants"] and list(FORMATS) == [r["name"] for r in rows]  # the CLI offers the same


def test_cli_cleans_a_killed_workers_temp_folder(tmp_path):
    from studio.commands.export import _remove_partials

    partial = tmp_path / "exports" / ".gguf-q8_0.x1y2.partial"
    partial.mkdir(parents=True)
    (partial / "model-q8_0.gguf").write_bytes(b"half")
    other = tmp_path / "exports" / "merged"
    other.mkdir()
    _remove_partials(tmp_path, ["--format=gguf"])
    assert not partial.exists() and other.is_dir()


def _sentencepiece_style_model(folder: Path) -> Path:
    """A tiny Llama with a Llama-2/Mistral style tokenizer.json: BPE with byte fallback, '▁' for spaces."""
    import torch
    from tokenizers import Tokenizer, decoders, models, normalizers, trainers
    from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>", fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    specials = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)]
    tok.train_from_iterator(tiny._CORPUS * 4, trainer=trainers.BpeTrainer(vocab_size=600, special_tokens=specials,
                                                                          show_progress=False))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    fast.save_pretrained(folder)
    cfg = AutoConfig.for_model("llama", vocab_size=len(fast), hidden_size=64, intermediate_size=128,
                               num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                               bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(folder)
    return folder


def test_gguf_sentencepiece_style_tokenizer(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from studio.export.gguf_writer import write_gguf

    folder = _sentencepiece_style_model(tmp_path / "sp")
    write_gguf(folder, tmp_path / "m.gguf", "q8_0")
    meta = _gguf_fields(tmp_path / "m.gguf")
    assert (meta["tokenizer.ggml.model"], meta["tokenizer.ggml.pre"]) == ("llama", "default")
    from gguf import GGUFReader

    types = GGUFReader(str(tmp_path / "m.gguf")).fields["tokenizer.ggml.token_type"].contents()
    assert types[:4] == [3, 3, 3, 6]  # <unk> <s> </s> control, then byte tokens
    want_tok, got_tok = AutoTokenizer.from_pretrained(str(folder)), AutoTokenizer.from_pretrained(str(tmp_path), gguf_file="m.gguf")
    for text in ("Hello world, ça va? The quick brown fox 123.", "Fine-tuning adapts a pretrained model"):
        assert got_tok(text)["input_ids"] == want_tok(text)["input_ids"]
    want = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    got = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file="m.gguf", dtype=torch.float32)
    torch.testing.assert_close(_logits(got, IDS), _logits(want, IDS), atol=2e-2, rtol=0)  # q8_0


LLAMA3_TEMPLATE = (
    "{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    " + message['content'] | trim + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")


def test_ollama_chat_families(tiny_model_dir):
    from transformers import AutoTokenizer

    from studio.export import UnsupportedModel
    from studio.export.ollama import detect_chat

    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    assert detect_chat(tok).family.name == "chatml"
    tok.chat_template = LLAMA3_TEMPLATE
    chat = detect_chat(tok)
    assert (chat.family.name, chat.system, chat.checked) == ("llama3", None, 4)
    assert "<|eot_id|>" in chat.family.stops
    tok.chat_template = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
    with pytest.raises(UnsupportedModel, match="not one the Ollama export can translate"):
        detect_chat(tok)


def test_the_vocabulary_check_catches_a_tokenizer_that_is_not_the_gguf_s(qlora_run, tmp_path):
    """check_gguf_vocab reads the GGUF back: against another tokenizer's files it names the first difference."""
    import json

    from studio.export import export
    from studio.export.verify import check_gguf_vocab

    res = export(qlora_run, "gguf", "f16", out=tmp_path / "gguf")
    base = Path(runs.read_state(qlora_run)["base_model"])
    assert check_gguf_vocab(base, res.path / "model-f16.gguf").ok
    other = tmp_path / "other"
    other.mkdir()
    tok = json.loads((base / "tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]
    a, b = sorted(vocab, key=vocab.get)[100:102]
    vocab[a], vocab[b] = vocab[b], vocab[a]  # two tokens swapped: same size, different ids
    (other / "tokenizer.json").write_text(json.dumps(tok))
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        if (base / name).is_file():
            (other / name).write_text((base / name).read_text())
    check = check_gguf_vocab(other, res.path / "model-f16.gguf")
    assert check.ok is False and "2 token(s) differ" in check.summary
