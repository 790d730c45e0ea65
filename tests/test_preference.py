"""Preference objectives (DPO, ORPO) with TRL's trainers: data, validation, and the real worker on a tiny model."""
import json
from pathlib import Path

import pytest
from test_train_worker import run_worker, stdout_events, tiny_recipe
from tiny import write_preference_jsonl

from studio import runs
from studio.data import DataError, load_examples
from studio.data.pairs import encode_pairs
from studio.data.template import IGNORE, encode_with_offsets
from studio.recipe import Recipe


@pytest.fixture(scope="session")
def pref_jsonl(tmp_path_factory) -> Path:
    return write_preference_jsonl(tmp_path_factory.mktemp("pref") / "pref.jsonl")


@pytest.fixture()
def tokenizer(tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_tokenizer_dir))


def test_pairs_are_the_tokens_our_sft_masks_train(tokenizer, pref_jsonl):
    examples, _ = load_examples(str(pref_jsonl))
    rows, stats = encode_pairs(tokenizer, examples[:4], seq_len=256)
    assert stats.pairs == 4 and not stats.truncated
    for ex, row in zip(examples, rows):
        sft = encode_with_offsets(tokenizer, ex)
        trained = [i for i, label in enumerate(sft["labels"]) if label != IGNORE]
        # prompt + chosen is the SFT example up to its last trained token; the chosen ids are those trained tokens
        assert row["prompt_ids"] + row["chosen_ids"] == sft["input_ids"][: trained[-1] + 1]
        assert row["chosen_ids"] == [sft["input_ids"][i] for i in trained]
        assert tokenizer.decode(row["rejected_ids"]).startswith("hello world")
        assert row["rejected_ids"][-1] == tokenizer.convert_tokens_to_ids("<|im_end|>")


def test_pairs_are_cut_to_the_sequence_length_and_counted(tokenizer, pref_jsonl):
    examples, _ = load_examples(str(pref_jsonl))
    full, _ = encode_pairs(tokenizer, examples[:3], seq_len=256)
    cut = max(len(r["prompt_ids"]) for r in full) + 2
    rows, stats = encode_pairs(tokenizer, examples[:3], seq_len=cut)
    assert stats.truncated == 3 and stats.pairs == 3
    assert all(len(r["prompt_ids"]) + len(r["chosen_ids"]) <= cut for r in rows)
    _, stats = encode_pairs(tokenizer, examples[:3], seq_len=min(len(r["prompt_ids"]) for r in full))
    assert stats.too_long == 3 and stats.pairs == 0


def test_dpo_on_a_dataset_without_pairs_names_the_file_and_the_layouts(tokenizer, chat_jsonl):
    from studio.train.dataset import build

    r = Recipe()
    r.data.path, r.train.objective = str(chat_jsonl), "dpo"
    with pytest.raises(DataError) as err:
        build(tokenizer, r)
    msg = str(err.value)
    assert str(chat_jsonl) in msg and "chosen" in msg and "rejected" in msg and "preferred_output" in msg
    assert "train.objective 'sft'" in msg


def test_objective_fields_are_validated_with_fixes():
    r = Recipe()
    r.model.name_or_path, r.data.path = "demo", "x.jsonl"
    r.train.objective, r.train.packing = "dpo", True
    problems = {p.field: str(p) for p in r.validate()}
    assert "train.packing" in problems and "--no-packing" in problems["train.packing"]
    r.train.objective, r.train.packing, r.train.pref_beta = "ppo", False, 0.0
    problems = {p.field: str(p) for p in r.validate()}
    assert "sft, dpo, orpo" in problems["train.objective"] and "train.pref_beta" in problems


def _metric_series(events, key):
    return [e.data[key] for e in events if e.type == "metric" and key in e.data]


