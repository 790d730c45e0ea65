"""The CLI going away does not kill the run; a new reader finds it and follows its events."""
from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import psutil
import pytest
from faultkit import MAX_STEPS, adapter_tensors, cli_exe, losses, max_diff, tiny_recipe

from studio import attach, runs
from studio.events import read_events
from studio.procs import worker_env

pytestmark = pytest.mark.platform


def _wait_for(predicate, timeout=180.0):
    end = time.time() + timeout
    while time.time() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("timed out")


def _first_metric(root: Path):
    folders = [p for p in root.iterdir() if p.is_dir()] if root.is_dir() else []
    if folders and any(e.type == "metric" for e in read_events(folders[0] / runs.EVENTS)):
        return folders[0]
    return None


def test_killed_cli_leaves_the_worker_training_attach_follows_and_stops_it(tmp_path, tiny_model_dir, chat_jsonl,
                                                                           reference_run):
    tiny_recipe(tiny_model_dir, chat_jsonl).save(tmp_path / "recipe.json")
    root = tmp_path / "runs"
    exe = cli_exe()
    cli = subprocess.Popen([str(exe), "train", str(tmp_path / "recipe.json"), "--runs-dir", str(root)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=worker_env())
    run_dir = _wait_for(lambda: _first_metric(root))
    pid = runs.read_state(run_dir)["pid"]
    worker = psutil.Process(pid)
    worker.suspend()  # hold the worker still while we look (SIGSTOP; NtSuspendProcess on Windows): the test needs it
    try:
        cli.kill()  # the terminal (or the GUI) is gone: SIGKILL, TerminateProcess on Windows
        cli.wait(timeout=30)
        live = attach.live_runs(root)
        assert [s.path for s in live] == [run_dir] and attach.worker_pid(run_dir) == pid
        listening = [c for c in psutil.Process(pid).net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
        assert listening == []
        tail = attach.EventTail(run_dir)
        before = tail.poll()
        assert before and before[0].type == "hello" and any(e.type == "metric" for e in before)
        step_at_kill = max(e.data.get("done", 0) for e in before if e.type == "progress")
    finally:
        worker.resume()
    after, stop_sent = [], False
    for ev in attach.follow(run_dir, offset=tail.offset, poll_s=0.05):
        after.append(ev)
        if ev.type == "progress" and ev.data.get("done", 0) >= step_at_kill + 2 and not stop_sent:
            stop_sent = attach.request_stop(run_dir)  # it kept training; now the reattached reader stops it
    assert stop_sent and after[-1].type == "done" and after[-1].data["status"] == "stopped"
    stopped_at = after[-1].data["step"]
    assert step_at_kill + 2 <= stopped_at < MAX_STEPS
    saved = [e.data["step"] for e in after if e.type == "checkpoint"]
    assert saved[-1] == stopped_at  # a stop always ends with a checkpoint, so resume loses nothing
    seqs = [e.seq for e in before + after]
    assert seqs == list(range(1, len(seqs) + 1))  # every event exactly once across the two readers
    assert attach.live_runs(root) == [] and runs.summarize(run_dir).status == "stopped"

    result = subprocess.run([str(exe), "resume", str(run_dir)], capture_output=True, text=True, env=worker_env(),
                            timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert max_diff(adapter_tensors(run_dir), adapter_tensors(reference_run)) <= 1e-6
    assert losses(run_dir) == losses(reference_run)


def test_worker_pid_rejects_a_reused_pid(tmp_path):
    """A stale state.json whose pid now belongs to another process is not a live run."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    runs.write_state(run_dir, status="running", pid=os.getpid())  # pytest is alive, but is not a worker
    assert attach.worker_pid(run_dir) is None
    assert attach.request_stop(run_dir) is False
    (run_dir / runs.STATE).write_bytes(b"\xff\xfe\x00 garbage")  # a damaged state.json is not a live run
    assert attach.worker_pid(run_dir) is None


def test_a_second_worker_on_the_same_run_is_refused(tmp_path):
    """Two resumes at once (GUI and CLI) must not train one folder twice."""
    from faultkit import run_worker

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / runs.RECIPE).write_text("{}")
    held = attach.hold_run_lock(run_dir)
    assert held is not None
    try:
        rc, events = run_worker(run_dir, "--resume")
    finally:
        held.close()
    assert rc == 1 and [e.type for e in events] == ["error"]
    assert events[0].data["message"] == f"{run_dir}: another worker is already training this run"
    assert not (run_dir / runs.EVENTS).exists()  # the live run's record is not touched
    assert attach.hold_run_lock(run_dir) is not None  # free again once the holder let go


def test_attach_to_a_run_that_is_not_training_says_how_to_continue(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / runs.RECIPE).write_text("{}")
    runs.write_state(run_dir, status="running", pid=999999999)  # the worker died without saying so
    exe = cli_exe()
    out = subprocess.run([str(exe), "attach", str(run_dir)], capture_output=True, text=True, env=worker_env(),
                         timeout=60)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"no worker is training it (status: interrupted); 'lora-studio resume {run_dir}'" in out.stderr


def _steps_done(run_dir: Path) -> int:
    return max((e.data.get("done", 0) for e in read_events(run_dir / runs.EVENTS)
                if e.type == "progress" and e.data.get("phase") == "train"), default=0)


def test_a_worker_without_its_window_takes_pause_and_stop_from_the_run_inbox(tmp_path, tiny_model_dir, chat_jsonl):
    """A reattached window has no stdin to the worker: commands go through RUN/commands.jsonl."""
    from faultkit import new_run, start_worker

    run_dir = new_run(tmp_path, tiny_model_dir, chat_jsonl, max_steps=400, save_steps=1000)
    runs.send_command(run_dir, "stop")  # written before the worker started: must be ignored
    proc = start_worker(run_dir)
    proc.stdin.close()  # the window that started it went away
    # Its stdout is still read, as the window's pipe reader does until it closes: a pipe nobody reads fills (4 KiB
    # under Windows) and the worker blocks writing an event, which looked like a pause that never resumed.
    threading.Thread(target=proc.stdout.read, daemon=True).start()
    _wait_for(lambda: _steps_done(run_dir) >= 2)
    runs.send_command(run_dir, "pause")
    time.sleep(1.5)  # the step in flight finishes, then the worker waits
    held = _steps_done(run_dir)
    time.sleep(1.5)
    assert _steps_done(run_dir) == held < 400 and proc.poll() is None
    runs.send_command(run_dir, "resume")
    _wait_for(lambda: _steps_done(run_dir) > held, timeout=60)
    runs.send_command(run_dir, "stop")
    assert proc.wait(timeout=120) == 0
    assert runs.read_state(run_dir)["status"] == "stopped" and (run_dir / runs.ADAPTER).is_dir()
