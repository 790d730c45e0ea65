"""SIGKILL in flight, damaged checkpoints, then `lora-studio resume`: the same adapter and losses."""
from __future__ import annotations

import io
import json
import random

import pytest
from faultkit import MAX_STEPS, adapter_tensors, cli, copy_run, kill_at_step, losses, max_diff, new_run, of_type

from studio import checkpoint, runs
from studio.events import Emitter, EventReader, read_events
from studio.train import recovery

pytestmark = pytest.mark.platform


def _assert_same_as_reference(run_dir, reference_run):
    assert max_diff(adapter_tensors(run_dir), adapter_tensors(reference_run)) <= 1e-6
    got, want = losses(run_dir), losses(reference_run)
    assert sorted(got) == list(range(1, MAX_STEPS + 1))
    assert got == want


def test_sigkill_at_a_random_step_then_resume_is_exact(tmp_path, tiny_model_dir, chat_jsonl, reference_run):
    step = random.Random().randint(3, MAX_STEPS - 2)
    print(f"killing at step {step}")
    run_dir = new_run(tmp_path, tiny_model_dir, chat_jsonl)
    killed_at = kill_at_step(run_dir, step)
    assert killed_at < MAX_STEPS
    on_disk = checkpoint.list_checkpoints(run_dir)[0].step  # step-N of `killed_at` may not have been renamed yet
    assert runs.summarize(run_dir).status == "interrupted"  # what the runs list shows after the kill
    result = cli("resume", str(run_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "finished at step 8" in result.stdout
    _assert_same_as_reference(run_dir, reference_run)
    events = read_events(run_dir / runs.EVENTS)
    resumed = [e for e in events if e.type == "log" and "resumed_from_step" in e.data]
    assert resumed[0].data["resumed_from_step"] == on_disk and killed_at - 2 <= on_disk <= killed_at
    seqs = [e.seq for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)  # the resumed worker continues the numbering
    assert not list((run_dir / runs.CHECKPOINTS).glob(".staging-*"))


def test_truncated_checkpoint_is_skipped_and_resume_stays_exact(tmp_path, killed_run, reference_run):
    run_dir = copy_run(killed_run, tmp_path)
    newest, older = checkpoint.list_checkpoints(run_dir)[:2]
    weights = newest.path / "adapter_model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])  # a disk that lost the end of the file
    result = cli("resume", str(run_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"checkpoint {newest.path.name} is damaged and was skipped" in result.stdout + result.stderr
    warning = next(e for e in read_events(run_dir / runs.EVENTS)
                   if e.type == "warning" and e.data.get("checkpoint") == str(newest.path))
    assert "adapter_model.safetensors" in warning.data["message"] and "truncated" in warning.data["message"]
    resumed = next(e for e in read_events(run_dir / runs.EVENTS) if "resumed_from_step" in e.data)
    assert resumed.data["resumed_from_step"] == older.step
    _assert_same_as_reference(run_dir, reference_run)


def test_manifest_that_lies_is_not_trusted(tmp_path, killed_run):
    run_dir = copy_run(killed_run, tmp_path)
    newest, older = checkpoint.list_checkpoints(run_dir)[:2]
    manifest = json.loads((newest.path / checkpoint.MANIFEST).read_text())
    manifest["files"]["optimizer.pt"]["sha256"] = "0" * 64  # the size is right, the content is not what it says
    (newest.path / checkpoint.MANIFEST).write_text(json.dumps(manifest))
    stream = io.BytesIO()
    ck = recovery.resume_point(run_dir, Emitter(run="t", stream=stream))
    assert ck is not None and ck.step == older.step
    events = EventReader().feed(stream.getvalue())
    warning = of_type(events, "warning")[0]
    assert warning.data["step"] == newest.step
    assert "optimizer.pt does not match its sha256" in warning.data["message"]
    assert not newest.path.exists() and list(run_dir.joinpath(runs.CHECKPOINTS).glob(f".corrupt-{newest.path.name}-*"))
    assert of_type(events, "log")[0].data["resumed_from_step"] == older.step


def test_manifest_that_omits_a_file_or_points_outside_is_refused(tmp_path, killed_run):
    run_dir = copy_run(killed_run, tmp_path)
    ck = checkpoint.list_checkpoints(run_dir)[0]
    manifest = json.loads((ck.path / checkpoint.MANIFEST).read_text())
    del manifest["files"]["rng_state.pth"]
    (ck.path / checkpoint.MANIFEST).write_text(json.dumps(manifest))
    assert "does not list rng_state.pth" in checkpoint.verify(ck.path)
    manifest["files"]["rng_state.pth"] = manifest["files"]["../../recipe.json"] = {"size": 1, "sha256": "x"}
    (ck.path / checkpoint.MANIFEST).write_text(json.dumps(manifest))
    assert "outside the checkpoint" in checkpoint.verify(ck.path) or "rng_state.pth" in checkpoint.verify(ck.path)
    (ck.path / checkpoint.MANIFEST).write_bytes(b"\xff\xfe\x00 not json")
    assert checkpoint.verify(ck.path) == "no readable manifest.json"
    (ck.path / checkpoint.MANIFEST).unlink()
    assert checkpoint.verify(ck.path) == "no readable manifest.json"


def test_resume_refuses_a_finished_run(reference_run):
    result = cli("resume", str(reference_run))
    assert result.returncode != 0
    assert "already finished" in result.stderr and "Traceback" not in result.stderr


def test_folders_left_by_a_kill_mid_write_are_cleaned_and_never_used(tmp_path, killed_run):
    """A SIGKILL during a checkpoint write or a prune leaves only hidden folders; the next start removes them."""
    run_dir = copy_run(killed_run, tmp_path)
    folder = run_dir / runs.CHECKPOINTS
    newest = checkpoint.list_checkpoints(run_dir)[0]
    staging = checkpoint.staging_dir(run_dir, newest.step + 2)
    (staging / f"checkpoint-{newest.step + 2}").mkdir()
    (staging / f"checkpoint-{newest.step + 2}" / "adapter_model.safetensors").write_bytes(b"half")
    (folder / ".deleting-step-0-123").mkdir()
    assert checkpoint.list_checkpoints(run_dir)[0] == newest  # hidden names are never candidates
    removed = checkpoint.clean_partial(run_dir)
    assert sorted(p.name for p in removed) == sorted([staging.name, ".deleting-step-0-123"])
    assert sorted(p.name for p in folder.iterdir()) == sorted(c.path.name for c in checkpoint.list_checkpoints(run_dir))
    older = [c.step for c in checkpoint.list_checkpoints(run_dir)[1:]]
    assert checkpoint.prune(run_dir, keep=1) == older
    assert [c.step for c in checkpoint.list_checkpoints(run_dir)] == [newest.step]