def test_dpo_trains_the_margin_grows_and_the_adapter_is_plain_lora(tiny_model_dir, pref_jsonl, tmp_path):
    recipe = tiny_recipe(tiny_model_dir, pref_jsonl, max_steps=8, objective="dpo", micro_batch=2, save_steps=4)
    recipe.quant.mode = "none"
    run_dir = runs.create(recipe, tmp_path)
    proc = run_worker(run_dir)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    events = stdout_events(proc)
    margins = _metric_series(events, "rewards/margins")
    assert len(margins) == 8 and margins[0] == 0.0  # the fresh adapter is the reference: no margin at step 1
    assert margins[-1] > 0.1 and margins[-1] > max(margins[:2])
    assert _metric_series(events, "rewards/accuracies")[-1] == 1.0
    assert _metric_series(events, "eval_rewards/margins")  # the validation pairs are evaluated at the end
    adapter = run_dir / runs.ADAPTER
    assert sorted(p.name for p in adapter.iterdir() if p.is_dir()) == []  # no copy of the adapter as "ref"
    assert json.loads((run_dir / "eval.json").read_text())["val_loss"]["adapter"] is not None
    log = " ".join(e.data.get("message", "") for e in events if e.type == "log")
    assert "dpo: 29 chosen/rejected pairs for training, 3 for validation" in log
    import subprocess

    from studio.procs import worker_argv, worker_env

    (run_dir / "eval.json").unlink()
    again = subprocess.run(worker_argv("workers.evaluate", run_dir), env=worker_env(), capture_output=True, timeout=240)
    assert again.returncode == 0, again.stderr.decode()[-3000:]  # lora-studio eval works on a DPO run too
    assert json.loads((run_dir / "eval.json").read_text())["val_tokens"] > 0


def test_dpo_reference_is_the_base_with_the_adapter_disabled(tiny_model_dir, tiny_tokenizer_dir, pref_jsonl):
    """TRL is given our PeftModel and ref_model=None: no second model, no 'ref' adapter left."""
    import torch
    from datasets import Dataset

    from studio.train import loading, preference
    from studio.train.arguments import training_arguments
    from studio.train.trainer import StudioTrainer

    recipe = tiny_recipe(tiny_model_dir, pref_jsonl, objective="dpo")
    recipe.quant.mode = "none"
    tok = loading.load_tokenizer(tiny_model_dir, recipe)
    model = loading.load_model(tiny_model_dir, recipe, "cpu")
    before = sum(p.numel() for p in model.parameters())
    examples, _ = load_examples(str(pref_jsonl))
    rows, _ = encode_pairs(tok, examples[:4], 64)
    cls = preference.trainer_class("dpo", StudioTrainer)
    args = training_arguments(recipe, Path("/nonexistent-output"), "cpu", torch.float32,
                              config_cls=preference.config_class("dpo"), **preference.config_overrides(recipe))
    trainer = cls(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok,
                  run_dir=Path("/nonexistent-run"), emitter=None)
    assert trainer.ref_model is None and list(trainer.model.peft_config) == ["default"]
    assert sum(p.numel() for p in trainer.model.parameters()) == before


def test_orpo_trains_and_reports_its_odds_ratio(tiny_model_dir, pref_jsonl, tmp_path):
    recipe = tiny_recipe(tiny_model_dir, pref_jsonl, max_steps=6, objective="orpo", micro_batch=2)
    run_dir = runs.create(recipe, tmp_path)  # 4-bit QLoRA base, like the default recipe
    proc = run_worker(run_dir)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    events = stdout_events(proc)
    assert len(_metric_series(events, "log_odds_ratio")) == 6
    assert len(_metric_series(events, "rewards/margins")) == 6
    nll = _metric_series(events, "nll_loss")
    assert nll[-1] < nll[0]
    assert all(t > 0 for t in _metric_series(events, "tokens_per_s"))  # ORPO's tokens are counted too
    assert (run_dir / runs.ADAPTER / "adapter_model.safetensors").is_file()


