"""The LoRA adapter as a llama.cpp adapter GGUF, with the base GGUF and an Ollama Modelfile
(FROM base, ADAPTER lora), and what every export reports afterwards (files, folder, command, source)."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
import tiny


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    """A finished run on a 2-layer Llama (64 wide) with a LoRA on every linear layer, 4-bit trained."""
    from test_export import make_run

    base = tiny.make_model(tmp_path_factory.mktemp("base") / "tiny")
    return make_run(tmp_path_factory.mktemp("runs"), base, r=4)


def _apply_like_llama_cpp(weights: dict, pairs: dict, alpha: float) -> dict:
    """W + alpha/r * b @ a for every pair, in the GGUF layout (what llama.cpp computes at run time)."""
    out = dict(weights)
    for name, (a, b) in pairs.items():
        out[name] = weights[name] + alpha / a.shape[0] * (b @ a)
    return out


def test_ollama_lora_export_is_base_plus_adapter(lora_run, tmp_path):
    import gguf

    from studio.export import export
    from studio.export.adapter import load_adapter
    from studio.export.gguf_writer import write_gguf
    from studio.export.inputs import load_inputs
    from studio.export.lora_gguf import read_lora_gguf
    from studio.export.merge import merge_to_folder

    out = tmp_path / "ol"
    res = export(lora_run, "ollama-lora", "f16", out=out)
    checks = {c["name"]: c for c in res.checks}
    assert checks["lora_gguf"]["ok"] and checks["gguf_weights"]["ok"], res.checks
    names = {f["name"]: f for f in res.files}
    assert {"base-f16.gguf", "adapter-f32.gguf", "Modelfile", "export.json"} <= set(names)
    assert names["base-f16.gguf"]["quant"] == "f16" and names["adapter-f32.gguf"]["kind"] == "LoRA adapter (GGUF)"
    modelfile = (out / "Modelfile").read_text()
    assert modelfile.startswith("FROM ./base-f16.gguf\nADAPTER ./adapter-f32.gguf\nTEMPLATE")
    assert res.next_command == f"ollama create {res.next_command.split()[2]} -f {out / 'Modelfile'}"
    assert re.fullmatch(r"[a-z0-9._-]+", res.next_command.split()[2])

    meta, pairs = read_lora_gguf(out / "adapter-f32.gguf")
    assert meta["general.type"] == "adapter" and meta["adapter.type"] == "lora"
    assert meta["general.architecture"] == "llama" and meta["adapter.lora.alpha"] == pytest.approx(8.0)
    assert len(pairs) == 2 * 7 and all(a.shape[0] == 4 and b.shape[1] == 4 for a, b in pairs.values())
    # base GGUF + LoRA GGUF applied as llama.cpp does == the merged model written as GGUF (same permutations)
    base = {t.name: np.asarray(t.data, dtype=np.float32) for t in gguf.GGUFReader(str(out / "base-f16.gguf")).tensors}
    inputs = load_inputs(lora_run)
    merged_dir = tmp_path / "merged"
    merged_dir.mkdir()
    merge_to_folder(inputs.base_dir, load_adapter(inputs.adapter_dir), merged_dir)
    write_gguf(merged_dir, tmp_path / "merged.gguf", "f16")
    merged = {t.name: np.asarray(t.data, dtype=np.float32) for t in gguf.GGUFReader(str(tmp_path / "merged.gguf")).tensors}
    applied = _apply_like_llama_cpp(base, pairs, meta["adapter.lora.alpha"])
    for name in pairs:
        effect = np.abs(merged[name] - base[name]).max()
        assert effect > 1e-3  # the adapter does change this weight
        np.testing.assert_allclose(applied[name], merged[name], atol=2e-3 * max(1.0, np.abs(merged[name]).max()))


def test_lora_gguf_folds_rslora_and_patterns_into_b(lora_run, tmp_path):
    from studio.export.adapter import load_adapter
    from studio.export.inputs import load_inputs
    from studio.export.lora_gguf import read_lora_gguf, write_lora_gguf
    from studio.export.verify import check_lora_gguf

    inputs = load_inputs(lora_run)
    adapter_dir = tmp_path / "adapter"
    adapter_dir.mkdir()
    for f in inputs.adapter_dir.iterdir():
        (adapter_dir / f.name).write_bytes(f.read_bytes())
    cfg = json.loads((adapter_dir / "adapter_config.json").read_text())
    cfg.update(use_rslora=True, alpha_pattern={"v_proj": 32})
    (adapter_dir / "adapter_config.json").write_text(json.dumps(cfg))
    adapter = load_adapter(adapter_dir)
    path = write_lora_gguf(adapter, inputs.base_dir, tmp_path / "a.gguf")
    check = check_lora_gguf(adapter, inputs.base_dir, path)
    assert check.ok, check.summary
    meta, pairs = read_lora_gguf(path)
    a, b = pairs["blk.0.attn_v.weight"]
    d = adapter.deltas["model.layers.0.self_attn.v_proj.weight"]
    assert d.scale == pytest.approx(32 / 2.0)  # rsLoRA: alpha / sqrt(r), r = 4
    np.testing.assert_allclose(meta["adapter.lora.alpha"] / 4 * (b @ a), d.delta().numpy(), rtol=1e-4, atol=1e-6)


def test_lora_gguf_refuses_whole_weight_replacements(lora_run):
    import torch

    from studio.export.adapter import load_adapter
    from studio.export.errors import UnsupportedModel
    from studio.export.inputs import load_inputs
    from studio.export.lora_gguf import lora_tensors

    inputs = load_inputs(lora_run)
    adapter = load_adapter(inputs.adapter_dir)
    adapter.replacements["model.embed_tokens.weight"] = torch.zeros(3)
    with pytest.raises(UnsupportedModel, match="replaces whole weights"):
        lora_tensors(adapter, inputs.config)


def test_cli_prints_files_folder_source_and_ollama_command(lora_run, tmp_path, capsys):
    from studio.cli import main

    out = tmp_path / "ollama"
    assert main(["export", str(lora_run), "--format", "ollama", "--quant", "f16", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "export.json").read_text())
    assert re.search(r"model-f16\.gguf\s+[\d.]+ kB\s+merged model \(GGUF\), f16", printed)
    assert f"folder: {out}" in printed
    assert "next: ollama create " in printed and f" -f {out / 'Modelfile'}" in printed
    assert report["next_command"] in printed
    assert report["run"] == str(lora_run) and len(report["adapter_sha256"]) == 64
    assert "step" in report and report["source"]["run_id"] == lora_run.name
    assert f"from run {lora_run.name}" in printed
