"""Out of memory, NaN loss and a full disk in the middle of a run: what the user sees, what is kept."""
from __future__ import annotations

import math

from conftest import (MAX_STEPS, adapter_tensors, cli, kill_at_step, losses, max_diff, new_run, of_type,
                      read_json, run_worker, start_worker)
from studio import runs
from studio.events import read_events
from studio.train import checkpoint, recovery


def _error(events):
    errors = of_type(events, "error")
    assert len(errors) == 1, events
    return errors[0].data


def test_injected_oom_steps_down_the_ladder_and_resume_keeps_the_working_settings(
        tmp_path, tiny_model_dir, chat_jsonl, reference_run):
    run_dir = new_run(tmp_path, tiny_model_dir, chat_jsonl)
    # Out of memory twice at step 3: first the micro-batch is halved, then gradient checkpointing goes on.
    proc = start_worker(run_dir, fault="oom@step=3x2")
    import os
    import signal

    from studio.events import EventReader

    reader, seen = EventReader(), []
    while (chunk := proc.stdout.read1(65536)):
        seen += reader.feed(chunk)
        if any(e.type == "progress" and e.data.get("done", 0) >= 6 for e in seen):
            os.kill(proc.pid, signal.SIGKILL)  # then a crash: resume must use the settings that worked
            break
    proc.wait(timeout=60)
    warnings = [e.data for e in of_type(seen, "warning") if e.data.get("kind") == "oom_recovery"]
    assert [w["message"] for w in warnings] == [
        "out of memory during step at step 3: changed micro-batch 2 -> 1 and gradient accumulation 2 -> 4 "
        "(the effective batch stays 4); continuing from checkpoint step 2",
        "out of memory during step at step 3: changed gradient checkpointing turned on (activations are "
        "recomputed: about 30% slower); continuing from checkpoint step 2"]
    effective = read_json(run_dir / recovery.EFFECTIVE_RECIPE)["train"]
    assert (effective["micro_batch"], effective["grad_accum"], effective["grad_ckpt"]) == (1, 4, True)
    state = runs.read_state(run_dir)
    assert state["settings"] == {"micro_batch": 1, "grad_accum": 4, "grad_ckpt": True, "seq_len": 48,
                                 "optimizer": "adamw_torch"}
    assert [r["step"] for r in state["oom_recoveries"]] == [3, 3]
    assert read_json(run_dir / runs.RECIPE)["train"]["micro_batch"] == 2  # the recipe as started is kept

    result = cli("resume", str(run_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "using the settings that last worked" in result.stdout + result.stderr
    newest = checkpoint.list_checkpoints(run_dir)[0]
    assert newest.step == MAX_STEPS
    assert read_json(newest.path / checkpoint.MANIFEST)["settings"]["micro_batch"] == 1
    got, want = losses(run_dir), losses(reference_run)
    assert sorted(got) == list(range(1, MAX_STEPS + 1)) and all(math.isfinite(v) for v in got.values())
    assert [got[1], got[2]] == [want[1], want[2]]  # the steps before the OOM were kept, not redone


def test_oom_after_the_ladder_says_what_may_fit(tmp_path, tiny_model_dir, chat_jsonl):
    run_dir = new_run(tmp_path, tiny_model_dir, chat_jsonl)
    rc, events = run_worker(run_dir, fault="oom@step=2x20")
    assert rc == 1
    err = _error(events)
    assert err["kind"] == "oom" and err["where"] == "step" and err["step"] == 2
    assert err["message"].startswith("out of memory during step at step 2, even with micro-batch 1, "
                                     "gradient checkpointing on")
    assert "What may fit: " in err["message"] and "a smaller base model" in err["message"]
    assert len(err["tried"]) >= 2 and err["hint"]
    assert runs.read_state(run_dir)["status"] == "failed"


def test_nan_loss_stops_with_the_step_and_the_last_good_checkpoint(tmp_path, tiny_model_dir, chat_jsonl):
    run_dir = new_run(tmp_path, tiny_model_dir, chat_jsonl)
    rc, events = run_worker(run_dir, fault="nan@step=5")
    assert rc == 1
    err = _error(events)
    good = run_dir / runs.CHECKPOINTS / "step-4"
    assert err["kind"] == "nan" and err["step"] == 5 and err["last_good_checkpoint"] == str(good)
    assert err["message"] == (f"the loss became nan at step 5; training stopped before that step changed the "
                              f"adapter or the optimizer, and the last good checkpoint is {good}")
    assert [c.step for c in checkpoint.list_checkpoints(run_dir)] == [4, 2]  # nothing saved after the bad step
    assert checkpoint.verify(good) is None
    assert all(e.data["step"] < 5 for e in of_type(events, "metric"))
    assert not (run_dir / runs.ADAPTER).exists()
    assert runs.read_state(run_dir)["error"]["kind"] == "nan"


def test_disk_full_during_a_checkpoint_keeps_the_previous_one_and_resume_loses_nothing(
        tmp_path, tiny_model_dir, chat_jsonl, reference_run):
    run_dir = new_run(tmp_path, tiny_model_dir, chat_jsonl)
    rc, events = run_worker(run_dir, fault="enospc@save=4")
    assert rc == 1
    err = _error(events)
    folder = run_dir / runs.CHECKPOINTS
    assert err["kind"] == "io" and err["step"] == 4
    assert err["message"] == (f"could not write the checkpoint of step 4 in {folder}: the disk is full. Nothing "
                              f"partial was kept; the previous checkpoint {folder / 'step-2'} is intact")
    assert f"lora-studio resume {run_dir}" in err["hint"]
    assert sorted(p.name for p in folder.iterdir()) == ["step-2"]  # no partial folder, not even a hidden one
    assert checkpoint.verify(folder / "step-2") is None
    result = cli("resume", str(run_dir))  # space freed: continue
    assert result.returncode == 0, result.stderr[-3000:]
    assert max_diff(adapter_tensors(run_dir), adapter_tensors(reference_run)) <= 1e-6
    assert losses(run_dir) == losses(reference_run)
    assert any(e.type == "checkpoint" and e.data["step"] == 4 for e in read_events(run_dir / runs.EVENTS))
