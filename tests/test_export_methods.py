"""Export of every adapter method: merged logits equal base + adapter (atol 1e-4) for the low-rank
methods; prefix and prompt tuning export the adapter and say why merged/GGUF are unavailable; the
llama.cpp LoRA adapter GGUF refuses DoRA and carries rsLoRA's and AdaLoRA's scales exactly."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from studio import methods, runs
from studio.recipe import Recipe

IDS = [1, 40, 41, 90, 120, 7, 200, 33]
MERGEABLE = [m for m in methods.NAMES if methods.METHODS[m].mergeable]


def make_method_run(root: Path, base: Path, method: str) -> Path:
    """A finished run folder whose adapter peft saved for ``method`` (4-bit trained base, random non-zero weights)."""
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from studio.train.peft_methods import peft_config

    recipe = Recipe()
    recipe.model.name_or_path = str(base)
    recipe.lora.method, recipe.lora.rank, recipe.lora.alpha, recipe.lora.virtual_tokens = method, 4, 8, 5
    run_dir = runs.create(recipe, root)
    q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32)
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32, quantization_config=q,
                                                 device_map={"": "cpu"})
    model = get_peft_model(model, peft_config(recipe, total_steps=10))
    torch.manual_seed(3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad:  # B, E, magnitudes, prompt vectors: all away from their no-op start
                p.add_(torch.randn_like(p) * (0.05 if "magnitude" not in name else 0.2 * p.abs().mean()))
    if method == "adalora":  # a rank pattern as AdaLoRA's allocator leaves it: some ranks pruned per module
        config = model.peft_config["default"]
        names = [n for n, _ in model.named_parameters() if n.endswith("lora_E.default")]
        config.rank_pattern = {n.removeprefix("base_model.model."): [i % 3 != 1 for i in range(6)] for n in names}
    model.save_pretrained(str(run_dir / runs.ADAPTER))
    runs.write_state(run_dir, base_model=str(base), status="finished")
    return run_dir


@pytest.fixture(scope="module")
def method_runs(tiny_model_dir, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("method-runs")
    return {m: make_method_run(root / m, tiny_model_dir, m) for m in methods.NAMES}


def _logits(model):
    import torch

    with torch.no_grad():
        return model(torch.tensor([IDS])).logits[0]


@pytest.mark.parametrize("method", MERGEABLE)
def test_merged_logits_equal_base_plus_adapter(method, method_runs, tiny_model_dir):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from studio.export import export

    run_dir = method_runs[method]
    res = export(run_dir, "merged")
    check = {c["name"]: c for c in res.checks}["merge_logits"]
    assert check["ok"], check
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    plain = _logits(base)
    ref = _logits(PeftModel.from_pretrained(base, str(run_dir / runs.ADAPTER)))
    merged = _logits(AutoModelForCausalLM.from_pretrained(str(res.path)))
    assert (ref - plain).abs().max() > 1e-2  # the adapter does change the model
    torch.testing.assert_close(merged, ref, atol=1e-4, rtol=0)


@pytest.mark.parametrize("method", ["prefix", "prompt"])
def test_prompt_methods_export_the_adapter_and_say_why_not_more(method, method_runs):
    from studio.export import ConfigError, export
    from studio.export.targets import TARGETS, unavailable

    run_dir = method_runs[method]
    missing = unavailable(run_dir)
    assert set(missing) == set(TARGETS) - {"adapter"}
    assert all("changes no weight" in why for why in missing.values())
    res = export(run_dir, "adapter")
    assert (res.path / "adapter_model.safetensors").is_file()
    note = {c["name"]: c for c in res.checks}["other_formats"]
    assert note["ok"] is None and "changes no weight" in note["summary"] and "gguf" in note["summary"]
    for fmt in ("merged", "gguf", "ollama", "ollama-lora"):
        with pytest.raises(ConfigError) as e:
            export(run_dir, fmt, out=run_dir / "exports" / f"x-{fmt}")
        assert "not available for this run" in e.value.message and "--format adapter" in e.value.hint
        assert not (run_dir / "exports" / f"x-{fmt}").exists()


def test_prompt_method_export_through_the_cli_names_the_reason(method_runs, tmp_path):
    import subprocess

    from studio.procs import worker_env

    run_dir = method_runs["prompt"]
    import sys

    out = subprocess.run([sys.executable, "-m", "studio.cli", "export", str(run_dir), "--format", "gguf"],
                         capture_output=True, text=True, env=worker_env(), timeout=120)
    assert out.returncode != 0
    assert "Prompt tuning changes no weight" in out.stderr and "--format adapter" in out.stderr
    assert "Traceback" not in out.stderr


def test_lora_gguf_refuses_dora_and_keeps_rslora_and_adalora_scales(method_runs, tiny_model_dir):
    import torch

    from studio.export import UnsupportedModel
    from studio.export.adapter import load_adapter
    from studio.export.lora_gguf import file_alpha, lora_tensors
    from studio.export.targets import unavailable

    config = json.loads((tiny_model_dir / "config.json").read_text())
    dora = load_adapter(method_runs["dora"] / runs.ADAPTER)
    with pytest.raises(UnsupportedModel) as e:
        lora_tensors(dora, config)
    assert "DoRA" in e.value.message and "merged" in e.value.hint
    assert set(unavailable(method_runs["dora"])) == {"ollama-lora"}
    for method in ("rslora", "adalora"):
        adapter = load_adapter(method_runs[method] / runs.ADAPTER)
        alpha = file_alpha(adapter)
        by_name = dict(zip(sorted(adapter.deltas), lora_tensors(adapter, config)))
        name = "model.layers.0.self_attn.v_proj.weight"  # not permuted: compare as stored
        _, a, b = by_name[name]
        applied = alpha / a.shape[0] * torch.from_numpy(b) @ torch.from_numpy(a)  # llama.cpp: alpha / r * b @ a
        torch.testing.assert_close(applied, adapter.deltas[name].delta(), atol=1e-6, rtol=1e-5)
    rs = load_adapter(method_runs["rslora"] / runs.ADAPTER)
    assert rs.deltas["model.layers.0.self_attn.v_proj.weight"].scale == pytest.approx(8 / 4 ** 0.5)  # alpha / sqrt(r)


def test_one_chat_engine_answers_as_every_kind_of_adapter(method_runs, tiny_model_dir):
    """LoRA kinds, prefix and prompt tuning side by side on one base: each answers as if loaded alone
    (logits and a greedy answer through the engine's cached generation); AdaLoRA beside LoRA is refused."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from studio.inference import ChatEngine, GenSettings, SettingsError

    recipe = Recipe(name="t")
    recipe.model.name_or_path = str(tiny_model_dir)
    engine = ChatEngine(tiny_model_dir, recipe, device="cpu", quant="none")
    base_params = engine.base_parameter_count()
    names = ("lora", "dora", "prefix", "prompt")
    for m in names:
        engine.add_adapter(m, method_runs[m] / runs.ADAPTER)
    assert engine.base_parameter_count() == base_params  # one copy of the base weights
    with pytest.raises(SettingsError, match="AdaLoRA adapter cannot be attached beside"):
        engine.add_adapter("adalora", method_runs["adalora"] / runs.ADAPTER)
    ids = torch.tensor([[5, 17, 42, 9, 77, 3, 11]])
    messages = [{"role": "user", "content": "What is 2 plus 3?"}]
    settings = GenSettings(max_new_tokens=6)
    prompt = engine.prompt_ids(messages, settings)

    def alone(method):
        m = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
        if method is not None:
            m = PeftModel.from_pretrained(m, str(method_runs[method] / runs.ADAPTER))
        with torch.no_grad():
            logits = m.eval()(input_ids=ids).logits
            out = m.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=6,
                             do_sample=False, pad_token_id=engine.tokenizer.pad_token_id)
        return logits, engine.tokenizer.decode(out[0, prompt.shape[1]:], skip_special_tokens=True)

    for name in ("prompt", "lora", "base", "prefix", "dora", "prompt", "base"):
        want_logits, want_text = alone(None if name == "base" else name)
        with engine.variant(name), torch.no_grad():
            got = engine.model(input_ids=ids).logits
        torch.testing.assert_close(got, want_logits, atol=1e-5, rtol=0)
        assert engine.generate(messages, name, settings)["text"] == want_text, name
