"""A grpo run SIGKILLed mid-run resumes to exactly the adapter, losses and rewards of an uninterrupted run."""
from __future__ import annotations

import json

from faultkit import MAX_STEPS, adapter_tensors, cli, kill_at_step, losses, max_diff, new_run, run_worker
from tiny import write_grpo_jsonl

from studio import runs
from studio.events import read_events

GRPO = {"objective": "grpo", "micro_batch": 4, "grad_accum": 1, "grpo_generations": 2, "grpo_completion_len": 8,
        "grpo_rewards": "answer:1,length:0.5", "seq_len": 64}


def _rewards(run_dir):
    return {e.data["step"]: e.data["reward"] for e in read_events(run_dir / runs.EVENTS)
            if e.type == "metric" and "reward" in e.data}


def test_a_killed_grpo_run_resumes_bit_exactly(tmp_path, tiny_model_dir):
    from studio import speed
    from studio.recipe import Recipe
    from studio.train.speedlog import predicted_step_seconds

    speed.store_cpu_rates({"flops_per_s": 2e10, "seconds_per_layer_pass": 0.02, "seconds_per_element": 1e-8,
                           "seconds_per_micro_batch": 0.001})  # a probed CPU: the run records its step time
    data = write_grpo_jsonl(tmp_path / "grpo.jsonl")
    reference = new_run(tmp_path / "reference", tiny_model_dir, data, **GRPO)
    (reference / runs.PLAN).write_text(json.dumps({"estimate": {"example_tokens": 40}}))  # the plan timed it at 40
    rc, _ = run_worker(reference)
    assert rc == 0, (reference / "worker.log").read_text()[-3000:]
    # the uninterrupted run calibrates the next grpo estimate, apart from SFT's (speed.device_key), against the
    # prediction the plan made (at the plan's example length, not the whole sequence length)
    records = [r for r in speed._records() if r["run"] == reference.name]
    assert [r["device"] for r in records] == ["cpu|sampling"]
    recipe = Recipe.load(reference / runs.RECIPE)
    assert records[0]["predicted_s"] == predicted_step_seconds(recipe, str(tiny_model_dir), "cpu", [], p95=40)[0]
    assert records[0]["predicted_s"] != predicted_step_seconds(recipe, str(tiny_model_dir), "cpu", [])[0]
    run_dir = new_run(tmp_path / "killed", tiny_model_dir, data, **GRPO)
    assert kill_at_step(run_dir, 5) < MAX_STEPS
    result = cli("resume", str(run_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    # the sampling restarts from the checkpoint's RNG state: the same completions, so the same rewards and steps
    assert _rewards(run_dir) == _rewards(reference) and len(_rewards(reference)) == MAX_STEPS
    assert losses(run_dir) == losses(reference)
    assert max_diff(adapter_tensors(run_dir), adapter_tensors(reference)) == 0.0
    assert {str(t.dtype) for t in adapter_tensors(reference).values()} == {"torch.float32"}  # not TRL's bf16 cast
