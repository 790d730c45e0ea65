"""Attack class: numbers that are not numbers (NaN, inf, absurd ranges) in recipes and in weights.

A NaN may not pass validation, may not be called a good checkpoint or a finished adapter, and may
not leave through any export.
"""
from __future__ import annotations

import pytest
from faultkit import fake_run_with_adapter as _fake_run_with_adapter
from faultkit import new_run, of_type, run_worker

from studio import checkpoint, runs
from studio.recipe import Recipe


@pytest.mark.parametrize("field, value, words", [
    ("train.weight_decay", float("nan"), "not a finite number"),
    ("train.epochs", float("nan"), "not a finite number"),
    ("train.lr", float("inf"), "not a finite number"),
    ("train.max_grad_norm", float("-inf"), "not a finite number"),
    ("lora.dropout", float("nan"), "not a finite number"),
    ("data.val_fraction", float("nan"), "not a finite number"),
    ("train.warmup_ratio", -5, "outside its range: it must be at least 0 and at most 1"),
    ("train.logging_steps", 0, "outside its range: it must be at least 1 and at most 1,000,000"),
    ("lora.rank", 1_000_000_000, "outside its range: it must be at least 1 and at most 4,096"),
    ("train.seed", -1, "outside its range: it must be at least 0 and at most 2,147,483,647"),
    ("train.keep_checkpoints", 10**9, "outside its range: it must be at least 1 and at most 1,000"),
])
def test_every_numeric_field_is_finite_and_in_range(field, value, words):
    r = Recipe()
    r.data.path = "x.jsonl"
    section, key = field.split(".")
    setattr(getattr(r, section), key, value)
    problems = [p for p in r.validate() if p.field == field]
    assert len(problems) == 1 and words in problems[0].message, r.validate()


def test_a_nan_recipe_read_from_json_is_refused(tmp_path):
    path = tmp_path / "recipe.json"
    path.write_text('{"data": {"path": "x.jsonl"}, "train": {"weight_decay": NaN, "epochs": Infinity}}')
    problems = {p.field for p in Recipe.load(path).validate()}
    assert {"train.weight_decay", "train.epochs"} <= problems


def test_every_numeric_field_has_a_range():
    import dataclasses

    from studio.recipe import SECTIONS, bounds_text

    numeric = {f"{s}.{f.name}": f for s, cls in SECTIONS.items() for f in dataclasses.fields(cls)
               if type(f.default) in (int, float)}
    assert len(numeric) > 15 and [k for k, f in numeric.items() if not bounds_text(f.metadata)] == []


def test_weights_that_become_nan_never_make_a_checkpoint_or_a_finished_adapter(tmp_path, tiny_model_dir, chat_jsonl):
    """The loss of the poisoned step is still finite: only a look at the weights catches it."""
    run_dir = new_run(tmp_path, tiny_model_dir, chat_jsonl, max_steps=1, save_steps=1, grad_accum=1)
    rc, events = run_worker(run_dir, fault="nanweights@step=1")
    assert rc == 1, (run_dir / "worker.log").read_text()[-3000:]
    err = of_type(events, "error")[0].data
    assert err["kind"] == "nan" and "became NaN or infinite by step 1" in err["message"], err
    assert "checkpoint of step 1 was not written" in err["message"]
    assert checkpoint.list_checkpoints(run_dir) == []
    assert not (run_dir / runs.ADAPTER).exists()
    assert runs.read_state(run_dir)["status"] == "failed"
    assert not of_type(events, "done")


@pytest.mark.parametrize("fmt", ["adapter", "merged"])
def test_every_export_refuses_non_finite_adapter_weights(tmp_path, tiny_model_dir, fmt):
    import torch

    from studio.export.errors import ConfigError
    from studio.export.targets import export

    a = torch.zeros(2, 64)
    a[0, 3] = float("nan")
    tensors = {"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": a,
               "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight": torch.zeros(64, 2)}
    run_dir = _fake_run_with_adapter(tmp_path, tiny_model_dir, tensors)
    with pytest.raises(ConfigError, match=r"NaN or infinite weights \(base_model\.model\.model\.layers\.0\.self_attn"):
        export(run_dir, fmt)
    assert not (run_dir / runs.EXPORTS).exists()


def test_a_truncated_adapter_is_named_at_export(tmp_path, tiny_model_dir):
    import torch

    from studio.export.errors import ConfigError
    from studio.export.targets import export

    run_dir = _fake_run_with_adapter(tmp_path, tiny_model_dir, {
        "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": torch.zeros(2, 64),
        "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight": torch.zeros(64, 2)})
    path = run_dir / runs.ADAPTER / "adapter_model.safetensors"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ConfigError, match=r"adapter_model\.safetensors: the safetensors file is damaged .*cut short"):
        export(run_dir, "adapter")