def test_the_planner_predicts_the_pairs_the_reference_forward_and_packing():
    from studio import memory, models, planner

    info = models.resolve("demo")
    base = {"quant.mode": "4bit", "quant.double_quant": True, "quant.compute_dtype": "bfloat16", "lora.rank": 16,
            "lora.alpha": 32, "lora.targets": ["all-linear"], "train.micro_batch": 2, "train.grad_accum": 8,
            "train.seq_len": 512, "train.grad_ckpt": False, "train.attn": "sdpa", "train.optimizer": "adamw_torch"}
    sft = memory.estimate(info, base)
    orpo = memory.estimate(info, {**base, "train.objective": "orpo"})
    dpo = memory.estimate(info, {**base, "train.objective": "dpo"})
    doubled = memory.estimate(info, {**base, "train.micro_batch": 4})
    assert orpo.components["activations"] == doubled.components["activations"] > sft.components["activations"]
    # TRL's DPO trainer computes its log-probabilities through its own tiled head; ORPO builds the full logits
    assert "TRL's DPO trainer" in dpo.sources["tiled_loss_head"] and "logits_and_loss" in orpo.components
    assert dpo.peak_allocated > doubled.peak_allocated and "estimate" in dpo.sources["reference_forward"]
    packed = memory.estimate(info, {**base, "train.packing": True})
    assert packed.components["packed_attention_mask"] == (2 * 512) ** 2
    plan = planner.fit(info, 24 * 2**30, fixed={"train.objective": "dpo"})
    assert plan.settings.objective == "dpo" and "reference_forward" in plan.components
    assert any("Objective dpo" in r for r in plan.reasons)


def test_the_demo_preference_set_is_what_build_py_writes_chosen_cards_rejected_not():
    import importlib.util

    from studio.demo import demo_preference_set
    from studio.scoring import FORMAT_PATTERN

    demo = Path(__file__).resolve().parent.parent / "resources" / "demo"
    spec = importlib.util.spec_from_file_location("demo_build_pref", demo / "build.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    rows = build.preference_rows()
    assert demo_preference_set().read_text(encoding="utf-8") == build.to_jsonl(rows)
    assert len(rows) > 300
    assert all(FORMAT_PATTERN.search(r["chosen"]) and not FORMAT_PATTERN.search(r["rejected"]) for r in rows)
    examples, report = load_examples(str(demo_preference_set()))
    assert report.format == "preference" and all(ex["rejected"] for ex in examples)


def test_the_oom_ladder_measures_pair_lengths_for_its_sequence_length_rung():
    from datasets import Dataset

    from studio.train.recovery import p95_length

    rows = [{"prompt_ids": [1] * 10, "chosen_ids": [2] * n, "rejected_ids": [3] * 5} for n in range(1, 101)]
    assert p95_length(Dataset.from_list(rows)) == 10 + 96  # the longer side of each pair, with its prompt
    assert p95_length(Dataset.from_list([{"input_ids": [1] * 7}])) == 7


def test_validation_pairs_cut_to_the_length_are_reported_not_thrown_away(tokenizer, pref_jsonl):
    from studio.train.dataset import build, length_warnings

    examples, _ = load_examples(str(pref_jsonl))
    full, _ = encode_pairs(tokenizer, examples, seq_len=256)
    r = Recipe()
    r.data.path, r.train.objective, r.data.val_fraction = str(pref_jsonl), "dpo", 0.5
    r.train.seq_len = max(len(x["prompt_ids"]) for x in full) + 2  # every answer cut, no prompt fills it
    data = build(tokenizer, r)
    assert data.val_pairs is not None and data.val_pairs.pairs == len(data.val) > 0
    assert data.val_cut == data.val_pairs.truncated == len(data.val) and data.val_dropped == 0
    said = length_warnings(data, r.train.seq_len)
    assert said == [f"{len(data.val)} validation pair(s) longer than train.seq_len={r.train.seq_len} tokens were cut "
                    "to it: their tail is not scored"]  # the training pairs are said in the dataset notes
    assert any("had an answer cut to train.seq_len" in note for note in data.report.notes)
