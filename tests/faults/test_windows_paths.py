"""The path a Windows user takes (issue 32), on every platform: a short training that checkpoints at every
step, a polite stop from another terminal (``lora-studio attach --stop``) that saves the adapter, a resume
that continues, and ``lora-studio runs list`` reading the run. ``make test`` runs these on Linux;
``make test-windows`` runs them under Windows CPython (docs/windows.md).
"""
from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path

import psutil
import pytest
from faultkit import cli, new_run, of_type, run_worker

from studio import checkpoint, procs, runs
from studio.events import read_events

pytestmark = pytest.mark.platform

STOP_RUN_STEPS = 24  # long enough that the stop lands mid-run, short enough for the resume to finish it


def _steps_done(run_dir: Path) -> int:
    return max((e.data.get("done", 0) for e in read_events(run_dir / runs.EVENTS)
                if e.type == "progress" and e.data.get("phase") == "train"), default=0)


def _wait_for(predicate, timeout: float = 240.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if value := predicate():
            return value
        time.sleep(0.05)
    raise AssertionError("timed out")


def _log(run_dir: Path) -> str:
    path = run_dir / "worker.log"
    return path.read_text(errors="replace")[-3000:] if path.exists() else ""


def test_three_steps_leave_a_verified_checkpoint_at_every_step(tmp_path, tiny_model_dir, chat_jsonl):
    """Every checkpoint is flushed, renamed into place and matches its manifest (under Windows Python before
    issue 32 the first one failed: FlushFileBuffers on a handle opened read-only)."""
    run_dir = new_run(tmp_path / "runs", tiny_model_dir, chat_jsonl, max_steps=3, save_steps=1, keep_checkpoints=3)
    rc, events = run_worker(run_dir)
    assert rc == 0, _log(run_dir)
    assert [e.data["step"] for e in of_type(events, "checkpoint")] == [1, 2, 3]
    on_disk = checkpoint.list_checkpoints(run_dir)
    assert sorted(c.step for c in on_disk) == [1, 2, 3]
    assert [checkpoint.verify(c.path) for c in on_disk] == [None, None, None]  # sizes and sha256 as written
    assert not [p.name for p in checkpoint.root(run_dir).iterdir() if p.name.startswith(".")]  # no staging left
    state = runs.read_state(run_dir)
    assert (state["status"], state["step"]) == ("finished", 3)
    assert (run_dir / runs.ADAPTER / "adapter_model.safetensors").is_file()
    # the run's measured peak (VmHWM on Linux, the peak working set on Windows) is a peak: it never falls and
    # is at least what the worker held at every memory event so far, the figure each run is calibrated by
    peaks = [(e.data["measured_peak"], e.data["allocated"]) for e in of_type(events, "memory")]
    assert peaks and all(a > 0 for _, a in peaks)
    assert all(p >= max(a for _, a in peaks[:i + 1]) for i, (p, _) in enumerate(peaks))
    assert [p for p, _ in peaks] == sorted(p for p, _ in peaks)
    assert state["memory_peak"]["measured_peak"] == peaks[-1][0]


def _drain(proc: subprocess.Popen) -> threading.Thread:
    """Read the worker's stdout to its end: its events are in events.jsonl too, and a full pipe would block it."""
    reader = threading.Thread(target=lambda: proc.stdout.read(), daemon=True)
    reader.start()
    return reader


def test_attach_stop_saves_the_adapter_runs_list_reads_it_and_resume_finishes(tmp_path, tiny_model_dir, chat_jsonl):
    root = tmp_path / "runs"
    run_dir = new_run(root, tiny_model_dir, chat_jsonl, max_steps=STOP_RUN_STEPS, save_steps=1000)
    env = procs.worker_env()
    proc = procs.start_worker(procs.worker_argv("workers.train", run_dir), stderr=open(run_dir / "worker.log", "ab"),
                              env=env)  # as the window starts it; then the window goes away
    proc.stdin.close()
    _drain(proc)
    try:
        _wait_for(lambda: _steps_done(run_dir) >= 1)
        # Hold the worker still while the other terminal starts (seconds under Wine: once the whole run ended
        # before the CLI sent its stop); the stop it sends is taken when the worker goes on, at its next step.
        worker = psutil.Process(runs.read_state(run_dir)["pid"])  # the worker itself, not a venv launcher
        worker.suspend()
        try:
            asked = cli("attach", str(run_dir), "--stop", timeout=120)  # another terminal
        finally:
            worker.resume()
        assert asked.returncode == 0, asked.stderr[-3000:]
        assert f"asked {run_dir.name} to stop" in asked.stdout
        assert proc.wait(timeout=180) == 0, _log(run_dir)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    done = read_events(run_dir / runs.EVENTS)[-1]
    assert done.type == "done" and done.data["status"] == "stopped", done
    stopped_at = done.data["step"]
    assert 1 <= stopped_at < STOP_RUN_STEPS
    assert checkpoint.list_checkpoints(run_dir)[0].step == stopped_at  # a stop always ends with a checkpoint
    assert (run_dir / runs.ADAPTER / "adapter_model.safetensors").is_file()

    listed = cli("runs", "list", "--runs-dir", str(root), "--json", timeout=120)
    assert listed.returncode == 0, listed.stderr[-3000:]
    rows = json.loads(listed.stdout)
    assert [(r["id"], r["status"], r["step"]) for r in rows] == [(run_dir.name, "stopped", stopped_at)]
    assert Path(rows[0]["adapter"]) == run_dir / runs.ADAPTER

    resumed = cli("resume", str(run_dir), timeout=400)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"finished at step {STOP_RUN_STEPS}" in resumed.stdout
    events = read_events(run_dir / runs.EVENTS)
    assert [e.data["resumed_from_step"] for e in events if "resumed_from_step" in e.data] == [stopped_at]
    assert runs.read_state(run_dir)["status"] == "finished"
    again = json.loads(cli("runs", "list", "--runs-dir", str(root), "--json", timeout=120).stdout)
    assert [(r["status"], r["step"]) for r in again] == [("finished", STOP_RUN_STEPS)]
