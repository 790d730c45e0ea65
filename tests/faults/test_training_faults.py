"""Out of memory, NaN loss and a full disk in the middle of a run: what the user sees, what is kept."""
from __future__ import annotations

import math
import subprocess

import pytest
from faultkit import MAX_STEPS, losses, new_run, of_type, read_json, run_worker, start_worker

from studio import checkpoint, runs
from studio.train import recovery


def _error(events):
    errors = of_type(events, "error")
    assert len(errors) == 1, events
    return errors[0].data


def test_injected_oom_steps_down_the_ladder_and_resume_starts_from_the_settings_that_worked(
        tmp_path, tiny_model_dir, chat_jsonl, reference_run):
    import os
    import signal

    from studio.events import EventReader

    run_dir = new_run(tmp_path, tiny_model_dir, chat_jsonl)
    # Out of memory twice at step 3: first the micro-batch is halved, then gradient checkpointing goes on.
    proc = start_worker(run_dir, fault="oom@step=3x2")
    reader, seen = EventReader(), []
    while (chunk := proc.stdout.read1(65536)):
        seen += reader.feed(chunk)
        if any(e.type == "checkpoint" and e.data["step"] >= 4 for e in seen):
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
    assert state["settings"] == {"train.micro_batch": 1, "train.grad_accum": 4, "train.grad_ckpt": True,
                                 "train.seq_len": 48, "train.optimizer": "adamw_torch", "train.tiled_head": True,
                                 "train.tiled_mlp": False, "train.offload_activations": False}
    assert [r["step"] for r in state["oom_recoveries"]] == [3, 3]
    assert read_json(run_dir / runs.RECIPE)["train"]["micro_batch"] == 2  # the recipe as started is kept
    newest = checkpoint.list_checkpoints(run_dir)[0]
    assert read_json(newest.path / checkpoint.MANIFEST)["settings"]["train.micro_batch"] == 1
    got, want = losses(run_dir), losses(reference_run)
    assert [got[1], got[2]] == [want[1], want[2]]  # the steps before the OOM were kept, not redone
    assert all(math.isfinite(got[s]) for s in range(3, newest.step + 1))

    # Resumed, it starts from the settings that worked; when memory runs out again for good it says
    # what was tried and what may fit.
    rc, events = run_worker(run_dir, "--resume", fault=f"oom@step={MAX_STEPS - 1}x20")
    assert rc == 1
    assert any("using the settings that last worked" in e.data["message"] for e in of_type(events, "warning"))
    assert [w.data["fields"] for w in of_type(events, "warning") if w.data.get("kind") == "oom_recovery"] == [
        {"train.tiled_mlp": [False, True]},  # every token kept first (no offloading on the CPU)
        {"train.seq_len": [48, 41]}]  # then the 95th percentile of this dataset's lengths
    err = _error(events)
    assert err["kind"] == "oom" and err["where"] == "step" and err["step"] == MAX_STEPS - 1
    assert err["message"].startswith(f"out of memory during step at step {MAX_STEPS - 1}, even with micro-batch 1, "
                                     "gradient checkpointing on, sequence length 41 and optimizer adamw_torch")
    assert "What may fit: " in err["message"] and "a smaller base model" in err["message"] and err["hint"]
    assert runs.read_state(run_dir)["status"] == "failed"
    assert checkpoint.verify(checkpoint.list_checkpoints(run_dir)[0].path) is None


def test_oom_while_loading_says_the_weights_do_not_fit(tmp_path, tiny_model_dir, chat_jsonl):
    run_dir = new_run(tmp_path, tiny_model_dir, chat_jsonl)
    rc, events = run_worker(run_dir, fault="oom@load")
    assert rc == 1
    err = _error(events)
    assert err["kind"] == "oom" and err["where"] == "load"
    assert err["message"].startswith(f"out of memory while loading {tiny_model_dir}: the model's weights alone")
    assert "quant.mode '4bit'" in err["hint"]


def test_disk_full_then_resume_then_nan_loss(tmp_path, tiny_model_dir, chat_jsonl, reference_run):
    """A full disk at the step-4 checkpoint, a resume once space is back, then a NaN loss at step 7."""
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
    assert runs.read_state(run_dir)["status"] == "failed"

    rc, events = run_worker(run_dir, "--resume", fault="nan@step=7")  # space is back; now the loss blows up
    assert rc == 1
    err = _error(events)
    good = folder / "step-6"
    assert err["kind"] == "nan" and err["step"] == 7 and err["last_good_checkpoint"] == str(good)
    assert err["message"] == (f"the loss became nan at step 7; training stopped before that step changed the "
                              f"adapter or the optimizer, and the last good checkpoint is {good}")
    assert [c.step for c in checkpoint.list_checkpoints(run_dir)] == [6, 4, 2]  # nothing saved after the bad step
    assert checkpoint.verify(good) is None
    assert all(e.data["step"] < 7 for e in of_type(events, "metric"))
    assert not (run_dir / runs.ADAPTER).exists()
    assert runs.read_state(run_dir)["error"]["kind"] == "nan"
    got, want = losses(run_dir), losses(reference_run)  # the steps redone after the full disk are exact
    assert got == {step: want[step] for step in range(1, 7)}


@pytest.fixture
def tiny_disk(tmp_path):
    """A real 300 KiB filesystem (tmpfs) to fill; needs the right to mount (root), else the test is skipped."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (not root); the injected ENOSPC test covers the logic")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_a_really_full_disk_during_a_checkpoint(tmp_path, tiny_model_dir, chat_jsonl, tiny_disk):
    """No injection: the checkpoints folder lives on a tiny filesystem that fills at the second checkpoint."""
    run_dir = new_run(tmp_path, tiny_model_dir, chat_jsonl, max_steps=4)
    (tiny_disk / "checkpoints").mkdir()
    (run_dir / runs.CHECKPOINTS).symlink_to(tiny_disk / "checkpoints")
    rc, events = run_worker(run_dir)
    assert rc == 1
    err = _error(events)
    folder = run_dir / runs.CHECKPOINTS
    assert err["kind"] == "io" and err["step"] == 4
    assert err["message"].startswith(f"could not write the checkpoint of step 4 in {folder}: the disk is full")
    assert err["message"].endswith(f"Nothing partial was kept; the previous checkpoint {folder / 'step-2'} is intact")
    assert sorted(p.name for p in folder.iterdir()) == ["step-2"]
    assert checkpoint.verify(folder / "step-2") is None
