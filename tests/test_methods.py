"""Every adapter method (lora.method) through the real training worker on a tiny 4-bit Llama:
falling loss, a saved adapter that reloads, bit-exact resume after SIGKILL, and the clear refusal."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "faults"))
from faultkit import MAX_STEPS, adapter_tensors, cli, kill_at_step, losses, max_diff, run_worker, tiny_recipe  # noqa: E402

from studio import methods, runs  # noqa: E402
from studio.recipe import Recipe  # noqa: E402

# Prompt and prefix tuning learn only a few vectors: they need a far higher learning rate than LoRA.
LR = {"prefix": 5e-2, "prompt": 2e-1}


def method_run(root: Path, model: Path, data: Path, method: str, **lora) -> Path:
    r = tiny_recipe(model, data, lr=LR.get(method, 5e-3))
    r.lora.method, r.lora.virtual_tokens = method, 4
    for k, v in lora.items():
        setattr(r.lora, k, v)
    return runs.create(r, root)


@pytest.fixture(scope="module", params=methods.NAMES)
def reference(request, tmp_path_factory, tiny_model_dir, chat_jsonl):
    """One uninterrupted run per method: what a killed and resumed run must reproduce."""
    method = request.param
    run_dir = method_run(tmp_path_factory.mktemp(f"ref-{method}"), tiny_model_dir, chat_jsonl, method)
    rc, events = run_worker(run_dir)
    assert rc == 0, (run_dir / "worker.log").read_text()[-3000:]
    return method, run_dir, events


def test_each_method_learns_saves_and_reloads(reference, tiny_model_dir):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    method, run_dir, events = reference
    got = losses(run_dir)
    steps = [got[s] for s in sorted(got)]
    assert len(steps) == MAX_STEPS
    assert sum(steps[-3:]) / 3 < steps[0] - 0.02, steps  # below where it started
    trainable = next(e.data for e in events if e.type == "log" and "trainable_params" in e.data)
    assert trainable["method"] == method and trainable["message"].startswith(methods.get(method).label)
    cfg = json.loads((run_dir / runs.ADAPTER / "adapter_config.json").read_text())
    assert methods.from_adapter_config(cfg) == method
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32)
    ids = torch.tensor([[5, 17, 42, 9, 77, 3]])
    with torch.no_grad():
        before = base(input_ids=ids).logits
        tuned = PeftModel.from_pretrained(base, str(run_dir / runs.ADAPTER))
        after = tuned(input_ids=ids).logits
        out = tuned.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=3, do_sample=False)
    assert out.shape == (1, ids.shape[1] + 3)
    assert (before[:, -1] - after[:, -1]).abs().max() > 1e-4


def test_each_method_resumes_bit_exactly_after_a_kill(reference, tmp_path, tiny_model_dir, chat_jsonl):
    method, ref_dir, _ = reference
    if method in ("lora", "rslora"):  # keeps the suite under its time budget
        pytest.skip("LoRA's resume is tests/faults/test_resume.py; rsLoRA differs from it only in the scale")
    run_dir = method_run(tmp_path, tiny_model_dir, chat_jsonl, method)
    assert kill_at_step(run_dir, 5) < MAX_STEPS
    result = cli("resume", str(run_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    assert losses(run_dir) == losses(ref_dir)
    assert max_diff(adapter_tensors(run_dir), adapter_tensors(ref_dir)) <= 1e-6
    ours = json.loads((run_dir / runs.ADAPTER / "adapter_config.json").read_text())
    theirs = json.loads((ref_dir / runs.ADAPTER / "adapter_config.json").read_text())
    assert ours.get("rank_pattern") == theirs.get("rank_pattern")  # AdaLoRA: the same ranks kept
    if method == "adalora":
        assert theirs["rank_pattern"], "AdaLoRA finished without a rank pattern: the allocator never ran"
        ck = sorted((run_dir / runs.CHECKPOINTS).glob("step-*"))[0]
        assert (ck / "adalora_state.pt").is_file()


def test_dora_on_an_8bit_base_on_the_cpu_is_refused_with_a_fix(tmp_path, tiny_model_dir, chat_jsonl):
    run_dir = method_run(tmp_path, tiny_model_dir, chat_jsonl, "dora")
    recipe = Recipe.load(run_dir / runs.RECIPE)
    recipe.quant.mode = "8bit"
    recipe.save(run_dir / runs.RECIPE)
    rc, events = run_worker(run_dir)
    assert rc == 1
    err = next(e.data for e in events if e.type == "error")
    assert err["kind"] == "config" and "DoRA" in err["message"] and "8-bit" in err["message"]
    assert "4bit" in err["hint"]
    assert "Traceback" not in (run_dir / "worker.log").read_text()


def test_recipe_field_flag_and_validation():
    from studio.recipe import setting_field, setting_flag

    r = Recipe()
    assert r.lora.method == "lora" and setting_flag("lora.method") == "--peft"
    assert setting_field("lora.method").metadata["choices"] == methods.NAMES
    r.model.name_or_path, r.data.path = "demo", "x.jsonl"
    r.lora.method = "qlora-xl"
    assert any(p.field == "lora.method" and "lora, rslora, dora" in p.hint for p in r.validate())
    r.lora.method, r.lora.targets = "prompt", ["q_proj"]
    problem = next(p for p in r.validate() if p.field == "lora.targets")
    assert "ignored" in problem.message and "--peft lora" in problem.hint
    r.lora.targets = ["all-linear"]
    assert r.validate() == []
    assert Recipe.from_dict({"lora": {"method": "dora"}}).lora.method == "dora"
    assert Recipe.from_dict({}).lora.method == "lora"  # recipes from before the field train LoRA


def test_every_method_has_one_sentence():
    for name, m in methods.METHODS.items():
        assert m.when.endswith(".") and m.when.count(". ") == 0, name
        assert methods.describe(name).startswith(m.label)
        assert m.mergeable or m.why_not_merged
        assert m.gguf_adapter or m.why_no_gguf_adapter


def test_prefix_tuning_with_gradient_checkpointing_is_refused_with_a_fix():
    r = Recipe()
    r.model.name_or_path, r.data.path = "demo", "x.jsonl"
    r.lora.method, r.train.grad_ckpt = "prefix", True
    problem = next(p for p in r.validate() if p.field == "train.grad_ckpt")
    assert "gradient checkpointing" in problem.message and "false" in problem.hint
    r.train.grad_ckpt = False
    assert r.validate() == []


def test_train_peft_prefix_turns_checkpointing_off_and_says_so(capsys, tmp_path):
    import argparse

    from studio.commands import train

    parser = argparse.ArgumentParser()
    train.register(parser.add_subparsers())
    r = Recipe()
    r.model.name_or_path, r.data.path = "demo", "x.jsonl"
    assert r.train.grad_ckpt is True
    r.save(tmp_path / "r.json")
    args = parser.parse_args(["train", str(tmp_path / "r.json"), "--peft", "prefix"])
    recipe = train._recipe_from(args)
    assert recipe.lora.method == "prefix" and recipe.train.grad_ckpt is False and recipe.validate() == []
    assert "gradient checkpointing" in capsys.readouterr().err
    args = parser.parse_args(["train", "--demo", "--peft", "dora", "--virtual-tokens", "7"])
    recipe = train._recipe_from(args)
    assert recipe.lora.method == "dora" and recipe.lora.virtual_tokens == 7


@pytest.mark.parametrize("method", ["prefix", "prompt"])
def test_prefix_and_prompt_start_as_if_a_real_text_preceded_the_prompt(method, tiny_model_dir):
    """Not random vectors: at step 0 the model answers exactly as the base does after INIT_TEXT."""
    import torch
    from transformers import AutoModelForCausalLM

    from studio.train.loading import load_model, load_tokenizer
    from studio.train.peft_methods import INIT_TEXT

    r = Recipe()
    r.lora.method, r.lora.virtual_tokens, r.quant.mode, r.train.grad_ckpt = method, 7, "none", False
    model = load_model(tiny_model_dir, r, "cpu").eval()
    tok = load_tokenizer(tiny_model_dir, r)
    text = tok(INIT_TEXT, add_special_tokens=method == "prompt")["input_ids"]
    text = (text * 7)[:7]
    ids = torch.tensor([[5, 17, 42, 9, 77, 3]])
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32).eval()
    with torch.no_grad():
        want = base(input_ids=torch.tensor([text + ids[0].tolist()])).logits[:, -ids.shape[1]:]
        got = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[:, -ids.shape[1]:]
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    # eval.json's validation loss counts the text's tokens only (prompt tuning adds logits for its own)
    from studio import evalreport

    row = ids[0].tolist()
    loss, n = evalreport.validation_loss(model, [{"input_ids": row, "labels": row}], pad_id=0)
    ref, m = evalreport.validation_loss(base, [{"input_ids": text + row, "labels": [-100] * 8 + row[1:]}], pad_id=0)
    assert n == m == len(row) - 1 and loss == pytest.approx(ref, abs=1e-4)
